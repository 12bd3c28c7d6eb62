//! Face alignment: the similarity transform that maps a face's 5 landmarks onto ArcFace's
//! template, and the 112×112 crop it defines.
//!
//! The transform is the least-squares similarity (rotation, uniform scale, translation; no
//! reflection) of Umeyama (1991) — what InsightFace's `face_align.norm_crop` gets from
//! scikit-image's `SimilarityTransform.estimate`. In 2-D Umeyama's SVD solution reduces to a
//! closed form: with both point sets centred, `a = Σ(s·d) / Σ|s|²` and
//! `b = Σ(s × d) / Σ|s|²` give the matrix `[[a, −b], [b, a]]`. The crop is the image
//! sampled through the inverse transform with bilinear interpolation and black outside the
//! image (`cv2.warpAffine(…, borderValue=0)`).

use image::{Rgb, RgbImage};

/// ArcFace's 5-point template in its 112×112 crop (InsightFace `arcface_dst`): left eye,
/// right eye, nose tip, left and right mouth corner, as seen in the image.
pub const ARCFACE_TEMPLATE: [[f64; 2]; 5] = [
    [38.2946, 51.6963],
    [73.5318, 51.5014],
    [56.0252, 71.7366],
    [41.5493, 92.3655],
    [70.7299, 92.2041],
];

/// The side of an aligned crop.
pub const ALIGNED_SIZE: u32 = 112;

/// A 2×3 affine matrix `[[a, b, tx], [c, d, ty]]` mapping (x, y) to
/// (a·x + b·y + tx, c·x + d·y + ty).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [[f64; 3]; 2]);

impl Affine {
    /// Applies the transform to a point.
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        let m = &self.0;
        [
            m[0][0] * p[0] + m[0][1] * p[1] + m[0][2],
            m[1][0] * p[0] + m[1][1] * p[1] + m[1][2],
        ]
    }

    /// The inverse transform, or `None` when the matrix is singular.
    pub fn inverse(&self) -> Option<Affine> {
        let [[a, b, tx], [c, d, ty]] = self.0;
        let det = a * d - b * c;
        if det.abs() < 1e-12 || !det.is_finite() {
            return None;
        }
        let (ia, ib, ic, id) = (d / det, -b / det, -c / det, a / det);
        Some(Affine([
            [ia, ib, -(ia * tx + ib * ty)],
            [ic, id, -(ic * tx + id * ty)],
        ]))
    }

    /// The uniform scale of a similarity transform.
    pub fn scale(&self) -> f64 {
        let m = &self.0;
        (m[0][0] * m[1][1] - m[0][1] * m[1][0]).abs().sqrt()
    }
}

/// The least-squares similarity transform taking `src` onto `dst` (Umeyama, no reflection).
/// `None` when the source points all coincide.
pub fn similarity(src: &[[f64; 2]], dst: &[[f64; 2]]) -> Option<Affine> {
    let n = src.len().min(dst.len());
    if n < 2 {
        return None;
    }
    let mean = |pts: &[[f64; 2]]| {
        let (sx, sy) = pts[..n]
            .iter()
            .fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
        [sx / n as f64, sy / n as f64]
    };
    let (ms, md) = (mean(src), mean(dst));
    let (mut num_a, mut num_b, mut var) = (0.0, 0.0, 0.0);
    for (s, d) in src[..n].iter().zip(&dst[..n]) {
        let (sx, sy) = (s[0] - ms[0], s[1] - ms[1]);
        let (dx, dy) = (d[0] - md[0], d[1] - md[1]);
        num_a += sx * dx + sy * dy;
        num_b += sx * dy - sy * dx;
        var += sx * sx + sy * sy;
    }
    if var < 1e-12 {
        return None;
    }
    let (a, b) = (num_a / var, num_b / var);
    Some(Affine([
        [a, -b, md[0] - (a * ms[0] - b * ms[1])],
        [b, a, md[1] - (b * ms[0] + a * ms[1])],
    ]))
}

/// Samples `image` through `image_from_out` (output pixel → image point) into a
/// `width`×`height` image: bilinear, black outside the image.
pub fn warp(image: &RgbImage, image_from_out: &Affine, width: u32, height: u32) -> RgbImage {
    let (iw, ih) = (i64::from(image.width()), i64::from(image.height()));
    let raw = image.as_raw();
    let pixel = |x: i64, y: i64| -> [f64; 3] {
        if x < 0 || y < 0 || x >= iw || y >= ih {
            return [0.0; 3];
        }
        let i = ((y * iw + x) * 3) as usize;
        [raw[i], raw[i + 1], raw[i + 2]].map(f64::from)
    };
    RgbImage::from_fn(width, height, |ox, oy| {
        let [sx, sy] = image_from_out.apply([f64::from(ox), f64::from(oy)]);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        let (p00, p10, p01, p11) = (
            pixel(x0, y0),
            pixel(x0 + 1, y0),
            pixel(x0, y0 + 1),
            pixel(x0 + 1, y0 + 1),
        );
        let mut out = [0u8; 3];
        for c in 0..3 {
            let top = p00[c] * (1.0 - fx) + p10[c] * fx;
            let bottom = p01[c] * (1.0 - fx) + p11[c] * fx;
            out[c] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
        }
        Rgb(out)
    })
}

/// The transform from a face's landmarks to the ArcFace template (image → crop).
pub fn arcface_transform(landmarks: &[[f32; 2]; 5]) -> Option<Affine> {
    let src: Vec<[f64; 2]> = landmarks
        .iter()
        .map(|p| [f64::from(p[0]), f64::from(p[1])])
        .collect();
    similarity(&src, &ARCFACE_TEMPLATE)
}

/// The 112×112 ArcFace crop of the face with these landmarks; `None` when the landmarks are
/// degenerate (all in one point).
pub fn align(image: &RgbImage, landmarks: &[[f32; 2]; 5]) -> Option<RgbImage> {
    let crop_from_image = arcface_transform(landmarks)?;
    let image_from_crop = crop_from_image.inverse()?;
    Some(warp(image, &image_from_crop, ALIGNED_SIZE, ALIGNED_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(angle_deg: f64, scale: f64, tx: f64, ty: f64) -> Affine {
        let (s, c) = angle_deg.to_radians().sin_cos();
        Affine([[scale * c, -scale * s, tx], [scale * s, scale * c, ty]])
    }

    #[test]
    fn a_known_similarity_is_recovered_exactly() {
        let truth = rotation(23.0, 2.7, 310.0, -45.5);
        let src: Vec<[f64; 2]> = ARCFACE_TEMPLATE.to_vec();
        let dst: Vec<[f64; 2]> = src.iter().map(|&p| truth.apply(p)).collect();
        let found = similarity(&src, &dst).unwrap();
        for (row_f, row_t) in found.0.iter().zip(&truth.0) {
            for (f, t) in row_f.iter().zip(row_t) {
                assert!((f - t).abs() < 1e-9, "{found:?} vs {truth:?}");
            }
        }
        assert!((found.scale() - 2.7).abs() < 1e-9);
        // And the inverse maps back.
        let back = found.inverse().unwrap();
        let p = back.apply(truth.apply([12.0, 34.0]));
        assert!((p[0] - 12.0).abs() < 1e-9 && (p[1] - 34.0).abs() < 1e-9);
    }

    #[test]
    fn matches_scikit_image_umeyama_on_noisy_points() {
        // skimage.transform.SimilarityTransform().estimate(src, dst).params, scikit-image 0.26.
        let src = [
            [251.3, 201.6],
            [299.8, 190.1],
            [279.0, 233.4],
            [261.2, 262.9],
            [303.7, 255.0],
        ];
        let found = similarity(&src, &ARCFACE_TEMPLATE).unwrap();
        let expected = [
            [0.648_671_699_87, -0.092_415_579_187, -103.827_042_86],
            [0.092_415_579_187, 0.648_671_699_87, -102.169_517_18],
        ];
        for (row_f, row_e) in found.0.iter().zip(&expected) {
            for (f, e) in row_f.iter().zip(row_e) {
                assert!((f - e).abs() < 1e-6, "{found:?}");
            }
        }
    }

    #[test]
    fn degenerate_landmarks_give_no_transform() {
        assert!(similarity(&[[1.0, 1.0]; 5], &ARCFACE_TEMPLATE).is_none());
        assert!(align(&RgbImage::new(10, 10), &[[3.0, 3.0]; 5]).is_none());
    }

    /// A textured test image: smooth colour ramps plus a few discs, so misalignment shows.
    fn texture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let (xf, yf) = (f64::from(x), f64::from(y));
            let disc = |cx: f64, cy: f64, r: f64| ((xf - cx).powi(2) + (yf - cy).powi(2)) < r * r;
            let v = if disc(120.0, 100.0, 12.0) || disc(180.0, 100.0, 12.0) {
                20.0
            } else if disc(150.0, 170.0, 25.0) {
                230.0
            } else {
                128.0 + 60.0 * (xf / 17.0).sin() * (yf / 23.0).cos()
            };
            Rgb([
                v as u8,
                (255.0 - v) as u8,
                ((xf + yf) / 2.0).min(255.0) as u8,
            ])
        })
    }

    #[test]
    fn the_aligned_crop_of_a_rotated_face_matches_the_upright_one() {
        let image = texture(300, 300);
        let landmarks: [[f32; 2]; 5] = [
            [120.0, 100.0],
            [180.0, 100.0],
            [150.0, 135.0],
            [128.0, 170.0],
            [172.0, 170.0],
        ];
        let upright = align(&image, &landmarks).unwrap();
        // Rotate the whole image by 35° about (150, 150) (output → input mapping for warp).
        let rotated_from_image = {
            let r = rotation(35.0, 1.0, 0.0, 0.0);
            let c = r.apply([150.0, 150.0]);
            Affine([
                [r.0[0][0], r.0[0][1], 150.0 - c[0]],
                [r.0[1][0], r.0[1][1], 150.0 - c[1]],
            ])
        };
        let rotated = warp(&image, &rotated_from_image.inverse().unwrap(), 300, 300);
        let moved: [[f32; 2]; 5] = landmarks.map(|p| {
            let q = rotated_from_image.apply([f64::from(p[0]), f64::from(p[1])]);
            [q[0] as f32, q[1] as f32]
        });
        let aligned = align(&rotated, &moved).unwrap();
        let diff: f64 = upright
            .as_raw()
            .iter()
            .zip(aligned.as_raw())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
            .sum::<f64>()
            / upright.as_raw().len() as f64;
        // Two bilinear resamplings blur a little; a misaligned crop differs by tens of levels.
        assert!(diff < 4.0, "mean difference {diff}");
        // The eyes land on the template: dark discs at the template's eye points.
        for eye in &ARCFACE_TEMPLATE[..2] {
            let p = aligned.get_pixel(eye[0].round() as u32, eye[1].round() as u32);
            assert!(p[0] < 60, "eye at {eye:?} is {p:?}");
        }
        // A misaligned crop (landmarks shifted by 10 px) is far from it.
        let shifted = moved.map(|p| [p[0] + 10.0, p[1]]);
        let wrong = align(&rotated, &shifted).unwrap();
        let diff_wrong: f64 = upright
            .as_raw()
            .iter()
            .zip(wrong.as_raw())
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).abs())
            .sum::<f64>()
            / upright.as_raw().len() as f64;
        assert!(diff_wrong > 3.0 * diff, "{diff_wrong} vs {diff}");
    }
}
