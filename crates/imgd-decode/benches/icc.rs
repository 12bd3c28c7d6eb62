//! ICC conversion to sRGB: imgd's `icc_to_srgb` (an sRGB output profile with precomputed
//! tables, built once) against a transform to a fresh sRGB profile, which evaluates the output
//! curves per pixel — what every conversion cost before. Both run in this process on the same
//! photo (`fixtures/faces/bus.jpg`, 810×1080, a 548-byte RGB profile that qcms does not take
//! for sRGB).
//!
//! Run with `cargo bench -p imgd-decode --bench icc`. Prints milliseconds per image for both,
//! the largest difference between their pixels, and `icc_precache_speedup=X`.
//!
//! Figure on the 2-core build machine: 102 ms against 4.8 ms per image,
//! `icc_precache_speedup=21.2`, pixels within 1 level. The old path spends its time in the
//! per-pixel curve interpolation (`qcms_transform_data_rgb_out_lut`, `floor`, `ceil`), not in
//! building tables.

use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, Instant};

use image::ImageDecoder;
use image::codecs::jpeg::JpegDecoder;
use imgd_decode::{RgbImage, icc_to_srgb};

fn ms_per_run(mut run: impl FnMut()) -> f64 {
    run();
    let started = Instant::now();
    let mut runs = 0u32;
    while runs < 5 || started.elapsed() < Duration::from_secs(2) {
        run();
        runs += 1;
    }
    started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs)
}

/// The conversion as it was: to a fresh sRGB profile, without precomputed output tables.
fn per_pixel_curves(img: &mut RgbImage, icc: &[u8]) {
    let source = qcms::Profile::new_from_slice(icc, false).expect("profile");
    let srgb = qcms::Profile::new_sRGB();
    let transform = qcms::Transform::new(
        &source,
        &srgb,
        qcms::DataType::RGB8,
        qcms::Intent::Perceptual,
    )
    .expect("transform");
    transform.apply(img);
}

fn main() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/faces/bus.jpg");
    let bytes = std::fs::read(&path).expect("fixtures/faces/bus.jpg");
    let mut decoder = JpegDecoder::new(Cursor::new(&bytes)).expect("a JPEG");
    let icc = decoder
        .icc_profile()
        .expect("readable")
        .expect("bus.jpg has a profile");
    let photo = image::load_from_memory(&bytes).expect("decodes").to_rgb8();

    let mut baseline = photo.clone();
    per_pixel_curves(&mut baseline, &icc);
    let mut converted = photo.clone();
    assert!(icc_to_srgb(&mut converted, &icc), "the profile converts");
    let max_difference = baseline
        .as_raw()
        .iter()
        .zip(converted.as_raw())
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);

    let before = ms_per_run(|| {
        let mut img = photo.clone();
        per_pixel_curves(&mut img, &icc);
        std::hint::black_box(img);
    });
    let after = ms_per_run(|| {
        let mut img = photo.clone();
        icc_to_srgb(&mut img, &icc);
        std::hint::black_box(img);
    });
    let (w, h) = photo.dimensions();
    println!("icc_ms_per_image{{path=\"per-pixel curves\",size=\"{w}x{h}\"}} {before:.2}");
    println!("icc_ms_per_image{{path=\"precached sRGB\",size=\"{w}x{h}\"}} {after:.2}");
    println!("icc_max_pixel_difference {max_difference}");
    println!("icc_precache_speedup={:.2}", before / after);
}
