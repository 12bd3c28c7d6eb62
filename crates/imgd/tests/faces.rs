//! Faces through the real binary: `imgd enqueue` registers real photos, the faces runner
//! (MTCNN from the registry, the tiny ArcFace-shaped fixture model) analyses them and the
//! writer's commit stores them — as the daemon's inference and writer stages do — and then
//! `imgd show --json`, `imgd faces …` and `imgd search` are run as a user runs them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use imgd_faces::{FaceModels, FacesConfig, OrtConfig, Rect, runner_with};
use imgd_pipeline::batcher::{BatchConfig, CloseReason};
use imgd_pipeline::runner::{ImageInput, JobKey};
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use serde_json::Value;

mod common;
use common::TestDb;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn imgd(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imgd"))
        .arg("--db")
        .arg(db.arg())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn imgd_ok(db: &TestDb, args: &[&str]) -> String {
    let (ok, stdout, stderr) = imgd(db, args);
    assert!(ok, "imgd {args:?} failed: {stderr}");
    stdout
}

fn imgd_json(db: &TestDb, args: &[&str]) -> Value {
    let stdout = imgd_ok(db, args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// What the daemon's inference and writer stages do for the faces jobs: decode, the faces
/// tier (long edge ≤ `tier`), the runner, one commit with the images' full sizes.
fn analyse_queued_faces(db: &TestDb, tier: u32) {
    let mut models = FaceModels::locate(Path::new("/nonexistent-imgd-models"));
    assert!(
        models.mtcnn.is_some(),
        "MTCNN missing; run scripts/fetch-registry-models.sh"
    );
    models.arcface = Some(repo().join("fixtures/faces/tiny_arcface.onnx"));
    let ort = OrtConfig {
        intra_threads: 2,
        ..OrtConfig::default()
    };
    let mut runner = runner_with(
        &models,
        &ort,
        BatchConfig::new(8, Duration::ZERO),
        &FacesConfig::default(),
    )
    .unwrap();
    let mut store = db.store();
    let claimed = store
        .claim(&ClaimRequest {
            owner: "test",
            modules: &[imgd_faces::FACES],
            max_images: 100,
            lease: Duration::from_secs(60),
            idle: true,
        })
        .unwrap();
    let mut sizes = Vec::new();
    for image in &claimed {
        let full = image::open(&image.path).unwrap().to_rgb8();
        sizes.push((full.width(), full.height()));
        let scale = f64::from(tier) / f64::from(full.width().max(full.height()));
        let pixels = if scale < 1.0 {
            image::imageops::resize(
                &full,
                (f64::from(full.width()) * scale).round() as u32,
                (f64::from(full.height()) * scale).round() as u32,
                image::imageops::FilterType::Triangle,
            )
        } else {
            full
        };
        let tiers = [(1280, Arc::new(pixels))];
        let input = ImageInput {
            image_id: image.image_id,
            path: &image.path,
            tiers: &tiers,
        };
        let key = JobKey {
            image_id: image.image_id,
            job_id: image.jobs[0].job_id,
        };
        runner.submit(key, &input).unwrap();
    }
    let mut rows = Vec::new();
    while runner.pending() > 0 {
        rows.extend(runner.run(CloseReason::Draining));
    }
    let outcomes: Vec<ImageOutcome> = rows
        .into_iter()
        .map(|(key, row)| {
            let i = claimed
                .iter()
                .position(|c| c.image_id == key.image_id)
                .unwrap();
            ImageOutcome {
                image_id: key.image_id,
                dimensions: Some(sizes[i]),
                done: vec![(key.job_id, row.unwrap())],
                failed: vec![],
                missing: false,
            }
        })
        .collect();
    let summary = store.commit_outcomes("test", &outcomes).unwrap();
    assert_eq!(summary.acked, claimed.len());
}

fn search(db: &TestDb, query: &str) -> Vec<String> {
    let hits = imgd_json(db, &["search", "--json", query]);
    let mut paths: Vec<String> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            Path::new(h["path"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    paths.sort();
    paths
}

#[test]
fn faces_are_shown_clustered_named_and_searchable_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("imgd.db"));
    let tree = dir.path().join("Pictures");
    fs::create_dir_all(&tree).unwrap();
    let faces = repo().join("fixtures/faces");
    fs::copy(faces.join("zidane.jpg"), tree.join("zidane.jpg")).unwrap();
    fs::copy(faces.join("bus.jpg"), tree.join("bus.jpg")).unwrap();
    // Three photos of the astronaut: as is, brighter, and cropped.
    let astronaut = image::open(faces.join("astronaut.jpg")).unwrap().to_rgb8();
    astronaut.save(tree.join("collins1.png")).unwrap();
    image::imageops::brighten(&astronaut, 6)
        .save(tree.join("collins2.png"))
        .unwrap();
    image::imageops::crop_imm(&astronaut, 7, 5, 500, 500)
        .to_image()
        .save(tree.join("collins3.png"))
        .unwrap();

    let tree_arg = tree.to_str().unwrap();
    let enqueued = imgd_json(&db, &["enqueue", "--json", "--modules", "faces", tree_arg]);
    assert_eq!(enqueued["new"], 5, "{enqueued}");
    // Analysed on a 640-px tier: boxes come back in full-size pixels.
    analyse_queued_faces(&db, 640);

    // `imgd show --json`: every face has box, score and landmarks, in the photo's pixels.
    let zidane = tree.join("zidane.jpg");
    let shown = imgd_json(&db, &["show", "--json", zidane.to_str().unwrap()]);
    let data = &shown["faces"]["data"];
    assert_eq!(data["coords"], "image", "{data}");
    assert_eq!(data["embedding_model"], "w600k_r50");
    let found = data["faces"].as_array().unwrap();
    assert_eq!(shown["faces"]["face_count"], found.len());
    let rects: Vec<Rect> = found
        .iter()
        .map(|f| {
            assert!(f["score"].as_f64().unwrap() > 0.7);
            let landmarks = f["landmarks"].as_array().unwrap();
            assert_eq!(landmarks.len(), 5);
            assert!(landmarks.iter().all(|p| p.as_array().unwrap().len() == 2));
            let b: Vec<f64> = f["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert!(
                f.get("embedding").is_none(),
                "embeddings stay out of the JSON"
            );
            Rect::from_xywh(b[0], b[1], b[2], b[3])
        })
        .collect();
    // Ancelotti and Zidane, hand-checked on the 1280×720 photo.
    for hand in [
        Rect::from_xywh(910.0, 130.0, 132.0, 152.0),
        Rect::from_xywh(555.0, 285.0, 105.0, 160.0),
    ] {
        let best = rects.iter().map(|r| r.iou(&hand)).fold(0.0, f64::max);
        assert!(best >= 0.5, "{hand:?}: best IoU {best} in {rects:?}");
    }

    // Clustering: the three astronaut photos make one identity.
    let report = imgd_json(&db, &["faces", "cluster", "--json"]);
    assert_eq!(report["new_identities"], 1, "{report}");
    assert_eq!(report["in_new_identities"], 3, "{report}");
    let listed = imgd_json(&db, &["faces", "list", "--json"]);
    let identity = &listed["identities"][0];
    assert_eq!(identity["face_count"], 3);
    assert!(identity["name"].is_null());
    let id = identity["id"].as_i64().unwrap().to_string();
    assert!(listed["summary"]["faces"].as_i64().unwrap() >= 7);

    // Named: the name is searchable.
    imgd_ok(&db, &["faces", "name", &id, "Eileen", "Collins"]);
    assert_eq!(
        search(&db, "collins eileen"),
        vec!["collins1.png", "collins2.png", "collins3.png"]
    );
    let text = imgd_ok(&db, &["faces", "list"]);
    assert!(text.contains("Eileen Collins"), "{text}");
    let faces_of = imgd_json(&db, &["faces", "list", &id, "--json"]);
    assert_eq!(faces_of["faces"].as_array().unwrap().len(), 3);

    // Re-clustering never renames it.
    imgd_ok(&db, &["faces", "cluster", "--reset"]);
    let listed = imgd_json(&db, &["faces", "list", "--json"]);
    assert_eq!(listed["identities"][0]["name"], "Eileen Collins");
    assert_eq!(listed["identities"][0]["face_count"], 3);

    // Split: the faces leave, the name stays on an empty identity; clustering makes a new
    // identity of them; merging it back restores the searchable name.
    imgd_ok(&db, &["faces", "split", &id]);
    assert!(search(&db, "collins").is_empty());
    let report = imgd_json(&db, &["faces", "cluster", "--json"]);
    assert_eq!(report["new_identities"], 1, "{report}");
    let listed = imgd_json(&db, &["faces", "list", "--json"]);
    let new_id = listed["identities"][0]["id"].as_i64().unwrap().to_string();
    assert_ne!(new_id, id);
    imgd_ok(&db, &["faces", "merge", &id, &new_id]);
    assert_eq!(search(&db, "collins").len(), 3);

    // Bad requests fail clearly.
    let (ok, _, stderr) = imgd(&db, &["faces", "name", "999", "Nobody"]);
    assert!(!ok && stderr.contains("no identity 999"), "{stderr}");
    let (ok, _, stderr) = imgd(&db, &["faces", "merge", &id, &id]);
    assert!(!ok && stderr.contains("itself"), "{stderr}");
}

/// ExifTool's reading of a sidecar (`-struct -G1 -j`).
fn exiftool(path: &Path) -> Value {
    let out = Command::new("exiftool")
        .args(["-j", "-struct", "-G1"])
        .arg(path)
        .output()
        .expect("exiftool (.ci/run installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all[0].take()
}

/// A list tag's values (ExifTool writes one value as a scalar).
fn list(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        Value::String(one) => vec![one.clone()],
        _ => Vec::new(),
    }
}

#[test]
fn named_faces_reach_xmp_sidecars_and_a_rename_replaces_only_imgds_keywords() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("imgd.db"));
    let tree = dir.path().join("Pictures");
    fs::create_dir_all(&tree).unwrap();
    let faces = repo().join("fixtures/faces");
    fs::copy(faces.join("zidane.jpg"), tree.join("zidane.jpg")).unwrap();
    let astronaut = image::open(faces.join("astronaut.jpg")).unwrap().to_rgb8();
    astronaut.save(tree.join("collins1.png")).unwrap();
    image::imageops::brighten(&astronaut, 6)
        .save(tree.join("collins2.png"))
        .unwrap();
    image::imageops::crop_imm(&astronaut, 7, 5, 500, 500)
        .to_image()
        .save(tree.join("collins3.png"))
        .unwrap();
    // A keyword the user gave in Lightroom before imgd ran.
    fs::write(
        tree.join("collins1.xmp"),
        r#"<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>space</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF></x:xmpmeta>"#,
    )
    .unwrap();
    let tree_arg = tree.to_str().unwrap();
    imgd_json(&db, &["enqueue", "--json", "--modules", "faces", tree_arg]);
    analyse_queued_faces(&db, 640);
    imgd_json(&db, &["faces", "cluster", "--json"]);
    let listed = imgd_json(&db, &["faces", "list", "--json"]);
    let id = listed["identities"][0]["id"].as_i64().unwrap().to_string();
    imgd_ok(&db, &["faces", "name", &id, "Eileen", "Collins"]);

    let report = imgd_json(&db, &["xmp", "write", "--json", tree_arg]);
    assert_eq!(report["written"], 4, "{report}");
    let tags = exiftool(&tree.join("collins1.xmp"));
    assert_eq!(list(&tags["XMP-dc:Subject"]), ["space", "Eileen Collins"]);
    assert_eq!(
        list(&tags["XMP-lr:HierarchicalSubject"]),
        ["imgd|people|Eileen Collins"]
    );
    // The region is the stored face box, normalised to the photo after orientation.
    let shown = imgd_json(
        &db,
        &[
            "show",
            "--json",
            tree.join("collins1.png").to_str().unwrap(),
        ],
    );
    let (width, height) = (
        shown["image"]["width"].as_f64().unwrap(),
        shown["image"]["height"].as_f64().unwrap(),
    );
    let face = &shown["faces"]["data"]["faces"][0]["box"];
    let b: Vec<f64> = face
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let region = &tags["XMP-mwg-rs:RegionInfo"]["RegionList"];
    let region = if region.is_array() {
        &region[0]
    } else {
        region
    };
    assert_eq!(region["Name"], "Eileen Collins");
    assert_eq!(region["Type"], "Face");
    let area = &region["Area"];
    assert!((area["X"].as_f64().unwrap() - (b[0] + b[2] / 2.0) / width).abs() < 1e-3);
    assert!((area["Y"].as_f64().unwrap() - (b[1] + b[3] / 2.0) / height).abs() < 1e-3);
    assert!((area["W"].as_f64().unwrap() - b[2] / width).abs() < 1e-3);
    assert!((area["H"].as_f64().unwrap() - b[3] / height).abs() < 1e-3);
    // Zidane's photo: its faces are regions without a name yet.
    let zidane = exiftool(&tree.join("zidane.xmp"));
    assert!(
        zidane["XMP-mwg-rs:RegionInfo"]["RegionList"]
            .as_array()
            .unwrap()
            .len()
            >= 2
    );
    assert!(zidane["XMP-dc:Subject"].is_null());

    // Renamed: imgd's keyword and region follow, the user's keyword stays; a second run
    // changes nothing.
    imgd_ok(&db, &["faces", "name", &id, "Eileen", "M.", "Collins"]);
    let report = imgd_json(&db, &["xmp", "write", "--json", tree_arg]);
    assert_eq!(report["written"], 3, "{report}");
    let tags = exiftool(&tree.join("collins1.xmp"));
    assert_eq!(
        list(&tags["XMP-dc:Subject"]),
        ["space", "Eileen M. Collins"]
    );
    let report = imgd_json(&db, &["xmp", "write", "--json", tree_arg]);
    assert_eq!(report["unchanged"], 4, "{report}");

    // A photo deleted since: reported, the others still written, exit 1.
    fs::remove_file(tree.join("collins3.png")).unwrap();
    let (ok, stdout, stderr) = imgd(&db, &["xmp", "write", tree_arg]);
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("collins3.png"), "{stderr}");
}
