//! The `objects` module's settings, availability and loading ([`ObjectsLoader`]).
//!
//! `[models] objects` names the GroundingDINO ONNX export (default `grounding-dino-tiny`), a
//! folder under the model folder or an absolute path; `[objects]` ([`ObjectsConfig`]) what to
//! look for and how sure to be. The rows' version covers those settings, so changing them
//! re-queues the module.

use std::path::PathBuf;

use imgd_core::Module;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::loader::{Availability, LoadContext, LoadedModule, ModuleLoader};

use crate::{OBJECTS, ObjectsConfig, model_files};

/// `[models] objects`'s default.
pub const DEFAULT_MODEL: &str = "grounding-dino-tiny";

/// Rejects `[objects]` values that cannot work, naming the key.
pub fn check_config(config: &ObjectsConfig) -> Result<(), String> {
    for (name, value) in [
        ("box_threshold", config.box_threshold),
        ("text_threshold", config.text_threshold),
        ("nms_iou", config.nms_iou),
    ] {
        if !(0.0..=1.0).contains(&value) {
            return Err(format!(
                "objects.{name} must be between 0 and 1, not {value}"
            ));
        }
    }
    if !(32..=4096).contains(&config.size) {
        return Err(format!(
            "objects.size must be between 32 and 4096, not {}",
            config.size
        ));
    }
    if !(1..=10_000).contains(&config.max_detections) {
        return Err(format!(
            "objects.max_detections must be between 1 and 10000, not {}",
            config.max_detections
        ));
    }
    Ok(())
}

/// The GroundingDINO folder the settings name, when it holds a model (`model.onnx` and
/// `tokenizer.json`); else the folder looked in, as the error.
fn installed_folder(context: &LoadContext<'_>) -> Result<Result<PathBuf, PathBuf>, String> {
    let dir = context.model_path("objects", DEFAULT_MODEL)?;
    let found = model_files(&dir).iter().all(|file| file.is_file());
    Ok(if found { Ok(dir) } else { Err(dir) })
}

/// The `objects` module's loader.
pub struct ObjectsLoader;

impl ModuleLoader for ObjectsLoader {
    fn module(&self) -> Module {
        OBJECTS
    }

    fn model_keys(&self) -> &'static [&'static str] {
        &["objects"]
    }

    fn sections(&self) -> &'static [&'static str] {
        &["objects"]
    }

    fn check(&self, context: &LoadContext<'_>) -> Result<(), String> {
        context.check_model_path("objects")?;
        check_config(&context.section("objects")?)
    }

    fn availability(&self, context: &LoadContext<'_>) -> Availability {
        let section = context.section::<ObjectsConfig>("objects");
        match (installed_folder(context), section) {
            (Ok(Ok(dir)), Ok(config)) => Availability::Installed(format!(
                "GroundingDINO from {}, {} prompts",
                dir.display(),
                config.prompts.len()
            )),
            (Ok(Err(dir)), _) => Availability::Waiting(format!(
                "waiting: no GroundingDINO model.onnx + tokenizer.json in {} \
                 (imgd models fetch grounding-dino-tiny)",
                dir.display()
            )),
            (Err(err), _) | (_, Err(err)) => Availability::Waiting(format!("waiting: {err}")),
        }
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        let dir = installed_folder(context)?
            .map_err(|dir| format!("no GroundingDINO model in {}", dir.display()))?;
        let config: ObjectsConfig = context.section("objects")?;
        let (runner, id, version) =
            crate::runner(&dir, &context.ort, config, batch).map_err(|e| e.to_string())?;
        Ok(LoadedModule::new(runner).versioned(id, version))
    }
}

/// The `objects` module's loader, for the registry.
pub static OBJECTS_LOADER: ObjectsLoader = ObjectsLoader;
