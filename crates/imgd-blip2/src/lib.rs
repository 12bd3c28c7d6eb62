//! BLIP-2 in candle: captions and answers to questions, each image encoded once.
//!
//! - Paper: Li et al., *BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image
//!   Encoders and Large Language Models* (2023), <https://arxiv.org/abs/2301.12597>.
//! - Reference implementation matched here: Hugging Face `transformers`'
//!   `Blip2ForConditionalGeneration` (vision tower, Q-Former, language projection, OPT) and
//!   its greedy `generate`; the parity fixtures under `fixtures/blip2` are a tiny random-weight
//!   checkpoint made with it (`scripts/make-fixtures.py blip2`) and its outputs.
//! - Weights: `Salesforce/blip2-opt-2.7b` and its kind, a folder with `config.json` and
//!   `model.safetensors` or sharded `model-0000N-of-0000M.safetensors` with their index,
//!   memory-mapped.
//!
//! Per image, the vision tower and the Q-Former run once ([`model::Blip2::encode`]); the
//! projected query embeddings go through the language model once
//! ([`model::Blip2::image_prefix`], its key/value cache), and every prompt (the caption's
//! BOS, or "Question: … Answer:", [`text`]) continues from that cache. All prompts of all
//! images decode as one batch, and rows leave it at their end token
//! ([`model::Blip2::generate`]).

pub mod config;
pub mod generation;
pub mod model;
pub mod opt;
pub mod qformer;
pub mod text;
pub mod vision;

pub use imgd_candle::ModelError;

/// What the crate's functions return.
pub type Result<T> = std::result::Result<T, ModelError>;
