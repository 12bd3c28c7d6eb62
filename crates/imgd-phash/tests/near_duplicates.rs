//! Recall and false positives of pHash near-duplicates on real photos and altered copies:
//! each photo resized to half, recompressed at JPEG quality 40, and cropped by 5 % (2.5 % off
//! every side), hashed as the daemon hashes them (decoded to the module's tier by
//! `imgd-decode`, EXIF orientation applied). Different photos, including 40 rendered-text
//! images alike in layout, must stay apart.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use imgd_decode::{DecodeOptions, decode_tiers_bytes};
use imgd_phash::{
    DEFAULT_MAX_DISTANCE, PHASH, difference_hash, distance, near_duplicate_groups, perceptual_hash,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The photos: every distinct real photo of the fixtures.
const PHOTOS: &[&str] = &[
    "photos/flower.jpg",
    "photos/flower2.jpg",
    "photos/hopper.jpg",
    "photos/pil_sample_cmyk.jpg",
    "photos/xmp_test.jpg",
    "faces/astronaut.jpg",
    "faces/bus.jpg",
    "faces/zidane.jpg",
];

/// The module's tier of a file's bytes, as the decode threads make it.
fn tier_of(bytes: &[u8]) -> RgbImage {
    let tier = PHASH.tier().unwrap();
    let decoded = decode_tiers_bytes(bytes, &[tier], &DecodeOptions::default()).unwrap();
    decoded.tier(tier).unwrap().as_ref().clone()
}

fn jpeg(image: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(image)
        .unwrap();
    out.into_inner()
}

/// The copies of one photo: (what was done, the copy's file bytes).
fn copies(original: &RgbImage) -> Vec<(&'static str, Vec<u8>)> {
    let (w, h) = original.dimensions();
    let half = image::imageops::resize(original, w / 2, h / 2, FilterType::Lanczos3);
    let (dx, dy) = (w / 40, h / 40);
    let cropped = image::imageops::crop_imm(original, dx, dy, w - 2 * dx, h - 2 * dy).to_image();
    vec![
        ("resized to half", jpeg(&half, 90)),
        ("recompressed at quality 40", jpeg(original, 40)),
        ("cropped by 5 %", jpeg(&cropped, 90)),
    ]
}

struct Hashed {
    name: String,
    phash: u64,
    dhash: u64,
}

fn hashed(name: String, bytes: &[u8]) -> Hashed {
    let tier = tier_of(bytes);
    Hashed {
        name,
        phash: perceptual_hash(&tier),
        dhash: difference_hash(&tier),
    }
}

#[test]
fn copies_are_found_and_different_photos_are_not() {
    let mut originals = Vec::new();
    let mut copy_distances = Vec::new();
    // (photo index, pHash) of every photo and copy, for the grouping.
    let mut family: Vec<(i64, u64)> = Vec::new();
    for photo in PHOTOS {
        let bytes = std::fs::read(fixtures().join(photo)).unwrap();
        let original = hashed(photo.to_string(), &bytes);
        // The copies are made from the photo as displayed (orientation applied).
        let pixels = image::load_from_memory(&bytes).unwrap();
        let pixels = DynamicImage::ImageRgb8(pixels.to_rgb8()).to_rgb8();
        family.push((originals.len() as i64, original.phash));
        for (what, copy) in copies(&pixels) {
            let copy = hashed(format!("{photo} {what}"), &copy);
            family.push((originals.len() as i64, copy.phash));
            copy_distances.push((
                copy.name,
                distance(original.phash, copy.phash),
                distance(original.dhash, copy.dhash),
            ));
        }
        originals.push(original);
    }
    for i in 0..40 {
        let name = format!("ocr/text_{i:02}.jpg");
        let path = fixtures().join(&name);
        if let Ok(bytes) = std::fs::read(&path) {
            originals.push(hashed(name, &bytes));
        }
    }
    let mut different = Vec::new();
    for (i, a) in originals.iter().enumerate() {
        for b in &originals[i + 1..] {
            different.push((
                format!("{} vs {}", a.name, b.name),
                distance(a.phash, b.phash),
                distance(a.dhash, b.dhash),
            ));
        }
    }
    let found = copy_distances
        .iter()
        .filter(|c| c.1 <= DEFAULT_MAX_DISTANCE)
        .count();
    let false_positives: Vec<_> = different
        .iter()
        .filter(|d| d.1 <= DEFAULT_MAX_DISTANCE)
        .collect();
    let worst_copy = copy_distances.iter().max_by_key(|c| c.1).unwrap();
    let closest_different = different.iter().min_by_key(|d| d.1).unwrap();
    eprintln!(
        "phash at distance {DEFAULT_MAX_DISTANCE}: recall {found}/{} copies, false positives \
         {}/{} pairs of different images; farthest copy {} bits ({}), closest different pair \
         {} bits ({})",
        copy_distances.len(),
        false_positives.len(),
        different.len(),
        worst_copy.1,
        worst_copy.0,
        closest_different.1,
        closest_different.0
    );
    for (name, p, d) in &copy_distances {
        eprintln!("  copy {name}: phash {p}, dhash {d}");
    }
    assert_eq!(found, copy_distances.len(), "{copy_distances:?}");
    assert!(false_positives.is_empty(), "{false_positives:?}");

    // The grouping puts each photo with its three copies, and nothing else together.
    let ids: Vec<(i64, u64)> = family
        .iter()
        .enumerate()
        .map(|(id, &(_, hash))| (id as i64, hash))
        .collect();
    let groups = near_duplicate_groups(&ids, DEFAULT_MAX_DISTANCE);
    assert_eq!(groups.len(), PHOTOS.len());
    for group in &groups {
        let photo = family[group.image_ids[0] as usize].0;
        assert_eq!(group.image_ids.len(), 4);
        assert!(
            group
                .image_ids
                .iter()
                .all(|&id| family[id as usize].0 == photo)
        );
    }
}
