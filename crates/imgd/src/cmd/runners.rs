//! Which model modules this installation can run, and loading their runners.
//!
//! A module runs when its weights are installed (see `imgd models list`) and it is not listed
//! in `[models] disabled`; otherwise its jobs stay queued and `imgd status` says why. Each
//! module's loader (the registry's) knows its settings, its files and how it loads; this file
//! only asks them. Loading happens once, at daemon start, on the main thread; the runners
//! then move into the inference thread, the only one that calls them.

use imgd_core::Module;
pub use imgd_infer::loader::Availability;
use imgd_infer::loader::{ModuleCounter, ModuleLoader};
use imgd_pipeline::runner::ModelRunner;

use super::config::FileConfig;

/// What [`load`] produced.
#[derive(Default)]
pub struct Loaded {
    /// One runner per module that loaded.
    pub runners: Vec<Box<dyn ModelRunner>>,
    /// Modules whose model is installed but failed to load, with the error.
    pub problems: Vec<(Module, String)>,
    /// The model id and version each versioned module now writes: the daemon re-queues
    /// images whose result came from another model or other settings.
    pub models: Vec<(Module, String, String)>,
    /// The loaded modules' counters.
    pub counters: Vec<ModuleCounter>,
    /// The loaded modules' own `/metrics` text.
    pub metrics: Vec<imgd_infer::loader::MetricsText>,
}

/// The loader of `module`, when it is a model module of this build.
fn loader_of(module: Module) -> Option<&'static dyn ModuleLoader> {
    imgd_registry::loaders()
        .into_iter()
        .find(|loader| loader.module() == module)
}

/// Whether `module` can run with `config`, from the files on disk (nothing is loaded).
pub fn availability(module: Module, config: &FileConfig) -> Availability {
    if !module.needs_model() {
        return Availability::BuiltIn;
    }
    if config.models.is_disabled(module) {
        return Availability::Waiting("waiting: disabled in [models] disabled".to_string());
    }
    match loader_of(module) {
        Some(loader) => loader.availability(&config.load_context()),
        None => Availability::Waiting(format!(
            "waiting: this build cannot load the {module} module"
        )),
    }
}

/// Why `module`'s queued jobs are not processed with `config`, if they are not.
pub fn waiting_reason(module: Module, config: &FileConfig) -> Option<String> {
    match availability(module, config) {
        Availability::Waiting(why) => Some(why),
        Availability::BuiltIn | Availability::Installed(_) => None,
    }
}

/// Loads the runner of every installed, enabled module. A model that is installed but fails
/// to load is reported in [`Loaded::problems`] and its module waits; the others still run.
/// `batch_size` overrides every module's batch size (`imgd run --batch-size`).
pub fn load(config: &FileConfig, batch_size: Option<usize>) -> Loaded {
    let context = config.load_context();
    let mut loaded = Loaded::default();
    for loader in imgd_registry::loaders() {
        let module = loader.module();
        if !matches!(availability(module, config), Availability::Installed(_)) {
            continue;
        }
        match loader.load(&context, batch(config, module, batch_size)) {
            Ok(module_loaded) => {
                tracing::info!(
                    "module {module}: {} loaded",
                    module_loaded.runner.model_name()
                );
                loaded.runners.push(module_loaded.runner);
                if let Some((id, version)) = module_loaded.version {
                    loaded.models.push((module, id, version));
                }
                loaded.counters.extend(module_loaded.counters);
                loaded.metrics.extend(module_loaded.metrics);
            }
            Err(err) => {
                tracing::error!("module {module}: cannot load its model: {err}");
                loaded.problems.push((module, err));
            }
        }
    }
    #[cfg(feature = "fake-model")]
    fake_embedding(config, batch_size, &mut loaded);
    loaded
}

/// `module`'s batch settings (`imgd run --batch-size` overrides the size).
fn batch(
    config: &FileConfig,
    module: Module,
    batch_size: Option<usize>,
) -> imgd_infer::batcher::BatchConfig {
    let mut batch = config.batch_for(module.name());
    if let Some(n) = batch_size {
        batch.max_items = n.max(1);
    }
    batch
}

/// `IMGD_FAKE_MODEL=1`: the fake model serves the embedding module (test builds only).
#[cfg(feature = "fake-model")]
fn fake_embedding(config: &FileConfig, batch_size: Option<usize>, loaded: &mut Loaded) {
    if std::env::var_os("IMGD_FAKE_MODEL").is_none_or(|v| v != "1") {
        return;
    }
    let ms = |name: &str, default: f64| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(default)
    };
    let module = imgd_clip::EMBEDDING;
    loaded.runners.retain(|runner| runner.module() != module);
    loaded.runners.push(imgd_pipeline::runner::fake_runner(
        module,
        batch(config, module, batch_size),
        std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_FIXED_MS", 2.0) / 1000.0),
        std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_ITEM_MS", 0.2) / 1000.0),
    ));
}
