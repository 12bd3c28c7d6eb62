//! The analysis modules that run on the CPU, on the pipeline's decode threads.
//!
//! - [`metadata`]: camera, lens, exposure, capture time, GPS, orientation and dimensions from
//!   the EXIF block; headers only, no pixel decode.
//! - [`technical`]: sharpness, exposure and clipping, noise, dominant colours and quality flags
//!   from the decoded 1024-px tier.
//!
//! Both are pure functions without I/O: they take bytes or pixels and return a value whose
//! `to_row()` is the [`imgd_core::ResultRow`] for the module's result table. Each declares its
//! module ([`METADATA`], [`TECHNICAL`]) and is served to the decode threads as a
//! [`CpuAnalysis`] ([`Metadata`], [`Technical`]).

#![deny(missing_docs)]

pub mod metadata;
pub mod technical;

use imgd_core::{Module, ModuleSpec, ResultKey, ResultRow, RunsOn, SearchText};
use imgd_infer::runner::{CpuAnalysis, CpuInput};

/// The `metadata` module's declaration.
pub static METADATA_SPEC: ModuleSpec = ModuleSpec {
    name: "metadata",
    bit: 0,
    summary: "EXIF: camera, lens, exposure, dates, GPS, orientation (headers only)",
    tier: None,
    runs_on: RunsOn::DecodeThreads,
    queued_by_default: true,
    result_table: "result_metadata",
    result_key: ResultKey::Image,
    // Its table is in the store's first migration.
    migrations: &[],
    search_text: &[
        SearchText {
            column: "camera",
            sql: "SELECT trim(coalesce(make, '') || ' ' || coalesce(model, '') || ' ' ||
                              coalesce(lens, '') || ' ' || coalesce(software, ''))
                  FROM result_metadata WHERE image_id = ?1",
            postgres: None,
            words: None,
        },
        SearchText {
            column: "taken",
            sql: "SELECT taken_at FROM result_metadata WHERE image_id = ?1",
            postgres: None,
            words: Some(metadata::date_words),
        },
    ],
    gate: None,
    store_hook: None,
};

/// The `metadata` module.
pub const METADATA: Module = Module::of(&METADATA_SPEC);

/// The `technical` module's declaration.
pub static TECHNICAL_SPEC: ModuleSpec = ModuleSpec {
    name: "technical",
    bit: 1,
    summary: "sharpness, exposure, noise, dominant colours and quality flags",
    tier: Some(1024),
    runs_on: RunsOn::DecodeThreads,
    queued_by_default: true,
    result_table: "result_technical",
    result_key: ResultKey::Image,
    migrations: &[],
    search_text: &[],
    gate: None,
    store_hook: None,
};

/// The `technical` module.
pub const TECHNICAL: Module = Module::of(&TECHNICAL_SPEC);

/// The `metadata` module on the decode threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Metadata;

impl CpuAnalysis for Metadata {
    fn module(&self) -> Module {
        METADATA
    }

    fn analyse(&self, input: &CpuInput<'_>) -> Result<ResultRow, String> {
        Ok(metadata::extract(input.exif, input.width, input.height).to_row())
    }
}

/// The `technical` module on the decode threads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Technical;

impl CpuAnalysis for Technical {
    fn module(&self) -> Module {
        TECHNICAL
    }

    fn analyse(&self, input: &CpuInput<'_>) -> Result<ResultRow, String> {
        let tier = input
            .tier
            .ok_or_else(|| "no decoded tier for technical".to_string())?;
        Ok(technical::analyze(tier).to_row())
    }
}
