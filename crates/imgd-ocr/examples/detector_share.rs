//! The inference thread's time per image in the OCR module with the detector's input (resize
//! and normalisation to f32 planes) made on it, as before that moved to the decode threads,
//! and made beforehand, as the daemon runs it now; in the same process, on the rendered-text
//! fixtures and the photos at the OCR tier. Prints both, the preparation's share of the
//! thread's time before, and `inference_thread_ratio` (before / after).
//!
//! `cargo run -p imgd-ocr --example detector_share -- [--repeat R]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use image::imageops::FilterType;
use imgd_infer::OrtConfig;
use imgd_infer::batcher::BatchModel;
use imgd_ocr::det::DetectorInput;
use imgd_ocr::{Ocr, OcrInput, OcrModel, default_models_dir, input_tier, runner_config};

/// The image at the OCR tier (long edge at most 960), as the decoder makes it.
fn tier(path: &Path) -> RgbImage {
    let image = image::open(path).unwrap().to_rgb8();
    let long = image.width().max(image.height());
    let edge = input_tier();
    if long <= edge {
        return image;
    }
    let scale = f64::from(edge) / f64::from(long);
    let w = (f64::from(image.width()) * scale).round() as u32;
    let h = (f64::from(image.height()) * scale).round() as u32;
    image::imageops::resize(&image, w, h, FilterType::Triangle)
}

fn main() {
    let repeat: u32 = std::env::args()
        .skip_while(|a| a != "--repeat")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let mut paths: Vec<_> = std::fs::read_dir(fixtures.join("ocr"))
        .unwrap()
        .chain(std::fs::read_dir(fixtures.join("photos")).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    paths.sort();
    let images: Vec<Arc<RgbImage>> = paths.iter().map(|p| Arc::new(tier(p))).collect();
    let config = runner_config();
    let long_side = config.det_long_side;
    let ocr = Ocr::load(&default_models_dir(), &OrtConfig::default(), config)
        .expect("PP-OCR from the registry (scripts/fetch-registry-models.sh)");
    let mut model = OcrModel::new(ocr);
    let unprepared: Vec<OcrInput> = images
        .iter()
        .map(|image| OcrInput {
            image: Arc::clone(image),
            detector: None,
        })
        .collect();
    let batches = |inputs: &[OcrInput]| {
        inputs
            .chunks(8)
            .map(<[OcrInput]>::to_vec)
            .collect::<Vec<_>>()
    };
    let before_batches = batches(&unprepared);
    // Warm-up: sessions, allocations.
    for batch in &before_batches {
        model.run_batch(batch).unwrap();
    }
    let (mut before, mut after, mut preparing) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..repeat {
        // Before: the detector's input is made on the inference thread, inside the batch.
        let t = Instant::now();
        for batch in &before_batches {
            model.run_batch(batch).unwrap();
        }
        before += t.elapsed();
        // Now: the decode threads make it; the inference thread copies it into the batch.
        let t = Instant::now();
        let prepared: Vec<OcrInput> = images
            .iter()
            .map(|image| OcrInput {
                image: Arc::clone(image),
                detector: Some(DetectorInput::new(image, long_side)),
            })
            .collect();
        preparing += t.elapsed();
        let t = Instant::now();
        for batch in &batches(&prepared) {
            model.run_batch(batch).unwrap();
        }
        after += t.elapsed();
    }
    let per_image =
        |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(repeat) / images.len() as f64;
    println!("{} images at the OCR tier, batches of 8", images.len());
    println!(
        "ocr_inference_thread_ms_per_image{{detector_input=\"on_thread\"}} {:.2}",
        per_image(before)
    );
    println!(
        "ocr_inference_thread_ms_per_image{{detector_input=\"prepared\"}} {:.2}",
        per_image(after)
    );
    println!(
        "ocr_detector_input_ms_per_image {:.2} ({:.0} % of the thread's time before)",
        per_image(preparing),
        100.0 * preparing.as_secs_f64() / before.as_secs_f64()
    );
    println!(
        "inference_thread_ratio={:.2}",
        before.as_secs_f64() / after.as_secs_f64()
    );
}
