//! TrOCR for imgd's OCR module: PP-OCR finds the text lines, TrOCR reads them
//! (`[models] ocr_recognizer = "trocr"`), in candle.
//!
//! - [`model`]: [`TrocrRecognizer`], the encoder and decoder with the tokenizer and image
//!   processor loaded from an HF model folder, batched greedy decoding, the confidence of a
//!   line, and its `imgd_ocr::LineRecognizer` implementation.
//! - [`encoder`]: the ViT/DeiT image encoder (candle-transformers' ViT layers, the embeddings
//!   with DeiT's distillation token built here).
//! - [`decoder`]: the TrOCR decoder as HF defines it (candle-transformers' `trocr` drops the
//!   projection biases and `layernorm_embedding`), batched over crops with key/value caches,
//!   finished rows leaving the batch.
//! - [`preprocess`]: `ViTImageProcessor`'s resize (PIL bilinear or bicubic, bit-exact) and
//!   normalisation.
//! - [`tokenizer`]: `tokenizer.json`, or the `XLMRobertaTokenizer` of a
//!   `sentencepiece.bpe.model` (what trocr-small ships).
//! - [`config`]: HF `config.json` parsing and the decoding settings.
//! - [`runner`](mod@runner): the `ocr` runner with TrOCR as recogniser.
//! - [`loader`]: the `ocr` module's settings, availability and loading, with either
//!   recogniser.
//!
//! **Batching never changes a reading**: every crop is resized to the encoder's fixed square
//! input, so all crops share one encoder pass without padding; decoding starts every row from
//! the same start token, each row attends only to its own tokens and its own crop's encoder
//! states, and a row that ends leaves the batch. Chunking ([`TrocrSettings::batch`]) only bounds
//! memory. The tests check N crops together against N single runs.
//!
//! Run its tests against the tiny random-weight model that `scripts/make-fixtures.py trocr`
//! builds into `fixtures/trocr/`: `cargo test -p imgd-trocr`.

#![deny(missing_docs)]

pub mod config;
pub mod decoder;
pub mod encoder;
mod error;
pub mod loader;
pub mod model;
pub mod preprocess;
pub mod runner;
pub mod tokenizer;

pub use candle_core::Device;
pub use config::TrocrSettings;
pub use error::TrocrError;
pub use loader::OCR_LOADER;
pub use model::{Reading, TrocrRecognizer, is_installed};
pub use runner::runner;

pub(crate) use imgd_candle::model_info::require;
