//! BLIP image preprocessing, exactly as Hugging Face's `BlipImageProcessor` does it.
//!
//! The reference (`BlipImageProcessorPil`, PIL underneath) does, in order:
//!
//! 1. **resize** to `size.height × size.width` (384 × 384 for the released models) with PIL's
//!    bicubic filter, *without* keeping the aspect ratio and without a crop;
//! 2. **rescale** by 1/255;
//! 3. **normalise** with the OpenAI CLIP mean and standard deviation, channel first.
//!
//! That is the candle runtime's [`ResizePreprocess`], whose resize reproduces PIL's
//! fixed-point arithmetic bit for bit, so the pixel tensor matches the reference's up to float
//! rounding (the parity fixtures check it).

use imgd_candle::processor::{Normalize, PilFilter};
pub use imgd_candle::processor::{PreprocessError, ResizePreprocess as Preprocess};

/// The released BLIP processor for square inputs of `size` pixels (384).
pub fn blip(size: u32) -> Preprocess {
    Preprocess::square(size, PilFilter::Bicubic, Normalize::openai_clip())
}
