//! BLIP image preprocessing, exactly as Hugging Face's `BlipImageProcessor` does it.
//!
//! The reference (`BlipImageProcessorPil`, PIL underneath) does, in order:
//!
//! 1. **resize** to `size.height × size.width` (384 × 384 for the released models) with PIL's
//!    bicubic filter, *without* keeping the aspect ratio and without a crop;
//! 2. **rescale** by 1/255;
//! 3. **normalise** with the OpenAI CLIP mean and standard deviation, channel first.
//!
//! The resize is [`imgd_clip::preprocess::resize_bicubic_pil`], PIL's fixed-point bicubic
//! reproduced bit for bit, and the normalisation is the CLIP crate's, so the pixel tensor
//! matches the reference's up to float rounding (the parity fixtures check it).

use image::RgbImage;
use imgd_clip::preprocess::{
    OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, Preprocess as ClipPreprocess, resize_bicubic_pil,
};

/// What the image processor does: the fields of HF's `preprocessor_config.json` that BLIP
/// uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// Output height (`size.height`).
    pub height: u32,
    /// Output width (`size.width`).
    pub width: u32,
    /// The rescale factor (`rescale_factor`, 1/255).
    pub rescale: f64,
    /// Channel means (`image_mean`).
    pub mean: [f32; 3],
    /// Channel standard deviations (`image_std`).
    pub std: [f32; 3],
}

impl Preprocess {
    /// The released BLIP processor for square inputs of `size` pixels (384).
    pub fn blip(size: u32) -> Self {
        Preprocess {
            height: size,
            width: size,
            rescale: 1.0 / 255.0,
            mean: OPENAI_CLIP_MEAN,
            std: OPENAI_CLIP_STD,
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
    pub fn resize(&self, image: &RgbImage) -> Result<RgbImage, PreprocessError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(PreprocessError::Empty);
        }
        if (width, height) == (self.width, self.height) {
            return Ok(image.clone());
        }
        Ok(resize_bicubic_pil(image, self.width, self.height))
    }

    /// The model input for one image: `3 × height × width` floats, channel first (CHW).
    pub fn apply(&self, image: &RgbImage) -> Result<Vec<f32>, PreprocessError> {
        let resized = self.resize(image)?;
        // The CLIP processor's normalisation, in the reference's precision.
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

/// Why an image could not be preprocessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PreprocessError {
    /// The image has no pixels.
    #[error("the image is empty (0 pixels wide or high)")]
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_ignores_the_aspect_ratio_and_normalises_channel_first() {
        let p = Preprocess::blip(4);
        let image = RgbImage::from_pixel(8, 2, image::Rgb([0, 255, 128]));
        let out = p.apply(&image).unwrap();
        assert_eq!(out.len(), p.len());
        assert!((out[0] - (-OPENAI_CLIP_MEAN[0] / OPENAI_CLIP_STD[0])).abs() < 1e-6);
        assert!((out[16] - (1.0 - OPENAI_CLIP_MEAN[1]) / OPENAI_CLIP_STD[1]).abs() < 1e-6);
        assert_eq!(p.resize(&image).unwrap().dimensions(), (4, 4));
        assert_eq!(p.apply(&RgbImage::new(0, 3)), Err(PreprocessError::Empty));
    }
}
