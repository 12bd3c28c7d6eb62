//! TrOCR's image preprocessing, as Hugging Face's `ViTImageProcessor` (what `TrOCRProcessor`
//! wraps) does it with its PIL backend (`ViTImageProcessorPil`).
//!
//! The released TrOCR processors (`microsoft/trocr-small-printed`, `-base-printed`, …) do, in
//! order:
//!
//! 1. **resize** to `size.height × size.width` (384 × 384), *without* keeping the aspect ratio
//!    and without a crop, with PIL's filter `resample` (2, bilinear: `ViTImageProcessor`'s
//!    default; 3, bicubic, is accepted too). PIL's filters widen with the scale when
//!    shrinking (antialiasing) and work in 8-bit fixed point; [`resize_pil`] reproduces that
//!    bit for bit;
//! 2. **rescale** by `rescale_factor` (1/255);
//! 3. **normalise** with `image_mean` and `image_std` (0.5 and 0.5: pixels in −1…1), channel
//!    first.
//!
//! A line crop of a few hundred by a few dozen pixels is thus squeezed horizontally and
//! stretched vertically into the square input, exactly as the reference does it.

use std::fs;
use std::path::Path;

use image::RgbImage;
use imgd_clip::preprocess::Preprocess as ClipPreprocess;
use serde::Deserialize;

use crate::TrocrError;

/// A PIL resampling filter (the CLIP crate's, which [`resize_pil`] reproduces bit for bit).
pub use imgd_clip::preprocess::PilFilter as Filter;
pub use imgd_clip::preprocess::resize_pil;

/// What the image processor does: the fields of HF's `preprocessor_config.json` TrOCR uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Output height (`size.height`).
    pub height: u32,
    /// Output width (`size.width`).
    pub width: u32,
    /// The resize filter (`resample`).
    pub filter: Filter,
    /// The rescale factor (`rescale_factor`, 1/255).
    pub rescale: f64,
    /// Channel means (`image_mean`).
    pub mean: [f32; 3],
    /// Channel standard deviations (`image_std`).
    pub std: [f32; 3],
}

impl Preprocess {
    /// The released TrOCR processor (`ViTImageProcessor(size=…)`: bilinear, mean and std
    /// 0.5) for square inputs of `size` pixels.
    pub fn trocr(size: u32) -> Self {
        Preprocess {
            height: size,
            width: size,
            filter: Filter::Bilinear,
            rescale: 1.0 / 255.0,
            mean: [0.5; 3],
            std: [0.5; 3],
        }
    }

    /// Floats per preprocessed image: 3 × height × width.
    pub fn len(&self) -> usize {
        3 * self.height as usize * self.width as usize
    }

    /// Whether the output is empty (a zero size; never for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The resized 8-bit image: step 1.
    pub fn resize(&self, image: &RgbImage) -> Result<RgbImage, TrocrError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(TrocrError::Input(
                "an empty crop (0 pixels wide or high)".into(),
            ));
        }
        Ok(resize_pil(image, self.width, self.height, self.filter))
    }

    /// The model input for one image: `3 × height × width` floats, channel first (CHW).
    pub fn apply(&self, image: &RgbImage) -> Result<Vec<f32>, TrocrError> {
        let resized = self.resize(image)?;
        // The CLIP crate's normalisation: the rescale in f64 rounded to f32, then (x − mean) /
        // std in f32, as the reference computes it.
        let normalise = ClipPreprocess {
            shortest_edge: self.height.min(self.width),
            crop: self.height.min(self.width),
            rescale: self.rescale,
            mean: self.mean,
            std: self.std,
        };
        Ok(normalise.normalize(&resized))
    }
}

/// Reads HF's `preprocessor_config.json` when the model folder has one; otherwise the released
/// TrOCR processor for the encoder's input size. The output must be the encoder's square
/// input; what this crate does not reproduce (another filter, a centre crop that cuts, turning
/// a step off) is refused.
pub fn load_preprocess(dir: &Path, image_size: usize) -> Result<Preprocess, TrocrError> {
    let path = dir.join("preprocessor_config.json");
    let default = Preprocess::trocr(image_size as u32);
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(default);
    };
    #[derive(Deserialize)]
    struct Raw {
        size: Option<serde_json::Value>,
        crop_size: Option<serde_json::Value>,
        do_center_crop: Option<bool>,
        rescale_factor: Option<f64>,
        image_mean: Option<[f32; 3]>,
        image_std: Option<[f32; 3]>,
        resample: Option<u32>,
        do_resize: Option<bool>,
        do_rescale: Option<bool>,
        do_normalize: Option<bool>,
    }
    let raw: Raw = serde_json::from_str(&text)
        .map_err(|e| TrocrError::Config(format!("{}: {e}", path.display())))?;
    let refuse = |what: String| {
        Err(TrocrError::Config(format!(
            "{}: {what} is not supported",
            path.display()
        )))
    };
    let filter = match raw.resample {
        None => Filter::Bilinear,
        Some(r) => match Filter::from_pil(r) {
            Some(filter) => filter,
            None => return refuse(format!("resample {r} (only 2, bilinear, and 3, bicubic)")),
        },
    };
    if raw.do_resize == Some(false)
        || raw.do_rescale == Some(false)
        || raw.do_normalize == Some(false)
    {
        return refuse("turning off the resize, rescale or normalisation".into());
    }
    // `size` is `{"height": H, "width": W}`, or a bare number in old files (a square).
    let square = |value: &serde_json::Value| -> Option<(u32, u32)> {
        let get = |key: &str| {
            value
                .as_u64()
                .or_else(|| value.get(key).and_then(serde_json::Value::as_u64))
                .and_then(|n| u32::try_from(n).ok())
        };
        Some((get("height")?, get("width")?))
    };
    let (height, width) = match raw.size.as_ref() {
        None => (default.height, default.width),
        Some(value) => match square(value) {
            Some(size) => size,
            None => return refuse(format!("size {value}")),
        },
    };
    if raw.do_center_crop == Some(true) {
        // A crop to the resized size (what old DeiT feature extractors saved) changes nothing.
        let crop = raw.crop_size.as_ref().and_then(square);
        if crop != Some((height, width)) {
            return refuse("a centre crop smaller than the resized image".into());
        }
    }
    if (height, width) != (image_size as u32, image_size as u32) {
        return Err(TrocrError::Config(format!(
            "{}: size {width}×{height} but the encoder takes {image_size}×{image_size}",
            path.display()
        )));
    }
    Ok(Preprocess {
        height,
        width,
        filter,
        rescale: raw.rescale_factor.unwrap_or(default.rescale),
        mean: raw.image_mean.unwrap_or(default.mean),
        std: raw.image_std.unwrap_or(default.std),
    })
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn the_released_processor_normalises_to_minus_one_to_one() {
        let p = Preprocess::trocr(4);
        let image = RgbImage::from_pixel(8, 2, image::Rgb([0, 255, 128]));
        let out = p.apply(&image).unwrap();
        assert_eq!(out.len(), p.len());
        assert!((out[0] + 1.0).abs() < 1e-6);
        assert!((out[16] - 1.0).abs() < 1e-6);
        assert!(p.apply(&RgbImage::new(0, 3)).is_err());
    }
}
