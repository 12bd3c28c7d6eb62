//! CLIP ViT-B/32 image-tower timing and CPU/GPU parity, for `scripts/gpu-check.sh`.
//!
//! It runs the same forward the embedding runner runs (imgd's `VisionTower` plus the visual
//! projection) on random weights in the real ViT-B/32 shape.
//!
//! ```text
//! cargo run --release --example gpu_bench -p imgd-clip [--features cuda] -- time --device cuda --dtype f16 --batches 1,8,32,128
//! cargo run --release --example gpu_bench -p imgd-clip --features cuda -- parity
//! ```
//!
//! `time` prints one JSON line per batch size: `{"engine", "batch", "images_per_s",
//! "ms_per_batch"}` (the device is synchronised before the clock is read). `parity` builds one
//! set of random weights, runs a batch of 8 random images on the CPU (f32) and on CUDA (f32 and
//! f16), prints the relative errors and exits non-zero when f32 differs by more than 1e-3.
//! `write-model DIR` saves a random-weight ViT-B/32 image tower as a model folder the daemon
//! loads (`config.json`, `model.safetensors`), for end-to-end timing without downloaded weights.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use imgd_clip::config::ClipConfig;
use imgd_clip::vision_tower::VisionTower;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The image tower with its projection.
struct Tower {
    vision: VisionTower,
    projection: candle_nn::Linear,
}

impl Tower {
    fn new(vb: VarBuilder<'_>) -> Result<Tower> {
        let vision = VisionTower::new(vb.pp("vision_model"), &ClipConfig::vit_b32())?;
        let projection = candle_nn::linear_no_bias(768, 512, vb.pp("visual_projection"))?;
        Ok(Tower { vision, projection })
    }

    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        Ok(self.vision.forward(pixels)?.apply(&self.projection)?)
    }
}

/// Random weights on the CPU in f32 (so every device and dtype gets the same values).
fn random_weights() -> Result<HashMap<String, Tensor>> {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    Tower::new(vb)?;
    let data = map.data().lock().map_err(|_| "poisoned weight map")?;
    let mut weights: HashMap<String, Tensor> = data
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect();
    // The var map makes the class embedding zeros (a plain `get`): random like the rest.
    weights.insert(
        "vision_model.embeddings.class_embedding".to_string(),
        Tensor::randn(0f32, 1.0, 768, &Device::Cpu)?,
    );
    Ok(weights)
}

fn tower_on(weights: &HashMap<String, Tensor>, device: &Device, dtype: DType) -> Result<Tower> {
    let moved = weights
        .iter()
        .map(|(k, t)| Ok((k.clone(), t.to_device(device)?.to_dtype(dtype)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Tower::new(VarBuilder::from_tensors(moved, dtype, device))
}

fn device(name: &str) -> Result<Device> {
    Ok(match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::new_cuda(0)?,
        other => return Err(format!("unknown device {other}").into()),
    })
}

fn arg<'a>(args: &'a [String], name: &str, default: &'a str) -> &'a str {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str)
}

fn time(args: &[String]) -> Result<()> {
    let device_name = arg(args, "--device", "cpu");
    let dtype = match arg(args, "--dtype", "f32") {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    };
    let batches: Vec<usize> = arg(args, "--batches", "1,8")
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let dev = device(device_name)?;
    let tower = tower_on(&random_weights()?, &dev, dtype)?;
    let engine = format!(
        "imgd-candle-{device_name}-{}",
        format!("{dtype:?}").to_lowercase()
    );
    for batch in batches {
        let x = Tensor::randn(0f32, 1.0, (batch, 3, 224, 224), &dev)?.to_dtype(dtype)?;
        for _ in 0..5 {
            tower.forward(&x)?;
        }
        dev.synchronize()?;
        let iters = (200 / batch).max(5);
        let start = Instant::now();
        for _ in 0..iters {
            tower.forward(&x)?;
        }
        dev.synchronize()?;
        let ms = start.elapsed().as_secs_f64() * 1000.0 / iters as f64;
        println!(
            "{{\"engine\": \"{engine}\", \"batch\": {batch}, \"images_per_s\": {:.1}, \"ms_per_batch\": {ms:.3}}}",
            batch as f64 / (ms / 1000.0)
        );
    }
    Ok(())
}

fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let diff = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    let norm = b.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt();
    Ok(diff / norm)
}

fn parity() -> Result<()> {
    let weights = random_weights()?;
    let x = Tensor::randn(0f32, 1.0, (8, 3, 224, 224), &Device::Cpu)?;
    let reference = tower_on(&weights, &Device::Cpu, DType::F32)?.forward(&x)?;
    let cuda = Device::new_cuda(0)?;
    let gpu32 = tower_on(&weights, &cuda, DType::F32)?.forward(&x.to_device(&cuda)?)?;
    let gpu16 = tower_on(&weights, &cuda, DType::F16)?
        .forward(&x.to_device(&cuda)?.to_dtype(DType::F16)?)?;
    let e32 = relative_error(&gpu32, &reference)?;
    let e16 = relative_error(&gpu16, &reference)?;
    println!("parity: cuda f32 vs cpu f32 relative error {e32:.2e} (limit 1e-3)");
    println!("parity: cuda f16 vs cpu f32 relative error {e16:.2e} (reported)");
    if e32.is_nan() || e32 >= 1e-3 {
        return Err(format!("GPU f32 differs from CPU: {e32:.2e}").into());
    }
    Ok(())
}

/// Writes the random image tower as an HF-layout model folder (`config.json` says ViT-B/32 by
/// HF's defaults, with an id and version of its own so results never pass for real ones).
fn write_model(dir: &str) -> Result<()> {
    let dir = std::path::Path::new(dir);
    std::fs::create_dir_all(dir)?;
    candle_core::safetensors::save(&random_weights()?, dir.join("model.safetensors"))?;
    std::fs::write(
        dir.join("config.json"),
        r#"{"imgd_model_id": "clip-vit-b32-random", "imgd_model_version": "random-weights"}"#,
    )?;
    println!(
        "wrote a random-weight ViT-B/32 image tower to {}",
        dir.display()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("time") => time(&args[1..]),
        Some("parity") => parity(),
        Some("write-model") if args.len() == 2 => write_model(&args[1]),
        _ => Err("usage: gpu_bench time [--device cpu|cuda] [--dtype f32|f16|bf16] [--batches 1,8] | parity | write-model DIR".into()),
    }
}
