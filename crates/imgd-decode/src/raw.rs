//! Camera RAW through `rawloader`: the embedded JPEG preview, a half-size 2×2 CFA binning, or a
//! full bilinear demosaic, each followed by white balance, the camera matrix to sRGB and the
//! sRGB gamma.

use crate::error::DecodeError;
use crate::format::ImageFormat;
use crate::header::{self, JpegInfo};
use crate::{DecodePath, jpeg, tiffwalk};
use image::RgbImage;
use std::io::Cursor;

const F: ImageFormat = ImageFormat::Raw;

/// Runs rawloader (`dummy` = parse only, no pixel data).
pub(crate) fn load(b: &[u8], dummy: bool) -> Result<rawloader::RawImage, DecodeError> {
    let mut cur = Cursor::new(b);
    let r = if dummy {
        rawloader::decode_dummy(&mut cur)
    } else {
        rawloader::decode(&mut cur)
    };
    r.map_err(|e| {
        let m = e.to_string();
        if m.contains("Couldn't find camera")
            || m.contains("Don't know how")
            || m.contains("not supported")
        {
            DecodeError::unsupported(F, m)
        } else if crate::error::looks_truncated(&m) {
            DecodeError::truncated(F, m)
        } else {
            DecodeError::corrupt(F, m)
        }
    })
}

/// Image dimensions after the camera's crop.
pub(crate) fn cropped_dims(r: &rawloader::RawImage) -> (usize, usize) {
    let [top, right, bottom, left] = r.crops;
    (
        r.width.saturating_sub(left + right),
        r.height.saturating_sub(top + bottom),
    )
}

/// The EXIF orientation value of rawloader's orientation.
pub(crate) fn orientation_value(o: rawloader::Orientation) -> u16 {
    use rawloader::Orientation as O;
    match o {
        O::Normal | O::Unknown => 1,
        O::HorizontalFlip => 2,
        O::Rotate180 => 3,
        O::VerticalFlip => 4,
        O::Transpose => 5,
        O::Rotate90 => 6,
        O::Transverse => 7,
        O::Rotate270 => 8,
    }
}

/// The embedded JPEG previews (baseline/progressive, decodable) with their header info.
pub(crate) fn previews(b: &[u8]) -> Vec<(tiffwalk::EmbeddedJpeg, JpegInfo)> {
    tiffwalk::embedded_jpegs(b)
        .into_iter()
        .filter_map(|e| {
            let data = &b[e.offset..e.offset + e.len];
            let info = header::jpeg_info(data).ok()?;
            (matches!(info.sof, 0xC0..=0xC2) && matches!(info.components, 1 | 3))
                .then_some((e, info))
        })
        .collect()
}

/// Decodes a RAW file to (unoriented) RGB whose long edge is at least `target` where the
/// sensor allows, choosing the cheapest of preview, half-size and full demosaic.
pub(crate) fn decode(
    b: &[u8],
    target: u32,
    max_alloc: u64,
) -> Result<(RgbImage, DecodePath), DecodeError> {
    // (a) The smallest embedded preview that still covers the target.
    let mut cands = previews(b);
    cands.sort_by_key(|(_, i)| i.width.max(i.height));
    if let Some((e, info)) = cands.iter().find(|(_, i)| i.width.max(i.height) >= target)
        && let Ok((img, _)) = jpeg::decode(&b[e.offset..e.offset + e.len], info, target, max_alloc)
    {
        return Ok((img, DecodePath::RawPreview));
    }
    let raw = load(b, false)?;
    let (cw, ch) = cropped_dims(&raw);
    if cw < 2 || ch < 2 {
        return Err(DecodeError::corrupt(F, "raw image smaller than 2x2"));
    }
    let data = match &raw.data {
        rawloader::RawImageData::Integer(d) => d,
        rawloader::RawImageData::Float(_) => {
            return Err(DecodeError::unsupported(F, "floating-point raw data"));
        }
    };
    if data.len() < raw.width * raw.height * raw.cpp {
        return Err(DecodeError::truncated(F, "raw data shorter than the image"));
    }
    let color = Color::new(&raw);
    let half_ok = (cw / 2).max(ch / 2) as u32 >= target;
    if raw.cpp == 3 {
        let img = linear_rgb(&raw, data, &color, half_ok);
        return Ok((
            img,
            if half_ok {
                DecodePath::RawHalf
            } else {
                DecodePath::RawFull
            },
        ));
    }
    if raw.cpp != 1 {
        return Err(DecodeError::unsupported(
            F,
            format!("{} samples per pixel", raw.cpp),
        ));
    }
    let pattern = Pattern::new(&raw);
    if half_ok && pattern.is_2x2_rgb() {
        Ok((half(&raw, data, &color, &pattern), DecodePath::RawHalf))
    } else {
        Ok((bilinear(&raw, data, &color, &pattern), DecodePath::RawFull))
    }
}

/// Per-channel levels, white balance and the camera-to-sRGB matrix.
struct Color {
    black: [f32; 4],
    scale: [f32; 4],
    rgb_cam: [[f32; 3]; 3],
    lut: Vec<u8>,
}

const LUT_SIZE: usize = 16384;

impl Color {
    fn new(raw: &rawloader::RawImage) -> Self {
        let mut wb = raw.wb_coeffs;
        if wb[..3].iter().any(|v| !v.is_finite() || *v <= 0.0) {
            wb = raw.neutralwb();
        }
        if wb[..3].iter().any(|v| !v.is_finite() || *v <= 0.0) {
            wb = [1.0; 4];
        }
        if !wb[3].is_finite() || wb[3] <= 0.0 {
            wb[3] = wb[1];
        }
        let g = wb[1];
        let mut black = [0f32; 4];
        let mut scale = [0f32; 4];
        for c in 0..4 {
            black[c] = raw.blacklevels[c] as f32;
            let range = (raw.whitelevels[c] as f32 - black[c]).max(1.0);
            scale[c] = wb[c] / g / range;
        }
        Color {
            black,
            scale,
            rgb_cam: rgb_cam(raw.xyz_to_cam),
            lut: (0..LUT_SIZE)
                .map(|i| {
                    let v = i as f32 / (LUT_SIZE - 1) as f32;
                    let s = if v <= 0.003_130_8 {
                        12.92 * v
                    } else {
                        1.055 * v.powf(1.0 / 2.4) - 0.055
                    };
                    (s * 255.0 + 0.5).clamp(0.0, 255.0) as u8
                })
                .collect(),
        }
    }

    /// Raw camera values (per colour 0..3, already averaged) to an sRGB pixel.
    #[inline]
    fn pixel(&self, cam: [f32; 3], out: &mut [u8]) {
        let c = [
            ((cam[0] - self.black[0]) * self.scale[0]).max(0.0),
            ((cam[1] - self.black[1]) * self.scale[1]).max(0.0),
            ((cam[2] - self.black[2]) * self.scale[2]).max(0.0),
        ];
        for (i, o) in out.iter_mut().enumerate().take(3) {
            let m = &self.rgb_cam[i];
            let v = (m[0] * c[0] + m[1] * c[1] + m[2] * c[2]).clamp(0.0, 1.0);
            *o = self.lut[(v * (LUT_SIZE - 1) as f32) as usize];
        }
    }
}

/// dcraw's construction: cam_rgb = xyz_to_cam · sRGB_to_XYZ, rows normalised to 1 (so that a
/// white-balanced neutral stays neutral), then inverted. Identity when the matrix is unknown
/// or singular.
fn rgb_cam(xyz_to_cam: [[f32; 3]; 4]) -> [[f32; 3]; 3] {
    const SRGB_TO_XYZ: [[f32; 3]; 3] = [
        [0.412_453, 0.357_580, 0.180_423],
        [0.212_671, 0.715_160, 0.072_169],
        [0.019_334, 0.119_193, 0.950_227],
    ];
    let ident = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    let mut cam_rgb = [[0f32; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            cam_rgb[i][j] = (0..3).map(|k| xyz_to_cam[i][k] * SRGB_TO_XYZ[k][j]).sum();
        }
        let s: f32 = cam_rgb[i].iter().sum();
        if !s.is_finite() || s.abs() < 1e-6 {
            return ident;
        }
        for v in &mut cam_rgb[i] {
            *v /= s;
        }
    }
    invert3(cam_rgb).unwrap_or(ident)
}

fn invert3(m: [[f32; 3]; 3]) -> Option<[[f32; 3]; 3]> {
    let det = m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0]);
    if !det.is_finite() || det.abs() < 1e-9 {
        return None;
    }
    let d = 1.0 / det;
    Some([
        [
            (m[1][1] * m[2][2] - m[1][2] * m[2][1]) * d,
            (m[0][2] * m[2][1] - m[0][1] * m[2][2]) * d,
            (m[0][1] * m[1][2] - m[0][2] * m[1][1]) * d,
        ],
        [
            (m[1][2] * m[2][0] - m[1][0] * m[2][2]) * d,
            (m[0][0] * m[2][2] - m[0][2] * m[2][0]) * d,
            (m[0][2] * m[1][0] - m[0][0] * m[1][2]) * d,
        ],
        [
            (m[1][0] * m[2][1] - m[1][1] * m[2][0]) * d,
            (m[0][1] * m[2][0] - m[0][0] * m[2][1]) * d,
            (m[0][0] * m[1][1] - m[0][1] * m[1][0]) * d,
        ],
    ])
}

/// The CFA colour of each position of the repeating pattern, relative to the crop origin.
/// Colour 3 (a second green or emerald) is folded into green.
struct Pattern {
    w: usize,
    h: usize,
    colors: Vec<usize>,
}

impl Pattern {
    fn new(raw: &rawloader::RawImage) -> Self {
        let (top, left) = (raw.crops[0], raw.crops[3]);
        let w = raw.cfa.width.clamp(1, 16);
        let h = raw.cfa.height.clamp(1, 16);
        let mut colors = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let c = raw.cfa.color_at(y + top, x + left);
                colors.push(if c >= 3 { 1 } else { c });
            }
        }
        Pattern { w, h, colors }
    }

    #[inline]
    fn at(&self, y: usize, x: usize) -> usize {
        self.colors[(y % self.h) * self.w + (x % self.w)]
    }

    fn is_2x2_rgb(&self) -> bool {
        if self.w > 2 || self.h > 2 {
            return false;
        }
        let mut seen = [false; 3];
        for y in 0..2 {
            for x in 0..2 {
                seen[self.at(y, x)] = true;
            }
        }
        seen.iter().all(|&s| s)
    }
}

/// Half size: each 2×2 CFA block becomes one pixel at the block centre. A colour sampled twice
/// per block (green) is the mean of its two samples; a colour sampled once (red, blue) is
/// interpolated bilinearly at the centre from its four nearest samples (weights 9, 3, 3, 1 /
/// 16), which removes the quarter-pixel colour shift of plain binning.
fn half(raw: &rawloader::RawImage, data: &[u16], color: &Color, p: &Pattern) -> RgbImage {
    let (cw, ch) = cropped_dims(raw);
    let (ow, oh) = (cw / 2, ch / 2);
    let (top, left) = (raw.crops[0], raw.crops[3]);
    let stride = raw.width;
    // Positions of each colour inside the 2x2 block.
    let mut pos: [Vec<(usize, usize)>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for y in 0..2 {
        for x in 0..2 {
            pos[p.at(y, x)].push((y, x));
        }
    }
    let at = |y: usize, x: usize| data[(top + y) * stride + left + x] as f32;
    let mut out = vec![0u8; ow * oh * 3];
    for oy in 0..oh {
        for ox in 0..ow {
            let (by, bx) = (oy * 2, ox * 2);
            let mut cam = [0f32; 3];
            for (c, ps) in pos.iter().enumerate() {
                if ps.len() == 1 {
                    let (py, px) = ps[0];
                    let (y0, x0) = (by + py, bx + px);
                    // The neighbouring same-colour sample on the far side of the block centre.
                    let y1 = if py == 0 {
                        if y0 + 2 < ch { y0 + 2 } else { y0 }
                    } else if y0 >= 2 {
                        y0 - 2
                    } else {
                        y0
                    };
                    let x1 = if px == 0 {
                        if x0 + 2 < cw { x0 + 2 } else { x0 }
                    } else if x0 >= 2 {
                        x0 - 2
                    } else {
                        x0
                    };
                    cam[c] = (9.0 * at(y0, x0) + 3.0 * at(y0, x1) + 3.0 * at(y1, x0) + at(y1, x1))
                        / 16.0;
                } else {
                    let s: f32 = ps.iter().map(|&(py, px)| at(by + py, bx + px)).sum();
                    cam[c] = s / ps.len() as f32;
                }
            }
            color.pixel(cam, &mut out[(oy * ow + ox) * 3..]);
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer size matches")
}

/// Full resolution: bilinear demosaic (each missing colour is the mean of the same-colour
/// samples in the 3×3 neighbourhood).
fn bilinear(raw: &rawloader::RawImage, data: &[u16], color: &Color, p: &Pattern) -> RgbImage {
    let (cw, ch) = cropped_dims(raw);
    let (top, left) = (raw.crops[0], raw.crops[3]);
    let stride = raw.width;
    let mut out = vec![0u8; cw * ch * 3];
    for y in 0..ch {
        for x in 0..cw {
            let mut sum = [0f32; 3];
            let mut cnt = [0f32; 3];
            let own = p.at(y, x);
            let v = data[(y + top) * stride + x + left] as f32;
            sum[own] = v;
            cnt[own] = 1.0;
            for dy in -1i32..=1 {
                for dx in -1i32..=1 {
                    let (ny, nx) = (y as i32 + dy, x as i32 + dx);
                    if ny < 0 || nx < 0 || ny >= ch as i32 || nx >= cw as i32 {
                        continue;
                    }
                    let c = p.at(ny as usize, nx as usize);
                    if c == own {
                        continue;
                    }
                    sum[c] += data[(ny as usize + top) * stride + nx as usize + left] as f32;
                    cnt[c] += 1.0;
                }
            }
            let cam = [0, 1, 2].map(|c| if cnt[c] > 0.0 { sum[c] / cnt[c] } else { 0.0 });
            color.pixel(cam, &mut out[(y * cw + x) * 3..]);
        }
    }
    RgbImage::from_raw(cw as u32, ch as u32, out).expect("buffer size matches")
}

/// Linear (already demosaiced, 3 samples per pixel) raw data.
fn linear_rgb(raw: &rawloader::RawImage, data: &[u16], color: &Color, half: bool) -> RgbImage {
    let (cw, ch) = cropped_dims(raw);
    let (top, left) = (raw.crops[0], raw.crops[3]);
    let f = if half { 2 } else { 1 };
    let (ow, oh) = (cw / f, ch / f);
    let mut out = vec![0u8; ow * oh * 3];
    for oy in 0..oh {
        for ox in 0..ow {
            let mut cam = [0f32; 3];
            for dy in 0..f {
                for dx in 0..f {
                    let i = ((top + oy * f + dy) * raw.width + left + ox * f + dx) * 3;
                    for c in 0..3 {
                        cam[c] += data[i + c] as f32;
                    }
                }
            }
            let n = (f * f) as f32;
            color.pixel(cam.map(|v| v / n), &mut out[(oy * ow + ox) * 3..]);
        }
    }
    RgbImage::from_raw(ow as u32, oh as u32, out).expect("buffer size matches")
}
