//! The `caption` runner the inference thread drives, around BLIP or BLIP-2 ([`Captioner`]).
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

use candle_core::{DType, Device};
use image::RgbImage;
use imgd_core::{ResultRow, SqlValue};
use imgd_infer::batcher::{BatchConfig, BatchModel};
use imgd_infer::runner::{Batched, ImageInput, ModelRunner};

use crate::CaptionError;
use crate::blip::{BlipCaptioner, Description, Prompts};
use crate::blip2::{Blip2Captioner, is_blip2};
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

/// A caption model the runner drives: BLIP ([`BlipCaptioner`]) or BLIP-2
/// ([`Blip2Captioner`]).
pub trait Captioner: Send + 'static {
    /// The settings' prompts, tokenized once.
    type Prompts: Send + 'static;

    /// The model's id and version.
    fn info(&self) -> &ModelInfo;
    /// The image processor.
    fn preprocessor(&self) -> &Preprocess;
    /// The count of images through the vision tower, shared.
    fn vision_encodes(&self) -> Arc<AtomicU64>;
    /// The prompts of `settings` (checked).
    fn prompts(&self, settings: &CaptionSettings) -> Result<Self::Prompts, CaptionError>;
    /// Describes a batch of preprocessed images, each encoded once.
    fn describe_pixels(
        &self,
        pixels: &[Vec<f32>],
        prompts: &Self::Prompts,
    ) -> Result<Vec<Description>, CaptionError>;

    /// Describes decoded images as one batch, preprocessing each first.
    fn describe_images(
        &self,
        images: &[&RgbImage],
        prompts: &Self::Prompts,
    ) -> Result<Vec<Description>, CaptionError> {
        let pixels = images
            .iter()
            .map(|image| Ok(self.preprocessor().apply(image)?))
            .collect::<Result<Vec<_>, CaptionError>>()?;
        self.describe_pixels(&pixels, prompts)
    }
}

impl Captioner for BlipCaptioner {
    type Prompts = Prompts;

    fn info(&self) -> &ModelInfo {
        BlipCaptioner::info(self)
    }
    fn preprocessor(&self) -> &Preprocess {
        BlipCaptioner::preprocessor(self)
    }
    fn vision_encodes(&self) -> Arc<AtomicU64> {
        BlipCaptioner::vision_encodes(self)
    }
    fn prompts(&self, settings: &CaptionSettings) -> Result<Prompts, CaptionError> {
        BlipCaptioner::prompts(self, settings)
    }
    fn describe_pixels(
        &self,
        pixels: &[Vec<f32>],
        prompts: &Prompts,
    ) -> Result<Vec<Description>, CaptionError> {
        BlipCaptioner::describe_pixels(self, pixels, prompts)
    }
}

/// A captioner with its prompts as a [`BatchModel`]: preprocessed images in, descriptions
/// out.
pub struct CaptionModel<C: Captioner> {
    captioner: C,
    prompts: C::Prompts,
    name: String,
}

impl<C: Captioner> CaptionModel<C> {
    /// Wraps `captioner` with the prompts of `settings` (checked here); its model id is the
    /// batcher's name.
    pub fn new(captioner: C, settings: &CaptionSettings) -> Result<Self, CaptionError> {
        let prompts = captioner.prompts(settings)?;
        let name = captioner.info().id.clone();
        Ok(CaptionModel {
            captioner,
            prompts,
            name,
        })
    }
}

impl<C: Captioner> BatchModel for CaptionModel<C> {
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

/// The `caption` runner for the model in `dir` (HF layout: `config.json`, safetensors,
/// `tokenizer.json`; BLIP, see [`crate::blip`], or BLIP-2, see [`crate::blip2`]) on `device`,
/// asking `questions` with the default caption settings. BLIP-2 runs in `gpu_dtype` on a GPU
/// (its Q-Former in f32) and in f32 on the CPU. Returns the runner and the count of images
/// through the vision tower.
pub fn runner(
    dir: &Path,
    device: &Device,
    gpu_dtype: DType,
    batch: BatchConfig,
    questions: &[Question],
) -> Result<(Box<dyn ModelRunner>, Arc<AtomicU64>), CaptionError> {
    let settings = CaptionSettings::with_questions(questions);
    if is_blip2(dir) {
        let dtype = if device.is_cuda() {
            gpu_dtype
        } else {
            DType::F32
        };
        runner_from(Blip2Captioner::load(dir, device, dtype)?, batch, &settings)
    } else {
        runner_from(BlipCaptioner::load(dir, device)?, batch, &settings)
    }
}

/// The `caption` runner around an already loaded model, with full `settings`.
pub fn runner_from<C: Captioner>(
    captioner: C,
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
