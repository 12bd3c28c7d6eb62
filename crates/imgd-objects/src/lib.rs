//! The `objects` module: open-vocabulary object detection with GroundingDINO (Liu et al.
//! 2023) through ONNX Runtime.
//!
//! The model folder (default `grounding-dino-tiny` under the models directory) holds an ONNX
//! export of `GroundingDinoForObjectDetection` with the input and output names of the
//! published exports (`pixel_values`, `input_ids`, `attention_mask`, and `token_type_ids` and
//! `pixel_mask` when the export takes them → `logits`, `pred_boxes`), its BERT
//! `tokenizer.json`, and optionally its
//! `config.json` (for `max_text_len`). The configured phrases ([`ObjectsConfig::prompts`]) are
//! tokenised once; each batch of images runs as one model call on `size × size` canvases
//! ([`preprocess`]), and [`postprocess`] turns the outputs into labelled boxes. An image
//! `has_text` when a box carries one of [`ObjectsConfig::text_prompts`]: the OCR module is
//! skipped on images without one.

pub mod loader;
pub mod postprocess;
pub mod preprocess;
pub mod prompt;

use std::path::{Path, PathBuf};

use image::RgbImage;
use imgd_core::{Module, ModuleSpec, ResultKey, ResultRow, RunsOn, SearchText, SqlValue};
use imgd_infer::batcher::{BatchConfig, BatchModel};
use imgd_infer::ort::value::TensorRef;
use imgd_infer::runner::{Batched, ImageInput, ModelRunner};
use imgd_infer::{InferError, OrtConfig, ShapedSessions};
use serde::{Deserialize, Serialize};

/// The `objects` module's declaration.
pub static OBJECTS_SPEC: ModuleSpec = ModuleSpec {
    name: "objects",
    bit: 4,
    summary: "open-vocabulary objects with boxes (GroundingDINO)",
    tier: Some(800),
    runs_on: RunsOn::InferenceThread,
    queued_by_default: true,
    result_table: "result_objects",
    result_key: ResultKey::Image,
    // Its table is in the store's first migrations.
    migrations: &[],
    search_text: &[SearchText {
        column: "labels",
        sql: "SELECT labels FROM result_objects WHERE image_id = ?1",
        postgres: None,
        words: None,
    }],
    gate: None,
    store_hook: None,
};

/// The `objects` module.
pub const OBJECTS: Module = Module::of(&OBJECTS_SPEC);

pub use loader::OBJECTS_LOADER;
pub use postprocess::{Detection, Thresholds};
pub use preprocess::Prepared;
pub use prompt::Prompt;

/// What can go wrong loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    /// ONNX Runtime could not load or open the model.
    #[error(transparent)]
    Infer(#[from] InferError),
    /// The model folder lacks a file.
    #[error("{0} is missing: see `imgd models list` for the objects model")]
    Missing(PathBuf),
    /// The tokenizer could not be read or does not fit the prompts.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The model is not a GroundingDINO export imgd can run, or a run failed.
    #[error("objects model {model}: {message}")]
    Model {
        /// The model file.
        model: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// `[objects]`: what to look for and how sure to be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObjectsConfig {
    /// The phrases to detect, each a noun phrase (`"street sign"`).
    pub prompts: Vec<String>,
    /// The phrases that mean the image shows text (they set `has_text`, which the OCR module
    /// waits for). Each should also be in `prompts`.
    pub text_prompts: Vec<String>,
    /// Least score for a box (the reference's `box_threshold`).
    pub box_threshold: f32,
    /// Least token probability for a phrase (the reference's `text_threshold`).
    pub text_threshold: f32,
    /// Most overlap between two boxes of one label.
    pub nms_iou: f32,
    /// Most boxes kept per image.
    pub max_detections: usize,
    /// The model's input canvas, in pixels (the image's long edge is resized to it).
    pub size: u32,
}

impl Default for ObjectsConfig {
    fn default() -> Self {
        let words = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        ObjectsConfig {
            prompts: words(&[
                "person", "dog", "cat", "bird", "horse", "car", "bicycle", "boat", "building",
                "tree", "flower", "food", "text", "sign", "document", "screen",
            ]),
            text_prompts: words(&["text", "sign", "document", "screen"]),
            box_threshold: 0.35,
            text_threshold: 0.25,
            nms_iou: 0.5,
            max_detections: 50,
            size: OBJECTS.tier().unwrap_or(800),
        }
    }
}

impl ObjectsConfig {
    /// The thresholds of [`postprocess`].
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            box_threshold: self.box_threshold,
            text_threshold: self.text_threshold,
            nms_iou: self.nms_iou,
        }
    }
}

/// The files of a model folder.
pub fn model_files(dir: &Path) -> [PathBuf; 2] {
    [dir.join("model.onnx"), dir.join("tokenizer.json")]
}

/// A loaded GroundingDINO with its tokenised prompts.
pub struct GroundingDino {
    sessions: ShapedSessions,
    /// Which of [`OPTIONAL_INPUTS`] the export takes.
    optional: [bool; 2],
    path: PathBuf,
    prompt: Prompt,
    config: ObjectsConfig,
    id: String,
    version: String,
}

/// What the model found on one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectsOutput {
    /// The boxes, best first, after non-maximum suppression.
    pub detections: Vec<Detection>,
    /// Whether a box carries a text prompt.
    pub has_text: bool,
}

impl GroundingDino {
    /// Loads the model in `dir` for the prompts of `config`.
    pub fn load(
        dir: &Path,
        ort: &OrtConfig,
        config: ObjectsConfig,
    ) -> Result<GroundingDino, ObjectsError> {
        let [model, tokenizer] = model_files(dir);
        for file in [&model, &tokenizer] {
            if !file.is_file() {
                return Err(ObjectsError::Missing(file.clone()));
            }
        }
        let max_tokens = std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|config| config.get("max_text_len").and_then(|v| v.as_u64()))
            .map_or(256, |n| n as usize);
        let prompt = Prompt::new(&tokenizer, &config.prompts, max_tokens)?;
        let sessions = ShapedSessions::open(&model, ort)?;
        let names: Vec<&str> = sessions.any().inputs().iter().map(|i| i.name()).collect();
        let optional = OPTIONAL_INPUTS.map(|name| names.contains(&name));
        for needed in INPUTS {
            if !names.contains(&needed) {
                return Err(ObjectsError::Model {
                    model,
                    message: format!(
                        "no input `{needed}` (inputs: {names:?}); export the model with the \
                         Hugging Face input names"
                    ),
                });
            }
        }
        let id = dir.file_name().map_or("grounding-dino".into(), |n| {
            n.to_string_lossy().into_owned()
        });
        let weights = imgd_vision::fingerprint(&model).map_err(|e| ObjectsError::Model {
            model: model.clone(),
            message: e.to_string(),
        })?;
        let version = format!("fp-{weights}+{}", settings_digest(&config));
        Ok(GroundingDino {
            sessions,
            optional,
            path: model,
            prompt,
            config,
            id,
            version,
        })
    }

    /// The tokenised prompts.
    pub fn prompt(&self) -> &Prompt {
        &self.prompt
    }

    /// The model's id (its folder's name) and version: a fingerprint of its weights and a
    /// digest of the `[objects]` settings, so that changing the prompts or thresholds
    /// re-queues the module (see the daemon's start).
    pub fn info(&self) -> (&str, &str) {
        (&self.id, &self.version)
    }

    /// The raw outputs for a batch: per image, `(logits, tokens per query, boxes)`.
    pub fn raw(&mut self, batch: &[&Prepared]) -> Result<Vec<RawOutput>, ObjectsError> {
        let Some(first) = batch.first() else {
            return Ok(Vec::new());
        };
        let side = first.size as usize;
        // With fixed shapes (the GPU) the batch is padded to a power of two with blank images,
        // whose outputs are dropped.
        let images = batch.len();
        let n = self.sessions.padded_batch(images, usize::MAX);
        let error = |message: String| ObjectsError::Model {
            model: self.path.clone(),
            message,
        };
        if batch.iter().any(|p| p.size != first.size) {
            return Err(error(
                "images of one batch must share their canvas size".into(),
            ));
        }
        let plane = side * side;
        let mut pixels = vec![0.0f32; n * 3 * plane];
        let mut mask = vec![1i64; n * plane];
        for (i, prepared) in batch.iter().enumerate() {
            prepared.write_into(
                &mut pixels[i * 3 * plane..][..3 * plane],
                &mut mask[i * plane..][..plane],
            );
        }
        let tokens = self.prompt.input_ids.len();
        let ids: Vec<i64> = (0..n)
            .flat_map(|_| self.prompt.input_ids.iter().copied())
            .collect();
        let types = vec![0i64; n * tokens];
        let attention = vec![1i64; n * tokens];
        let tensor_error = |e: imgd_infer::ort::Error| error(e.to_string());
        let mut inputs = imgd_infer::ort::inputs![
            "pixel_values" => TensorRef::from_array_view((vec![n, 3, side, side], pixels.as_slice())).map_err(tensor_error)?,
            "input_ids" => TensorRef::from_array_view((vec![n, tokens], ids.as_slice())).map_err(tensor_error)?,
            "attention_mask" => TensorRef::from_array_view((vec![n, tokens], attention.as_slice())).map_err(tensor_error)?,
        ];
        let [token_types, pixel_mask] = self.optional;
        if token_types {
            inputs.extend(imgd_infer::ort::inputs![
                "token_type_ids" => TensorRef::from_array_view((vec![n, tokens], types.as_slice())).map_err(tensor_error)?,
            ]);
        }
        if pixel_mask {
            inputs.extend(imgd_infer::ort::inputs![
                "pixel_mask" => TensorRef::from_array_view((vec![n, side, side], mask.as_slice())).map_err(tensor_error)?,
            ]);
        }
        let outputs = self
            .sessions
            .for_shape(&[n, 3, side, side])?
            .run(inputs)
            .map_err(tensor_error)?;
        let tensor = |name: &str| -> Result<(Vec<usize>, Vec<f32>), ObjectsError> {
            let value = outputs
                .get(name)
                .ok_or_else(|| error(format!("no output `{name}`")))?;
            let (shape, data) = value.try_extract_tensor::<f32>().map_err(tensor_error)?;
            Ok((
                shape.iter().map(|&d| d.max(0) as usize).collect(),
                data.to_vec(),
            ))
        };
        let (logits_shape, logits) = tensor("logits")?;
        let (boxes_shape, boxes) = tensor("pred_boxes")?;
        let (queries, width) = match (logits_shape.as_slice(), boxes_shape.as_slice()) {
            ([b, q, t], [b2, q2, 4]) if *b == n && *b2 == n && q == q2 && *t >= tokens => (*q, *t),
            _ => {
                return Err(error(format!(
                    "outputs of shapes {logits_shape:?} and {boxes_shape:?} for {n} images of \
                     {tokens} tokens"
                )));
            }
        };
        Ok((0..images)
            .map(|i| RawOutput {
                logits: logits[i * queries * width..][..queries * width].to_vec(),
                tokens: width,
                boxes: boxes[i * queries * 4..][..queries * 4].to_vec(),
            })
            .collect())
    }

    /// Labelled boxes for a batch of prepared images.
    pub fn detect(&mut self, batch: &[&Prepared]) -> Result<Vec<ObjectsOutput>, ObjectsError> {
        let thresholds = self.config.thresholds();
        Ok(self
            .raw(batch)?
            .into_iter()
            .map(|raw| {
                let found = postprocess::decode(
                    &raw.logits,
                    &raw.boxes,
                    raw.tokens,
                    &self.prompt,
                    &thresholds,
                );
                let detections =
                    postprocess::nms(found, thresholds.nms_iou, self.config.max_detections);
                let has_text = detections.iter().any(|d| {
                    self.config
                        .text_prompts
                        .iter()
                        .any(|t| t.trim().eq_ignore_ascii_case(&d.label))
                });
                ObjectsOutput {
                    detections,
                    has_text,
                }
            })
            .collect())
    }
}

/// 8 hex digits of SHA-256 over the settings that change the results (every field of
/// [`ObjectsConfig`]).
fn settings_digest(config: &ObjectsConfig) -> String {
    use sha2::{Digest, Sha256};
    let settings = serde_json::to_string(config).unwrap_or_default();
    Sha256::digest(settings.as_bytes())[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The inputs every export takes, by name.
const INPUTS: [&str; 3] = ["pixel_values", "input_ids", "attention_mask"];

/// Inputs fed when the export takes them: token types (all zeros) and the pixel mask (an
/// export without it assumes unpadded images; imgd's padding then counts as image).
const OPTIONAL_INPUTS: [&str; 2] = ["token_type_ids", "pixel_mask"];

/// One image's raw model outputs.
#[derive(Debug, Clone)]
pub struct RawOutput {
    /// `queries × tokens` logits.
    pub logits: Vec<f32>,
    /// Logits per query (the model's `max_text_len`).
    pub tokens: usize,
    /// `queries × 4` boxes, `cx, cy, w, h` relative to the image.
    pub boxes: Vec<f32>,
}

impl imgd_infer::runner::InputBytes for Prepared {
    fn input_bytes(&self) -> u64 {
        self.image.as_raw().len() as u64
    }
}

impl BatchModel for GroundingDino {
    type Input = Prepared;
    type Output = ObjectsOutput;
    type Error = ObjectsError;

    fn name(&self) -> &str {
        &self.id
    }

    fn run_batch(&mut self, inputs: &[Prepared]) -> Result<Vec<ObjectsOutput>, ObjectsError> {
        let batch: Vec<&Prepared> = inputs.iter().collect();
        self.detect(&batch)
    }
}

/// The `result_objects` row of one image.
pub fn objects_row(id: &str, version: &str, output: &ObjectsOutput) -> ResultRow {
    let mut labels: Vec<&str> = Vec::new();
    for detection in &output.detections {
        if !labels.contains(&detection.label.as_str()) {
            labels.push(&detection.label);
        }
    }
    ResultRow {
        module: OBJECTS,
        model_id: Some(id.to_string()),
        model_version: Some(version.to_string()),
        columns: vec![
            ("has_text", SqlValue::Integer(i64::from(output.has_text))),
            ("labels", SqlValue::Text(labels.join(" "))),
        ],
        data: serde_json::json!({ "detections": output.detections }),
        vectors: Vec::new(),
    }
}

/// The objects module's runner: GroundingDINO from `dir` on each image's objects tier
/// (`OBJECTS.tier()`, 800 px), batched up to `batch`; with the model id and version
/// its rows carry ([`GroundingDino::info`]).
pub fn runner(
    dir: &Path,
    ort: &OrtConfig,
    config: ObjectsConfig,
    batch: BatchConfig,
) -> Result<(Box<dyn ModelRunner>, String, String), ObjectsError> {
    let tier = OBJECTS.tier().unwrap_or(800);
    let size = config.size;
    let model = GroundingDino::load(dir, ort, config)?;
    let (id, version) = model.info();
    let (id, version) = (id.to_string(), version.to_string());
    let (row_id, row_version) = (id.clone(), version.clone());
    let runner = Box::new(Batched::new(
        OBJECTS,
        model,
        batch,
        move |image: &ImageInput<'_>| {
            let pixels: &RgbImage = image
                .tier_or_largest(tier)
                .ok_or_else(|| "no decoded tier for objects".to_string())?;
            Ok(preprocess::prepare(pixels, size))
        },
        move |output: ObjectsOutput| objects_row(&row_id, &row_version, &output),
    ));
    Ok((runner, id, version))
}
