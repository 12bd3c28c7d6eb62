//! `imgd db copy`: a library with results, vectors, faces, identities, search rows, cloud
//! totals and settings, copied from SQLite to PostgreSQL and back, is the same library; a
//! copy run again finishes what is there and duplicates nothing.

use std::time::Duration;

use imgd_core::{ResultRow, SqlValue};
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use imgd_store::vectors::ModelKey;
use imgd_store::{Store, params};

mod common;
use common::backends::{TestDb, postgres_server};

/// A library of three images with every kind of row.
fn library(db: &TestDb) -> Store {
    let modules = [
        imgd_modules::METADATA,
        imgd_clip::EMBEDDING,
        imgd_faces::FACES,
        imgd_cloud::CLOUD,
    ];
    let mut store = common::store_in(db, &["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"], &modules);
    let claimed = store
        .claim(&ClaimRequest {
            owner: "w",
            modules: &modules,
            max_images: 10,
            lease: Duration::from_secs(60),
            idle: true,
        })
        .unwrap();
    let outcomes: Vec<ImageOutcome> = claimed
        .iter()
        .map(|image| {
            let n = image.image_id as f32;
            let done = image
                .jobs
                .iter()
                .map(|job| {
                    let row = match job.module.name() {
                        "metadata" => ResultRow {
                            module: job.module,
                            model_id: None,
                            model_version: None,
                            columns: vec![("make", SqlValue::Text(format!("Camera{n}")))],
                            data: serde_json::json!({}),
                            vectors: Vec::new(),
                        },
                        "embedding" => ResultRow {
                            module: job.module,
                            model_id: Some("clip".into()),
                            model_version: Some("1".into()),
                            columns: vec![
                                ("dim", SqlValue::Integer(3)),
                                (
                                    "vector",
                                    SqlValue::Blob(imgd_store::vectors::vector_to_blob(&[
                                        n, 1.0, 0.5,
                                    ])),
                                ),
                            ],
                            data: serde_json::json!({}),
                            vectors: Vec::new(),
                        },
                        "faces" => ResultRow {
                            module: job.module,
                            model_id: Some("mtcnn".into()),
                            model_version: Some("1".into()),
                            columns: vec![("face_count", SqlValue::Integer(1))],
                            data: serde_json::json!({
                                "frame": [100, 100], "embedding_model": "arcface",
                                "faces": [{"box": [10, 10, 20, 20], "score": 0.9,
                                           "landmarks": [[12, 12]]}]
                            }),
                            vectors: vec![vec![1.0, n]],
                        },
                        _ => ResultRow {
                            module: job.module,
                            model_id: Some("gpt".into()),
                            model_version: Some("1".into()),
                            columns: vec![
                                ("cost_usd", SqlValue::Real(0.25)),
                                ("tokens", SqlValue::Integer(100)),
                            ],
                            data: serde_json::json!({"calls": 2, "scene": "a harbour"}),
                            vectors: Vec::new(),
                        },
                    };
                    (job.job_id, row)
                })
                .collect();
            ImageOutcome {
                image_id: image.image_id,
                dimensions: Some((100, 100)),
                done,
                failed: vec![],
                missing: false,
            }
        })
        .collect();
    store.commit_outcomes("w", &outcomes).unwrap();
    let faces: Vec<i64> = store
        .db()
        .query_map("SELECT id FROM faces ORDER BY id", params![], |r| r.get(0))
        .unwrap();
    let ids = store
        .apply_clusters(&[], std::slice::from_ref(&faces))
        .unwrap();
    store.name_identity(ids[0], Some("Ada")).unwrap();
    store.set_paused(true).unwrap();
    store
}

/// What a library holds, engine aside.
fn summary(store: &Store) -> serde_json::Value {
    let status = store.queue_status(5).unwrap();
    let faces = store.faces_summary().unwrap();
    let cloud = store.cloud_totals().unwrap();
    let vector = store
        .image_vector(2, &ModelKey::new("clip", "1"))
        .unwrap()
        .unwrap();
    serde_json::json!({
        "modules": status.modules,
        "images": status.images,
        "paused": status.paused,
        "faces": faces,
        "identities": store.identities().unwrap().iter().map(|i| (&i.name, i.face_count)).collect::<Vec<_>>(),
        "cloud": cloud,
        "vector": vector,
        "search_ada": store.search_text("ada", 10).unwrap().len(),
        "search_harbour": store.search_text("harbour camera2", 10).unwrap().iter().map(|h| h.image_id).collect::<Vec<_>>(),
    })
}

#[test]
fn a_library_copied_to_postgres_and_back_is_the_same_library() {
    let sqlite = TestDb::sqlite();
    let source = library(&sqlite);
    let expected = summary(&source);
    assert_eq!(expected["search_harbour"], serde_json::json!([2]));
    let target = match postgres_server() {
        Some(server) => TestDb::postgres(&server),
        None => TestDb::sqlite(),
    };
    let destination = target.open();
    let report = source.copy_library_to(&destination, |_, _, _| {}).unwrap();
    assert!(report.iter().all(|t| t.source_rows == t.destination_rows));
    assert!(
        report
            .iter()
            .any(|t| t.table == "result_embedding" && t.copied == 3)
    );
    assert_eq!(summary(&destination), expected, "on {}", target.engine());
    // Run again: nothing more is written, nothing is duplicated.
    let again = source.copy_library_to(&destination, |_, _, _| {}).unwrap();
    assert_eq!(again.iter().map(|t| t.copied).sum::<i64>(), 0, "{again:?}");
    assert_eq!(summary(&destination), expected);
    // New rows take ids after the copied ones.
    destination
        .apply_scan(
            &[imgd_store::scan::ScanAction::New(
                imgd_store::scan::FoundFile {
                    path: "/p/d.jpg".into(),
                    fingerprint: imgd_store::scan::Fingerprint {
                        size: 1,
                        mtime_ns: 1,
                        inode: None,
                    },
                    format: "jpeg".into(),
                    content_hash: None,
                    sha256: None,
                },
            )],
            &[imgd_modules::METADATA],
            0,
        )
        .unwrap();
    let id: i64 = destination
        .db()
        .query_row(
            "SELECT id FROM images WHERE path = '/p/d.jpg'",
            params![],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(id, 4);
    // And back into a new SQLite file.
    let back_db = TestDb::sqlite();
    let back = back_db.open();
    destination.copy_library_to(&back, |_, _, _| {}).unwrap();
    let mut round_trip = summary(&back);
    round_trip["modules"]["metadata"]["queued"] = serde_json::json!(0);
    round_trip["images"] = expected["images"].clone();
    assert_eq!(round_trip, expected);
}

#[test]
fn a_copy_into_another_library_is_refused_before_anything_is_written() {
    let source_db = TestDb::sqlite();
    let source = library(&source_db);
    let other_db = TestDb::sqlite();
    let other = common::store_in(&other_db, &["/elsewhere/x.jpg"], &[imgd_modules::METADATA]);
    let error = source.copy_library_to(&other, |_, _, _| {}).unwrap_err();
    assert!(
        matches!(&error, imgd_store::copy::CopyError::ForeignImage { id: 1, path } if path == "/elsewhere/x.jpg"),
        "{error}"
    );
    let jobs: i64 = other
        .db()
        .query_row("SELECT COUNT(*) FROM jobs", params![], |r| r.get(0))
        .unwrap();
    assert_eq!(jobs, 1, "nothing was written");
}
