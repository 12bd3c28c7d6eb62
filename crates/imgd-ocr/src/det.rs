//! Text detection: the DB (differentiable binarisation) model's input and post-processing.
//!
//! Pre-processing: the long side is scaled down to at most [`OcrConfig::det_long_side`]
//! (never up), both sides rounded to multiples of 32, BGR planes normalised to [-1, 1].
//! Post-processing (RapidOCR's `DBPostProcess`): threshold the probability map, dilate by
//! 2×2, take each 8-connected region's minimum-area rectangle, drop small ones and those whose
//! mean probability is under `box_thresh`, grow ("unclip") each rectangle by
//! `area × unclip_ratio / perimeter`, scale it back to the image, and sort boxes into reading
//! order.

use image::RgbImage;

use crate::OcrConfig;
use crate::geometry::{
    Point, area_perimeter, mean_in_quad, min_area_rect, mini_box_order, order_clockwise, regions,
    resize_normalize_into,
};

/// A text box (top-left, top-right, bottom-right, bottom-left) and its mean probability.
pub type ScoredBox = ([Point; 4], f32);

/// The smallest rectangle side kept before unclipping (RapidOCR's `min_size`).
const MIN_SIZE: f32 = 3.0;
/// Boxes whose top edges differ by less than this many pixels are on one line.
const LINE_Y_THRESHOLD: f32 = 10.0;

/// The detector input size for an image: long side at most `long_side`, multiples of 32.
pub fn input_size(width: u32, height: u32, long_side: u32) -> (usize, usize) {
    let long = width.max(height) as f32;
    let ratio = if long > long_side as f32 {
        long_side as f32 / long
    } else {
        1.0
    };
    let round32 = |v: u32| {
        let scaled = (v as f32 * ratio).trunc();
        (((scaled / 32.0).round_ties_even() as usize) * 32).max(32)
    };
    (round32(width), round32(height))
}

/// Writes the detector input of `image` (resized to `width × height`) into `out`
/// (3 × height × width).
pub fn preprocess_into(image: &RgbImage, width: usize, height: usize, out: &mut [f32]) {
    resize_normalize_into(image, width, height, width, out);
}

/// One image's detector input, made ahead of the batch (on a decode thread).
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorInput {
    /// The input width ([`input_size`]).
    pub width: usize,
    /// The input height.
    pub height: usize,
    /// The normalised planes, 3 × height × width.
    pub planes: Vec<f32>,
}

impl DetectorInput {
    /// The detector input of `image` with its long side at most `long_side`.
    pub fn new(image: &RgbImage, long_side: u32) -> Self {
        let (width, height) = input_size(image.width(), image.height(), long_side);
        let mut planes = vec![0.0; 3 * width * height];
        preprocess_into(image, width, height, &mut planes);
        DetectorInput {
            width,
            height,
            planes,
        }
    }

    /// The bytes its planes take.
    pub fn bytes(&self) -> u64 {
        (self.planes.len() * std::mem::size_of::<f32>()) as u64
    }
}

/// Text boxes (top-left, top-right, bottom-right, bottom-left in image pixels) from one
/// probability map `map` of `map_width × map_height`, for an image of `image_width ×
/// image_height`, in reading order, each with its mean probability.
pub fn boxes_from_map(
    map: &[f32],
    map_width: usize,
    map_height: usize,
    image_width: u32,
    image_height: u32,
    config: &OcrConfig,
) -> Vec<ScoredBox> {
    // Threshold and dilate with a 2×2 kernel (OpenCV anchors it at (1, 1): each pixel takes
    // the max of itself and its up, left and up-left neighbours).
    let threshold = config.det_thresh;
    let mut mask = vec![0u8; map_width * map_height];
    for y in 0..map_height {
        for x in 0..map_width {
            let on = |yy: usize, xx: usize| map[yy * map_width + xx] > threshold;
            let mut set = on(y, x);
            if config.use_dilation && !set {
                set = (y > 0 && on(y - 1, x))
                    || (x > 0 && on(y, x - 1))
                    || (y > 0 && x > 0 && on(y - 1, x - 1));
            }
            mask[y * map_width + x] = u8::from(set);
        }
    }

    let (dest_w, dest_h) = (image_width as f32, image_height as f32);
    let mut boxes = Vec::new();
    for region in regions(&mask, map_width, map_height, config.max_candidates) {
        let rect = min_area_rect(region.points());
        if rect.short_side() < MIN_SIZE {
            continue;
        }
        let quad = mini_box_order(rect.corners);
        let score = mean_in_quad(map, map_width, map_height, &quad);
        if score < config.box_thresh {
            continue;
        }
        let (area, perimeter) = area_perimeter(&quad);
        if perimeter <= 0.0 {
            continue;
        }
        let grown = rect.grown(area * config.unclip_ratio / perimeter);
        if grown.short_side() < MIN_SIZE + 2.0 {
            continue;
        }
        let scaled = mini_box_order(grown.corners).map(|[x, y]| {
            [
                (x / map_width as f32 * dest_w).round().clamp(0.0, dest_w),
                (y / map_height as f32 * dest_h).round().clamp(0.0, dest_h),
            ]
        });
        // RapidOCR's filter_det_res: clockwise order, clip into the image, drop slivers.
        let clipped = order_clockwise(scaled).map(|[x, y]| {
            [
                x.clamp(0.0, dest_w - 1.0).trunc(),
                y.clamp(0.0, dest_h - 1.0).trunc(),
            ]
        });
        let dist = |a: Point, b: Point| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
        if dist(clipped[0], clipped[1]).trunc() <= 3.0
            || dist(clipped[0], clipped[3]).trunc() <= 3.0
        {
            continue;
        }
        boxes.push((clipped, score));
    }
    sort_reading_order(&mut boxes);
    boxes
}

/// RapidOCR's `sorted_boxes`: by top-left y; boxes whose y differs from the previous one by
/// less than 10 px share a line and are ordered by x.
fn sort_reading_order(boxes: &mut Vec<ScoredBox>) {
    boxes.sort_by(|a, b| a.0[0][1].total_cmp(&b.0[0][1]));
    let mut line = 0usize;
    let mut keyed: Vec<(usize, f32, ScoredBox)> = Vec::with_capacity(boxes.len());
    let mut previous_y: Option<f32> = None;
    for entry in boxes.drain(..) {
        let y = entry.0[0][1];
        if let Some(previous) = previous_y
            && y - previous >= LINE_Y_THRESHOLD
        {
            line += 1;
        }
        previous_y = Some(y);
        keyed.push((line, entry.0[0][0], entry));
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    boxes.extend(keyed.into_iter().map(|(_, _, entry)| entry));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_sizes_scale_down_only_and_round_to_32() {
        assert_eq!(input_size(880, 600, 960), (896, 608));
        assert_eq!(input_size(1920, 1080, 960), (960, 544));
        assert_eq!(input_size(100, 10, 960), (96, 32));
        assert_eq!(input_size(4000, 3000, 736), (736, 544));
    }

    #[test]
    fn a_bright_bar_becomes_one_box_in_image_coordinates() {
        let (w, h) = (64, 32);
        let mut map = vec![0.0f32; w * h];
        for y in 10..16 {
            for x in 8..50 {
                map[y * w + x] = 0.9;
            }
        }
        let boxes = boxes_from_map(&map, w, h, 128, 64, &OcrConfig::default());
        assert_eq!(boxes.len(), 1);
        let (quad, score) = boxes[0];
        // The 2×2 dilation adds a row and a column of zeros to the region: 0.9 × 252 / 301.
        assert!((score - 0.9 * 252.0 / 301.0).abs() < 0.02, "{score}");
        // The bar spans x 8..=49 (+1 px dilation), y 10..=15, grown and scaled by 2.
        assert!(quad[0][0] < 16.0 && quad[1][0] > 98.0, "{quad:?}");
        assert!(quad[0][1] < 20.0 && quad[2][1] > 31.0, "{quad:?}");
    }
}
