//! The LAION improved aesthetic predictor: a score from about 1 to 10 for how good a photo
//! looks, from its CLIP ViT-L/14 image embedding.
//!
//! - Source: <https://github.com/christophschuhmann/improved-aesthetic-predictor>
//!   (`simple_inference.py`); weights `sac+logos+ava1-l14-linearMSE.pth`, trained on the SAC,
//!   LAION-Logos and AVA ratings over L2-normalised OpenAI CLIP ViT-L/14 embeddings.
//! - Architecture, as in the reference: `Linear(768, 1024)`, `Dropout(0.2)`,
//!   `Linear(1024, 128)`, `Dropout(0.2)`, `Linear(128, 64)`, `Dropout(0.1)`, `Linear(64, 16)`,
//!   `Linear(16, 1)`, no activations (the reference has its ReLUs commented out). Dropout is the
//!   identity at inference, so the tensors are `layers.{0,2,4,6,7}.{weight,bias}`.
//! - Weights: the reference `.pth` state dict (read with candle's pickle reader) or the same
//!   tensors in a `.safetensors` file. The layer widths are read from the tensors, so a model
//!   of another width with the same structure loads too (the parity fixture is one).
//!
//! Run it (the parity fixture, random weights made by `scripts/make-fixtures.py`):
//!
//! ```
//! # fn main() -> Result<(), imgd_clip::ClipError> {
//! use candle_core::Device;
//! use imgd_clip::aesthetic::AestheticMlp;
//!
//! let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clip/tiny-aesthetic");
//! let mlp = AestheticMlp::load(&dir, &Device::Cpu)?;
//! let embedding = vec![1.0 / (mlp.input_dim() as f32).sqrt(); mlp.input_dim()];
//! let scores = mlp.score(&[embedding])?;
//! assert_eq!(scores.len(), 1);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module as _, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::ClipError;
use crate::config::ModelInfo;

/// The state-dict prefixes of the five linear layers, in order.
const LAYERS: [&str; 5] = ["layers.0", "layers.2", "layers.4", "layers.6", "layers.7"];

/// The reference's layer widths: 768 → 1024 → 128 → 64 → 16 → 1.
pub const REFERENCE_WIDTHS: [usize; 6] = [768, 1024, 128, 64, 16, 1];

/// The lowest and highest score stored (the scale the predictor was trained on).
pub const SCORE_RANGE: (f32, f32) = (1.0, 10.0);

/// The aesthetic MLP (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct AestheticMlp {
    layers: Vec<Linear>,
    widths: Vec<usize>,
    device: Device,
    path: PathBuf,
}

impl AestheticMlp {
    /// Loads the MLP from `path`: a `.safetensors` or `.pth`/`.pt` file, or a folder holding
    /// `model.safetensors` or one `.pth` file.
    pub fn load(path: &Path, device: &Device) -> Result<Self, ClipError> {
        let file = weights_file(path)?;
        let tensors: HashMap<String, Tensor> = match file.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => candle_core::safetensors::load(&file, &Device::Cpu)?,
            _ => candle_core::pickle::read_all(&file)?.into_iter().collect(),
        };
        let mut mlp = Self::from_tensors(tensors, device)?;
        mlp.path = file;
        Ok(mlp)
    }

    /// Builds the MLP from its state dict (`layers.N.weight`, `layers.N.bias`).
    pub fn from_tensors(
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Result<Self, ClipError> {
        let mut widths = Vec::with_capacity(LAYERS.len() + 1);
        for (i, prefix) in LAYERS.iter().enumerate() {
            let name = format!("{prefix}.weight");
            let weight = tensors.get(&name).ok_or_else(|| {
                ClipError::Config(format!(
                    "the aesthetic weights have no `{name}`: not an improved-aesthetic-predictor MLP"
                ))
            })?;
            let (out, inp) = weight.dims2()?;
            if i == 0 {
                widths.push(inp);
            } else if widths[i] != inp {
                return Err(ClipError::Config(format!(
                    "`{name}` takes {inp} inputs but the previous layer gives {}",
                    widths[i]
                )));
            }
            widths.push(out);
        }
        if widths.last() != Some(&1) {
            return Err(ClipError::Config(
                "the last aesthetic layer must have one output".into(),
            ));
        }
        let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
        let layers = LAYERS
            .iter()
            .enumerate()
            .map(|(i, prefix)| candle_nn::linear(widths[i], widths[i + 1], vb.pp(*prefix)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(AestheticMlp {
            layers,
            widths,
            device: device.clone(),
            path: PathBuf::new(),
        })
    }

    /// The embedding width the MLP takes (768 for the reference, CLIP ViT-L/14's).
    pub fn input_dim(&self) -> usize {
        self.widths[0]
    }

    /// Every layer width, input first.
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// The file the weights came from (empty when built from tensors).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw predictions for `(n, input_dim)` L2-normalised embeddings: `(n, 1)`.
    pub fn forward(&self, embeddings: &Tensor) -> Result<Tensor, ClipError> {
        let mut xs = embeddings.clone();
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        Ok(xs)
    }

    /// The raw prediction for each embedding, in one batch. The embeddings are L2-normalised
    /// first, as the reference does (normalising a normalised vector changes nothing).
    pub fn score(&self, embeddings: &[Vec<f32>]) -> Result<Vec<f32>, ClipError> {
        if embeddings.is_empty() {
            return Ok(Vec::new());
        }
        let dim = self.input_dim();
        if let Some(bad) = embeddings.iter().find(|e| e.len() != dim) {
            return Err(ClipError::Input(format!(
                "an embedding has {} values, the aesthetic MLP takes {dim}",
                bad.len()
            )));
        }
        let flat: Vec<f32> = embeddings.iter().flatten().copied().collect();
        let xs = Tensor::from_vec(flat, (embeddings.len(), dim), &self.device)?;
        let norm = xs.sqr()?.sum_keepdim(1)?.sqrt()?;
        let xs = xs.broadcast_div(&norm)?;
        Ok(self.forward(&xs)?.flatten_all()?.to_vec1()?)
    }
}

/// The score stored in `result_aesthetic.score`: the raw prediction clamped to
/// [`SCORE_RANGE`] (the raw value is kept in the row's data).
pub fn stored_score(raw: f32) -> f32 {
    raw.clamp(SCORE_RANGE.0, SCORE_RANGE.1)
}

/// The weights file for `path` (a file, or a folder with `model.safetensors` or one `.pth`).
pub fn weights_file(path: &Path) -> Result<PathBuf, ClipError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let safetensors = path.join("model.safetensors");
    if safetensors.is_file() {
        return Ok(safetensors);
    }
    let pth: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|source| ClipError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pth" || e == "pt"))
        .collect();
    match pth.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ClipError::MissingFile(safetensors)),
        _ => Err(ClipError::Config(format!(
            "{} holds several .pth files; name one",
            path.display()
        ))),
    }
}

/// The id and version of the aesthetic model at `path` on top of the CLIP model `clip`: the
/// MLP's own id (`imgd_model_id` in a `config.json` beside it, else `laion-aesthetic`) and a
/// version naming both the MLP's weights and the CLIP model, since either changes the scores.
pub fn aesthetic_info(path: &Path, clip: &ModelInfo) -> Result<ModelInfo, ClipError> {
    let file = weights_file(path)?;
    let dir = if path.is_dir() {
        path
    } else {
        path.parent().unwrap_or(Path::new("."))
    };
    let own = ModelInfo::resolve(dir, &file, Some("laion-aesthetic"))?;
    // `resolve` falls back to the folder name only when no fallback id is given.
    Ok(ModelInfo {
        id: own.id,
        version: format!("{}+{}@{}", own.version, clip.id, clip.version),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    #[test]
    fn the_reference_shape_builds_and_scores_a_batch_like_singles() {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        for (i, prefix) in LAYERS.iter().enumerate() {
            candle_nn::linear(REFERENCE_WIDTHS[i], REFERENCE_WIDTHS[i + 1], vb.pp(*prefix))
                .unwrap();
        }
        let tensors: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
            .collect();
        let mlp = AestheticMlp::from_tensors(tensors, &Device::Cpu).unwrap();
        assert_eq!(mlp.widths(), REFERENCE_WIDTHS);
        let a: Vec<f32> = (0..768).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..768).map(|i| (i as f32 * 0.11).cos()).collect();
        let batch = mlp.score(&[a.clone(), b.clone()]).unwrap();
        let single = [mlp.score(&[a]).unwrap()[0], mlp.score(&[b]).unwrap()[0]];
        for (x, y) in batch.iter().zip(single) {
            assert!((x - y).abs() <= 1e-5 * y.abs().max(1.0));
        }
        assert!(mlp.score(&[vec![0.0; 3]]).is_err());
    }

    #[test]
    fn a_wrong_state_dict_is_refused() {
        let err = AestheticMlp::from_tensors(HashMap::new(), &Device::Cpu).unwrap_err();
        assert!(err.to_string().contains("layers.0.weight"), "{err}");
        assert_eq!(stored_score(11.5), 10.0);
        assert_eq!(stored_score(0.2), 1.0);
        assert_eq!(stored_score(5.5), 5.5);
    }
}
