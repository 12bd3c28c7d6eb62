//! The model runners the inference thread drives: `embedding` and `aesthetic`.
//!
//! Both take the image's 448-px tier ([`crate::EMBEDDING`]'s) and prepare it on a decode thread
//! (so a bad image fails alone, before batching): CLIP resizes and centre-crops it, SigLIP
//! resizes it to its square input ([`ImageTower::prepare`]). The tower then runs on whole
//! batches of 8-bit inputs, normalised on the model's device
//! ([`ClipImageEncoder::embed_crops`], [`SiglipImageEncoder::embed_resized`]). The
//! `aesthetic` module is CLIP's only (the LAION predictor reads CLIP ViT-L/14 vectors).
//!
//! The aesthetic runner computes its own CLIP ViT-L/14 image embedding: it does not wait for
//! the embedding module's result, so the two modules stay independent jobs. When both use the
//! same CLIP model, build them from one [`ClipImageEncoder`] with
//! [`embedding_runner_from`] and [`aesthetic_runner_from`]: the weights are shared (candle
//! tensors are reference-counted); only the forward pass runs twice.

use std::path::Path;

use candle_core::Device;
use image::RgbImage;
use imgd_core::{ResultRow, SqlValue};
use imgd_infer::batcher::{BatchConfig, BatchModel};
use imgd_infer::runner::{Batched, ImageInput, ModelRunner};

use crate::ClipError;
use crate::aesthetic::{AestheticMlp, aesthetic_info, stored_score};
use crate::clip::ClipImageEncoder;
use crate::config::ModelInfo;
use crate::onnx::OnnxClipImageEncoder;
use crate::siglip::SiglipImageEncoder;

/// The tier the runners read: the embedding module's long edge (448 px).
pub fn input_tier() -> u32 {
    crate::EMBEDDING.tier().unwrap_or(448)
}

/// The runners' input image: the 448-px tier, else the largest tier decoded.
fn pick_tier<'a>(image: &'a ImageInput<'_>) -> Result<&'a RgbImage, String> {
    image
        .tier_or_largest(input_tier())
        .map(|pixels| pixels.as_ref())
        .ok_or_else(|| {
            format!(
                "no decoded tier (the CLIP runners read the {}-px tier)",
                input_tier()
            )
        })
}

/// The image tower of the `embedding` module: CLIP, or SigLIP / SigLIP 2.
#[derive(Debug, Clone)]
pub enum ImageTower {
    /// CLIP: the short side resized, a centre crop.
    Clip(ClipImageEncoder),
    /// SigLIP: a square resize without a crop.
    Siglip(SiglipImageEncoder),
    /// CLIP through ONNX Runtime (the CPU, when the folder holds an ONNX export).
    Onnx(OnnxClipImageEncoder),
}

impl ImageTower {
    /// The model id and version stored with each vector.
    pub fn info(&self) -> &ModelInfo {
        match self {
            ImageTower::Clip(encoder) => encoder.info(),
            ImageTower::Siglip(encoder) => encoder.info(),
            ImageTower::Onnx(encoder) => encoder.info(),
        }
    }

    /// The 8-bit input of one image (resized, and cropped for CLIP), made on a decode thread.
    pub fn prepare(&self, image: &RgbImage) -> Result<RgbImage, ClipError> {
        match self {
            ImageTower::Clip(encoder) => Ok(encoder.preprocessor().resize_and_crop(image)?),
            ImageTower::Siglip(encoder) => encoder.resize(image),
            ImageTower::Onnx(encoder) => Ok(encoder.preprocessor().resize_and_crop(image)?),
        }
    }

    /// The vectors' width.
    pub fn dim(&self) -> usize {
        match self {
            ImageTower::Clip(encoder) => encoder.dim(),
            ImageTower::Siglip(encoder) => encoder.dim(),
            ImageTower::Onnx(encoder) => encoder.dim(),
        }
    }

    /// Where the tower's vectors land: its candle device, the CPU for ONNX Runtime's.
    pub fn device(&self) -> Device {
        match self {
            ImageTower::Clip(encoder) => encoder.device().clone(),
            ImageTower::Siglip(encoder) => encoder.device().clone(),
            ImageTower::Onnx(_) => Device::Cpu,
        }
    }

    /// Normalised vectors of prepared inputs, in one batch.
    pub fn embed_prepared(&self, inputs: &[RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        match self {
            ImageTower::Clip(encoder) => encoder.embed_crops(inputs),
            ImageTower::Siglip(encoder) => encoder.embed_resized(inputs),
            ImageTower::Onnx(encoder) => encoder.embed_crops(inputs),
        }
    }
}

impl From<ClipImageEncoder> for ImageTower {
    fn from(encoder: ClipImageEncoder) -> Self {
        ImageTower::Clip(encoder)
    }
}

impl From<OnnxClipImageEncoder> for ImageTower {
    fn from(encoder: OnnxClipImageEncoder) -> Self {
        ImageTower::Onnx(encoder)
    }
}

impl From<SiglipImageEncoder> for ImageTower {
    fn from(encoder: SiglipImageEncoder) -> Self {
        ImageTower::Siglip(encoder)
    }
}

/// An image tower as a [`BatchModel`]: prepared images in, normalised vectors out.
pub struct ImageEmbedder {
    tower: ImageTower,
    name: String,
}

impl ImageEmbedder {
    /// Wraps `tower`; its model id is the batcher's name.
    pub fn new(tower: impl Into<ImageTower>) -> Self {
        let tower = tower.into();
        let name = tower.info().id.clone();
        ImageEmbedder { tower, name }
    }
}

impl BatchModel for ImageEmbedder {
    type Input = RgbImage;
    type Output = Vec<f32>;
    type Error = ClipError;

    fn name(&self) -> &str {
        &self.name
    }

    fn run_batch(&mut self, inputs: &[RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        self.tower.embed_prepared(inputs)
    }
}

/// CLIP image tower then aesthetic MLP as a [`BatchModel`]: resized and cropped images in,
/// raw predictions out.
pub struct AestheticScorer {
    encoder: ImageTower,
    mlp: AestheticMlp,
    name: String,
}

impl AestheticScorer {
    /// Combines `encoder` (CLIP ViT-L/14 for the reference weights, on candle or ONNX Runtime)
    /// and `mlp`; refuses a pair whose widths differ.
    pub fn new(
        encoder: impl Into<ImageTower>,
        mlp: AestheticMlp,
        name: String,
    ) -> Result<Self, ClipError> {
        let encoder = encoder.into();
        if encoder.dim() != mlp.input_dim() {
            return Err(ClipError::Config(format!(
                "the aesthetic MLP takes {}-d embeddings but the CLIP model `{}` gives {}-d ones \
                 (the LAION predictor needs CLIP ViT-L/14)",
                mlp.input_dim(),
                encoder.info().id,
                encoder.dim()
            )));
        }
        Ok(AestheticScorer { encoder, mlp, name })
    }
}

impl BatchModel for AestheticScorer {
    type Input = RgbImage;
    type Output = f32;
    type Error = ClipError;

    fn name(&self) -> &str {
        &self.name
    }

    fn run_batch(&mut self, inputs: &[RgbImage]) -> Result<Vec<f32>, ClipError> {
        let embeddings = self.encoder.embed_prepared(inputs)?;
        self.mlp.score(&embeddings)
    }
}

/// The `result_embedding` row of one vector: `dim`, `vector` (little-endian f32 bytes).
pub fn embedding_row(info: &ModelInfo, vector: &[f32]) -> ResultRow {
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    ResultRow {
        module: crate::EMBEDDING,
        model_id: Some(info.id.clone()),
        model_version: Some(info.version.clone()),
        columns: vec![
            ("dim", SqlValue::Integer(vector.len() as i64)),
            ("vector", SqlValue::Blob(bytes)),
        ],
        data: serde_json::json!({}),
        vectors: Vec::new(),
    }
}

/// Decodes a `result_embedding.vector` blob (little-endian f32s); `None` when its length is
/// not a multiple of 4.
pub fn vector_from_blob(blob: &[u8]) -> Option<Vec<f32>> {
    if !blob.len().is_multiple_of(4) {
        return None;
    }
    Some(
        blob.chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

/// The `result_aesthetic` row of one prediction: `score` clamped to 1–10, the raw value in
/// `data.raw`.
pub fn aesthetic_row(info: &ModelInfo, raw: f32) -> ResultRow {
    ResultRow {
        module: crate::AESTHETIC,
        model_id: Some(info.id.clone()),
        model_version: Some(info.version.clone()),
        columns: vec![("score", SqlValue::Real(f64::from(stored_score(raw))))],
        data: serde_json::json!({ "raw": raw }),
        vectors: Vec::new(),
    }
}

/// The `embedding` runner for the CLIP model in `dir` (HF layout: `config.json`,
/// `model.safetensors`; see [`crate::clip`]) on `device`.
pub fn embedding_runner(
    dir: &Path,
    device: &Device,
    batch: BatchConfig,
) -> Result<Box<dyn ModelRunner>, ClipError> {
    Ok(embedding_runner_from(
        ClipImageEncoder::load(dir, device)?,
        batch,
    ))
}

/// The `embedding` runner around an already loaded image tower (CLIP or SigLIP).
pub fn embedding_runner_from(
    tower: impl Into<ImageTower>,
    batch: BatchConfig,
) -> Box<dyn ModelRunner> {
    let tower = tower.into();
    let info = tower.info().clone();
    let preparer = tower.clone();
    Box::new(Batched::new(
        crate::EMBEDDING,
        ImageEmbedder::new(tower),
        batch,
        move |image| {
            preparer
                .prepare(pick_tier(image)?)
                .map_err(|e| e.to_string())
        },
        move |vector: Vec<f32>| embedding_row(&info, &vector),
    ))
}

/// The `aesthetic` runner: the CLIP model in `clip_dir` (ViT-L/14 for the LAION weights) and
/// the MLP at `mlp_path` (a `.pth`/`.safetensors` file or a folder, see
/// [`AestheticMlp::load`]), on `device`.
pub fn aesthetic_runner(
    clip_dir: &Path,
    mlp_path: &Path,
    device: &Device,
    batch: BatchConfig,
) -> Result<Box<dyn ModelRunner>, ClipError> {
    let encoder = ClipImageEncoder::load(clip_dir, device)?;
    aesthetic_runner_from(encoder, mlp_path, batch)
}

/// The `aesthetic` runner around an already loaded CLIP image tower (candle's or ONNX
/// Runtime's) and the MLP at `mlp_path`.
pub fn aesthetic_runner_from(
    encoder: impl Into<ImageTower>,
    mlp_path: &Path,
    batch: BatchConfig,
) -> Result<Box<dyn ModelRunner>, ClipError> {
    let encoder = encoder.into();
    if let ImageTower::Siglip(_) = encoder {
        return Err(ClipError::Config(
            "the aesthetic MLP reads CLIP vectors, not SigLIP's".into(),
        ));
    }
    let mlp = AestheticMlp::load(mlp_path, &encoder.device())?;
    let info = aesthetic_info(mlp_path, encoder.info())?;
    let preparer = encoder.clone();
    let scorer = AestheticScorer::new(encoder, mlp, info.id.clone())?;
    Ok(Box::new(Batched::new(
        crate::AESTHETIC,
        scorer,
        batch,
        move |image| {
            preparer
                .prepare(pick_tier(image)?)
                .map_err(|e| e.to_string())
        },
        move |raw: f32| aesthetic_row(&info, raw),
    )))
}

/// The text tower matching an [`ImageTower`]: what `imgd search` embeds queries with.
#[derive(Debug, Clone)]
pub enum TextTower {
    /// CLIP's.
    Clip(crate::clip::ClipTextEncoder),
    /// SigLIP's (SigLIP 2's Gemma tokenizer reads queries in any script).
    Siglip(crate::siglip::SiglipTextEncoder),
}

impl TextTower {
    /// Loads the text tower of the model in `dir`, SigLIP or CLIP by its `config.json`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self, ClipError> {
        if crate::siglip::is_siglip(dir) {
            Ok(TextTower::Siglip(crate::siglip::SiglipTextEncoder::load(
                dir, device,
            )?))
        } else {
            Ok(TextTower::Clip(crate::clip::ClipTextEncoder::load(
                dir, device,
            )?))
        }
    }

    /// The model id and version of its vectors.
    pub fn info(&self) -> &ModelInfo {
        match self {
            TextTower::Clip(encoder) => encoder.info(),
            TextTower::Siglip(encoder) => encoder.info(),
        }
    }

    /// L2-normalised vectors for `texts`, in one batch.
    pub fn embed_text(&mut self, texts: &[&str]) -> Result<Vec<Vec<f32>>, ClipError> {
        match self {
            TextTower::Clip(encoder) => encoder.embed_text(texts),
            TextTower::Siglip(encoder) => encoder.embed_text(texts),
        }
    }
}

/// The id and version of the model in `dir` (CLIP or SigLIP), read without loading it.
pub fn model_info(dir: &Path) -> Result<ModelInfo, ClipError> {
    let weights = crate::config::require(dir, crate::clip::WEIGHTS_FILE)?;
    let preset = if crate::siglip::is_siglip(dir) {
        None
    } else {
        crate::clip::load_config(dir)?.preset_id()
    };
    ModelInfo::resolve(dir, &weights, preset)
}
