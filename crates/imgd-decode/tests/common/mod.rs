#![allow(dead_code)]
use image::RgbImage;
use std::path::PathBuf;

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

pub fn fx(name: &str) -> PathBuf {
    fixtures().join("decode").join(name)
}

pub fn photo(name: &str) -> PathBuf {
    fixtures().join("photos").join(name)
}

/// Mean absolute difference per sample.
pub fn mae(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!(a.dimensions(), b.dimensions(), "dimensions differ");
    let s: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (x as i32 - y as i32).unsigned_abs() as u64)
        .sum();
    s as f64 / a.as_raw().len() as f64
}

/// The source pixels of the DNG fixtures (see examples/make-fixture-dng.rs).
pub fn dng_source() -> RgbImage {
    let src = image::open(photo("xmp_test.jpg")).unwrap().into_rgb8();
    image::imageops::resize(&src, 800, 428, image::imageops::FilterType::Lanczos3)
}

/// 2x2 box downscale in linear light (what an ideal half-size raw decode gives).
pub fn half_linear(src: &RgbImage) -> RgbImage {
    let lin = |v: u8| {
        let s = v as f64 / 255.0;
        if s <= 0.04045 {
            s / 12.92
        } else {
            ((s + 0.055) / 1.055).powf(2.4)
        }
    };
    let enc = |v: f64| {
        let s = if v <= 0.0031308 {
            12.92 * v
        } else {
            1.055 * v.powf(1.0 / 2.4) - 0.055
        };
        (s * 255.0 + 0.5).clamp(0.0, 255.0) as u8
    };
    let (w, h) = (src.width() / 2, src.height() / 2);
    RgbImage::from_fn(w, h, |x, y| {
        let mut px = [0u8; 3];
        for (c, o) in px.iter_mut().enumerate() {
            let s: f64 = [(0, 0), (0, 1), (1, 0), (1, 1)]
                .iter()
                .map(|&(dy, dx)| lin(src.get_pixel(2 * x + dx, 2 * y + dy)[c]))
                .sum();
            *o = enc(s / 4.0);
        }
        image::Rgb(px)
    })
}
