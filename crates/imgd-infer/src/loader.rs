//! The seam through which the binary configures, finds and loads each model module.
//!
//! A model module's crate implements [`ModuleLoader`]: the `[models]` keys and the file
//! sections it owns (with their defaults and their checks), whether its model is installed
//! and why its jobs wait when it is not, and how its runner loads. The binary hands every
//! loader one [`LoadContext`] (the file's tables and the settings all model modules share)
//! and knows nothing of any module's settings.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use imgd_core::Module;
use serde::de::DeserializeOwned;

use crate::batcher::BatchConfig;
use crate::onnx::OrtConfig;
use crate::runner::ModelRunner;

/// Whether a module can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Computed by the daemon itself (metadata, technical, phash).
    BuiltIn,
    /// Its model is installed: what will load.
    Installed(String),
    /// Its jobs wait: why, and what to do about it.
    Waiting(String),
}

/// How the environment is read: the binary reads it, libraries ask through this.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a loader reads: the configuration file's tables and the settings every model module
/// shares.
pub struct LoadContext<'a> {
    /// The `[models]` keys the shared settings do not take (each owned by one module).
    pub model_keys: &'a toml::Table,
    /// The file's sections the binary does not take (each owned by one module).
    pub sections: &'a toml::Table,
    /// The model folder (`[models] dir`).
    pub models_dir: PathBuf,
    /// How ONNX Runtime is loaded and its sessions built.
    pub ort: OrtConfig,
    /// `[models] cuda`: run on the GPU when the build and the machine have one.
    pub cuda: bool,
    /// `[models] gpu_f16`: half precision on the GPU where a module offers it.
    pub gpu_f16: bool,
    /// The environment.
    pub env: EnvLookup<'a>,
}

impl LoadContext<'_> {
    /// `[models] key`, or `default` when the file does not set it; the error names the key.
    pub fn model_key<T: DeserializeOwned>(&self, key: &str, default: T) -> Result<T, String> {
        match self.model_keys.get(key) {
            None => Ok(default),
            Some(value) => value
                .clone()
                .try_into()
                .map_err(|e| format!("models.{key}: {e}")),
        }
    }

    /// A model path set by `[models] key` (default `default`): as given when absolute, else
    /// under the model folder.
    pub fn model_path(&self, key: &str, default: &str) -> Result<PathBuf, String> {
        let path: PathBuf = self.model_key(key, PathBuf::from(default))?;
        Ok(self.resolve(&path))
    }

    /// Fails when `[models] key` names an absolute path that does not exist (a model named
    /// relative to the folder that is not there yet is no error: its module waits for
    /// `imgd models fetch`).
    pub fn check_model_path(&self, key: &str) -> Result<(), String> {
        let Some(path) = self.model_key::<Option<PathBuf>>(key, None)? else {
            return Ok(());
        };
        if path.is_absolute() && !path.exists() {
            return Err(format!("models.{key}: {} does not exist", path.display()));
        }
        Ok(())
    }

    /// The section `[name]` (its defaults when the file has none); the error names it.
    pub fn section<T: DeserializeOwned + Default>(&self, name: &str) -> Result<T, String> {
        match self.sections.get(name) {
            None => Ok(T::default()),
            Some(value) => value
                .clone()
                .try_into()
                .map_err(|e| format!("[{name}]: {e}")),
        }
    }

    /// Whether the file has a section `[name]`.
    pub fn has_section(&self, name: &str) -> bool {
        self.sections.contains_key(name)
    }

    /// A path as given when absolute, else under the model folder.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.models_dir.join(path)
        }
    }
}

/// A counter a loaded module keeps, reported in `/metrics` and in `imgd run --json`'s summary.
#[derive(Debug, Clone)]
pub struct ModuleCounter {
    /// Its key in the run's summary.
    pub summary_key: &'static str,
    /// Its metric family in `/metrics` (the sample is `{metric}_total`).
    pub metric: &'static str,
    /// The metric's help text.
    pub help: &'static str,
    /// Its value.
    pub value: Arc<AtomicU64>,
}

impl ModuleCounter {
    /// Its Prometheus text.
    pub fn prometheus_text(&self) -> String {
        let metric = self.metric;
        format!(
            "# HELP {metric} {}\n# TYPE {metric} counter\n{metric}_total {}\n",
            self.help,
            self.value.load(std::sync::atomic::Ordering::Relaxed)
        )
    }
}

/// Prometheus text a loaded module adds to `/metrics`.
pub type MetricsText = Box<dyn Fn() -> String + Send + Sync>;

/// A model module's loaded runner and what the daemon needs to know about it.
pub struct LoadedModule {
    /// The runner the inference thread drives.
    pub runner: Box<dyn ModelRunner>,
    /// The model id and version its rows carry when its results are versioned (the version
    /// covers the settings that change results): the daemon re-queues images whose result
    /// came from another one.
    pub version: Option<(String, String)>,
    /// Its counters.
    pub counters: Vec<ModuleCounter>,
    /// Further `/metrics` text of its own.
    pub metrics: Option<MetricsText>,
}

impl LoadedModule {
    /// A runner with no version, counters or metrics.
    pub fn new(runner: Box<dyn ModelRunner>) -> Self {
        LoadedModule {
            runner,
            version: None,
            counters: Vec::new(),
            metrics: None,
        }
    }

    /// With the model id and version its rows carry.
    pub fn versioned(mut self, id: String, version: String) -> Self {
        self.version = Some((id, version));
        self
    }
}

/// How a model module is configured, found and loaded.
pub trait ModuleLoader: Sync {
    /// The module it loads.
    fn module(&self) -> Module;
    /// The `[models]` keys it reads.
    fn model_keys(&self) -> &'static [&'static str];
    /// The file sections it owns (`[caption]`, `[objects]`, `[cloud]`).
    fn sections(&self) -> &'static [&'static str] {
        &[]
    }
    /// Rejects settings that cannot work, naming the key (`imgd validate` and `imgd run`).
    fn check(&self, context: &LoadContext<'_>) -> Result<(), String>;
    /// Whether its model is installed, from the files on disk (nothing is loaded).
    fn availability(&self, context: &LoadContext<'_>) -> Availability;
    /// Loads its runner; called only when [`Self::availability`] says installed.
    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String>;
}

/// Whether every one of `files` in `dir` is a file.
pub fn all_files(dir: &Path, files: &[&str]) -> bool {
    files.iter().all(|file| dir.join(file).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context<'a>(models: &'a toml::Table, sections: &'a toml::Table) -> LoadContext<'a> {
        LoadContext {
            model_keys: models,
            sections,
            models_dir: PathBuf::from("/models"),
            ort: OrtConfig::default(),
            cuda: false,
            gpu_f16: true,
            env: &|_| None,
        }
    }

    #[derive(Debug, Default, serde::Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Section {
        size: u32,
    }

    #[test]
    fn keys_and_sections_parse_with_defaults_and_errors_name_the_key() {
        let models: toml::Table =
            toml::from_str("clip = \"c\"\nabsolute = \"/nonexistent/imgd-x\"\nn = \"x\"").unwrap();
        let sections: toml::Table = toml::from_str("[good]\nsize = 3\n[bad]\nsise = 3\n").unwrap();
        let ctx = context(&models, &sections);
        assert_eq!(ctx.model_path("clip", "d").unwrap(), Path::new("/models/c"));
        assert_eq!(
            ctx.model_path("other", "d").unwrap(),
            Path::new("/models/d")
        );
        assert!(
            ctx.model_key::<u32>("n", 1)
                .unwrap_err()
                .contains("models.n")
        );
        assert!(ctx.check_model_path("clip").is_ok());
        let err = ctx.check_model_path("absolute").unwrap_err();
        assert!(err.contains("models.absolute"), "{err}");
        assert_eq!(ctx.section::<Section>("good").unwrap(), Section { size: 3 });
        assert_eq!(ctx.section::<Section>("none").unwrap(), Section::default());
        let err = ctx.section::<Section>("bad").unwrap_err();
        assert!(err.contains("[bad]") && err.contains("sise"), "{err}");
    }
}
