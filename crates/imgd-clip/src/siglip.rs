//! SigLIP and SigLIP 2 image and text towers (the fixed-resolution checkpoints, which Hugging
//! Face saves as `SiglipModel`: `config.json` with `model_type` `siglip`), on candle's SigLIP.
//!
//! The image side resizes to the tower's square input without a crop and normalises with the
//! folder's `preprocessor_config.json` (PIL bilinear and mean/std 0.5 for SigLIP 2); the vector
//! is the attention-pooling head's output. The text side takes `tokenizer.json` (SigLIP 2's
//! Gemma tokenizer, multilingual), or SigLIP's `spiece.model` run as `SiglipTokenizer` runs it
//! (the text canonicalised: lower case, ASCII punctuation removed, whitespace collapsed; then
//! SentencePiece with its NFKC map, `</s>` appended), padded and truncated to the tower's 64
//! positions, as the reference is run (`padding="max_length"`); the vector is the last
//! position's state through the head. Vectors are L2-normalised, as CLIP's are.

use std::fs;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, VarBuilder};
use candle_transformers::models::siglip;
use image::RgbImage;
use imgd_candle::processor::{Normalize, PilFilter, ResizePreprocess, pixel_batch};
use imgd_candle::sentencepiece::SentencePieceModel;
use tokenizers::Tokenizer;
use tokenizers::models::unigram::Unigram;
use tokenizers::normalizers::Precompiled;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};

use crate::ClipError;
use crate::clip::{WEIGHTS_FILE, load_tokenizer, mmap_weights_as};
use crate::config::{ModelInfo, require};

/// Whether the model folder `dir` holds a SigLIP checkpoint (`model_type` `siglip` in its
/// `config.json`).
pub fn is_siglip(dir: &Path) -> bool {
    fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
        .is_some_and(|config| config["model_type"] == "siglip")
}

/// Reads `config.json` of a SigLIP folder.
pub fn load_config(dir: &Path) -> Result<siglip::Config, ClipError> {
    let path = require(dir, "config.json")?;
    let text = fs::read_to_string(&path).map_err(|source| ClipError::Io {
        path: path.clone(),
        source,
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| ClipError::Config(format!("{}: {e}", path.display())))?;
    if value["model_type"] != "siglip" {
        return Err(ClipError::Config(format!(
            "{}: model_type {} is not siglip (NaFlex `siglip2` checkpoints are not supported; \
             the fixed-resolution SigLIP 2 models are `siglip`)",
            path.display(),
            value["model_type"]
        )));
    }
    serde_json::from_value(value).map_err(|e| ClipError::Config(format!("{}: {e}", path.display())))
}

/// The default processor of a SigLIP 2 checkpoint: a square resize (PIL bilinear), mean and
/// std 0.5.
fn default_preprocess(size: u32) -> ResizePreprocess {
    ResizePreprocess::square(size, PilFilter::Bilinear, Normalize::symmetric())
}

/// L2-normalises each row of a `(n, d)` tensor and returns the rows.
fn normalized_rows(features: &Tensor) -> Result<Vec<Vec<f32>>, ClipError> {
    let features = features.to_dtype(DType::F32)?;
    let norm = features.sqr()?.sum_keepdim(1)?.sqrt()?;
    Ok(features.broadcast_div(&norm)?.to_vec2()?)
}

/// SigLIP's image tower with its pooling head and image processor.
#[derive(Debug, Clone)]
pub struct SiglipImageEncoder {
    vision: siglip::VisionModel,
    preprocess: ResizePreprocess,
    info: ModelInfo,
    dim: usize,
    device: Device,
    dtype: DType,
}

impl SiglipImageEncoder {
    /// Loads the image tower of the SigLIP model in `dir` on `device`, in `dtype`.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ClipError> {
        let config = load_config(dir)?;
        let weights = require(dir, WEIGHTS_FILE)?;
        let size = config.vision_config.image_size;
        let preprocess = ResizePreprocess::load(dir, size, default_preprocess(size as u32))?;
        let info = ModelInfo::resolve(dir, &weights, None)?;
        let vb = mmap_weights_as(&weights, device, dtype)?;
        Self::new(vb, &config.vision_config, preprocess, info)
    }

    /// Builds the image tower from `vb` (a `SiglipModel` checkpoint's root).
    pub fn new(
        vb: VarBuilder<'_>,
        config: &siglip::VisionConfig,
        preprocess: ResizePreprocess,
        info: ModelInfo,
    ) -> Result<Self, ClipError> {
        let (device, dtype) = (vb.device().clone(), vb.dtype());
        let vision = siglip::VisionModel::new(config, true, vb.pp("vision_model"))?;
        Ok(SiglipImageEncoder {
            vision,
            preprocess,
            info,
            dim: config.hidden_size,
            device,
            dtype,
        })
    }

    /// [`Self::load_as`] in f32.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        Self::load_as(dir, device, DType::F32)
    }

    /// The model id and version stored with each vector.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The length of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The image processor.
    pub fn preprocessor(&self) -> &ResizePreprocess {
        &self.preprocess
    }

    /// One image resized to the tower's input (8-bit; normalised in [`Self::embed_resized`]).
    pub fn resize(&self, image: &RgbImage) -> Result<RgbImage, ClipError> {
        Ok(self.preprocess.resize(image)?)
    }

    /// The pooled features, not normalised, of preprocessed pixels `(n, 3, S, S)`.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor, ClipError> {
        Ok(self.vision.forward(&pixels.to_dtype(self.dtype)?)?)
    }

    /// L2-normalised vectors of images already resized by [`Self::resize`], in one batch.
    pub fn embed_resized(&self, resized: &[RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        if resized.is_empty() {
            return Ok(Vec::new());
        }
        let (width, height) = (self.preprocess.width, self.preprocess.height);
        let pixels: Vec<Vec<f32>> = resized
            .iter()
            .map(|image| self.preprocess.normalize.apply(image))
            .collect();
        let batch = pixel_batch(&pixels, height as usize, width as usize, &self.device)?;
        normalized_rows(&self.forward(&batch)?)
    }

    /// L2-normalised vectors of whole images, in one batch.
    pub fn embed_images(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        let resized = images
            .iter()
            .map(|image| self.resize(image))
            .collect::<Result<Vec<_>, _>>()?;
        self.embed_resized(&resized)
    }
}

/// SigLIP's text canonicalisation (`SiglipTokenizer.canonicalize_text`): lower case when
/// `lowercase`, ASCII punctuation removed, runs of whitespace made one space, trimmed.
pub fn canonicalize(text: &str, lowercase: bool) -> String {
    let text = if lowercase {
        text.to_lowercase()
    } else {
        text.to_string()
    };
    let kept: String = text.chars().filter(|c| !c.is_ascii_punctuation()).collect();
    kept.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A folder's `tokenizer_config.json`, or `null`.
fn tokenizer_config(dir: &Path) -> serde_json::Value {
    fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// A special token named in `tokenizer_config.json` (a string or `{ "content": … }`).
fn special_token(config: &serde_json::Value, key: &str) -> Option<String> {
    match &config[key] {
        serde_json::Value::String(token) => Some(token.clone()),
        serde_json::Value::Object(token) => token
            .get("content")
            .and_then(serde_json::Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// How the text tower's input ids are made.
#[derive(Debug, Clone)]
enum TextTokenizer {
    /// `tokenizer.json`, which pads and truncates (SigLIP 2's Gemma tokenizer).
    Json(Tokenizer),
    /// SigLIP's `spiece.model`: a unigram model after NFKC, words marked with `▁`; `eos` is
    /// appended and `pad` fills the rest.
    SentencePiece {
        tokenizer: Tokenizer,
        eos: u32,
        pad: u32,
    },
}

/// SigLIP's `spiece.model` as the `tokenizers` crate runs it.
fn sentencepiece_tokenizer(
    dir: &Path,
    config: &serde_json::Value,
) -> Result<TextTokenizer, ClipError> {
    let path = require(dir, "spiece.model")?;
    let bad = |e: String| ClipError::Tokenizer(format!("{}: {e}", path.display()));
    let bytes = fs::read(&path).map_err(|source| ClipError::Io {
        path: path.clone(),
        source,
    })?;
    let model = SentencePieceModel::parse(&bytes).map_err(bad)?;
    let vocab: Vec<(String, f64)> = model
        .pieces
        .iter()
        .map(|p| (p.piece.clone(), f64::from(p.score)))
        .collect();
    let unigram = Unigram::from(vocab, model.unk_id(), false).map_err(|e| bad(e.to_string()))?;
    let mut tokenizer = Tokenizer::new(unigram);
    if !model.precompiled_charsmap.is_empty() {
        let normalizer =
            Precompiled::from(&model.precompiled_charsmap).map_err(|e| bad(e.to_string()))?;
        tokenizer.with_normalizer(Some(normalizer));
    }
    tokenizer.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
    let id = |key: &str| -> Result<u32, ClipError> {
        let token = special_token(config, key).unwrap_or_else(|| "</s>".to_string());
        tokenizer
            .token_to_id(&token)
            .ok_or_else(|| bad(format!("its {key} `{token}` is not a piece")))
    };
    let (eos, pad) = (id("eos_token")?, id("pad_token")?);
    Ok(TextTokenizer::SentencePiece {
        tokenizer,
        eos,
        pad,
    })
}

/// SigLIP's text tower with its head and tokenizer.
#[derive(Debug, Clone)]
pub struct SiglipTextEncoder {
    text: siglip::TextModel,
    tokenizer: TextTokenizer,
    /// Canonicalise texts first (`SiglipTokenizer`), lower-casing them when true.
    canonical: Option<bool>,
    config: siglip::TextConfig,
    info: ModelInfo,
    device: Device,
}

impl SiglipTextEncoder {
    /// Loads the text tower and `tokenizer.json` of the SigLIP model in `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        let config = load_config(dir)?;
        let weights = require(dir, WEIGHTS_FILE)?;
        let info = ModelInfo::resolve(dir, &weights, None)?;
        let tokenizer_settings = tokenizer_config(dir);
        let tokenizer =
            if dir.join("tokenizer.json").is_file() || !dir.join("spiece.model").is_file() {
                TextTokenizer::Json(load_tokenizer(
                    dir,
                    config.text_config.max_position_embeddings,
                )?)
            } else {
                sentencepiece_tokenizer(dir, &tokenizer_settings)?
            };
        let canonical = (tokenizer_settings["tokenizer_class"] == "SiglipTokenizer"
            || matches!(tokenizer, TextTokenizer::SentencePiece { .. }))
        .then(|| {
            tokenizer_settings["do_lower_case"]
                .as_bool()
                .unwrap_or(true)
        });
        let vb = mmap_weights_as(&weights, device, DType::F32)?;
        let text = siglip::TextModel::new(&config.text_config, vb.pp("text_model"))?;
        Ok(SiglipTextEncoder {
            text,
            tokenizer,
            canonical,
            config: config.text_config,
            info,
            device: device.clone(),
        })
    }

    /// The model id and version of the vectors it makes.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The token ids of each text as the reference tokenizer gives them with
    /// `padding="max_length", max_length=64, truncation=True`.
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ClipError> {
        let len = self.config.max_position_embeddings;
        texts
            .iter()
            .map(|text| {
                let text = match self.canonical {
                    Some(lowercase) => canonicalize(text, lowercase),
                    None => (*text).to_string(),
                };
                let failed = |e: tokenizers::Error| ClipError::Tokenizer(e.to_string());
                match &self.tokenizer {
                    TextTokenizer::Json(tokenizer) => tokenizer
                        .encode(text, true)
                        .map(|encoding| encoding.get_ids().to_vec())
                        .map_err(failed),
                    TextTokenizer::SentencePiece {
                        tokenizer,
                        eos,
                        pad,
                    } => {
                        let encoding = tokenizer.encode(text, false).map_err(failed)?;
                        let mut ids: Vec<u32> =
                            encoding.get_ids().iter().copied().take(len - 1).collect();
                        ids.push(*eos);
                        ids.resize(len, *pad);
                        Ok(ids)
                    }
                }
            })
            .collect()
    }

    /// The head's features, not normalised, for token ids of the tower's full length.
    pub fn forward_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor, ClipError> {
        let len = self.config.max_position_embeddings;
        if ids.iter().any(|row| row.len() != len) {
            return Err(ClipError::Input(format!(
                "SigLIP's text tower takes exactly {len} token ids per text"
            )));
        }
        if let Some(&bad) = ids
            .iter()
            .flatten()
            .find(|&&id| id as usize >= self.config.vocab_size)
        {
            return Err(ClipError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.vocab_size
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let input = Tensor::from_vec(flat, (ids.len(), len), &self.device)?;
        Ok(self.text.forward(&input)?)
    }

    /// L2-normalised vectors for `texts`, in one batch.
    pub fn embed_text(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ClipError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.tokenize(texts)?;
        normalized_rows(&self.forward_ids(&ids)?)
    }
}
