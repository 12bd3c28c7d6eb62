//! Property-based fuzzing of the decode entry points over mutated real files: truncation,
//! byte flips, header-field overwrites, chunk deletion and duplication. Whatever the input,
//! the entry points must return (an image or a typed error) without a panic escaping, and a
//! decoder panic must not be the way they fail (each one found so far is guarded up front).
//!
//! `PROPTEST_CASES=N` sets the number of cases (default 300, a few seconds).

mod common;
use common::*;
use imgd_decode::{DecodeError, DecodeOptions, decode_tiers_bytes, read_header_bytes};
use proptest::prelude::*;
use std::sync::OnceLock;

const SEEDS: &[&str] = &[
    "photos/flower2.jpg",
    "decode/flower2_progressive.jpg",
    "decode/flower2_restart.jpg",
    "photos/pil_sample_cmyk.jpg",
    "photos/hopper_orientation_6.jpg",
    "decode/hopper.png",
    "decode/flower2_palette.png",
    "decode/pil123rgba.png",
    "decode/hopper.webp",
    "decode/hopper_orientation_6.webp",
    "decode/hopper.gif",
    "decode/hopper.bmp",
    "decode/hopper.tif",
    "decode/tiff_16bit_RGB.tiff",
    "decode/tiff_tiled_raw.tif",
    "decode/flower.heic",
    "decode/bayer_preview.dng",
];

fn seeds() -> &'static Vec<Vec<u8>> {
    static S: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    S.get_or_init(|| {
        SEEDS
            .iter()
            .map(|p| std::fs::read(fixtures().join(p)).unwrap())
            .collect()
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(f64),
    Flip(Vec<(f64, u8)>),
    /// Overwrite 1, 2 or 4 bytes in the first 2 KiB (header fields: sizes, offsets, counts).
    Field(f64, u32, u8),
    /// Remove a span.
    Delete(f64, u16),
    /// Duplicate a span.
    Duplicate(f64, u16),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Mutation::Truncate),
        prop::collection::vec((0.0..1.0f64, 1..=255u8), 1..16).prop_map(Mutation::Flip),
        (
            0.0..1.0f64,
            prop_oneof![Just(0u32), Just(0xFFFF_FFFF), Just(0xFFFF), any::<u32>()],
            prop_oneof![Just(1u8), Just(2), Just(4)]
        )
            .prop_map(|(p, v, w)| Mutation::Field(p, v, w)),
        (0.0..1.0f64, 1..4096u16).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (0.0..1.0f64, 1..4096u16).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
    ]
}

fn apply(src: &[u8], m: &Mutation) -> Vec<u8> {
    let at = |f: f64, len: usize| ((f * len as f64) as usize).min(len.saturating_sub(1));
    let mut b = src.to_vec();
    match m {
        Mutation::Truncate(f) => b.truncate(at(*f, src.len())),
        Mutation::Flip(flips) => {
            for (f, x) in flips {
                let i = at(*f, b.len());
                b[i] ^= x;
            }
        }
        Mutation::Field(f, v, w) => {
            let i = at(*f, b.len().min(2048));
            let bytes = v.to_le_bytes();
            for (k, v) in bytes.iter().take(*w as usize).enumerate() {
                if let Some(x) = b.get_mut(i + k) {
                    *x = *v;
                }
            }
        }
        Mutation::Delete(f, n) => {
            let i = at(*f, b.len());
            let end = (i + *n as usize).min(b.len());
            b.drain(i..end);
        }
        Mutation::Duplicate(f, n) => {
            let i = at(*f, b.len());
            let end = (i + *n as usize).min(b.len());
            let span = b[i..end].to_vec();
            b.splice(i..i, span);
        }
    }
    b
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_files_never_panic(seed in 0..SEEDS.len(), m in mutation()) {
        let input = apply(&seeds()[seed], &m);
        // Small pixel limit: mutated headers may claim anything up to it.
        let opts = DecodeOptions { max_pixels: 4_000_000, ..DecodeOptions::default() };
        let header = read_header_bytes(&input, &opts);
        if let Err(DecodeError::Panicked { message }) = &header {
            prop_assert!(false, "read_header panicked on {} {:?}: {}", SEEDS[seed], m, message);
        }
        match decode_tiers_bytes(&input, &[256, 64], &opts) {
            Ok(d) => {
                prop_assert!(!d.tiers.is_empty());
                prop_assert!(d.tiers[0].image.width().max(d.tiers[0].image.height()) <= 256);
            }
            Err(DecodeError::Panicked { message }) => {
                prop_assert!(false, "decode panicked on {} {:?}: {}", SEEDS[seed], m, message);
            }
            Err(_) => {}
        }
    }
}
