//! What a thumbnail costs beside the decode it rides on: decodes each photo given (or the test
//! photos) to the 256-px tier the thumbnail reads, encodes the thumbnail with libjpeg-turbo
//! (what the module uses) and with the `image` crate's encoder, and prints the times and
//! ratios. Run with `cargo run --release -p imgd-thumbnail --example thumbnail_cost
//! [PHOTO...]`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use imgd_decode::{DecodeOptions, decode_tiers};
use imgd_thumbnail::{THUMBNAIL_EDGE, encode_jpeg, encode_jpeg_pure_rust};

fn main() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");
    let mut photos: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    if photos.is_empty() {
        photos = ["photos/xmp_test.jpg", "faces/zidane.jpg", "faces/bus.jpg"]
            .iter()
            .map(|p| PathBuf::from(fixtures).join(p))
            .collect();
    }
    let rounds = 20;
    let (mut decode, mut encode, mut bytes) = (Duration::ZERO, Duration::ZERO, 0);
    let mut pure_rust = Duration::ZERO;
    for _ in 0..rounds {
        for photo in &photos {
            let started = Instant::now();
            let decoded = decode_tiers(photo, &[THUMBNAIL_EDGE], &DecodeOptions::default())
                .expect("a photo that decodes");
            decode += started.elapsed();
            let tier = decoded.tier(THUMBNAIL_EDGE).expect("the tier");
            let started = Instant::now();
            bytes += encode_jpeg(tier).expect("encodes").len();
            encode += started.elapsed();
            let started = Instant::now();
            encode_jpeg_pure_rust(tier).expect("encodes");
            pure_rust += started.elapsed();
        }
    }
    let n = (rounds * photos.len()) as f64;
    println!(
        "photos={} decode_ms={:.2} thumbnail_ms={:.3} pure_rust_ms={:.3} thumbnail_bytes={:.0} \
         thumbnail_vs_decode={:.3} turbo_vs_pure_rust={:.1}",
        photos.len(),
        decode.as_secs_f64() * 1000.0 / n,
        encode.as_secs_f64() * 1000.0 / n,
        pure_rust.as_secs_f64() * 1000.0 / n,
        bytes as f64 / n,
        encode.as_secs_f64() / decode.as_secs_f64(),
        pure_rust.as_secs_f64() / encode.as_secs_f64()
    );
}
