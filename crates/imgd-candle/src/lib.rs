//! The runtime imgd's candle models share, so that a new vision model starts from its
//! architecture and not from plumbing:
//!
//! - [`device`](mod@device): CPU, or CUDA behind the `cuda` feature, probed without panicking;
//! - [`processor`]: Hugging Face image processors as their PIL backends run them, with the one
//!   reader of `preprocessor_config.json`, and the pixel batch a vision tower takes;
//! - [`model_info`]: the model id and version stored with every result;
//! - [`ModelError`]: the error every candle model crate returns.

#![deny(missing_docs)]

pub mod device;
mod error;
pub mod model_info;
pub mod processor;
pub mod sentencepiece;

pub use candle_core::{DType, Device};
pub use device::{DeviceChoice, device, select_device, shared_device};
pub use error::ModelError;
pub use model_info::ModelInfo;
