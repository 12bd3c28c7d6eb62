//! CLIP image and text encoders and the LAION aesthetic predictor for imgd, in candle.
//!
//! - [`clip`]: the CLIP towers ([`clip::ClipImageEncoder`], [`clip::ClipTextEncoder`],
//!   [`clip::ClipModel`]) loaded from an HF model folder; vectors are L2-normalised.
//! - [`aesthetic`]: the improved-aesthetic-predictor MLP over a CLIP ViT-L/14 embedding.
//! - [`preprocess`]: `CLIPImageProcessor`'s resize (PIL bicubic, bit-exact), crop and
//!   normalisation.
//! - [`config`]: architectures with named presets ([`config::PRESETS`], ViT-B/32 by default),
//!   HF `config.json` parsing, and the model id and version stored on each result.
//! - [`runner`]: the `embedding` and `aesthetic` [`imgd_infer::runner::ModelRunner`]s.
//!
//! The device, the image-processor reader, the model ids and the error type are
//! [`imgd_candle`]'s, shared with the other candle models.
//!
//! Parity with the reference implementation (HF `transformers`) is tested against tiny
//! random-weight models that `scripts/make-fixtures.py` builds into `fixtures/clip/`.

#![deny(missing_docs)]

pub mod aesthetic;
pub mod clip;
pub mod config;
mod error;
pub mod preprocess;
pub mod runner;

pub use candle_core::{DType, Device};
pub use error::ClipError;
pub use runner::{aesthetic_runner, embedding_runner};
