//! The `caption` module's settings, availability and loading ([`CaptionLoader`]).
//!
//! `[models] caption` names the BLIP model (default `blip-base-caption`), a folder under the
//! model folder or an absolute path; `[[caption.questions]]` the questions asked of every
//! image (each a `name` and the `prefix` its answer continues).

use std::path::PathBuf;

use imgd_core::Module;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::loader::{
    Availability, LoadContext, LoadedModule, ModuleCounter, ModuleLoader, all_files,
};
use serde::Deserialize;

use crate::{CAPTION, Question};

/// `[models] caption`'s default.
pub const DEFAULT_MODEL: &str = "blip-base-caption";

/// `[caption]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptionSection {
    /// `[[caption.questions]]`: each a `name` and the `prefix` its answer continues.
    pub questions: Vec<Question>,
}

impl Default for CaptionSection {
    fn default() -> Self {
        CaptionSection {
            questions: Question::defaults(),
        }
    }
}

/// The BLIP folder the settings name, when it holds a model (`config.json`,
/// `model.safetensors` and `tokenizer.json`); else the folder looked in, as the error.
fn installed_folder(context: &LoadContext<'_>) -> Result<Result<PathBuf, PathBuf>, String> {
    let dir = context.model_path("caption", DEFAULT_MODEL)?;
    let found = all_files(
        &dir,
        &["config.json", "model.safetensors", "tokenizer.json"],
    );
    Ok(if found { Ok(dir) } else { Err(dir) })
}

/// The `caption` module's loader.
pub struct CaptionLoader;

impl ModuleLoader for CaptionLoader {
    fn module(&self) -> Module {
        CAPTION
    }

    fn model_keys(&self) -> &'static [&'static str] {
        &["caption"]
    }

    fn sections(&self) -> &'static [&'static str] {
        &["caption"]
    }

    fn check(&self, context: &LoadContext<'_>) -> Result<(), String> {
        context.check_model_path("caption")?;
        context.section::<CaptionSection>("caption").map(drop)
    }

    fn availability(&self, context: &LoadContext<'_>) -> Availability {
        let section = context.section::<CaptionSection>("caption");
        match (installed_folder(context), section) {
            (Ok(Ok(dir)), Ok(section)) => Availability::Installed(format!(
                "BLIP from {}, {} questions",
                dir.display(),
                section.questions.len()
            )),
            (Ok(Err(dir)), _) => Availability::Waiting(format!(
                "waiting: no BLIP model in {} (imgd models fetch blip-base-caption)",
                dir.display()
            )),
            (Err(err), _) | (_, Err(err)) => Availability::Waiting(format!("waiting: {err}")),
        }
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        let dir = installed_folder(context)?
            .map_err(|dir| format!("no BLIP model in {}", dir.display()))?;
        let section = context.section::<CaptionSection>("caption")?;
        let device = imgd_candle::shared_device(context.cuda);
        let (runner, encodes) =
            crate::runner(&dir, &device, batch, &section.questions).map_err(|e| e.to_string())?;
        let mut loaded = LoadedModule::new(runner);
        loaded.counters.push(ModuleCounter {
            summary_key: "vision_encodes",
            metric: "imgd_caption_vision_encodes",
            help: "Images the caption module's vision encoder ran on (one per image, whatever \
                   the number of questions).",
            value: encodes,
        });
        Ok(loaded)
    }
}

/// The `caption` module's loader, for the registry.
pub static CAPTION_LOADER: CaptionLoader = CaptionLoader;
