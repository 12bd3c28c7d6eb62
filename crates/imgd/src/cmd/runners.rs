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
    if !module.needs_model() {
        return Availability::BuiltIn;
    }
    if config.models.is_disabled(module) {
        return Availability::Waiting("waiting: disabled in [models] disabled".to_string());
    }
    let models = &config.models;
    match module {
        m if m == imgd_clip::EMBEDDING => match clip_folder(config, &models.embedding) {
            Some(dir) => Availability::Installed(format!("CLIP from {}", dir.display())),
            None => Availability::Waiting(format!(
                "waiting: no CLIP model in {} (imgd models fetch clip-vit-b32)",
                models.resolve(&models.embedding).display()
            )),
        },
        m if m == imgd_clip::AESTHETIC => {
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
        m if m == imgd_caption::CAPTION => match caption_folder(config) {
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
        m if m == imgd_objects::OBJECTS => match objects_folder(config) {
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
        m if m == imgd_ocr::OCR => {
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
        m if m == imgd_faces::FACES => {
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
        m if m == imgd_cloud::CLOUD => {
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
        m => Availability::Waiting(format!("waiting: this build cannot load the {m} module")),
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
    let trocr = installed(imgd_ocr::OCR)
        .then(|| trocr_folder(config))
        .flatten();
    let needs_candle = installed(imgd_clip::EMBEDDING)
        || installed(imgd_clip::AESTHETIC)
        || installed(imgd_caption::CAPTION)
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
        installed(imgd_clip::EMBEDDING),
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
            versions.push((imgd_clip::EMBEDDING, info.id.clone(), info.version.clone()));
            imgd_clip::runner::embedding_runner_from(encoder, batch(imgd_clip::EMBEDDING))
        });
        add(imgd_clip::EMBEDDING, runner.map_err(|e| e.to_string()));
    }
    if let (true, Some(device), Some(dir)) = (
        installed(imgd_clip::AESTHETIC),
        &device,
        clip_folder(config, &models.aesthetic_clip),
    ) {
        let mlp = models.resolve(&models.aesthetic_mlp);
        let runner = ClipImageEncoder::load(&dir, device).and_then(|encoder| {
            let info = aesthetic_info(&mlp, encoder.info())?;
            let runner = imgd_clip::runner::aesthetic_runner_from(
                encoder,
                &mlp,
                batch(imgd_clip::AESTHETIC),
            )?;
            versions.push((imgd_clip::AESTHETIC, info.id, info.version));
            Ok(runner)
        });
        add(imgd_clip::AESTHETIC, runner.map_err(|e| e.to_string()));
    }
    let mut vision_encodes = None;
    if let (true, Some(device), Some(dir)) = (
        installed(imgd_caption::CAPTION),
        &device,
        caption_folder(config),
    ) {
        let result = imgd_caption::runner(
            &dir,
            device,
            batch(imgd_caption::CAPTION),
            &config.caption.questions,
        )
        .map(|(runner, encodes)| {
            vision_encodes = Some(encodes);
            runner
        });
        add(imgd_caption::CAPTION, result.map_err(|e| e.to_string()));
    }
    if let (true, Some(dir)) = (installed(imgd_objects::OBJECTS), objects_folder(config)) {
        let result = imgd_objects::runner(
            &dir,
            &models.ort(),
            config.objects.clone(),
            batch(imgd_objects::OBJECTS),
        )
        .map(|(runner, id, version)| {
            versions.push((imgd_objects::OBJECTS, id, version));
            runner
        });
        add(imgd_objects::OBJECTS, result.map_err(|e| e.to_string()));
    }
    match (&trocr, &device) {
        (Some(dir), Some(device)) => {
            let result = imgd_trocr::runner(
                &ocr_folder(config),
                &models.ort(),
                dir,
                device,
                models.trocr_settings(),
                batch(imgd_ocr::OCR),
            )
            .map(|(runner, _encodes)| runner);
            add(imgd_ocr::OCR, result.map_err(|e| e.to_string()));
        }
        // TrOCR without a candle device: reported with the device's error above.
        (Some(_), None) => {}
        (None, _) if installed(imgd_ocr::OCR) => {
            add(
                imgd_ocr::OCR,
                imgd_ocr::runner(&ocr_folder(config), &models.ort(), batch(imgd_ocr::OCR))
                    .map_err(|e| e.to_string()),
            );
        }
        (None, _) => {}
    }
    if installed(imgd_faces::FACES) {
        add(
            imgd_faces::FACES,
            imgd_faces::runner(&models.dir(), &models.ort(), batch(imgd_faces::FACES))
                .map_err(|e| e.to_string()),
        );
    }
    let mut cloud_stats = None;
    if installed(imgd_cloud::CLOUD) {
        let mut cloud = config.cloud.clone().unwrap_or_default();
        let result = cloud
            .apply_env_from(super::config::env_var)
            .and_then(|()| imgd_cloud::runner_with_stats(cloud, batch(imgd_cloud::CLOUD)));
        match result {
            Ok((runner, stats)) => {
                cloud_stats = Some(stats);
                add(imgd_cloud::CLOUD, Ok(runner));
            }
            Err(err) => add(imgd_cloud::CLOUD, Err(err.to_string())),
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
            .retain(|runner| runner.module() != imgd_clip::EMBEDDING);
        loaded.runners.push(imgd_pipeline::runner::fake_runner(
            imgd_clip::EMBEDDING,
            batch(imgd_clip::EMBEDDING),
            std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_FIXED_MS", 2.0) / 1000.0),
            std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_ITEM_MS", 0.2) / 1000.0),
        ));
    }
    loaded
}
