//! Times TrOCR-small on the CPU through the OCR recogniser's own code: preprocessing, one
//! encoder pass over a batch of line crops, batched greedy decoding.
//!
//! Run with `scripts/bench-trocr.sh`, which first writes a random-weight model of
//! `microsoft/trocr-small-printed`'s real size (`scripts/make-fixtures.py trocr-full`; the
//! compute is the trained model's, the text is not). In one process, on the line crops of
//! `fixtures/trocr/images`, it prints milliseconds per crop for the encoder and per generated
//! token for the decoder, at batch 1 and at batch 8, and last `trocr_batch8_vs_batch1=X`
//! (crops/s at batch 8 ÷ crops/s at batch 1, the same number of tokens per crop).
//!
//!     cargo run --release -p imgd-trocr --example trocr_bench -- MODEL_DIR

use std::path::{Path, PathBuf};
use std::time::Instant;

use imgd_trocr::{Device, TrocrRecognizer};

/// Tokens generated per crop: a short printed line. Random weights pick when to end, so the
/// decode length is fixed for the comparison.
const TOKENS: usize = 16;

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: trocr_bench MODEL_DIR"),
    );
    let started = Instant::now();
    let model = TrocrRecognizer::load(&dir, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    println!(
        "loaded {} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trocr/images");
    let mut crops = Vec::new();
    for entry in std::fs::read_dir(&images).expect("fixtures/trocr/images") {
        let path = entry.expect("a directory entry").path();
        crops.push(image::open(&path).expect("a PNG").to_rgb8());
    }
    crops.sort_by_key(|c| c.width());
    // 8 crops: the fixtures' 4 lines, twice.
    let crops: Vec<_> = crops.iter().cycle().take(8).cloned().collect();
    let started = Instant::now();
    let pixels: Vec<Vec<f32>> = crops
        .iter()
        .map(|c| model.preprocess(c).expect("preprocess"))
        .collect();
    let prepare_ms = started.elapsed().as_secs_f64() * 1e3 / crops.len() as f64;
    println!("preprocessing: {prepare_ms:.1} ms/crop");

    // Warm-up.
    let states = model.encode_pixels(&pixels[..1]).expect("encode");
    model.generate(&states, 2).expect("generate");

    let time = |batch: &[Vec<f32>]| {
        let started = Instant::now();
        let states = model.encode_pixels(batch).expect("encode");
        let encoded = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let generated = model.generate(&states, TOKENS).expect("generate");
        let decoded = started.elapsed().as_secs_f64();
        let tokens: usize = generated.iter().map(|g| g.probs.len()).sum();
        (encoded, decoded, tokens)
    };
    let (mut encode1, mut decode1, mut tokens1) = (0.0, 0.0, 0);
    for single in pixels.chunks(1) {
        let (e, d, t) = time(single);
        encode1 += e;
        decode1 += d;
        tokens1 += t;
    }
    let (encode8, decode8, tokens8) = time(&pixels);
    let n = pixels.len() as f64;
    println!(
        "batch 1: encoder {:.0} ms/crop, decoder {:.1} ms/token ({tokens1} tokens), {:.0} ms/crop in all",
        encode1 * 1e3 / n,
        decode1 * 1e3 / tokens1.max(1) as f64,
        (encode1 + decode1) * 1e3 / n
    );
    println!(
        "batch 8: encoder {:.0} ms/crop, decoder {:.1} ms/token ({tokens8} tokens), {:.0} ms/crop in all",
        encode8 * 1e3 / n,
        decode8 * 1e3 / tokens8.max(1) as f64,
        (encode8 + decode8) * 1e3 / n
    );
    // Per-crop time at equal work: scale each run to tokens per crop.
    let per_crop = |encode: f64, decode: f64, tokens: usize| {
        encode / n + decode / tokens.max(1) as f64 * TOKENS as f64
    };
    println!(
        "trocr_batch8_vs_batch1={:.2}",
        per_crop(encode1, decode1, tokens1) / per_crop(encode8, decode8, tokens8)
    );
}
