//! The crate's error type: the candle runtime's.

/// What can go wrong loading or running the caption model.
pub type CaptionError = imgd_candle::ModelError;
