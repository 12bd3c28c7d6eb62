//! Parity with the reference implementation (HF `transformers` 5, torch, PIL): a tiny
//! random-weight `BlipForConditionalGeneration` and its reference outputs, made by
//! `scripts/make-fixtures.py blip` into `fixtures/blip/`, loaded through the real loading code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use candle_core::{DType, Device, IndexOp, Tensor};
use image::RgbImage;
use imgd_caption::blip::BlipCaptioner;
use imgd_caption::config::{CaptionSettings, Question, load_preprocess};
use imgd_caption::{runner, runner_from};
use imgd_core::SqlValue;
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey};

/// Relative tolerance of every comparison with the reference.
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/blip")
}

fn blip_dir() -> PathBuf {
    fixtures().join("tiny-blip")
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    json: serde_json::Value,
    images: Vec<String>,
}

impl Reference {
    fn load() -> Self {
        let tensors =
            candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        let json: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures().join("reference.json")).unwrap(),
        )
        .unwrap();
        let images = json["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        Reference {
            tensors,
            json,
            images,
        }
    }

    fn vec1(&self, name: &str) -> Vec<f32> {
        self.tensors[name].flatten_all().unwrap().to_vec1().unwrap()
    }

    fn image(&self, name: &str) -> RgbImage {
        image::open(fixtures().join("images").join(name))
            .unwrap()
            .to_rgb8()
    }

    fn pixels(&self) -> Vec<Vec<f32>> {
        self.images
            .iter()
            .map(|name| self.vec1(&format!("pixels.{name}")))
            .collect()
    }

    fn ids(&self, key: &str) -> Vec<Vec<u32>> {
        self.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            })
            .collect()
    }

    fn strings(&self, key: &str) -> Vec<String> {
        self.json[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    fn max_new_tokens(&self) -> usize {
        self.json["max_new_tokens"].as_u64().unwrap() as usize
    }
}

/// `max |a - e| <= rtol * max |e|`.
fn assert_close(actual: &[f32], expected: &[f32], rtol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= rtol * scale,
        "{what}: max abs difference {worst:e} exceeds {rtol:e} x {scale:e}"
    );
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// Compares `(n, …)` tensors row by row.
fn assert_rows_close(actual: &Tensor, expected: &Tensor, rtol: f32, what: &str) {
    assert_eq!(actual.dims(), expected.dims(), "{what}: shapes differ");
    for i in 0..expected.dim(0).unwrap() {
        assert_close(
            &flat(&actual.i(i).unwrap()),
            &flat(&expected.i(i).unwrap()),
            rtol,
            &format!("{what}[{i}]"),
        );
    }
}

#[test]
fn preprocessing_matches_blip_image_processor_on_real_photos() {
    let reference = Reference::load();
    let preprocess = load_preprocess(&blip_dir(), 192).unwrap();
    assert_eq!((preprocess.width, preprocess.height), (192, 192));
    for name in &reference.images {
        let ours = preprocess.apply(&reference.image(name)).unwrap();
        let theirs = reference.vec1(&format!("pixels.{name}"));
        // PIL's fixed-point bicubic is reproduced bit for bit: the tensors are identical up
        // to float rounding of the normalisation.
        assert_close(&ours, &theirs, 1e-6, name);
    }
    assert!(load_preprocess(&blip_dir(), 384).is_err());
}

#[test]
fn vision_embeddings_match_the_reference_and_batches_equal_singles() {
    let reference = Reference::load();
    let model = BlipCaptioner::load(&blip_dir(), &Device::Cpu).unwrap();
    assert_eq!(model.info().id, "tiny-blip");
    assert_eq!(model.info().version, "fixture-1");
    let expected = &reference.tensors["image_embeds"];
    assert_eq!(expected.dims(), [2, 145, 32]);

    let pixels = reference.pixels();
    let batch = model.encode_pixels(&pixels).unwrap();
    assert_rows_close(&batch, expected, RTOL, "image embeddings");
    for (i, single) in pixels.iter().enumerate() {
        let alone = model.encode_pixels(std::slice::from_ref(single)).unwrap();
        assert_close(
            &flat(&alone),
            &flat(&batch.i(i).unwrap()),
            1e-5,
            "batch vs single",
        );
    }

    // End to end from the PNGs: preprocessing and tower.
    let images: Vec<RgbImage> = reference
        .images
        .iter()
        .map(|n| reference.image(n))
        .collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let full = model.encode_images(&refs).unwrap();
    assert_rows_close(&full, expected, RTOL, "image embeddings from PNG");
    // 2 (batch) + 2 (singles) + 2 (PNGs).
    assert_eq!(model.vision_encodes().load(Ordering::Relaxed), 6);
}

#[test]
fn decoder_logits_match_the_reference() {
    let reference = Reference::load();
    let model = BlipCaptioner::load(&blip_dir(), &Device::Cpu).unwrap();
    let ids = reference.tensors["logits_ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    // The prompt the reference used is [DEC] + the text's tokens: our tokenizer agrees.
    let text = reference.json["logits_text"].as_str().unwrap();
    let ours: Vec<u32> = model.prompt_ids(text).unwrap();
    assert_eq!(ours, ids.i(0).unwrap().to_vec1::<u32>().unwrap());

    let expected = &reference.tensors["logits"];
    let embeds = &reference.tensors["image_embeds"];
    let logits = model.decoder_logits(&ids, embeds).unwrap();
    assert_rows_close(&logits, expected, RTOL, "decoder logits");
    // One image at a time gives the same.
    for i in 0..2 {
        let alone = model
            .decoder_logits(
                &ids.narrow(0, i, 1).unwrap(),
                &embeds.narrow(0, i, 1).unwrap(),
            )
            .unwrap();
        assert_close(
            &flat(&alone),
            &flat(&expected.i(i).unwrap()),
            RTOL,
            "single-image logits",
        );
    }
}

#[test]
fn greedy_caption_and_prefixed_answer_equal_hf_generate() {
    let reference = Reference::load();
    let model = BlipCaptioner::load(&blip_dir(), &Device::Cpu).unwrap();
    let max_new = reference.max_new_tokens();
    let embeds = model.encode_pixels(&reference.pixels()).unwrap();

    // The caption: from [DEC] alone, HF's unconditional captioning.
    let caption_prompt = model.prompt_ids("").unwrap();
    let captions = model.generate(&embeds, &caption_prompt, max_new).unwrap();
    assert_eq!(captions, reference.ids("caption_ids"));
    let texts: Vec<String> = captions
        .iter()
        .map(|ids| model.decode(ids).unwrap())
        .collect();
    assert_eq!(texts, reference.strings("caption_texts"));

    // A question: its prefix is fed after [DEC], then greedy decoding.
    let question = reference.json["question"].as_str().unwrap();
    let prompt = model.prompt_ids(question).unwrap();
    let expected_prompt: Vec<u32> = reference.json["question_prompt_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(prompt, expected_prompt);
    let answers = model.generate(&embeds, &prompt, max_new).unwrap();
    let expected = reference.ids("answer_ids");
    assert_eq!(answers, expected);
    // One decode reached the token limit, the other stopped at [SEP] at once.
    assert_eq!(answers[0].len(), prompt.len() + max_new);
    assert_eq!(answers[1].len(), prompt.len() + 1);
    let texts: Vec<String> = answers
        .iter()
        .map(|ids| model.decode(&ids[prompt.len()..]).unwrap())
        .collect();
    assert_eq!(texts, reference.strings("answer_texts"));

    // Batch of N equals N single runs.
    for (i, expected) in expected.iter().enumerate() {
        let alone = model
            .generate(&embeds.narrow(0, i, 1).unwrap(), &prompt, max_new)
            .unwrap();
        assert_eq!(&alone[0], expected, "image {i} alone");
    }
    // A limit shorter than the reference's truncates it.
    let short = model.generate(&embeds, &prompt, 3).unwrap();
    assert_eq!(short[0], expected[0][..prompt.len() + 3]);
}

fn input<'a>(path: &'a str, tiers: &'a [(u32, Arc<RgbImage>)], id: i64) -> ImageInput<'a> {
    ImageInput {
        image_id: id,
        path,
        tiers,
    }
}

#[test]
fn the_runner_encodes_each_image_once_whatever_the_number_of_questions() {
    let reference = Reference::load();
    let questions = Question::defaults();
    assert_eq!(questions.len(), 4);
    // Batches of 2 over 3 images: two model calls, three vision encodes.
    let batch = BatchConfig::new(2, Duration::from_secs(60));
    let (mut runner, encodes) =
        runner(&blip_dir(), &Device::Cpu, DType::F32, batch, &questions).unwrap();
    assert_eq!(runner.module(), imgd_caption::CAPTION);
    assert_eq!(runner.model_name(), "tiny-blip");

    let names = [
        &reference.images[0],
        &reference.images[1],
        &reference.images[0],
    ];
    let tiers: Vec<Vec<(u32, Arc<RgbImage>)>> = names
        .iter()
        .map(|name| vec![(384, Arc::new(reference.image(name)))])
        .collect();
    let mut rows = Vec::new();
    for (i, tier) in tiers.iter().enumerate() {
        let key = JobKey {
            image_id: i as i64,
            job_id: 100 + i as i64,
        };
        runner.submit(key, &input("x.png", tier, i as i64)).unwrap();
        if let Some(reason) = runner.ready(std::time::Instant::now()) {
            rows.extend(runner.run(reason));
        }
    }
    // An image without pixels fails alone, at submit.
    let key = JobKey {
        image_id: 9,
        job_id: 9,
    };
    assert!(runner.submit(key, &input("n.png", &[], 9)).is_err());
    rows.extend(runner.run(CloseReason::Draining));
    assert_eq!(rows.len(), 3);
    assert_eq!(encodes.load(Ordering::Relaxed), 3);

    for (i, (key, row)) in rows.iter().enumerate() {
        assert_eq!(key.image_id, i as i64);
        let row = row.as_ref().unwrap();
        assert_eq!(row.module, imgd_caption::CAPTION);
        assert_eq!(row.model_id.as_deref(), Some("tiny-blip"));
        assert_eq!(row.model_version.as_deref(), Some("fixture-1"));
        assert!(matches!(row.columns[..], [("caption", SqlValue::Text(_))]));
        let answers = row.data["answers"].as_object().unwrap();
        let names: Vec<&str> = answers.keys().map(String::as_str).collect();
        for q in &questions {
            assert!(names.contains(&q.name.as_str()), "{names:?}");
        }
    }
    // The same image gives the same row in another batch.
    assert_eq!(rows[0].1, rows[2].1);
}

#[test]
fn runner_rows_carry_the_reference_caption_and_answer() {
    let reference = Reference::load();
    let max_new = reference.max_new_tokens();
    let question = reference.json["question"].as_str().unwrap();
    let settings = CaptionSettings {
        caption_prompt: String::new(),
        caption_max_tokens: max_new,
        questions: vec![
            Question::new("subject", question),
            Question::new("mood", "the mood is"),
        ],
        answer_max_tokens: max_new,
    };
    let model = BlipCaptioner::load(&blip_dir(), &Device::Cpu).unwrap();
    let (mut runner, encodes) = runner_from(
        model,
        BatchConfig::new(8, Duration::from_secs(60)),
        &settings,
    )
    .unwrap();
    let tiers: Vec<Vec<(u32, Arc<RgbImage>)>> = reference
        .images
        .iter()
        .map(|name| vec![(384, Arc::new(reference.image(name)))])
        .collect();
    for (i, tier) in tiers.iter().enumerate() {
        let key = JobKey {
            image_id: i as i64,
            job_id: i as i64,
        };
        runner.submit(key, &input("x.png", tier, i as i64)).unwrap();
    }
    let rows = runner.run(CloseReason::Draining);
    assert_eq!(encodes.load(Ordering::Relaxed), 2);
    let captions = reference.strings("caption_texts");
    let answers = reference.strings("answer_texts");
    for (i, (_, row)) in rows.into_iter().enumerate() {
        let row = row.unwrap();
        assert_eq!(
            row.columns,
            vec![("caption", SqlValue::Text(captions[i].clone()))]
        );
        assert_eq!(row.data["answers"]["subject"], answers[i].as_str());
        assert!(row.data["answers"]["mood"].is_string());
    }
}

#[test]
fn bad_settings_and_missing_files_are_refused_with_a_reason() {
    let twice = [Question::new("a", "the mood is"), Question::new("a", "x")];
    let batch = BatchConfig::new(1, Duration::ZERO);
    let Err(err) = runner(&blip_dir(), &Device::Cpu, DType::F32, batch, &twice) else {
        panic!("duplicate question names were accepted")
    };
    assert!(err.to_string().contains("twice"), "{err}");

    // A prompt longer than the decoder's 64 positions.
    let long = [Question::new("long", "the mood is ".repeat(30))];
    assert!(runner(&blip_dir(), &Device::Cpu, DType::F32, batch, &long).is_err());

    let tmp = std::env::temp_dir().join(format!("imgd-caption-missing-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::copy(blip_dir().join("config.json"), tmp.join("config.json")).unwrap();
    let err = BlipCaptioner::load(&tmp, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_batched_decoder_equals_candles_blip_text_decoder() {
    use candle_transformers::models::blip::BlipForConditionalGeneration;
    use imgd_caption::blip::{load_config, mmap_weights};

    let reference = Reference::load();
    let model = BlipCaptioner::load(&blip_dir(), &Device::Cpu).unwrap();
    let config = load_config(&blip_dir()).unwrap();
    let (_, full) = mmap_weights(&blip_dir().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut candle = BlipForConditionalGeneration::new(&config.candle(), full).unwrap();

    let ids = reference.tensors["logits_ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    let embeds = &reference.tensors["image_embeds"];
    let ours = model.decoder_logits(&ids, embeds).unwrap();
    for i in 0..2 {
        candle.reset_kv_cache();
        let theirs = candle
            .text_decoder()
            .forward(
                &ids.narrow(0, i, 1).unwrap(),
                &embeds.narrow(0, i, 1).unwrap(),
            )
            .unwrap();
        assert_close(
            &flat(&ours.i(i).unwrap()),
            &flat(&theirs),
            1e-5,
            "ours vs candle's blip_text",
        );
    }
}
