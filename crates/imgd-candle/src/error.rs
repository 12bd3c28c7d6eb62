//! The error every candle model crate returns.

use std::path::PathBuf;

use crate::processor::PreprocessError;

/// What can go wrong loading or running a candle model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
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
    /// A configuration is invalid or asks for something imgd does not implement.
    #[error("model configuration: {0}")]
    Config(String),
    /// The weights do not fit the configuration (a missing tensor, a wrong shape), or a
    /// forward pass failed.
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// The tokenizer could not be loaded or failed on a text.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An image could not be preprocessed.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// An input does not have the shape the model takes.
    #[error("bad input: {0}")]
    Input(String),
}
