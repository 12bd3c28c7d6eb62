//! Shared vocabulary of imgd: the analysis modules, their names, the resolution tier each one
//! needs, and whether it needs a model. Every other crate speaks in these terms. Also how a
//! file path is stored as text ([`stored_path`]).

#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub mod stored_path;

/// One analysis module. The discriminant is the module's bit in `images.modules_mask` and must
/// never change for an existing module: append new modules at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Module {
    /// EXIF: camera, lens, exposure, dates, GPS, orientation. Headers only, no pixel decode.
    Metadata = 0,
    /// Sharpness, exposure, noise, dominant colours and flags, computed on the CPU.
    Technical = 1,
    /// CLIP image embedding.
    Embedding = 2,
    /// Aesthetic score from a small MLP over the CLIP embedding.
    Aesthetic = 3,
    /// Open-vocabulary object detection (GroundingDINO).
    Objects = 4,
    /// Caption and answers to configured questions (BLIP).
    Caption = 5,
    /// Text lines with boxes (PP-OCR).
    Ocr = 6,
    /// Face detection, alignment, embedding and identities.
    Faces = 7,
    /// Answers from an OpenAI-compatible vision API.
    Cloud = 8,
}

impl Module {
    /// Every module, in bit order.
    pub const ALL: [Module; 9] = [
        Module::Metadata,
        Module::Technical,
        Module::Embedding,
        Module::Aesthetic,
        Module::Objects,
        Module::Caption,
        Module::Ocr,
        Module::Faces,
        Module::Cloud,
    ];

    /// The modules `imgd enqueue` queues when `--modules` is not given: every local module.
    /// `cloud` costs money per call, so it is only queued when asked for.
    pub const DEFAULT: [Module; 8] = [
        Module::Metadata,
        Module::Technical,
        Module::Embedding,
        Module::Aesthetic,
        Module::Objects,
        Module::Caption,
        Module::Ocr,
        Module::Faces,
    ];

    /// The module's name as used on the command line, in the database and in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Module::Metadata => "metadata",
            Module::Technical => "technical",
            Module::Embedding => "embedding",
            Module::Aesthetic => "aesthetic",
            Module::Objects => "objects",
            Module::Caption => "caption",
            Module::Ocr => "ocr",
            Module::Faces => "faces",
            Module::Cloud => "cloud",
        }
    }

    /// This module's bit in `images.modules_mask`.
    pub const fn bit(self) -> i64 {
        1 << (self as u8)
    }

    /// The long edge, in pixels, of the image this module wants; `None` when it reads headers
    /// only (metadata) or reuses another module's output (aesthetic reuses the embedding).
    pub const fn tier(self) -> Option<u32> {
        match self {
            Module::Metadata => None,
            Module::Technical => Some(1024),
            // CLIP resizes the short side to 224 and centre-crops; a 448 long edge keeps the
            // short side >= 224 for aspect ratios up to 2:1. The aesthetic MLP reads its own
            // CLIP (ViT-L/14) vector, from the same tier.
            Module::Embedding | Module::Aesthetic => Some(448),
            Module::Objects => Some(800),
            Module::Caption => Some(384),
            Module::Ocr => Some(960),
            Module::Faces => Some(1280),
            Module::Cloud => Some(1568),
        }
    }

    /// The name of the table holding this module's results.
    pub const fn result_table(self) -> &'static str {
        match self {
            Module::Metadata => "result_metadata",
            Module::Technical => "result_technical",
            Module::Embedding => "result_embedding",
            Module::Aesthetic => "result_aesthetic",
            Module::Objects => "result_objects",
            Module::Caption => "result_caption",
            Module::Ocr => "result_ocr",
            Module::Faces => "result_faces",
            Module::Cloud => "result_cloud",
        }
    }

    /// Whether the module runs a model on the inference thread (as opposed to the CPU modules
    /// that run on the decode threads).
    pub const fn needs_model(self) -> bool {
        !matches!(self, Module::Metadata | Module::Technical)
    }

    /// The modules whose bits are set in `mask`.
    pub fn from_mask(mask: i64) -> impl Iterator<Item = Module> {
        Module::ALL.into_iter().filter(move |m| mask & m.bit() != 0)
    }

    /// The mask with the bits of `modules` set.
    pub fn mask_of(modules: &[Module]) -> i64 {
        modules.iter().fold(0, |mask, m| mask | m.bit())
    }
}

impl fmt::Display for Module {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A module name that is not one of [`Module::ALL`].
#[derive(Debug, thiserror::Error)]
#[error(
    "unknown module `{0}` (known: metadata, technical, embedding, aesthetic, objects, caption, ocr, faces, cloud)"
)]
pub struct UnknownModule(pub String);

impl FromStr for Module {
    type Err = UnknownModule;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        Module::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| UnknownModule(s.to_string()))
    }
}

/// Parses a comma-separated module list such as `metadata,technical`; `all` means every module.
pub fn parse_module_list(list: &str) -> Result<Vec<Module>, UnknownModule> {
    let mut modules = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part.eq_ignore_ascii_case("all") {
            modules.extend(Module::ALL);
        } else {
            modules.push(part.parse()?);
        }
    }
    modules.sort();
    modules.dedup();
    Ok(modules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bits_are_distinct() {
        let mut seen = 0;
        for m in Module::ALL {
            assert_eq!(m.name().parse::<Module>().unwrap(), m);
            assert_eq!(seen & m.bit(), 0);
            seen |= m.bit();
        }
        assert_eq!(Module::from_mask(seen).count(), Module::ALL.len());
    }

    #[test]
    fn module_lists_parse_dedup_and_reject_unknown_names() {
        assert_eq!(
            parse_module_list("technical, metadata,technical").unwrap(),
            vec![Module::Metadata, Module::Technical]
        );
        assert_eq!(parse_module_list("all").unwrap().len(), Module::ALL.len());
        let err = parse_module_list("metadata,colour").unwrap_err();
        assert!(err.to_string().contains("unknown module `colour`"));
    }
}

/// A value for one typed column of a result table.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL NULL: the value is unknown or absent.
    Null,
    /// An integer (also booleans, as 0/1).
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Raw bytes (e.g. an embedding vector).
    Blob(Vec<u8>),
}

impl From<Option<f64>> for SqlValue {
    fn from(v: Option<f64>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Real)
    }
}

impl From<Option<i64>> for SqlValue {
    fn from(v: Option<i64>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Integer)
    }
}

impl From<Option<String>> for SqlValue {
    fn from(v: Option<String>) -> Self {
        v.map_or(SqlValue::Null, SqlValue::Text)
    }
}

impl From<bool> for SqlValue {
    fn from(v: bool) -> Self {
        SqlValue::Integer(i64::from(v))
    }
}

/// The result of one module for one image, ready to be upserted into `result_<module>`:
/// typed columns for what people filter and sort on, JSON for the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct ResultRow {
    /// The module that produced the row; selects the table.
    pub module: Module,
    /// The model that produced it (`None` for modules without a model).
    pub model_id: Option<String>,
    /// The model's version.
    pub model_version: Option<String>,
    /// Typed columns by name; the names must be columns of the module's table.
    pub columns: Vec<(&'static str, SqlValue)>,
    /// Everything else, stored in the `data` JSON column.
    pub data: serde_json::Value,
}
