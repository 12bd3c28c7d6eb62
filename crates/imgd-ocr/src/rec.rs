//! Text-line recognition (CTC) and direction classification inputs.
//!
//! A crop is resized to height 48 keeping its aspect ratio and right-padded with zeros. So
//! that batching never changes a result, the padded width depends on the crop alone (its
//! resized width rounded up to a multiple of [`WIDTH_STEP`], at least [`MIN_WIDTH`]), and
//! only crops of the same padded width share a model call. (RapidOCR pads each batch to its
//! widest crop instead, so its results depend on the batch.) With fixed shapes (for the GPU)
//! the widths are coarser, [`FIXED_WIDTHS`].

use image::RgbImage;

use crate::geometry::resize_normalize_into;

/// Recognition input height.
pub const HEIGHT: usize = 48;
/// The narrowest recognition input (RapidOCR's `rec_img_shape` width).
pub const MIN_WIDTH: usize = 320;
/// Padded recognition widths are multiples of this.
pub const WIDTH_STEP: usize = 64;
/// The widest recognition input; wider lines are squeezed to it.
pub const MAX_WIDTH: usize = 3200;
/// Classifier input size.
pub const CLS_HEIGHT: usize = 48;
/// Classifier input width.
pub const CLS_WIDTH: usize = 192;

/// The resized width of a crop at height `height` (`ceil(height × w / h)`), at most `cap`.
fn resized_width(crop: &RgbImage, height: usize, cap: usize) -> usize {
    let ratio = crop.width() as f64 / crop.height().max(1) as f64;
    ((height as f64 * ratio).ceil() as usize).clamp(1, cap)
}

/// The recognition input width of a crop: its resized width rounded up to a multiple of
/// [`WIDTH_STEP`], between [`MIN_WIDTH`] and [`MAX_WIDTH`].
pub fn bucket_width(crop: &RgbImage) -> usize {
    let width = resized_width(crop, HEIGHT, MAX_WIDTH);
    (width.div_ceil(WIDTH_STEP) * WIDTH_STEP).clamp(MIN_WIDTH, MAX_WIDTH)
}

/// The recognition widths with fixed shapes (`OrtConfig::fixed_shapes`, for the GPU): few
/// widths, so that few input shapes occur; each is a multiple of 32 between [`MIN_WIDTH`] and
/// [`MAX_WIDTH`].
pub const FIXED_WIDTHS: [usize; 7] = [MIN_WIDTH, 480, 640, 960, 1280, 1920, MAX_WIDTH];

/// The recognition input width of a crop with fixed shapes: the narrowest of
/// [`FIXED_WIDTHS`] that holds its [`bucket_width`].
pub fn fixed_bucket_width(crop: &RgbImage) -> usize {
    let width = bucket_width(crop);
    FIXED_WIDTHS
        .into_iter()
        .find(|&fixed| fixed >= width)
        .unwrap_or(MAX_WIDTH)
}

/// Writes the recognition input of `crop` into `out` (3 × 48 × `plane_width`, zeroed by the
/// caller).
pub fn rec_input_into(crop: &RgbImage, plane_width: usize, out: &mut [f32]) {
    let width = resized_width(crop, HEIGHT, plane_width);
    resize_normalize_into(crop, width, HEIGHT, plane_width, out);
}

/// Writes the classifier input of `crop` into `out` (3 × 48 × 192, zeroed by the caller).
pub fn cls_input_into(crop: &RgbImage, out: &mut [f32]) {
    let width = resized_width(crop, CLS_HEIGHT, CLS_WIDTH);
    resize_normalize_into(crop, width, CLS_HEIGHT, CLS_WIDTH, out);
}

/// Greedy CTC decoding of one `[T, C]` row-major probability matrix: the best class per
/// step, repeats collapsed, blanks (class 0) dropped; the confidence is the mean probability
/// of the kept steps (0 when none is kept). `alphabet[i - 1]` is class `i`'s text.
pub fn ctc_decode(probs: &[f32], classes: usize, alphabet: &[String]) -> (String, f32) {
    let mut text = String::new();
    let mut sum = 0.0f32;
    let mut kept = 0usize;
    let mut previous = usize::MAX;
    for step in probs.chunks_exact(classes) {
        let (best, p) =
            step.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        if best != 0 && best != previous {
            if let Some(symbol) = alphabet.get(best - 1) {
                text.push_str(symbol);
            }
            sum += p;
            kept += 1;
        }
        previous = best;
    }
    let confidence = if kept == 0 { 0.0 } else { sum / kept as f32 };
    (text, confidence)
}

/// The alphabet from the recognition model's `character` metadata: one symbol per line,
/// then the space (PP-OCR's `use_space_char`).
pub fn alphabet(character: &str) -> Vec<String> {
    let mut symbols: Vec<String> = character.lines().map(str::to_string).collect();
    symbols.push(" ".to_string());
    symbols
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapses_repeats_and_drops_blanks() {
        let alphabet = alphabet("a\nb");
        // Classes: 0 blank, 1 a, 2 b, 3 space. Steps: a a blank a b space b.
        let best = [1, 1, 0, 1, 2, 3, 2];
        let mut probs = Vec::new();
        for &class in &best {
            let mut step = [0.1f32; 4];
            step[class] = 0.7;
            probs.extend(step);
        }
        let (text, confidence) = ctc_decode(&probs, 4, &alphabet);
        assert_eq!(text, "aab b");
        assert!((confidence - 0.7).abs() < 1e-6);
        assert_eq!(
            ctc_decode(&[0.9, 0.1, 0.0, 0.0], 4, &alphabet),
            (String::new(), 0.0)
        );
    }

    #[test]
    fn widths_depend_on_the_crop_alone() {
        let crop = RgbImage::new(200, 20); // 48 × 10 = 480 → 512
        assert_eq!(bucket_width(&crop), 512);
        let small = RgbImage::new(30, 30);
        assert_eq!(bucket_width(&small), MIN_WIDTH);
        let huge = RgbImage::new(10_000, 10);
        assert_eq!(bucket_width(&huge), MAX_WIDTH);
        // Fixed shapes: the narrowest fixed width that holds the fine one.
        assert_eq!(fixed_bucket_width(&crop), 640);
        assert_eq!(fixed_bucket_width(&small), MIN_WIDTH);
        assert_eq!(fixed_bucket_width(&huge), MAX_WIDTH);
        assert_eq!(fixed_bucket_width(&RgbImage::new(90, 10)), 480); // 432 → 448 → 480
        assert!(FIXED_WIDTHS.windows(2).all(|w| w[0] < w[1]));
        assert!(FIXED_WIDTHS.iter().all(|w| w % 32 == 0));
    }
}
