//! The schema and full-text search on both engines: every migration applied once, a database
//! from a newer imgd refused, and search that needs every word and never fails on user input.

use std::time::Duration;

use imgd_core::{ResultRow, SqlValue};
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use imgd_store::{StoreError, latest_schema_version, params};

mod common;
use common::backends::each_backend;

#[test]
fn a_new_database_gets_every_migration_once_and_a_newer_one_is_refused() {
    each_backend(|db| {
        let latest = latest_schema_version(&imgd_registry::registry());
        let store = db.open();
        assert_eq!(store.schema_version().unwrap(), latest);
        drop(store);
        let store = db.open();
        let rows: i64 = store
            .db()
            .query_row("SELECT COUNT(*) FROM schema_version", params![], |r| {
                r.get(0)
            })
            .unwrap();
        let versions: Vec<i64> = store
            .db()
            .query_map(
                "SELECT version FROM schema_version ORDER BY version",
                params![],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows as usize, versions.len());
        assert_eq!(versions.last(), Some(&latest));
        store
            .db()
            .execute(
                "INSERT INTO schema_version (version, name, applied_ms) VALUES (?1, 'future', 0)",
                params![latest + 1],
            )
            .unwrap();
        drop(store);
        let error = imgd_store::Store::connect(
            &db.url,
            imgd_store::StoreOptions {
                modules: imgd_registry::registry(),
                ..imgd_store::StoreOptions::default()
            },
        )
        .err()
        .expect("a newer schema must be refused");
        assert!(
            matches!(error, StoreError::NewerSchema { found, .. } if found == latest + 1),
            "{error}"
        );
        assert!(error.to_string().contains("upgrade imgd"), "{error}");
    });
}

fn row(module: imgd_core::Module, columns: Vec<(&'static str, SqlValue)>) -> ResultRow {
    ResultRow {
        module,
        model_id: Some("m".into()),
        model_version: Some("1".into()),
        columns,
        data: serde_json::json!({}),
        vectors: Vec::new(),
    }
}

#[test]
fn search_needs_every_word_and_reads_paths_cameras_captions_text_and_labels() {
    each_backend(|db| {
        let modules = [
            imgd_modules::METADATA,
            imgd_ocr::OCR,
            imgd_objects::OBJECTS,
            imgd_caption::CAPTION,
        ];
        let mut store = common::store_in(
            db,
            &["/trips/Lisbon 2024/IMG_0042.jpg", "/trips/Porto/DSC_7.jpg"],
            &modules,
        );
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
                let lisbon = image.path.contains("Lisbon");
                let done = image
                    .jobs
                    .iter()
                    .map(|job| {
                        let text =
                            |a: &str, b: &str| SqlValue::Text(if lisbon { a } else { b }.into());
                        let result = match job.module.name() {
                            "metadata" => row(
                                job.module,
                                vec![
                                    ("make", text("Canon", "Nikon")),
                                    ("model", text("EOS R5", "Z6")),
                                ],
                            ),
                            "ocr" => row(
                                job.module,
                                vec![
                                    ("text", text("Tram 28 Graça", "Caves Sandeman")),
                                    ("line_count", SqlValue::Integer(1)),
                                ],
                            ),
                            "objects" => row(
                                job.module,
                                vec![("labels", text("tram street", "boat river"))],
                            ),
                            _ => row(
                                job.module,
                                vec![(
                                    "caption",
                                    text("a yellow tram climbing a hill", "boats on a river"),
                                )],
                            ),
                        };
                        (job.job_id, result)
                    })
                    .collect();
                ImageOutcome {
                    image_id: image.image_id,
                    dimensions: None,
                    done,
                    failed: vec![],
                    missing: false,
                }
            })
            .collect();
        let summary = store.commit_outcomes("w", &outcomes).unwrap();
        assert_eq!(summary.search_rows, 2);
        let found = |query: &str| -> Vec<String> {
            store
                .search_text(query, 10)
                .unwrap_or_else(|e| panic!("{query:?}: {e}"))
                .into_iter()
                .map(|hit| hit.path)
                .collect()
        };
        let lisbon = vec!["/trips/Lisbon 2024/IMG_0042.jpg".to_string()];
        let porto = vec!["/trips/Porto/DSC_7.jpg".to_string()];
        // Folder, file name and extension words; the camera; OCR text; labels; the caption,
        // stemmed ("climbs" finds "climbing").
        assert_eq!(found("lisbon"), lisbon);
        assert_eq!(found("IMG_0042"), lisbon);
        assert_eq!(found("canon r5"), lisbon);
        assert_eq!(found("graça"), lisbon);
        assert_eq!(found("river"), porto);
        assert_eq!(found("yellow tram climbs"), lisbon);
        assert_eq!(found("dsc 7 nikon").len(), 1);
        assert_eq!(found("jpg").len(), 2);
        // Every word must match, short common words included.
        assert!(found("tram boat").is_empty());
        assert!(found("boats on the river").is_empty());
        assert_eq!(found("boats on a river"), porto);
        // Operators and punctuation of either engine's query language are only text.
        for hostile in [
            "tram OR boat",
            "\"unbalanced",
            "(* AND",
            "tram & !boat | x:*",
            "NEAR(a b)",
            "' ; DROP TABLE images; --",
            "",
            "   ",
            "***",
        ] {
            let hits = store
                .search_text(hostile, 10)
                .unwrap_or_else(|e| panic!("{hostile:?}: {e}"));
            assert!(hits.len() <= 1, "{hostile:?}: {hits:?}");
        }
        assert_eq!(
            store
                .db()
                .query_row("SELECT COUNT(*) FROM images", params![], |r| r
                    .get::<i64>(0))
                .unwrap(),
            2
        );
    });
}
