//! Shared test helpers: fixture photos and the registry-shipped models.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::RgbImage;
use imgd_faces::FaceModels;
use imgd_infer::OrtConfig;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A photo of fixtures/faces, decoded.
pub fn photo(name: &str) -> RgbImage {
    let path = repo().join("fixtures/faces").join(name);
    image::open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// MTCNN from the registry folder (scripts/fetch-registry-models.sh), with a clear failure
/// when it is missing.
pub fn mtcnn_models() -> FaceModels {
    let models = FaceModels::locate(Path::new("/nonexistent-imgd-models"));
    assert!(
        models.mtcnn.is_some(),
        "MTCNN models missing (looked in {:?}); run scripts/fetch-registry-models.sh",
        models.mtcnn_searched
    );
    models
}

/// ONNX Runtime on 2 threads, the library found as imgd finds it.
pub fn ort() -> OrtConfig {
    OrtConfig {
        intra_threads: 2,
        ..OrtConfig::default()
    }
}
