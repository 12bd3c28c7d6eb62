//! BLIP-2 with OPT-2.7b at its real size, random weights, f32 on the CPU (`--cuda` for a
//! GPU, with `--dtype f16|bf16` as the daemon runs it there, the Q-Former in f32): the vision
//! tower + Q-Former per image, the decoder per token at batch 1 and 8, and a caption plus four
//! questions per image with the image encoded once against re-encoding it for every prompt,
//! the way a per-question pipeline does (`blip2_cached_vs_reencode`, both measured in this
//! run). Every prompt decodes exactly `--tokens` tokens (10 by default).
//!
//! ```text
//! cargo bench -p imgd-blip2 --bench blip2
//! cargo bench -p imgd-blip2 --bench blip2 -- --tokens 20
//! cargo bench -p imgd-blip2 --bench blip2 --features cuda -- --cuda --dtype f16
//! ```
//!
//! Needs about 16 GB of memory in f32 (the weights are made in memory, nothing is read).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use imgd_blip2::config::Blip2Config;
use imgd_blip2::model::{Blip2, Generation};

/// `Salesforce/blip2-opt-2.7b`'s shape.
fn config() -> Blip2Config {
    serde_json::from_value(serde_json::json!({
        "num_query_tokens": 32,
        "image_token_index": 50265,
        "vision_config": {
            "hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39,
            "num_attention_heads": 16, "image_size": 224, "patch_size": 14
        },
        "qformer_config": {
            "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "cross_attention_frequency": 2,
            "encoder_hidden_size": 1408
        },
        "text_config": {
            "model_type": "opt", "vocab_size": 50272, "hidden_size": 2560, "ffn_dim": 10240,
            "num_hidden_layers": 32, "num_attention_heads": 32,
            "max_position_embeddings": 2048, "word_embed_proj_dim": 2560,
            "bos_token_id": 2, "eos_token_id": 50118, "pad_token_id": 1
        }
    }))
    .expect("the OPT-2.7b configuration")
}

/// Wall seconds of `run`, the device synchronised before the clock stops.
fn seconds(device: &Device, run: impl FnOnce()) -> f64 {
    let started = Instant::now();
    run();
    device.synchronize().expect("synchronise");
    started.elapsed().as_secs_f64()
}

fn main() {
    let mut tokens = 10usize;
    let mut cuda = false;
    let mut dtype = DType::F32;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tokens" => {
                tokens = args
                    .next()
                    .and_then(|t| t.parse().ok())
                    .expect("--tokens N")
            }
            "--cuda" => cuda = true,
            "--dtype" => {
                dtype = match args.next().as_deref() {
                    Some("f16") => DType::F16,
                    Some("bf16") => DType::BF16,
                    Some("f32") => DType::F32,
                    _ => panic!("--dtype f32|f16|bf16"),
                }
            }
            _ => {}
        }
    }
    let device = if cuda {
        Device::new_cuda(0).expect("a CUDA device")
    } else {
        Device::Cpu
    };
    let started = Instant::now();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let mut model = Blip2::new(vb, config()).expect("the model");
    let params: usize = varmap
        .all_vars()
        .iter()
        .map(|v| v.as_tensor().elem_count())
        .sum();
    if dtype != DType::F32 {
        // Random normals are drawn in f32; the weights are then cast the way a checkpoint
        // loads (the Q-Former stays f32).
        let weights: HashMap<String, Tensor> = varmap
            .data()
            .lock()
            .expect("the weight map")
            .iter()
            .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
            .collect();
        drop(model);
        model = Blip2::new(VarBuilder::from_tensors(weights, dtype, &device), config())
            .expect("the model");
    }
    eprintln!("running in {dtype:?} on {device:?}");
    eprintln!(
        "made {:.2} B random parameters in {:.0} s",
        params as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    println!(
        "blip2_memory_gb{{model=\"blip2-opt-2.7b\",dtype=\"f32\"}} {:.1}",
        params as f64 * 4.0 / 1e9
    );
    println!(
        "blip2_memory_gb{{model=\"blip2-opt-2.7b\",dtype=\"f16\"}} {:.1}",
        params as f64 * 2.0 / 1e9
    );

    let pixels = Tensor::randn(0f32, 1.0, (1, 3, 224, 224), &device).expect("pixels");
    model.encode(&pixels).expect("warm-up");
    let repeats = if cuda { 10 } else { 1 };
    let encode_s = seconds(&device, || {
        for _ in 0..repeats {
            model.encode(&pixels).expect("encode");
        }
    }) / repeats as f64;
    println!(
        "blip2_encode_ms_per_image{{dtype=\"{}\"}} {:.1}",
        format!("{dtype:?}").to_lowercase(),
        encode_s * 1000.0
    );

    let projected = model.encode(&pixels).expect("encode").projected;
    let exactly = |n: usize, beams: usize| Generation {
        max_new_tokens: n,
        min_new_tokens: n,
        num_beams: beams,
        length_penalty: 1.0,
        repetition_penalty: 1.0,
    };
    // A caption (BOS alone) and four "Question: … Answer:" prompts of 10 tokens.
    let question = |seed: u32| -> Vec<u32> {
        std::iter::once(2)
            .chain((0..9).map(|i| 100 + seed * 37 + i * 11))
            .collect()
    };
    let prompts: Vec<Vec<u32>> = std::iter::once(vec![2])
        .chain((1..=4).map(question))
        .collect();

    // The decoder per token: `tokens` new tokens less the first (the prompt's forward).
    for batch in [1usize, 8] {
        let batch_prompts: Vec<Vec<u32>> = (0..batch).map(|i| question(i as u32)).collect();
        let first = seconds(&device, || {
            model
                .generate(&projected, &batch_prompts, exactly(1, 1))
                .expect("generate");
        });
        let all = seconds(&device, || {
            model
                .generate(&projected, &batch_prompts, exactly(tokens, 1))
                .expect("generate");
        });
        println!(
            "blip2_decoder_ms_per_token{{batch=\"{batch}\"}} {:.1}",
            (all - first) * 1000.0 / (tokens - 1) as f64
        );
    }

    // A caption and four questions: the image encoded once and every prompt decoded from its
    // cache in one batch, against the image encoded again for each prompt, decoded alone.
    let cached = seconds(&device, || {
        let projected = model.encode(&pixels).expect("encode").projected;
        model
            .generate(&projected, &prompts, exactly(tokens, 1))
            .expect("generate");
    });
    let reencode = seconds(&device, || {
        for prompt in &prompts {
            let projected = model.encode(&pixels).expect("encode").projected;
            model
                .generate(&projected, std::slice::from_ref(prompt), exactly(tokens, 1))
                .expect("generate");
        }
    });
    println!("blip2_caption_and_4_questions_s{{path=\"cached\"}} {cached:.3}");
    println!("blip2_caption_and_4_questions_s{{path=\"re-encode\"}} {reencode:.3}");
    println!("blip2_cached_vs_reencode={:.2}", reencode / cached);
}
