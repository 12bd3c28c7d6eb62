//! CLIP's image tower through ONNX Runtime, for the CPU.
//!
//! On the CPU, ONNX Runtime runs CLIP ViT-B/32's image tower about twice as fast as candle
//! (30 vs 65 ms per image at batch 8 on 2 threads, `scripts/bench-clip-cpu.sh`): its fused
//! attention and GELU kernels and its matrix multiply beat candle's. So when the model folder
//! holds an ONNX export of the tower, as Hugging Face's Optimum exports lay it out
//! (`onnx/vision_model.onnx`: input `pixel_values`, output `image_embeds`, the projected
//! vector), the `embedding` and `aesthetic` modules run it there ([`onnx_export`]). The input is made as the
//! candle path makes it (the same resize, crop and normalisation table), and the vectors carry
//! the folder's model id and version: the two engines give the same vectors (within 1e-5 on the
//! fixture, `tests/onnx_parity.rs`), so switching engines re-queues nothing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use image::RgbImage;
use imgd_infer::OrtConfig;
use imgd_infer::ort::session::Session;
use imgd_infer::ort::value::TensorRef;

use crate::ClipError;
use crate::clip::{WEIGHTS_FILE, crops_input, load_config};
use crate::config::{ModelInfo, load_preprocess, require};
use crate::preprocess::Preprocess;

/// The export's input: `(n, 3, side, side)` normalised pixels.
const INPUT: &str = "pixel_values";
/// The export's output: `(n, dim)` projected vectors, not yet normalised.
const OUTPUT: &str = "image_embeds";

/// Where an ONNX export of the image tower may sit in a CLIP folder, in the order looked at.
pub const EXPORT_PATHS: [&str; 2] = ["onnx/vision_model.onnx", "vision_model.onnx"];

/// The ONNX export of the image tower in the CLIP folder `dir`, when it has one.
pub fn onnx_export(dir: &Path) -> Option<PathBuf> {
    EXPORT_PATHS
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
}

/// CLIP's image tower as an ONNX Runtime session, with the folder's image processor.
#[derive(Clone)]
pub struct OnnxClipImageEncoder {
    session: Arc<Mutex<Session>>,
    preprocess: Preprocess,
    info: ModelInfo,
    dim: usize,
    path: PathBuf,
}

impl std::fmt::Debug for OnnxClipImageEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxClipImageEncoder")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl OnnxClipImageEncoder {
    /// Opens `export` (an ONNX export of the image tower of the CLIP folder `dir`) with `ort`;
    /// the image processor, id and version come from `dir` as for the candle tower.
    pub fn load(dir: &Path, export: &Path, ort: &OrtConfig) -> Result<Self, ClipError> {
        let config = load_config(dir)?;
        let weights = require(dir, WEIGHTS_FILE)?;
        let preprocess = load_preprocess(dir, config.vision.image_size)?;
        let info = ModelInfo::resolve(dir, &weights, config.preset_id())?;
        let failed = |e: &dyn std::fmt::Display| {
            ClipError::Config(format!("ONNX Runtime, {}: {e}", export.display()))
        };
        let session = imgd_infer::onnx::session(export, ort).map_err(|e| failed(&e))?;
        if !session.inputs().iter().any(|i| i.name() == INPUT) {
            return Err(failed(&format!("no input named {INPUT}")));
        }
        let outputs: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if !outputs.contains(&OUTPUT) {
            return Err(failed(&format!("no output named {OUTPUT} ({outputs:?})")));
        }
        Ok(OnnxClipImageEncoder {
            session: Arc::new(Mutex::new(session)),
            preprocess,
            info,
            dim: config.projection_dim,
            path: export.to_path_buf(),
        })
    }

    /// The model's id and version (the folder's, as for the candle tower).
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The vectors' width (the folder's `projection_dim`).
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The image processor.
    pub fn preprocessor(&self) -> &Preprocess {
        &self.preprocess
    }

    /// Normalised vectors of resized and centre-cropped images, in one batch.
    pub fn embed_crops(&self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>, ClipError> {
        if crops.is_empty() {
            return Ok(Vec::new());
        }
        let (side, values) = crops_input(&self.preprocess, crops)?;
        let failed = |e: &dyn std::fmt::Display| {
            ClipError::Input(format!("ONNX Runtime, {}: {e}", self.path.display()))
        };
        let shape = vec![crops.len(), 3, side, side];
        let tensor =
            TensorRef::from_array_view((shape, values.as_slice())).map_err(|e| failed(&e))?;
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session
            .run(imgd_infer::ort::inputs![INPUT => tensor])
            .map_err(|e| failed(&e))?;
        let (shape, data) = outputs[OUTPUT]
            .try_extract_tensor::<f32>()
            .map_err(|e| failed(&e))?;
        let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
        if dims != [crops.len(), self.dim] {
            return Err(failed(&format!(
                "image_embeds of shape {dims:?} for {} images of {}-d vectors",
                crops.len(),
                self.dim
            )));
        }
        Ok(data.chunks_exact(dims[1]).map(normalized).collect())
    }
}

/// `row` scaled to unit length (a zero row stays zero).
fn normalized(row: &[f32]) -> Vec<f32> {
    let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        row.iter().map(|x| x / norm).collect()
    } else {
        row.to_vec()
    }
}
