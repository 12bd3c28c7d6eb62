//! Image-tower throughput of CLIP with random weights in a real shape (ViT-B/32 by default),
//! at the batch sizes given, plus the cost of preprocessing one 448-px tier (and of its resize
//! and centre crop as one window against resizing all, then cropping:
//! `clip_resize_crop_window_speedup`).
//!
//! ```text
//! cargo bench -p imgd-clip --bench clip                      # batches 1,8 on the CPU
//! cargo bench -p imgd-clip --bench clip -- 1,8,32            # other batch sizes
//! cargo bench -p imgd-clip --bench clip -- 1,8 --preset clip-vit-l14 --secs 5
//! cargo bench -p imgd-clip --features cuda --bench clip -- 1,8,32,64 --cuda
//! cargo bench -p imgd-clip --bench clip -- 8 --model DIR --tower-only  # a checkpoint's weights
//! cargo bench -p imgd-clip --bench clip -- 8 --model DIR --tower-only --onnx 2  # its ONNX export
//! ```
//!
//! `--model DIR` loads a `CLIPModel` checkpoint instead of random weights
//! (`scripts/bench-clip-cpu.sh` times it against ONNX Runtime on an export of the same tower);
//! `--tower-only` skips the preprocessing figures; `--onnx THREADS` times the folder's ONNX export
//! through ONNX Runtime with THREADS intra-op threads (`imgd_clip::onnx`, what the embedding
//! module runs on the CPU when the folder has one) instead of candle, from cropped bytes as the
//! runner feeds it (`clip_onnx_image_ms_per_image`).
//!
//! Prints one `clip_image_ms_per_image{...} X` line per batch size, and the speed-up of the
//! largest batch over batch 1 (the baseline, measured in the same run). Before that, the cost
//! of building a batch's input from 128 cropped images both ways, and its ratio
//! `clip_crop_input_host_speedup` (the host pass against the device path's tensor operations,
//! both on the bench's device).

use std::time::{Duration, Instant};

use candle_core::DType;
use candle_nn::{Init, VarBuilder, VarMap};
use image::RgbImage;
use imgd_candle::device::{device_name, select_device};
use imgd_clip::clip::ClipImageEncoder;
use imgd_clip::config::{ClipConfig, ModelInfo};
use imgd_clip::preprocess::{Preprocess, center_crop, resize_bicubic_pil, resize_output_size};

struct Args {
    batches: Vec<usize>,
    preset: String,
    secs: f64,
    cuda: bool,
    model: Option<std::path::PathBuf>,
    tower_only: bool,
    onnx_threads: Option<usize>,
}

fn parse_args() -> Args {
    let mut args = Args {
        batches: vec![1, 8],
        preset: "clip-vit-b32".into(),
        secs: 3.0,
        cuda: false,
        model: None,
        tower_only: false,
        onnx_threads: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--preset" => args.preset = it.next().expect("--preset NAME"),
            "--secs" => {
                args.secs = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("--secs SECONDS")
            }
            "--cuda" => args.cuda = true,
            "--model" => args.model = Some(it.next().expect("--model DIR").into()),
            "--tower-only" => args.tower_only = true,
            "--onnx" => {
                args.onnx_threads = Some(
                    it.next()
                        .and_then(|s| s.parse().ok())
                        .expect("--onnx THREADS"),
                )
            }
            // `cargo bench` passes `--bench`; ignore it and other flags.
            flag if flag.starts_with("--") => {}
            list => {
                args.batches = list
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(|s| s.trim().parse().expect("batch sizes: a list like 1,8,32"))
                    .collect();
            }
        }
    }
    args
}

/// Milliseconds per call of `run`: one warm-up call, then at least 3 calls and `budget_ms`.
fn ms_per_run<T>(budget_ms: u64, run: impl Fn() -> T) -> f64 {
    run();
    let started = Instant::now();
    let mut runs = 0u32;
    while runs < 3 || started.elapsed() < Duration::from_millis(budget_ms) {
        std::hint::black_box(run());
        runs += 1;
    }
    started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs)
}

fn main() {
    let args = parse_args();
    let choice = select_device(args.cuda);
    if let Some(why) = &choice.fallback {
        eprintln!("note: {why}; running on the CPU");
    }
    let device = choice.device;
    if let Some(threads) = args.onnx_threads {
        let dir = args.model.as_deref().expect("--onnx needs --model DIR");
        onnx_tower(&args, dir, threads);
        return;
    }
    let encoder = match &args.model {
        Some(dir) => ClipImageEncoder::load(dir, &device).expect("the checkpoint in --model"),
        None => random_encoder(&args.preset, &device),
    };
    // Preprocessing one 448x336 tier (the decode stage's embedding tier).
    let tier = RgbImage::from_fn(448, 336, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    let pixels = encoder.preprocess(&tier).expect("preprocess");
    if !args.tower_only {
        preprocessing(&encoder, &tier);
    }
    tower(&args, &encoder, &pixels, &device);
}

/// An image tower of `preset`'s shape with random weights.
fn random_encoder(preset: &str, device: &candle_core::Device) -> ClipImageEncoder {
    let config = ClipConfig::preset(preset).expect("a known preset");
    let size = config.vision.image_size;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
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
    let info = ModelInfo {
        id: preset.to_string(),
        version: "random".into(),
    };
    ClipImageEncoder::new(vb, config, Preprocess::openai(size as u32), info)
        .expect("random-weight image tower")
}

/// Preprocessing one tier, its resize and crop both ways, and a batch's input both ways.
fn preprocessing(encoder: &ClipImageEncoder, tier: &RgbImage) {
    let preprocess_ms = ms_per_run(500, || encoder.preprocess(tier).expect("preprocess"));
    println!("clip_preprocess_ms_per_image{{tier=\"448x336\"}} {preprocess_ms:.2}");
    // The resize and centre crop as one window against resizing all, then cropping.
    let crop = encoder.preprocessor().crop;
    let (w, h) = resize_output_size(
        tier.width(),
        tier.height(),
        encoder.preprocessor().shortest_edge,
    );
    let full_ms = ms_per_run(1000, || {
        center_crop(&resize_bicubic_pil(tier, w, h), crop, crop)
    });
    let window_ms = ms_per_run(1000, || {
        encoder.preprocessor().resize_and_crop(tier).unwrap()
    });
    println!("clip_resize_crop_ms{{tier=\"448x336\",path=\"resize all, then crop\"}} {full_ms:.2}");
    println!("clip_resize_crop_ms{{tier=\"448x336\",path=\"window\"}} {window_ms:.2}");
    println!("clip_resize_crop_window_speedup {:.2}", full_ms / window_ms);

    // Building a batch's input from 128 cropped images: one pass on the host (what the CPU
    // runs) against the tensor operations of the GPU path (here on the same device).
    let crop = encoder
        .preprocessor()
        .resize_and_crop(tier)
        .expect("resize and crop");
    let crops = vec![crop; 128];
    let device_ms = ms_per_run(1500, || {
        encoder.crops_on_device(&crops).expect("device input")
    });
    let host_ms = ms_per_run(1500, || encoder.crops_on_host(&crops).expect("host input"));
    println!(
        "clip_crop_input_ms{{batch=\"128\",path=\"tensor-ops\",device=\"{}\"}} {device_ms:.1}",
        device_name(encoder.device())
    );
    println!("clip_crop_input_ms{{batch=\"128\",path=\"host\"}} {host_ms:.1}");
    println!(
        "clip_crop_input_host_speedup{{device=\"{}\"}} {:.2}",
        device_name(encoder.device()),
        device_ms / host_ms
    );
}

/// The ONNX export's ms per image through ONNX Runtime at each batch size of `args`, from
/// cropped bytes (the input made in one pass over them, as the runner does).
fn onnx_tower(args: &Args, dir: &std::path::Path, threads: usize) {
    let export = imgd_clip::onnx::onnx_export(dir).expect("an ONNX export in --model's folder");
    let ort = imgd_infer::OrtConfig {
        intra_threads: threads,
        ..Default::default()
    };
    let encoder =
        imgd_clip::onnx::OnnxClipImageEncoder::load(dir, &export, &ort).expect("the ONNX export");
    let side = encoder.preprocessor().crop;
    let crop = RgbImage::from_fn(side, side, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x * y) % 239) as u8])
    });
    for &batch in &args.batches {
        let crops = vec![crop.clone(); batch.max(1)];
        encoder.embed_crops(&crops).expect("warm-up");
        let started = Instant::now();
        let mut runs = 0u32;
        while runs < 2 || started.elapsed().as_secs_f64() < args.secs {
            std::hint::black_box(encoder.embed_crops(&crops).expect("forward"));
            runs += 1;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs) / batch as f64;
        println!(
            "clip_onnx_image_ms_per_image{{model=\"{}\",threads=\"{threads}\",batch=\"{batch}\"}} {ms:.2}",
            encoder.info().id,
        );
    }
}

/// The image tower's ms per image at each batch size of `args`.
fn tower(args: &Args, encoder: &ClipImageEncoder, pixels: &[f32], device: &candle_core::Device) {
    let threads = candle_core::utils::get_num_threads();
    let mut results = Vec::new();
    for &batch in &args.batches {
        let inputs = vec![pixels.to_vec(); batch.max(1)];
        encoder.embed_pixels(&inputs).expect("warm-up");
        let started = Instant::now();
        let mut runs = 0u32;
        while runs < 2 || started.elapsed().as_secs_f64() < args.secs {
            std::hint::black_box(encoder.embed_pixels(&inputs).expect("forward"));
            runs += 1;
        }
        let ms = started.elapsed().as_secs_f64() * 1000.0 / f64::from(runs) / batch as f64;
        println!(
            "clip_image_ms_per_image{{model=\"{}\",device=\"{}\",threads=\"{threads}\",batch=\"{batch}\"}} {ms:.2}",
            encoder.info().id,
            device_name(device),
        );
        results.push((batch, ms));
    }
    if let (Some(&(1, base)), Some(&(largest, ms))) = (results.first(), results.last())
        && largest > 1
    {
        println!(
            "clip_batch_speedup{{batch=\"{largest}\",baseline_batch=\"1\"}} {:.2}",
            base / ms
        );
    }
}
