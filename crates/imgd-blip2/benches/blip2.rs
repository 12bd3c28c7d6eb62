//! BLIP-2 at its real size, random weights, f32 on the CPU (`--cuda` for a GPU, with `--dtype
//! f16|bf16` as the daemon runs it there, the Q-Former in f32 and Flan-T5 in bf16): the vision
//! tower + Q-Former per image, the decoder per token at batch 1 and 8, and a caption plus four
//! questions per image with the image encoded once against re-encoding it for every prompt,
//! the way a per-question pipeline does (`blip2_cached_vs_reencode`, both measured in this
//! run). Every prompt decodes exactly `--tokens` tokens (10 by default). The language model is
//! OPT-2.7b (`Salesforce/blip2-opt-2.7b`), or Flan-T5-XL with `--lm flan-t5-xl`
//! (`Salesforce/blip2-flan-t5-xl`).
//!
//! ```text
//! cargo bench -p imgd-blip2 --bench blip2
//! cargo bench -p imgd-blip2 --bench blip2 -- --lm flan-t5-xl --tokens 20
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

/// The language model benchmarked.
#[derive(Clone, Copy, PartialEq)]
enum Language {
    Opt,
    FlanT5,
}

impl Language {
    /// The model id of the checkpoint with this language model.
    fn model(self) -> &'static str {
        match self {
            Language::Opt => "blip2-opt-2.7b",
            Language::FlanT5 => "blip2-flan-t5-xl",
        }
    }

    /// Its `text_config`.
    fn text_config(self) -> serde_json::Value {
        match self {
            Language::Opt => serde_json::json!({
                "model_type": "opt", "vocab_size": 50272, "hidden_size": 2560, "ffn_dim": 10240,
                "num_hidden_layers": 32, "num_attention_heads": 32,
                "max_position_embeddings": 2048, "word_embed_proj_dim": 2560,
                "bos_token_id": 2, "eos_token_id": 50118, "pad_token_id": 1
            }),
            Language::FlanT5 => serde_json::json!({
                "model_type": "t5", "vocab_size": 32128, "d_model": 2048, "d_kv": 64,
                "d_ff": 5120, "num_layers": 24, "num_decoder_layers": 24, "num_heads": 32,
                "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false,
                "pad_token_id": 0, "eos_token_id": 1, "decoder_start_token_id": 0
            }),
        }
    }

    /// A prompt of `text` tokens as the language model takes it: OPT's BOS first, Flan-T5's
    /// end token last.
    fn prompt(self, text: &[u32]) -> Vec<u32> {
        match self {
            Language::Opt => [&[2], text].concat(),
            Language::FlanT5 => [text, &[1]].concat(),
        }
    }
}

/// The released checkpoint's shape: EVA ViT-g/14, the Q-Former and `language`.
fn config(language: Language) -> Blip2Config {
    serde_json::from_value(serde_json::json!({
        "num_query_tokens": 32,
        "vision_config": {
            "hidden_size": 1408, "intermediate_size": 6144, "num_hidden_layers": 39,
            "num_attention_heads": 16, "image_size": 224, "patch_size": 14
        },
        "qformer_config": {
            "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
            "num_attention_heads": 12, "cross_attention_frequency": 2,
            "encoder_hidden_size": 1408
        },
        "text_config": language.text_config()
    }))
    .expect("a BLIP-2 configuration")
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
    let mut language = Language::Opt;
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
            "--lm" => {
                language = match args.next().as_deref() {
                    Some("opt-2.7b" | "opt") => Language::Opt,
                    Some("flan-t5-xl" | "flan-t5") => Language::FlanT5,
                    _ => panic!("--lm opt-2.7b|flan-t5-xl"),
                }
            }
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
    let mut model = Blip2::new(vb, config(language)).expect("the model");
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
        model = Blip2::new(
            VarBuilder::from_tensors(weights, dtype, &device),
            config(language),
        )
        .expect("the model");
    }
    eprintln!("running in {dtype:?} on {device:?}");
    eprintln!(
        "made {:.2} B random parameters in {:.0} s",
        params as f64 / 1e9,
        started.elapsed().as_secs_f64()
    );
    let model_id = language.model();
    println!(
        "blip2_memory_gb{{model=\"{model_id}\",dtype=\"f32\"}} {:.1}",
        params as f64 * 4.0 / 1e9
    );
    println!(
        "blip2_memory_gb{{model=\"{model_id}\",dtype=\"f16\"}} {:.1}",
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
        "blip2_encode_ms_per_image{{model=\"{model_id}\",dtype=\"{}\"}} {:.1}",
        format!("{dtype:?}").to_lowercase(),
        encode_s * 1000.0
    );

    let projected = model.encode(&pixels).expect("encode").projected;
    let exactly = |n: usize, beams: usize| Generation {
        max_new_tokens: n,
        min_new_tokens: n,
        min_length: 0,
        num_beams: beams,
        length_penalty: 1.0,
        repetition_penalty: 1.0,
    };
    // A caption (no text) and four "Question: … Answer:" prompts of 10 tokens.
    let question = |seed: u32| -> Vec<u32> {
        let text: Vec<u32> = (0..9).map(|i| 100 + seed * 37 + i * 11).collect();
        language.prompt(&text)
    };
    let prompts: Vec<Vec<u32>> = std::iter::once(language.prompt(&[]))
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
            "blip2_decoder_ms_per_token{{model=\"{model_id}\",batch=\"{batch}\"}} {:.1}",
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
    println!("blip2_caption_and_4_questions_s{{model=\"{model_id}\",path=\"cached\"}} {cached:.3}");
    println!(
        "blip2_caption_and_4_questions_s{{model=\"{model_id}\",path=\"re-encode\"}} {reencode:.3}"
    );
    match language {
        Language::Opt => println!("blip2_cached_vs_reencode={:.2}", reencode / cached),
        Language::FlanT5 => println!("blip2_flan_t5_cached_vs_reencode={:.2}", reencode / cached),
    }
}
