//! Parity with the reference implementation (transformers' `Blip2ForConditionalGeneration`)
//! on the tiny random-weight checkpoints of `fixtures/blip2` (`scripts/make-fixtures.py
//! blip2`), one with OPT and one with Flan-T5: pixels, every stage's output, first-step logits,
//! greedy and beam-search token ids.

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

/// A checkpoint of the fixtures and what the reference computed with it.
#[derive(Clone, Copy)]
struct Fixture {
    /// The checkpoint's folder (the same weights in other layouts may follow).
    folders: &'static [&'static str],
    /// The reference's files, `<stem>.json` and `<stem>.safetensors`.
    stem: &'static str,
    /// The language model's beginning-of-sequence token.
    bos: Option<u32>,
    /// The language model's dtype when the model is loaded in f16.
    half_text: DType,
}

/// BLIP-2 with OPT (in one file with `qkv.bias`, and in two shards with `q_bias` and
/// `v_bias`), and with Flan-T5.
const FIXTURES: [Fixture; 2] = [
    Fixture {
        folders: &["tiny-blip2-opt", "tiny-blip2-opt-split-bias"],
        stem: "reference",
        bos: Some(2),
        half_text: DType::F16,
    },
    Fixture {
        folders: &["tiny-blip2-flan-t5"],
        stem: "reference-flan-t5",
        bos: None,
        // T5 overflows f16: it runs in bf16.
        half_text: DType::BF16,
    },
];

struct Reference {
    tensors: HashMap<String, Tensor>,
    json: Value,
}

fn reference(fixture: Fixture) -> Reference {
    let dir = fixtures();
    let stem = fixture.stem;
    Reference {
        tensors: candle_core::safetensors::load(
            dir.join(format!("{stem}.safetensors")),
            &Device::Cpu,
        )
        .unwrap(),
        json: serde_json::from_str(
            &std::fs::read_to_string(dir.join(format!("{stem}.json"))).unwrap(),
        )
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
            min_length: number("min_length", 0.0) as usize,
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
    for fixture in FIXTURES {
        prompts_and_answers_match(fixture);
    }
}

fn prompts_and_answers_match(fixture: Fixture) {
    let reference = reference(fixture);
    let codec = TextCodec::load(&fixtures().join(fixture.folders[0]), fixture.bos).unwrap();
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
                "{}: {key}: {ids:?}",
                fixture.stem
            );
        }
    }
}

#[test]
fn pixels_match_the_reference_processor() {
    for fixture in FIXTURES {
        pixels_match(fixture);
    }
}

fn pixels_match(fixture: Fixture) {
    let reference = reference(fixture);
    let dir = fixtures().join(fixture.folders[0]);
    let default = ResizePreprocess::square(32, PilFilter::Bicubic, Normalize::openai_clip());
    let processor = ResizePreprocess::load(&dir, 32, default).unwrap();
    for name in reference.images() {
        let photo = image::open(fixtures().join("../blip/images").join(&name))
            .unwrap()
            .to_rgb8();
        let ours =
            Tensor::from_vec(processor.apply(&photo).unwrap(), (3, 32, 32), &Device::Cpu).unwrap();
        let diff = max_diff(&ours, reference.tensor(&format!("pixels.{name}")));
        assert!(diff < 1e-6, "{}: {name}: {diff}", fixture.stem);
    }
}

#[test]
fn each_stage_matches_the_reference_in_every_checkpoint_layout() {
    for fixture in FIXTURES {
        stages_match(fixture);
    }
}

fn stages_match(fixture: Fixture) {
    let reference = reference(fixture);
    for &folder in fixture.folders {
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
    for fixture in FIXTURES {
        first_step_logits_match(fixture);
    }
}

fn first_step_logits_match(fixture: Fixture) {
    let reference = reference(fixture);
    let model = model(fixture.folders[0]);
    let stem = fixture.stem;
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
        assert!(diff < 1e-4, "{stem}: {name} from the cache: {diff}");
        // One forward over the image's embeddings and the prompt, no cache, no padding.
        let full = model
            .full_forward_logits(&encoded.projected, &prompts[p])
            .unwrap();
        let diff = max_diff(&full, want);
        assert!(diff < 1e-4, "{stem}: {name} in one forward: {diff}");
        let diff = max_diff(&full, &cached);
        assert!(diff < 1e-5, "{stem}: {name}, cached vs full: {diff}");
    }
}

#[test]
fn greedy_and_beam_search_ids_match_the_reference_for_a_caption_and_two_questions() {
    for fixture in FIXTURES {
        decodes_match(fixture);
    }
}

fn decodes_match(fixture: Fixture) {
    let reference = reference(fixture);
    let model = model(fixture.folders[0]);
    let stem = fixture.stem;
    let encoded = model.encode(&reference.pixels()).unwrap();
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| reference.prompt(p)).collect();
    for decoding in [
        "greedy",
        "greedy_penalised",
        "greedy_min_length",
        "beam3",
        "beam3_penalised",
        "beam3_min_length",
    ] {
        let generation = reference.decoding(decoding);
        // Every prompt of every image in one batch.
        let together = model
            .generate(&encoded.projected, &prompts, generation)
            .unwrap();
        for (p, name) in PROMPTS.iter().enumerate() {
            let key = format!("{decoding}.{name}");
            let label = format!("{stem}: {key}");
            let got: Vec<Vec<u32>> = together
                .iter()
                .map(|per_image| per_image[p].tokens.clone())
                .collect();
            assert_eq!(got, reference.generated(&key), "{label}");
            if let Some(scores) = reference.json["beam_scores"][&key].as_array() {
                for (image, want) in scores.iter().enumerate() {
                    let want = want.as_f64().unwrap() as f32;
                    let score = together[image][p].score.unwrap();
                    assert!(
                        (score - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{label}, image {image}: score {score} vs {want}"
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
                    "{stem}: {decoding}: image {image}, {}",
                    PROMPTS[p]
                );
            }
        }
    }
}

#[test]
fn in_half_precision_the_q_former_stays_f32_and_outputs_stay_close() {
    for fixture in FIXTURES {
        half_precision_stays_close(fixture);
    }
}

fn half_precision_stays_close(fixture: Fixture) {
    let reference = reference(fixture);
    let dir = fixtures().join(fixture.folders[0]);
    let dtype = DType::F16;
    let model = Blip2::load_as(&dir, &Device::Cpu, dtype).unwrap();
    let encoded = model.encode(&reference.pixels()).unwrap();
    let stem = fixture.stem;
    assert_eq!(encoded.vision.dtype(), dtype);
    assert_eq!(
        encoded.qformer.dtype(),
        DType::F32,
        "the Q-Former runs in f32"
    );
    assert_eq!(encoded.projected.dtype(), fixture.half_text, "{stem}");
    let projected = encoded.projected.to_dtype(DType::F32).unwrap();
    let diff = max_diff(&projected, reference.tensor("projected"));
    assert!(diff < 0.1, "{stem}: {dtype:?} projected: {diff}");
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| reference.prompt(p)).collect();
    let prefix = model.image_prefix(&encoded.projected).unwrap();
    let (_, logits) = model.prompt_logits(&prefix, &prompts).unwrap();
    assert_eq!(logits.dtype(), fixture.half_text, "{stem}");
    let logits = logits.to_dtype(DType::F32).unwrap();
    let caption: Vec<Tensor> = (0..reference.images().len())
        .map(|image| logits.get(image * PROMPTS.len()).unwrap())
        .collect();
    let caption = Tensor::stack(&caption, 0).unwrap();
    let want = reference.tensor("logits.caption");
    // Relative to the logits' spread: f16 keeps about three digits, bf16 two.
    let spread = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let tolerance = if fixture.half_text == DType::BF16 {
        0.03
    } else {
        0.01
    };
    let diff = max_diff(&caption, want);
    assert!(
        diff < tolerance * spread,
        "{stem}: {dtype:?} logits: {diff} of {spread}"
    );
}
