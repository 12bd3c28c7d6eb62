//! The technical module on a real photo and on images made from it with known changes: blur,
//! darkening, brightening, added noise; and on synthetic images with known answers.

use std::path::PathBuf;

use image::{Rgb, RgbImage, imageops};
use imgd_core::SqlValue;
use imgd_modules::technical::{
    BLURRY_SHARPNESS, BLURRY_TILE_SHARPNESS, DominantColor, Technical, analyze,
};

fn load(rel: &str) -> RgbImage {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures")
        .join(rel);
    image::open(path).unwrap().to_rgb8()
}

/// A sharp, normally exposed 480x360 photo (Canon PowerShot S40).
fn flower() -> RgbImage {
    load("photos/flower.jpg")
}

/// Uniform numbers in (0, 1) from a fixed xorshift seed.
fn uniform(seed: u64) -> impl FnMut() -> f64 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

/// Adds zero-mean Gaussian noise of standard deviation `sigma` (Box-Muller), the same value to
/// the three channels so that the luma noise is `sigma` too.
fn add_noise(img: &RgbImage, sigma: f64) -> RgbImage {
    let mut u = uniform(0x1234_5678_9abc_def1);
    let mut out = img.clone();
    for p in out.pixels_mut() {
        let n = (-2.0 * u().ln()).sqrt() * (2.0 * std::f64::consts::PI * u()).cos() * sigma;
        for c in &mut p.0 {
            *c = (f64::from(*c) + n).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

fn scale(img: &RgbImage, factor: f64) -> RgbImage {
    let mut out = img.clone();
    for p in out.pixels_mut() {
        for c in &mut p.0 {
            *c = (f64::from(*c) * factor).round().clamp(0.0, 255.0) as u8;
        }
    }
    out
}

#[test]
fn sharp_photo_is_not_blurry_and_its_blurred_copy_is() {
    let sharp = analyze(&flower());
    assert!(!sharp.is_blurry, "{sharp:?}");
    assert!(sharp.sharpness > BLURRY_SHARPNESS, "{sharp:?}");
    assert!(!sharp.is_dark && !sharp.is_overexposed, "{sharp:?}");

    let blurred = analyze(&imageops::blur(&flower(), 1.5));
    assert!(blurred.is_blurry, "{blurred:?}");
    assert!(blurred.sharpness < sharp.sharpness / 5.0);
    assert!(blurred.sharpness_max < BLURRY_TILE_SHARPNESS);
}

#[test]
fn sharp_subject_on_a_blurred_background_is_not_blurry() {
    // The whole photo defocused, upscaled to 640x480, with a sharp 80x60 crop of the original
    // pasted in: a small in-focus subject in front of a soft background.
    let photo = flower();
    let background = imageops::blur(
        &imageops::resize(&photo, 640, 480, imageops::FilterType::Triangle),
        4.0,
    );
    let background_only = analyze(&background);
    assert!(background_only.is_blurry, "{background_only:?}");

    let mut composite = background.clone();
    let subject = imageops::crop_imm(&photo, 200, 150, 80, 60).to_image();
    imageops::replace(&mut composite, &subject, 280, 200);
    let t = analyze(&composite);
    assert!(t.sharpness < BLURRY_SHARPNESS, "globally soft: {t:?}");
    assert!(
        t.sharpness_max > BLURRY_TILE_SHARPNESS,
        "one sharp tile: {t:?}"
    );
    assert!(!t.is_blurry, "{t:?}");
}

#[test]
fn darkened_copy_is_dark_and_brightened_copy_is_overexposed() {
    let normal = analyze(&flower());
    assert!((0.3..0.7).contains(&normal.mean_luma), "{normal:?}");

    let dark = analyze(&scale(&flower(), 0.2));
    assert!(dark.is_dark && !dark.is_overexposed, "{dark:?}");
    assert!(
        (dark.mean_luma - normal.mean_luma * 0.2).abs() < 0.01,
        "{dark:?}"
    );

    let bright = analyze(&scale(&flower(), 2.5));
    assert!(bright.is_overexposed && !bright.is_dark, "{bright:?}");
    assert!(bright.clipped_high_pct > 20.0, "{bright:?}");

    let black = analyze(&RgbImage::new(64, 64));
    assert_eq!(
        (black.mean_luma, black.clipped_low_pct, black.is_dark),
        (0.0, 100.0, true)
    );
    let white = analyze(&RgbImage::from_pixel(64, 64, Rgb([255, 255, 255])));
    assert_eq!((white.mean_luma, white.clipped_high_pct), (1.0, 100.0));
    assert!(white.is_overexposed && !white.is_dark);
}

#[test]
fn noise_estimate_follows_added_noise() {
    let clean = analyze(&flower());
    assert!(clean.noise < 1.5, "{clean:?}");
    for sigma in [4.0, 8.0] {
        let noisy = analyze(&add_noise(&flower(), sigma));
        let expected = (sigma * sigma + clean.noise * clean.noise).sqrt();
        assert!(
            (noisy.noise - expected).abs() < 0.12 * expected,
            "sigma {sigma}: estimated {} (clean {})",
            noisy.noise,
            clean.noise
        );
    }
    // On a flat grey image the estimate is the added sigma itself.
    let grey = RgbImage::from_pixel(256, 256, Rgb([128, 128, 128]));
    assert_eq!(analyze(&grey).noise, 0.0);
    let noisy_grey = analyze(&add_noise(&grey, 10.0));
    assert!((noisy_grey.noise - 10.0).abs() < 0.5, "{noisy_grey:?}");
}

#[test]
fn dominant_colours_of_known_patches() {
    // Vertical bands: 50% red, 25% blue, 15% green, 10% white.
    let bands: [(u32, [u8; 3]); 4] = [
        (200, [220, 30, 40]),
        (100, [20, 60, 200]),
        (60, [40, 160, 60]),
        (40, [255, 255, 255]),
    ];
    let mut img = RgbImage::new(400, 300);
    let mut x0 = 0;
    for (width, rgb) in bands {
        for x in x0..x0 + width {
            for y in 0..300 {
                img.put_pixel(x, y, Rgb(rgb));
            }
        }
        x0 += width;
    }
    let colours = analyze(&img).dominant_colors;
    let hex: Vec<&str> = colours.iter().map(|c| c.hex.as_str()).collect();
    assert_eq!(hex, ["#dc1e28", "#143cc8", "#28a03c", "#ffffff"]);
    for (c, want) in colours.iter().zip([0.5, 0.25, 0.15, 0.10]) {
        assert!((c.share - want).abs() < 0.01, "{colours:?}");
    }

    // A real photo: five colours, shares sum to 1, largest first.
    let photo = analyze(&flower()).dominant_colors;
    assert_eq!(photo.len(), 5);
    assert!((photo.iter().map(|c| c.share).sum::<f64>() - 1.0).abs() < 1e-3);
    assert!(photo.windows(2).all(|w| w[0].share >= w[1].share));
    assert!(
        photo
            .iter()
            .all(|c| c.hex.len() == 7 && c.hex.starts_with('#'))
    );
}

#[test]
fn deterministic_and_row_matches_the_table() {
    let a = analyze(&flower());
    let b = analyze(&flower());
    assert_eq!(a, b);
    let row = a.to_row();
    assert_eq!(row.module, imgd_modules::TECHNICAL);
    assert_eq!(row, b.to_row());
    let names: Vec<&str> = row.columns.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "sharpness",
            "sharpness_max",
            "mean_luma",
            "clipped_high_pct",
            "clipped_low_pct",
            "noise",
            "is_blurry",
            "is_dark",
            "is_overexposed"
        ]
    );
    let schema = include_str!("../../../migrations/0001_init.sql");
    let table = schema
        .split("CREATE TABLE result_technical")
        .nth(1)
        .unwrap();
    let table = &table[..table.find(");").unwrap()];
    for name in &names {
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some(*name)),
            "{name} is not a column of result_technical"
        );
    }
    let flag = |name: &str| {
        row.columns
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(flag("is_blurry"), SqlValue::Integer(0));
    assert_eq!(flag("sharpness"), SqlValue::Real(a.sharpness));
    assert_eq!(row.data["dominant_colors"].as_array().unwrap().len(), 5);
    let back: Technical = serde_json::from_value(row.data).unwrap();
    assert_eq!(back, a);
    let _: Vec<DominantColor> = back.dominant_colors;
}
