//! Times GroundingDINO-T on the CPU through the objects module's own code: preprocessing,
//! one ONNX Runtime call per batch, post-processing.
//!
//! Run with `scripts/bench-objects.sh`, which first writes a random-weight GroundingDINO-T
//! export of the real size (`scripts/make-objects-fixture.py --full-size`; the compute is the
//! trained model's, the boxes are not). In one process, on the photos of `fixtures/photos`
//! decoded to the objects tier, with the daemon's default `[objects]` settings (16 prompts,
//! 800-px canvas), it prints milliseconds per image at batch 1 and at batch 4 and, last,
//! `objects_batch4_vs_batch1=X` (images/s at batch 4 ÷ images/s at batch 1).
//!
//!     cargo run --release -p imgd-objects --example objects_bench -- MODEL_DIR [IMAGES...]

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::RgbImage;
use imgd_infer::OrtConfig;
use imgd_objects::{GroundingDino, ObjectsConfig, Prepared, preprocess};

fn main() {
    let mut args = std::env::args().skip(1);
    let model_dir = PathBuf::from(
        args.next()
            .expect("usage: objects_bench MODEL_DIR [IMAGES...]"),
    );
    let mut paths: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if paths.is_empty() {
        let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/photos");
        paths = ["flower.jpg", "hopper.jpg", "flower2.jpg", "exif_gps.jpg"]
            .iter()
            .map(|name| photos.join(name))
            .collect();
    }
    let config = ObjectsConfig::default();
    let size = config.size;
    let started = Instant::now();
    let mut model = GroundingDino::load(&model_dir, &OrtConfig::default(), config)
        .unwrap_or_else(|e| panic!("{}: {e}", model_dir.display()));
    println!(
        "loaded {} in {:.1} s; caption of {} tokens",
        model_dir.display(),
        started.elapsed().as_secs_f64(),
        model.prompt().input_ids.len()
    );
    let images: Vec<RgbImage> = paths
        .iter()
        .map(|path| {
            let image = image::open(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .to_rgb8();
            let (w, h) = image.dimensions();
            let scale = f64::from(size) / f64::from(w.max(h));
            let (w, h) = (
                (f64::from(w) * scale).round() as u32,
                (f64::from(h) * scale).round() as u32,
            );
            image::imageops::resize(&image, w, h, image::imageops::FilterType::Triangle)
        })
        .collect();
    let started = Instant::now();
    let prepared: Vec<Prepared> = images
        .iter()
        .map(|image| preprocess::prepare(image, size))
        .collect();
    let prepare_ms = started.elapsed().as_secs_f64() * 1e3 / images.len() as f64;
    println!("preprocessing: {prepare_ms:.1} ms/image");

    // Warm-up: the first run allocates ONNX Runtime's buffers.
    model.detect(&[&prepared[0]]).expect("warm-up");
    let started = Instant::now();
    for image in &prepared {
        model.detect(&[image]).expect("batch 1");
    }
    let single = started.elapsed().as_secs_f64() * 1e3 / prepared.len() as f64;
    let batch: Vec<&Prepared> = prepared.iter().collect();
    let started = Instant::now();
    let found = model.detect(&batch).expect("batch");
    let batched = started.elapsed().as_secs_f64() * 1e3 / prepared.len() as f64;
    let boxes: usize = found.iter().map(|f| f.detections.len()).sum();
    println!("batch 1: {single:.0} ms/image");
    println!(
        "batch {}: {batched:.0} ms/image ({boxes} boxes from random weights)",
        prepared.len()
    );
    println!("objects_batch4_vs_batch1={:.2}", single / batched);
}
