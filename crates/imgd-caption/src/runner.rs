//! The `caption` runner the inference thread drives.
//!
//! It takes the image's 384-px tier ([`crate::CAPTION`]'s), preprocesses it on submit (so a
//! bad image fails alone, before batching), and on each batch runs the vision tower once over
//! all images, then decodes the caption and every configured question from those cached
//! image embeddings. The count of images through the vision tower is shared with the caller,
//! so a test or a metric can check that it equals the number of images, whatever the number
//! of questions.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use candle_core::Device;
use image::RgbImage;
use imgd_core::{ResultRow, SqlValue};
use imgd_infer::batcher::{BatchConfig, BatchModel};
use imgd_infer::runner::{Batched, ImageInput, ModelRunner};

use crate::CaptionError;
use crate::blip::{BlipCaptioner, Description, Prompts};
use crate::config::{CaptionSettings, ModelInfo, Question};
use crate::preprocess::Preprocess;

/// The tier the runner reads: the caption module's long edge (384 px).
pub fn input_tier() -> u32 {
    crate::CAPTION.tier().unwrap_or(384)
}

/// The runner's input image: the 384-px tier, else the largest tier decoded.
fn pick_tier<'a>(image: &'a ImageInput<'_>) -> Result<&'a RgbImage, String> {
    image
        .tier_or_largest(input_tier())
        .map(|pixels| pixels.as_ref())
        .ok_or_else(|| {
            format!(
                "no decoded tier (the caption runner reads the {}-px tier)",
                input_tier()
            )
        })
}

fn prepare(preprocess: &Preprocess, image: &ImageInput<'_>) -> Result<Vec<f32>, String> {
    let pixels = pick_tier(image)?;
    preprocess.apply(pixels).map_err(|e| e.to_string())
}

/// BLIP with its prompts as a [`BatchModel`]: preprocessed images in, descriptions out.
pub struct CaptionModel {
    captioner: BlipCaptioner,
    prompts: Prompts,
    name: String,
}

impl CaptionModel {
    /// Wraps `captioner` with the prompts of `settings` (checked here); its model id is the
    /// batcher's name.
    pub fn new(captioner: BlipCaptioner, settings: &CaptionSettings) -> Result<Self, CaptionError> {
        let prompts = captioner.prompts(settings)?;
        let name = captioner.info().id.clone();
        Ok(CaptionModel {
            captioner,
            prompts,
            name,
        })
    }
}

impl BatchModel for CaptionModel {
    type Input = Vec<f32>;
    type Output = Description;
    type Error = CaptionError;

    fn name(&self) -> &str {
        &self.name
    }

    fn run_batch(&mut self, inputs: &[Vec<f32>]) -> Result<Vec<Description>, CaptionError> {
        self.captioner.describe_pixels(inputs, &self.prompts)
    }
}

/// The `result_caption` row of one description: the `caption` column, and the answers in
/// `data.answers` as an object from question name to answer (what the search index reads).
pub fn caption_row(info: &ModelInfo, description: &Description) -> ResultRow {
    let answers: serde_json::Map<String, serde_json::Value> = description
        .answers
        .iter()
        .map(|(name, answer)| (name.clone(), serde_json::Value::from(answer.as_str())))
        .collect();
    ResultRow {
        module: crate::CAPTION,
        model_id: Some(info.id.clone()),
        model_version: Some(info.version.clone()),
        columns: vec![("caption", SqlValue::Text(description.caption.clone()))],
        data: serde_json::json!({ "answers": answers }),
        vectors: Vec::new(),
    }
}

/// The `caption` runner for the BLIP model in `dir` (HF layout: `config.json`,
/// `model.safetensors`, `tokenizer.json`; see [`crate::blip`]) on `device`, asking
/// `questions` with the default caption settings. Returns the runner and the count of images
/// through the vision tower.
pub fn runner(
    dir: &Path,
    device: &Device,
    batch: BatchConfig,
    questions: &[Question],
) -> Result<(Box<dyn ModelRunner>, Arc<AtomicU64>), CaptionError> {
    let captioner = BlipCaptioner::load(dir, device)?;
    runner_from(
        captioner,
        batch,
        &CaptionSettings::with_questions(questions),
    )
}

/// The `caption` runner around an already loaded model, with full `settings`.
pub fn runner_from(
    captioner: BlipCaptioner,
    batch: BatchConfig,
    settings: &CaptionSettings,
) -> Result<(Box<dyn ModelRunner>, Arc<AtomicU64>), CaptionError> {
    let info = captioner.info().clone();
    let preprocess = captioner.preprocessor().clone();
    let counter = captioner.vision_encodes();
    let model = CaptionModel::new(captioner, settings)?;
    let runner = Batched::new(
        crate::CAPTION,
        model,
        batch,
        move |image| prepare(&preprocess, image),
        move |description: Description| caption_row(&info, &description),
    );
    Ok((Box::new(runner), counter))
}
