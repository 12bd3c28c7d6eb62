//! CLIP image and text encoders and the LAION aesthetic predictor for imgd, in candle; CLIP's
//! image tower also through ONNX Runtime, which the CPU runs faster ([`onnx`]).
//!
//! - [`clip`]: the CLIP towers ([`clip::ClipImageEncoder`], [`clip::ClipTextEncoder`],
//!   [`clip::ClipModel`]) loaded from an HF model folder; vectors are L2-normalised.
//! - [`onnx`]: CLIP's image tower through ONNX Runtime, which the `embedding` module runs on
//!   the CPU when the model folder holds an ONNX export of it.
//! - [`aesthetic`]: the improved-aesthetic-predictor MLP over a CLIP ViT-L/14 embedding.
//! - [`preprocess`]: `CLIPImageProcessor`'s resize (PIL bicubic, bit-exact), crop and
//!   normalisation.
//! - [`config`]: architectures with named presets ([`config::PRESETS`], ViT-B/32 by default),
//!   HF `config.json` parsing, and the model id and version stored on each result.
//! - [`runner`]: the `embedding` and `aesthetic` [`imgd_infer::runner::ModelRunner`]s.
//! - [`loader`]: their settings, availability and loading.
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
pub mod loader;
pub mod onnx;
pub mod preprocess;
pub mod runner;
pub mod siglip;
pub mod vision_tower;

pub use candle_core::{DType, Device};
pub use error::ClipError;
pub use loader::{AESTHETIC_LOADER, EMBEDDING_LOADER};
pub use runner::{aesthetic_runner, embedding_runner};

use imgd_core::{Module, ModuleSpec, ResultKey, RunsOn};

/// The `embedding` module's declaration: a CLIP image vector per image and model.
pub static EMBEDDING_SPEC: ModuleSpec = ModuleSpec {
    name: "embedding",
    bit: 2,
    summary: "CLIP image embedding, for semantic search and near-duplicates",
    // CLIP resizes the short side to 224 and centre-crops; a 448 long edge keeps the short
    // side >= 224 for aspect ratios up to 2:1.
    tier: Some(448),
    runs_on: RunsOn::InferenceThread,
    queued_by_default: true,
    result_table: "result_embedding",
    result_key: ResultKey::ImageAndModel,
    // Its table is in the store's first migrations.
    migrations: &[],
    search_text: &[],
    gate: None,
    store_hook: None,
};

/// The `embedding` module.
pub const EMBEDDING: Module = Module::of(&EMBEDDING_SPEC);

/// The `aesthetic` module's declaration: the LAION predictor over a CLIP ViT-L/14 vector.
pub static AESTHETIC_SPEC: ModuleSpec = ModuleSpec {
    name: "aesthetic",
    bit: 3,
    summary: "aesthetic score (LAION predictor over CLIP ViT-L/14)",
    // Its own CLIP vector, from the embedding's tier.
    tier: Some(448),
    runs_on: RunsOn::InferenceThread,
    queued_by_default: true,
    result_table: "result_aesthetic",
    result_key: ResultKey::Image,
    migrations: &[],
    search_text: &[],
    gate: None,
    store_hook: None,
};

/// The `aesthetic` module.
pub const AESTHETIC: Module = Module::of(&AESTHETIC_SPEC);
