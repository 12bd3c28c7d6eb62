//! Pixel helpers: colour conversions to 8-bit RGB, orientation, resizing, ICC.

use std::sync::OnceLock;

use fast_image_resize as fr;
use image::{DynamicImage, RgbImage};

/// Converts any decoded image to 8-bit RGB. Alpha is composited over white (photos with
/// transparency then look as a viewer shows them); 16-bit and float samples are scaled.
pub(crate) fn to_rgb8(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(i) => i,
        i if i.color().has_alpha() => {
            let rgba = i.into_rgba8();
            let (w, h) = rgba.dimensions();
            let mut out = Vec::with_capacity(w as usize * h as usize * 3);
            for p in rgba.pixels() {
                let a = p[3] as u32;
                for c in 0..3 {
                    out.push(((p[c] as u32 * a + 255 * (255 - a) + 127) / 255) as u8);
                }
            }
            RgbImage::from_raw(w, h, out).expect("buffer size matches")
        }
        i => i.into_rgb8(),
    }
}

/// CMYK (as jpeg-decoder outputs it: Adobe's inverted values un-inverted) to RGB.
pub(crate) fn cmyk_to_rgb(w: u32, h: u32, cmyk: &[u8]) -> Option<RgbImage> {
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for p in cmyk.chunks_exact(4) {
        let k = 255 - p[3] as u32;
        for &c in &p[..3] {
            out.push((((255 - c as u32) * k + 127) / 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out)
}

/// Applies an EXIF orientation (1..=8) to an image.
pub(crate) fn orient(img: RgbImage, orientation: u16) -> RgbImage {
    use image::metadata::Orientation;
    let Some(o) = Orientation::from_exif(orientation.min(255) as u8) else {
        return img;
    };
    if o == Orientation::NoTransforms {
        return img;
    }
    let mut d = DynamicImage::ImageRgb8(img);
    d.apply_orientation(o);
    d.into_rgb8()
}

/// `(w, h)` scaled so that the long edge is `long` (aspect kept, at least 1 px).
pub(crate) fn fit_long_edge(w: u32, h: u32, long: u32) -> (u32, u32) {
    if w >= h {
        let nh = ((h as u64 * long as u64 + w as u64 / 2) / w as u64).max(1) as u32;
        (long, nh)
    } else {
        let nw = ((w as u64 * long as u64 + h as u64 / 2) / h as u64).max(1) as u32;
        (nw, long)
    }
}

/// Resizes so that the long edge is `long` (never up). CatmullRom convolution; for ratios
/// over 4 a box pre-reduction to twice the target first (cheaper, and anti-aliased).
pub(crate) fn resize_long_edge(src: &RgbImage, long: u32) -> RgbImage {
    let (w, h) = src.dimensions();
    if long >= w.max(h) {
        return src.clone();
    }
    let (dw, dh) = fit_long_edge(w, h, long);
    let ratio = w.max(h) as f32 / long as f32;
    if ratio > 4.0 {
        let (mw, mh) = fit_long_edge(w, h, long * 2);
        let mid = resize_exact(src, mw, mh, fr::FilterType::Box);
        resize_exact(&mid, dw, dh, fr::FilterType::CatmullRom)
    } else {
        resize_exact(src, dw, dh, fr::FilterType::CatmullRom)
    }
}

fn resize_exact(src: &RgbImage, dw: u32, dh: u32, filter: fr::FilterType) -> RgbImage {
    let (w, h) = src.dimensions();
    let src_view = fr::images::ImageRef::new(w, h, src.as_raw(), fr::PixelType::U8x3)
        .expect("RgbImage buffer matches its dimensions");
    let mut dst = fr::images::Image::new(dw, dh, fr::PixelType::U8x3);
    let mut resizer = fr::Resizer::new();
    resizer
        .resize(
            &src_view,
            &mut dst,
            &fr::ResizeOptions::new().resize_alg(fr::ResizeAlg::Convolution(filter)),
        )
        .expect("same pixel type, non-empty images");
    RgbImage::from_raw(dw, dh, dst.into_vec()).expect("buffer size matches")
}

/// The sRGB output profile with its output tables precomputed, built once per process. With
/// them qcms converts through 8-bit lookup tables with AVX or SSE2 instead of evaluating the
/// output curves for every pixel: 4.8 ms instead of 102 ms for an 810×1080 photo with a
/// non-sRGB profile, pixels within one level (`benches/icc.rs`).
fn srgb_output() -> &'static qcms::Profile {
    static SRGB: OnceLock<Box<qcms::Profile>> = OnceLock::new();
    SRGB.get_or_init(|| {
        let mut srgb = qcms::Profile::new_sRGB();
        srgb.precache_output_transform();
        srgb
    })
}

/// Converts an image in place from an embedded RGB ICC profile to sRGB, with `qcms` (pure
/// Rust; a transform costs a few table builds plus one pass over the pixels). Profiles that
/// are not RGB, fail to parse, or already are sRGB are left alone. Returns whether it
/// converted.
pub fn icc_to_srgb(img: &mut RgbImage, icc: &[u8]) -> bool {
    // Colour space signature at bytes 16..20.
    if icc.len() < 132 || &icc[16..20] != b"RGB " {
        return false;
    }
    let Some(src) = qcms::Profile::new_from_slice(icc, false) else {
        return false;
    };
    if src.is_sRGB() {
        return false;
    }
    let Some(xf) = qcms::Transform::new(
        &src,
        srgb_output(),
        qcms::DataType::RGB8,
        qcms::Intent::Perceptual,
    ) else {
        return false;
    };
    let buf: &mut [u8] = img;
    xf.apply(buf);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiff_icc(buf: &[u8]) -> Vec<u8> {
        let t = crate::tiffwalk::Tiff::new(buf, 0).unwrap();
        let ifd = t.ifd0().unwrap();
        let e = ifd.get(34675).unwrap();
        buf[e.value_at..e.value_at + e.count as usize].to_vec()
    }

    #[test]
    fn the_precached_srgb_output_converts_within_one_level_of_the_per_pixel_curves() {
        use image::ImageDecoder;
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/faces/bus.jpg");
        let bytes = std::fs::read(path).unwrap();
        let icc = image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&bytes))
            .unwrap()
            .icc_profile()
            .unwrap()
            .expect("bus.jpg carries a profile");
        let photo = image::load_from_memory(&bytes).unwrap().to_rgb8();
        let mut converted = photo.clone();
        assert!(icc_to_srgb(&mut converted, &icc));
        let source = qcms::Profile::new_from_slice(&icc, false).unwrap();
        let srgb = qcms::Profile::new_sRGB();
        let per_pixel = qcms::Transform::new(
            &source,
            &srgb,
            qcms::DataType::RGB8,
            qcms::Intent::Perceptual,
        )
        .unwrap();
        let mut expected = photo.clone();
        per_pixel.apply(&mut expected);
        let changed = photo
            .as_raw()
            .iter()
            .zip(expected.as_raw())
            .filter(|(a, b)| a != b)
            .count();
        assert!(
            changed > 1000,
            "the profile is not a no-op: {changed} values changed"
        );
        let worst = converted
            .as_raw()
            .iter()
            .zip(expected.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(worst <= 1, "precached vs per-pixel: {worst} levels");
    }

    #[test]
    fn icc_conversion_is_a_no_op_for_srgb_and_ignores_garbage() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fixtures/decode/hopper.iccprofile.tif");
        let icc = tiff_icc(&std::fs::read(p).unwrap());
        assert_eq!(&icc[36..40], b"acsp");
        let src = RgbImage::from_fn(64, 4, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 60) as u8, 128])
        });
        let mut img = src.clone();
        icc_to_srgb(&mut img, &icc);
        // An sRGB profile either is recognised (no change) or maps to itself within rounding.
        let max = img
            .as_raw()
            .iter()
            .zip(src.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(max <= 2, "sRGB→sRGB changed pixels by {max}");
        let mut img = src.clone();
        assert!(!icc_to_srgb(&mut img, b"not a profile"));
        assert!(!icc_to_srgb(&mut img, &[0u8; 200]));
        assert_eq!(img, src);
    }

    #[test]
    fn fit_long_edge_keeps_aspect() {
        assert_eq!(fit_long_edge(6000, 4000, 1024), (1024, 683));
        assert_eq!(fit_long_edge(4000, 6000, 1024), (683, 1024));
        assert_eq!(fit_long_edge(10000, 1, 100), (100, 1));
    }
}
