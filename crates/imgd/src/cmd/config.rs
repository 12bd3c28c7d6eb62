//! The daemon's configuration: a TOML file (see dist/imgd.toml), overridden by the environment,
//! overridden by command-line flags.
//!
//! The binary reads the settings every module shares; each model module reads its own
//! `[models]` keys and sections through its `ModuleLoader` (the registry's), and the keys and
//! sections no module owns are refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use imgd_infer::loader::LoadContext;
use imgd_pipeline::batcher::BatchConfig;
use imgd_pipeline::daemon::{PipelineConfig, WriterConfig};
use serde::Deserialize;

/// The configuration file.
#[derive(Debug, Default, Deserialize)]
pub struct FileConfig {
    /// The database.
    pub db: Option<PathBuf>,
    #[serde(default)]
    pub daemon: DaemonSection,
    #[serde(default)]
    pub writer: WriterSection,
    /// `[decode]`: the memory decoded pixels in flight may take.
    #[serde(default)]
    pub decode: DecodeSection,
    /// `[batch.default]` and `[batch.<module>]`.
    #[serde(default)]
    pub batch: BTreeMap<String, BatchSection>,
    /// `[http]`: who may use the web page and the API.
    #[serde(default)]
    pub http: HttpSection,
    /// `[store]`: where this host finds the library's folders.
    #[serde(default)]
    pub store: StoreSection,
    /// `[xmp]`: sidecars for photo managers.
    #[serde(default)]
    pub xmp: imgd_xmp::XmpSettings,
    /// `[models]`: where the weights are, on what device, and each model module's own keys.
    #[serde(default)]
    pub models: ModelsSection,
    /// The sections model modules own (`[caption]`, `[objects]`, `[cloud]`): read by their
    /// loaders.
    #[serde(flatten)]
    pub module_sections: toml::Table,
}

/// `[models]`.
#[derive(Debug, Deserialize)]
#[serde(default)]
pub struct ModelsSection {
    /// The folder `imgd models fetch` fills; default `IMGD_MODELS`, else
    /// `~/.local/share/imgd/models`.
    pub dir: Option<PathBuf>,
    /// Run the models on the GPU (a build with the `cuda` feature); the CPU when unavailable.
    pub cuda: bool,
    /// With `cuda`, also run the ONNX Runtime models (OCR, faces, objects) on the GPU, with one
    /// session per input shape and batches padded to powers of two (onnxruntime-gpu re-plans
    /// its convolutions whenever a session's input shape changes). Off by default: timed on a
    /// GPU, it ran at 1.03-1.27x the images/s of 16 CPU cores (benches/GPU.md).
    pub onnx_cuda: bool,
    /// With `onnx_cuda`, the sessions each ONNX model keeps (one per input shape, the least
    /// recently used closed first); 0: 32. Each holds its own copy of the model on the GPU.
    pub onnx_sessions_per_model: usize,
    /// On the GPU, run CLIP in f16 (about twice the images/s; vectors within ~2e-3 relative
    /// of f32). The CPU always runs f32.
    pub gpu_f16: bool,
    /// ONNX Runtime intra-op threads per session; 0: one per physical core.
    pub intra_threads: usize,
    /// `libonnxruntime.so`; default `ORT_DYLIB_PATH`, else the registry folder.
    pub onnxruntime: Option<PathBuf>,
    /// Follow the modules' gates: skip OCR on images where the objects module ran and found
    /// no text.
    pub ocr_needs_text: bool,
    /// Modules never run by this daemon, even with their models installed.
    pub disabled: Vec<String>,
    /// The keys model modules own (`embedding`, `caption`, `ocr_recognizer`, …): read by
    /// their loaders.
    #[serde(flatten)]
    pub module_keys: toml::Table,
}

impl Default for ModelsSection {
    fn default() -> Self {
        ModelsSection {
            dir: None,
            cuda: false,
            onnx_cuda: false,
            onnx_sessions_per_model: 0,
            gpu_f16: true,
            intra_threads: 0,
            onnxruntime: None,
            ocr_needs_text: true,
            disabled: Vec::new(),
            module_keys: toml::Table::new(),
        }
    }
}

impl ModelsSection {
    /// The model folder: `dir`, else [`imgd_infer::models_dir`].
    pub fn dir(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(imgd_infer::models_dir)
    }

    /// How ONNX Runtime is loaded and its sessions built.
    pub fn ort(&self) -> imgd_infer::onnx::OrtConfig {
        imgd_infer::onnx::OrtConfig {
            dylib: self
                .onnxruntime
                .clone()
                .or_else(|| env_path("ORT_DYLIB_PATH")),
            intra_threads: self.intra_threads,
            cuda: self.cuda && self.onnx_cuda,
            fixed_shapes: self.cuda && self.onnx_cuda,
            sessions_per_model: self.onnx_sessions_per_model,
        }
    }

    /// Whether `module` is listed in `disabled`.
    pub fn is_disabled(&self, module: imgd_core::Module) -> bool {
        self.disabled.iter().any(|name| name == module.name())
    }
}

/// `[daemon]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DaemonSection {
    pub decode_threads: usize,
    pub claim_batch: usize,
    pub lease_seconds: u64,
    pub max_attempts: u32,
    pub metrics_addr: String,
    /// The old name of `[decode] memory_mb`, still read when that is not set.
    pub cache_mb: Option<u64>,
    pub poll_seconds: f64,
    pub stop_timeout_seconds: u64,
    pub max_in_flight: usize,
}

impl Default for DaemonSection {
    fn default() -> Self {
        let defaults = PipelineConfig::default();
        DaemonSection {
            decode_threads: defaults.decode_threads,
            claim_batch: defaults.claim_batch,
            lease_seconds: defaults.lease.as_secs(),
            max_attempts: defaults.max_attempts,
            metrics_addr: imgd_pipeline::http::DEFAULT_ADDR.to_string(),
            cache_mb: None,
            poll_seconds: defaults.poll_interval.as_secs_f64(),
            stop_timeout_seconds: 30,
            max_in_flight: defaults.max_in_flight,
        }
    }
}

/// `[http]`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    /// The token changes (POST) always need, and every route but `/metrics` and `/healthz`
    /// needs when `metrics_addr` is not a loopback address; `IMGD_HTTP_TOKEN` overrides it.
    pub token: Option<String>,
}

impl std::fmt::Debug for HttpSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSection")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// `[store]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// The folders the database names (keys) and where they are on this host (values):
    /// `"/mnt/photos" = "/Volumes/photos"`.
    pub path_map: BTreeMap<String, String>,
}

impl FileConfig {
    /// `[store] path_map` as a map.
    pub fn path_map(&self) -> Result<imgd_core::path_map::PathMap> {
        Ok(imgd_core::path_map::PathMap::new(
            self.store
                .path_map
                .iter()
                .map(|(stored, local)| (stored.as_str(), local.as_str())),
        )?)
    }
}

/// The shortest token accepted: a guessable one guards nothing.
pub const MIN_TOKEN_CHARS: usize = 16;

/// `[decode]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeSection {
    /// MiB of decoded pixels in flight; default 1024 (or the old `[daemon] cache_mb`).
    pub memory_mb: Option<u64>,
}

impl FileConfig {
    /// The budget of decoded pixels in flight, in MiB.
    pub fn pixel_budget_mb(&self) -> u64 {
        self.decode
            .memory_mb
            .or(self.daemon.cache_mb)
            .unwrap_or(PipelineConfig::default().pixel_budget >> 20)
    }
}

/// `[writer]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WriterSection {
    pub flush_images: usize,
    pub flush_ms: u64,
}

impl Default for WriterSection {
    fn default() -> Self {
        let defaults = WriterConfig::default();
        WriterSection {
            flush_images: defaults.flush_images,
            flush_ms: defaults.flush_interval.as_millis() as u64,
        }
    }
}

/// `[batch.*]`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchSection {
    pub max_items: usize,
    pub max_wait_ms: u64,
}

impl FileConfig {
    /// Reads a config file, or the defaults when there is none.
    /// `IMGD_HTTP_TOKEN` overrides `[http] token`.
    pub fn load(path: Option<&Path>) -> Result<FileConfig> {
        let env_token = std::env::var("IMGD_HTTP_TOKEN")
            .ok()
            .filter(|token| !token.is_empty());
        let Some(path) = path else {
            let mut config = FileConfig::default();
            config.http.token = env_token;
            config.check().context("invalid IMGD_HTTP_TOKEN")?;
            return Ok(config);
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        let mut config: FileConfig = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if env_token.is_some() {
            config.http.token = env_token;
        }
        config
            .check()
            .with_context(|| format!("invalid config file {}", path.display()))?;
        Ok(config)
    }

    /// Rejects values that cannot work: every number within its range, addresses that parse,
    /// model paths that exist. `imgd validate` and `imgd run` both call this, `run` after the
    /// environment and flags are applied, so neither accepts what the other refuses.
    pub fn check(&self) -> Result<()> {
        let d = &self.daemon;
        in_range("daemon.decode_threads", d.decode_threads, 0, 256)?;
        in_range("daemon.claim_batch", d.claim_batch, 1, 1024)?;
        in_range("daemon.lease_seconds", d.lease_seconds, 5, 86_400)?;
        in_range("daemon.max_attempts", d.max_attempts, 1, 100)?;
        in_range("decode.memory_mb", self.pixel_budget_mb(), 16, 1 << 20)?;
        in_range(
            "daemon.stop_timeout_seconds",
            d.stop_timeout_seconds,
            0,
            3600,
        )?;
        in_range("daemon.max_in_flight", d.max_in_flight, 1, 100_000)?;
        anyhow::ensure!(
            d.poll_seconds.is_finite() && (0.05..=3600.0).contains(&d.poll_seconds),
            "daemon.poll_seconds must be between 0.05 and 3600, not {}",
            d.poll_seconds
        );
        if !matches!(d.metrics_addr.as_str(), "" | "off") {
            let addr = d
                .metrics_addr
                .parse::<std::net::SocketAddr>()
                .with_context(|| {
                    format!(
                        "daemon.metrics_addr {:?} is not an address such as 127.0.0.1:9187 \
                         (or \"off\")",
                        d.metrics_addr
                    )
                })?;
            anyhow::ensure!(
                addr.ip().is_loopback() || self.http.token.is_some(),
                "daemon.metrics_addr {addr} is reachable from other machines: set [http] token \
                 (or IMGD_HTTP_TOKEN) so that only those who know it can see the library"
            );
        }
        self.path_map()?;
        if let Some(token) = &self.http.token {
            anyhow::ensure!(
                token.chars().count() >= MIN_TOKEN_CHARS
                    && token.chars().all(|c| c.is_ascii_graphic()),
                "http.token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without \
                 spaces (for example from `openssl rand -hex 16`)"
            );
        }
        in_range("writer.flush_images", self.writer.flush_images, 1, 10_000)?;
        in_range("writer.flush_ms", self.writer.flush_ms, 1, 60_000)?;
        in_range("models.intra_threads", self.models.intra_threads, 0, 256)?;
        self.check_model_paths()?;
        self.check_module_settings()?;
        for name in &self.models.disabled {
            super::modules::REGISTRY
                .get(name)
                .with_context(|| format!("models.disabled: {name:?} names no module"))?;
        }
        for (name, batch) in &self.batch {
            in_range(&format!("batch.{name}.max_items"), batch.max_items, 1, 4096)?;
            in_range(
                &format!("batch.{name}.max_wait_ms"),
                batch.max_wait_ms,
                0,
                60_000,
            )?;
            if name != "default" {
                super::modules::REGISTRY
                    .get(name)
                    .with_context(|| format!("[batch.{name}] names no module"))?;
            }
        }
        Ok(())
    }

    /// Paths the user wrote in the shared `[models]` keys must exist: the folder and the ONNX
    /// Runtime library. (Each module checks its own model paths.)
    fn check_model_paths(&self) -> Result<()> {
        let m = &self.models;
        let named = [
            ("models.dir", m.dir.as_deref()),
            ("models.onnxruntime", m.onnxruntime.as_deref()),
        ];
        for (key, path) in named
            .into_iter()
            .filter_map(|(key, path)| path.map(|p| (key, p)))
        {
            anyhow::ensure!(path.exists(), "{key}: {} does not exist", path.display());
        }
        Ok(())
    }

    /// Every `[models]` key and section the binary does not read belongs to one module, and
    /// each module accepts its own settings.
    fn check_module_settings(&self) -> Result<()> {
        let loaders = imgd_registry::loaders();
        for key in self.models.module_keys.keys() {
            anyhow::ensure!(
                loaders
                    .iter()
                    .any(|l| l.model_keys().contains(&key.as_str())),
                "[models] has no key {key:?}; the modules' keys are {}",
                loaders
                    .iter()
                    .flat_map(|l| l.model_keys().iter().copied())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        for name in self.module_sections.keys() {
            anyhow::ensure!(
                loaders
                    .iter()
                    .any(|l| l.sections().contains(&name.as_str())),
                "unknown section [{name}]"
            );
        }
        let context = self.load_context();
        for loader in loaders {
            loader.check(&context).map_err(anyhow::Error::msg)?;
        }
        Ok(())
    }

    /// What the model modules' loaders read: their keys and sections and the shared settings.
    pub fn load_context(&self) -> LoadContext<'_> {
        LoadContext {
            model_keys: &self.models.module_keys,
            sections: &self.module_sections,
            models_dir: self.models.dir(),
            ort: self.models.ort(),
            cuda: self.models.cuda,
            gpu_f16: self.models.gpu_f16,
            env: &env_var,
        }
    }

    /// The pipeline settings this file describes.
    pub fn pipeline(&self) -> PipelineConfig {
        PipelineConfig {
            decode_threads: self.daemon.decode_threads,
            claim_batch: self.daemon.claim_batch,
            lease: Duration::from_secs(self.daemon.lease_seconds),
            max_attempts: self.daemon.max_attempts,
            pixel_budget: self.pixel_budget_mb() << 20,
            poll_interval: Duration::from_secs_f64(self.daemon.poll_seconds.clamp(0.05, 3600.0)),
            writer: WriterConfig {
                flush_images: self.writer.flush_images,
                flush_interval: Duration::from_millis(self.writer.flush_ms),
            },
            follow_gates: self.models.ocr_needs_text,
            max_in_flight: self.daemon.max_in_flight.max(1),
            stop_timeout: Duration::from_secs(self.daemon.stop_timeout_seconds),
            ..PipelineConfig::default()
        }
    }

    /// The batch limits of a module: `[batch.<module>]`, else `[batch.default]`, else the
    /// built-in default.
    pub fn batch_for(&self, module: &str) -> BatchConfig {
        self.batch
            .get(module)
            .or_else(|| self.batch.get("default"))
            .map_or(BatchConfig::DEFAULT, |b| {
                BatchConfig::new(b.max_items, Duration::from_millis(b.max_wait_ms))
            })
    }
}

/// An environment variable, when set and not blank. The binary reads the environment here and
/// in clap's `env` attributes only; the libraries take values.
pub fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// [`env_var`] as a path.
pub fn env_path(name: &str) -> Option<PathBuf> {
    env_var(name).map(PathBuf::from)
}

/// Hands the pipeline the host name `IMGD_HOST` gives (lease owners and `imgd status` name
/// hosts by it; default: the kernel's node name); `main` calls it first.
pub fn configure_host() {
    if let Some(host) = env_var("IMGD_HOST") {
        imgd_pipeline::owner::set_host_name(&host);
    }
}

/// Hands the model folders the environment names (`IMGD_MODELS`, `IMGD_REGISTRY_MODELS`) to
/// the libraries; `main` calls it first.
pub fn configure_model_dirs() {
    imgd_infer::models_dir::configure(imgd_infer::models_dir::ModelDirs {
        models: env_path("IMGD_MODELS"),
        registry: env_path("IMGD_REGISTRY_MODELS"),
    });
}

/// Fails unless `min <= value <= max`, naming the key.
fn in_range<T>(key: &str, value: T, min: T, max: T) -> Result<()>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    anyhow::ensure!(
        value >= min && value <= max,
        "{key} must be between {min} and {max}, not {value}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_unknown_keys_are_rejected() {
        let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dist/imgd.toml");
        if Path::new(example).exists() {
            FileConfig::load(Some(Path::new(example))).unwrap();
        }
        let bad: Result<FileConfig, _> = toml::from_str("[daemon]\nclaim_bach = 3\n");
        assert!(bad.unwrap_err().to_string().contains("claim_bach"));
        let config: FileConfig =
            toml::from_str("[batch.default]\nmax_items = 4\nmax_wait_ms = 7\n").unwrap();
        assert_eq!(config.batch_for("embedding").max_items, 4);
        assert_eq!(
            config.pipeline().claim_batch,
            PipelineConfig::default().claim_batch
        );
        // A module's own keys reach its loader; an unknown value, key or section is refused.
        let trocr: FileConfig =
            toml::from_str("[models]\nocr_recognizer = \"trocr\"\ntrocr = \"/m/t\"\n").unwrap();
        let context = trocr.load_context();
        let ocr = imgd_trocr::loader::OcrSettings::read(&context).unwrap();
        assert_eq!(ocr.recognizer, imgd_trocr::loader::OcrRecognizer::Trocr);
        assert_eq!(ocr.trocr, Path::new("/m/t"));
        for (text, named) in [
            ("[models]\nocr_recognizer = \"tesseract\"\n", "tesseract"),
            ("[models]\nembeding = \"clip\"\n", "embeding"),
            ("[objets]\nsize = 3\n", "[objets]"),
            ("[caption]\nquestion = []\n", "question"),
        ] {
            let config: FileConfig = toml::from_str(text).unwrap();
            let err = format!("{:#}", config.check().unwrap_err());
            assert!(err.contains(named), "{text}: {err}");
        }
        // ONNX Runtime joins the GPU only when asked to.
        let gpu: FileConfig = toml::from_str("[models]\ncuda = true\n").unwrap();
        assert!(!gpu.models.ort().cuda && !gpu.models.ort().fixed_shapes);
        let gpu: FileConfig = toml::from_str("[models]\ncuda = true\nonnx_cuda = true\n").unwrap();
        assert!(gpu.models.ort().cuda && gpu.models.ort().fixed_shapes);
        assert_eq!(gpu.models.ort().sessions_per_model, 0);
        let more: FileConfig = toml::from_str("[models]\nonnx_sessions_per_model = 256\n").unwrap();
        assert_eq!(more.models.ort().sessions_per_model, 256);
        let exposed: FileConfig = toml::from_str(
            "[daemon]\nmetrics_addr = \"0.0.0.0:9187\"\n[http]\ntoken = \"0123456789abcdef\"\n",
        )
        .unwrap();
        exposed.check().unwrap();
        assert!(!format!("{exposed:?}").contains("0123456789abcdef"));
        let objects: FileConfig = toml::from_str("[objects]\nbox_threshold = 1.5\n").unwrap();
        let err = objects.check().unwrap_err().to_string();
        assert!(err.contains("objects.box_threshold"), "{err}");
    }

    /// Regression: `imgd validate` accepted settings that `imgd run` could not use (a panic,
    /// 16 096 threads, every lease born expired, an address only `run` refused).
    #[test]
    fn settings_run_cannot_use_are_refused_naming_the_key() {
        for (text, key) in [
            ("[daemon]\npoll_seconds = inf\n", "daemon.poll_seconds"),
            ("[daemon]\npoll_seconds = nan\n", "daemon.poll_seconds"),
            (
                "[daemon]\ndecode_threads = 100000\n",
                "daemon.decode_threads",
            ),
            (
                "[daemon]\nlease_seconds = 9300000000000000\n",
                "daemon.lease_seconds",
            ),
            (
                "[daemon]\nmetrics_addr = \"localhost:nope\"\n",
                "daemon.metrics_addr",
            ),
            ("[daemon]\nmax_in_flight = 0\n", "daemon.max_in_flight"),
            (
                "[daemon]\nmetrics_addr = \"0.0.0.0:9187\"\n",
                "[http] token",
            ),
            ("[http]\ntoken = \"short\"\n", "http.token"),
            (
                "[http]\ntoken = \"has spaces in its middle\"\n",
                "http.token",
            ),
            ("[writer]\nflush_ms = 0\n", "writer.flush_ms"),
            (
                "[models]\ndir = \"/nonexistent/imgd-models\"\n",
                "models.dir",
            ),
            (
                "[models]\nembedding = \"/nonexistent/clip\"\n",
                "models.embedding",
            ),
            (
                "[batch.default]\nmax_items = 0\nmax_wait_ms = 1\n",
                "batch.default.max_items",
            ),
        ] {
            let config: FileConfig = toml::from_str(text).unwrap();
            let err = format!("{:#}", config.check().unwrap_err());
            assert!(err.contains(key), "{text}: {err}");
        }
        let fine: FileConfig =
            toml::from_str("[daemon]\nmetrics_addr = \"off\"\nlease_seconds = 300\n").unwrap();
        fine.check().unwrap();
    }
}
