//! TrOCR's image preprocessing, as Hugging Face's `ViTImageProcessor` (what `TrOCRProcessor`
//! wraps) does it with its PIL backend (`ViTImageProcessorPil`).
//!
//! The released TrOCR processors (`microsoft/trocr-small-printed`, `-base-printed`, …) do, in
//! order:
//!
//! 1. **resize** to `size.height × size.width` (384 × 384), *without* keeping the aspect ratio
//!    and without a crop, with PIL's filter `resample` (2, bilinear: `ViTImageProcessor`'s
//!    default; 3, bicubic, is accepted too). PIL's filters widen with the scale when
//!    shrinking (antialiasing) and work in 8-bit fixed point; the candle runtime's resize reproduces
//!    that bit for bit;
//! 2. **rescale** by `rescale_factor` (1/255);
//! 3. **normalise** with `image_mean` and `image_std` (0.5 and 0.5: pixels in −1…1), channel
//!    first.
//!
//! A line crop of a few hundred by a few dozen pixels is thus squeezed horizontally and
//! stretched vertically into the square input, exactly as the reference does it.

use std::path::Path;

use imgd_candle::processor::{Normalize, PilFilter};
pub use imgd_candle::processor::{PilFilter as Filter, ResizePreprocess as Preprocess, resize_pil};

use crate::TrocrError;

/// The released TrOCR processor (`ViTImageProcessor(size=…)`: bilinear, mean and std 0.5) for
/// square inputs of `size` pixels.
pub fn trocr(size: u32) -> Preprocess {
    Preprocess::square(size, PilFilter::Bilinear, Normalize::symmetric())
}

/// Reads HF's `preprocessor_config.json` when the model folder has one; otherwise the released
/// TrOCR processor for the encoder's input size. The output must be the encoder's square
/// input; what is not reproduced (another filter, a centre crop that cuts, turning a step off)
/// is refused.
pub fn load_preprocess(dir: &Path, image_size: usize) -> Result<Preprocess, TrocrError> {
    Preprocess::load(dir, image_size, trocr(image_size as u32))
}

#[cfg(test)]
mod tests {
    use image::RgbImage;

    use super::*;

    #[test]
    fn bilinear_keeps_flat_images_flat_and_interpolates_upscales() {
        let flat = RgbImage::from_pixel(300, 40, image::Rgb([10, 200, 77]));
        let out = resize_pil(&flat, 64, 64, Filter::Bilinear);
        assert!(out.pixels().all(|p| p.0 == [10, 200, 77]));
        // 2 → 4 pixels: centres at 0.25, 0.75, 1.25, 1.75 of the input.
        let two = RgbImage::from_fn(2, 1, |x, _| image::Rgb([x as u8 * 100, 0, 0]));
        let out = resize_pil(&two, 4, 1, Filter::Bilinear);
        let reds: Vec<u8> = out.pixels().map(|p| p.0[0]).collect();
        assert_eq!(reds, vec![0, 25, 75, 100]);
    }
}
