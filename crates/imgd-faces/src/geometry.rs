//! Boxes, overlap and non-maximum suppression, in the detectors' conventions.

use serde::{Deserialize, Serialize};

/// A box by its corners (`x1`, `y1`) top-left and (`x2`, `y2`) bottom-right, in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rect {
    /// Left edge.
    pub x1: f64,
    /// Top edge.
    pub y1: f64,
    /// Right edge.
    pub x2: f64,
    /// Bottom edge.
    pub y2: f64,
}

impl Rect {
    /// A box from its top-left corner and size.
    pub fn from_xywh(x: f64, y: f64, w: f64, h: f64) -> Rect {
        Rect {
            x1: x,
            y1: y,
            x2: x + w,
            y2: y + h,
        }
    }

    /// Width.
    pub fn width(&self) -> f64 {
        self.x2 - self.x1
    }

    /// Height.
    pub fn height(&self) -> f64 {
        self.y2 - self.y1
    }

    /// Intersection over union, continuous (no +1 pixel convention): what acceptance tests
    /// measure.
    pub fn iou(&self, other: &Rect) -> f64 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = w * h;
        let union = self.width() * self.height() + other.width() * other.height() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }

    /// Clipped to a `width`×`height` frame.
    pub fn clip(&self, width: f64, height: f64) -> Rect {
        Rect {
            x1: self.x1.clamp(0.0, width),
            y1: self.y1.clamp(0.0, height),
            x2: self.x2.clamp(0.0, width),
            y2: self.y2.clamp(0.0, height),
        }
    }
}

/// How NMS measures the overlap of two boxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// Intersection over union.
    Union,
    /// Intersection over the smaller area (MTCNN's last stage).
    Min,
}

/// Greedy non-maximum suppression with the "+1 pixel" areas of the MTCNN and SCRFD reference
/// code: visits boxes by decreasing score, keeps one, drops every later box that overlaps it
/// by more than `threshold`. Returns the kept indices, best first.
///
/// Ties in score keep the later index first, as NumPy's `argsort` (taken from the end) does
/// for the small arrays MTCNN sorts.
pub fn nms(boxes: &[Rect], scores: &[f64], threshold: f64, overlap: Overlap) -> Vec<usize> {
    debug_assert_eq!(boxes.len(), scores.len());
    let area = |b: &Rect| (b.x2 - b.x1 + 1.0) * (b.y2 - b.y1 + 1.0);
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    // Ascending and stable, then taken from the end: the best first.
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut keep = Vec::new();
    while let Some(i) = order.pop() {
        keep.push(i);
        let bi = &boxes[i];
        let ai = area(bi);
        order.retain(|&j| {
            let bj = &boxes[j];
            let w = (bi.x2.min(bj.x2) - bi.x1.max(bj.x1) + 1.0).max(0.0);
            let h = (bi.y2.min(bj.y2) - bi.y1.max(bj.y1) + 1.0).max(0.0);
            let inter = w * h;
            let o = match overlap {
                Overlap::Union => inter / (ai + area(bj) - inter),
                Overlap::Min => inter / ai.min(area(bj)),
            };
            o <= threshold
        });
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let a = Rect::from_xywh(0.0, 0.0, 10.0, 10.0);
        let b = Rect::from_xywh(5.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&b) - 50.0 / 150.0).abs() < 1e-12);
        assert_eq!(a.iou(&a), 1.0);
        assert_eq!(a.iou(&Rect::from_xywh(20.0, 20.0, 1.0, 1.0)), 0.0);
    }

    #[test]
    fn nms_keeps_the_best_of_each_cluster() {
        let boxes = [
            Rect::from_xywh(0.0, 0.0, 10.0, 10.0),
            Rect::from_xywh(1.0, 1.0, 10.0, 10.0),
            Rect::from_xywh(50.0, 50.0, 10.0, 10.0),
            Rect::from_xywh(2.0, 2.0, 3.0, 3.0),
        ];
        let scores = [0.8, 0.9, 0.7, 0.95];
        assert_eq!(nms(&boxes, &scores, 0.5, Overlap::Union), vec![3, 1, 2]);
        // Measured against the smaller box, the small box inside swallows its neighbours.
        assert_eq!(nms(&boxes, &scores, 0.7, Overlap::Min), vec![3, 2]);
    }
}
