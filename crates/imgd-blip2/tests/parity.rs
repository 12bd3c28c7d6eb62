//! Parity with the reference implementation (transformers' `Blip2ForConditionalGeneration`)
//! on the tiny random-weight checkpoints of `fixtures/blip2` (`scripts/make-fixtures.py
//! blip2`): pixels, every stage's output, first-step logits and greedy token ids.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use imgd_blip2::model::{Blip2, Generation};
use imgd_blip2::text::{TextCodec, question_prompt};
use imgd_candle::processor::{Normalize, PilFilter, ResizePreprocess};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/blip2")
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    json: Value,
}

fn reference() -> Reference {
    let dir = fixtures();
    Reference {
        tensors: candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
            .unwrap(),
        json: serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap(),
    }
}

impl Reference {
    fn tensor(&self, name: &str) -> &Tensor {
        &self.tensors[name]
    }

    fn images(&self) -> Vec<String> {
        self.json["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// The reference's pixels of every image, as one batch.
    fn pixels(&self) -> Tensor {
        let rows: Vec<Tensor> = self
            .images()
            .iter()
            .map(|name| self.tensor(&format!("pixels.{name}")).clone())
            .collect();
        Tensor::stack(&rows, 0).unwrap()
    }

    /// The text tokens of prompt `name`: its ids after the image placeholders.
    fn prompt(&self, name: &str) -> Vec<u32> {
        let image = self.json["token_ids"]["image"].as_u64().unwrap();
        self.json["prompts"][name]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .filter(|&id| id != image)
            .map(|id| id as u32)
            .collect()
    }

    fn generated(&self, name: &str) -> Vec<Vec<u32>> {
        serde_json::from_value(self.json["generated_ids"][name].clone()).unwrap()
    }

    /// The decoding `name` of the fixture, as settings.
    fn decoding(&self, name: &str) -> Generation {
        let d = &self.json["decodings"][name];
        let number = |key: &str, default: f64| d[key].as_f64().unwrap_or(default);
        Generation {
            max_new_tokens: self.json["max_new_tokens"].as_u64().unwrap() as usize,
            min_new_tokens: number("min_new_tokens", 0.0) as usize,
            num_beams: number("num_beams", 1.0) as usize,
            length_penalty: number("length_penalty", 1.0) as f32,
            repetition_penalty: number("repetition_penalty", 1.0) as f32,
        }
    }
}

const PROMPTS: [&str; 3] = ["caption", "q1", "q2"];

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn model(folder: &str) -> Blip2 {
    Blip2::load(&fixtures().join(folder), &Device::Cpu).unwrap()
}

#[test]
fn prompts_are_tokenized_and_answers_decoded_as_the_reference_does() {
    let reference = reference();
    let codec = TextCodec::load(&fixtures().join("tiny-blip2-opt"), 2).unwrap();
    for name in PROMPTS {
        let text = reference.json["prompt_texts"][name].as_str().unwrap();
        assert_eq!(
            codec.prompt(text).unwrap(),
            reference.prompt(name),
            "{name}"
        );
    }
    assert_eq!(
        question_prompt(" what is in the picture? "),
        reference.json["prompt_texts"]["q1"].as_str().unwrap()
    );
    let texts = reference.json["generated_texts"].as_object().unwrap();
    for (key, rows) in texts {
        for (ids, text) in reference
            .generated(key)
            .iter()
            .zip(rows.as_array().unwrap())
        {
            assert_eq!(
                codec.decode(ids).unwrap(),
                text.as_str().unwrap().trim(),
                "{key}: {ids:?}"
            );
        }
    }
}

#[test]
fn pixels_match_the_reference_processor() {
    let reference = reference();
    let dir = fixtures().join("tiny-blip2-opt");
    let default = ResizePreprocess::square(32, PilFilter::Bicubic, Normalize::openai_clip());
    let processor = ResizePreprocess::load(&dir, 32, default).unwrap();
    for name in reference.images() {
        let photo = image::open(fixtures().join("../blip/images").join(&name))
            .unwrap()
            .to_rgb8();
        let ours =
            Tensor::from_vec(processor.apply(&photo).unwrap(), (3, 32, 32), &Device::Cpu).unwrap();
        let diff = max_diff(&ours, reference.tensor(&format!("pixels.{name}")));
        assert!(diff < 1e-6, "{name}: {diff}");
    }
}

#[test]
fn each_stage_matches_the_reference_in_both_checkpoint_layouts() {
    let reference = reference();
    // One file with `qkv.bias`, and two shards with `q_bias` and `v_bias`.
    for folder in ["tiny-blip2-opt", "tiny-blip2-opt-split-bias"] {
        let encoded = model(folder).encode(&reference.pixels()).unwrap();
        for (stage, ours) in [
            ("vision", &encoded.vision),
            ("qformer", &encoded.qformer),
            ("projected", &encoded.projected),
        ] {
            let diff = max_diff(ours, reference.tensor(stage));
            assert!(diff < 1e-4, "{folder} {stage}: {diff}");
        }
    }
}

#[test]
fn first_step_logits_match_from_the_cached_image_and_from_a_full_forward() {
    let reference = reference();
    let model = model("tiny-blip2-opt");
    let encoded = model.encode(&reference.pixels()).unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| reference.prompt(p)).collect();
    // All prompts of both images in one batch, continuing each image's cached prefix.
    let prefix = model.image_prefix(&encoded.projected).unwrap();
    let (_, logits) = model.prompt_logits(&prefix, &prompts).unwrap();
    let images = reference.images().len();
    for (p, name) in PROMPTS.iter().enumerate() {
        let rows: Vec<Tensor> = (0..images)
            .map(|image| logits.get(image * PROMPTS.len() + p).unwrap())
            .collect();
        let cached = Tensor::stack(&rows, 0).unwrap();
        let want = reference.tensor(&format!("logits.{name}"));
        let diff = max_diff(&cached, want);
        assert!(diff < 1e-4, "{name} from the cache: {diff}");
        // One forward over the image's embeddings and the prompt, no cache, no padding.
        let full = model
            .full_forward_logits(&encoded.projected, &prompts[p])
            .unwrap();
        let diff = max_diff(&full, want);
        assert!(diff < 1e-4, "{name} in one forward: {diff}");
        let diff = max_diff(&full, &cached);
        assert!(diff < 1e-5, "{name}, cached vs full: {diff}");
    }
}

#[test]
fn greedy_and_beam_search_ids_match_the_reference_for_a_caption_and_two_questions() {
    let reference = reference();
    let model = model("tiny-blip2-opt");
    let encoded = model.encode(&reference.pixels()).unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| reference.prompt(p)).collect();
    for decoding in ["greedy", "greedy_penalised", "beam3", "beam3_penalised"] {
        let generation = reference.decoding(decoding);
        // Every prompt of every image in one batch.
        let together = model
            .generate(&encoded.projected, &prompts, generation)
            .unwrap();
        for (p, name) in PROMPTS.iter().enumerate() {
            let key = format!("{decoding}.{name}");
            let got: Vec<Vec<u32>> = together
                .iter()
                .map(|per_image| per_image[p].tokens.clone())
                .collect();
            assert_eq!(got, reference.generated(&key), "{key}");
            if let Some(scores) = reference.json["beam_scores"][&key].as_array() {
                for (image, want) in scores.iter().enumerate() {
                    let want = want.as_f64().unwrap() as f32;
                    let score = together[image][p].score.unwrap();
                    assert!(
                        (score - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{key}, image {image}: score {score} vs {want}"
                    );
                }
            }
        }
        // Each image alone, each prompt alone: the same tokens.
        for (image, per_image) in together.iter().enumerate() {
            let one = encoded.projected.narrow(0, image, 1).unwrap();
            for (p, prompt) in prompts.iter().enumerate() {
                let alone = model
                    .generate(&one, std::slice::from_ref(prompt), generation)
                    .unwrap();
                assert_eq!(
                    alone[0][0].tokens, per_image[p].tokens,
                    "{decoding}: image {image}, {}",
                    PROMPTS[p]
                );
            }
        }
    }
}

#[test]
fn in_half_precision_the_q_former_stays_f32_and_outputs_stay_close() {
    let reference = reference();
    let dir = fixtures().join("tiny-blip2-opt");
    // f16 (bf16 is for GPUs: candle's CPU matrix multiply has no bf16 kernel).
    let dtype = DType::F16;
    let model = Blip2::load_as(&dir, &Device::Cpu, dtype).unwrap();
    let encoded = model.encode(&reference.pixels()).unwrap();
    assert_eq!(encoded.vision.dtype(), dtype);
    assert_eq!(
        encoded.qformer.dtype(),
        DType::F32,
        "the Q-Former runs in f32"
    );
    assert_eq!(encoded.projected.dtype(), dtype);
    let projected = encoded.projected.to_dtype(DType::F32).unwrap();
    let diff = max_diff(&projected, reference.tensor("projected"));
    assert!(diff < 0.1, "{dtype:?} projected: {diff}");
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| reference.prompt(p)).collect();
    let prefix = model.image_prefix(&encoded.projected).unwrap();
    let (_, logits) = model.prompt_logits(&prefix, &prompts).unwrap();
    let logits = logits.to_dtype(DType::F32).unwrap();
    let caption: Vec<Tensor> = (0..reference.images().len())
        .map(|image| logits.get(image * PROMPTS.len()).unwrap())
        .collect();
    let caption = Tensor::stack(&caption, 0).unwrap();
    let want = reference.tensor("logits.caption");
    // Relative to the logits' spread: half precision keeps about three digits.
    let spread = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = max_diff(&caption, want);
    assert!(diff < 0.01 * spread, "{dtype:?} logits: {diff} of {spread}");
}
