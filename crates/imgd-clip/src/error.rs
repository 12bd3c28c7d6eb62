//! The crate's error type: the candle runtime's.

/// What can go wrong loading or running a model of this crate.
pub type ClipError = imgd_candle::ModelError;
