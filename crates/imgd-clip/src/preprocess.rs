//! CLIP image preprocessing, exactly as Hugging Face's `CLIPImageProcessor` does it.
//!
//! The reference (`transformers`' slow image processor, PIL underneath) does, in order:
//!
//! 1. **resize** the shortest side to `shortest_edge` (224) with PIL's bicubic filter; the long
//!    side becomes `int(shortest_edge * long / short)` (truncated, not rounded);
//! 2. **center crop** to `crop_size` (224): `top = (h - crop_h) // 2`, `left = (w - crop_w) // 2`;
//! 3. **rescale** by 1/255;
//! 4. **normalise** with the OpenAI mean and standard deviation, channel first.
//!
//! PIL's resize is a two-pass separable convolution (horizontal, then vertical) with the
//! bicubic kernel of `a = -0.5`, widened by the scale factor when downscaling (antialiasing),
//! coefficients normalised per output pixel and applied in 22-bit fixed point, and an 8-bit
//! intermediate image between the passes. [`resize_bicubic_pil`] reproduces that arithmetic
//! bit for bit, so the pixel tensor matches the reference's exactly, not just closely (the
//! parity fixtures check it on real photos).

use image::RgbImage;
pub use imgd_candle::processor::{
    Normalize, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PilFilter, PreprocessError, resize_bicubic_pil,
    resize_pil, resize_pil_window,
};

/// What the image processor does: the fields of HF's `preprocessor_config.json` that CLIP
/// uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Preprocess {
    /// The shortest side after the resize (`size.shortest_edge`).
    pub shortest_edge: u32,
    /// The crop's height and width (`crop_size`).
    pub crop: u32,
    /// Steps 3 and 4: the rescale and normalisation.
    pub normalize: Normalize,
}

impl Preprocess {
    /// The OpenAI CLIP processor for square inputs of `size` pixels (224 or 336).
    pub fn openai(size: u32) -> Self {
        Preprocess {
            shortest_edge: size,
            crop: size,
            normalize: Normalize::openai_clip(),
        }
    }

    /// Floats per preprocessed image: 3 × crop × crop.
    pub fn len(&self) -> usize {
        3 * self.crop as usize * self.crop as usize
    }

    /// Whether the output is empty (a zero crop size; never for a valid config).
    pub fn is_empty(&self) -> bool {
        self.crop == 0
    }

    /// The resized and centre-cropped 8-bit image: steps 1 and 2.
    pub fn resize_and_crop(&self, image: &RgbImage) -> Result<RgbImage, PreprocessError> {
        let (width, height) = image.dimensions();
        if width == 0 || height == 0 {
            return Err(PreprocessError::Empty);
        }
        let (new_width, new_height) = resize_output_size(width, height, self.shortest_edge);
        let crop = self.crop;
        if new_width >= crop && new_height >= crop {
            // Resize only the centre crop's pixels: the same bytes as resizing all, then
            // cropping (`center_crop`'s offsets).
            let window = [(new_width - crop) / 2, (new_height - crop) / 2, crop, crop];
            return Ok(resize_pil_window(
                image,
                new_width,
                new_height,
                PilFilter::Bicubic,
                window,
            ));
        }
        let resized = if (new_width, new_height) == (width, height) {
            image.clone()
        } else {
            resize_bicubic_pil(image, new_width, new_height)
        };
        Ok(center_crop(&resized, crop, crop))
    }

    /// The model input for one image: `3 × crop × crop` floats, channel first (CHW).
    pub fn apply(&self, image: &RgbImage) -> Result<Vec<f32>, PreprocessError> {
        let cropped = self.resize_and_crop(image)?;
        Ok(self.normalize(&cropped))
    }

    /// Steps 3 and 4 as a table: the normalised value of each byte, per channel (RGB), in the
    /// reference's precision ([`Normalize::table`]).
    pub fn normalize_table(&self) -> [[f32; 256]; 3] {
        self.normalize.table()
    }

    /// Steps 3 and 4 on an already cropped image ([`Normalize::apply`]).
    pub fn normalize(&self, image: &RgbImage) -> Vec<f32> {
        self.normalize.apply(image)
    }
}

/// The size HF's `get_resize_output_image_size(default_to_square=False)` gives: the short side
/// becomes `shortest_edge`, the long side `int(shortest_edge * long / short)`.
pub fn resize_output_size(width: u32, height: u32, shortest_edge: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    // Python computes `int(size * long / short)` in double precision.
    let new_long = (f64::from(shortest_edge) * f64::from(long) / f64::from(short)) as u32;
    if width <= height {
        (shortest_edge, new_long)
    } else {
        (new_long, shortest_edge)
    }
}

/// The centre crop of HF's `center_crop`: `top = (h - crop_h) // 2`, `left = (w - crop_w) //
/// 2`; where the image is smaller than the crop, it is padded with zeros around, as HF does.
pub fn center_crop(image: &RgbImage, crop_width: u32, crop_height: u32) -> RgbImage {
    let (width, height) = image.dimensions();
    if width >= crop_width && height >= crop_height {
        let top = (height - crop_height) / 2;
        let left = (width - crop_width) / 2;
        return image::imageops::crop_imm(image, left, top, crop_width, crop_height).to_image();
    }
    // HF pads the image to at least the crop size, `ceil(diff / 2)` before it, then crops at
    // `(orig - crop) // 2` shifted by that padding.
    let padded_width = width.max(crop_width);
    let padded_height = height.max(crop_height);
    let mut padded = RgbImage::new(padded_width, padded_height);
    let pad_top = (padded_height - height).div_ceil(2);
    let pad_left = (padded_width - width).div_ceil(2);
    image::imageops::replace(&mut padded, image, i64::from(pad_left), i64::from(pad_top));
    let start = |orig: u32, crop: u32, pad: u32| -> u32 {
        (i64::from(orig) - i64::from(crop))
            .div_euclid(2)
            .saturating_add(i64::from(pad))
            .max(0) as u32
    };
    let top = start(height, crop_height, pad_top);
    let left = start(width, crop_width, pad_left);
    image::imageops::crop_imm(&padded, left, top, crop_width, crop_height).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_size_truncates_like_python() {
        assert_eq!(resize_output_size(448, 299, 224), (335, 224));
        assert_eq!(resize_output_size(299, 448, 224), (224, 335));
        assert_eq!(resize_output_size(224, 224, 224), (224, 224));
        assert_eq!(resize_output_size(100, 300, 224), (224, 672));
    }

    /// A deterministic noisy image (an LCG), so resizes have real work to do.
    fn noise(width: u32, height: u32) -> RgbImage {
        let mut state = 0x2545_f491_u32 ^ width.wrapping_mul(31) ^ height;
        RgbImage::from_fn(width, height, |_, _| {
            let mut next = || {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            };
            image::Rgb([next(), next(), next()])
        })
    }

    #[test]
    fn resizing_only_the_crop_window_gives_the_crop_of_the_full_resize() {
        for (width, height) in [(448, 336), (336, 448), (225, 224), (224, 224), (1000, 37)] {
            let image = noise(width, height);
            let p = Preprocess::openai(224);
            let (new_width, new_height) = resize_output_size(width, height, 224);
            let full = if (new_width, new_height) == (width, height) {
                image.clone()
            } else {
                resize_bicubic_pil(&image, new_width, new_height)
            };
            assert_eq!(
                p.resize_and_crop(&image).unwrap(),
                center_crop(&full, 224, 224),
                "{width}x{height}"
            );
        }
        // Small images still pad as the reference does.
        let small = noise(5, 3);
        let p = Preprocess::openai(4);
        let (w, h) = resize_output_size(5, 3, 4);
        let full = resize_bicubic_pil(&small, w, h);
        assert_eq!(p.resize_and_crop(&small).unwrap(), center_crop(&full, 4, 4));
    }

    #[test]
    fn crop_is_centred_and_pads_small_images() {
        let image = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 0]));
        let crop = center_crop(&image, 3, 3);
        assert_eq!(crop.get_pixel(0, 0).0, [1, 0, 0]);
        let padded = center_crop(&image, 5, 5);
        assert_eq!(padded.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(padded.get_pixel(4, 3).0, [4, 2, 0]);
    }

    #[test]
    fn normalisation_uses_the_openai_constants() {
        let p = Preprocess::openai(2);
        let image = RgbImage::from_pixel(2, 2, image::Rgb([0, 255, 128]));
        let out = p.apply(&image).unwrap();
        assert_eq!(out.len(), p.len());
        assert!((out[0] - (-OPENAI_CLIP_MEAN[0] / OPENAI_CLIP_STD[0])).abs() < 1e-6);
        assert!((out[4] - (1.0 - OPENAI_CLIP_MEAN[1]) / OPENAI_CLIP_STD[1]).abs() < 1e-6);
        assert_eq!(p.apply(&RgbImage::new(0, 4)), Err(PreprocessError::Empty));
    }
}
