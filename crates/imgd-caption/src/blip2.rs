//! BLIP-2 as the caption module's model ([`imgd_blip2`], with OPT or Flan-T5): a caption and
//! real answers to the configured questions, each image encoded once.
//!
//! Per batch of images, the vision tower and the Q-Former run once over all of them, and the
//! language model keeps each image's query embeddings ([`Blip2::image_prefix`]: OPT reads them
//! once into its key/value cache). The captions of all images then decode as one batch from
//! that, and every question of every image as another ("Question: How is the lighting?
//! Answer:", or a question's `prefix` continued when it sets no `question`); rows leave a
//! batch at their end token.
//!
//! Decoding follows the folder's `generation_config.json` where it sets `num_beams`,
//! `length_penalty`, `repetition_penalty`, `min_new_tokens` or `min_length`; the token limits
//! are the caption settings'. A folder is BLIP-2 when its `config.json` says `"model_type":
//! "blip-2"` ([`is_blip2`]).
//!
//! ```text
//! let captioner = Blip2Captioner::load(Path::new("models/blip2-opt-2.7b"), &Device::Cpu, DType::F32)?;
//! let prompts = captioner.prompts(&CaptionSettings::default())?;
//! let descriptions = captioner.describe_images(&[&photo], &prompts)?;
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use image::RgbImage;
use imgd_blip2::generation::Generation;
use imgd_blip2::model::{Blip2, Decoded, weight_files};
use imgd_blip2::text::{TextCodec, question_prompt};
use serde::Deserialize;

use crate::CaptionError;
use crate::blip::Description;
use crate::config::{CaptionSettings, ModelInfo};
use crate::preprocess::Preprocess;
use crate::runner::Captioner;

/// Whether the model folder `dir` holds a BLIP-2 checkpoint (`config.json`'s `model_type` is
/// `blip-2`).
pub fn is_blip2(dir: &Path) -> bool {
    #[derive(Deserialize)]
    struct ModelType {
        model_type: Option<String>,
    }
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<ModelType>(&text).ok())
        .and_then(|config| config.model_type)
        .is_some_and(|kind| kind == "blip-2")
}

/// The decoding keys of a checkpoint's `generation_config.json` that BLIP-2 reads.
#[derive(Debug, Default, Deserialize)]
struct GenerationConfig {
    num_beams: Option<usize>,
    length_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    min_new_tokens: Option<usize>,
    min_length: Option<usize>,
}

/// Most beams a checkpoint's `generation_config.json` may ask for: every beam of every prompt
/// of every image in a batch is a row of the language model's cache.
const MAX_BEAMS: usize = 16;

/// `dir/generation_config.json`'s decoding settings over greedy decoding, when the file exists.
fn load_generation(dir: &Path) -> Result<Generation, CaptionError> {
    let path = dir.join("generation_config.json");
    let config: GenerationConfig = match std::fs::read_to_string(&path) {
        Err(_) => GenerationConfig::default(),
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| CaptionError::Config(format!("{}: {e}", path.display())))?,
    };
    let beams = config.num_beams.unwrap_or(1).max(1);
    if beams > MAX_BEAMS {
        return Err(CaptionError::Config(format!(
            "{}: num_beams {beams} is more than the {MAX_BEAMS} imgd decodes with",
            path.display()
        )));
    }
    let mut generation = Generation::greedy(1);
    generation.num_beams = beams;
    generation.length_penalty = config.length_penalty.unwrap_or(1.0);
    generation.repetition_penalty = config.repetition_penalty.unwrap_or(1.0);
    generation.min_new_tokens = config.min_new_tokens.unwrap_or(0);
    generation.min_length = config.min_length.unwrap_or(0);
    Ok(generation)
}

/// The prompts of a [`CaptionSettings`], tokenized once.
#[derive(Debug, Clone)]
pub struct Blip2Prompts {
    /// The caption's prompt ids (BOS alone when no caption prompt is set).
    caption: Vec<u32>,
    /// The caption prompt's text, which starts the stored caption when set.
    caption_prefix: String,
    /// Each question's name.
    names: Vec<String>,
    /// Each question's prompt ids, in the order of `names`.
    questions: Vec<Vec<u32>>,
    /// How the caption decodes.
    caption_generation: Generation,
    /// How each answer decodes.
    answer_generation: Generation,
}

/// BLIP-2 with its tokenizer and image processor.
pub struct Blip2Captioner {
    model: Blip2,
    codec: TextCodec,
    preprocess: Preprocess,
    generation: Generation,
    info: ModelInfo,
    vision_encodes: Arc<AtomicU64>,
}

impl Blip2Captioner {
    /// Loads the checkpoint in `dir` on `device` in `dtype` (f32 on the CPU; f16 or bf16 on a
    /// GPU, the Q-Former kept in f32 and Flan-T5 in bf16).
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, CaptionError> {
        let model = Blip2::load_as(dir, device, dtype)?;
        let codec = TextCodec::load(dir, model.bos_token_id())?;
        let size = model.config().vision_config.image_size;
        let preprocess = Preprocess::load(dir, size, crate::preprocess::blip(size as u32))?;
        // The version fingerprints the first weights file (a sharded checkpoint's first shard).
        let first_weights = weight_files(dir)?
            .into_iter()
            .next()
            .ok_or_else(|| CaptionError::Config(format!("{}: no weights", dir.display())))?;
        let info = ModelInfo::resolve(dir, &first_weights, None)?;
        Ok(Blip2Captioner {
            model,
            codec,
            preprocess,
            generation: load_generation(dir)?,
            info,
            vision_encodes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Preprocesses one image for [`describe_pixels`](Self::describe_pixels).
    pub fn preprocess(&self, image: &RgbImage) -> Result<Vec<f32>, CaptionError> {
        Ok(self.preprocess.apply(image)?)
    }

    /// The text of a decoding's new tokens.
    fn text(&self, decoded: &Decoded) -> Result<String, CaptionError> {
        self.codec.decode(&decoded.tokens)
    }
}

impl Captioner for Blip2Captioner {
    type Prompts = Blip2Prompts;

    /// The model's id and version.
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The image processor.
    fn preprocessor(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The count of images through the vision tower and the Q-Former, shared.
    fn vision_encodes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.vision_encodes)
    }

    /// The prompts of `settings` (checked), tokenized.
    fn prompts(&self, settings: &CaptionSettings) -> Result<Blip2Prompts, CaptionError> {
        settings.validate()?;
        // The image's query tokens, the prompt and the new tokens must fit the language
        // model's positions (OPT's table; Flan-T5's are relative, without a limit).
        let positions = self.model.max_positions();
        let queries = self.model.config().num_query_tokens;
        let fits = |what: &str, ids: Vec<u32>, new: usize| match positions {
            Some(positions) if queries + ids.len() + new > positions => {
                Err(CaptionError::Config(format!(
                    "the {what} prompt has {} tokens: with the image's {queries} and up to {new} \
                     new ones it passes the language model's {positions} positions",
                    ids.len()
                )))
            }
            _ => Ok(ids),
        };
        let caption = fits(
            "caption",
            self.codec.prompt(settings.caption_prompt.trim())?,
            settings.caption_max_tokens,
        )?;
        let questions = settings
            .questions
            .iter()
            .map(|q| {
                let text = match q.question.as_deref().map(str::trim) {
                    Some(question) if !question.is_empty() => question_prompt(question),
                    _ => q.prefix.trim().to_string(),
                };
                fits(
                    &q.name,
                    self.codec.prompt(&text)?,
                    settings.answer_max_tokens,
                )
            })
            .collect::<Result<Vec<_>, CaptionError>>()?;
        let limited = |max_new_tokens: usize| Generation {
            max_new_tokens,
            min_new_tokens: self.generation.min_new_tokens.min(max_new_tokens),
            ..self.generation
        };
        Ok(Blip2Prompts {
            caption,
            caption_prefix: settings.caption_prompt.trim().to_string(),
            names: settings.questions.iter().map(|q| q.name.clone()).collect(),
            questions,
            caption_generation: limited(settings.caption_max_tokens),
            answer_generation: limited(settings.answer_max_tokens),
        })
    }

    /// Describes each image of a batch of preprocessed pixels: one encode of all of them, then
    /// the captions as one decode and the answers to every question as another, both from
    /// the images' cached query embeddings.
    fn describe_pixels(
        &self,
        pixels: &[Vec<f32>],
        prompts: &Blip2Prompts,
    ) -> Result<Vec<Description>, CaptionError> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let (height, width) = (self.preprocess.height, self.preprocess.width);
        let flat: Vec<f32> = pixels.concat();
        let batch = Tensor::from_vec(
            flat,
            (pixels.len(), 3, height as usize, width as usize),
            self.model.device(),
        )?;
        let projected = self.model.encode(&batch)?.projected;
        self.vision_encodes
            .fetch_add(pixels.len() as u64, Ordering::Relaxed);
        let prefix = self.model.image_prefix(&projected)?;
        let captions = self.model.generate_from(
            &prefix,
            std::slice::from_ref(&prompts.caption),
            prompts.caption_generation,
        )?;
        let answers = if prompts.questions.is_empty() {
            vec![Vec::new(); pixels.len()]
        } else {
            self.model
                .generate_from(&prefix, &prompts.questions, prompts.answer_generation)?
        };
        captions
            .iter()
            .zip(&answers)
            .map(|(caption, answers)| {
                let text = self.text(&caption[0])?;
                let caption = match (prompts.caption_prefix.is_empty(), text.is_empty()) {
                    (true, _) => text,
                    (false, true) => prompts.caption_prefix.clone(),
                    (false, false) => format!("{} {text}", prompts.caption_prefix),
                };
                let answers = prompts
                    .names
                    .iter()
                    .zip(answers)
                    .map(|(name, answer)| Ok((name.clone(), self.text(answer)?)))
                    .collect::<Result<Vec<_>, CaptionError>>()?;
                Ok(Description { caption, answers })
            })
            .collect()
    }
}
