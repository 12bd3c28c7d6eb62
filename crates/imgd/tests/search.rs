//! `imgd search` (modes, `--similar`, `--sort aesthetic`) and `imgd duplicates` through the real
//! binary, on a database built with the store's API.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::vectors::{ModelKey, normalize};
use serde_json::Value;

mod common;
use common::TestDb;

struct Env {
    _dir: tempfile::TempDir,
    db: TestDb,
    photos: PathBuf,
}

/// (file, caption, vector, aesthetic score, content hash)
type Photo = (
    &'static str,
    &'static str,
    [f32; 4],
    Option<f64>,
    Option<&'static str>,
);

const PHOTOS: [Photo; 6] = [
    (
        "beach.jpg",
        "sunny beach",
        [1.0, 0.0, 0.0, 0.0],
        Some(6.0),
        None,
    ),
    // The same photo resized: cosine distance 0.01.
    (
        "beach_small.jpg",
        "sunny beach resized",
        [0.99, 0.141_067, 0.0, 0.0],
        Some(5.5),
        None,
    ),
    (
        "forest.jpg",
        "dark forest",
        [0.0, 1.0, 0.0, 0.0],
        Some(8.0),
        None,
    ),
    (
        "city.jpg",
        "city at night",
        [0.6, 0.8, 0.0, 0.0],
        None,
        None,
    ),
    (
        "copy_a.jpg",
        "harbour",
        [0.0, 0.0, 1.0, 0.0],
        Some(2.0),
        Some("ab12"),
    ),
    (
        "copy_b.jpg",
        "harbour",
        [0.0, 0.0, 1.0, 0.0],
        None,
        Some("ab12"),
    ),
];

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let photos = dir.path().join("Pictures");
    fs::create_dir_all(&photos).unwrap();
    let photos = fs::canonicalize(&photos).unwrap();
    let db = TestDb::new(dir.path().join("imgd.db"));
    let store = db.store();
    let mut actions = Vec::new();
    for (i, (name, ..)) in PHOTOS.iter().enumerate() {
        let path = photos.join(name);
        fs::write(&path, name).unwrap();
        actions.push(ScanAction::New(FoundFile {
            path: path.to_str().unwrap().to_string(),
            fingerprint: Fingerprint {
                size: 100 + i as i64,
                mtime_ns: 1,
                inode: None,
            },
            format: "jpeg".into(),
            content_hash: PHOTOS[i].4.map(str::to_string),
            sha256: None,
        }));
    }
    store
        .apply_scan(&actions, &[imgd_clip::EMBEDDING, imgd_clip::AESTHETIC], 0)
        .unwrap();
    let model = ModelKey::new("clip-test", "1");
    let vectors: Vec<(i64, Vec<f32>)> = PHOTOS
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = p.2.to_vec();
            normalize(&mut v);
            (i as i64 + 1, v)
        })
        .collect();
    store.insert_embeddings(&model, vectors).unwrap();
    for (i, (_, caption, _, aesthetic, _)) in PHOTOS.iter().enumerate() {
        let id = i as i64 + 1;
        let db = store.db();
        db.execute(
            "INSERT INTO result_caption (image_id, created_ms, caption) VALUES (?1, 0, ?2)",
            imgd_store::params![id, caption],
        )
        .unwrap();
        if let Some(score) = aesthetic {
            db.execute(
                "INSERT INTO result_aesthetic (image_id, created_ms, score) VALUES (?1, 0, ?2)",
                imgd_store::params![id, score],
            )
            .unwrap();
        }
        store.refresh_search_row(id).unwrap();
    }
    drop(store);
    Env {
        _dir: dir,
        db,
        photos,
    }
}

fn imgd(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imgd"))
        .arg("--db")
        .arg(env.db.arg())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn imgd_json(env: &Env, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = imgd(env, args);
    assert!(ok, "imgd {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// The file names of the hits, in order.
fn names(hits: &Value) -> Vec<String> {
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let path = h["path"].as_str().unwrap();
            path.rsplit('/').next().unwrap().to_string()
        })
        .collect()
}

/// The file names in an array of paths.
fn file_names(paths: &Value) -> Vec<String> {
    paths
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().rsplit('/').next().unwrap().to_string())
        .collect()
}

#[test]
fn similar_search_ranks_by_the_stored_vector_without_a_text_encoder() {
    let env = env();
    let beach = env.photos.join("beach.jpg");
    let hits = imgd_json(
        &env,
        &["search", "--json", "--similar", beach.to_str().unwrap()],
    );
    assert_eq!(
        names(&hits)[..3],
        ["beach_small.jpg", "city.jpg", "forest.jpg"],
        "equal similarities rank by id"
    );
    assert_eq!(names(&hits).len(), 5, "the image itself is left out");
    assert_eq!(hits[0]["mode"], "semantic");
    assert_eq!(hits[0]["model"]["id"], "clip-test");
    assert!((hits[0]["similarity"].as_f64().unwrap() - 0.99).abs() < 1e-3);

    // By id too, and fused with query words.
    let hits = imgd_json(&env, &["search", "--json", "--similar", "1", "sunny"]);
    assert_eq!(hits[0]["mode"], "hybrid");
    assert_eq!(names(&hits)[0], "beach_small.jpg", "in both rankings");
    assert!(names(&hits).contains(&"beach.jpg".to_string()), "text only");

    let (ok, _, stderr) = imgd(&env, &["search", "--similar", "/no/such.jpg"]);
    assert!(!ok);
    assert!(stderr.contains("no image"), "{stderr}");
}

#[test]
fn query_words_fall_back_to_text_without_an_encoder_and_semantic_mode_says_why() {
    let env = env();
    let (ok, stdout, stderr) = imgd(&env, &["search", "--json", "sunny"]);
    assert!(ok, "{stderr}");
    let hits: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(names(&hits), ["beach.jpg", "beach_small.jpg"]);
    assert_eq!(hits[0]["mode"], "text");
    assert!(hits[0]["model"].is_null());
    assert!(stderr.contains("no text encoder installed"), "{stderr}");

    for mode in ["semantic", "hybrid"] {
        let (ok, _, stderr) = imgd(&env, &["search", "--mode", mode, "sunny"]);
        assert!(!ok);
        assert!(
            stderr.contains("no text encoder installed: imgd models fetch clip-vit-b32"),
            "{stderr}"
        );
    }
    let hits = imgd_json(&env, &["search", "--json", "--mode", "text", "harbour"]);
    assert_eq!(names(&hits), ["copy_a.jpg", "copy_b.jpg"]);

    let (ok, _, stderr) = imgd(&env, &["search"]);
    assert!(!ok);
    assert!(stderr.contains("nothing to search for"), "{stderr}");
}

#[test]
fn sort_by_aesthetic_alone_or_filtered_by_a_query() {
    let env = env();
    let hits = imgd_json(&env, &["search", "--json", "--sort", "aesthetic"]);
    assert_eq!(
        names(&hits),
        ["forest.jpg", "beach.jpg", "beach_small.jpg", "copy_a.jpg"]
    );
    assert_eq!(hits[0]["aesthetic"], 8.0);
    let hits = imgd_json(
        &env,
        &["search", "--json", "--sort", "aesthetic", "harbour"],
    );
    assert_eq!(names(&hits), ["copy_a.jpg", "copy_b.jpg"], "unscored last");
    let (ok, stdout, _) = imgd(&env, &["search", "--sort", "aesthetic", "-n", "1"]);
    assert!(ok);
    assert!(stdout.contains("forest.jpg") && stdout.contains("aesthetic 8.00"));
}

#[test]
fn duplicates_groups_near_copies_by_embedding_and_identical_files_by_hash() {
    let env = env();
    let report = imgd_json(&env, &["duplicates", "--json"]);
    assert!((report["threshold"].as_f64().unwrap() - 0.05).abs() < 1e-6);
    assert_eq!(report["model"]["id"], "clip-test");
    let near: Vec<Vec<String>> = report["near"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| file_names(&g["paths"]))
        .collect();
    assert_eq!(
        near,
        [
            vec!["beach.jpg".to_string(), "beach_small.jpg".to_string()],
            vec!["copy_a.jpg".to_string(), "copy_b.jpg".to_string()],
        ]
    );
    let exact = report["exact"].as_array().unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0]["hash"], "ab12");
    assert_eq!(exact[0]["paths"].as_array().unwrap().len(), 2);

    // A tighter threshold keeps only the identical vectors.
    let report = imgd_json(&env, &["duplicates", "--json", "--threshold", "0.001"]);
    assert_eq!(report["near"].as_array().unwrap().len(), 1);
    assert_eq!(report["near"][0]["max_distance"], 0.0);
    let (ok, _, stderr) = imgd(&env, &["duplicates", "--threshold", "3"]);
    assert!(!ok);
    assert!(stderr.contains("--threshold"), "{stderr}");
    let (ok, stdout, _) = imgd(&env, &["duplicates"]);
    assert!(ok);
    assert!(stdout.contains("2 groups") && stdout.contains("copy_b.jpg"));
}
