//! CLIP: the image and text encoders that put photos and search queries in one vector space.
//!
//! - Paper: Radford et al., *Learning Transferable Visual Models From Natural Language
//!   Supervision* (2021), <https://arxiv.org/abs/2103.00020>.
//! - Source: OpenAI's <https://github.com/openai/CLIP>; the reference implementation matched
//!   here is Hugging Face `transformers`' `CLIPModel`, `CLIPImageProcessor` and
//!   `CLIPTokenizerFast`; the text tower is `candle-transformers`' `clip` module, the image
//!   tower imgd's own [`crate::vision_tower`] (the same arithmetic in fewer passes).
//! - Weights: the HF repositories of [`crate::config::PRESETS`] (`openai/clip-vit-base-patch32`
//!   by default), a folder with `config.json`, `model.safetensors` (memory-mapped),
//!   `tokenizer.json` and optionally `preprocessor_config.json`.
//!
//! Every vector is L2-normalised, so a dot product is the cosine similarity.
//!
//! Run it (the parity fixture, a tiny random-weight CLIP made by `scripts/make-fixtures.py`):
//!
//! ```
//! # fn main() -> Result<(), imgd_clip::ClipError> {
//! use candle_core::Device;
//! use imgd_clip::clip::ClipModel;
//!
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clip/tiny-clip");
//! let mut model = ClipModel::load(&dir, &Device::Cpu)?;
//! let photo = image::open(dir.join("../images/flower-448.png")).unwrap().to_rgb8();
//! let images = model.image.embed_images(&[&photo])?;
//! let texts = model.text.embed_text(&["a flower", "a car at night"])?;
//! let similarity: f32 = images[0].iter().zip(&texts[0]).map(|(a, b)| a * b).sum();
//! assert!(similarity.abs() <= 1.0 + 1e-5);
//! # Ok(())
//! # }
//! ```

use std::fs;
use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::clip::text_model::ClipTextTransformer;
use image::RgbImage;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::ClipError;
use crate::config::{ClipConfig, ModelInfo, load_preprocess, require};
use crate::preprocess::Preprocess;
use crate::vision_tower::VisionTower;

/// The weights file of a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Memory-maps `weights` for building a model on `device`, in f32.
pub fn mmap_weights(weights: &Path, device: &Device) -> Result<VarBuilder<'static>, ClipError> {
    mmap_weights_as(weights, device, DType::F32)
}

/// [`mmap_weights`] in `dtype` (f16 halves a GPU's work for a ~1e-3 relative difference).
pub fn mmap_weights_as(
    weights: &Path,
    device: &Device,
    dtype: DType,
) -> Result<VarBuilder<'static>, ClipError> {
    // SAFETY: the file is memory-mapped read-only; model files are not modified while imgd
    // runs (they are replaced by rename, which keeps the mapped inode intact).
    #[allow(unsafe_code)]
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[weights], dtype, device).map_err(ClipError::Candle)?
    };
    Ok(vb)
}

/// Reads and parses `config.json` of a CLIP model folder.
pub fn load_config(dir: &Path) -> Result<ClipConfig, ClipError> {
    let path = require(dir, "config.json")?;
    let text = fs::read_to_string(&path).map_err(|source| ClipError::Io { path, source })?;
    ClipConfig::from_hf_json(&text)
}

fn check_tensors(vb: &VarBuilder<'_>, names: &[&str]) -> Result<(), ClipError> {
    // candle's CLIP substitutes random values for a missing class embedding; refuse instead.
    for name in names {
        if !vb.contains_tensor(name) {
            return Err(ClipError::Config(format!(
                "the weights have no tensor `{name}`: not a CLIPModel checkpoint"
            )));
        }
    }
    Ok(())
}

/// L2-normalises each row of a `(n, d)` tensor and returns the rows.
fn normalized_rows(features: &Tensor) -> Result<Vec<Vec<f32>>, ClipError> {
    // In f32: a sum of 512 squares can overflow f16.
    let features = features.to_dtype(DType::F32)?;
    let norm = features.sqr()?.sum_keepdim(1)?.sqrt()?;
    Ok(features.broadcast_div(&norm)?.to_vec2()?)
}

/// The crop side of `preprocess`, after checking every crop has it.
fn check_crops(preprocess: &Preprocess, crops: &[RgbImage]) -> Result<usize, ClipError> {
    let side = preprocess.crop;
    if let Some(bad) = crops.iter().find(|c| c.dimensions() != (side, side)) {
        return Err(ClipError::Input(format!(
            "a crop is {}x{}, the model takes {side}x{side}",
            bad.width(),
            bad.height()
        )));
    }
    Ok(side as usize)
}

/// The model input of cropped images, `[n, 3, side, side]` in row-major order, normalised in
/// one pass over the bytes through `preprocess`'s table; and the side.
pub(crate) fn crops_input(
    preprocess: &Preprocess,
    crops: &[RgbImage],
) -> Result<(usize, Vec<f32>), ClipError> {
    let side = check_crops(preprocess, crops)?;
    let plane = side * side;
    let table = preprocess.normalize_table();
    let mut values = vec![0f32; crops.len() * 3 * plane];
    for (crop, out) in crops.iter().zip(values.chunks_exact_mut(3 * plane)) {
        let (red, rest) = out.split_at_mut(plane);
        let (green, blue) = rest.split_at_mut(plane);
        for (i, pixel) in crop.as_raw().chunks_exact(3).enumerate() {
            red[i] = table[0][usize::from(pixel[0])];
            green[i] = table[1][usize::from(pixel[1])];
            blue[i] = table[2][usize::from(pixel[2])];
        }
    }
    Ok((side, values))
}

/// CLIP's image tower with its projection and image processor.
#[derive(Debug, Clone)]
pub struct ClipImageEncoder {
    vision: VisionTower,
    projection: Linear,
    preprocess: Preprocess,
    /// [`Preprocess::normalize_table`] on the device, `(3, 256)` f32.
    byte_table: Tensor,
    config: ClipConfig,
    info: ModelInfo,
    device: Device,
}

impl ClipImageEncoder {
    /// Loads the image tower of the model in `dir` (see the [module docs](self)) on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        Self::load_as(dir, device, DType::F32)
    }

    /// [`load`](Self::load) with the weights and activations in `dtype`; vectors come out in
    /// f32 either way.
    pub fn load_as(dir: &Path, device: &Device, dtype: DType) -> Result<Self, ClipError> {
        let config = load_config(dir)?;
        let weights = require(dir, WEIGHTS_FILE)?;
        let preprocess = load_preprocess(dir, config.vision.image_size)?;
        let info = ModelInfo::resolve(dir, &weights, config.preset_id())?;
        let vb = mmap_weights_as(&weights, device, dtype)?;
        Self::new(vb, config, preprocess, info)
    }

    /// Builds the image tower from `vb` (a `CLIPModel` checkpoint's root).
    pub fn new(
        vb: VarBuilder<'_>,
        config: ClipConfig,
        preprocess: Preprocess,
        info: ModelInfo,
    ) -> Result<Self, ClipError> {
        check_tensors(&vb, &["vision_model.embeddings.class_embedding"])?;
        let vision = VisionTower::new(vb.pp("vision_model"), &config)?;
        let projection = candle_nn::linear_no_bias(
            config.vision.hidden_size,
            config.projection_dim,
            vb.pp("visual_projection"),
        )?;
        let table: Vec<f32> = preprocess.normalize_table().concat();
        let byte_table = Tensor::from_vec(table, (3, 256), vb.device())?;
        Ok(ClipImageEncoder {
            vision,
            projection,
            byte_table,
            preprocess,
            device: vb.device().clone(),
            config,
            info,
        })
    }

    /// The model's id and version.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The architecture.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The image processor.
    pub fn preprocessor(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The length of every vector.
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One image's model input (`3 × S × S`, channel first), as `CLIPImageProcessor` makes it.
    pub fn preprocess(&self, image: &RgbImage) -> Result<Vec<f32>, ClipError> {
        Ok(self.preprocess.apply(image)?)
    }

    /// The projected image features, not normalised: `(n, 3, S, S)` → `(n, dim)`.
    pub fn forward(&self, pixel_values: &Tensor) -> Result<Tensor, ClipError> {
        Ok(self.vision.forward(pixel_values)?.apply(&self.projection)?)
    }

    /// L2-normalised vectors for preprocessed images, in one batch.
    pub fn embed_pixels(&self, pixels: &[Vec<f32>]) -> Result<Vec<Vec<f32>>, ClipError> {
        if pixels.is_empty() {
            return Ok(Vec::new());
        }
        let per_image = self.preprocess.len();
        if let Some(bad) = pixels.iter().find(|p| p.len() != per_image) {
            return Err(ClipError::Input(format!(
                "a preprocessed image has {} values, the model takes {per_image}",
                bad.len()
            )));
        }
        let side = self.preprocess.crop as usize;
        let flat: Vec<f32> = pixels.iter().flatten().copied().collect();
        let batch = Tensor::from_vec(flat, (pixels.len(), 3, side, side), &self.device)?
            .to_dtype(self.projection.weight().dtype())?;
        normalized_rows(&self.forward(&batch)?)
    }

    /// L2-normalised vectors for resized and centre-cropped images
    /// ([`Preprocess::resize_and_crop`]), in one batch. Each byte is normalised by looking it up
    /// in [`Preprocess::normalize_table`], so the input equals [`Self::embed_pixels`]'s, value
    /// for value. On a GPU only the bytes go to the device (a quarter of the f32 input), which
    /// looks them up there ([`Self::crops_on_device`]); on the CPU one pass over the bytes
    /// builds the input ([`Self::crops_on_host`]).
    pub fn embed_crops(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let batch = if self.device.is_cpu() {
            self.crops_on_host(crops)?
        } else {
            self.crops_on_device(crops)?
        };
        normalized_rows(&self.forward(&batch)?)
    }

    /// The model input `[n, 3, crop, crop]` for cropped images, normalised in one pass on the
    /// host. On the CPU this is 5x faster than [`Self::crops_on_device`]'s tensor operations,
    /// which copy the batch several times (`benches/clip.rs`, `--crops`).
    pub fn crops_on_host(&self, crops: &[RgbImage]) -> Result<Tensor, ClipError> {
        let (side, values) = crops_input(&self.preprocess, crops)?;
        Ok(
            Tensor::from_vec(values, (crops.len(), 3, side, side), &self.device)?
                .to_dtype(self.projection.weight().dtype())?,
        )
    }

    /// The model input `[n, 3, crop, crop]` for cropped images, normalised on the device: only
    /// the bytes are copied there, then looked up in the device's copy of the table.
    pub fn crops_on_device(&self, crops: &[RgbImage]) -> Result<Tensor, ClipError> {
        let side = self.check_crops(crops)?;
        let n = crops.len();
        let mut bytes = Vec::with_capacity(n * side * side * 3);
        for crop in crops {
            bytes.extend_from_slice(crop.as_raw());
        }
        let pixels = Tensor::from_vec(bytes, (n * side * side, 3), &self.device)?;
        let planes = (0..3)
            .map(|c| {
                let ids = pixels.narrow(1, c, 1)?.squeeze(1)?.to_dtype(DType::U32)?;
                self.byte_table
                    .get(c)?
                    .index_select(&ids, 0)?
                    .reshape((n, side, side))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::stack(&planes, 1)?.to_dtype(self.projection.weight().dtype())?)
    }

    /// The crop side, after checking every crop has it.
    fn check_crops(&self, crops: &[RgbImage]) -> Result<usize, ClipError> {
        check_crops(&self.preprocess, crops)
    }

    /// L2-normalised vectors for images, preprocessed and run as one batch.
    pub fn embed_images(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        let pixels = images
            .iter()
            .map(|image| self.preprocess(image))
            .collect::<Result<Vec<_>, _>>()?;
        self.embed_pixels(&pixels)
    }
}

/// CLIP's text tower with its projection and tokenizer.
#[derive(Debug, Clone)]
pub struct ClipTextEncoder {
    text: ClipTextTransformer,
    projection: Linear,
    tokenizer: Tokenizer,
    config: ClipConfig,
    info: ModelInfo,
    device: Device,
}

impl ClipTextEncoder {
    /// Loads the text tower and `tokenizer.json` of the model in `dir` on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        let config = load_config(dir)?;
        let weights = require(dir, WEIGHTS_FILE)?;
        let info = ModelInfo::resolve(dir, &weights, config.preset_id())?;
        let tokenizer = load_tokenizer(dir, config.text.max_position_embeddings)?;
        let vb = mmap_weights(&weights, device)?;
        Self::new(vb, config, tokenizer, info)
    }

    /// Builds the text tower from `vb` (a `CLIPModel` checkpoint's root).
    pub fn new(
        vb: VarBuilder<'_>,
        config: ClipConfig,
        tokenizer: Tokenizer,
        info: ModelInfo,
    ) -> Result<Self, ClipError> {
        let text = ClipTextTransformer::new(vb.pp("text_model"), &config.candle_text())?;
        let projection = candle_nn::linear_no_bias(
            config.text.hidden_size,
            config.projection_dim,
            vb.pp("text_projection"),
        )?;
        Ok(ClipTextEncoder {
            text,
            projection,
            tokenizer,
            device: vb.device().clone(),
            config,
            info,
        })
    }

    /// The model's id and version (the same as the image tower's of the same folder).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The length of every vector.
    pub fn dim(&self) -> usize {
        self.config.projection_dim
    }

    /// The token ids of each text, as the reference tokenizer gives them with
    /// `padding="max_length", max_length=77, truncation=True`: start token, tokens, end token,
    /// padding to 77 (a longer text keeps its first 75 tokens and the end token).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, ClipError> {
        texts
            .iter()
            .map(|text| {
                self.tokenizer
                    .encode(*text, true)
                    .map(|encoding| encoding.get_ids().to_vec())
                    .map_err(|e| ClipError::Tokenizer(e.to_string()))
            })
            .collect()
    }

    /// The position whose hidden state is the text's feature (HF's rule): the first end
    /// token; for configs with the old `eos_token_id` of 2, the first largest id.
    fn pooled_position(&self, ids: &[u32]) -> usize {
        let eos = self.config.text.eos_token_id;
        if eos == 2 {
            let max = ids.iter().copied().max().unwrap_or(0);
            ids.iter().position(|&id| id == max).unwrap_or(0)
        } else {
            ids.iter().position(|&id| id == eos).unwrap_or(0)
        }
    }

    /// The projected text features, not normalised, for token ids of equal length.
    pub fn forward_ids(&self, ids: &[Vec<u32>]) -> Result<Tensor, ClipError> {
        let len = ids.first().map_or(0, Vec::len);
        if len == 0 || len > self.config.text.max_position_embeddings {
            return Err(ClipError::Input(format!(
                "token sequences must hold 1 to {} ids",
                self.config.text.max_position_embeddings
            )));
        }
        if ids.iter().any(|row| row.len() != len) {
            return Err(ClipError::Input(
                "token sequences of one batch must have one length".into(),
            ));
        }
        if let Some(&bad) = ids
            .iter()
            .flatten()
            .find(|&&id| id as usize >= self.config.text.vocab_size)
        {
            return Err(ClipError::Input(format!(
                "token id {bad} is outside the vocabulary of {}",
                self.config.text.vocab_size
            )));
        }
        let flat: Vec<u32> = ids.iter().flatten().copied().collect();
        let input = Tensor::from_vec(flat, (ids.len(), len), &self.device)?;
        // Causal attention: positions after the end token never reach the pooled state, so
        // padding does not change the result.
        let hidden = self.text.forward_with_mask(&input, usize::MAX)?;
        let pooled = ids
            .iter()
            .enumerate()
            .map(|(row, ids)| hidden.i((row, self.pooled_position(ids))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Tensor::stack(&pooled, 0)?.apply(&self.projection)?)
    }

    /// L2-normalised vectors for `texts`, in one batch: what `imgd search` compares with the
    /// image vectors of the same model.
    pub fn embed_text(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ClipError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let ids = self.tokenize(texts)?;
        normalized_rows(&self.forward_ids(&ids)?)
    }
}

/// Loads `tokenizer.json` and sets the padding and truncation to `max_len` tokens the
/// reference's `padding="max_length"` gives: pad with the pad token of `tokenizer_config.json`
/// (CLIP's is `<|endoftext|>`, SigLIP 2's `<pad>`), else `<|endoftext|>`, on its
/// `padding_side` (right unless it says left).
pub fn load_tokenizer(dir: &Path, max_len: usize) -> Result<Tokenizer, ClipError> {
    let path = require(dir, "tokenizer.json")?;
    let mut tokenizer = Tokenizer::from_file(&path)
        .map_err(|e| ClipError::Tokenizer(format!("{}: {e}", path.display())))?;
    let config = fs::read_to_string(dir.join("tokenizer_config.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok());
    let direction = match config.as_ref().and_then(|c| c.get("padding_side")) {
        Some(side) if side == "left" => PaddingDirection::Left,
        _ => PaddingDirection::Right,
    };
    let pad_token = config
        .and_then(|config| match config.get("pad_token") {
            Some(serde_json::Value::String(token)) => Some(token.clone()),
            Some(serde_json::Value::Object(token)) => token
                .get("content")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string),
            _ => None,
        })
        .unwrap_or_else(|| "<|endoftext|>".to_string());
    let pad_id = tokenizer.token_to_id(&pad_token).ok_or_else(|| {
        ClipError::Tokenizer(format!(
            "the pad token `{pad_token}` is not in the vocabulary"
        ))
    })?;
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            ..Default::default()
        }))
        .map_err(|e| ClipError::Tokenizer(e.to_string()))?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(max_len),
        direction,
        pad_id,
        pad_token,
        ..Default::default()
    }));
    Ok(tokenizer)
}

/// Both towers of one CLIP model.
#[derive(Debug, Clone)]
pub struct ClipModel {
    /// The image tower.
    pub image: ClipImageEncoder,
    /// The text tower.
    pub text: ClipTextEncoder,
}

impl ClipModel {
    /// Loads both towers of the model in `dir` on `device` (one memory map shared by both).
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        let config = load_config(dir)?;
        let weights = require(dir, WEIGHTS_FILE)?;
        let info = ModelInfo::resolve(dir, &weights, config.preset_id())?;
        let preprocess = load_preprocess(dir, config.vision.image_size)?;
        let tokenizer = load_tokenizer(dir, config.text.max_position_embeddings)?;
        let vb = mmap_weights(&weights, device)?;
        Ok(ClipModel {
            image: ClipImageEncoder::new(vb.clone(), config.clone(), preprocess, info.clone())?,
            text: ClipTextEncoder::new(vb, config, tokenizer, info)?,
        })
    }

    /// The model's id and version.
    pub fn info(&self) -> &ModelInfo {
        self.image.info()
    }

    /// L2-normalised vectors for `texts` (see [`ClipTextEncoder::embed_text`]).
    pub fn embed_text(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ClipError> {
        self.text.embed_text(texts)
    }

    /// L2-normalised vectors for images (see [`ClipImageEncoder::embed_images`]).
    pub fn embed_images(&self, images: &[&RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        self.image.embed_images(images)
    }
}
