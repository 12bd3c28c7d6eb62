//! Pixel geometry for PP-OCR: connected regions of a binary map, convex hulls, minimum-area
//! rectangles, the perspective crop of a text box, and OpenCV-compatible bilinear resizing
//! into normalised tensors.
//!
//! These replace the OpenCV calls of the reference implementation (RapidOCR):
//!
//! - `findContours` and `minAreaRect`: [`regions`], [`min_area_rect`];
//! - `getPerspectiveTransform` and `warpPerspective(INTER_CUBIC, BORDER_REPLICATE)`:
//!   [`crop_quad`];
//! - `resize(INTER_LINEAR)`: [`resize_normalize_into`].

use image::RgbImage;

/// A point in pixel coordinates (x right, y down).
pub type Point = [f32; 2];

/// A rotated rectangle: its four corners and its side lengths.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RotatedRect {
    /// The corners, in order around the rectangle.
    pub corners: [Point; 4],
    /// The length of the side from corner 0 to corner 1.
    pub width: f32,
    /// The length of the side from corner 1 to corner 2.
    pub height: f32,
}

impl RotatedRect {
    /// The shorter side.
    pub fn short_side(&self) -> f32 {
        self.width.min(self.height)
    }

    /// The rectangle grown by `distance` on every side (same centre and angle).
    pub fn grown(&self, distance: f32) -> RotatedRect {
        let [a, b, _, d] = self.corners;
        let centre = [
            (self.corners[0][0] + self.corners[2][0]) / 2.0,
            (self.corners[0][1] + self.corners[2][1]) / 2.0,
        ];
        let unit = |from: Point, to: Point, length: f32| {
            if length > 0.0 {
                [(to[0] - from[0]) / length, (to[1] - from[1]) / length]
            } else {
                [0.0, 0.0]
            }
        };
        let mut u = unit(a, b, self.width);
        let mut v = unit(a, d, self.height);
        if self.width <= 0.0 {
            u = [-v[1], v[0]];
        }
        if self.height <= 0.0 {
            v = [-u[1], u[0]];
        }
        if self.width <= 0.0 && self.height <= 0.0 {
            u = [1.0, 0.0];
            v = [0.0, 1.0];
        }
        let hw = self.width / 2.0 + distance;
        let hh = self.height / 2.0 + distance;
        let corner = |su: f32, sv: f32| {
            [
                centre[0] + su * hw * u[0] + sv * hh * v[0],
                centre[1] + su * hw * u[1] + sv * hh * v[1],
            ]
        };
        RotatedRect {
            corners: [
                corner(-1.0, -1.0),
                corner(1.0, -1.0),
                corner(1.0, 1.0),
                corner(-1.0, 1.0),
            ],
            width: self.width + 2.0 * distance,
            height: self.height + 2.0 * distance,
        }
    }
}

/// One 8-connected region of a binary map, as the leftmost and rightmost pixel of each row
/// it spans (enough for its convex hull).
#[derive(Debug, Clone, Default)]
pub struct Region {
    /// `(y, x_min, x_max)` per row, top to bottom.
    pub rows: Vec<(u32, u32, u32)>,
}

impl Region {
    /// The region's extreme pixels, hull candidates.
    pub fn points(&self) -> Vec<Point> {
        let mut points = Vec::with_capacity(self.rows.len() * 2);
        for &(y, x0, x1) in &self.rows {
            points.push([x0 as f32, y as f32]);
            if x1 != x0 {
                points.push([x1 as f32, y as f32]);
            }
        }
        points
    }
}

/// The 8-connected regions of `mask` (row-major, `width` × `height`, nonzero = set), at most
/// `max_regions`, in scan order of their first pixel.
pub fn regions(mask: &[u8], width: usize, height: usize, max_regions: usize) -> Vec<Region> {
    let mut labels = vec![0u32; width * height];
    let mut found: Vec<Region> = Vec::new();
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start_y in 0..height {
        for start_x in 0..width {
            let start = start_y * width + start_x;
            if mask[start] == 0 || labels[start] != 0 {
                continue;
            }
            if found.len() >= max_regions {
                return found;
            }
            let label = found.len() as u32 + 1;
            // Per-row extremes of this region, keyed by row offset from start_y.
            let mut rows: Vec<Option<(u32, u32)>> = Vec::new();
            labels[start] = label;
            stack.push((start_x, start_y));
            while let Some((x, y)) = stack.pop() {
                let row = y - start_y; // regions found in scan order never go above start_y
                if rows.len() <= row {
                    rows.resize(row + 1, None);
                }
                let (x32, entry) = (x as u32, &mut rows[row]);
                *entry = Some(match *entry {
                    None => (x32, x32),
                    Some((lo, hi)) => (lo.min(x32), hi.max(x32)),
                });
                let y_lo = y.saturating_sub(1);
                let y_hi = (y + 1).min(height - 1);
                let x_lo = x.saturating_sub(1);
                let x_hi = (x + 1).min(width - 1);
                for ny in y_lo..=y_hi {
                    for nx in x_lo..=x_hi {
                        let index = ny * width + nx;
                        if mask[index] != 0 && labels[index] == 0 {
                            labels[index] = label;
                            stack.push((nx, ny));
                        }
                    }
                }
            }
            found.push(Region {
                rows: rows
                    .into_iter()
                    .enumerate()
                    .filter_map(|(dy, extremes)| {
                        extremes.map(|(lo, hi)| ((start_y + dy) as u32, lo, hi))
                    })
                    .collect(),
            });
        }
    }
    found
}

fn cross(o: Point, a: Point, b: Point) -> f32 {
    (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
}

/// The convex hull of `points` (Andrew's monotone chain), counter-clockwise in a y-up frame,
/// without collinear points.
pub fn convex_hull(mut points: Vec<Point>) -> Vec<Point> {
    points.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let mut hull: Vec<Point> = Vec::with_capacity(points.len() * 2);
    for &p in &points {
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    let lower = hull.len() + 1;
    for &p in points.iter().rev().skip(1) {
        while hull.len() >= lower && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    hull.pop();
    hull
}

/// The minimum-area rectangle around `points` (rotating calipers over the convex hull), like
/// OpenCV's `minAreaRect`. Degenerate inputs give zero-sized sides.
pub fn min_area_rect(points: Vec<Point>) -> RotatedRect {
    let hull = convex_hull(points);
    match hull.len() {
        0 => {
            return RotatedRect {
                corners: [[0.0; 2]; 4],
                width: 0.0,
                height: 0.0,
            };
        }
        1 => {
            return RotatedRect {
                corners: [hull[0]; 4],
                width: 0.0,
                height: 0.0,
            };
        }
        _ => {}
    }
    let mut best: Option<(f32, RotatedRect)> = None;
    for i in 0..hull.len() {
        let a = hull[i];
        let b = hull[(i + 1) % hull.len()];
        let length = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if length == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / length, (b[1] - a[1]) / length];
        let v = [-u[1], u[0]];
        let (mut min_u, mut max_u, mut min_v, mut max_v) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
        for p in &hull {
            let pu = (p[0] - a[0]) * u[0] + (p[1] - a[1]) * u[1];
            let pv = (p[0] - a[0]) * v[0] + (p[1] - a[1]) * v[1];
            min_u = min_u.min(pu);
            max_u = max_u.max(pu);
            min_v = min_v.min(pv);
            max_v = max_v.max(pv);
        }
        let area = (max_u - min_u) * (max_v - min_v);
        if best.as_ref().is_none_or(|(best_area, _)| area < *best_area) {
            let at =
                |su: f32, sv: f32| [a[0] + su * u[0] + sv * v[0], a[1] + su * u[1] + sv * v[1]];
            best = Some((
                area,
                RotatedRect {
                    corners: [
                        at(min_u, min_v),
                        at(max_u, min_v),
                        at(max_u, max_v),
                        at(min_u, max_v),
                    ],
                    width: max_u - min_u,
                    height: max_v - min_v,
                },
            ));
        }
    }
    best.map(|(_, rect)| rect).unwrap_or(RotatedRect {
        corners: [hull[0]; 4],
        width: 0.0,
        height: 0.0,
    })
}

/// The corners in RapidOCR's `get_mini_boxes` order: sorted by x, then the left pair by y
/// (top-left, bottom-left) and the right pair by y (top-right, bottom-right); returned as
/// top-left, top-right, bottom-right, bottom-left.
pub fn mini_box_order(corners: [Point; 4]) -> [Point; 4] {
    let mut points = corners;
    points.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (i1, i4) = if points[1][1] > points[0][1] {
        (0, 1)
    } else {
        (1, 0)
    };
    let (i2, i3) = if points[3][1] > points[2][1] {
        (2, 3)
    } else {
        (3, 2)
    };
    [points[i1], points[i2], points[i3], points[i4]]
}

/// RapidOCR's `order_points_clockwise`: the two leftmost points by y give top-left and
/// bottom-left, the two rightmost top-right and bottom-right.
pub fn order_clockwise(corners: [Point; 4]) -> [Point; 4] {
    let mut points = corners;
    points.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (mut left, mut right) = ([points[0], points[1]], [points[2], points[3]]);
    left.sort_by(|a, b| a[1].total_cmp(&b[1]));
    right.sort_by(|a, b| a[1].total_cmp(&b[1]));
    [left[0], right[0], right[1], left[1]]
}

/// The area and perimeter of a polygon.
pub fn area_perimeter(points: &[Point]) -> (f32, f32) {
    let mut twice_area = 0.0;
    let mut perimeter = 0.0;
    for i in 0..points.len() {
        let a = points[i];
        let b = points[(i + 1) % points.len()];
        twice_area += a[0] * b[1] - b[0] * a[1];
        perimeter += ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
    }
    (twice_area.abs() / 2.0, perimeter)
}

/// The mean of `map` (row-major, `width` wide) over the pixels inside the convex quad
/// `quad` (vertices truncated to integers, boundary included), like RapidOCR's
/// `box_score_fast` (`fillPoly` + `mean`).
pub fn mean_in_quad(map: &[f32], width: usize, height: usize, quad: &[Point; 4]) -> f32 {
    let clamp = |v: f32, hi: usize| (v.max(0.0) as usize).min(hi - 1);
    let xs = quad.iter().map(|p| p[0]);
    let ys = quad.iter().map(|p| p[1]);
    let x_min = clamp(xs.clone().fold(f32::MAX, f32::min).floor(), width);
    let x_max = clamp(xs.fold(f32::MIN, f32::max).ceil(), width);
    let y_min = clamp(ys.clone().fold(f32::MAX, f32::min).floor(), height);
    let y_max = clamp(ys.fold(f32::MIN, f32::max).ceil(), height);
    let poly: Vec<Point> = quad.iter().map(|p| [p[0].trunc(), p[1].trunc()]).collect();
    // Orientation of the quad, so "inside" is on the same side of every edge.
    let (twice_area, _) = {
        let mut s = 0.0;
        for i in 0..4 {
            let a = poly[i];
            let b = poly[(i + 1) % 4];
            s += a[0] * b[1] - b[0] * a[1];
        }
        (s, ())
    };
    let sign = if twice_area >= 0.0 { 1.0 } else { -1.0 };
    let (mut sum, mut count) = (0.0f64, 0usize);
    for y in y_min..=y_max {
        for x in x_min..=x_max {
            let p = [x as f32, y as f32];
            let inside = (0..4).all(|i| sign * cross(poly[i], poly[(i + 1) % 4], p) >= -1e-3);
            if inside {
                sum += f64::from(map[y * width + x]);
                count += 1;
            }
        }
    }
    if count == 0 {
        0.0
    } else {
        (sum / count as f64) as f32
    }
}

/// Solves the 3×3 homography mapping `from[i]` to `to[i]` (OpenCV's
/// `getPerspectiveTransform`), as a row-major matrix with h22 = 1.
pub fn homography(from: &[Point; 4], to: &[Point; 4]) -> Option<[f64; 9]> {
    let mut a = [[0f64; 9]; 8];
    for i in 0..4 {
        let (x, y) = (f64::from(from[i][0]), f64::from(from[i][1]));
        let (u, v) = (f64::from(to[i][0]), f64::from(to[i][1]));
        a[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        a[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting on the 8×8 system (last column = rhs).
    for col in 0..8 {
        let pivot = (col..8).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (row, values) in a.iter_mut().enumerate() {
            if row != col {
                let factor = values[col] / pivot_row[col];
                for (value, pivot_value) in values.iter_mut().zip(pivot_row).skip(col) {
                    *value -= factor * pivot_value;
                }
            }
        }
    }
    let h: Vec<f64> = (0..8).map(|i| a[i][8] / a[i][i]).collect();
    Some([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], 1.0])
}

fn cubic_weights(t: f32) -> [f32; 4] {
    // OpenCV's bicubic kernel, A = -0.75.
    const A: f32 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// The text box `quad` (top-left, top-right, bottom-right, bottom-left) cut out of `image`
/// and rectified to an upright `width × height` crop, where width and height are the longer
/// opposite sides (RapidOCR's `get_rotate_crop_image`: bicubic, border replicated). A crop at
/// least 1.5 times taller than wide is turned 90° counter-clockwise (vertical text).
pub fn crop_quad(image: &RgbImage, quad: &[Point; 4]) -> Option<RgbImage> {
    let dist = |a: Point, b: Point| ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt();
    let width = dist(quad[0], quad[1]).max(dist(quad[2], quad[3])) as u32;
    let height = dist(quad[0], quad[3]).max(dist(quad[1], quad[2])) as u32;
    if width == 0 || height == 0 {
        return None;
    }
    let (w, h) = (width as f32, height as f32);
    let target = [[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]];
    // Map crop pixels back into the image.
    let m = homography(&target, quad)?;
    let (src_w, src_h) = (image.width() as i64, image.height() as i64);
    let raw = image.as_raw();
    let stride = image.width() as usize * 3;
    let mut out = RgbImage::new(width, height);
    for y in 0..height {
        for x in 0..width {
            let (fx, fy) = (f64::from(x), f64::from(y));
            let denominator = m[6] * fx + m[7] * fy + m[8];
            let denominator = if denominator.abs() < 1e-12 {
                1e-12
            } else {
                denominator
            };
            let sx = (m[0] * fx + m[1] * fy + m[2]) / denominator;
            let sy = (m[3] * fx + m[4] * fy + m[5]) / denominator;
            let (x0, y0) = (sx.floor(), sy.floor());
            let (wx, wy) = (
                cubic_weights((sx - x0) as f32),
                cubic_weights((sy - y0) as f32),
            );
            let (x0, y0) = (x0 as i64, y0 as i64);
            let mut acc = [0f32; 3];
            for (j, wyj) in wy.iter().enumerate() {
                let yy = (y0 - 1 + j as i64).clamp(0, src_h - 1) as usize;
                for (i, wxi) in wx.iter().enumerate() {
                    let xx = (x0 - 1 + i as i64).clamp(0, src_w - 1) as usize;
                    let weight = wyj * wxi;
                    let at = yy * stride + xx * 3;
                    for c in 0..3 {
                        acc[c] += weight * f32::from(raw[at + c]);
                    }
                }
            }
            let pixel = image::Rgb(acc.map(|v| v.round().clamp(0.0, 255.0) as u8));
            out.put_pixel(x, y, pixel);
        }
    }
    if f64::from(height) / f64::from(width) >= 1.5 {
        out = image::imageops::rotate270(&out);
    }
    Some(out)
}

/// Resizes `image` to `width × height` (bilinear, OpenCV's half-pixel convention, no
/// antialiasing, like `cv2.resize(INTER_LINEAR)`), and writes it into `out` as a normalised
/// BGR planar tensor `((v / 255) - 0.5) / 0.5` of `plane_width` columns (the columns past
/// `width` are left as they are: zero padding). `out` holds 3 planes of
/// `height × plane_width`.
pub fn resize_normalize_into(
    image: &RgbImage,
    width: usize,
    height: usize,
    plane_width: usize,
    out: &mut [f32],
) {
    debug_assert!(out.len() >= 3 * height * plane_width && width <= plane_width);
    let (src_w, src_h) = (image.width() as usize, image.height() as usize);
    let raw = image.as_raw();
    let scale_x = src_w as f32 / width as f32;
    let scale_y = src_h as f32 / height as f32;
    let axis = |dst: usize, scale: f32, len: usize| {
        let s = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
        let i0 = (s.floor() as usize).min(len - 1);
        let i1 = (i0 + 1).min(len - 1);
        (i0, i1, s - i0 as f32)
    };
    let xs: Vec<(usize, usize, f32)> = (0..width).map(|x| axis(x, scale_x, src_w)).collect();
    let plane = height * plane_width;
    for y in 0..height {
        let (y0, y1, fy) = axis(y, scale_y, src_h);
        let row0 = &raw[y0 * src_w * 3..(y0 + 1) * src_w * 3];
        let row1 = &raw[y1 * src_w * 3..(y1 + 1) * src_w * 3];
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            for c in 0..3 {
                let top =
                    f32::from(row0[x0 * 3 + c]) * (1.0 - fx) + f32::from(row0[x1 * 3 + c]) * fx;
                let bottom =
                    f32::from(row1[x0 * 3 + c]) * (1.0 - fx) + f32::from(row1[x1 * 3 + c]) * fx;
                let value = top * (1.0 - fy) + bottom * fy;
                // RGB in, BGR planes out.
                out[(2 - c) * plane + y * plane_width + x] = value / 127.5 - 1.0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_area_rect_of_a_rotated_rectangle_recovers_its_sides() {
        let angle: f32 = 0.3;
        let (c, s) = (angle.cos(), angle.sin());
        let mut points = Vec::new();
        for i in 0..=40 {
            for j in 0..=10 {
                let (u, v) = (i as f32 * 2.0, j as f32);
                points.push([100.0 + u * c - v * s, 50.0 + u * s + v * c]);
            }
        }
        let rect = min_area_rect(points);
        let (long, short) = (rect.width.max(rect.height), rect.width.min(rect.height));
        assert!((long - 80.0).abs() < 1e-3, "{rect:?}");
        assert!((short - 10.0).abs() < 1e-3, "{rect:?}");
        let grown = rect.grown(2.0);
        assert!((grown.short_side() - 14.0).abs() < 1e-3);
        let (area, perimeter) = area_perimeter(&grown.corners);
        assert!((area - 84.0 * 14.0).abs() < 0.1 && (perimeter - 196.0).abs() < 0.01);
    }

    #[test]
    fn regions_are_8_connected_and_report_row_extremes() {
        #[rustfmt::skip]
        let mask = [
            1, 1, 0, 0, 0,
            0, 0, 1, 0, 1,
            0, 0, 0, 0, 1,
        ];
        let found = regions(&mask, 5, 3, 10);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].rows, vec![(0, 0, 1), (1, 2, 2)]);
        assert_eq!(found[1].rows, vec![(1, 4, 4), (2, 4, 4)]);
        assert_eq!(regions(&mask, 5, 3, 1).len(), 1);
    }

    #[test]
    fn boxes_are_ordered_like_rapidocr() {
        let corners = [[10.0, 20.0], [0.0, 10.0], [20.0, 0.0], [30.0, 10.0]];
        assert_eq!(
            order_clockwise(corners),
            [[0.0, 10.0], [20.0, 0.0], [30.0, 10.0], [10.0, 20.0]]
        );
        let upright = [[0.0, 0.0], [10.0, 0.0], [10.0, 5.0], [0.0, 5.0]];
        assert_eq!(mini_box_order(upright), upright);
        assert_eq!(order_clockwise(upright), upright);
    }

    #[test]
    fn an_axis_aligned_crop_copies_pixels() {
        let image = RgbImage::from_fn(40, 20, |x, y| image::Rgb([x as u8 * 5, y as u8 * 10, 7]));
        let quad = [[10.0, 5.0], [30.0, 5.0], [30.0, 15.0], [10.0, 15.0]];
        let crop = crop_quad(&image, &quad).unwrap();
        assert_eq!(crop.dimensions(), (20, 10));
        for (x, y, pixel) in crop.enumerate_pixels() {
            assert_eq!(*pixel, *image.get_pixel(x + 10, y + 5));
        }
        let tall = [[0.0, 0.0], [5.0, 0.0], [5.0, 15.0], [0.0, 15.0]];
        assert_eq!(crop_quad(&image, &tall).unwrap().dimensions(), (15, 5));
    }

    #[test]
    fn mean_in_quad_averages_the_inside() {
        let mut map = vec![0.0f32; 10 * 10];
        for y in 2..=5 {
            for x in 2..=6 {
                map[y * 10 + x] = 1.0;
            }
        }
        let quad = [[2.0, 2.0], [6.0, 2.0], [6.0, 5.0], [2.0, 5.0]];
        assert!((mean_in_quad(&map, 10, 10, &quad) - 1.0).abs() < 1e-6);
        let wider = [[0.0, 2.0], [6.0, 2.0], [6.0, 5.0], [0.0, 5.0]];
        assert!((mean_in_quad(&map, 10, 10, &wider) - 20.0 / 28.0).abs() < 1e-6);
    }

    #[test]
    fn resize_matches_the_half_pixel_convention() {
        let image = RgbImage::from_fn(4, 1, |x, _| image::Rgb([x as u8 * 10, 0, 255]));
        let mut out = vec![9.0f32; 3 * 3];
        resize_normalize_into(&image, 2, 1, 3, &mut out);
        // x=0 samples 0.5 between 0 and 10 → 5; x=1 samples 2.5 → 25. Planes are B, G, R.
        assert!((out[2 * 3] - (5.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert!((out[2 * 3 + 1] - (25.0 / 127.5 - 1.0)).abs() < 1e-6);
        assert!((out[0] - 1.0).abs() < 1e-6, "blue first");
        assert_eq!(out[2], 9.0, "padding columns untouched");
    }
}
