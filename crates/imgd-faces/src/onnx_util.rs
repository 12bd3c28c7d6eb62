//! A thin layer over a model's ONNX Runtime sessions for models with one `f32` input whose
//! first dimension is the batch.

use std::path::{Path, PathBuf};

use imgd_infer::ort::value::TensorRef;
use imgd_infer::{OrtConfig, ShapedSessions};

use crate::FacesError;

/// One output tensor: its shape and its data, row-major.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A model with one `f32` input: one session, or one per input shape
/// ([`OrtConfig::fixed_shapes`], for the GPU).
pub(crate) struct Model {
    sessions: ShapedSessions,
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
        let sessions = ShapedSessions::open(path, ort)?;
        let session = sessions.any();
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
            sessions,
            path: path.to_path_buf(),
            input,
            input_shape,
            outputs,
            output_ranks,
        })
    }

    /// Runs the model on one input of `shape` (`shape[0]` rows) and returns every output, in
    /// the model's order.
    ///
    /// With fixed shapes the batch is padded with zero rows to a power of two and every output
    /// is cut back to `shape[0]` rows; an output whose length is not a whole number of rows of
    /// the padded batch is an error.
    pub fn run(&mut self, shape: &[usize], data: &[f32]) -> Result<Vec<Output>, FacesError> {
        let error = |e: &dyn std::fmt::Display, path: &Path| FacesError::Model {
            model: path.to_path_buf(),
            message: e.to_string(),
        };
        let rows = shape.first().copied().unwrap_or(0);
        let padded_rows = if rows == 0 {
            rows
        } else {
            self.sessions.padded_batch(rows, usize::MAX)
        };
        let mut padded_shape = shape.to_vec();
        let padded_data;
        let data = if padded_rows == rows {
            data
        } else {
            padded_shape[0] = padded_rows;
            let mut grown = data.to_vec();
            grown.resize(data.len() / rows * padded_rows, 0.0);
            padded_data = grown;
            &padded_data
        };
        let tensor = TensorRef::from_array_view((padded_shape.clone(), data))
            .map_err(|e| error(&e, &self.path))?;
        let outputs = self
            .sessions
            .for_shape(&padded_shape)?
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
            let mut shape: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            let mut data = data;
            if padded_rows != rows {
                if data.len() % padded_rows != 0 {
                    return Err(FacesError::Model {
                        model: self.path.clone(),
                        message: format!(
                            "output `{name}` of shape {shape:?} is not {padded_rows} rows"
                        ),
                    });
                }
                data = &data[..data.len() / padded_rows * rows];
                if let Some(first) = shape.first_mut()
                    && *first % padded_rows == 0
                {
                    *first = *first / padded_rows * rows;
                }
            }
            out.push(Output {
                shape,
                data: data.to_vec(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_shapes_pad_the_batch_and_cut_the_outputs_back() {
        let onet = imgd_infer::registry_dir().join("mtcnn/onet.onnx");
        assert!(
            onet.is_file(),
            "{} missing: run scripts/fetch-registry-models.sh",
            onet.display()
        );
        let ort = OrtConfig {
            intra_threads: 1,
            ..OrtConfig::default()
        };
        let fixed_ort = OrtConfig {
            fixed_shapes: true,
            ..ort.clone()
        };
        // Three different crops of O-Net's input size, [3, 48, 48, 3].
        let shape = [3, 48, 48, 3];
        let data: Vec<f32> = (0..3 * 48 * 48 * 3)
            .map(|i| ((i * 7919) % 255) as f32 / 128.0 - 1.0)
            .collect();
        let mut plain = Model::open(&onet, &ort).unwrap();
        let mut fixed = Model::open(&onet, &fixed_ort).unwrap();
        let want = plain.run(&shape, &data).unwrap();
        let got = fixed.run(&shape, &data).unwrap();
        assert_eq!(plain.sessions.shapes(), Vec::<Vec<usize>>::new());
        assert_eq!(fixed.sessions.shapes(), vec![vec![4, 48, 48, 3]]);
        assert_eq!(want.len(), 3);
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w.shape, g.shape);
            assert_eq!(w.shape[0], 3);
            assert_eq!(w.data.len(), g.data.len());
            for (a, b) in w.data.iter().zip(&g.data) {
                assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
            }
        }
    }
}
