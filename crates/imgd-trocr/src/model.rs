//! [`TrocrRecognizer`]: TrOCR reading text-line crops, and the OCR module's
//! [`LineRecognizer`] behind `[models] ocr_recognizer = "trocr"`.
//!
//! - Paper: Li et al., *TrOCR: Transformer-based Optical Character Recognition with
//!   Pre-trained Models* (AAAI 2023), <https://arxiv.org/abs/2109.10282>.
//! - Reference implementation matched here: Hugging Face `transformers`'
//!   `VisionEncoderDecoderModel` with a `ViTModel`/`DeiTModel` encoder and `TrOCRForCausalLM`
//!   decoder, its greedy `generate`, and `TrOCRProcessor` (`ViTImageProcessor` with the PIL
//!   backend, `XLMRobertaTokenizer` or `RobertaTokenizer`).
//! - Weights: an HF model folder: `config.json`, `model.safetensors` (memory-mapped) or
//!   `pytorch_model.bin`, `tokenizer.json` or `sentencepiece.bpe.model`, and optionally
//!   `preprocessor_config.json` (`microsoft/trocr-small-printed` by default; see
//!   `models/manifest.toml`).
//!
//! A call reads all its crops in chunks of [`TrocrSettings::batch`]: each chunk is
//! preprocessed (every crop to the encoder's square input), encoded in one pass, and decoded
//! greedily as one batch ([`TextDecoder::greedy`]). Every crop's input has the same shape and
//! every decode row is independent, so a crop reads the same alone or in any batch.
//!
//! **Confidence** of a line: the mean probability of its generated tokens, the end token
//! excluded (each token's probability is the softmax of its step's logits, so the chosen
//! token's share of that step). A line that never produced the end token within
//! [`TrocrSettings::max_new_tokens`] keeps its text and its mean. A decode that ends at once
//! has no tokens: empty text, confidence 0 (the OCR module drops it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use image::RgbImage;
use imgd_ocr::{LineRecognizer, OcrError, RecognizerInfo};
use tokenizers::Tokenizer;

use crate::TrocrError;
use crate::config::{ModelInfo, TrocrConfig, TrocrSettings, load_config};
use crate::decoder::{EncoderContext, Generated, TextDecoder};
use crate::encoder::ImageEncoder;
use crate::preprocess::{Preprocess, load_preprocess};
use crate::tokenizer::load_tokenizer;
use imgd_candle::processor::pixel_batch;

/// `data.recognizer` of the OCR rows TrOCR reads.
pub const KIND: &str = "trocr";
/// The safetensors weights file of a model folder (preferred).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// The PyTorch weights file of a model folder (what `microsoft/trocr-small-printed` ships).
pub const PTH_WEIGHTS_FILE: &str = "pytorch_model.bin";

/// The weights file in `dir`: [`WEIGHTS_FILE`], else [`PTH_WEIGHTS_FILE`].
pub fn weights_file(dir: &Path) -> Option<PathBuf> {
    [WEIGHTS_FILE, PTH_WEIGHTS_FILE]
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// Whether `dir` holds a TrOCR model this crate can load: `config.json`, weights and a
/// tokenizer (nothing is read).
pub fn is_installed(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && weights_file(dir).is_some()
        && crate::tokenizer::has_tokenizer(dir)
}

/// A weights file as a `VarBuilder` on `device`, in f32: safetensors memory-mapped, a PyTorch
/// checkpoint read with candle's pickle reader (no code is run).
pub fn var_builder(weights: &Path, device: &Device) -> Result<VarBuilder<'static>, TrocrError> {
    if weights
        .extension()
        .is_some_and(|e| e == "bin" || e == "pth" || e == "pt")
    {
        return Ok(VarBuilder::from_pth(weights, DType::F32, device)?);
    }
    // SAFETY: the file is memory-mapped read-only; model files are not modified while imgd
    // runs (they are replaced by rename, which keeps the mapped inode intact).
    #[allow(unsafe_code)]
    let tensors = unsafe { MmapedSafetensors::new(weights)? };
    Ok(VarBuilder::from_backend(
        Box::new(tensors),
        DType::F32,
        device.clone(),
    ))
}

/// One crop's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The text (special tokens left out, as `batch_decode(…, skip_special_tokens=True)`).
    pub text: String,
    /// The mean probability of its tokens (see the [module docs](self)).
    pub confidence: f32,
    /// The greedy decode it comes from.
    pub generated: Generated,
}

/// TrOCR's encoder and decoder with the tokenizer and image processor.
#[derive(Debug)]
pub struct TrocrRecognizer {
    encoder: ImageEncoder,
    decoder: TextDecoder,
    tokenizer: Tokenizer,
    config: TrocrConfig,
    preprocess: Preprocess,
    settings: TrocrSettings,
    info: ModelInfo,
    device: Device,
    encodes: Arc<AtomicU64>,
}

impl TrocrRecognizer {
    /// Loads the model in `dir` (see the [module docs](self)) on `device` with the default
    /// settings.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, TrocrError> {
        Self::load_with(dir, device, TrocrSettings::default())
    }

    /// Loads the model in `dir` on `device` with `settings`.
    pub fn load_with(
        dir: &Path,
        device: &Device,
        settings: TrocrSettings,
    ) -> Result<Self, TrocrError> {
        let config = load_config(dir)?;
        let weights =
            weights_file(dir).ok_or_else(|| TrocrError::MissingFile(dir.join(WEIGHTS_FILE)))?;
        let preprocess = load_preprocess(dir, config.encoder.image_size)?;
        let tokenizer = load_tokenizer(dir)?;
        let info = ModelInfo::resolve(dir, &weights, None)?;
        let vb = var_builder(&weights, device)?;
        Self::new(vb, config, tokenizer, preprocess, info, settings)
    }

    /// Builds the model from `vb` at a `VisionEncoderDecoderModel` checkpoint's root.
    pub fn new(
        vb: VarBuilder<'_>,
        config: TrocrConfig,
        tokenizer: Tokenizer,
        preprocess: Preprocess,
        info: ModelInfo,
        settings: TrocrSettings,
    ) -> Result<Self, TrocrError> {
        for name in [
            "encoder.embeddings.cls_token",
            "decoder.model.decoder.embed_tokens.weight",
        ] {
            if !vb.contains_tensor(name) {
                return Err(TrocrError::Config(format!(
                    "the weights have no tensor `{name}`: not a TrOCR VisionEncoderDecoderModel"
                )));
            }
        }
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > config.decoder.vocab_size {
            return Err(TrocrError::Config(format!(
                "the tokenizer has {vocab} tokens but the model only {}",
                config.decoder.vocab_size
            )));
        }
        if settings.max_new_tokens == 0 || settings.batch == 0 {
            return Err(TrocrError::Config(
                "max_new_tokens and batch must be at least 1".into(),
            ));
        }
        let encoder = ImageEncoder::new(
            &config.encoder,
            config.enc_to_dec_proj.then_some(config.decoder.d_model),
            vb.clone(),
        )?;
        let decoder = TextDecoder::new(&config.decoder, vb.clone())?;
        Ok(TrocrRecognizer {
            encoder,
            decoder,
            tokenizer,
            preprocess,
            settings,
            info,
            device: vb.device().clone(),
            config,
            encodes: Arc::new(AtomicU64::new(0)),
        })
    }

    /// The model's id and version.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The architecture.
    pub fn config(&self) -> &TrocrConfig {
        &self.config
    }

    /// The decoding settings.
    pub fn settings(&self) -> &TrocrSettings {
        &self.settings
    }

    /// The image processor.
    pub fn preprocessor(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The number of crops the encoder has run on (shared: it keeps counting after the model
    /// moves into a runner).
    pub fn encodes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.encodes)
    }

    /// One crop's model input (`3 × S × S`, channel first), as `TrOCRProcessor` makes it.
    pub fn preprocess(&self, crop: &RgbImage) -> Result<Vec<f32>, TrocrError> {
        Ok(self.preprocess.apply(crop)?)
    }

    /// The encoder states of preprocessed crops, in one pass: `(n, tokens, width)`.
    pub fn encode_pixels(&self, pixels: &[Vec<f32>]) -> Result<Tensor, TrocrError> {
        let (height, width) = (self.preprocess.height, self.preprocess.width);
        let batch = pixel_batch(pixels, height as usize, width as usize, &self.device)?;
        let states = self.encoder.forward(&batch)?;
        self.encodes
            .fetch_add(pixels.len() as u64, Ordering::Relaxed);
        Ok(states)
    }

    /// The cross-attention keys and values of encoder states, for [`Self::generate_with`].
    pub fn encoder_context(&self, states: &Tensor) -> Result<EncoderContext, TrocrError> {
        self.decoder.encoder_context(states)
    }

    /// The decoder's logits for token ids `(b, l)` over encoder states `(b, tokens, width)`:
    /// `(b, l, vocab)`, causal.
    pub fn decoder_logits(&self, ids: &Tensor, states: &Tensor) -> Result<Tensor, TrocrError> {
        self.decoder.logits(ids, &self.encoder_context(states)?)
    }

    /// Greedy decoding over encoder states `(n, tokens, width)`, all rows as one batch, at most
    /// `max_new_tokens` generated.
    pub fn generate(
        &self,
        states: &Tensor,
        max_new_tokens: usize,
    ) -> Result<Vec<Generated>, TrocrError> {
        self.generate_with(&self.encoder_context(states)?, max_new_tokens)
    }

    /// [`Self::generate`] over crops whose cross-attention keys and values are computed.
    pub fn generate_with(
        &self,
        context: &EncoderContext,
        max_new_tokens: usize,
    ) -> Result<Vec<Generated>, TrocrError> {
        let d = &self.config.decoder;
        self.decoder.greedy(
            context,
            d.decoder_start_token_id,
            d.eos_token_id,
            max_new_tokens,
        )
    }

    /// The text of token ids, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TrocrError> {
        let text = self
            .tokenizer
            .decode(ids, true)
            .map_err(|e| TrocrError::Tokenizer(e.to_string()))?;
        Ok(text.trim().to_string())
    }

    /// A decode's text and confidence.
    pub fn reading(&self, generated: Generated) -> Result<Reading, TrocrError> {
        let eos = self.config.decoder.eos_token_id;
        let tokens = if generated.ended(eos) {
            &generated.probs[..generated.probs.len() - 1]
        } else {
            &generated.probs[..]
        };
        let confidence = if tokens.is_empty() {
            0.0
        } else {
            tokens.iter().sum::<f32>() / tokens.len() as f32
        };
        Ok(Reading {
            text: self.decode(&generated.ids)?,
            confidence,
            generated,
        })
    }

    /// Readings of preprocessed crops, in chunks of [`TrocrSettings::batch`]: one encoder pass
    /// and one batched greedy decode per chunk.
    pub fn read_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Reading>, TrocrError> {
        let mut readings = Vec::with_capacity(pixels.len());
        for chunk in pixels.chunks(self.settings.batch) {
            let states = self.encode_pixels(chunk)?;
            for generated in self.generate(&states, self.settings.max_new_tokens)? {
                readings.push(self.reading(generated)?);
            }
        }
        Ok(readings)
    }

    /// Readings of crops, preprocessed here.
    pub fn read_images(&self, crops: &[&RgbImage]) -> Result<Vec<Reading>, TrocrError> {
        let pixels = crops
            .iter()
            .map(|crop| self.preprocess(crop))
            .collect::<Result<Vec<_>, _>>()?;
        self.read_pixels(&pixels)
    }
}

impl LineRecognizer for TrocrRecognizer {
    fn info(&self) -> RecognizerInfo {
        RecognizerInfo {
            kind: KIND.to_string(),
            model_id: self.info.id.clone(),
            model_version: self.info.version.clone(),
        }
    }

    fn read(&mut self, crops: &[&RgbImage]) -> Result<Vec<(String, f32)>, OcrError> {
        Ok(self
            .read_images(crops)
            .map_err(crate::error::into_ocr_error)?
            .into_iter()
            .map(|reading| (reading.text, reading.confidence))
            .collect())
    }
}
