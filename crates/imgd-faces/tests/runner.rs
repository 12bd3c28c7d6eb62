//! The faces runner as the inference thread drives it, its rows committed as the writer
//! commits them, and identities clustered on the database.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{mtcnn_models, ort, photo, repo};
use image::RgbImage;
use imgd_core::ResultRow;
use imgd_faces::cluster::{ClusterConfig, FaceVector};
use imgd_faces::identities::{ClusterReport, plan_by_model};
use imgd_faces::{FacesConfig, runner_with};
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey};
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::{Store, StoreOptions};
use serde_json::{Value, json};

fn store_with(db: &Path, paths: &[String]) -> Store {
    let store = Store::open(
        db,
        StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let actions: Vec<ScanAction> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            ScanAction::New(FoundFile {
                path: p.clone(),
                fingerprint: Fingerprint {
                    size: 100 + i as i64,
                    mtime_ns: 1,
                    inode: None,
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            })
        })
        .collect();
    store.apply_scan(&actions, &[imgd_faces::FACES], 0).unwrap();
    store
}

/// One clustering run on `store`, as `imgd faces cluster` makes it.
fn cluster(store: &Store, config: &ClusterConfig, reset: bool) -> Result<ClusterReport, String> {
    let mut report = ClusterReport::default();
    if reset {
        report.reset = store
            .reset_unnamed_identities()
            .map_err(|e| e.to_string())?;
    }
    let faces = store.face_embeddings().map_err(|e| e.to_string())?;
    let faces = faces.into_iter().map(|f| {
        let vector = FaceVector {
            id: f.face_id,
            identity: f.identity_id,
            vector: f.vector,
        };
        (f.model, vector)
    });
    for written in plan_by_model(faces, config) {
        let plan = &written.plan;
        let created = store
            .apply_clusters(&plan.joins, &plan.new_identities)
            .map_err(|e| e.to_string())?;
        report.record(&written, created.len());
    }
    Ok(report)
}

/// Claims the queued faces jobs and commits `rows[path]` for each, with each image's full
/// size, as the writer does.
fn commit(store: &mut Store, rows: &[(String, (u32, u32), ResultRow)]) {
    let claimed = store
        .claim(&ClaimRequest {
            owner: "test",
            modules: &[imgd_faces::FACES],
            max_images: 1000,
            lease: Duration::from_secs(60),
            idle: true,
        })
        .unwrap();
    let outcomes: Vec<ImageOutcome> = claimed
        .iter()
        .filter_map(|image| {
            let (_, size, row) = rows.iter().find(|(p, _, _)| *p == image.path)?;
            Some(ImageOutcome {
                image_id: image.image_id,
                dimensions: Some(*size),
                done: vec![(image.jobs[0].job_id, row.clone())],
                failed: vec![],
                missing: false,
            })
        })
        .collect();
    let summary = store.commit_outcomes("test", &outcomes).unwrap();
    assert_eq!(summary.acked, rows.len());
}

/// Runs images through a runner: each image given as one 1280-px-or-smaller tier.
fn run_runner(
    runner: &mut dyn imgd_infer::runner::ModelRunner,
    images: &[(String, Arc<RgbImage>)],
) -> Vec<ResultRow> {
    for (i, (path, image)) in images.iter().enumerate() {
        let tiers = [(1280, Arc::clone(image))];
        let input = ImageInput {
            image_id: i as i64,
            path,
            tiers: &tiers,
        };
        let key = JobKey {
            image_id: i as i64,
            job_id: i as i64,
        };
        runner.submit(key, &input).unwrap();
    }
    let mut results = Vec::new();
    while runner.pending() > 0 {
        results.extend(runner.run(CloseReason::Draining));
    }
    results.sort_by_key(|(key, _)| key.image_id);
    results.into_iter().map(|(_, row)| row.unwrap()).collect()
}

#[test]
fn rows_carry_boxes_scores_and_landmarks_and_say_when_faces_are_not_embedded() {
    let mut runner = runner_with(
        &mtcnn_models(),
        &ort(),
        BatchConfig::new(4, Duration::ZERO),
        &FacesConfig::default(),
    )
    .unwrap();
    assert_eq!(runner.module(), imgd_faces::FACES);
    assert_eq!(runner.model_name(), "mtcnn");
    // The runner sees a half-size tier of zidane.jpg; the image itself is 1280×720.
    let full = photo("zidane.jpg");
    let half = image::imageops::resize(&full, 640, 360, image::imageops::FilterType::Triangle);
    let images = vec![("/p/zidane.jpg".to_string(), Arc::new(half))];
    let rows = run_runner(runner.as_mut(), &images);
    let row = &rows[0];
    assert_eq!(row.module, imgd_faces::FACES);
    assert_eq!(row.model_id.as_deref(), Some("mtcnn"));
    assert_eq!(row.columns[0].0, "face_count");
    assert_eq!(row.data["embedding_model"], Value::Null);
    assert_eq!(row.data["frame"], json!([640, 360]));
    let faces = row.data["faces"].as_array().unwrap();
    assert!(faces.len() >= 2, "{faces:?}");
    for face in faces {
        assert_eq!(face["box"].as_array().unwrap().len(), 4);
        assert!(face["score"].as_f64().unwrap() > 0.7);
        assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);
        assert!(face.get("embedding").is_none());
    }

    // Committed as the writer commits it: `imgd show` data in full-image pixels.
    let dir = tempfile::tempdir().unwrap();
    let mut store = store_with(&dir.path().join("f.db"), &["/p/zidane.jpg".to_string()]);
    commit(
        &mut store,
        &[("/p/zidane.jpg".into(), (1280, 720), row.clone())],
    );
    let shown = store
        .show(&imgd_store::report::ImageRef::Path("/p/zidane.jpg"))
        .unwrap();
    let data = &shown["faces"]["data"];
    assert_eq!(data["coords"], "image");
    assert_eq!(data["embedding_model"], Value::Null);
    // Ancelotti's face, hand-checked on the full-size photo at [910, 130, 132, 152].
    let hand = imgd_faces::Rect::from_xywh(910.0, 130.0, 132.0, 152.0);
    let best = data["faces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let b: Vec<f64> = f["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            imgd_faces::Rect::from_xywh(b[0], b[1], b[2], b[3]).iou(&hand)
        })
        .fold(0.0, f64::max);
    assert!(best > 0.5, "no stored box near Ancelotti's face: {data}");
    let summary = store.faces_summary().unwrap();
    assert_eq!(summary.not_embedded, summary.faces);
    assert_eq!(summary.embedding_models, vec![(None, 1)]);
}

#[test]
fn with_an_embedding_model_faces_are_embedded_and_clustered() {
    let mut models = mtcnn_models();
    models.arcface = Some(repo().join("fixtures/faces/tiny_arcface.onnx"));
    let mut runner = runner_with(
        &models,
        &ort(),
        BatchConfig::new(8, Duration::ZERO),
        &FacesConfig::default(),
    )
    .unwrap();
    // The astronaut four times: as is, brighter, blurred, and shifted by 7 px. One person.
    let astronaut = photo("astronaut.jpg");
    let variants = [
        astronaut.clone(),
        image::imageops::brighten(&astronaut, 6),
        image::imageops::blur(&astronaut, 0.7),
        image::imageops::crop_imm(&astronaut, 7, 5, 500, 500).to_image(),
    ];
    let images: Vec<(String, Arc<RgbImage>)> = variants
        .into_iter()
        .enumerate()
        .map(|(i, image)| (format!("/p/astronaut{i}.jpg"), Arc::new(image)))
        .collect();
    let rows = run_runner(runner.as_mut(), &images);
    assert!(
        rows.iter()
            .all(|r| r.data["embedding_model"] == "w600k_r50")
    );
    assert!(rows.iter().all(
        |r| r.vectors.len() == r.data["faces"].as_array().unwrap().len()
            && r.vectors[0].len() == 128
    ));
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<String> = images.iter().map(|i| i.0.clone()).collect();
    let mut store = store_with(&dir.path().join("f.db"), &paths);
    let committed: Vec<_> = paths
        .iter()
        .zip(&rows)
        .map(|(p, r)| (p.clone(), (512, 512), r.clone()))
        .collect();
    commit(&mut store, &committed);
    let report = cluster(&store, &ClusterConfig::default(), false).unwrap();
    assert_eq!(report.considered, 4);
    assert_eq!(report.new_identities, 1, "{report:?}");
    assert_eq!(store.identities().unwrap()[0].face_count, 4);
}

/// A deterministic unit vector near `centre`.
fn near(centre: &[f32], seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v: Vec<f32> = centre
        .iter()
        .map(|c| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            c + 0.12 * u
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn person(k: usize) -> Vec<f32> {
    // Orthogonal people: a block of ones per person in a 64-d space.
    (0..64)
        .map(|i| if i / 8 == k { 1.0 } else { 0.0 })
        .collect()
}

fn face_row(embedding: &[f32]) -> ResultRow {
    ResultRow {
        module: imgd_faces::FACES,
        model_id: Some("test".into()),
        model_version: Some("1".into()),
        columns: vec![("face_count", imgd_core::SqlValue::Integer(1))],
        data: json!({
            "detector": "test", "embedding_model": "m", "frame": [100, 100], "coords": "tier",
            "faces": [{ "box": [10, 10, 50, 50], "score": 0.99,
                        "landmarks": [[20, 20], [40, 20], [30, 30], [22, 45], [38, 45]] }],
        }),
        vectors: vec![embedding.to_vec()],
    }
}

#[test]
fn a_named_identity_keeps_its_name_and_faces_through_reclustering() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("f.db");
    // Alice ×4, Bob ×3, a stranger.
    let first: Vec<(String, usize)> = (0..4)
        .map(|i| (format!("/p/alice{i}.jpg"), 0))
        .chain((0..3).map(|i| (format!("/p/bob{i}.jpg"), 1)))
        .chain([("/p/stranger.jpg".to_string(), 2)])
        .collect();
    let paths: Vec<String> = first.iter().map(|f| f.0.clone()).collect();
    let mut store = store_with(&db, &paths);
    let rows: Vec<_> = first
        .iter()
        .enumerate()
        .map(|(i, (p, k))| {
            (
                p.clone(),
                (100, 100),
                face_row(&near(&person(*k), i as u64)),
            )
        })
        .collect();
    commit(&mut store, &rows);
    let report = cluster(&store, &ClusterConfig::default(), false).unwrap();
    assert_eq!(
        (report.new_identities, report.unassigned),
        (2, 1),
        "{report:?}"
    );
    let alice = store
        .identities()
        .unwrap()
        .into_iter()
        .find(|i| i.face_count == 4)
        .unwrap()
        .id;
    store.name_identity(alice, Some("Alice")).unwrap();
    assert_eq!(store.search_text("alice", 10).unwrap().len(), 4);

    // New photos: two of Alice, three of Carol.
    let second: Vec<(String, usize)> = (4..6)
        .map(|i| (format!("/p/alice{i}.jpg"), 0))
        .chain((0..3).map(|i| (format!("/p/carol{i}.jpg"), 3)))
        .collect();
    let new_paths: Vec<String> = second.iter().map(|f| f.0.clone()).collect();
    let actions: Vec<ScanAction> = new_paths
        .iter()
        .enumerate()
        .map(|(i, p)| {
            ScanAction::New(FoundFile {
                path: p.clone(),
                fingerprint: Fingerprint {
                    size: 1000 + i as i64,
                    mtime_ns: 1,
                    inode: None,
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            })
        })
        .collect();
    store.apply_scan(&actions, &[imgd_faces::FACES], 0).unwrap();
    let rows: Vec<_> = second
        .iter()
        .enumerate()
        .map(|(i, (p, k))| {
            (
                p.clone(),
                (100, 100),
                face_row(&near(&person(*k), 100 + i as u64)),
            )
        })
        .collect();
    commit(&mut store, &rows);
    let report = cluster(&store, &ClusterConfig::default(), false).unwrap();
    assert_eq!(report.considered, 6, "5 new faces and the stranger");
    assert_eq!(report.joined, 2, "{report:?}");
    assert_eq!(report.new_identities, 1, "Carol");
    let check = |store: &Store| {
        let listed = store.identities().unwrap();
        let named: Vec<_> = listed.iter().filter(|i| i.name.is_some()).collect();
        assert_eq!(named.len(), 1);
        assert_eq!(named[0].id, alice);
        assert_eq!(named[0].name.as_deref(), Some("Alice"));
        assert_eq!(named[0].face_count, 6);
        assert_eq!(store.search_text("alice", 10).unwrap().len(), 6);
    };
    check(&store);
    // From scratch, with other thresholds: Alice stays Alice with all her faces.
    let report = cluster(
        &store,
        &ClusterConfig {
            max_distance: 0.3,
            min_faces: 2,
        },
        true,
    )
    .unwrap();
    assert_eq!(report.reset, 6, "Bob's and Carol's faces");
    assert_eq!(report.new_identities, 2, "{report:?}");
    check(&store);
}
