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

/// How one model module finds out whether it can run.
type AvailabilityCheck = fn(&FileConfig) -> Availability;

/// Whether `module` can run with `config`, from the files on disk (nothing is loaded).
pub fn availability(module: Module, config: &FileConfig) -> Availability {
    if !module.needs_model() {
        return Availability::BuiltIn;
    }
    if config.models.is_disabled(module) {
        return Availability::Waiting("waiting: disabled in [models] disabled".to_string());
    }
    let checks: [(Module, AvailabilityCheck); 7] = [
        (imgd_clip::EMBEDDING, embedding_availability),
        (imgd_clip::AESTHETIC, aesthetic_availability),
        (imgd_caption::CAPTION, caption_availability),
        (imgd_objects::OBJECTS, objects_availability),
        (imgd_ocr::OCR, ocr_availability),
        (imgd_faces::FACES, faces_availability),
        (imgd_cloud::CLOUD, cloud_availability),
    ];
    match checks.iter().find(|(m, _)| *m == module) {
        Some((_, check)) => check(config),
        None => Availability::Waiting(format!(
            "waiting: this build cannot load the {module} module"
        )),
    }
}

fn embedding_availability(config: &FileConfig) -> Availability {
    let models = &config.models;
    match clip_folder(config, &models.embedding) {
        Some(dir) => Availability::Installed(format!("CLIP from {}", dir.display())),
        None => Availability::Waiting(format!(
            "waiting: no CLIP model in {} (imgd models fetch clip-vit-b32)",
            models.resolve(&models.embedding).display()
        )),
    }
}

fn aesthetic_availability(config: &FileConfig) -> Availability {
    let models = &config.models;
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

fn caption_availability(config: &FileConfig) -> Availability {
    match caption_folder(config) {
        Some(dir) => Availability::Installed(format!(
            "BLIP from {}, {} questions",
            dir.display(),
            config.caption.questions.len()
        )),
        None => Availability::Waiting(format!(
            "waiting: no BLIP model in {} (imgd models fetch blip-base-caption)",
            config.models.resolve(&config.models.caption).display()
        )),
    }
}

fn objects_availability(config: &FileConfig) -> Availability {
    match objects_folder(config) {
        Some(dir) => Availability::Installed(format!(
            "GroundingDINO from {}, {} prompts",
            dir.display(),
            config.objects.prompts.len()
        )),
        None => Availability::Waiting(format!(
            "waiting: no GroundingDINO model.onnx + tokenizer.json in {} \
             (imgd models fetch grounding-dino-tiny)",
            config.models.resolve(&config.models.objects).display()
        )),
    }
}

fn ocr_availability(config: &FileConfig) -> Availability {
    let models = &config.models;
    let dir = ocr_folder(config);
    if models.ocr_recognizer == OcrRecognizer::Ppocr {
        return if dir.join(imgd_ocr::REC_FILE).is_file() {
            Availability::Installed(format!("PP-OCR from {}", dir.display()))
        } else {
            Availability::Waiting(format!(
                "waiting: no PP-OCR models in {} (scripts/fetch-registry-models.sh)",
                dir.display()
            ))
        };
    }
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

fn faces_availability(config: &FileConfig) -> Availability {
    let found = imgd_faces::FaceModels::locate(&config.models.dir());
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

fn cloud_availability(config: &FileConfig) -> Availability {
    if !cloud_configured(config) {
        return Availability::Waiting(
            "waiting: no [cloud] section in the configuration".to_string(),
        );
    }
    Availability::Installed(format!(
        "cloud API {}",
        config
            .cloud
            .as_ref()
            .map_or("from the environment", |c| c.base_url.as_str())
    ))
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
    let mut loader = Loader::new(config, batch_size);
    loader.embedding();
    loader.aesthetic();
    loader.caption();
    loader.objects();
    loader.ocr();
    loader.faces();
    loader.cloud();
    #[cfg(feature = "fake-model")]
    loader.fake_embedding();
    loader.loaded
}

/// One start-up's loading: the settings, the candle device when a candle model is installed,
/// and what has loaded so far.
struct Loader<'a> {
    config: &'a FileConfig,
    batch_size: Option<usize>,
    device: Option<imgd_candle::Device>,
    loaded: Loaded,
}

impl<'a> Loader<'a> {
    fn new(config: &'a FileConfig, batch_size: Option<usize>) -> Self {
        let installed =
            |module: Module| matches!(availability(module, config), Availability::Installed(_));
        let needs_candle = installed(imgd_clip::EMBEDDING)
            || installed(imgd_clip::AESTHETIC)
            || installed(imgd_caption::CAPTION)
            || (installed(imgd_ocr::OCR) && trocr_folder(config).is_some());
        let device = needs_candle.then(|| {
            let device = imgd_candle::device(config.models.cuda);
            tracing::info!(
                "candle models (CLIP, BLIP, TrOCR) run on {}",
                imgd_candle::device::device_name(&device)
            );
            device
        });
        Loader {
            config,
            batch_size,
            device,
            loaded: Loaded::default(),
        }
    }

    /// `module`'s batch settings (`imgd run --batch-size` overrides the size).
    fn batch(&self, module: Module) -> imgd_infer::batcher::BatchConfig {
        let mut batch = self.config.batch_for(module.name());
        if let Some(n) = self.batch_size {
            batch.max_items = n.max(1);
        }
        batch
    }

    fn installed(&self, module: Module) -> bool {
        matches!(
            availability(module, self.config),
            Availability::Installed(_)
        )
    }

    /// Records a module's runner, or why it did not load.
    fn add(&mut self, module: Module, result: Result<Box<dyn ModelRunner>, String>) {
        match result {
            Ok(runner) => {
                tracing::info!("module {module}: {} loaded", runner.model_name());
                self.loaded.runners.push(runner);
            }
            Err(err) => {
                tracing::error!("module {module}: cannot load its model: {err}");
                self.loaded.problems.push((module, err));
            }
        }
    }

    fn embedding(&mut self) {
        let models = &self.config.models;
        let (true, Some(device), Some(dir)) = (
            self.installed(imgd_clip::EMBEDDING),
            &self.device,
            clip_folder(self.config, &models.embedding),
        ) else {
            return;
        };
        let dtype = if device.is_cuda() && models.gpu_f16 {
            imgd_clip::DType::F16
        } else {
            imgd_clip::DType::F32
        };
        let batch = self.batch(imgd_clip::EMBEDDING);
        let mut version = None;
        let runner = ClipImageEncoder::load_as(&dir, device, dtype).map(|encoder| {
            let info = encoder.info();
            version = Some((imgd_clip::EMBEDDING, info.id.clone(), info.version.clone()));
            imgd_clip::runner::embedding_runner_from(encoder, batch)
        });
        self.loaded.models.extend(version);
        self.add(imgd_clip::EMBEDDING, runner.map_err(|e| e.to_string()));
    }

    fn aesthetic(&mut self) {
        let models = &self.config.models;
        let (true, Some(device), Some(dir)) = (
            self.installed(imgd_clip::AESTHETIC),
            &self.device,
            clip_folder(self.config, &models.aesthetic_clip),
        ) else {
            return;
        };
        let mlp = models.resolve(&models.aesthetic_mlp);
        let batch = self.batch(imgd_clip::AESTHETIC);
        let mut version = None;
        let runner = ClipImageEncoder::load(&dir, device).and_then(|encoder| {
            let info = aesthetic_info(&mlp, encoder.info())?;
            let runner = imgd_clip::runner::aesthetic_runner_from(encoder, &mlp, batch)?;
            version = Some((imgd_clip::AESTHETIC, info.id, info.version));
            Ok(runner)
        });
        self.loaded.models.extend(version);
        self.add(imgd_clip::AESTHETIC, runner.map_err(|e| e.to_string()));
    }

    fn caption(&mut self) {
        let (true, Some(device), Some(dir)) = (
            self.installed(imgd_caption::CAPTION),
            &self.device,
            caption_folder(self.config),
        ) else {
            return;
        };
        let batch = self.batch(imgd_caption::CAPTION);
        let result = imgd_caption::runner(&dir, device, batch, &self.config.caption.questions).map(
            |(runner, encodes)| {
                self.loaded.vision_encodes = Some(encodes);
                runner
            },
        );
        self.add(imgd_caption::CAPTION, result.map_err(|e| e.to_string()));
    }

    fn objects(&mut self) {
        let (true, Some(dir)) = (
            self.installed(imgd_objects::OBJECTS),
            objects_folder(self.config),
        ) else {
            return;
        };
        let config = self.config;
        let batch = self.batch(imgd_objects::OBJECTS);
        let result =
            imgd_objects::runner(&dir, &config.models.ort(), config.objects.clone(), batch).map(
                |(runner, id, version)| {
                    self.loaded
                        .models
                        .push((imgd_objects::OBJECTS, id, version));
                    runner
                },
            );
        self.add(imgd_objects::OBJECTS, result.map_err(|e| e.to_string()));
    }

    fn ocr(&mut self) {
        if !self.installed(imgd_ocr::OCR) {
            return;
        }
        let models = &self.config.models;
        let batch = self.batch(imgd_ocr::OCR);
        let result = match (trocr_folder(self.config), &self.device) {
            (Some(dir), Some(device)) => imgd_trocr::runner(
                &ocr_folder(self.config),
                &models.ort(),
                &dir,
                device,
                models.trocr_settings(),
                batch,
            )
            .map(|(runner, _encodes)| runner),
            // TrOCR is installed, so the device was made.
            (Some(_), None) => return,
            (None, _) => imgd_ocr::runner(&ocr_folder(self.config), &models.ort(), batch),
        };
        self.add(imgd_ocr::OCR, result.map_err(|e| e.to_string()));
    }

    fn faces(&mut self) {
        if !self.installed(imgd_faces::FACES) {
            return;
        }
        let models = &self.config.models;
        let result =
            imgd_faces::runner(&models.dir(), &models.ort(), self.batch(imgd_faces::FACES));
        self.add(imgd_faces::FACES, result.map_err(|e| e.to_string()));
    }

    fn cloud(&mut self) {
        if !self.installed(imgd_cloud::CLOUD) {
            return;
        }
        let mut cloud = self.config.cloud.clone().unwrap_or_default();
        let batch = self.batch(imgd_cloud::CLOUD);
        let result = cloud
            .apply_env_from(super::config::env_var)
            .and_then(|()| imgd_cloud::runner_with_stats(cloud, batch));
        match result {
            Ok((runner, stats)) => {
                self.loaded.cloud_stats = Some(stats);
                self.add(imgd_cloud::CLOUD, Ok(runner));
            }
            Err(err) => self.add(imgd_cloud::CLOUD, Err(err.to_string())),
        }
    }

    /// `IMGD_FAKE_MODEL=1`: the fake model serves the embedding module (test builds only).
    #[cfg(feature = "fake-model")]
    fn fake_embedding(&mut self) {
        if std::env::var_os("IMGD_FAKE_MODEL").is_none_or(|v| v != "1") {
            return;
        }
        let ms = |name: &str, default: f64| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(default)
        };
        let batch = self.batch(imgd_clip::EMBEDDING);
        self.loaded
            .runners
            .retain(|runner| runner.module() != imgd_clip::EMBEDDING);
        self.loaded.runners.push(imgd_pipeline::runner::fake_runner(
            imgd_clip::EMBEDDING,
            batch,
            std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_FIXED_MS", 2.0) / 1000.0),
            std::time::Duration::from_secs_f64(ms("IMGD_FAKE_MODEL_ITEM_MS", 0.2) / 1000.0),
        ));
    }
}
