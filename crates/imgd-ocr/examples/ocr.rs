//! Runs imgd's OCR on image files and prints the lines, or measures it on a fixture folder.
//!
//! ```text
//! cargo run --release -p imgd-ocr --example ocr -- IMAGE...
//! cargo run --release -p imgd-ocr --example ocr -- --bench fixtures/ocr [--batch N] [--rounds R]
//! ```
//!
//! `--bench DIR` reads `DIR/truth.json` (`{"file": ["line", ...]}`), decodes every image
//! first, then times OCR alone over `--rounds` passes (default 3) in batches of `--batch`
//! images (default 8), and prints one JSON object: lines exactly right, accuracy, images/s.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use image::RgbImage;
use imgd_infer::OrtConfig;
use imgd_ocr::{Ocr, OcrConfig, default_models_dir};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mut bench: Option<PathBuf> = None;
    let mut files = Vec::new();
    let (mut batch, mut rounds) = (8usize, 3usize);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => bench = args.next().map(PathBuf::from),
            "--batch" => batch = args.next().ok_or("--batch N")?.parse()?,
            "--rounds" => rounds = args.next().ok_or("--rounds R")?.parse()?,
            _ => files.push(PathBuf::from(arg)),
        }
    }
    let threads = std::env::var("IMGD_OCR_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let ort = OrtConfig {
        intra_threads: threads,
        ..OrtConfig::default()
    };
    let mut ocr = Ocr::load(&default_models_dir(), &ort, OcrConfig::default())?;

    let Some(dir) = bench else {
        for file in files {
            let image = image::open(&file)?.to_rgb8();
            let lines = ocr.recognize(&[&image])?.remove(0);
            println!("{}", file.display());
            for line in lines {
                println!("  {:.3}  {:?}  {}", line.confidence, line.bbox, line.text);
            }
        }
        return Ok(());
    };

    let truth: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json"))?)?;
    let images: Vec<(RgbImage, &Vec<String>)> = truth
        .iter()
        .map(|(name, lines)| Ok((image::open(dir.join(name))?.to_rgb8(), lines)))
        .collect::<Result<_, image::ImageError>>()?;
    // Warm-up (first-run allocations, kernel selection).
    ocr.recognize(&[&images[0].0])?;
    ocr.reset_timings();
    let started = Instant::now();
    let mut results = Vec::new();
    for _ in 0..rounds {
        results.clear();
        for chunk in images.chunks(batch.max(1)) {
            let refs: Vec<&RgbImage> = chunk.iter().map(|(image, _)| image).collect();
            results.extend(ocr.recognize(&refs)?);
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let (mut right, mut total) = (0usize, 0usize);
    for ((_, want), lines) in images.iter().zip(&results) {
        let mut got: Vec<&str> = lines.iter().map(|l| l.text.trim()).collect();
        for line in want.iter() {
            total += 1;
            if let Some(at) = got.iter().position(|g| g == line) {
                got.remove(at);
                right += 1;
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({
            "engine": "imgd",
            "images": images.len() * rounds,
            "lines_right": right,
            "lines": total,
            "accuracy": right as f64 / total as f64,
            "seconds": seconds,
            "images_per_s": (images.len() * rounds) as f64 / seconds,
            "batch": batch,
            "stages_s": {
                "detect": ocr.timings().detect.as_secs_f64(),
                "crop": ocr.timings().crop.as_secs_f64(),
                "classify": ocr.timings().classify.as_secs_f64(),
                "recognize": ocr.timings().recognize.as_secs_f64(),
            },
            "crops": ocr.timings().crops,
        })
    );
    Ok(())
}
