//! The `caption` module's settings, availability and loading ([`CaptionLoader`]).
//!
//! `[models] caption` names the model (default `blip-base-caption`; `blip2-opt-2.7b` or
//! `blip2-flan-t5-xl` for BLIP-2), a folder under the model folder or an absolute path; a
//! folder whose `config.json` says `"model_type": "blip-2"` runs BLIP-2, any other BLIP.
//! `[[caption.questions]]` are the questions asked of every image: each a `name`, the `prefix`
//! BLIP's answer continues and the `question` BLIP-2 answers. On a GPU BLIP-2 runs in f16
//! (`[models] gpu_f16`, the default; Flan-T5 in bf16) or f32, its Q-Former in f32; on the CPU
//! in f32. Another model gives other model
//! ids, so switching re-queues the module's images as any model change does.

use std::path::{Path, PathBuf};

use candle_core::DType;

use imgd_core::Module;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::loader::{
    Availability, LoadContext, LoadedModule, ModuleCounter, ModuleLoader, all_files,
};
use serde::Deserialize;

use crate::blip::BlipCaptioner;
use crate::blip2::{Blip2Captioner, is_blip2};
use crate::{CAPTION, CaptionError, CaptionSettings, Captioner, Question, runner_from};

/// `[models] caption`'s default.
pub const DEFAULT_MODEL: &str = "blip-base-caption";

/// `[caption]`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptionSection {
    /// `[[caption.questions]]`: each a `name`, a `prefix` (BLIP) and a `question` (BLIP-2).
    pub questions: Vec<Question>,
}

impl Default for CaptionSection {
    fn default() -> Self {
        CaptionSection {
            questions: Question::defaults(),
        }
    }
}

/// The model folder the settings name, when it holds a model (`config.json`,
/// `tokenizer.json` and `model.safetensors` or BLIP-2's sharded weights with their index);
/// else the folder looked in, as the error.
fn installed_folder(context: &LoadContext<'_>) -> Result<Result<PathBuf, PathBuf>, String> {
    let dir = context.model_path("caption", DEFAULT_MODEL)?;
    let found = all_files(&dir, &["config.json", "tokenizer.json"])
        && (all_files(&dir, &["model.safetensors"])
            || (is_blip2(&dir) && all_files(&dir, &["model.safetensors.index.json"])));
    Ok(if found { Ok(dir) } else { Err(dir) })
}

/// What the model in `dir` is, for messages.
fn kind(dir: &Path) -> &'static str {
    if is_blip2(dir) { "BLIP-2" } else { "BLIP" }
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
                "{} from {}, {} questions",
                kind(&dir),
                dir.display(),
                section.questions.len()
            )),
            (Ok(Err(dir)), _) => {
                // A folder named after a manifest model says how to fetch it.
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
                let fetch = match name.as_deref() {
                    Some(id @ (DEFAULT_MODEL | "blip2-opt-2.7b" | "blip2-flan-t5-xl")) => {
                        format!(" (imgd models fetch {id})")
                    }
                    _ => String::new(),
                };
                Availability::Waiting(format!(
                    "waiting: no caption model in {}{fetch}",
                    dir.display()
                ))
            }
            (Err(err), _) | (_, Err(err)) => Availability::Waiting(format!("waiting: {err}")),
        }
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        let dir = installed_folder(context)?
            .map_err(|dir| format!("no caption model in {}", dir.display()))?;
        let section = context.section::<CaptionSection>("caption")?;
        let device = imgd_candle::shared_device(context.cuda);
        let settings = CaptionSettings::with_questions(&section.questions);
        let fail = |e: CaptionError| format!("{} in {}: {e}", kind(&dir), dir.display());
        let (info, (runner, encodes)) = if is_blip2(&dir) {
            let dtype = if device.is_cuda() && context.gpu_f16 {
                DType::F16
            } else {
                DType::F32
            };
            let captioner = Blip2Captioner::load(&dir, &device, dtype).map_err(fail)?;
            let info = captioner.info().clone();
            (
                info,
                runner_from(captioner, batch, &settings).map_err(fail)?,
            )
        } else {
            let captioner = BlipCaptioner::load(&dir, &device).map_err(fail)?;
            let info = captioner.info().clone();
            (
                info,
                runner_from(captioner, batch, &settings).map_err(fail)?,
            )
        };
        // Rows carry the model's id and version: another model re-queues the module.
        let mut loaded = LoadedModule::new(runner).versioned(info.id, info.version);
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
