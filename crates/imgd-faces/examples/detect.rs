//! Detects faces in image files with the registry-shipped MTCNN (and ArcFace when found), as
//! the faces module does, and prints one JSON line per image, then the throughput.
//!
//! `cargo run --release -p imgd-faces --example detect -- [--batch N] [--repeat R] FILE...`
//!
//! Images are resized to the faces tier (long edge ≤ 1280) first, as the pipeline's decoder
//! does. `scripts/bench-faces.sh` runs it against the Python reference.

use std::path::Path;
use std::time::Instant;

use image::RgbImage;
use imgd_faces::{FaceModels, FacesConfig, FacesModel, OrtConfig, to_row};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut take = |flag: &str, default: usize| -> usize {
        match args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < args.len() => {
                let v = args.remove(i + 1);
                args.remove(i);
                v.parse().unwrap_or(default)
            }
            _ => default,
        }
    };
    let batch = take("--batch", 1).max(1);
    let repeat = take("--repeat", 1).max(1);
    let threads = take("--threads", 0);
    let models = FaceModels::locate(&imgd_infer::models_dir());
    let ort = OrtConfig {
        intra_threads: threads,
        ..OrtConfig::default()
    };
    let mut model = FacesModel::open(&models, &ort, &FacesConfig::default())?;
    let images: Vec<(String, RgbImage)> = args
        .iter()
        .map(|path| {
            let image = image::open(Path::new(path))?.to_rgb8();
            let long = image.width().max(image.height());
            let image = if long > 1280 {
                let s = 1280.0 / f64::from(long);
                image::imageops::resize(
                    &image,
                    (f64::from(image.width()) * s).round() as u32,
                    (f64::from(image.height()) * s).round() as u32,
                    image::imageops::FilterType::Triangle,
                )
            } else {
                image
            };
            Ok((path.clone(), image))
        })
        .collect::<Result<_, image::ImageError>>()?;
    let all: Vec<&(String, RgbImage)> = (0..repeat).flat_map(|_| images.iter()).collect();
    let started = Instant::now();
    let mut faces = 0;
    for chunk in all.chunks(batch) {
        let pixels: Vec<&RgbImage> = chunk.iter().map(|(_, image)| image).collect();
        for ((path, _), out) in chunk.iter().zip(model.analyse(&pixels)?) {
            faces += out.faces.len();
            if repeat == 1 {
                let mut row = to_row(&out, model.detector_id(), model.embedding_model()).data;
                row["path"] = path.clone().into();
                println!("{row}");
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "{} images, {faces} faces in {seconds:.2}s: {:.2} images/s (batch {batch})",
        all.len(),
        all.len() as f64 / seconds
    );
    println!("images_per_s={:.3}", all.len() as f64 / seconds);
    Ok(())
}
