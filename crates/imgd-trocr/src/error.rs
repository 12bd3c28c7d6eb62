//! The crate's error type: the candle runtime's.

use imgd_ocr::OcrError;

/// What can go wrong loading or running TrOCR.
pub type TrocrError = imgd_candle::ModelError;

/// A TrOCR error as the OCR module reports it.
pub(crate) fn into_ocr_error(error: TrocrError) -> OcrError {
    OcrError::Model(format!("TrOCR: {error}"))
}
