//! ONNX Runtime through `ort`, loaded at run time from `libonnxruntime.so` (`load-dynamic`).
//!
//! `ort` is built without its download feature (it fetches binaries from the web at build
//! time), so the library comes from the PyPI `onnxruntime` wheel, which
//! `scripts/fetch-registry-models.sh` unpacks into `models/registry/onnxruntime/`. Without a
//! library `ort` panics on first use, so [`init`] finds the file and checks its version before
//! `ort` sees it, and fails with a message that names the path and what to install.
//!
//! - [`init`] loads the library once per process and creates the one ONNX Runtime environment
//!   (idempotent; later calls return the same [`OrtInfo`]).
//! - [`session`] opens a model with the configured intra-op threads and execution provider.
//!
//! **CUDA.** With [`OrtConfig::cuda`], [`session`] registers the CUDA execution provider and
//! *fails* (no silent CPU fallback) when it cannot: imgd built without its `cuda` cargo
//! feature, or a library without `CUDAExecutionProvider` (the PyPI `onnxruntime` wheel is
//! CPU-only; `onnxruntime-gpu` 1.31.1 ships the CUDA one, built for CUDA 13: cuBLAS 13, cudart
//! 13, cuRAND 10, and cuDNN 9 and cuFFT 12 loaded at run time), or a CUDA provider that does
//! not load (driver or cuDNN missing). CUDA sessions use cuDNN's `DEFAULT` convolution
//! algorithms (see [`session`]'s code for why). A user who asked for the GPU learns at
//! start-up that they do not have it, instead of running 20× slower unnoticed.
//!
//! ```no_run
//! use imgd_infer::onnx::{self, OrtConfig};
//! let config = OrtConfig { intra_threads: 2, ..OrtConfig::default() };
//! let info = onnx::init(&config)?;
//! println!("ONNX Runtime {} from {}", info.version, info.library.display());
//! let model = imgd_infer::registry_dir().join("rapidocr/PP-OCRv6_det_small.onnx");
//! let session = onnx::session(&model, &config)?;
//! # Ok::<(), imgd_infer::InferError>(())
//! ```

use std::ffi::{CStr, c_char, c_int};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use crate::InferError;
use crate::models_dir::{models_dir, registry_dir};

/// The oldest ONNX Runtime minor version the `ort` build accepts (its `api-31` feature):
/// libraries 1.31 and newer.
pub const MIN_ORT_MINOR: u32 = 31;

/// How to load ONNX Runtime and build sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrtConfig {
    /// The `libonnxruntime.so.1.x` file (or a folder holding one; the binary fills it from
    /// `[models] onnxruntime`, else `ORT_DYLIB_PATH`). `None`:
    /// `<models_dir>/registry/onnxruntime/`, else `<repo>/models/registry/onnxruntime/`.
    pub dylib: Option<PathBuf>,
    /// Intra-op threads per session; 0 leaves ONNX Runtime's default (one per physical core).
    pub intra_threads: usize,
    /// Run on the CUDA execution provider; an error when it is unavailable (see the module
    /// docs).
    pub cuda: bool,
    /// One session per input shape, and batches padded to powers of two
    /// ([`crate::ShapedSessions`]): what the CUDA provider needs to run fast. Off on the CPU.
    pub fixed_shapes: bool,
    /// With `fixed_shapes`, the sessions each model keeps at most (the least recently used
    /// closed first); 0 means [`crate::shaped::DEFAULT_SESSIONS_PER_MODEL`].
    pub sessions_per_model: usize,
}

/// What [`init`] loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtInfo {
    /// The library file.
    pub library: PathBuf,
    /// Its version, e.g. `1.31.1`.
    pub version: String,
    /// The execution providers the library was built with, e.g. `["CPUExecutionProvider"]`.
    pub providers: Vec<String>,
}

struct Runtime {
    info: OrtInfo,
    environment: Environment,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static INIT_LOCK: Mutex<()> = Mutex::new(());

/// Finds, checks and loads the ONNX Runtime library and creates the process's environment.
///
/// Idempotent: the first successful call loads the library; later calls return the same
/// [`OrtInfo`] (a process can load only one ONNX Runtime; a later call naming another file
/// logs a warning and keeps the first). A failed call loads nothing, so a later call may
/// succeed. The configured file is always checked, so a bogus path fails even after a
/// successful load.
pub fn init(config: &OrtConfig) -> Result<OrtInfo, InferError> {
    Ok(runtime(config)?.info.clone())
}

/// Opens `model` as an ONNX Runtime session (calling [`init`] first) with every graph
/// optimisation (`ORT_ENABLE_ALL`, which includes the CPU's NCHWc convolution layouts; `ort`'s
/// `Level3` is only `ORT_ENABLE_LAYOUT`, which made the OCR benchmark about 1.4× slower),
/// `config.intra_threads` intra-op threads (0: ONNX Runtime's default) and the CUDA execution
/// provider when `config.cuda` (an error when unavailable; see the module docs).
pub fn session(model: &Path, config: &OrtConfig) -> Result<Session, InferError> {
    let runtime = runtime(config)?;
    if !model.is_file() {
        return Err(InferError::ModelMissing {
            path: model.to_path_buf(),
        });
    }
    let error = |e: &dyn Display| InferError::Session {
        model: model.to_path_buf(),
        message: e.to_string(),
    };
    let mut builder = Session::builder(&runtime.environment)
        .map_err(|e| error(&e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| error(&e))?;
    if config.intra_threads > 0 {
        builder = builder
            .with_intra_threads(config.intra_threads)
            .map_err(|e| error(&e))?;
    }
    if config.cuda {
        builder = with_cuda(builder, &runtime.info)?;
    }
    builder.commit_from_file(model).map_err(|e| error(&e))
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    info: &OrtInfo,
) -> Result<ort::session::builder::SessionBuilder, InferError> {
    if !info.providers.iter().any(|p| p == "CUDAExecutionProvider") {
        return Err(InferError::CudaUnavailable(format!(
            "the ONNX Runtime library {} ({}) provides only {:?}; use the library of the \
             `onnxruntime-gpu` wheel (ORT_DYLIB_PATH), or set cuda = false",
            info.library.display(),
            info.version,
            info.providers
        )));
    }
    // cuDNN's DEFAULT algorithm choice, not ONNX Runtime's EXHAUSTIVE default: imgd's inputs
    // change shape from run to run (image sizes, MTCNN's pyramid and candidate counts, OCR crop
    // widths), and onnxruntime-gpu 1.31.1 redoes its convolution setup on every shape change —
    // on an H100, 2.5 s per run of PP-OCRv6 rec with EXHAUSTIVE, 2.0 s with HEURISTIC, 0.2 s
    // with DEFAULT, 0.01 s when the shape stays the same (benches/GPU.md).
    let cuda = ort::ep::CUDA::default()
        .with_conv_algorithm_search(ort::ep::cuda::ConvAlgorithmSearch::Default);
    builder
        .with_execution_providers([cuda.build().error_on_failure()])
        .map_err(|e| {
            InferError::CudaUnavailable(format!(
                "registering the CUDA execution provider failed (driver, CUDA or cuDNN \
                 libraries missing?): {e}"
            ))
        })
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _info: &OrtInfo,
) -> Result<ort::session::builder::SessionBuilder, InferError> {
    Err(InferError::CudaUnavailable(
        "this imgd was built without the `cuda` cargo feature; rebuild with \
         `--features cuda`, or set cuda = false"
            .to_string(),
    ))
}

fn runtime(config: &OrtConfig) -> Result<&'static Runtime, InferError> {
    // Check what this call names before anything else, so a bogus path always fails clearly.
    let (library, name_version) = locate(config)?;
    let _guard = INIT_LOCK
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(runtime) = RUNTIME.get() {
        if !same_file(&runtime.info.library, &library) {
            tracing::warn!(
                loaded = %runtime.info.library.display(),
                requested = %library.display(),
                "ONNX Runtime is already loaded from another file; keeping it"
            );
        }
        return Ok(runtime);
    }

    let environment = ort::init_from(&library)
        .map_err(|error| match error {
            ort::LoadDynamicError::BadVersion { version_str, path } => InferError::OrtTooOld {
                path,
                version: version_str,
            },
            other => InferError::OrtLoad {
                path: library.clone(),
                message: other.to_string(),
            },
        })?
        .with_name("imgd")
        .with_telemetry(false)
        .build()
        .map_err(|e| InferError::OrtLoad {
            path: library.clone(),
            message: e.to_string(),
        })?;
    let version = name_version
        .map(|(major, minor, patch)| format!("{major}.{minor}.{patch}"))
        .or_else(|| version_from_build_info(ort::info()))
        .unwrap_or_else(|| format!("1.{MIN_ORT_MINOR}+ (checked by ort)"));
    let info = OrtInfo {
        library,
        version,
        providers: available_providers(),
    };
    tracing::info!(
        library = %info.library.display(),
        version = %info.version,
        providers = ?info.providers,
        "ONNX Runtime loaded"
    );
    Ok(RUNTIME.get_or_init(|| Runtime { info, environment }))
}

type Version = (u32, u32, u32);

/// Finds the library this config names and checks it exists and is new enough (by its file
/// name, when the name carries a version) — without loading it.
fn locate(config: &OrtConfig) -> Result<(PathBuf, Option<Version>), InferError> {
    let named = config.dylib.clone();
    let library = match named {
        Some(path) if path.is_dir() => best_in_dir(&path).ok_or(InferError::OrtNotFound {
            searched: vec![path],
        })?,
        Some(path) if path.is_file() => path,
        Some(path) => {
            return Err(InferError::OrtNotFound {
                searched: vec![path],
            });
        }
        None => {
            let searched = default_library_dirs();
            searched
                .iter()
                .find_map(|dir| best_in_dir(dir))
                .ok_or(InferError::OrtNotFound { searched })?
        }
    };
    let version = library_version(&library);
    if let Some((major, minor, patch)) = version
        && (major != 1 || minor < MIN_ORT_MINOR)
    {
        return Err(InferError::OrtTooOld {
            path: library,
            version: format!("{major}.{minor}.{patch}"),
        });
    }
    Ok((library, version))
}

/// The folders searched when the config names no library.
pub fn default_library_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![models_dir().join("registry").join("onnxruntime")];
    let registry = registry_dir().join("onnxruntime");
    if !dirs.contains(&registry) {
        dirs.push(registry);
    }
    dirs
}

/// The newest `libonnxruntime.so*` in `dir` (by the version in its name).
fn best_in_dir(dir: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.is_file()
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("libonnxruntime.so"))
        })
        .max_by_key(|path| version_from_name(path).unwrap_or((0, 0, 0)))
}

/// The version in the library's file name or, for a symlink such as `libonnxruntime.so`, in
/// its target's.
fn library_version(path: &Path) -> Option<Version> {
    version_from_name(path).or_else(|| version_from_name(&std::fs::canonicalize(path).ok()?))
}

/// `libonnxruntime.so.1.31.1` → (1, 31, 1); `libonnxruntime.so.1` and other names → None.
fn version_from_name(path: &Path) -> Option<Version> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("libonnxruntime.so.")?;
    parse_version(rest)
}

fn parse_version(text: &str) -> Option<Version> {
    let mut parts = text.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Some((major, minor, patch))
}

/// `ORT Build Info: git-branch=rel-1.31.1, ...` → `1.31.1`.
fn version_from_build_info(info: &str) -> Option<String> {
    let start = info.find("rel-")? + 4;
    let version: String = info[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    parse_version(&version).map(|_| version)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The execution providers the loaded library was built with (`GetAvailableProviders`).
/// `ort` checks single providers only when their cargo feature is on; this lists them all.
#[allow(unsafe_code)]
fn available_providers() -> Vec<String> {
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut count: c_int = 0;
    // SAFETY: the library is loaded (this runs after `ort::init_from` succeeded), the out
    // pointers are valid, and the list is released with the matching call below. A non-null
    // status is an error, released after reading nothing from it.
    unsafe {
        let status = (api.GetAvailableProviders)(&mut list, &mut count);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
            return Vec::new();
        }
        if list.is_null() {
            return Vec::new();
        }
        let providers = (0..usize::try_from(count).unwrap_or(0))
            .map(|i| *list.add(i))
            .filter(|p| !p.is_null())
            .map(|p| CStr::from_ptr(p).to_string_lossy().into_owned())
            .collect();
        let status = (api.ReleaseAvailableProviders)(list, count);
        if !status.0.is_null() {
            (api.ReleaseStatus)(status.0);
        }
        providers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_minor_matches_the_ort_build() {
        assert_eq!(MIN_ORT_MINOR, ort::MINOR_VERSION);
    }

    #[test]
    fn versions_come_from_file_names_and_build_info() {
        assert_eq!(
            version_from_name(Path::new("/x/libonnxruntime.so.1.31.1")),
            Some((1, 31, 1))
        );
        assert_eq!(
            version_from_name(Path::new("libonnxruntime.so.1.20")),
            Some((1, 20, 0))
        );
        assert_eq!(version_from_name(Path::new("libonnxruntime.so")), None);
        assert_eq!(
            version_from_name(Path::new("libonnxruntime_providers_shared.so")),
            None
        );
        assert_eq!(
            version_from_build_info("ORT Build Info: git-branch=rel-1.31.1, git-commit-id=abc"),
            Some("1.31.1".to_string())
        );
        assert_eq!(version_from_build_info("no branch"), None);
    }

    #[test]
    fn an_old_library_is_refused_by_name_before_loading() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("libonnxruntime.so.1.20.0");
        std::fs::write(&old, b"not a library").unwrap();
        let config = OrtConfig {
            dylib: Some(old.clone()),
            ..OrtConfig::default()
        };
        let error = init(&config).unwrap_err();
        assert!(matches!(error, InferError::OrtTooOld { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&old.display().to_string()), "{message}");
        assert!(
            message.contains("1.20.0") && message.contains("1.31"),
            "{message}"
        );
        // A folder is searched for the newest library in it.
        let error = init(&OrtConfig {
            dylib: Some(dir.path().to_path_buf()),
            ..OrtConfig::default()
        })
        .unwrap_err();
        assert!(matches!(error, InferError::OrtTooOld { .. }), "{error:?}");
    }
}
