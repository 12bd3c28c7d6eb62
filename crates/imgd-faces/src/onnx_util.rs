//! A thin layer over an ONNX Runtime session for models with one `f32` input.

use std::path::{Path, PathBuf};

use imgd_infer::OrtConfig;
use imgd_infer::ort::session::Session;
use imgd_infer::ort::value::TensorRef;

use crate::FacesError;

/// One output tensor: its shape and its data, row-major.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A session with one `f32` input.
pub(crate) struct Model {
    pub session: Session,
    pub path: PathBuf,
    input: String,
    /// The input's declared shape (`-1` for dynamic dimensions).
    pub input_shape: Vec<i64>,
    /// Output names, in the model's order.
    pub outputs: Vec<String>,
    /// Output ranks (number of dimensions), in the model's order.
    pub output_ranks: Vec<usize>,
}

impl Model {
    pub fn open(path: &Path, ort: &OrtConfig) -> Result<Model, FacesError> {
        let session = imgd_infer::session(path, ort)?;
        let inputs = session.inputs();
        if inputs.len() != 1 {
            return Err(FacesError::Model {
                model: path.to_path_buf(),
                message: format!("expected one input, found {}", inputs.len()),
            });
        }
        let input = inputs[0].name().to_string();
        let input_shape = match inputs[0].dtype() {
            imgd_infer::ort::value::ValueType::Tensor { shape, .. } => shape.to_vec(),
            other => {
                return Err(FacesError::Model {
                    model: path.to_path_buf(),
                    message: format!("the input is not a tensor: {other:?}"),
                });
            }
        };
        let outputs = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let output_ranks = session
            .outputs()
            .iter()
            .map(|o| match o.dtype() {
                imgd_infer::ort::value::ValueType::Tensor { shape, .. } => shape.len(),
                _ => 0,
            })
            .collect();
        Ok(Model {
            session,
            path: path.to_path_buf(),
            input,
            input_shape,
            outputs,
            output_ranks,
        })
    }

    /// Runs the model on one input of `shape` and returns every output, in the model's order.
    pub fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Output>, FacesError> {
        let error = |e: &dyn std::fmt::Display, path: &Path| FacesError::Model {
            model: path.to_path_buf(),
            message: e.to_string(),
        };
        let tensor = TensorRef::from_array_view((shape.to_vec(), data))
            .map_err(|e| error(&e, &self.path))?;
        let outputs = self
            .session
            .run(imgd_infer::ort::inputs![self.input.as_str() => tensor])
            .map_err(|e| error(&e, &self.path))?;
        let mut out = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let value = outputs.get(name).ok_or_else(|| FacesError::Model {
                model: self.path.clone(),
                message: format!("output `{name}` missing"),
            })?;
            let (shape, data) = value
                .try_extract_tensor::<f32>()
                .map_err(|e| error(&e, &self.path))?;
            out.push(Output {
                shape: shape.iter().map(|&d| d.max(0) as usize).collect(),
                data: data.to_vec(),
            });
        }
        Ok(out)
    }
}
