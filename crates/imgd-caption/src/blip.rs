//! BLIP: captions and prompted answers decoded from one encoding of the image.
//!
//! - Paper: Li et al., *BLIP: Bootstrapping Language-Image Pre-training for Unified
//!   Vision-Language Understanding and Generation* (2022), <https://arxiv.org/abs/2201.12086>.
//! - Source: Salesforce's <https://github.com/salesforce/BLIP>; the reference implementation
//!   matched here is Hugging Face `transformers`' `BlipForConditionalGeneration` (its greedy
//!   `generate`), `BlipImageProcessor` and BLIP's BERT WordPiece tokenizer; the networks are
//!   `candle-transformers`' `blip` vision tower (ViT) and [`crate::decoder`], the `blip_text`
//!   BERT decoder with cross-attention, batched and with the image's keys and values cached.
//! - Weights: the HF repositories of [`crate::config::PRESETS`]
//!   (`Salesforce/blip-image-captioning-base` by default), a folder with `config.json`,
//!   `model.safetensors` (memory-mapped), `tokenizer.json` and optionally
//!   `preprocessor_config.json`.
//!
//! The vision tower runs once per image ([`BlipCaptioner::encode_pixels`], counted in
//! [`BlipCaptioner::vision_encodes`]); the caption and every question are then decoded from
//! those image embeddings ([`BlipCaptioner::generate`]): the cross-attention keys and values
//! of the image tokens are computed once per batch ([`BlipCaptioner::image_context`]) and
//! every prompt decodes as one batch over all images.
//! Decoding is greedy, as HF's default `generate`: the prompt (`[DEC]` alone for the caption,
//! `[DEC]` + the question's prefix for a question) is fed, then the most likely token is
//! appended until `[SEP]` or the token limit.
//!
//! Run it (the parity fixture, a tiny random-weight BLIP made by `scripts/make-fixtures.py`):
//!
//! ```
//! # fn main() -> Result<(), imgd_caption::CaptionError> {
//! use candle_core::Device;
//! use imgd_caption::Captioner;
//! use imgd_caption::blip::BlipCaptioner;
//! use imgd_caption::config::{CaptionSettings, Question};
//!
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/blip/tiny-blip");
//! let model = BlipCaptioner::load(&dir, &Device::Cpu)?;
//! let photo = image::open(dir.join("../images/flower-384.png")).unwrap().to_rgb8();
//! let settings = CaptionSettings::with_questions(&[Question::new("mood", "the mood is")]);
//! let prompts = model.prompts(&settings)?;
//! let described = model.describe_images(&[&photo], &prompts)?;
//! assert_eq!(described[0].answers[0].0, "mood");
//! assert_eq!(model.vision_encodes().load(std::sync::atomic::Ordering::Relaxed), 1);
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Module as _, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder};
use candle_transformers::models::blip::{BlipForConditionalGeneration, VisionModel};
use image::RgbImage;
use tokenizers::Tokenizer;

use crate::CaptionError;
use crate::config::{BlipConfig, CaptionSettings, ModelInfo, load_preprocess, require};
use crate::decoder::{ImageContext, TextDecoder};
use crate::preprocess::Preprocess;
use imgd_candle::processor::pixel_batch;

/// The weights file of a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// The LM head's weight, which HF's `save_pretrained` leaves out: it is tied to the word
/// embeddings.
const LM_HEAD: &str = "text_decoder.cls.predictions.decoder.weight";
const WORD_EMBEDDINGS: &str = "text_decoder.bert.embeddings.word_embeddings.weight";

/// The memory-mapped checkpoint, with the LM head read from the word embeddings when the file
/// has no tensor of its own (HF's tied weights). With `vision_only`, every `text_decoder.*`
/// tensor is a zero-strided view of one zero, so that building candle's whole
/// `BlipForConditionalGeneration` for its vision tower loads no text weights (the text decoder
/// is [`TextDecoder`], built from the real tensors).
struct Weights {
    tensors: Arc<MmapedSafetensors>,
    vision_only: bool,
}

impl Weights {
    fn resolve<'a>(&self, name: &'a str) -> &'a str {
        if name == LM_HEAD && self.tensors.get(name).is_err() {
            WORD_EMBEDDINGS
        } else {
            name
        }
    }

    fn placeholder(&self, name: &str) -> bool {
        self.vision_only && name.starts_with("text_decoder.")
    }
}

impl SimpleBackend for Weights {
    fn get(
        &self,
        s: Shape,
        name: &str,
        h: Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        if self.placeholder(name) {
            return Tensor::zeros((), dtype, dev)?.broadcast_as(s);
        }
        SimpleBackend::get(self.tensors.as_ref(), s, self.resolve(name), h, dtype, dev)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> candle_core::Result<Tensor> {
        if self.placeholder(name) {
            candle_core::bail!("{name} is not loaded for the vision tower");
        }
        SimpleBackend::get_unchecked(self.tensors.as_ref(), self.resolve(name), dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.placeholder(name) || self.tensors.get(self.resolve(name)).is_ok()
    }
}

/// Memory-maps `weights` for building a model on `device`, in f32, with HF's tied LM head:
/// the builder of the vision tower (text tensors left out) and that of the text decoder.
pub fn mmap_weights(
    weights: &Path,
    device: &Device,
) -> Result<(VarBuilder<'static>, VarBuilder<'static>), CaptionError> {
    // SAFETY: the file is memory-mapped read-only; model files are not modified while imgd
    // runs (they are replaced by rename, which keeps the mapped inode intact).
    #[allow(unsafe_code)]
    let tensors = Arc::new(unsafe { MmapedSafetensors::new(weights)? });
    let builder = |vision_only| {
        VarBuilder::from_backend(
            Box::new(Weights {
                tensors: Arc::clone(&tensors),
                vision_only,
            }),
            DType::F32,
            device.clone(),
        )
    };
    Ok((builder(true), builder(false)))
}

/// Reads and parses `config.json` of a BLIP model folder.
pub fn load_config(dir: &Path) -> Result<BlipConfig, CaptionError> {
    let path = require(dir, "config.json")?;
    let text = fs::read_to_string(&path).map_err(|source| CaptionError::Io { path, source })?;
    BlipConfig::from_hf_json(&text)
}

/// Reads `tokenizer.json` (BLIP's BERT WordPiece tokenizer) without padding or truncation.
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, CaptionError> {
    let path = require(dir, "tokenizer.json")?;
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|e| CaptionError::Tokenizer(format!("{}: {e}", path.display())))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| CaptionError::Tokenizer(e.to_string()))?;
    Ok(tokenizer)
}

/// The decoder prompts of a [`CaptionSettings`], tokenized once: the caption's and each
/// question's, every one starting with `[DEC]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompts {
    /// The caption's prompt ids.
    pub caption: Vec<u32>,
    /// Most tokens generated for the caption.
    pub caption_max_tokens: usize,
    /// Each question's name and prompt ids.
    pub questions: Vec<(String, Vec<u32>)>,
    /// Most tokens generated for each answer.
    pub answer_max_tokens: usize,
}

/// What the model says about one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    /// The caption (starting with the caption prompt when one is configured, as HF decodes
    /// it).
    pub caption: String,
    /// Each question's name and answer (the continuation of its prefix), in configured order.
    pub answers: Vec<(String, String)>,
}

/// BLIP's vision tower and text decoder with the tokenizer and image processor.
#[derive(Debug)]
pub struct BlipCaptioner {
    vision: VisionModel,
    decoder: TextDecoder,
    tokenizer: Tokenizer,
    config: BlipConfig,
    preprocess: Preprocess,
    info: ModelInfo,
    device: Device,
    vision_encodes: Arc<AtomicU64>,
}

impl BlipCaptioner {
    /// Loads the model in `dir` (see the [module docs](self)) on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, CaptionError> {
        let config = load_config(dir)?;
        let weights = require(dir, WEIGHTS_FILE)?;
        let preprocess = load_preprocess(dir, config.vision.image_size)?;
        let tokenizer = load_tokenizer(dir)?;
        let info = ModelInfo::resolve(dir, &weights, config.preset_id())?;
        let (vision_vb, text_vb) = mmap_weights(&weights, device)?;
        Self::new(vision_vb, text_vb, config, tokenizer, preprocess, info)
    }

    /// Builds the model from builders at a `BlipForConditionalGeneration` checkpoint's root:
    /// `vision_vb` for the vision tower (its `text_decoder.*` tensors are not read by the
    /// model; [`mmap_weights`] leaves them out) and `text_vb` for the text decoder.
    pub fn new(
        vision_vb: VarBuilder<'_>,
        text_vb: VarBuilder<'_>,
        config: BlipConfig,
        tokenizer: Tokenizer,
        preprocess: Preprocess,
        info: ModelInfo,
    ) -> Result<Self, CaptionError> {
        for name in [
            "vision_model.embeddings.class_embedding",
            "text_decoder.bert.embeddings.word_embeddings.weight",
        ] {
            if !text_vb.contains_tensor(name) {
                return Err(CaptionError::Config(format!(
                    "the weights have no tensor `{name}`: not a BlipForConditionalGeneration checkpoint"
                )));
            }
        }
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.text.vocab_size {
            return Err(CaptionError::Config(format!(
                "the tokenizer has {vocab} tokens but the model only {}",
                config.text.vocab_size
            )));
        }
        // candle builds the vision tower only as part of the whole model; keep the tower.
        let vision = BlipForConditionalGeneration::new(&config.candle(), vision_vb)?
            .vision_model()
            .clone();
        let decoder = TextDecoder::new(
            &config.text,
            config.vision.hidden_size,
            text_vb.pp("text_decoder"),
        )?;
        Ok(BlipCaptioner {
            vision,
            decoder,
            tokenizer,
            preprocess,
            device: text_vb.device().clone(),
            config,
            info,
            vision_encodes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The model's id and version.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The architecture.
    pub fn config(&self) -> &BlipConfig {
        &self.config
    }

    /// The image processor.
    pub fn preprocessor(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The number of images the vision tower has encoded (shared: it keeps counting after
    /// the model moves into a runner).
    pub fn vision_encodes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.vision_encodes)
    }

    /// One image's model input (`3 × S × S`, channel first), as `BlipImageProcessor` makes it.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Vec<f32>, CaptionError> {
        Ok(self.preprocess.apply(image)?)
    }

    /// The image embeddings of preprocessed images, in one batch: the vision tower's last
    /// hidden state after its final layer norm, `(n, tokens, width)`.
    pub fn encode_pixels(&self, pixels: &[Vec<f32>]) -> Result<Tensor, CaptionError> {
        let (height, width) = (self.preprocess.height, self.preprocess.width);
        let batch = pixel_batch(pixels, height as usize, width as usize, &self.device)?;
        let embeds = self.vision.forward(&batch)?;
        self.vision_encodes
            .fetch_add(pixels.len() as u64, Ordering::Relaxed);
        Ok(embeds)
    }

    /// The image embeddings of images, preprocessed and run as one batch.
    pub fn encode_images(&self, images: &[&RgbImage]) -> Result<Tensor, CaptionError> {
        let pixels = images
            .iter()
            .map(|image| self.preprocess(image))
            .collect::<Result<Vec<_>, _>>()?;
        self.encode_pixels(&pixels)
    }

    /// The decoder prompt for a text prefix: `[DEC]` then the prefix's tokens, as HF's
    /// `generate` makes it from the tokenizer's `[CLS] … [SEP]` (the first replaced by
    /// `[DEC]`, the last dropped). An empty prefix gives `[DEC]` alone.
    pub fn prompt_ids(&self, prefix: &str) -> Result<Vec<u32>, CaptionError> {
        let encoding = self
            .tokenizer
            .encode(prefix, false)
            .map_err(|e| CaptionError::Tokenizer(e.to_string()))?;
        let mut ids = vec![self.config.text.bos_token_id];
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Tokenizes and checks the prompts of `settings`.
    pub fn prompts(&self, settings: &CaptionSettings) -> Result<Prompts, CaptionError> {
        settings.validate()?;
        let max = self.config.text.max_position_embeddings;
        let check = |what: &str, ids: Vec<u32>| {
            if ids.len() >= max {
                Err(CaptionError::Config(format!(
                    "the {what} prompt has {} tokens; the decoder takes at most {max} in all",
                    ids.len()
                )))
            } else {
                Ok(ids)
            }
        };
        let caption = check("caption", self.prompt_ids(&settings.caption_prompt)?)?;
        let questions = settings
            .questions
            .iter()
            .map(|q| {
                if q.prefix.trim().is_empty() {
                    return Err(CaptionError::Config(format!(
                        "question `{}` has no `prefix`: BLIP answers by continuing one (\"the \
                         lighting is\"); `question` is asked of BLIP-2 models only",
                        q.name
                    )));
                }
                Ok((q.name.clone(), check(&q.name, self.prompt_ids(&q.prefix)?)?))
            })
            .collect::<Result<Vec<_>, CaptionError>>()?;
        Ok(Prompts {
            caption,
            caption_max_tokens: settings.caption_max_tokens,
            questions,
            answer_max_tokens: settings.answer_max_tokens,
        })
    }

    /// The cross-attention keys and values of image embeddings `(n, tokens, width)`, computed
    /// once and read by every decode over these images.
    pub fn image_context(&self, image_embeds: &Tensor) -> Result<ImageContext, CaptionError> {
        self.decoder.image_context(image_embeds)
    }

    /// The decoder's logits for token ids `(b, l)` over image embeddings `(b, tokens, width)`:
    /// `(b, l, vocab)`, causal.
    pub fn decoder_logits(
        &self,
        input_ids: &Tensor,
        image_embeds: &Tensor,
    ) -> Result<Tensor, CaptionError> {
        self.decoder
            .logits(input_ids, &self.image_context(image_embeds)?)
    }

    /// Greedy decoding of `prompt` over each image's embeddings `(n, tokens, width)`, all
    /// images as one batch: per image, the prompt then the generated ids up to and including
    /// `[SEP]` (as HF's `generate` returns them, without the padding after `[SEP]`), at most
    /// `max_new_tokens` generated (fewer when the decoder's positions run out).
    pub fn generate(
        &self,
        image_embeds: &Tensor,
        prompt: &[u32],
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<u32>>, CaptionError> {
        self.generate_with(&self.image_context(image_embeds)?, prompt, max_new_tokens)
    }

    /// [`Self::generate`] over images whose cross-attention keys and values are computed.
    pub fn generate_with(
        &self,
        images: &ImageContext,
        prompt: &[u32],
        max_new_tokens: usize,
    ) -> Result<Vec<Vec<u32>>, CaptionError> {
        let positions = self.config.text.max_position_embeddings;
        if prompt.is_empty() || prompt.len() >= positions {
            return Err(CaptionError::Input(format!(
                "a prompt needs 1 to {} tokens, this one has {}",
                positions - 1,
                prompt.len()
            )));
        }
        let steps = max_new_tokens.min(positions - prompt.len());
        let text = &self.config.text;
        self.decoder
            .greedy(images, prompt, steps, text.sep_token_id, text.pad_token_id)
    }

    /// The text of token ids, special tokens left out, as HF's `decode(…,
    /// skip_special_tokens=True)`.
    pub fn decode(&self, ids: &[u32]) -> Result<String, CaptionError> {
        let text = self
            .tokenizer
            .decode(ids, true)
            .map_err(|e| CaptionError::Tokenizer(e.to_string()))?;
        Ok(text.trim().to_string())
    }

    /// Captions and answers for preprocessed images: one vision pass over the batch, then one
    /// batched decode per prompt from the same image embeddings.
    pub fn describe_pixels(
        &self,
        pixels: &[Vec<f32>],
        prompts: &Prompts,
    ) -> Result<Vec<Description>, CaptionError> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let embeds = self.encode_pixels(pixels)?;
        let images = self.image_context(&embeds)?;
        let captions = self.generate_with(&images, &prompts.caption, prompts.caption_max_tokens)?;
        let mut described = captions
            .iter()
            .map(|ids| {
                Ok(Description {
                    caption: self.decode(ids)?,
                    answers: Vec::with_capacity(prompts.questions.len()),
                })
            })
            .collect::<Result<Vec<_>, CaptionError>>()?;
        for (name, prompt) in &prompts.questions {
            let answers = self.generate_with(&images, prompt, prompts.answer_max_tokens)?;
            for (description, ids) in described.iter_mut().zip(&answers) {
                let answer = self.decode(&ids[prompt.len()..])?;
                description.answers.push((name.clone(), answer));
            }
        }
        Ok(described)
    }
}
