//! The page's changes to faces and identities, as JSON POSTs over a real store: naming a face,
//! naming, merging and splitting identities, and the answers to bad requests.

use std::sync::Mutex;
use std::time::Duration;

use imgd_core::{ResultRow, SqlValue};
use imgd_pipeline::http::{AppReply, AppRequest};
use imgd_store::Store;
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use imgd_web::{SearchState, answer};

mod common;
use common::store_with;
use serde_json::{Value, json};

/// A store with two images of one face each (no embeddings: only naming groups them).
fn store_with_faces(db: &std::path::Path) -> Store {
    let mut store = store_with(db, &["/p/a.jpg", "/p/b.jpg"], &[imgd_faces::FACES]);
    let claimed = store
        .claim(&ClaimRequest {
            owner: "test",
            modules: &[imgd_faces::FACES],
            max_images: 10,
            lease: Duration::from_secs(60),
            idle: true,
        })
        .unwrap();
    let outcomes: Vec<ImageOutcome> = claimed
        .iter()
        .map(|image| {
            let row = ResultRow {
                module: imgd_faces::FACES,
                model_id: Some("mtcnn".into()),
                model_version: Some("test".into()),
                columns: vec![("face_count", SqlValue::Integer(1))],
                data: json!({
                    "detector": "mtcnn", "embedding_model": null, "frame": [640, 480],
                    "coords": "image",
                    "faces": [{ "box": [10.0, 10.0, 40.0, 40.0], "score": 0.99,
                                "landmarks": vec![[20.0, 20.0]; 5] }],
                }),
                vectors: vec![Vec::new()],
            };
            ImageOutcome {
                image_id: image.image_id,
                dimensions: Some((640, 480)),
                done: vec![(image.jobs[0].job_id, row)],
                failed: vec![],
                missing: false,
            }
        })
        .collect();
    store.commit_outcomes("test", &outcomes).unwrap();
    store
}

fn post(store: &Store, path: &str, body: &str) -> (u16, Value) {
    let request = AppRequest {
        method: hyper::Method::POST,
        path: path.to_string(),
        query: String::new(),
        body: body.as_bytes().to_vec().into(),
        authorized: true,
    };
    let search = Mutex::new(SearchState::new(Box::new(|_| None)));
    match answer(store, &request, Some("t"), &search) {
        Some(AppReply::Json(status, value)) => (status, value),
        other => panic!("{other:?}"),
    }
}

#[test]
fn faces_and_identities_are_named_merged_and_split_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with_faces(&dir.path().join("c.db"));
    let (status, anna) = post(&store, "/api/faces/1/name", r#"{"name": "Anna"}"#);
    assert_eq!(status, 200, "{anna}");
    let (status, bob) = post(&store, "/api/faces/2/name", r#"{"name": "Bob"}"#);
    assert_eq!(status, 200, "{bob}");
    let (anna, bob) = (
        anna["identity"].as_i64().unwrap(),
        bob["identity"].as_i64().unwrap(),
    );
    assert_ne!(anna, bob);

    // Renaming Bob "Anna" is refused: the name is taken.
    let (status, answer) = post(
        &store,
        &format!("/api/identities/{bob}/name"),
        r#"{"name": "anna"}"#,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("merge"),
        "{answer}"
    );

    // Merge Bob into Anna: one identity with both faces.
    let (status, answer) = post(
        &store,
        &format!("/api/identities/{anna}/merge"),
        &json!({ "from": bob }).to_string(),
    );
    assert_eq!((status, answer["faces_moved"].as_i64()), (200, Some(1)));
    let identities = store.identities().unwrap();
    assert_eq!(identities.len(), 1);
    assert_eq!(identities[0].face_count, 2);

    // Split face 2 off again; it is in no identity then.
    let (status, answer) = post(
        &store,
        &format!("/api/identities/{anna}/split"),
        r#"{"faces": [2]}"#,
    );
    assert_eq!((status, answer["faces_detached"].as_i64()), (200, Some(1)));
    assert_eq!(store.identities().unwrap()[0].face_count, 1);

    // Clearing a name with an empty one.
    let (status, _) = post(
        &store,
        &format!("/api/identities/{anna}/name"),
        r#"{"name": ""}"#,
    );
    assert_eq!(status, 200);
    assert_eq!(store.identities().unwrap()[0].name, None);

    // Bad requests: 400 with a reason, unknown identities 404.
    for (path, body) in [
        ("/api/faces/1/name", "not json"),
        ("/api/faces/1/name", r#"{"nom": "x"}"#),
        ("/api/faces/99/name", r#"{"name": "x"}"#),
        ("/api/identities/1/split", r#"{"faces": []}"#),
        ("/api/identities/1/merge", r#"{"from": "two"}"#),
    ] {
        let (status, answer) = post(&store, path, body);
        assert_eq!(status, 400, "{path} {body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert_eq!(
        post(&store, "/api/identities/77/name", r#"{"name": "x"}"#).0,
        404
    );
}
