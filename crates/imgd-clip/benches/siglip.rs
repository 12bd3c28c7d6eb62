//! Image-tower throughput of SigLIP 2 ViT-B/16 (224 px, 196 patches) against CLIP ViT-B/32
//! (224 px, 49 patches), both with random weights in their real shapes, on this machine's CPU,
//! at one batch size, in the same process: what switching the embedding module to SigLIP 2
//! costs. Search quality cannot be measured here (no trained weights, no labelled queries).
//!
//! ```text
//! cargo bench -p imgd-clip --bench siglip                    # batch 8, 10 s per model
//! cargo bench -p imgd-clip --bench siglip -- 16 --secs 20
//! ```
//!
//! Prints `*_images_per_s` for both and `siglip2_b16_vs_clip_b32` (the ratio of their images/s).

use std::time::{Duration, Instant};

use candle_core::{DType, Device};
use candle_nn::{Init, VarBuilder, VarMap};
use candle_transformers::models::siglip;
use image::RgbImage;
use imgd_candle::processor::{Normalize, PilFilter, ResizePreprocess};
use imgd_clip::clip::ClipImageEncoder;
use imgd_clip::config::{ClipConfig, ModelInfo};
use imgd_clip::preprocess::Preprocess;
use imgd_clip::siglip::SiglipImageEncoder;

fn args() -> (usize, f64) {
    let mut batch = 8;
    let mut secs = 10.0;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--secs" => secs = it.next().and_then(|s| s.parse().ok()).expect("--secs N"),
            flag if flag.starts_with("--") => {}
            n => batch = n.parse().expect("a batch size"),
        }
    }
    (batch, secs)
}

/// Images per second of `embed` on batches of `batch`, over about `secs` after a warm-up.
fn images_per_s(batch: usize, secs: f64, mut embed: impl FnMut()) -> f64 {
    embed();
    let started = Instant::now();
    let mut images = 0;
    while started.elapsed() < Duration::from_secs_f64(secs) {
        embed();
        images += batch;
    }
    images as f64 / started.elapsed().as_secs_f64()
}

fn info(id: &str) -> ModelInfo {
    ModelInfo {
        id: id.into(),
        version: "random".into(),
    }
}

fn main() {
    let (batch, secs) = args();
    let device = Device::Cpu;
    let tier = RgbImage::from_fn(448, 336, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let config = ClipConfig::preset("clip-vit-b32").expect("preset");
    vb.pp("vision_model.embeddings")
        .get_with_hints(
            config.vision.hidden_size,
            "class_embedding",
            Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
        )
        .expect("class embedding");
    let clip = ClipImageEncoder::new(vb, config, Preprocess::openai(224), info("clip-vit-b32"))
        .expect("CLIP ViT-B/32");
    let crops: Vec<RgbImage> = (0..batch)
        .map(|_| clip.preprocessor().resize_and_crop(&tier).expect("crop"))
        .collect();
    let clip_rate = images_per_s(batch, secs, || {
        clip.embed_crops(&crops).expect("CLIP");
    });

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    // google/siglip2-base-patch16-224's vision tower.
    let vision = siglip::Config::base_patch16_224().vision_config;
    let preprocess = ResizePreprocess::square(224, PilFilter::Bilinear, Normalize::symmetric());
    let siglip = SiglipImageEncoder::new(vb, &vision, preprocess, info("siglip2-base-patch16-224"))
        .expect("SigLIP 2 B/16");
    let resized: Vec<RgbImage> = (0..batch)
        .map(|_| siglip.resize(&tier).expect("resize"))
        .collect();
    let siglip_rate = images_per_s(batch, secs, || {
        siglip.embed_resized(&resized).expect("SigLIP");
    });

    println!(
        "batch {batch}, {} CPU threads",
        imgd_candle::device::candle_cpu_threads()
    );
    println!("clip_b32_images_per_s {clip_rate:.1}");
    println!("siglip2_b16_images_per_s {siglip_rate:.1}");
    println!("siglip2_b16_vs_clip_b32={:.2}", siglip_rate / clip_rate);
}
