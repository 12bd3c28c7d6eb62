//! ArcFace face embeddings (Deng et al. 2019): InsightFace's `w600k_r50.onnx` (ResNet-50
//! trained on WebFace600K, the `buffalo_l` pack; fetched by the user, no package registry
//! ships a face-embedding model).
//!
//! Follows InsightFace's `model_zoo/arcface_onnx.py`: the 112×112 aligned crop
//! ([`crate::align`]), RGB, `(x − 127.5) / 127.5`, NCHW, batched; the 512-d output is
//! L2-normalised here, so the cosine similarity of two faces is the dot product of their
//! vectors.
//!
//! Reference run: `python -c "import insightface; …"` —
//! `insightface.model_zoo.get_model('w600k_r50.onnx').get_feat([aligned_bgr])`.

use std::path::Path;

use image::RgbImage;
use imgd_infer::OrtConfig;

use crate::FacesError;
use crate::align::ALIGNED_SIZE;
use crate::onnx_util::Model;

/// Most crops per call.
const MAX_PER_CALL: usize = 64;

/// An ArcFace model.
pub struct ArcFace {
    model: Model,
    batched: bool,
}

impl ArcFace {
    /// Opens an ArcFace model file (input `[n, 3, 112, 112]`, output `[n, d]`).
    pub fn open(path: &Path, ort: &OrtConfig) -> Result<ArcFace, FacesError> {
        let model = Model::open(path, ort)?;
        let size = i64::from(ALIGNED_SIZE);
        match model.input_shape.as_slice() {
            [_, 3, h, w] if (*h == size || *h < 0) && (*w == size || *w < 0) => {}
            other => {
                return Err(FacesError::Model {
                    model: path.to_path_buf(),
                    message: format!("expected an input of [n, 3, 112, 112], found {other:?}"),
                });
            }
        }
        let batched = model.input_shape[0] < 0;
        Ok(ArcFace { model, batched })
    }

    /// The normalised input of one aligned crop, NCHW.
    pub fn preprocess(crop: &RgbImage, out: &mut Vec<f32>) {
        let plane = (crop.width() * crop.height()) as usize;
        let start = out.len();
        out.resize(start + 3 * plane, 0.0);
        for (i, p) in crop.pixels().enumerate() {
            for c in 0..3 {
                out[start + c * plane + i] = (f32::from(p[c]) - 127.5) / 127.5;
            }
        }
    }

    /// Embeds aligned 112×112 crops: one L2-normalised vector per crop.
    pub fn embed(&mut self, crops: &[RgbImage]) -> Result<Vec<Vec<f32>>, FacesError> {
        let side = ALIGNED_SIZE as usize;
        let per_call = if self.batched { MAX_PER_CALL } else { 1 };
        let mut vectors = Vec::with_capacity(crops.len());
        for chunk in crops.chunks(per_call) {
            let mut input = Vec::with_capacity(chunk.len() * 3 * side * side);
            for crop in chunk {
                Self::preprocess(crop, &mut input);
            }
            let outputs = self.model.run(&[chunk.len(), 3, side, side], &input)?;
            let out = outputs.first().ok_or_else(|| FacesError::Model {
                model: self.model.path.clone(),
                message: "no output".into(),
            })?;
            if out.data.is_empty() || out.data.len() % chunk.len() != 0 {
                return Err(FacesError::Model {
                    model: self.model.path.clone(),
                    message: format!("output of shape {:?} for {} crops", out.shape, chunk.len()),
                });
            }
            let dim = out.data.len() / chunk.len();
            vectors.extend(out.data.chunks(dim).map(normalised));
        }
        Ok(vectors)
    }
}

/// `v / |v|` (a zero vector stays zero).
pub fn normalised(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        v.to_vec()
    }
}
