//! The `embedding` and `aesthetic` modules' settings, availability and loading
//! ([`ModuleLoader`]s).
//!
//! `[models] embedding` names the CLIP or SigLIP model of the `embedding` module (default
//! `clip-vit-b32`; SigLIP 2 is told apart by its `config.json`); `[models] aesthetic_clip` and
//! `aesthetic_mlp` the CLIP ViT-L/14 and the LAION MLP of the `aesthetic` module. Each is a
//! folder (or file) under the model folder, or an absolute path. `[models] embedding_engine` and
//! `aesthetic_engine` say what runs each CLIP image tower: `auto` (the default: ONNX Runtime when
//! the folder holds an ONNX export of it, [`crate::onnx`], and `[models] cuda` is off; candle
//! otherwise), `candle` or `onnx`.

use std::path::{Path, PathBuf};

use imgd_core::Module;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::loader::{Availability, LoadContext, LoadedModule, ModuleLoader, all_files};

use crate::aesthetic::aesthetic_info;
use crate::clip::ClipImageEncoder;
use crate::onnx::{EXPORT_PATHS, OnnxClipImageEncoder, onnx_export};
use crate::runner::ImageTower;
use crate::siglip::{SiglipImageEncoder, is_siglip};
use crate::{AESTHETIC, DType, EMBEDDING};

/// `[models] embedding`'s default.
pub const DEFAULT_EMBEDDING: &str = "clip-vit-b32";
/// `[models] aesthetic_clip`'s default.
pub const DEFAULT_AESTHETIC_CLIP: &str = "clip-vit-l14";
/// `[models] aesthetic_mlp`'s default.
pub const DEFAULT_AESTHETIC_MLP: &str = "laion-aesthetic/sac+logos+ava1-l14-linearMSE.pth";

/// Whether `dir` holds a CLIP or SigLIP model (`config.json` and `model.safetensors`).
fn holds_clip(dir: &Path) -> bool {
    all_files(dir, &["config.json", "model.safetensors"])
}

/// The CLIP folders the settings name, the embedding's first: where semantic search looks for
/// a text tower.
pub fn configured_clip_folders(context: &LoadContext<'_>) -> Result<Vec<PathBuf>, String> {
    Ok(vec![
        context.model_path("embedding", DEFAULT_EMBEDDING)?,
        context.model_path("aesthetic_clip", DEFAULT_AESTHETIC_CLIP)?,
    ])
}

/// `[models] key`, an engine key: `auto` (the default), `candle` or `onnx`.
fn engine(context: &LoadContext<'_>, key: &str) -> Result<String, String> {
    let engine: String = context.model_key(key, "auto".to_string())?;
    match engine.as_str() {
        "auto" | "candle" | "onnx" => Ok(engine),
        other => Err(format!(
            "{key} = \"{other}\": expected \"auto\", \"candle\" or \"onnx\""
        )),
    }
}

/// The ONNX export of CLIP's image tower in `dir` to run, as `[models] key` says ([`engine`]):
/// with `auto`, the export when there is one and `[models] cuda` is off (ONNX Runtime is about
/// twice candle's speed on the CPU; on a GPU candle runs it); `None` runs candle.
fn onnx_engine(
    context: &LoadContext<'_>,
    key: &str,
    dir: &Path,
) -> Result<Option<PathBuf>, String> {
    let engine = engine(context, key)?;
    let export = onnx_export(dir);
    match (engine.as_str(), export) {
        ("candle", _) => Ok(None),
        ("onnx", Some(export)) => Ok(Some(export)),
        ("onnx", None) => Err(format!(
            "{key} = \"onnx\", but {} holds no ONNX export of the image tower ({})",
            dir.display(),
            EXPORT_PATHS.join(" or ")
        )),
        (_, export) => Ok(export.filter(|_| !context.cuda)),
    }
}

/// CLIP's image tower in `dir`, on the engine `[models] key` chooses ([`onnx_engine`]); candle's
/// in `dtype` on the shared device.
fn clip_tower(
    context: &LoadContext<'_>,
    key: &str,
    dir: &Path,
    dtype: DType,
) -> Result<ImageTower, String> {
    Ok(match onnx_engine(context, key, dir)? {
        Some(export) => OnnxClipImageEncoder::load(dir, &export, &context.ort)
            .map_err(|e| e.to_string())?
            .into(),
        None => {
            let device = imgd_candle::shared_device(context.cuda);
            ClipImageEncoder::load_as(dir, &device, dtype)
                .map_err(|e| e.to_string())?
                .into()
        }
    })
}

/// The `embedding` module's loader.
pub struct EmbeddingLoader;

impl ModuleLoader for EmbeddingLoader {
    fn module(&self) -> Module {
        EMBEDDING
    }

    fn model_keys(&self) -> &'static [&'static str] {
        &["embedding", "embedding_engine"]
    }

    fn check(&self, context: &LoadContext<'_>) -> Result<(), String> {
        engine(context, "embedding_engine")?;
        context.check_model_path("embedding")
    }

    fn availability(&self, context: &LoadContext<'_>) -> Availability {
        match context.model_path("embedding", DEFAULT_EMBEDDING) {
            Ok(dir) if holds_clip(&dir) => {
                let onnx = !is_siglip(&dir)
                    && matches!(onnx_engine(context, "embedding_engine", &dir), Ok(Some(_)));
                let kind = match (is_siglip(&dir), onnx) {
                    (true, _) => "SigLIP",
                    (false, true) => "CLIP (image tower on ONNX Runtime)",
                    (false, false) => "CLIP",
                };
                Availability::Installed(format!("{kind} from {}", dir.display()))
            }
            Ok(dir) => Availability::Waiting(format!(
                "waiting: no CLIP or SigLIP model in {} (imgd models fetch clip-vit-b32, or \
                 siglip2-base-patch16-224)",
                dir.display()
            )),
            Err(err) => Availability::Waiting(format!("waiting: {err}")),
        }
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        let dir = context.model_path("embedding", DEFAULT_EMBEDDING)?;
        let device = imgd_candle::shared_device(context.cuda);
        let dtype = if device.is_cuda() && context.gpu_f16 {
            DType::F16
        } else {
            DType::F32
        };
        let tower: ImageTower = if is_siglip(&dir) {
            SiglipImageEncoder::load_as(&dir, &device, dtype)
                .map_err(|e| e.to_string())?
                .into()
        } else {
            clip_tower(context, "embedding_engine", &dir, dtype)?
        };
        let info = tower.info().clone();
        let runner = crate::runner::embedding_runner_from(tower, batch);
        Ok(LoadedModule::new(runner).versioned(info.id, info.version))
    }
}

/// The `aesthetic` module's loader.
pub struct AestheticLoader;

impl ModuleLoader for AestheticLoader {
    fn module(&self) -> Module {
        AESTHETIC
    }

    fn model_keys(&self) -> &'static [&'static str] {
        &["aesthetic_clip", "aesthetic_mlp", "aesthetic_engine"]
    }

    fn check(&self, context: &LoadContext<'_>) -> Result<(), String> {
        engine(context, "aesthetic_engine")?;
        context.check_model_path("aesthetic_clip")?;
        context.check_model_path("aesthetic_mlp")
    }

    fn availability(&self, context: &LoadContext<'_>) -> Availability {
        let paths = context
            .model_path("aesthetic_clip", DEFAULT_AESTHETIC_CLIP)
            .and_then(|clip| {
                Ok((
                    clip,
                    context.model_path("aesthetic_mlp", DEFAULT_AESTHETIC_MLP)?,
                ))
            });
        let (clip, mlp) = match paths {
            Ok(paths) => paths,
            Err(err) => return Availability::Waiting(format!("waiting: {err}")),
        };
        if !holds_clip(&clip) {
            Availability::Waiting(format!(
                "waiting: no CLIP ViT-L/14 in {} (imgd models fetch clip-vit-l14 laion-aesthetic)",
                clip.display()
            ))
        } else if !mlp.exists() {
            Availability::Waiting(format!(
                "waiting: no aesthetic MLP at {} (imgd models fetch laion-aesthetic)",
                mlp.display()
            ))
        } else {
            let engine = match onnx_engine(context, "aesthetic_engine", &clip) {
                Ok(Some(_)) => " (image tower on ONNX Runtime)",
                _ => "",
            };
            Availability::Installed(format!(
                "LAION aesthetic MLP {} over CLIP{engine} from {}",
                mlp.display(),
                clip.display()
            ))
        }
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        let clip = context.model_path("aesthetic_clip", DEFAULT_AESTHETIC_CLIP)?;
        let mlp = context.model_path("aesthetic_mlp", DEFAULT_AESTHETIC_MLP)?;
        let encoder = clip_tower(context, "aesthetic_engine", &clip, DType::F32)?;
        let info = aesthetic_info(&mlp, encoder.info()).map_err(|e| e.to_string())?;
        let runner = crate::runner::aesthetic_runner_from(encoder, &mlp, batch)
            .map_err(|e| e.to_string())?;
        Ok(LoadedModule::new(runner).versioned(info.id, info.version))
    }
}

/// The `embedding` module's loader, for the registry.
pub static EMBEDDING_LOADER: EmbeddingLoader = EmbeddingLoader;
/// The `aesthetic` module's loader, for the registry.
pub static AESTHETIC_LOADER: AestheticLoader = AestheticLoader;
