//! Parity with the reference implementation (HF `transformers` 5, torch, PIL): a tiny
//! random-weight `VisionEncoderDecoderModel` with trocr-small-printed's structure and its
//! reference outputs, made by `scripts/make-fixtures.py trocr` into `fixtures/trocr/`, loaded
//! through the real loading code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use candle_core::{Device, IndexOp, Tensor};
use image::RgbImage;
use imgd_ocr::LineRecognizer;
use imgd_trocr::config::TrocrSettings;
use imgd_trocr::preprocess::load_preprocess;
use imgd_trocr::tokenizer::{SENTENCEPIECE_MODEL, load_tokenizer};
use imgd_trocr::{TrocrRecognizer, is_installed};

/// Relative tolerance of every comparison with the reference.
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/trocr")
}

fn model_dir() -> PathBuf {
    fixtures().join("tiny-trocr")
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

    fn crop(&self, name: &str) -> RgbImage {
        image::open(fixtures().join("images").join(name))
            .unwrap()
            .to_rgb8()
    }

    fn crops(&self) -> Vec<RgbImage> {
        self.images.iter().map(|name| self.crop(name)).collect()
    }

    fn pixels(&self) -> Vec<Vec<f32>> {
        self.images
            .iter()
            .map(|name| self.vec1(&format!("pixels.{name}")))
            .collect()
    }

    fn ids(&self) -> Vec<Vec<u32>> {
        self.json["greedy_ids"]
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

    fn probs(&self) -> Vec<Vec<f32>> {
        self.json["greedy_token_probs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect()
            })
            .collect()
    }

    fn texts(&self) -> Vec<String> {
        self.json["greedy_texts"]
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

fn model() -> TrocrRecognizer {
    TrocrRecognizer::load(&model_dir(), &Device::Cpu).unwrap()
}

#[test]
fn preprocessing_matches_vit_image_processor_on_real_line_crops() {
    let reference = Reference::load();
    let preprocess = load_preprocess(&model_dir(), 64).unwrap();
    assert_eq!((preprocess.width, preprocess.height), (64, 64));
    for name in &reference.images {
        let crop = reference.crop(name);
        let ours = preprocess.apply(&crop).unwrap();
        let theirs = reference.vec1(&format!("pixels.{name}"));
        // PIL's fixed-point resize reproduced bit for bit: the same bytes, hence the same
        // floats up to rounding.
        assert_close(&ours, &theirs, 1e-6, name);
    }
}

#[test]
fn encoder_states_match_deit_with_its_distillation_token() {
    let reference = Reference::load();
    let model = model();
    let states = model.encode_pixels(&reference.pixels()).unwrap();
    let expected = &reference.tensors["encoder_hidden"];
    assert_eq!(states.dims(), &[reference.images.len(), 8 * 8 + 2, 32]);
    assert_rows_close(&states, expected, RTOL, "encoder states");
}

#[test]
fn decoder_logits_match_for_fixed_ids() {
    let reference = Reference::load();
    let model = model();
    let states = model.encode_pixels(&reference.pixels()).unwrap();
    let ids = reference.tensors["logits_ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    let logits = model.decoder_logits(&ids, &states).unwrap();
    assert_rows_close(&logits, &reference.tensors["logits"], RTOL, "logits");
}

#[test]
fn greedy_ids_texts_and_token_probabilities_match_generate() {
    let reference = Reference::load();
    let settings = TrocrSettings {
        max_new_tokens: reference.max_new_tokens(),
        ..TrocrSettings::default()
    };
    let model = TrocrRecognizer::load_with(&model_dir(), &Device::Cpu, settings).unwrap();
    let states = model.encode_pixels(&reference.pixels()).unwrap();
    let generated = model.generate(&states, reference.max_new_tokens()).unwrap();
    let ids: Vec<Vec<u32>> = generated.iter().map(|g| g.ids.clone()).collect();
    assert_eq!(ids, reference.ids());
    // Some rows end early and some run to the limit: rows leave the batch mid-decode.
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().any(|&l| l < 5) && lengths.contains(&13),
        "{lengths:?}"
    );
    for (i, (g, want)) in generated.iter().zip(reference.probs()).enumerate() {
        assert_close(&g.probs, &want, RTOL, &format!("token probabilities[{i}]"));
    }
    let texts: Vec<String> = ids.iter().map(|row| model.decode(row).unwrap()).collect();
    assert_eq!(texts, reference.texts());

    // From the crops, through preprocessing: the same readings; the confidence is the mean
    // probability of the tokens before the end token.
    let crops = reference.crops();
    let refs: Vec<&RgbImage> = crops.iter().collect();
    let readings = model.read_images(&refs).unwrap();
    for ((reading, want_ids), want_probs) in
        readings.iter().zip(reference.ids()).zip(reference.probs())
    {
        assert_eq!(reading.generated.ids, want_ids);
        let ended = want_ids.len() > 1 && want_ids.last() == Some(&2);
        let tokens = if ended {
            &want_probs[..want_probs.len() - 1]
        } else {
            &want_probs[..]
        };
        let mean = if tokens.is_empty() {
            0.0
        } else {
            tokens.iter().sum::<f32>() / tokens.len() as f32
        };
        assert!(
            (reading.confidence - mean).abs() < 1e-4,
            "{} vs {mean}",
            reading.confidence
        );
    }
}

#[test]
fn a_batch_of_n_crops_reads_what_n_single_crops_read() {
    let reference = Reference::load();
    let settings = TrocrSettings {
        max_new_tokens: 20,
        batch: 3,
    };
    let mut model = TrocrRecognizer::load_with(&model_dir(), &Device::Cpu, settings).unwrap();
    let mut crops = reference.crops();
    // More crops than one chunk, sizes all different, one repeated.
    crops.push(image::imageops::rotate180(&crops[0]));
    crops.push(image::imageops::crop_imm(&crops[1], 0, 0, 90, 40).to_image());
    crops.push(crops[2].clone());
    let refs: Vec<&RgbImage> = crops.iter().collect();
    let together = model.read_images(&refs).unwrap();
    assert_eq!(together.len(), crops.len());
    for (crop, batched) in crops.iter().zip(&together) {
        let single = model.read_images(&[crop]).unwrap().remove(0);
        assert_eq!(single.generated.ids, batched.generated.ids);
        assert_eq!(single.text, batched.text);
        assert_close(
            &single.generated.probs,
            &batched.generated.probs,
            RTOL,
            "token probabilities",
        );
    }
    assert_eq!(together[2].generated.ids, together[6].generated.ids);
    // Through the OCR module's interface: the same texts and confidences.
    let encodes = model.encodes();
    let before = encodes.load(Ordering::Relaxed);
    let read = model.read(&refs).unwrap();
    assert_eq!(encodes.load(Ordering::Relaxed) - before, crops.len() as u64);
    for ((text, confidence), reading) in read.iter().zip(&together) {
        assert_eq!(text, &reading.text);
        assert!((confidence - reading.confidence).abs() < 1e-6);
    }
    let info = LineRecognizer::info(&model);
    assert_eq!(info.kind, "trocr");
    assert_eq!(info.model_id, "tiny-trocr");
    assert_eq!(info.model_version, "fixture-1");
}

#[test]
fn the_sentencepiece_model_decodes_like_tokenizer_json() {
    // A folder as microsoft/trocr-small-printed ships it: no tokenizer.json, only the
    // SentencePiece model of its XLMRobertaTokenizer.
    let reference = Reference::load();
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(model_dir().join(name), dir.path().join(name)).unwrap();
    }
    std::fs::copy(
        fixtures().join(SENTENCEPIECE_MODEL),
        dir.path().join(SENTENCEPIECE_MODEL),
    )
    .unwrap();
    assert!(is_installed(dir.path()));
    let from_spm = load_tokenizer(dir.path()).unwrap();
    let from_json = load_tokenizer(&model_dir()).unwrap();
    assert_eq!(
        from_spm.get_vocab_size(true),
        reference.json["tokenizer_size"].as_u64().unwrap() as usize
    );
    assert_eq!(from_spm.get_vocab(true), from_json.get_vocab(true));
    let all: Vec<u32> = (0..reference.json["tokenizer_size"].as_u64().unwrap() as u32).collect();
    for ids in reference.ids().iter().chain([&all]) {
        assert_eq!(
            from_spm.decode(ids, true).unwrap(),
            from_json.decode(ids, true).unwrap()
        );
    }
    let model = TrocrRecognizer::load(dir.path(), &Device::Cpu).unwrap();
    let texts: Vec<String> = reference
        .ids()
        .iter()
        .map(|row| model.decode(row).unwrap())
        .collect();
    assert_eq!(texts, reference.texts());
    // Without any tokenizer the folder is not a model.
    std::fs::remove_file(dir.path().join(SENTENCEPIECE_MODEL)).unwrap();
    assert!(!is_installed(dir.path()));
    assert!(TrocrRecognizer::load(dir.path(), &Device::Cpu).is_err());
}

#[test]
fn the_manifests_trocr_model_is_a_folder_this_crate_loads() {
    let manifest = imgd_infer::manifest::Manifest::builtin();
    let model = manifest.get("trocr-small-printed").unwrap();
    assert_eq!(model.module, "ocr");
    let names: Vec<&str> = model
        .files
        .iter()
        .map(|f| {
            let (folder, name) = f.path.split_once('/').unwrap();
            assert_eq!(
                folder, "trocr-small-printed",
                "the default `[models] trocr` folder"
            );
            assert!(f.url.is_some());
            name
        })
        .collect();
    // What `is_installed` looks for: the config, weights and a tokenizer.
    let dir = tempfile::tempdir().unwrap();
    for name in &names {
        std::fs::write(dir.path().join(name), b"").unwrap();
    }
    assert!(is_installed(dir.path()), "{names:?}");
    assert!(names.contains(&"preprocessor_config.json"));
}

#[test]
fn a_vit_encoder_sinusoidal_positions_and_a_tied_projection_match_too() {
    // tiny-trocr-vit: trocr-base/-large's choices (no distillation token, no qkv biases,
    // GELU, sinusoidal positions, no layernorm_embedding, no scale, tied output projection).
    let reference = Reference::load();
    let dir = fixtures().join("tiny-trocr-vit");
    let model = TrocrRecognizer::load(&dir, &Device::Cpu).unwrap();
    let config = model.config();
    assert_eq!(config.encoder.kind, imgd_trocr::config::EncoderKind::Vit);
    assert!(!config.decoder.learned_positions && config.decoder.tie_word_embeddings);
    let states = model.encode_pixels(&reference.pixels()).unwrap();
    assert_rows_close(
        &states,
        &reference.tensors["vit.encoder_hidden"],
        RTOL,
        "encoder states",
    );
    let ids = reference.tensors["logits_ids"]
        .to_dtype(candle_core::DType::U32)
        .unwrap();
    let logits = model.decoder_logits(&ids, &states).unwrap();
    assert_rows_close(&logits, &reference.tensors["vit.logits"], RTOL, "logits");
    let generated = model.generate(&states, reference.max_new_tokens()).unwrap();
    let want: Vec<Vec<u32>> = reference.json["vit_greedy_ids"]
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
        .collect();
    let got: Vec<Vec<u32>> = generated.iter().map(|g| g.ids.clone()).collect();
    assert_eq!(got, want);
    for (row, text) in got
        .iter()
        .zip(reference.json["vit_greedy_texts"].as_array().unwrap())
    {
        assert_eq!(model.decode(row).unwrap(), text.as_str().unwrap());
    }
}
