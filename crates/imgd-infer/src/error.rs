//! The error type of the model runtime.

use std::path::PathBuf;

/// Why the model runtime could not load a library, open a model or fetch a file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InferError {
    /// No ONNX Runtime library was found, or the configured one does not exist.
    #[error(
        "ONNX Runtime library not found (looked at: {}); run scripts/fetch-registry-models.sh \
         (it unpacks libonnxruntime.so.1.31.1 from the PyPI onnxruntime 1.31.1 wheel into \
         models/registry/onnxruntime/), or point `ort_dylib` / ORT_DYLIB_PATH at a \
         libonnxruntime.so.1.x (x >= {min_minor})",
        display_paths(searched),
        min_minor = crate::onnx::MIN_ORT_MINOR
    )]
    OrtNotFound {
        /// Every place looked at, in order.
        searched: Vec<PathBuf>,
    },
    /// The library is older than the ONNX Runtime API this build of imgd needs.
    #[error(
        "the ONNX Runtime library {} is version {version}, but imgd needs 1.{min_minor} or newer \
         (its `ort` crate uses API level {min_minor}); install onnxruntime >= 1.{min_minor} \
         (scripts/fetch-registry-models.sh fetches 1.31.1) and point ORT_DYLIB_PATH at its \
         onnxruntime/capi/libonnxruntime.so.1.x",
        path.display(),
        min_minor = crate::onnx::MIN_ORT_MINOR
    )]
    OrtTooOld {
        /// The library.
        path: PathBuf,
        /// Its version.
        version: String,
    },
    /// The library exists but could not be loaded (not a shared library, missing symbols,
    /// missing dependencies).
    #[error("cannot load the ONNX Runtime library {}: {message}", path.display())]
    OrtLoad {
        /// The library.
        path: PathBuf,
        /// What the loader said.
        message: String,
    },
    /// CUDA was asked for but this build or this library cannot provide it.
    #[error("CUDA execution provider unavailable: {0}")]
    CudaUnavailable(String),
    /// A model file is missing.
    #[error("model file {} not found; run `imgd models fetch` (or scripts/fetch-registry-models.sh for registry-shipped models)", path.display())]
    ModelMissing {
        /// The file.
        path: PathBuf,
    },
    /// ONNX Runtime refused to build a session for a model.
    #[error("cannot open the model {}: {message}", model.display())]
    Session {
        /// The model file.
        model: PathBuf,
        /// ONNX Runtime's message.
        message: String,
    },
    /// An ONNX Runtime call failed while running a model.
    #[error("ONNX Runtime: {0}")]
    Ort(String),
    /// The model manifest is malformed or names an unknown model.
    #[error("model manifest: {0}")]
    Manifest(String),
    /// A file's SHA-256 differs from the manifest's.
    #[error("{}: sha256 mismatch: expected {expected}, got {actual}", path.display())]
    Checksum {
        /// The file (or URL) checked.
        path: PathBuf,
        /// The manifest's digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// A download failed.
    #[error("download of {url} failed: {message}")]
    Fetch {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl From<ort::Error> for InferError {
    fn from(error: ort::Error) -> Self {
        InferError::Ort(error.to_string())
    }
}

fn display_paths(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "nowhere".to_string();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
