//! The crate's error type.

use std::path::PathBuf;

use imgd_clip::ClipError;
use imgd_ocr::OcrError;

/// What can go wrong loading or running TrOCR.
#[derive(Debug, thiserror::Error)]
pub enum TrocrError {
    /// A file the model folder must hold is missing.
    #[error("model file {0} not found")]
    MissingFile(PathBuf),
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A configuration is invalid or asks for something this crate does not implement.
    #[error("model configuration: {0}")]
    Config(String),
    /// The weights do not fit the configuration (a missing tensor, a wrong shape), or a
    /// forward pass failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The tokenizer could not be loaded or failed on ids.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An input does not have the shape the model takes.
    #[error("bad input: {0}")]
    Input(String),
    /// The model id and version could not be resolved (the weights file is unreadable).
    #[error(transparent)]
    Info(#[from] ClipError),
    /// PP-OCR's detector could not be loaded or failed.
    #[error(transparent)]
    Ocr(#[from] OcrError),
}

impl From<TrocrError> for OcrError {
    fn from(error: TrocrError) -> Self {
        match error {
            TrocrError::Ocr(error) => error,
            other => OcrError::Model(format!("TrOCR: {other}")),
        }
    }
}
