//! imgd's OCR module: PP-OCR text detection, direction classification and recognition
//! through ONNX Runtime, on the models that the `rapidocr` 3.10.0 wheel ships
//! (`PP-OCRv6_det_small.onnx`, `ch_ppocr_mobile_v2.0_cls_mobile.onnx`,
//! `PP-OCRv6_rec_small.onnx`; `scripts/fetch-registry-models.sh` unpacks them into
//! `models/registry/rapidocr/`).
//!
//! Source of the algorithm: RapidOCR (Apache-2.0), itself a port of PaddleOCR's inference
//! pipeline. Run it on images:
//!
//! ```text
//! cargo run --release -p imgd-ocr --example ocr -- fixtures/ocr/text_00.jpg
//! ```
//!
//! # Pipeline
//!
//! 1. **Detection** ([`det`]): the image's long side scaled down to at most
//!    [`OcrConfig::det_long_side`] (960 by default; multiples of 32), DB post-processing into
//!    rotated text boxes in reading order. Images whose detector inputs have the same size run
//!    in one batch.
//! 2. **Crops**: each box is rectified to an upright crop (perspective warp, bicubic).
//! 3. **Direction** (optional): the classifier says whether a crop is upside down (score >
//!    [`OcrConfig::cls_thresh`]); such crops are turned 180°.
//! 4. **Recognition** ([`rec`]): crops of *all* images in the batch, grouped by padded width
//!    and sorted, run together; greedy CTC decoding with the dictionary from the model's
//!    `character` metadata; confidence = mean probability of the kept characters. Lines with
//!    empty text or confidence under [`OcrConfig::text_score`] are dropped.
//!
//! The recogniser is a [`LineRecognizer`]: PP-OCR's CTC model ([`CtcRecognizer`], what
//! [`Ocr::load`] builds) or another one handed to [`Ocr::with_recognizer`] (the `imgd-trocr`
//! crate's TrOCR), which then reads the same crops (after the same direction classifier) and
//! whose lines are kept by the same rules. A row says which in `data.recognizer`.
//!
//! **Batching never changes a result**: every input shape depends on one image or one crop
//! alone, and only inputs of the same shape share a model call, so a batch of N images gives
//! what N single runs give (tested to 1e-4).

#![deny(missing_docs)]

pub mod det;
pub mod geometry;
pub mod rec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use imgd_core::{Gate, Module, ModuleSpec, ResultKey, ResultRow, RunsOn, SearchText, SqlValue};
use imgd_infer::batcher::{BatchConfig, BatchModel};
use imgd_infer::ndarray::{Array4, ArrayViewMut3, Axis};
use imgd_infer::ort::value::TensorRef;
use imgd_infer::runner::{Batched, ImageInput, ModelRunner};
use imgd_infer::{InferError, OrtConfig, ShapedSessions};
use serde::{Deserialize, Serialize};

/// The `ocr` module's declaration.
pub static OCR_SPEC: ModuleSpec = ModuleSpec {
    name: "ocr",
    bit: 6,
    summary: "text lines with boxes (PP-OCR, or TrOCR reading PP-OCR's lines)",
    tier: Some(960),
    runs_on: RunsOn::InferenceThread,
    queued_by_default: true,
    result_table: "result_ocr",
    result_key: ResultKey::Image,
    // Its table is in the store's first migrations.
    migrations: &[],
    search_text: &[SearchText {
        column: "ocr",
        sql: "SELECT text FROM result_ocr WHERE image_id = ?1",
        postgres: None,
        words: None,
    }],
    gate: Some(Gate {
        after: "objects",
        column: "has_text",
        skipped_row,
    }),
    store_hook: None,
};

/// The `ocr` module.
pub const OCR: Module = Module::of(&OCR_SPEC);

/// The row of an image the objects module found no text in: done without running.
pub fn skipped_row() -> ResultRow {
    ResultRow {
        module: OCR,
        model_id: None,
        model_version: None,
        columns: vec![
            ("text", SqlValue::Text(String::new())),
            ("line_count", SqlValue::Integer(0)),
        ],
        data: serde_json::json!({
            "lines": [],
            "skipped": "the objects module found no text in this image",
        }),
        vectors: Vec::new(),
    }
}

use crate::geometry::{Point, crop_quad};

/// The `model_id` of OCR result rows.
pub const MODEL_ID: &str = "pp-ocrv6-small";
/// The `model_version` of OCR result rows: the package the models come from.
pub const MODEL_VERSION: &str = "rapidocr-3.10.0";
/// The detector file name.
pub const DET_FILE: &str = "PP-OCRv6_det_small.onnx";
/// The recogniser file name.
pub const REC_FILE: &str = "PP-OCRv6_rec_small.onnx";
/// The direction classifier file name.
pub const CLS_FILE: &str = "ch_ppocr_mobile_v2.0_cls_mobile.onnx";

/// Why OCR failed.
#[derive(Debug, thiserror::Error)]
pub enum OcrError {
    /// Loading the runtime or a model failed.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// A model call failed or returned something unexpected.
    #[error("OCR model: {0}")]
    Model(String),
}

impl From<imgd_infer::ort::Error> for OcrError {
    fn from(error: imgd_infer::ort::Error) -> Self {
        OcrError::Model(error.to_string())
    }
}

/// OCR settings. The defaults are RapidOCR's, except the detector's input size.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrConfig {
    /// The detector's input long side (scaled down to it, never up; multiples of 32). 960:
    /// imgd's OCR tier. RapidOCR instead scales the short side up to 736.
    pub det_long_side: u32,
    /// Probability-map threshold.
    pub det_thresh: f32,
    /// A box's mean probability must reach this.
    pub box_thresh: f32,
    /// How much a box is grown (DB's unclip ratio).
    pub unclip_ratio: f32,
    /// At most this many regions per image.
    pub max_candidates: usize,
    /// Dilate the thresholded map by 2×2 first.
    pub use_dilation: bool,
    /// Run the direction classifier.
    pub use_cls: bool,
    /// A crop is turned 180° when the classifier says so with more than this score.
    pub cls_thresh: f32,
    /// Lines with a lower confidence are dropped.
    pub text_score: f32,
    /// Images per detector call (images with equal input sizes only).
    pub det_batch: usize,
    /// Crops per classifier or recogniser call.
    pub rec_batch: usize,
}

impl Default for OcrConfig {
    fn default() -> Self {
        OcrConfig {
            det_long_side: 960,
            det_thresh: 0.3,
            box_thresh: 0.5,
            unclip_ratio: 1.6,
            max_candidates: 1000,
            use_dilation: true,
            use_cls: true,
            cls_thresh: 0.9,
            text_score: 0.5,
            det_batch: 4,
            rec_batch: 32,
        }
    }
}

/// What reads the text of upright line crops (step 4 of the [pipeline](crate)).
///
/// An implementation must give each crop the result it would get alone, whatever the other
/// crops of the call: batching never changes an OCR result.
pub trait LineRecognizer: Send {
    /// What the OCR rows record about it.
    fn info(&self) -> RecognizerInfo;
    /// The text and a confidence in 0–1 of each crop, in order.
    fn read(&mut self, crops: &[&RgbImage]) -> Result<Vec<(String, f32)>, OcrError>;
}

/// A recogniser's name and model, as the OCR rows record them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecognizerInfo {
    /// `ppocr` (PP-OCR's CTC recogniser) or `trocr`: `data.recognizer` of the rows.
    pub kind: String,
    /// Its model id (`pp-ocrv6-small`, `trocr-small-printed`, …).
    pub model_id: String,
    /// Its model version.
    pub model_version: String,
}

impl RecognizerInfo {
    /// PP-OCR's own recogniser.
    pub fn ppocr() -> Self {
        RecognizerInfo {
            kind: PPOCR.to_string(),
            model_id: MODEL_ID.to_string(),
            model_version: MODEL_VERSION.to_string(),
        }
    }

    /// The rows' `model_id`: [`MODEL_ID`] with PP-OCR's recogniser, else
    /// `pp-ocrv6-small+<recogniser id>` (the detector is always PP-OCR's).
    pub fn row_model_id(&self) -> String {
        if self.kind == PPOCR {
            MODEL_ID.to_string()
        } else {
            format!("{MODEL_ID}+{}", self.model_id)
        }
    }

    /// The rows' `model_version`: [`MODEL_VERSION`], with `+<recogniser version>` for another
    /// recogniser.
    pub fn row_model_version(&self) -> String {
        if self.kind == PPOCR {
            MODEL_VERSION.to_string()
        } else {
            format!("{MODEL_VERSION}+{}", self.model_version)
        }
    }
}

/// `data.recognizer` of rows read by PP-OCR's CTC recogniser.
pub const PPOCR: &str = "ppocr";

/// One recognised text line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    /// The text box in the pixels of the image OCR ran on: top-left, top-right,
    /// bottom-right, bottom-left.
    #[serde(rename = "box")]
    pub bbox: [[i32; 2]; 4],
    /// The text.
    pub text: String,
    /// 0–1: the mean probability of its characters (PP-OCR's CTC recogniser) or of its
    /// generated tokens (TrOCR; see the `imgd-trocr` crate).
    pub confidence: f32,
}

/// The lines of one image, with the size of the image they refer to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OcrOutput {
    /// The lines in reading order.
    pub lines: Vec<Line>,
    /// The width of the image the boxes refer to (the OCR tier).
    pub width: u32,
    /// Its height.
    pub height: u32,
    /// Which recogniser read the lines ([`RecognizerInfo::kind`]: `ppocr`, `trocr`).
    #[serde(default)]
    pub recognizer: String,
}

impl OcrOutput {
    /// The `result_ocr` row of lines read by PP-OCR's recogniser; see [`Self::to_row_with`].
    pub fn to_row(&self) -> ResultRow {
        self.to_row_with(&RecognizerInfo::ppocr())
    }

    /// The `result_ocr` row: `text` (the lines joined by newlines), `line_count`, and `data`
    /// = `{"lines": [{"box", "text", "confidence"}], "width", "height", "recognizer"}`; the
    /// model id and version name the detector and the recogniser `info`.
    pub fn to_row_with(&self, info: &RecognizerInfo) -> ResultRow {
        let text = self
            .lines
            .iter()
            .map(|line| line.text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        ResultRow {
            module: OCR,
            model_id: Some(info.row_model_id()),
            model_version: Some(info.row_model_version()),
            columns: vec![
                ("text", SqlValue::Text(text)),
                ("line_count", SqlValue::Integer(self.lines.len() as i64)),
            ],
            data: serde_json::to_value(self).unwrap_or_default(),
            vectors: Vec::new(),
        }
    }
}

/// The folder the PP-OCR models are unpacked into: `<registry_dir>/rapidocr`.
pub fn default_models_dir() -> PathBuf {
    imgd_infer::registry_dir().join("rapidocr")
}

/// PP-OCR's detector and direction classifier sessions, and the line recogniser.
pub struct Ocr {
    det: ShapedSessions,
    cls: Option<ShapedSessions>,
    rec: Box<dyn LineRecognizer>,
    config: OcrConfig,
    timings: Timings,
}

/// Time spent in each stage since the [`Ocr`] was loaded (or [`Ocr::reset_timings`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Timings {
    /// Detector inputs, detector calls and DB post-processing.
    pub detect: Duration,
    /// Perspective crops.
    pub crop: Duration,
    /// Direction classifier.
    pub classify: Duration,
    /// The recogniser (inputs, calls, decoding).
    pub recognize: Duration,
    /// Images processed.
    pub images: usize,
    /// Text boxes cropped.
    pub crops: usize,
}

impl std::fmt::Debug for Ocr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ocr")
            .field("recognizer", &self.rec.info())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

struct Crop {
    image: usize,
    quad: [Point; 4],
    pixels: RgbImage,
}

impl Ocr {
    /// Opens the models in `models` (the folder holding [`DET_FILE`], [`REC_FILE`] and
    /// [`CLS_FILE`]; see [`default_models_dir`]): PP-OCR end to end.
    pub fn load(models: &Path, ort: &OrtConfig, config: OcrConfig) -> Result<Self, OcrError> {
        let rec = CtcRecognizer::load(models, ort, config.rec_batch)?;
        Self::with_recognizer(models, ort, config, Box::new(rec))
    }

    /// PP-OCR's detector (and direction classifier when [`OcrConfig::use_cls`]) from `models`
    /// ([`DET_FILE`], [`CLS_FILE`]), feeding their line crops to `recognizer`.
    pub fn with_recognizer(
        models: &Path,
        ort: &OrtConfig,
        config: OcrConfig,
        recognizer: Box<dyn LineRecognizer>,
    ) -> Result<Self, OcrError> {
        let det = ShapedSessions::open(&models.join(DET_FILE), ort)?;
        let cls = if config.use_cls {
            Some(ShapedSessions::open(&models.join(CLS_FILE), ort)?)
        } else {
            None
        };
        Ok(Ocr {
            det,
            cls,
            rec: recognizer,
            config,
            timings: Timings::default(),
        })
    }

    /// The recogniser's name and model.
    pub fn recognizer_info(&self) -> RecognizerInfo {
        self.rec.info()
    }

    /// The settings.
    pub fn config(&self) -> &OcrConfig {
        &self.config
    }

    /// Time spent per stage so far.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// Starts the stage timings from zero.
    pub fn reset_timings(&mut self) {
        self.timings = Timings::default();
    }

    /// Reads the text lines of each image (detector per image size group, classifier and
    /// recogniser across all images' crops).
    pub fn recognize(&mut self, images: &[&RgbImage]) -> Result<Vec<Vec<Line>>, OcrError> {
        self.recognize_prepared(images, &vec![None; images.len()])
    }

    /// [`Self::recognize`] with the detector inputs made ahead where given (see
    /// [`det::DetectorInput`]); one made for another input size is ignored and the image
    /// prepared here.
    pub fn recognize_prepared(
        &mut self,
        images: &[&RgbImage],
        detector_inputs: &[Option<&det::DetectorInput>],
    ) -> Result<Vec<Vec<Line>>, OcrError> {
        let started = Instant::now();
        let boxes = self.detect(images, detector_inputs)?;
        let detected = Instant::now();
        let mut crops = Vec::new();
        for (index, image_boxes) in boxes.into_iter().enumerate() {
            for (quad, _score) in image_boxes {
                if let Some(pixels) = crop_quad(images[index], &quad) {
                    crops.push(Crop {
                        image: index,
                        quad,
                        pixels,
                    });
                }
            }
        }
        let cropped = Instant::now();
        if self.cls.is_some() {
            self.classify(&mut crops)?;
        }
        let classified = Instant::now();
        let pixels: Vec<&RgbImage> = crops.iter().map(|crop| &crop.pixels).collect();
        let texts = self.rec.read(&pixels)?;
        if texts.len() != crops.len() {
            return Err(OcrError::Model(format!(
                "the recogniser returned {} texts for {} crops",
                texts.len(),
                crops.len()
            )));
        }
        let timings = &mut self.timings;
        timings.detect += detected - started;
        timings.crop += cropped - detected;
        timings.classify += classified - cropped;
        timings.recognize += classified.elapsed();
        timings.images += images.len();
        timings.crops += crops.len();
        let mut lines: Vec<Vec<Line>> = vec![Vec::new(); images.len()];
        for (crop, (text, confidence)) in crops.iter().zip(texts) {
            if text.trim().is_empty() || confidence < self.config.text_score {
                continue;
            }
            lines[crop.image].push(Line {
                bbox: crop.quad.map(|[x, y]| [x as i32, y as i32]),
                text,
                confidence,
            });
        }
        Ok(lines)
    }

    /// Text boxes per image (detector inputs of equal size batched together).
    fn detect(
        &mut self,
        images: &[&RgbImage],
        detector_inputs: &[Option<&det::DetectorInput>],
    ) -> Result<Vec<Vec<det::ScoredBox>>, OcrError> {
        let mut groups: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        for (index, image) in images.iter().enumerate() {
            let size = det::input_size(image.width(), image.height(), self.config.det_long_side);
            groups.entry(size).or_default().push(index);
        }
        let mut boxes = vec![Vec::new(); images.len()];
        for ((width, height), members) in groups {
            let det_batch = self.config.det_batch.max(1);
            for chunk in members.chunks(det_batch) {
                // Rows past the chunk (fixed shapes only) stay zero; their maps are ignored.
                let rows = self.det.padded_batch(chunk.len(), det_batch);
                let mut input = Array4::<f32>::zeros((rows, 3, height, width));
                for (slot, &index) in chunk.iter().enumerate() {
                    let mut plane = input.index_axis_mut(Axis(0), slot);
                    let plane = slice_of(&mut plane)?;
                    match detector_inputs.get(index).copied().flatten() {
                        Some(made) if (made.width, made.height) == (width, height) => {
                            plane.copy_from_slice(&made.planes);
                        }
                        _ => det::preprocess_into(images[index], width, height, plane),
                    }
                }
                let outputs = self
                    .det
                    .for_shape(input.shape())?
                    .run(imgd_infer::ort::inputs![TensorRef::from_array_view(
                        &input
                    )?])?;
                let (shape, data) = outputs[0].try_extract_tensor::<f32>()?;
                let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
                if dims.len() != 4 || dims[0] != rows {
                    return Err(OcrError::Model(format!("detector output shape {dims:?}")));
                }
                let (map_h, map_w) = (dims[2], dims[3]);
                let per_image = dims[1] * map_h * map_w;
                for (slot, &index) in chunk.iter().enumerate() {
                    let map = &data[slot * per_image..slot * per_image + map_h * map_w];
                    boxes[index] = det::boxes_from_map(
                        map,
                        map_w,
                        map_h,
                        images[index].width(),
                        images[index].height(),
                        &self.config,
                    );
                }
            }
        }
        Ok(boxes)
    }

    /// Turns crops the classifier finds upside down by 180°.
    fn classify(&mut self, crops: &mut [Crop]) -> Result<(), OcrError> {
        let Some(cls) = self.cls.as_mut() else {
            return Ok(());
        };
        let batch = self.config.rec_batch.max(1);
        for chunk in crops.chunks_mut(batch) {
            let rows = cls.padded_batch(chunk.len(), batch);
            let mut input = Array4::<f32>::zeros((rows, 3, rec::CLS_HEIGHT, rec::CLS_WIDTH));
            for (slot, crop) in chunk.iter().enumerate() {
                let mut plane = input.index_axis_mut(Axis(0), slot);
                rec::cls_input_into(&crop.pixels, slice_of(&mut plane)?);
            }
            let outputs = cls.for_shape(input.shape())?.run(imgd_infer::ort::inputs![
                TensorRef::from_array_view(&input)?
            ])?;
            let (shape, data) = outputs[0].try_extract_tensor::<f32>()?;
            if shape.len() != 2 || shape[0] as usize != rows || shape[1] < 2 {
                return Err(OcrError::Model(format!(
                    "classifier output shape {shape:?}"
                )));
            }
            let classes = shape[1] as usize;
            for (slot, crop) in chunk.iter_mut().enumerate() {
                let row = &data[slot * classes..(slot + 1) * classes];
                if row[1] > row[0] && row[1] > self.config.cls_thresh {
                    crop.pixels = image::imageops::rotate180(&crop.pixels);
                }
            }
        }
        Ok(())
    }
}

/// PP-OCR's CTC text-line recogniser ([`REC_FILE`]) with the dictionary from its
/// `character` metadata.
pub struct CtcRecognizer {
    rec: ShapedSessions,
    alphabet: Vec<String>,
    batch: usize,
}

impl std::fmt::Debug for CtcRecognizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CtcRecognizer")
            .field("alphabet", &self.alphabet.len())
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl CtcRecognizer {
    /// Opens [`REC_FILE`] in `models`; `batch` crops at most per call.
    pub fn load(models: &Path, ort: &OrtConfig, batch: usize) -> Result<Self, OcrError> {
        let rec = ShapedSessions::open(&models.join(REC_FILE), ort)?;
        let character = rec.any().metadata()?.custom("character").ok_or_else(|| {
            OcrError::Model(format!(
                "{} has no `character` metadata (the recognition dictionary)",
                models.join(REC_FILE).display()
            ))
        })?;
        Ok(CtcRecognizer {
            rec,
            alphabet: rec::alphabet(&character),
            batch: batch.max(1),
        })
    }
}

impl LineRecognizer for CtcRecognizer {
    fn info(&self) -> RecognizerInfo {
        RecognizerInfo::ppocr()
    }

    /// (text, confidence) per crop: crops grouped by padded width, narrowest first (with fixed
    /// shapes, the coarser [`rec::FIXED_WIDTHS`]).
    fn read(&mut self, crops: &[&RgbImage]) -> Result<Vec<(String, f32)>, OcrError> {
        let bucket = if self.rec.fixed_shapes() {
            rec::fixed_bucket_width
        } else {
            rec::bucket_width
        };
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (index, crop) in crops.iter().enumerate() {
            groups.entry(bucket(crop)).or_default().push(index);
        }
        let mut texts = vec![(String::new(), 0.0f32); crops.len()];
        for (width, members) in groups {
            for chunk in members.chunks(self.batch) {
                let rows = self.rec.padded_batch(chunk.len(), self.batch);
                let mut input = Array4::<f32>::zeros((rows, 3, rec::HEIGHT, width));
                for (slot, &index) in chunk.iter().enumerate() {
                    let mut plane = input.index_axis_mut(Axis(0), slot);
                    rec::rec_input_into(crops[index], width, slice_of(&mut plane)?);
                }
                let outputs = self
                    .rec
                    .for_shape(input.shape())?
                    .run(imgd_infer::ort::inputs![TensorRef::from_array_view(
                        &input
                    )?])?;
                let (shape, data) = outputs[0].try_extract_tensor::<f32>()?;
                if shape.len() != 3 || shape[0] as usize != rows {
                    return Err(OcrError::Model(format!(
                        "recogniser output shape {shape:?}"
                    )));
                }
                let (steps, classes) = (shape[1] as usize, shape[2] as usize);
                if classes != self.alphabet.len() + 1 {
                    return Err(OcrError::Model(format!(
                        "recogniser has {classes} classes but its dictionary {} symbols",
                        self.alphabet.len()
                    )));
                }
                for (slot, &index) in chunk.iter().enumerate() {
                    let probs = &data[slot * steps * classes..(slot + 1) * steps * classes];
                    texts[index] = rec::ctc_decode(probs, classes, &self.alphabet);
                }
            }
        }
        Ok(texts)
    }
}

fn slice_of<'a>(plane: &'a mut ArrayViewMut3<'_, f32>) -> Result<&'a mut [f32], OcrError> {
    plane
        .as_slice_mut()
        .ok_or_else(|| OcrError::Model("input tensor is not contiguous".to_string()))
}

/// [`Ocr`] as a [`BatchModel`]: one input is one image's OCR tier.
#[derive(Debug)]
pub struct OcrModel {
    ocr: Ocr,
    info: RecognizerInfo,
    name: String,
}

impl OcrModel {
    /// Wraps a loaded [`Ocr`]; its name is the rows' model id.
    pub fn new(ocr: Ocr) -> Self {
        let info = ocr.recognizer_info();
        let name = info.row_model_id();
        OcrModel { ocr, info, name }
    }

    /// The recogniser's name and model.
    pub fn info(&self) -> &RecognizerInfo {
        &self.info
    }
}

/// One image's input to [`OcrModel`]: its OCR tier and, when made ahead on a decode thread
/// ([`prepare_input`]), the detector's input of it.
#[derive(Debug, Clone)]
pub struct OcrInput {
    /// The OCR tier; the recogniser crops its lines from it.
    pub image: Arc<RgbImage>,
    /// The detector's input; `None` when the batch is to make it.
    pub detector: Option<det::DetectorInput>,
}

impl imgd_infer::runner::InputBytes for OcrInput {
    /// The tier and the detector's planes.
    fn input_bytes(&self) -> u64 {
        self.image.as_raw().len() as u64
            + self.detector.as_ref().map_or(0, det::DetectorInput::bytes)
    }
}

/// The OCR input of one image: its tier (the largest decoded one when the OCR tier is
/// missing) and the detector's input for a detector whose long side is `det_long_side`.
pub fn prepare_input(image: &ImageInput<'_>, det_long_side: u32) -> Result<OcrInput, String> {
    let tier = image
        .tier_or_largest(input_tier())
        .cloned()
        .ok_or_else(|| "no decoded tier for OCR".to_string())?;
    let detector = det::DetectorInput::new(&tier, det_long_side);
    Ok(OcrInput {
        image: tier,
        detector: Some(detector),
    })
}

impl BatchModel for OcrModel {
    type Input = OcrInput;
    type Output = OcrOutput;
    type Error = OcrError;

    fn name(&self) -> &str {
        &self.name
    }

    fn run_batch(&mut self, inputs: &[OcrInput]) -> Result<Vec<OcrOutput>, OcrError> {
        let images: Vec<&RgbImage> = inputs.iter().map(|input| input.image.as_ref()).collect();
        let detector: Vec<Option<&det::DetectorInput>> =
            inputs.iter().map(|input| input.detector.as_ref()).collect();
        let lines = self.ocr.recognize_prepared(&images, &detector)?;
        Ok(lines
            .into_iter()
            .zip(&images)
            .map(|(lines, image)| OcrOutput {
                lines,
                width: image.width(),
                height: image.height(),
                recognizer: self.info.kind.clone(),
            })
            .collect())
    }
}

/// The OCR tier (`OCR.tier()`, 960 px): what the runner reads and the detector's input
/// long side.
pub fn input_tier() -> u32 {
    OCR.tier().unwrap_or(960)
}

/// The settings the runner uses: the defaults with the detector at [`input_tier`].
pub fn runner_config() -> OcrConfig {
    OcrConfig {
        det_long_side: input_tier(),
        ..OcrConfig::default()
    }
}

/// The OCR module's runner for the inference thread: PP-OCR from `models` (see
/// [`default_models_dir`]) on each image's OCR tier ([`input_tier`]; the largest decoded tier
/// when that one is missing), batched across images by `batch`.
pub fn runner(
    models: &Path,
    ort: &OrtConfig,
    batch: BatchConfig,
) -> Result<Box<dyn ModelRunner>, OcrError> {
    Ok(runner_with(Ocr::load(models, ort, runner_config())?, batch))
}

/// The OCR module's runner around a loaded [`Ocr`] with any recogniser (see
/// [`Ocr::with_recognizer`]): the same tier, batching and rows as [`runner`], the rows' model
/// id and `data.recognizer` naming the recogniser.
pub fn runner_with(ocr: Ocr, batch: BatchConfig) -> Box<dyn ModelRunner> {
    let det_long_side = ocr.config().det_long_side;
    let model = OcrModel::new(ocr);
    let info = model.info().clone();
    Box::new(Batched::new(
        OCR,
        model,
        batch,
        move |image: &ImageInput<'_>| prepare_input(image, det_long_side),
        move |output: OcrOutput| output.to_row_with(&info),
    ))
}
