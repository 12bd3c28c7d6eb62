//! Resizing as OpenCV's `cv2.resize` does it, so detections match the reference
//! implementations (which resize with OpenCV) to the pixel.
//!
//! - [`Interpolation::Area`] (`INTER_AREA`): when shrinking on both axes, every output pixel is
//!   the area-weighted mean of the source pixels it covers (`resizeArea` with OpenCV's
//!   coverage tables); otherwise OpenCV's bilinear variant with area-mode coefficients. MTCNN's
//!   pyramid and its 24/48-px crops use it.
//! - [`Interpolation::Linear`] (`INTER_LINEAR`): half-pixel-centred bilinear, edges clamped.
//!   SCRFD's letterbox uses it.
//!
//! Both are separable: one table of (source index, weight) per output column and per output
//! row, applied horizontally then vertically, in `f64`.

/// Which of OpenCV's interpolations to reproduce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interpolation {
    /// `cv2.INTER_AREA`.
    Area,
    /// `cv2.INTER_LINEAR`.
    Linear,
}

/// Weights of one output index: (source index, weight) pairs.
type Taps = Vec<(usize, f64)>;

/// OpenCV's `computeResizeAreaTab`: the source cells one output cell covers, with coverage
/// weights that sum to 1.
fn area_taps(ssize: usize, dsize: usize, scale: f64) -> Vec<Taps> {
    (0..dsize)
        .map(|d| {
            let fs1 = d as f64 * scale;
            let fs2 = fs1 + scale;
            let cell = scale.min(ssize as f64 - fs1);
            let mut s2 = (fs2.floor() as i64).min(ssize as i64 - 1);
            let s1 = (fs1.ceil() as i64).min(s2);
            s2 = s2.max(s1);
            let mut taps = Vec::new();
            if s1 as f64 - fs1 > 1e-3 && s1 >= 1 {
                taps.push(((s1 - 1) as usize, (s1 as f64 - fs1) / cell));
            }
            for s in s1..s2 {
                taps.push((s as usize, 1.0 / cell));
            }
            if fs2 - s2 as f64 > 1e-3 {
                taps.push((s2 as usize, (fs2 - s2 as f64).min(1.0).min(cell) / cell));
            }
            taps
        })
        .collect()
}

/// OpenCV's bilinear coefficients (`INTER_LINEAR`, or `INTER_AREA`'s variant when it does not
/// shrink on both axes), edges clamped as OpenCV clamps them.
fn linear_taps(ssize: usize, dsize: usize, area_mode: bool) -> Vec<Taps> {
    let inv_scale = dsize as f64 / ssize as f64;
    let scale = 1.0 / inv_scale;
    (0..dsize)
        .map(|d| {
            let (mut s, mut f) = if area_mode {
                let s = (d as f64 * scale).floor() as i64;
                let f = ((d + 1) as f64 - (s + 1) as f64 * inv_scale) as f32;
                (s, if f <= 0.0 { 0.0 } else { f - f.floor() })
            } else {
                let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
                let s = f.floor() as i64;
                (s, f - s as f32)
            };
            if s < 0 {
                s = 0;
                f = 0.0;
            }
            if s >= ssize as i64 - 1 {
                s = ssize as i64 - 1;
                f = 0.0;
            }
            let s = s as usize;
            let f = f64::from(f);
            if f > 0.0 {
                vec![(s, 1.0 - f), (s + 1, f)]
            } else {
                vec![(s, 1.0)]
            }
        })
        .collect()
}

fn taps(sw: usize, sh: usize, dw: usize, dh: usize, how: Interpolation) -> (Vec<Taps>, Vec<Taps>) {
    // OpenCV: scale = 1 / (dsize / ssize), computed in double.
    let scale_x = 1.0 / (dw as f64 / sw as f64);
    let scale_y = 1.0 / (dh as f64 / sh as f64);
    match how {
        Interpolation::Area if scale_x >= 1.0 && scale_y >= 1.0 => {
            (area_taps(sw, dw, scale_x), area_taps(sh, dh, scale_y))
        }
        Interpolation::Area => (linear_taps(sw, dw, true), linear_taps(sh, dh, true)),
        Interpolation::Linear => (linear_taps(sw, dw, false), linear_taps(sh, dh, false)),
    }
}

/// Resizes an interleaved 3-channel image of `sw`×`sh` pixels (any sample type convertible to
/// `f64`) to `dw`×`dh`, returning `f64` samples (unrounded).
pub fn resize_f64<T: Copy + Into<f64>>(
    src: &[T],
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    how: Interpolation,
) -> Vec<f64> {
    resize_region(src, sw, sh, (0, 0, sw, sh), dw, dh, how)
}

/// Resizes the window `(x0, y0, width, height)` of an interleaved 3-channel `sw`×`sh` image
/// to `dw`×`dh`, as if the window had been cut out first with zeros where it leaves the image
/// (MTCNN's padded crops), without building the window.
pub fn resize_region<T: Copy + Into<f64>>(
    src: &[T],
    sw: usize,
    sh: usize,
    window: (i64, i64, usize, usize),
    dw: usize,
    dh: usize,
    how: Interpolation,
) -> Vec<f64> {
    assert_eq!(src.len(), sw * sh * 3, "source buffer size");
    let (x0, y0, rw, rh) = window;
    if rw == 0 || rh == 0 || dw == 0 || dh == 0 {
        return vec![0.0; dw * dh * 3];
    }
    let (xt, yt) = taps(rw, rh, dw, dh, how);
    // Horizontal pass over every window row the vertical taps need.
    let mut needed = vec![false; rh];
    for taps in &yt {
        for &(s, _) in taps {
            needed[s] = true;
        }
    }
    let mut rows: Vec<Vec<f64>> = vec![Vec::new(); rh];
    for (ry, row) in rows.iter_mut().enumerate() {
        if !needed[ry] {
            continue;
        }
        let mut out = vec![0.0; dw * 3];
        let sy = y0 + ry as i64;
        if sy >= 0 && (sy as usize) < sh {
            let line = &src[sy as usize * sw * 3..(sy as usize + 1) * sw * 3];
            for (dx, taps) in xt.iter().enumerate() {
                let mut acc = [0.0f64; 3];
                for &(rx, w) in taps {
                    let sx = x0 + rx as i64;
                    if sx < 0 || sx as usize >= sw {
                        continue;
                    }
                    let p = &line[sx as usize * 3..sx as usize * 3 + 3];
                    for c in 0..3 {
                        acc[c] += p[c].into() * w;
                    }
                }
                out[dx * 3..dx * 3 + 3].copy_from_slice(&acc);
            }
        }
        *row = out;
    }
    let mut dst = vec![0.0; dw * dh * 3];
    for (dy, taps) in yt.iter().enumerate() {
        let out = &mut dst[dy * dw * 3..(dy + 1) * dw * 3];
        for &(ry, w) in taps {
            for (o, v) in out.iter_mut().zip(&rows[ry]) {
                *o += v * w;
            }
        }
    }
    dst
}

/// Resizes 8-bit RGB and rounds back to 8 bits, as OpenCV does for `uint8` images.
pub fn resize_u8(
    src: &[u8],
    sw: usize,
    sh: usize,
    dw: usize,
    dh: usize,
    how: Interpolation,
) -> Vec<u8> {
    resize_f64(src, sw, sh, dw, dh, how)
        .into_iter()
        // OpenCV's saturate_cast rounds half to even.
        .map(|v| v.round_ties_even().clamp(0.0, 255.0) as u8)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn area_shrink_by_an_integer_factor_averages_blocks() {
        // 4x2 -> 2x1: each output is the mean of a 2x2 block.
        let src: Vec<u8> = [10u8, 20, 30, 40, 50, 60, 70, 80]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let out = resize_f64(&src, 4, 2, 2, 1, Interpolation::Area);
        assert_eq!(out[0], (10.0 + 20.0 + 50.0 + 60.0) / 4.0);
        assert_eq!(out[3], (30.0 + 40.0 + 70.0 + 80.0) / 4.0);
    }

    #[test]
    fn area_weights_sum_to_one_for_fractional_scales() {
        for (s, d) in [(10, 3), (7, 5), (1280, 768), (33, 24), (5, 5)] {
            let scale = 1.0 / (d as f64 / s as f64);
            for taps in area_taps(s, d, scale) {
                let sum: f64 = taps.iter().map(|t| t.1).sum();
                assert!((sum - 1.0).abs() < 1e-9, "{s}->{d}: {sum}");
            }
        }
        // A constant image stays constant, shrinking or growing.
        let src = vec![77u8; 13 * 9 * 3];
        for (dw, dh) in [(5, 4), (24, 24), (13, 30), (48, 7)] {
            let out = resize_f64(&src, 13, 9, dw, dh, Interpolation::Area);
            assert!(out.iter().all(|&v| (v - 77.0).abs() < 1e-9), "{dw}x{dh}");
            let out = resize_f64(&src, 13, 9, dw, dh, Interpolation::Linear);
            assert!(out.iter().all(|&v| (v - 77.0).abs() < 1e-9), "{dw}x{dh}");
        }
    }

    #[test]
    fn a_region_reads_zeros_outside_the_image() {
        // A 2x2 white image; the 4x4 window at (-1, -1) holds it in its middle.
        let src = vec![255u8; 2 * 2 * 3];
        let out = resize_region(&src, 2, 2, (-1, -1, 4, 4), 4, 4, Interpolation::Area);
        let lum: Vec<f64> = out.chunks(3).map(|p| p[0]).collect();
        #[rustfmt::skip]
        assert_eq!(lum, vec![
            0.0, 0.0, 0.0, 0.0,
            0.0, 255.0, 255.0, 0.0,
            0.0, 255.0, 255.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ]);
    }

    #[test]
    fn linear_matches_opencv_half_pixel_bilinear() {
        // 1-D ramp 0, 10, 20, 30 (as a 4x1 image) doubled to 8: OpenCV gives
        // 0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.
        let src: Vec<u8> = [0u8, 10, 20, 30].iter().flat_map(|&v| [v, v, v]).collect();
        let out = resize_f64(&src, 4, 1, 8, 1, Interpolation::Linear);
        let got: Vec<f64> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(got, vec![0.0, 2.5, 7.5, 12.5, 17.5, 22.5, 27.5, 30.0]);
        // INTER_AREA growing by 2 repeats pixels (its coefficients are 0 or 0.5 at cell edges).
        let out = resize_f64(&src, 4, 1, 8, 1, Interpolation::Area);
        let got: Vec<f64> = out.chunks(3).map(|p| p[0]).collect();
        assert_eq!(got, vec![0.0, 0.0, 10.0, 10.0, 20.0, 20.0, 30.0, 30.0]);
    }
}
