//! BLIP-2 in candle: captions and answers to questions, each image encoded once.
//!
//! - Paper: Li et al., *BLIP-2: Bootstrapping Language-Image Pre-training with Frozen Image
//!   Encoders and Large Language Models* (2023), <https://arxiv.org/abs/2301.12597>.
//! - Reference implementation matched here: Hugging Face `transformers`'
//!   `Blip2ForConditionalGeneration` (vision tower, Q-Former, language projection, and OPT
//!   or Flan-T5) and its `generate`, greedy and beam search; the parity fixtures under
//!   `fixtures/blip2` are tiny random-weight checkpoints made with it (`scripts/make-fixtures.py
//!   blip2`) and their outputs.
//! - Weights: `Salesforce/blip2-opt-2.7b`, `Salesforce/blip2-flan-t5-xl` and their kind, a
//!   folder with `config.json` and `model.safetensors` or sharded
//!   `model-0000N-of-0000M.safetensors` with their index, memory-mapped.
//!
//! Per image, the vision tower and the Q-Former run once ([`model::Blip2::encode`]) and the
//! projected query embeddings are kept for all its prompts ([`model::Blip2::image_prefix`]).
//! With OPT the image comes first, so its key/value cache is computed once and every prompt
//! (the caption's BOS, or "Question: … Answer:", [`text`]) continues from it; Flan-T5's encoder
//! reads image and prompt together both ways, so each prompt is encoded with the kept
//! embeddings and the decoder writes the answer. All prompts of all images decode as one
//! batch, and rows leave it at their end token ([`model::Blip2::generate`],
//! [`generation::decode`]).

pub mod config;
pub mod generation;
mod layers;
pub mod model;
pub mod opt;
pub mod qformer;
pub mod t5;
pub mod text;
pub mod vision;

pub use imgd_candle::ModelError;

/// What the crate's functions return.
pub type Result<T> = std::result::Result<T, ModelError>;
