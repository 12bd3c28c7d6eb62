//! Faces and identities in the database: the writer's hook that fills `faces` from a
//! `result_faces` row, identity commands, and names in the search index.

use std::time::Duration;

use imgd_core::{ResultRow, SqlValue};
use imgd_store::db::FromValue;
use imgd_store::faces::IdentityError;
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use imgd_store::{Store, params};
use serde_json::{Value, json};

mod common;
use common::backends::{TestDb, each_backend};

fn store_with(db: &TestDb, paths: &[&str]) -> Store {
    common::store_in(db, paths, &[imgd_faces::FACES])
}

/// A faces row as the runner makes it: boxes in a 640×480 tier, embeddings beside the JSON.
fn faces_row(faces: &[([f64; 4], Option<Vec<f32>>)], embedding_model: Option<&str>) -> ResultRow {
    let vectors = faces
        .iter()
        .map(|(_, e)| e.clone().unwrap_or_default())
        .collect();
    let faces: Vec<Value> = faces
        .iter()
        .map(|(b, _)| {
            let landmarks = vec![[b[0] + 1.0, b[1] + 1.0]; 5];
            json!({ "box": b, "score": 0.99, "landmarks": landmarks })
        })
        .collect();
    ResultRow {
        module: imgd_faces::FACES,
        model_id: Some("mtcnn".into()),
        model_version: Some("test".into()),
        columns: vec![("face_count", SqlValue::Integer(faces.len() as i64))],
        data: json!({
            "detector": "mtcnn", "embedding_model": embedding_model, "frame": [640, 480],
            "coords": "tier", "faces": faces,
        }),
        vectors,
    }
}

/// Claims every queued faces job and commits `row_for(path)` for each image, as the writer
/// would, with the image's full size 1280×960.
fn commit_all(store: &mut Store, row_for: impl Fn(&str) -> ResultRow) {
    let claimed = store
        .claim(&ClaimRequest {
            owner: "test",
            modules: &[imgd_faces::FACES],
            max_images: 100,
            lease: Duration::from_secs(60),
            idle: true,
        })
        .unwrap();
    let outcomes: Vec<ImageOutcome> = claimed
        .iter()
        .map(|image| ImageOutcome {
            image_id: image.image_id,
            dimensions: Some((1280, 960)),
            done: vec![(image.jobs[0].job_id, row_for(&image.path))],
            failed: vec![],
            missing: false,
        })
        .collect();
    store.commit_outcomes("test", &outcomes).unwrap();
}

fn query<T: FromValue>(store: &Store, sql: &str) -> T {
    store.db().query_row(sql, params![], |r| r.get(0)).unwrap()
}

fn unit(v: [f32; 3]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

#[test]
fn a_faces_result_fills_the_faces_table_in_full_image_pixels() {
    each_backend(|db| {
        let mut store = store_with(db, &["/p/a.jpg"]);
        let e = unit([1.0, 2.0, 3.0]);
        commit_all(&mut store, |_| {
            faces_row(
                &[
                    ([10.0, 20.0, 30.0, 40.0], Some(e.clone())),
                    ([300.0, 100.0, 50.0, 60.0], Some(e.clone())),
                ],
                Some("w600k_r50"),
            )
        });
        assert_eq!(query::<i64>(&store, "SELECT COUNT(*) FROM faces"), 2);
        // The tier was 640×480 of a 1280×960 image: everything doubles.
        let (x, y, w, h): (f64, f64, f64, f64) = store
            .db()
            .query_row(
                "SELECT x, y, w, h FROM faces WHERE idx = 0",
                params![],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!((x, y, w, h), (20.0, 40.0, 60.0, 80.0));
        let blob: Vec<u8> = query(&store, "SELECT embedding FROM faces WHERE idx = 0");
        let back: Vec<f32> = blob
            .chunks(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(back, e);
        assert_eq!(
            query::<String>(&store, "SELECT embedding_model FROM faces WHERE idx = 1"),
            "w600k_r50"
        );
        // `imgd show` sees boxes, scores and landmarks in image pixels, and no embeddings.
        let shown = store
            .show(&imgd_store::report::ImageRef::Path("/p/a.jpg"))
            .unwrap();
        let data = &shown["faces"]["data"];
        assert_eq!(data["coords"], "image");
        assert_eq!(data["faces"][0]["box"], json!([20.0, 40.0, 60.0, 80.0]));
        assert_eq!(data["faces"][0]["landmarks"][0], json!([22.0, 42.0]));
        assert_eq!(data["faces"][0]["score"], json!(0.99));
        assert!(data["faces"][0].get("embedding").is_none());
        assert_eq!(shown["faces"]["face_count"], 2);
        // Deleting the image deletes its faces.
        store
            .db()
            .execute("DELETE FROM images WHERE path = '/p/a.jpg'", params![])
            .unwrap();
        assert_eq!(query::<i64>(&store, "SELECT COUNT(*) FROM faces"), 0);
    });
}

#[test]
fn faces_without_an_embedding_model_are_stored_and_counted_as_such() {
    each_backend(|db| {
        let mut store = store_with(db, &["/p/a.jpg", "/p/b.jpg"]);
        commit_all(&mut store, |_| {
            faces_row(&[([1.0, 2.0, 3.0, 4.0], None)], None)
        });
        let summary = store.faces_summary().unwrap();
        assert_eq!(summary.images_analysed, 2);
        assert_eq!(summary.faces, 2);
        assert_eq!(summary.not_embedded, 2);
        assert_eq!(summary.embedded, 0);
        assert_eq!(summary.embedding_models, vec![(None, 2)]);
        assert!(store.face_embeddings().unwrap().is_empty());
    });
}

fn face_ids(store: &Store) -> Vec<i64> {
    store
        .db()
        .query_map("SELECT id FROM faces ORDER BY id", params![], |r| r.get(0))
        .unwrap()
}

fn search(store: &Store, q: &str) -> Vec<String> {
    store
        .search_text(q, 10)
        .unwrap()
        .into_iter()
        .map(|h| h.path)
        .collect()
}

#[test]
fn identities_are_named_merged_split_and_their_names_are_searchable() {
    each_backend(|db| {
        let paths = ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg"];
        let mut store = store_with(db, &paths);
        let e = unit([0.0, 1.0, 0.0]);
        commit_all(&mut store, |_| {
            faces_row(&[([10.0, 10.0, 20.0, 20.0], Some(e.clone()))], Some("m"))
        });
        let faces = face_ids(&store);
        assert_eq!(faces.len(), 3);
        // Two identities: faces 1+2, face 3.
        let created = store
            .apply_clusters(&[], &[vec![faces[0], faces[1]], vec![faces[2]]])
            .unwrap();
        assert_eq!(created.len(), 2);
        let (ada, bob) = (created[0], created[1]);
        let listed = store.identities().unwrap();
        assert_eq!(listed[0].id, ada);
        assert_eq!(listed[0].face_count, 2);
        assert_eq!(listed[0].sample_path.as_deref(), Some("/p/a.jpg"));

        store.name_identity(ada, Some("Ada Lovelace")).unwrap();
        assert_eq!(search(&store, "lovelace"), vec!["/p/a.jpg", "/p/b.jpg"]);
        // Names are unique, case-insensitively.
        let taken = store.name_identity(bob, Some("ada lovelace")).unwrap_err();
        assert!(
            matches!(taken, IdentityError::NameTaken { owner, .. } if owner == ada),
            "{taken}"
        );
        assert!(taken.to_string().contains("imgd faces merge"));
        assert!(matches!(
            store.name_identity(999, Some("x")),
            Err(IdentityError::NoSuchIdentity(999))
        ));

        // Merging an unnamed identity into a named one: one identity, three faces, all searchable.
        assert_eq!(store.merge_identities(ada, bob).unwrap(), 1);
        let listed = store.identities().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].face_count, 3);
        assert_eq!(search(&store, "ada").len(), 3);
        assert!(matches!(
            store.merge_identities(ada, ada),
            Err(IdentityError::Invalid(_))
        ));

        // Splitting one face off: it has no identity, its image loses the name.
        assert_eq!(store.split_identity(ada, &[faces[2]]).unwrap(), 1);
        assert_eq!(search(&store, "ada"), vec!["/p/a.jpg", "/p/b.jpg"]);
        assert!(store.split_identity(ada, &[faces[2]]).is_err());
        // Splitting all faces off a named identity keeps the name (and the empty identity).
        assert_eq!(store.split_identity(ada, &[]).unwrap(), 2);
        let listed = store.identities().unwrap();
        assert_eq!(listed[0].name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(listed[0].face_count, 0);
        assert!(search(&store, "ada").is_empty());
        assert_eq!(store.faces_summary().unwrap().unassigned, 3);

        // Merging a named identity into an unnamed one keeps the name.
        let created = store
            .apply_clusters(&[], std::slice::from_ref(&faces))
            .unwrap();
        store.merge_identities(created[0], ada).unwrap();
        let listed = store.identities().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(search(&store, "ada").len(), 3);
    });
}

#[test]
fn re_analysing_an_image_keeps_the_identities_of_its_faces() {
    each_backend(|db| {
        let mut store = store_with(db, &["/p/a.jpg"]);
        let e = unit([1.0, 0.0, 0.0]);
        commit_all(&mut store, |_| {
            faces_row(
                &[
                    ([10.0, 10.0, 40.0, 40.0], Some(e.clone())),
                    ([200.0, 10.0, 40.0, 40.0], Some(e.clone())),
                ],
                Some("m"),
            )
        });
        let faces = face_ids(&store);
        let created = store.apply_clusters(&[], &[vec![faces[0]]]).unwrap();
        store.name_identity(created[0], Some("Grace")).unwrap();
        // The image is queued again (changed file, or --force) and analysed again: the first face
        // moved by a pixel, the second is gone, a third appeared.
        store
            .db()
            .execute("UPDATE jobs SET state = 'queued'", params![])
            .unwrap();
        commit_all(&mut store, |_| {
            faces_row(
                &[
                    ([400.0, 10.0, 40.0, 40.0], Some(e.clone())),
                    ([10.5, 10.0, 40.0, 40.0], Some(e.clone())),
                ],
                Some("m"),
            )
        });
        let named: i64 = query(
            &store,
            "SELECT idx FROM faces WHERE identity_id IS NOT NULL",
        );
        assert_eq!(named, 1, "the moved face keeps its identity");
        assert_eq!(query::<i64>(&store, "SELECT COUNT(*) FROM faces"), 2);
        assert_eq!(store.identities().unwrap()[0].face_count, 1);
        assert_eq!(search(&store, "grace"), vec!["/p/a.jpg"]);
    });
}

/// A face without an embedding (no clustering can group it) is named directly: it joins the
/// identity of that name, created on first use, and the name is searchable and filterable.
#[test]
fn a_face_is_named_directly_and_joins_the_identity_of_that_name() {
    each_backend(|db| {
        let paths = ["/p/a.jpg", "/p/b.jpg"];
        let mut store = store_with(db, &paths);
        commit_all(&mut store, |_| {
            faces_row(&[([10.0, 10.0, 20.0, 20.0], None)], None)
        });
        let faces = face_ids(&store);
        assert_eq!(faces.len(), 2);
        let anna = store.name_face(faces[0], "  Anna Smith ").unwrap();
        assert_eq!(search(&store, "anna"), ["/p/a.jpg"]);
        // The same name, differently cased: the same identity.
        assert_eq!(store.name_face(faces[1], "anna smith").unwrap(), anna);
        let identities = store.identities().unwrap();
        assert_eq!(identities.len(), 1);
        assert_eq!(identities[0].name.as_deref(), Some("Anna Smith"));
        assert_eq!(identities[0].face_count, 2);
        let filter = imgd_store::browse::ImageFilter {
            person: Some("ANNA SMITH".into()),
            ..Default::default()
        };
        assert_eq!(store.filtered_images(&filter, 10).unwrap().len(), 2);
        // Renaming one face moves it; the first identity keeps its name and the other face.
        let bob = store.name_face(faces[1], "Bob").unwrap();
        assert_ne!(bob, anna);
        assert_eq!(search(&store, "bob"), ["/p/b.jpg"]);
        assert_eq!(search(&store, "anna"), ["/p/a.jpg"]);
        assert!(matches!(
            store.name_face(faces[0], "   "),
            Err(IdentityError::Invalid(_))
        ));
        assert!(matches!(
            store.name_face(9999, "Carl"),
            Err(IdentityError::Invalid(message)) if message.contains("9999")
        ));
    });
}
