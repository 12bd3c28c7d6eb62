//! The `cloud` module's settings, availability and loading ([`CloudLoader`]): `[cloud]`
//! ([`CloudConfig`]) with the environment's overrides (`IMGD_CLOUD_*`); without the section and
//! without `IMGD_CLOUD_BASE_URL` the module waits.

use imgd_core::Module;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::loader::{Availability, LoadContext, LoadedModule, ModuleLoader};

use crate::{CLOUD, CloudConfig};

/// Whether the module is configured: a `[cloud]` section or `IMGD_CLOUD_BASE_URL`.
fn configured(context: &LoadContext<'_>) -> bool {
    context.has_section("cloud")
        || (context.env)("IMGD_CLOUD_BASE_URL").is_some_and(|v| !v.trim().is_empty())
}

/// The `cloud` module's loader.
pub struct CloudLoader;

impl ModuleLoader for CloudLoader {
    fn module(&self) -> Module {
        CLOUD
    }

    fn model_keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn sections(&self) -> &'static [&'static str] {
        &["cloud"]
    }

    fn check(&self, context: &LoadContext<'_>) -> Result<(), String> {
        context.section::<CloudConfig>("cloud").map(drop)
    }

    fn availability(&self, context: &LoadContext<'_>) -> Availability {
        if !configured(context) {
            return Availability::Waiting(
                "waiting: no [cloud] section in the configuration".to_string(),
            );
        }
        let from = match context.section::<CloudConfig>("cloud") {
            Ok(config) if context.has_section("cloud") => config.base_url,
            Ok(_) => "from the environment".to_string(),
            Err(err) => return Availability::Waiting(format!("waiting: {err}")),
        };
        Availability::Installed(format!("cloud API {from}"))
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        let mut config: CloudConfig = context.section("cloud")?;
        config
            .apply_env_from(context.env)
            .map_err(|e| e.to_string())?;
        let model = config.model.clone();
        let (runner, stats) = crate::runner_with_stats(config, batch).map_err(|e| e.to_string())?;
        let mut loaded = LoadedModule::new(runner);
        loaded.metrics = Some(Box::new(move || stats.snapshot().prometheus_text(&model)));
        Ok(loaded)
    }
}

/// The `cloud` module's loader, for the registry.
pub static CLOUD_LOADER: CloudLoader = CloudLoader;
