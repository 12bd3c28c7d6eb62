//! The web page's search filters over real result rows: camera, dates, object label, text,
//! aesthetic score, failed module, each alone and together.

use std::time::Duration;

use imgd_core::{Module, ResultRow, SqlValue};
use imgd_store::Store;
use imgd_store::browse::ImageFilter;
use imgd_store::queue::{ClaimRequest, JobFailure};
use imgd_store::results::ImageOutcome;
use serde_json::json;

mod common;
use common::backends::{TestDb, each_backend};

const MODULES: [Module; 4] = [
    imgd_modules::METADATA,
    imgd_ocr::OCR,
    imgd_objects::OBJECTS,
    imgd_clip::AESTHETIC,
];

/// What one photo's modules found.
struct Photo {
    path: &'static str,
    make: &'static str,
    model: &'static str,
    taken: &'static str,
    lines: i64,
    labels: &'static str,
    aesthetic: f64,
    /// Its OCR job fails instead.
    ocr_fails: bool,
}

const PHOTOS: [Photo; 3] = [
    Photo {
        path: "/p/beach.jpg",
        make: "Canon",
        model: "Canon EOS 5D Mark IV",
        taken: "2023-07-14T10:00:00",
        lines: 0,
        labels: "dog person",
        aesthetic: 6.5,
        ocr_fails: false,
    },
    Photo {
        path: "/p/sign.jpg",
        make: "NIKON CORPORATION",
        model: "NIKON D750",
        taken: "2024-01-02T08:30:00",
        lines: 3,
        labels: "traffic light",
        aesthetic: 4.0,
        ocr_fails: false,
    },
    Photo {
        path: "/p/night.jpg",
        make: "Canon",
        model: "Canon PowerShot S40",
        taken: "2024-12-31T23:59:00",
        lines: 0,
        labels: "dog",
        aesthetic: 5.2,
        ocr_fails: true,
    },
];

fn row(module: Module, columns: Vec<(&'static str, SqlValue)>) -> ResultRow {
    ResultRow {
        module,
        model_id: None,
        model_version: None,
        columns,
        data: json!({}),
        vectors: Vec::new(),
    }
}

fn library(db: &TestDb) -> Store {
    let paths: Vec<&str> = PHOTOS.iter().map(|p| p.path).collect();
    let mut store = common::store_in(db, &paths, &MODULES);
    let claimed = store
        .claim(&ClaimRequest {
            owner: "test",
            modules: &MODULES,
            max_images: 10,
            lease: Duration::from_secs(60),
            idle: true,
        })
        .unwrap();
    let outcomes: Vec<ImageOutcome> = claimed
        .iter()
        .map(|image| {
            let photo = PHOTOS.iter().find(|p| p.path == image.path).unwrap();
            let mut done = Vec::new();
            let mut failed = Vec::new();
            for job in &image.jobs {
                let result = match job.module.name() {
                    "metadata" => row(
                        job.module,
                        vec![
                            ("make", SqlValue::Text(photo.make.into())),
                            ("model", SqlValue::Text(photo.model.into())),
                            ("taken_at", SqlValue::Text(photo.taken.into())),
                        ],
                    ),
                    "ocr" if photo.ocr_fails => {
                        failed.push(JobFailure {
                            job_id: job.job_id,
                            error: "corrupt JPEG".into(),
                            permanent: true,
                        });
                        continue;
                    }
                    "ocr" => row(
                        job.module,
                        vec![
                            ("line_count", SqlValue::Integer(photo.lines)),
                            ("text", SqlValue::Text("x".repeat(photo.lines as usize))),
                        ],
                    ),
                    "objects" => row(
                        job.module,
                        vec![("labels", SqlValue::Text(photo.labels.into()))],
                    ),
                    _ => row(job.module, vec![("score", SqlValue::Real(photo.aesthetic))]),
                };
                done.push((job.job_id, result));
            }
            ImageOutcome {
                image_id: image.image_id,
                dimensions: Some((640, 480)),
                done,
                failed,
                missing: false,
            }
        })
        .collect();
    store.commit_outcomes("test", &outcomes).unwrap();
    store
}

fn paths(store: &Store, filter: &ImageFilter) -> Vec<String> {
    let ids = store.filtered_images(filter, 100).unwrap();
    let by_id = store.image_paths(&ids).unwrap();
    let mut paths: Vec<String> = ids.iter().map(|id| by_id[id].clone()).collect();
    paths.sort();
    paths
}

#[test]
fn each_filter_keeps_what_it_names_and_they_combine() {
    each_backend(|db| {
        let store = library(db);
        let all = ImageFilter::default();
        assert_eq!(paths(&store, &all).len(), 3);
        let f = |filter: ImageFilter| paths(&store, &filter);
        assert_eq!(
            f(ImageFilter {
                camera: Some("canon".into()),
                ..all.clone()
            }),
            ["/p/beach.jpg", "/p/night.jpg"]
        );
        assert_eq!(
            f(ImageFilter {
                camera: Some("eos 5d".into()),
                ..all.clone()
            }),
            ["/p/beach.jpg"]
        );
        // LIKE's wildcards in user input are literal.
        assert!(
            f(ImageFilter {
                camera: Some("%".into()),
                ..all.clone()
            })
            .is_empty()
        );
        assert_eq!(
            f(ImageFilter {
                taken_from: Some("2024-01-01".into()),
                taken_to: Some("2024-12-31".into()),
                ..all.clone()
            }),
            ["/p/night.jpg", "/p/sign.jpg"],
            "both ends of the range are included"
        );
        assert_eq!(
            f(ImageFilter {
                label: Some("Dog".into()),
                ..all.clone()
            }),
            ["/p/beach.jpg", "/p/night.jpg"]
        );
        assert_eq!(
            f(ImageFilter {
                label: Some("traffic light".into()),
                ..all.clone()
            }),
            ["/p/sign.jpg"]
        );
        assert!(
            f(ImageFilter {
                label: Some("do".into()),
                ..all.clone()
            })
            .is_empty(),
            "a label matches whole words"
        );
        assert_eq!(
            f(ImageFilter {
                has_text: true,
                ..all.clone()
            }),
            ["/p/sign.jpg"]
        );
        assert_eq!(
            f(ImageFilter {
                min_aesthetic: Some(5.0),
                ..all.clone()
            }),
            ["/p/beach.jpg", "/p/night.jpg"]
        );
        assert_eq!(
            f(ImageFilter {
                failed_module: Some("ocr".into()),
                ..all.clone()
            }),
            ["/p/night.jpg"]
        );
        let together = ImageFilter {
            camera: Some("canon".into()),
            label: Some("dog".into()),
            min_aesthetic: Some(6.0),
            ..all.clone()
        };
        assert_eq!(f(together.clone()), ["/p/beach.jpg"]);
        // Narrowing a ranked list keeps its order.
        let ids = store.filtered_images(&all, 100).unwrap();
        let reversed: Vec<i64> = ids.iter().rev().copied().collect();
        let kept = store
            .keep_passing(
                &reversed,
                &ImageFilter {
                    label: Some("dog".into()),
                    ..all.clone()
                },
            )
            .unwrap();
        assert_eq!(kept.len(), 2);
        assert_eq!(
            kept,
            reversed
                .iter()
                .copied()
                .filter(|id| kept.contains(id))
                .collect::<Vec<_>>()
        );
        let cameras = store.cameras(10).unwrap();
        assert_eq!(cameras.len(), 3);
        assert!(cameras.iter().all(|(_, n)| *n == 1));
    });
}

#[test]
fn finished_images_are_listed_under_a_folder_a_file_or_everywhere() {
    each_backend(|db| {
        let store = library(db);
        let listed = |root: Option<&str>| {
            let mut paths: Vec<String> = store
                .finished_images(root)
                .unwrap()
                .into_iter()
                .map(|image| image.path)
                .collect();
            paths.sort();
            paths
        };
        let all = ["/p/beach.jpg", "/p/night.jpg", "/p/sign.jpg"];
        assert_eq!(listed(None), all);
        assert_eq!(listed(Some("/p")), all);
        assert_eq!(listed(Some("/p/")), all);
        assert_eq!(listed(Some("/p/sign.jpg")), ["/p/sign.jpg"]);
        assert!(listed(Some("/q")).is_empty());
    });
}
