//! The caption module's models for imgd: BLIP or BLIP-2 captions and answers to configured
//! questions, in candle, with the image encoded once.
//!
//! - [`blip`]: [`blip::BlipCaptioner`], `candle-transformers`' `BlipForConditionalGeneration`
//!   vision tower (ViT) and BLIP's BERT text decoder with cross-attention, loaded from an HF
//!   model folder, with greedy decoding that matches HF `generate`.
//! - [`blip2`](mod@blip2): [`blip2::Blip2Captioner`], BLIP-2 ([`imgd_blip2`]) with real
//!   answers to questions, each image's query embeddings cached for its caption and every
//!   question.
//! - [`decoder`]: the BLIP text decoder, batched over images, with the image's
//!   cross-attention keys and values computed once per batch.
//! - [`preprocess`]: `BlipImageProcessor`'s resize (PIL bicubic, bit-exact) and
//!   normalisation.
//! - [`config`]: architectures with named presets ([`config::PRESETS`]), HF `config.json`
//!   parsing, the questions ([`config::Question`]) and decoding settings, and the model id and
//!   version stored on each result.
//! - [`runner`](mod@runner): the `caption` [`imgd_infer::runner::ModelRunner`] and its
//!   vision-encode counter.
//!
//! BLIP here is the captioning model (`Salesforce/blip-image-captioning-base`, BSD-3-Clause;
//! paper <https://arxiv.org/abs/2201.12086>); it has no VQA head, so each question is a text
//! prefix ("the lighting is") that the decoder continues from the same image embeddings as
//! the caption. BLIP-2 (`Salesforce/blip2-opt-2.7b` or `Salesforce/blip2-flan-t5-xl`, MIT)
//! answers each question's `question` ("Question: How is the lighting? Answer:"). A row in `result_caption` holds the caption
//! and, in `data.answers`, each question's name and answer.
//!
//! Run it on the real model (files as `imgd models fetch blip-base-caption` lays them out):
//!
//! ```text
//! let (runner, encodes) = imgd_caption::runner(
//!     Path::new("~/.local/share/imgd/models/blip-base-caption"), &Device::Cpu, DType::F16,
//!     BatchConfig::DEFAULT, &Question::defaults())?;
//! ```
//!
//! and its tests, against the tiny random-weight models that `scripts/make-fixtures.py blip`
//! and `blip2` build into `fixtures/blip/` and `fixtures/blip2/`: `cargo test -p imgd-caption`.

#![deny(missing_docs)]

pub mod blip;
pub mod blip2;
pub mod config;
pub mod decoder;
mod error;
pub mod loader;
pub mod preprocess;
pub mod runner;

pub use candle_core::Device;
pub use config::{CaptionSettings, Question};
pub use error::CaptionError;
pub use loader::CAPTION_LOADER;
pub use runner::{Captioner, runner, runner_from};

use imgd_core::{Module, ModuleSpec, ResultKey, RunsOn, SearchText};

/// The `caption` module's declaration.
pub static CAPTION_SPEC: ModuleSpec = ModuleSpec {
    name: "caption",
    bit: 5,
    summary: "a caption and answers to the configured questions (BLIP or BLIP-2)",
    tier: Some(384),
    runs_on: RunsOn::InferenceThread,
    queued_by_default: true,
    result_table: "result_caption",
    result_key: ResultKey::Image,
    // Its table is in the store's first migrations.
    migrations: &[],
    search_text: &[SearchText {
        column: "caption",
        sql: "SELECT caption || ' ' || coalesce((SELECT group_concat(value, ' ')
                                 FROM json_each(data, '$.answers')), '')
              FROM result_caption WHERE image_id = ?1",
        postgres: Some(
            "SELECT caption || ' ' || coalesce((SELECT string_agg(value, ' ')
                                         FROM jsonb_each_text(data::jsonb -> 'answers')), '')
             FROM result_caption WHERE image_id = ?1",
        ),
        words: None,
    }],
    gate: None,
    store_hook: None,
};

/// The `caption` module.
pub const CAPTION: Module = Module::of(&CAPTION_SPEC);
