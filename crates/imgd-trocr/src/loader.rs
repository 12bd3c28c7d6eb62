//! The `ocr` module's settings, availability and loading ([`OcrLoader`]): here rather than in
//! `imgd-ocr` because one of its two recognisers is TrOCR.
//!
//! - `[models] ocr`: the PP-OCR folder (default the registry's `rapidocr` folder);
//! - `[models] ocr_recognizer`: `"ppocr"` (PP-OCR's CTC recogniser, the default) or `"trocr"`
//!   (TrOCR after PP-OCR's detector and direction classifier);
//! - `[models] trocr`: the TrOCR model (default `trocr-small-printed`), a folder under the
//!   model folder or an absolute path;
//! - `[models] trocr_max_tokens`: the most tokens TrOCR generates per line.

use std::path::PathBuf;

use imgd_core::Module;
use imgd_infer::batcher::BatchConfig;
use imgd_infer::loader::{Availability, LoadContext, LoadedModule, ModuleLoader, all_files};
use imgd_ocr::OCR;
use serde::Deserialize;

use crate::TrocrSettings;
use crate::runner::PPOCR_FILES;

/// `[models] trocr`'s default.
pub const DEFAULT_TROCR: &str = "trocr-small-printed";

/// `[models] ocr_recognizer`: what reads the text lines PP-OCR's detector finds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OcrRecognizer {
    /// PP-OCR's CTC recogniser (ONNX; the default).
    #[default]
    Ppocr,
    /// TrOCR (candle; `[models] trocr`), after PP-OCR's detector and direction classifier.
    Trocr,
}

/// The OCR module's settings, read from `[models]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OcrSettings {
    /// The PP-OCR folder.
    pub ppocr: PathBuf,
    /// Whether `ppocr` was set in the file (then it must exist).
    pub ppocr_set: bool,
    /// The recogniser.
    pub recognizer: OcrRecognizer,
    /// The TrOCR folder.
    pub trocr: PathBuf,
    /// TrOCR's decoding settings.
    pub trocr_settings: TrocrSettings,
}

impl OcrSettings {
    /// Reads them from the context's `[models]` keys.
    pub fn read(context: &LoadContext<'_>) -> Result<Self, String> {
        let ppocr: Option<PathBuf> = context.model_key("ocr", None)?;
        let max_new_tokens =
            context.model_key("trocr_max_tokens", TrocrSettings::default().max_new_tokens)?;
        Ok(OcrSettings {
            ppocr_set: ppocr.is_some(),
            ppocr: ppocr.unwrap_or_else(imgd_ocr::default_models_dir),
            recognizer: context.model_key("ocr_recognizer", OcrRecognizer::Ppocr)?,
            trocr: context.model_path("trocr", DEFAULT_TROCR)?,
            trocr_settings: TrocrSettings {
                max_new_tokens,
                ..TrocrSettings::default()
            },
        })
    }
}

/// Why the OCR module cannot run with `settings`, if it cannot; else what will load.
fn availability_of(settings: &OcrSettings) -> Availability {
    let dir = &settings.ppocr;
    if settings.recognizer == OcrRecognizer::Ppocr {
        return if dir.join(imgd_ocr::REC_FILE).is_file() {
            Availability::Installed(format!("PP-OCR from {}", dir.display()))
        } else {
            Availability::Waiting(format!(
                "waiting: no PP-OCR models in {} (scripts/fetch-registry-models.sh)",
                dir.display()
            ))
        };
    }
    let trocr = &settings.trocr;
    if !all_files(dir, &PPOCR_FILES) {
        Availability::Waiting(format!(
            "waiting: no PP-OCR detector in {} for TrOCR to read its lines \
             (scripts/fetch-registry-models.sh)",
            dir.display()
        ))
    } else if crate::is_installed(trocr) {
        Availability::Installed(format!(
            "PP-OCR detection from {}, TrOCR from {}",
            dir.display(),
            trocr.display()
        ))
    } else {
        Availability::Waiting(format!(
            "waiting: no TrOCR model in {} (imgd models fetch trocr-small-printed)",
            trocr.display()
        ))
    }
}

/// The `ocr` module's loader.
pub struct OcrLoader;

impl ModuleLoader for OcrLoader {
    fn module(&self) -> Module {
        OCR
    }

    fn model_keys(&self) -> &'static [&'static str] {
        &["ocr", "ocr_recognizer", "trocr", "trocr_max_tokens"]
    }

    fn check(&self, context: &LoadContext<'_>) -> Result<(), String> {
        let settings = OcrSettings::read(context)?;
        if settings.ppocr_set && !settings.ppocr.exists() {
            return Err(format!(
                "models.ocr: {} does not exist",
                settings.ppocr.display()
            ));
        }
        context.check_model_path("trocr")?;
        let tokens = settings.trocr_settings.max_new_tokens;
        if !(1..=512).contains(&tokens) {
            return Err(format!(
                "models.trocr_max_tokens must be between 1 and 512, not {tokens}"
            ));
        }
        Ok(())
    }

    fn availability(&self, context: &LoadContext<'_>) -> Availability {
        match OcrSettings::read(context) {
            Ok(settings) => availability_of(&settings),
            Err(err) => Availability::Waiting(format!("waiting: {err}")),
        }
    }

    fn load(&self, context: &LoadContext<'_>, batch: BatchConfig) -> Result<LoadedModule, String> {
        let settings = OcrSettings::read(context)?;
        let runner = match settings.recognizer {
            OcrRecognizer::Ppocr => imgd_ocr::runner(&settings.ppocr, &context.ort, batch),
            OcrRecognizer::Trocr => crate::runner(
                &settings.ppocr,
                &context.ort,
                &settings.trocr,
                &imgd_candle::shared_device(context.cuda),
                settings.trocr_settings,
                batch,
            )
            .map(|(runner, _encodes)| runner),
        };
        runner.map(LoadedModule::new).map_err(|e| e.to_string())
    }
}

/// The `ocr` module's loader, for the registry.
pub static OCR_LOADER: OcrLoader = OcrLoader;
