//! SCRFD face detection with 5 landmarks (Guo et al. 2021), InsightFace's `det_10g.onnx`
//! (the `buffalo_l` pack; fetched by the user, no package registry ships it).
//!
//! Follows InsightFace's `model_zoo/scrfd.py`:
//!
//! - **Input**: the image letterboxed into a 640×640 square (resized with `INTER_LINEAR` to
//!   fit, kept at the top-left, black elsewhere), RGB, `(x − 127.5) / 128`, NCHW.
//! - **Outputs**: for each stride of the feature pyramid (8, 16, 32 with 2 anchors per cell
//!   for the 9- and 6-output models; 8…128 with 1 anchor for the 15- and 10-output ones) a
//!   score per anchor, 4 box distances and (with landmarks) 10 point offsets, all in units of
//!   the stride; outputs come as all scores, then all boxes, then all points. Anchors are
//!   cell-major: cell (x, y) of a `W`×`H` map is anchor `(y·W + x)·A + a`, centred at
//!   `(x·stride, y·stride)`.
//! - **Decode**: box = (cx − d₀, cy − d₁, cx + d₂, cy + d₃) × stride, point i =
//!   (cx + oᵢₓ, cy + oᵢᵧ) × stride; anchors with score ≥ 0.5; NMS at IoU 0.4; everything divided
//!   by the letterbox scale.
//!
//! Models whose outputs have a batch dimension run several images per call; `det_10g.onnx`
//! has none, so it runs one image per call.
//!
//! Reference run: `python -c "import insightface; …"` — `insightface.model_zoo.get_model(
//! 'det_10g.onnx').detect(img, input_size=(640, 640))`.

use std::path::Path;

use image::RgbImage;
use imgd_infer::OrtConfig;

use crate::geometry::{Overlap, Rect, nms};
use crate::onnx_util::Model;
use crate::resize::{Interpolation, resize_u8};
use crate::{Detection, FacesError};

/// SCRFD's settings; the defaults are InsightFace's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScrfdConfig {
    /// The square input side (InsightFace: 640).
    pub input_size: usize,
    /// The minimum face score (InsightFace: 0.5).
    pub score_threshold: f32,
    /// The NMS IoU threshold (InsightFace: 0.4).
    pub nms_threshold: f64,
}

impl Default for ScrfdConfig {
    fn default() -> Self {
        ScrfdConfig {
            input_size: 640,
            score_threshold: 0.5,
            nms_threshold: 0.4,
        }
    }
}

/// How a SCRFD model lays out its outputs, from their count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The feature strides.
    pub strides: Vec<usize>,
    /// Anchors per cell.
    pub anchors: usize,
    /// Whether the model predicts the 5 landmarks.
    pub keypoints: bool,
}

impl Layout {
    /// The layout of a model with `outputs` outputs (6, 9, 10 or 15), as InsightFace infers it.
    pub fn from_output_count(outputs: usize) -> Option<Layout> {
        let (strides, anchors, keypoints) = match outputs {
            6 => (vec![8, 16, 32], 2, false),
            9 => (vec![8, 16, 32], 2, true),
            10 => (vec![8, 16, 32, 64, 128], 1, false),
            15 => (vec![8, 16, 32, 64, 128], 1, true),
            _ => return None,
        };
        Some(Layout {
            strides,
            anchors,
            keypoints,
        })
    }
}

/// Decodes one image's raw outputs (each without a batch dimension, in the model's order) for
/// an input of `width`×`height`: every anchor scoring at least `threshold`, in input pixels,
/// before NMS. Outputs missing landmarks give zero landmarks.
pub fn decode(
    layout: &Layout,
    outputs: &[&[f32]],
    width: usize,
    height: usize,
    threshold: f32,
) -> Result<Vec<Detection>, String> {
    let fmc = layout.strides.len();
    let expected = if layout.keypoints { 3 * fmc } else { 2 * fmc };
    if outputs.len() != expected {
        return Err(format!(
            "expected {expected} outputs, got {}",
            outputs.len()
        ));
    }
    let mut found = Vec::new();
    for (i, &stride) in layout.strides.iter().enumerate() {
        let (w, h) = (width / stride, height / stride);
        let n = w * h * layout.anchors;
        let scores = outputs[i];
        let boxes = outputs[i + fmc];
        let points = layout.keypoints.then(|| outputs[i + 2 * fmc]);
        if scores.len() != n || boxes.len() != n * 4 || points.is_some_and(|p| p.len() != n * 10) {
            return Err(format!(
                "stride {stride}: expected {n} anchors for a {width}x{height} input, got {} \
                 scores and {} box values",
                scores.len(),
                boxes.len()
            ));
        }
        let s = stride as f32;
        for (k, &score) in scores.iter().enumerate() {
            if score < threshold {
                continue;
            }
            let cell = k / layout.anchors;
            let (cx, cy) = ((cell % w) as f32 * s, (cell / w) as f32 * s);
            let d = &boxes[k * 4..k * 4 + 4];
            let rect = Rect {
                x1: f64::from(cx - d[0] * s),
                y1: f64::from(cy - d[1] * s),
                x2: f64::from(cx + d[2] * s),
                y2: f64::from(cy + d[3] * s),
            };
            let mut landmarks = [[0f32; 2]; 5];
            if let Some(points) = points {
                let o = &points[k * 10..k * 10 + 10];
                for (j, p) in landmarks.iter_mut().enumerate() {
                    *p = [cx + o[2 * j] * s, cy + o[2 * j + 1] * s];
                }
            }
            found.push(Detection {
                rect,
                score,
                landmarks,
            });
        }
    }
    Ok(found)
}

/// NMS at `threshold` (InsightFace's, with "+1" areas), then everything divided by `scale`
/// (the letterbox's) and clipped to the `frame` (width, height).
pub fn finish(
    found: Vec<Detection>,
    threshold: f64,
    scale: f64,
    frame: (f64, f64),
) -> Vec<Detection> {
    let rects: Vec<Rect> = found.iter().map(|d| d.rect).collect();
    let scores: Vec<f64> = found.iter().map(|d| f64::from(d.score)).collect();
    nms(&rects, &scores, threshold, Overlap::Union)
        .into_iter()
        .map(|k| {
            let d = &found[k];
            let r = d.rect;
            Detection {
                rect: Rect {
                    x1: r.x1 / scale,
                    y1: r.y1 / scale,
                    x2: r.x2 / scale,
                    y2: r.y2 / scale,
                }
                .clip(frame.0, frame.1),
                score: d.score,
                landmarks: d.landmarks.map(|p| {
                    [
                        (f64::from(p[0]) / scale) as f32,
                        (f64::from(p[1]) / scale) as f32,
                    ]
                }),
            }
        })
        .collect()
}

/// The letterboxed input of one image (`size`×`size`, NCHW, normalised) and its scale.
pub fn letterbox(image: &RgbImage, size: usize) -> (Vec<f32>, f64) {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let ratio = h as f64 / w as f64;
    let (nw, nh) = if ratio > 1.0 {
        (((size as f64) / ratio) as usize, size)
    } else {
        (size, (size as f64 * ratio) as usize)
    };
    let (nw, nh) = (nw.max(1), nh.max(1));
    let scale = nh as f64 / h as f64;
    let resized = resize_u8(image.as_raw(), w, h, nw, nh, Interpolation::Linear);
    let plane = size * size;
    // Black padding normalises to (0 − 127.5) / 128.
    let mut out = vec![-127.5f32 / 128.0; 3 * plane];
    for y in 0..nh {
        for x in 0..nw {
            let s = (y * nw + x) * 3;
            for c in 0..3 {
                out[c * plane + y * size + x] = (f32::from(resized[s + c]) - 127.5) / 128.0;
            }
        }
    }
    (out, scale)
}

/// A SCRFD model.
pub struct Scrfd {
    model: Model,
    layout: Layout,
    batched: bool,
    config: ScrfdConfig,
}

impl Scrfd {
    /// Opens a SCRFD model file.
    pub fn open(path: &Path, ort: &OrtConfig, config: ScrfdConfig) -> Result<Scrfd, FacesError> {
        let model = Model::open(path, ort)?;
        // A model exported with a fixed input size runs at that size; `det_10g.onnx` takes any.
        let mut config = config;
        match model.input_shape.as_slice() {
            [_, 3, h, w] if *h > 0 && *w > 0 && h == w => config.input_size = *h as usize,
            [_, 3, h, w] if *h <= 0 && *w <= 0 => {}
            other => {
                return Err(FacesError::Model {
                    model: path.to_path_buf(),
                    message: format!(
                        "expected an input of [n, 3, h, w] with a square or dynamic size, \
                         found {other:?}"
                    ),
                });
            }
        }
        let layout =
            Layout::from_output_count(model.outputs.len()).ok_or_else(|| FacesError::Model {
                model: path.to_path_buf(),
                message: format!(
                    "{} outputs: not a SCRFD model (6, 9, 10 or 15 outputs)",
                    model.outputs.len()
                ),
            })?;
        // A batch dimension shows as a dynamic first input dimension and 3-D outputs.
        let batched = model.input_shape.first().is_some_and(|&d| d < 0)
            && model.output_ranks.first().is_some_and(|&r| r == 3);
        Ok(Scrfd {
            model,
            layout,
            batched,
            config,
        })
    }

    /// The layout of the model's outputs.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Detects the faces of several images; one list per image, best first.
    pub fn detect(&mut self, images: &[&RgbImage]) -> Result<Vec<Vec<Detection>>, FacesError> {
        let size = self.config.input_size;
        let plane = 3 * size * size;
        let mut results = Vec::with_capacity(images.len());
        let per_call = if self.batched { images.len().max(1) } else { 1 };
        for chunk in images.chunks(per_call) {
            let mut input = Vec::with_capacity(chunk.len() * plane);
            let mut scales = Vec::with_capacity(chunk.len());
            for image in chunk {
                let (data, scale) = letterbox(image, size);
                input.extend_from_slice(&data);
                scales.push(scale);
            }
            let outputs = self.model.run(&[chunk.len(), 3, size, size], &input)?;
            for (n, (image, scale)) in chunk.iter().zip(scales).enumerate() {
                let per_image: Vec<&[f32]> = outputs
                    .iter()
                    .map(|o| {
                        let len = o.data.len() / chunk.len();
                        &o.data[n * len..(n + 1) * len]
                    })
                    .collect();
                let found = decode(
                    &self.layout,
                    &per_image,
                    size,
                    size,
                    self.config.score_threshold,
                )
                .map_err(|message| FacesError::Model {
                    model: self.model.path.clone(),
                    message,
                })?;
                let frame = (f64::from(image.width()), f64::from(image.height()));
                results.push(finish(found, self.config.nms_threshold, scale, frame));
            }
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One planted anchor: (stride index, cell x, cell y, anchor, score, box distances,
    /// point offsets).
    type Planted = (usize, usize, usize, usize, f32, [f32; 4], [f32; 10]);

    /// Synthetic outputs of a 9-output model: all scores 0 except the planted anchors.
    fn synthetic(width: usize, height: usize, faces: &[Planted]) -> Vec<Vec<f32>> {
        let layout = Layout::from_output_count(9).unwrap();
        let mut scores = Vec::new();
        let mut boxes = Vec::new();
        let mut points = Vec::new();
        for &stride in &layout.strides {
            let n = (width / stride) * (height / stride) * layout.anchors;
            scores.push(vec![0.0; n]);
            boxes.push(vec![0.0; n * 4]);
            points.push(vec![0.0; n * 10]);
        }
        for &(si, x, y, a, score, d, o) in faces {
            let w = width / layout.strides[si];
            let k = (y * w + x) * layout.anchors + a;
            scores[si][k] = score;
            boxes[si][k * 4..k * 4 + 4].copy_from_slice(&d);
            points[si][k * 10..k * 10 + 10].copy_from_slice(&o);
        }
        scores.into_iter().chain(boxes).chain(points).collect()
    }

    #[test]
    fn strided_anchors_decode_to_boxes_and_points() {
        let kp = [-1.0, -0.5, 1.0, -0.5, 0.0, 0.0, -0.75, 1.0, 0.75, 1.0];
        // Stride 8, cell (3, 2), anchor 1: centre (24, 16).
        // Stride 16, cell (1, 0), anchor 0: centre (16, 0).
        let outputs = synthetic(
            64,
            32,
            &[
                (0, 3, 2, 1, 0.9, [1.0, 1.5, 2.0, 2.5], kp),
                (1, 1, 0, 0, 0.6, [0.5, 0.0, 0.5, 1.0], kp),
                (2, 0, 0, 0, 0.4, [1.0; 4], kp), // below the threshold
            ],
        );
        let refs: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
        let layout = Layout::from_output_count(9).unwrap();
        let found = decode(&layout, &refs, 64, 32, 0.5).unwrap();
        assert_eq!(found.len(), 2);
        let a = &found[0];
        assert_eq!(a.score, 0.9);
        assert_eq!(
            (a.rect.x1, a.rect.y1, a.rect.x2, a.rect.y2),
            (24.0 - 8.0, 16.0 - 12.0, 24.0 + 16.0, 16.0 + 20.0)
        );
        assert_eq!(a.landmarks[0], [24.0 - 8.0, 16.0 - 4.0]);
        assert_eq!(a.landmarks[2], [24.0, 16.0]);
        assert_eq!(a.landmarks[4], [24.0 + 6.0, 16.0 + 8.0]);
        let b = &found[1];
        assert_eq!(
            (b.rect.x1, b.rect.y1, b.rect.x2, b.rect.y2),
            (16.0 - 8.0, 0.0, 16.0 + 8.0, 16.0)
        );
        assert_eq!(b.landmarks[1], [16.0 + 16.0, -8.0]);

        // Undoing a letterbox scale of 0.5 doubles everything; NMS keeps both (no overlap
        // above 0.4) with the best first.
        let done = finish(found, 0.4, 0.5, (1000.0, 1000.0));
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].rect.x1, 32.0);
        assert_eq!(done[0].landmarks[4], [60.0, 48.0]);
    }

    #[test]
    fn overlapping_anchors_collapse_and_bad_shapes_are_errors() {
        let kp = [0.0; 10];
        let outputs = synthetic(
            64,
            32,
            &[
                (0, 3, 2, 0, 0.7, [2.0, 2.0, 2.0, 2.0], kp),
                (0, 3, 2, 1, 0.8, [2.0, 2.0, 2.1, 2.0], kp),
            ],
        );
        let refs: Vec<&[f32]> = outputs.iter().map(Vec::as_slice).collect();
        let layout = Layout::from_output_count(9).unwrap();
        let found = decode(&layout, &refs, 64, 32, 0.5).unwrap();
        let done = finish(found, 0.4, 1.0, (64.0, 32.0));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].score, 0.8);
        // Clipped to the frame.
        assert_eq!(done[0].rect.y2, 32.0);
        let error = decode(&layout, &refs[..8], 64, 32, 0.5).unwrap_err();
        assert!(error.contains("expected 9 outputs"), "{error}");
        let error = decode(&layout, &refs, 128, 32, 0.5).unwrap_err();
        assert!(error.contains("stride 8"), "{error}");
        assert_eq!(Layout::from_output_count(7), None);
    }

    #[test]
    fn letterbox_keeps_the_aspect_ratio_at_the_top_left() {
        let image = RgbImage::from_pixel(200, 100, image::Rgb([255, 255, 255]));
        let (data, scale) = letterbox(&image, 64);
        assert_eq!(scale, 0.32);
        let white = (255.0 - 127.5) / 128.0;
        let black = -127.5 / 128.0;
        // Row 0..32 is the image, 32..64 padding, in each of the 3 planes.
        for c in 0..3 {
            assert_eq!(data[c * 64 * 64 + 31 * 64 + 63], white);
            assert_eq!(data[c * 64 * 64 + 32 * 64], black);
        }
    }
}
