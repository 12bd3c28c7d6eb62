//! The OCR module's runner with TrOCR as its recogniser (`[models] ocr_recognizer = "trocr"`).
//!
//! PP-OCR's detector (and direction classifier) finds and rectifies the text lines of each
//! image exactly as with PP-OCR's own recogniser (`imgd_ocr::Ocr`); the crops of all images of
//! a batch then go to [`TrocrRecognizer`]. The rows are `result_ocr` rows of the same shape
//! (text, line count, `data.lines` with box, text and confidence), with `data.recognizer` =
//! `trocr` and the model id `pp-ocrv6-small+<TrOCR id>`.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use candle_core::Device;
use imgd_infer::OrtConfig;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::runner::ModelRunner;
use imgd_ocr::{CLS_FILE, DET_FILE, Ocr, OcrConfig, OcrError};

use crate::config::TrocrSettings;
use crate::error::into_ocr_error;
use crate::model::TrocrRecognizer;

/// The PP-OCR files the TrOCR path needs in the PP-OCR folder: the detector and the direction
/// classifier (the CTC recogniser is not loaded).
pub const PPOCR_FILES: [&str; 2] = [DET_FILE, CLS_FILE];

/// PP-OCR's detector and classifier from `ppocr` with `recognizer` reading the lines, with
/// `config` (see `imgd_ocr::runner_config` for the runner's).
pub fn ocr(
    ppocr: &Path,
    ort: &OrtConfig,
    config: OcrConfig,
    recognizer: TrocrRecognizer,
) -> Result<Ocr, OcrError> {
    Ocr::with_recognizer(ppocr, ort, config, Box::new(recognizer))
}

/// The `ocr` runner: PP-OCR detection from `ppocr` (the folder of [`PPOCR_FILES`]), TrOCR from
/// `trocr` on `device` with `settings`, batched across images by `batch`. Returns the runner
/// and the count of crops through TrOCR's encoder.
pub fn runner(
    ppocr: &Path,
    ort: &OrtConfig,
    trocr: &Path,
    device: &Device,
    settings: TrocrSettings,
    batch: BatchConfig,
) -> Result<(Box<dyn ModelRunner>, Arc<AtomicU64>), OcrError> {
    let recognizer = TrocrRecognizer::load_with(trocr, device, settings).map_err(into_ocr_error)?;
    let encodes = recognizer.encodes();
    let ocr = ocr(ppocr, ort, imgd_ocr::runner_config(), recognizer)?;
    Ok((imgd_ocr::runner_with(ocr, batch), encodes))
}
