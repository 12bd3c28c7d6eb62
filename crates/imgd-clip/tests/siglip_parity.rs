//! Parity with the reference implementation (HF `transformers` 5, torch, PIL) for SigLIP 2: a
//! tiny random-weight `SiglipModel` with a Gemma-structured multilingual tokenizer and its
//! reference outputs, made by `scripts/make-fixtures.py siglip` into `fixtures/siglip/`,
//! loaded through the real loading code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use imgd_clip::siglip::{SiglipImageEncoder, SiglipTextEncoder, canonicalize, is_siglip};

/// Relative tolerance of every comparison with the reference.
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/siglip")
}

fn model_dir() -> PathBuf {
    fixtures().join("tiny-siglip2")
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    images: Vec<String>,
    texts: Vec<String>,
}

impl Reference {
    fn load() -> Self {
        Self::load_from(&fixtures())
    }

    fn load_from(dir: &Path) -> Self {
        let tensors =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let strings = |key: &str| -> Vec<String> {
            json[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        };
        Reference {
            tensors,
            images: strings("images"),
            texts: strings("texts"),
        }
    }

    fn rows(&self, name: &str) -> Vec<Vec<f32>> {
        self.tensors[name].to_vec2().unwrap()
    }
}

fn assert_close(actual: &[f32], expected: &[f32], what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: lengths differ");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let worst = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= RTOL * scale,
        "{what}: max abs difference {worst:e} exceeds {RTOL:e} x {scale:e}"
    );
}

/// Checks `encoder`'s pixels and batched image vectors against `reference`; returns the
/// images, in the reference's order.
fn assert_images_match(encoder: &SiglipImageEncoder, reference: &Reference) -> Vec<RgbImage> {
    let images: Vec<RgbImage> = reference
        .images
        .iter()
        .map(|name| {
            image::open(fixtures().join("images").join(name))
                .unwrap()
                .to_rgb8()
        })
        .collect();
    for (name, image) in reference.images.iter().zip(&images) {
        let pixels = encoder.preprocessor().apply(image).unwrap();
        let expected: Vec<f32> = reference.tensors[&format!("pixels.{name}")]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_close(&pixels, &expected, &format!("pixels of {name}"));
    }
    let refs: Vec<_> = images.iter().collect();
    let vectors = encoder.embed_images(&refs).unwrap();
    for (i, (got, want)) in vectors
        .iter()
        .zip(reference.rows("image_embeds"))
        .enumerate()
    {
        assert_close(got, &want, &format!("image embedding {i}"));
    }
    images
}

#[test]
fn image_pixels_and_embeddings_match_the_reference() {
    let reference = Reference::load();
    assert!(is_siglip(&model_dir()));
    let encoder = SiglipImageEncoder::load(&model_dir(), &Device::Cpu).unwrap();
    assert_eq!(encoder.info().id, "tiny-siglip2");
    assert_eq!(encoder.dim(), 32);
    // The processor: a square resize without a crop (PIL bilinear), mean and std 0.5.
    let images = assert_images_match(&encoder, &reference);
    let expected = reference.rows("image_embeds");
    // One at a time gives what the batch gives.
    for (i, image) in images.iter().enumerate() {
        let alone = encoder.embed_images(&[image]).unwrap();
        assert_close(&alone[0], &expected[i], &format!("image {i} alone"));
    }
}

#[test]
fn token_ids_in_every_script_and_text_embeddings_match_the_reference() {
    let reference = Reference::load();
    let encoder = SiglipTextEncoder::load(&model_dir(), &Device::Cpu).unwrap();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let ids = encoder.tokenize(&texts).unwrap();
    let expected_ids: Vec<Vec<i64>> = reference.tensors["text_ids"].to_vec2().unwrap();
    for ((text, got), want) in texts.iter().zip(&ids).zip(&expected_ids) {
        let want: Vec<u32> = want.iter().map(|&id| id as u32).collect();
        assert_eq!(got, &want, "token ids of {text:?}");
    }
    let vectors = encoder.embed_text(&texts).unwrap();
    let expected = reference.rows("text_embeds");
    for ((text, got), want) in texts.iter().zip(&vectors).zip(&expected) {
        assert_close(got, want, &format!("text embedding of {text:?}"));
    }
    let raw = encoder.forward_ids(&ids).unwrap().to_vec2::<f32>().unwrap();
    for (i, (got, want)) in raw.iter().zip(reference.rows("text_features")).enumerate() {
        assert_close(got, &want, &format!("text features {i}"));
    }
}

/// SigLIP (v1): `spiece.model` run as `SiglipTokenizer` runs it, and its bicubic processor.
#[test]
fn siglip_v1_sentencepiece_ids_and_embeddings_match_the_reference() {
    let dir = fixtures().join("v1");
    let model = dir.join("tiny-siglip");
    assert!(!model.join("tokenizer.json").exists(), "only spiece.model");
    let reference = Reference::load_from(&dir);
    let text = SiglipTextEncoder::load(&model, &Device::Cpu).unwrap();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();
    let ids = text.tokenize(&texts).unwrap();
    let expected_ids: Vec<Vec<i64>> = reference.tensors["text_ids"].to_vec2().unwrap();
    for ((text, got), want) in texts.iter().zip(&ids).zip(&expected_ids) {
        let want: Vec<u32> = want.iter().map(|&id| id as u32).collect();
        assert_eq!(got, &want, "token ids of {text:?}");
    }
    let vectors = text.embed_text(&texts).unwrap();
    for ((text, got), want) in texts
        .iter()
        .zip(&vectors)
        .zip(reference.rows("text_embeds"))
    {
        assert_close(got, &want, &format!("text embedding of {text:?}"));
    }
    let image = SiglipImageEncoder::load(&model, &Device::Cpu).unwrap();
    assert_images_match(&image, &reference);
}

#[test]
fn canonicalisation_is_siglips() {
    assert_eq!(
        canonicalize("  Don't   STOP!\t(now)\n", true),
        "dont stop now"
    );
    assert_eq!(
        canonicalize("A Dog, on the BEACH!", false),
        "A Dog on the BEACH"
    );
    assert_eq!(canonicalize("Größe — ΣΑΣ", true), "größe — σας");
}

#[test]
fn a_clip_folder_is_not_taken_for_siglip_and_a_naflex_config_is_refused() {
    let clip = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clip/tiny-clip");
    assert!(!is_siglip(&clip));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"model_type": "siglip2", "text_config": {}, "vision_config": {}}"#,
    )
    .unwrap();
    let err = SiglipImageEncoder::load(dir.path(), &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("siglip2") && err.contains("NaFlex"), "{err}");
}
