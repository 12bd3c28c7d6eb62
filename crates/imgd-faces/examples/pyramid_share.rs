//! The inference thread's time per image in the faces module with MTCNN's pyramid made on it
//! (as before the pyramid moved to the decode threads) and with the pyramid prepared
//! beforehand (as the daemon runs it now), in the same process, on the fixture photos with
//! faces at the faces tier. Prints both, the pyramid's share of the thread's time before, and
//! `inference_thread_ratio` (before / after).
//!
//! `cargo run -p imgd-faces --example pyramid_share -- [--repeat R]`

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use image::imageops::FilterType;
use imgd_faces::mtcnn::pyramid;
use imgd_faces::{FaceModels, FacesConfig, FacesInput, FacesModel, OrtConfig};
use imgd_infer::batcher::BatchModel;

const PHOTOS: [&str; 4] = [
    "faces/astronaut.jpg",
    "faces/bus.jpg",
    "faces/zidane.jpg",
    "photos/hopper.jpg",
];

/// The photo at the faces tier (long edge at most 1280), as the decoder makes it.
fn tier(path: &Path) -> RgbImage {
    let image = image::open(path).unwrap().to_rgb8();
    let long = image.width().max(image.height());
    if long <= 1280 {
        return image;
    }
    let scale = 1280.0 / f64::from(long);
    let w = (f64::from(image.width()) * scale).round() as u32;
    let h = (f64::from(image.height()) * scale).round() as u32;
    image::imageops::resize(&image, w, h, FilterType::Triangle)
}

fn main() {
    let repeat: u32 = std::env::args()
        .skip_while(|a| a != "--repeat")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures");
    let images: Vec<Arc<RgbImage>> = PHOTOS
        .iter()
        .map(|p| Arc::new(tier(&fixtures.join(p))))
        .collect();
    let models = FaceModels::locate(Path::new("/nonexistent-imgd-models"));
    let mut model = FacesModel::open(&models, &OrtConfig::default(), &FacesConfig::default())
        .expect("MTCNN from the registry (scripts/fetch-registry-models.sh)");
    let config = model.pyramid_config().expect("MTCNN is the detector");
    let unprepared: Vec<FacesInput> = images
        .iter()
        .map(|image| FacesInput {
            image: Arc::clone(image),
            pyramid: None,
        })
        .collect();
    // Warm-up: sessions, allocations.
    model.run_batch(&unprepared).unwrap();
    let (mut before, mut after, mut pyramids) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for _ in 0..repeat {
        // Before: the pyramid is made on the inference thread, inside the batch.
        let t = Instant::now();
        model.run_batch(&unprepared).unwrap();
        before += t.elapsed();
        // Now: the decode threads make it; the inference thread runs the networks only.
        let t = Instant::now();
        let prepared: Vec<FacesInput> = images
            .iter()
            .map(|image| FacesInput {
                image: Arc::clone(image),
                pyramid: Some(pyramid(&config, image)),
            })
            .collect();
        pyramids += t.elapsed();
        let t = Instant::now();
        model.run_batch(&prepared).unwrap();
        after += t.elapsed();
    }
    let per_image =
        |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(repeat) / images.len() as f64;
    println!(
        "faces_inference_thread_ms_per_image{{pyramid=\"on_thread\"}} {:.2}",
        per_image(before)
    );
    println!(
        "faces_inference_thread_ms_per_image{{pyramid=\"prepared\"}} {:.2}",
        per_image(after)
    );
    println!(
        "faces_pyramid_ms_per_image {:.2} ({:.0} % of the thread's time before)",
        per_image(pyramids),
        100.0 * pyramids.as_secs_f64() / before.as_secs_f64()
    );
    println!(
        "inference_thread_ratio={:.2}",
        before.as_secs_f64() / after.as_secs_f64()
    );
}
