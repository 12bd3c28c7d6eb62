//! From GroundingDINO's raw outputs to labelled boxes.
//!
//! The model gives, per image, `Q` queries with a box (`cx, cy, w, h`, relative to the image
//! without its padding) and a logit per text token. As the reference's
//! `post_process_grounded_object_detection`: a query's score is its highest token
//! probability (sigmoid), and it is kept when the score passes `box_threshold`. The reference
//! labels a box with every token above `text_threshold`, decoded together (often several
//! phrases run into one label); imgd labels it with the single phrase whose best token is
//! the most probable, and drops the box when no phrase passes `text_threshold`. Boxes of one
//! label that overlap by more than `nms_iou` are then reduced to the best one (non-maximum
//! suppression, which the reference leaves to the caller).

use serde::{Deserialize, Serialize};

use crate::prompt::Prompt;

/// One labelled box.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    /// The phrase, as configured.
    pub label: String,
    /// The query's score: its highest token probability.
    pub score: f32,
    /// `[x0, y0, x1, y1]` as fractions of the image's width and height.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// Thresholds of [`decode`] and [`nms`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Least score for a box.
    pub box_threshold: f32,
    /// Least token probability for a phrase.
    pub text_threshold: f32,
    /// Most overlap (intersection over union) between two kept boxes of one label.
    pub nms_iou: f32,
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A query's box in corner form, unclamped: `cx, cy, w, h` → `x0, y0, x1, y1`.
pub fn corners(cxcywh: &[f32]) -> [f32; 4] {
    let (cx, cy, w, h) = (cxcywh[0], cxcywh[1], cxcywh[2], cxcywh[3]);
    [cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h]
}

/// One query's score and best phrase (index and probability), from its `logits` (one per
/// token position; positions past the caption are ignored).
pub fn ground(logits: &[f32], prompt: &Prompt) -> (f32, Option<(usize, f32)>) {
    let mut score = 0.0f32;
    let mut best: Option<(usize, f32)> = None;
    for (position, &logit) in logits.iter().enumerate() {
        let probability = if logit.is_nan() { 0.0 } else { sigmoid(logit) };
        score = score.max(probability);
        let Some(Some(phrase)) = prompt.phrase_of_token.get(position) else {
            continue;
        };
        if best.is_none_or(|(_, p)| probability > p) {
            best = Some((*phrase, probability));
        }
    }
    (score, best)
}

/// The detections of one image: `logits` is `queries × tokens`, `boxes` is `queries × 4`.
/// Returned in query order, before [`nms`].
pub fn decode(
    logits: &[f32],
    boxes: &[f32],
    tokens: usize,
    prompt: &Prompt,
    thresholds: &Thresholds,
) -> Vec<Detection> {
    let queries = boxes.len() / 4;
    let mut detections = Vec::new();
    for query in 0..queries {
        let row = &logits[query * tokens..][..tokens];
        let (score, best) = ground(row, prompt);
        if score <= thresholds.box_threshold {
            continue;
        }
        let Some((phrase, probability)) = best else {
            continue;
        };
        if probability <= thresholds.text_threshold {
            continue;
        }
        detections.push(Detection {
            label: prompt.phrases[phrase].clone(),
            score,
            bbox: corners(&boxes[query * 4..][..4]),
        });
    }
    detections
}

/// Intersection over union of two corner boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Non-maximum suppression per label: best score first, a box is dropped when it overlaps a
/// kept box of its label by more than `max_iou`. Returns at most `limit` boxes, best first,
/// clamped to the image.
pub fn nms(mut detections: Vec<Detection>, max_iou: f32, limit: usize) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for detection in detections {
        if kept.len() == limit {
            break;
        }
        let overlaps = kept
            .iter()
            .any(|k| k.label == detection.label && iou(&k.bbox, &detection.bbox) > max_iou);
        if !overlaps {
            kept.push(detection);
        }
    }
    for detection in &mut kept {
        for v in &mut detection.bbox {
            *v = v.clamp(0.0, 1.0);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, score: f32, bbox: [f32; 4]) -> Detection {
        Detection {
            label: label.into(),
            score,
            bbox,
        }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = [0.0, 0.0, 0.5, 0.5];
        assert!((iou(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[0.5, 0.5, 1.0, 1.0]), 0.0);
        // Half of a overlaps b of the same size: 0.125 / (0.25 + 0.25 - 0.125).
        let b = [0.25, 0.0, 0.75, 0.5];
        assert!((iou(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_per_label() {
        let boxes = vec![
            det("cat", 0.6, [0.0, 0.0, 0.5, 0.5]),
            det("cat", 0.9, [0.02, 0.0, 0.52, 0.5]),
            det("dog", 0.5, [0.0, 0.0, 0.5, 0.5]),
            det("cat", 0.7, [0.5, 0.5, 1.0, 1.2]),
        ];
        let kept = nms(boxes, 0.5, 10);
        let summary: Vec<(&str, f32)> = kept.iter().map(|d| (d.label.as_str(), d.score)).collect();
        assert_eq!(summary, vec![("cat", 0.9), ("cat", 0.7), ("dog", 0.5)]);
        assert_eq!(kept[1].bbox, [0.5, 0.5, 1.0, 1.0], "clamped to the image");
        assert_eq!(nms(kept, 0.5, 2).len(), 2);
    }

    #[test]
    fn nan_and_infinite_logits_never_make_a_box() {
        let prompt = Prompt {
            phrases: vec!["cat".into()],
            text: "cat .".into(),
            input_ids: vec![101, 1, 1012, 102],
            phrase_of_token: vec![None, Some(0), None, None],
        };
        let thresholds = Thresholds {
            box_threshold: 0.3,
            text_threshold: 0.2,
            nms_iou: 0.5,
        };
        // Query 0: NaN on the phrase; query 1: -inf everywhere; query 2: a real cat.
        let logits = [
            0.0,
            f32::NAN,
            0.0,
            0.0, //
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            f32::NEG_INFINITY, //
            -5.0,
            3.0,
            -5.0,
            -5.0,
        ];
        let boxes = [0.5, 0.5, 0.2, 0.2].repeat(3);
        let found = decode(&logits, &boxes, 4, &prompt, &thresholds);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].label, "cat");
        assert!((found[0].score - 1.0 / (1.0 + (-3.0f32).exp())).abs() < 1e-6);
    }

    #[test]
    fn corners_of_a_centred_box() {
        assert_eq!(corners(&[0.5, 0.5, 0.2, 0.4]), [0.4, 0.3, 0.6, 0.7]);
    }
}
