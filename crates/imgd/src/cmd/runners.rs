//! Which model modules this installation can run, and loading their runners.
//!
//! A module runs when its weights are installed (see `imgd models list`) and it is not listed
//! in `[models] disabled`; otherwise its jobs stay queued and `imgd status` says why. Loading
//! happens once, at daemon start, on the main thread; the runners then move into the inference
//! thread, the only one that calls them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use imgd_clip::aesthetic::aesthetic_info;
use imgd_clip::clip::ClipImageEncoder;
use imgd_core::Module;
use imgd_pipeline::runner::ModelRunner;

use super::config::{FileConfig, OcrRecognizer};

/// Whether a module can run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Availability {
    /// Computed by the daemon itself (metadata, technical).
    BuiltIn,
    /// Its model is installed: what will load.
    Installed(String),
    /// Its jobs wait: why, and what to do about it.
    Waiting(String),
}

/// What [`load`] produced.
#[derive(Default)]
pub struct Loaded {
    /// One runner per module that loaded.
    pub runners: Vec<Box<dyn ModelRunner>>,
    /// The cloud module's counters, when it loaded.
    pub cloud_stats: Option<Arc<imgd_cloud::CloudStats>>,
    /// Modules whose model is installed but failed to load, with the error.
    pub problems: Vec<(Module, String)>,
    /// The model id and version each versioned module (embedding, aesthetic, objects, whose
    /// version also covers its `[objects]` settings) now writes: the daemon re-queues images
    /// whose result came from another model or other settings.
    pub models: Vec<(Module, String, String)>,
    /// Images the caption module's vision encoder has run on, when it loaded.
    pub vision_encodes: Option<Arc<AtomicU64>>,
}

/// The CLIP folder `path` names, when it holds a model (`config.json` and
/// `model.safetensors`).
fn clip_folder(config: &FileConfig, path: &Path) -> Option<PathBuf> {
    let dir = config.models.resolve(path);
    (dir.join("config.json").is_file() && dir.join("model.safetensors").is_file()).then_some(dir)
}

/// The BLIP folder the config names, when it holds a model (`config.json`,
/// `model.safetensors` and `tokenizer.json`).
fn caption_folder(config: &FileConfig) -> Option<PathBuf> {
    let dir = config.models.resolve(&config.models.caption);
    ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|f| dir.join(f).is_file())
        .then_some(dir)
}

/// The GroundingDINO folder the config names, when it holds a model (`model.onnx` and
/// `tokenizer.json`).
fn objects_folder(config: &FileConfig) -> Option<PathBuf> {
    let dir = config.models.resolve(&config.models.objects);
    imgd_objects::model_files(&dir)
        .iter()
        .all(|f| f.is_file())
        .then_some(dir)
}

/// The PP-OCR folder.
fn ocr_folder(config: &FileConfig) -> PathBuf {
    config
        .models
        .ocr
        .clone()
        .unwrap_or_else(imgd_ocr::default_models_dir)
}

/// The TrOCR folder the config names, when `ocr_recognizer = "trocr"` and it holds a model
/// (`config.json`, weights, a tokenizer).
fn trocr_folder(config: &FileConfig) -> Option<PathBuf> {
    let dir = config.models.resolve(&config.models.trocr);
    (config.models.ocr_recognizer == OcrRecognizer::Trocr && imgd_trocr::is_installed(&dir))
        .then_some(dir)
}

/// Whether the cloud module is configured: a `[cloud]` section or `IMGD_CLOUD_BASE_URL`.
fn cloud_configured(config: &FileConfig) -> bool {
    config.cloud.is_some() || super::config::env_var("IMGD_CLOUD_BASE_URL").is_some()
}

/// Whether `module` can run with `config`, from the files on disk (nothing is loaded).
pub fn availability(module: Module, config: &FileConfig) -> Availability {
    if matches!(module, Module::Metadata | Module::Technical) {
        return Availability::BuiltIn;
    }
    if config.models.is_disabled(module) {
        return Availability::Waiting("waiting: disabled in [models] disabled".to_string());
    }
    let models = &config.models;
    match module {
        Module::Metadata | Module::Technical => Availability::BuiltIn,
        Module::Embedding => match clip_folder(config, &models.embedding) {
            Some(dir) => Availability::Installed(format!("CLIP from {}", dir.display())),
            None => Availability::Waiting(format!(
                "waiting: no CLIP model in {} (imgd models fetch clip-vit-b32)",
                models.resolve(&models.embedding).display()
            )),
        },
        Module::Aesthetic => {
            let mlp = models.resolve(&models.aesthetic_mlp);
            match clip_folder(config, &models.aesthetic_clip) {
                Some(dir) if mlp.exists() => Availability::Installed(format!(
                    "LAION aesthetic MLP {} over CLIP from {}",
                    mlp.display(),
                    dir.display()
                )),
                Some(_) => Availability::Waiting(format!(
                    "waiting: no aesthetic MLP at {} (imgd models fetch laion-aesthetic)",
                    mlp.display()
                )),
                None => Availability::Waiting(format!(
                    "waiting: no CLIP ViT-L/14 in {} (imgd models fetch clip-vit-l14 laion-aesthetic)",
                    models.resolve(&models.aesthetic_clip).display()
                )),
            }
        }
        Module::Caption => match caption_folder(config) {
            Some(dir) => Availability::Installed(format!(
                "BLIP from {}, {} questions",
                dir.display(),
                config.caption.questions.len()
            )),
            None => Availability::Waiting(format!(
                "waiting: no BLIP model in {} (imgd models fetch blip-base-caption)",
                models.resolve(&models.caption).display()
            )),
        },
        Module::Objects => match objects_folder(config) {
            Some(dir) => Availability::Installed(format!(
                "GroundingDINO from {}, {} prompts",
                dir.display(),
                config.objects.prompts.len()
            )),
            None => Availability::Waiting(format!(
                "waiting: no GroundingDINO model.onnx + tokenizer.json in {} \
                 (imgd models fetch grounding-dino-tiny)",
                models.resolve(&models.objects).display()
            )),
        },
        Module::Ocr => {
            let dir = ocr_folder(config);
            match models.ocr_recognizer {
                OcrRecognizer::Ppocr => {
                    if dir.join(imgd_ocr::REC_FILE).is_file() {
                        Availability::Installed(format!("PP-OCR from {}", dir.display()))
                    } else {
                        Availability::Waiting(format!(
                            "waiting: no PP-OCR models in {} (scripts/fetch-registry-models.sh)",
                            dir.display()
                        ))
                    }
                }
                OcrRecognizer::Trocr => {
                    let trocr = models.resolve(&models.trocr);
                    let detector = imgd_trocr::runner::PPOCR_FILES
                        .iter()
                        .all(|file| dir.join(file).is_file());
                    if !detector {
                        Availability::Waiting(format!(
                            "waiting: no PP-OCR detector in {} for TrOCR to read its lines \
                             (scripts/fetch-registry-models.sh)",
                            dir.display()
                        ))
                    } else if imgd_trocr::is_installed(&trocr) {
                        Availability::Installed(format!(
                            "PP-OCR detection from {}, TrOCR from {}",
                            dir.display(),
                            trocr.display()
                        ))
                    } else {
                        Availability::Waiting(format!(
                            "waiting: no TrOCR model in {} (imgd models fetch trocr-small-printed)",
                            trocr.display()
                        ))
                    }
                }
            }
        }
        Module::Faces => {
            let found = imgd_faces::FaceModels::locate(&models.dir());
            let detector = found.scrfd.as_ref().or(found.mtcnn.as_ref());
            match (detector, &found.arcface) {
                (Some(det), Some(emb)) => Availability::Installed(format!(
                    "detector {}, embeddings {}",
                    det.display(),
                    emb.display()
                )),
                (Some(det), None) => Availability::Installed(format!(
                    "detector {}; faces are detected, not embedded (imgd models fetch arcface-r50)",
                    det.display()
                )),
                (None, _) => Availability::Waiting(
                    "waiting: no face detector installed (scripts/fetch-registry-models.sh \
                     for MTCNN, or imgd models fetch scrfd-10g)"
                        .to_string(),
                ),
            }
        }
        Module::Cloud => {
            if cloud_configured(config) {
                Availability::Installed(format!(
                    "cloud API {}",
                    config
                        .cloud
                        .as_ref()
                        .map_or("from the environment", |c| c.base_url.as_str())
                ))
            } else {
                Availability::Waiting(
                    "waiting: no [cloud] section in the configuration".to_string(),
                )
            }
        }
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
    let mut loaded = Loaded::default();
    let batch = |module: Module| {
        let mut batch = config.batch_for(module.name());
        if let Some(n) = batch_size {
            batch.max_items = n.max(1);
        }
        batch
    };
    let models = &config.models;
    let installed =
        |module: Module| matches!(availability(module, config), Availability::Installed(_));
    let trocr = installed(Module::Ocr)
        .then(|| trocr_folder(config))
        .flatten();
    let needs_candle = installed(Module::Embedding)
        || installed(Module::Aesthetic)
        || installed(Module::Caption)
        || trocr.is_some();
    let device = needs_candle.then(|| {
        let device = imgd_candle::device(models.cuda);
        tracing::info!(
            "candle models (CLIP, BLIP, TrOCR) run on {}",
            imgd_candle::device::device_name(&device)
        );
        device
    });
    let mut add = |module: Module, result: Result<Box<dyn ModelRunner>, String>| match result {
        Ok(runner) => {
            tracing::info!("module {module}: {} loaded", runner.model_name());
            loaded.runners.push(runner);
        }
        Err(err) => {
            tracing::error!("module {module}: cannot load its model: {err}");
            loaded.problems.push((module, err));
        }
    };
    let mut versions = Vec::new();
    if let (true, Some(device), Some(dir)) = (
        installed(Module::Embedding),
        &device,
        clip_folder(config, &models.embedding),
    ) {
        let dtype = if device.is_cuda() && models.gpu_f16 {
            imgd_clip::DType::F16
        } else {
            imgd_clip::DType::F32
        };
        let runner = ClipImageEncoder::load_as(&dir, device, dtype).map(|encoder| {
            let info = encoder.info();
            versions.push((Module::Embedding, info.id.clone(), info.version.clone()));
            imgd_clip::runner::embedding_runner_from(encoder, batch(Module::Embedding))
        });
        add(Module::Embedding, runner.map_err(|e| e.to_string()));
    }
    if let (true, Some(device), Some(dir)) = (
        installed(Module::Aesthetic),
        &device,
        clip_folder(config, &models.aesthetic_clip),
    ) {
        let mlp = models.resolve(&models.aesthetic_mlp);
        let runner = ClipImageEncoder::load(&dir, device).and_then(|encoder| {
            let info = aesthetic_info(&mlp, encoder.info())?;
            let runner =
                imgd_clip::runner::aesthetic_runner_from(encoder, &mlp, batch(Module::Aesthetic))?;
            versions.push((Module::Aesthetic, info.id, info.version));
            Ok(runner)
        });
        add(Module::Aesthetic, runner.map_err(|e| e.to_string()));
    }
    let mut vision_encodes = None;
    if let (true, Some(device), Some(dir)) =
        (installed(Module::Caption), &device, caption_folder(config))
    {
        let result = imgd_caption::runner(
            &dir,
            device,
            batch(Module::Caption),
            &config.caption.questions,
        )
        .map(|(runner, encodes)| {
            vision_encodes = Some(encodes);
            runner
        });
        add(Module::Caption, result.map_err(|e| e.to_string()));
    }
    if let (true, Some(dir)) = (installed(Module::Objects), objects_folder(config)) {
        let result = imgd_objects::runner(
            &dir,
            &models.ort(),
            config.objects.clone(),
            batch(Module::Objects),
        )
        .map(|(runner, id, version)| {
            versions.push((Module::Objects, id, version));
            runner
        });
        add(Module::Objects, result.map_err(|e| e.to_string()));
    }
    match (&trocr, &device) {
        (Some(dir), Some(device)) => {
            let result = imgd_trocr::runner(
                &ocr_folder(config),
                &models.ort(),
                dir,
                device,
                models.trocr_settings(),
                batch(Module::Ocr),
            )
            .map(|(runner, _encodes)| runner);
            add(Module::Ocr, result.map_err(|e| e.to_string()));
        }
        // TrOCR without a candle device: reported with the device's error above.
        (Some(_), None) => {}
        (None, _) if installed(Module::Ocr) => {
            add(
                Module::Ocr,
                imgd_ocr::runner(&ocr_folder(config), &models.ort(), batch(Module::Ocr))
                    .map_err(|e| e.to_string()),
            );
        }
        (None, _) => {}
    }
    if installed(Module::Faces) {
        add(
            Module::Faces,
            imgd_faces::runner(&models.dir(), &models.ort(), batch(Module::Faces))
                .map_err(|e| e.to_string()),
        );
    }
    let mut cloud_stats = None;
    if installed(Module::Cloud) {
        let mut cloud = config.cloud.clone().unwrap_or_default();
        let result = cloud
            .apply_env_from(super::config::env_var)
            .and_then(|()| imgd_cloud::runner_with_stats(cloud, batch(Module::Cloud)));
        match result {
            Ok((runner, stats)) => {
                cloud_stats = Some(stats);
                add(Module::Cloud, Ok(runner));
            }
            Err(err) => add(Module::Cloud, Err(err.to_string())),
        }
    }
    loaded.cloud_stats = cloud_stats;
    loaded.models = versions;
    loaded.vision_encodes = vision_encodes;
    #[cfg(feature = "fake-model")]
    if std::env::var_os("IMGD_FAKE_MODEL").is_some_and(|v| v == "1") {
        let ms = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(default)
        };
        loaded
            .runners
            .retain(|runner| runner.module() != Module::Embedding);
        loaded.runners.push(imgd_pipeline::runner::fake_runner(
            batch(Module::Embedding),
            std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_FIXED_MS", 2.0) / 1000.0),
            std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_ITEM_MS", 0.2) / 1000.0),
        ));
    }
    loaded
}
