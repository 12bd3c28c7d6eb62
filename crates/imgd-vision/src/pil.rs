//! PIL's resize, reproduced bit for bit.
//!
//! PIL's resize is a two-pass separable convolution (horizontal, then vertical) with the
//! filter's kernel widened by the scale factor when downscaling (antialiasing), coefficients
//! normalised per output pixel and applied in 22-bit fixed point, and an 8-bit intermediate
//! image between the passes. [`resize_pil`] reproduces that arithmetic for the bilinear and
//! bicubic filters, so tensors built from its output match a Hugging Face image processor's
//! exactly (the parity fixtures of CLIP, BLIP, TrOCR and GroundingDINO check it on real
//! photos). [`resize_pil_window`] computes only a window of the output (a centre crop) with
//! the same bytes.

use image::RgbImage;

/// PIL's fixed-point precision for 8-bit images (`PRECISION_BITS` in `Resample.c`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A PIL resampling filter that [`resize_pil`] reproduces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PilFilter {
    /// `Image.BILINEAR`: the triangle kernel, support 1.
    Bilinear,
    /// `Image.BICUBIC`: the cubic kernel with `a = -0.5`, support 2.
    Bicubic,
}

impl PilFilter {
    /// The filter of PIL's `resample` number (as `preprocessor_config.json` stores it):
    /// 2 bilinear, 3 bicubic.
    pub fn from_pil(resample: u32) -> Option<Self> {
        match resample {
            2 => Some(PilFilter::Bilinear),
            3 => Some(PilFilter::Bicubic),
            _ => None,
        }
    }

    /// The kernel's support at scale 1.
    fn support(self) -> f64 {
        match self {
            PilFilter::Bilinear => 1.0,
            PilFilter::Bicubic => 2.0,
        }
    }

    /// The kernel's weight at distance `x`.
    fn weight(self, x: f64) -> f64 {
        match self {
            PilFilter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            PilFilter::Bicubic => bicubic(x),
        }
    }
}

/// PIL's bicubic kernel (`a = -0.5`), support 2.
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// One output pixel's taps: the first input index and the fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

/// PIL's `precompute_coeffs` followed by `normalize_coeffs_8bpc`, for the output positions
/// `outputs` of a resize from `in_size` to `out_size`.
fn precompute(
    in_size: u32,
    out_size: u32,
    outputs: std::ops::Range<u32>,
    filter: PilFilter,
) -> Vec<Taps> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    outputs
        .map(|xx| {
            let center = (f64::from(xx) + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C's `(int)` truncates toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size));
            let count = (xmax - xmin).max(0) as usize;
            let mut weights: Vec<f64> = (0..count)
                .map(|x| filter.weight((x as f64 + xmin as f64 - center + 0.5) * ss))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                for w in &mut weights {
                    *w /= total;
                }
            }
            let one = f64::from(1u32 << PRECISION_BITS);
            let weights = weights
                .into_iter()
                .map(|w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin as usize,
                weights,
            }
        })
        .collect()
}

/// PIL's `clip8`: back from fixed point to a byte, saturating.
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes like PIL's `Image.resize((width, height), Image.BICUBIC)` on an RGB image: the
/// same coefficients, the same fixed-point rounding, horizontal pass first with an 8-bit
/// intermediate (only the rows the vertical pass reads), then the vertical pass.
pub fn resize_bicubic_pil(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_pil(image, width, height, PilFilter::Bicubic)
}

/// Resizes like PIL's `Image.resize((width, height), filter)` on an RGB image (see
/// [`resize_bicubic_pil`] for how).
pub fn resize_pil(image: &RgbImage, width: u32, height: u32, filter: PilFilter) -> RgbImage {
    resize_pil_window(image, width, height, filter, [0, 0, width, height])
}

/// The part `[left, top, window_width, window_height]` of [`resize_pil`]`(image, width,
/// height, filter)`, computing only that part: each output pixel depends on its own taps
/// alone, so the pixels are the full resize's, bit for bit. A centre crop this way skips the
/// columns or rows it would throw away.
///
/// # Panics
/// When the window reaches past `width` × `height`.
pub fn resize_pil_window(
    image: &RgbImage,
    width: u32,
    height: u32,
    filter: PilFilter,
    window: [u32; 4],
) -> RgbImage {
    let [left, top, out_width, out_height] = window;
    assert!(
        left + out_width <= width && top + out_height <= height,
        "window {window:?} outside {width}x{height}"
    );
    let (in_width, in_height) = image.dimensions();
    if out_width == 0 || out_height == 0 || in_width == 0 || in_height == 0 {
        return RgbImage::new(out_width, out_height);
    }
    let half = 1i32 << (PRECISION_BITS - 1);
    let need_horizontal = width != in_width;
    let need_vertical = height != in_height;
    let vertical =
        need_vertical.then(|| precompute(in_height, height, top..top + out_height, filter));
    // The input rows the vertical pass reads (or the window's rows, without one).
    let (first_row, last_row) = match &vertical {
        Some(taps) => (
            taps.first().map_or(0, |t| t.start),
            taps.last().map_or(0, |t| t.start + t.weights.len()),
        ),
        None => (top as usize, (top + out_height) as usize),
    };
    let rows = last_row - first_row;
    let (in_width, out_width) = (in_width as usize, out_width as usize);
    let src = image.as_raw();

    // Horizontal pass over those rows, into an 8-bit intermediate of the window's width.
    let mut temp = vec![0u8; rows * out_width * 3];
    if need_horizontal {
        let horizontal = precompute(
            in_width as u32,
            width,
            left..left + out_width as u32,
            filter,
        );
        for (y, dst_row) in temp.chunks_exact_mut(out_width * 3).enumerate() {
            let src_row = &src[(first_row + y) * in_width * 3..][..in_width * 3];
            for (taps, dst) in horizontal.iter().zip(dst_row.chunks_exact_mut(3)) {
                let span = &src_row[taps.start * 3..][..taps.weights.len() * 3];
                let mut acc = [half; 3];
                for (pixel, &w) in span.chunks_exact(3).zip(&taps.weights) {
                    acc[0] += i32::from(pixel[0]) * w;
                    acc[1] += i32::from(pixel[1]) * w;
                    acc[2] += i32::from(pixel[2]) * w;
                }
                dst[0] = clip8(acc[0]);
                dst[1] = clip8(acc[1]);
                dst[2] = clip8(acc[2]);
            }
        }
    } else {
        let left = left as usize;
        for (y, dst_row) in temp.chunks_exact_mut(out_width * 3).enumerate() {
            let src_row = &src[(first_row + y) * in_width * 3..][..in_width * 3];
            dst_row.copy_from_slice(&src_row[left * 3..][..out_width * 3]);
        }
    }

    let Some(vertical) = vertical else {
        return RgbImage::from_raw(out_width as u32, out_height, temp)
            .expect("buffer size matches");
    };
    // Vertical pass, a whole row at a time: each tap adds one intermediate row to the
    // accumulators (integer sums, so the order changes nothing).
    let stride = out_width * 3;
    let mut out = vec![0u8; stride * out_height as usize];
    let mut acc = vec![0i32; stride];
    for (taps, dst_row) in vertical.iter().zip(out.chunks_exact_mut(stride)) {
        acc.fill(half);
        for (k, &w) in taps.weights.iter().enumerate() {
            let row = &temp[(taps.start + k - first_row) * stride..][..stride];
            for (a, &value) in acc.iter_mut().zip(row) {
                *a += i32::from(value) * w;
            }
        }
        for (dst, &a) in dst_row.iter_mut().zip(&acc) {
            *dst = clip8(a);
        }
    }
    RgbImage::from_raw(out_width as u32, out_height, out).expect("buffer size matches")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_keeps_pixels_and_a_flat_image_stays_flat() {
        let image = RgbImage::from_fn(10, 7, |x, y| image::Rgb([x as u8 * 20, y as u8 * 30, 7]));
        assert_eq!(resize_bicubic_pil(&image, 10, 7), image);
        let flat = RgbImage::from_pixel(300, 200, image::Rgb([10, 128, 250]));
        let resized = resize_bicubic_pil(&flat, 97, 61);
        assert!(resized.pixels().all(|p| p.0 == [10, 128, 250]));
        let up = resize_bicubic_pil(&flat, 500, 333);
        assert!(up.pixels().all(|p| p.0 == [10, 128, 250]));
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
    fn any_window_is_the_full_resize_cropped_bit_for_bit() {
        // Any window, either filter, shrinking or enlarging, on one axis or both.
        let image = noise(120, 90);
        for filter in [PilFilter::Bicubic, PilFilter::Bilinear] {
            for (width, height, window) in [
                (70, 50, [3, 7, 40, 30]),
                (200, 90, [10, 0, 150, 90]),
                (120, 40, [0, 5, 120, 20]),
                (120, 90, [1, 2, 3, 4]),
                (61, 133, [60, 132, 1, 1]),
            ] {
                let full = resize_pil(&image, width, height, filter);
                let [left, top, w, h] = window;
                let expected = image::imageops::crop_imm(&full, left, top, w, h).to_image();
                assert_eq!(
                    resize_pil_window(&image, width, height, filter, window),
                    expected,
                    "{filter:?} {width}x{height} {window:?}"
                );
            }
        }
    }
}
