//! Parity with the reference implementation (HF `transformers` 5, torch, PIL): tiny
//! random-weight CLIP and aesthetic models and their reference outputs, made by
//! `scripts/make-fixtures.py` into `fixtures/clip/`, loaded through the real loading code.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use image::RgbImage;
use imgd_clip::aesthetic::{AestheticMlp, stored_score};
use imgd_clip::clip::{ClipImageEncoder, ClipModel, ClipTextEncoder};
use imgd_clip::config::{ModelInfo, load_preprocess};
use imgd_clip::runner::vector_from_blob;
use imgd_clip::{aesthetic_runner, embedding_runner};
use imgd_core::SqlValue;
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey};

/// Relative tolerance of every comparison with the reference.
const RTOL: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clip")
}

fn clip_dir() -> PathBuf {
    fixtures().join("tiny-clip")
}

struct Reference {
    tensors: HashMap<String, Tensor>,
    images: Vec<String>,
    texts: Vec<String>,
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

    fn vec1(&self, name: &str) -> Vec<f32> {
        self.tensors[name].flatten_all().unwrap().to_vec1().unwrap()
    }

    fn rows(&self, name: &str) -> Vec<Vec<f32>> {
        self.tensors[name].to_vec2().unwrap()
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
}

/// `max |a - e| <= rtol * max |e|`, per compared vector.
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

fn assert_rows_close(actual: &[Vec<f32>], expected: &[Vec<f32>], rtol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: row counts differ");
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert_close(a, e, rtol, &format!("{what}[{i}]"));
    }
}

#[test]
fn preprocessing_matches_clip_image_processor_on_real_photos() {
    let reference = Reference::load();
    let preprocess = load_preprocess(&clip_dir(), 224).unwrap();
    assert_eq!(preprocess.shortest_edge, 224);
    for name in &reference.images {
        let ours = preprocess.apply(&reference.image(name)).unwrap();
        let theirs = reference.vec1(&format!("pixels.{name}"));
        // PIL's fixed-point bicubic is reproduced bit for bit: the tensors are identical
        // up to float rounding of the normalisation.
        assert_close(&ours, &theirs, 1e-6, name);
    }
}

#[test]
fn image_tower_matches_the_reference_and_batches_equal_singles() {
    let reference = Reference::load();
    let encoder = ClipImageEncoder::load(&clip_dir(), &Device::Cpu).unwrap();
    assert_eq!(encoder.info().id, "tiny-clip");
    assert_eq!(encoder.info().version, "fixture-1");
    let expected = reference.rows("image_embeds");

    // The tower alone, on the reference's pixel tensors, as one batch.
    let pixels = reference.pixels();
    let batch = encoder.embed_pixels(&pixels).unwrap();
    assert_rows_close(&batch, &expected, RTOL, "image embeddings");

    // Batch of N equals N single runs.
    for (i, single) in pixels.iter().enumerate() {
        let alone = encoder.embed_pixels(std::slice::from_ref(single)).unwrap();
        assert_close(&alone[0], &batch[i], 1e-5, "batch vs single");
    }

    // End to end from the PNGs: preprocessing and tower.
    let images: Vec<RgbImage> = reference
        .images
        .iter()
        .map(|n| reference.image(n))
        .collect();
    let refs: Vec<&RgbImage> = images.iter().collect();
    let full = encoder.embed_images(&refs).unwrap();
    assert_rows_close(&full, &expected, RTOL, "image embeddings from PNG");
    for vector in &full {
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not L2-normalised: {norm}");
    }

    // The runners' path: cropped bytes normalised on the device give the same vectors.
    let crops: Vec<RgbImage> = images
        .iter()
        .map(|image| encoder.preprocessor().resize_and_crop(image).unwrap())
        .collect();
    let from_bytes = encoder.embed_crops(&crops).unwrap();
    assert_eq!(
        from_bytes, full,
        "bytes normalised on the host vs f32 input"
    );
    // The GPU's path (bytes looked up by tensor operations), run here on the CPU, builds the
    // same input.
    let on_host = encoder.crops_on_host(&crops).unwrap();
    let on_device = encoder.crops_on_device(&crops).unwrap();
    assert_eq!(on_host.dims(), on_device.dims());
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(flat(&on_host), flat(&on_device));
    let wrong = RgbImage::new(10, 10);
    assert!(encoder.embed_crops(&[wrong]).is_err());
}

#[test]
fn tokenizer_and_text_tower_match_the_reference() {
    let reference = Reference::load();
    let mut encoder = ClipTextEncoder::load(&clip_dir(), &Device::Cpu).unwrap();
    let texts: Vec<&str> = reference.texts.iter().map(String::as_str).collect();

    let ids = encoder.tokenize(&texts).unwrap();
    let expected_ids: Vec<Vec<i64>> = reference.tensors["text_ids"].to_vec2().unwrap();
    for (text, (ours, theirs)) in texts.iter().zip(ids.iter().zip(&expected_ids)) {
        let ours: Vec<i64> = ours.iter().map(|&id| i64::from(id)).collect();
        assert_eq!(&ours, theirs, "token ids of {text:?}");
        assert_eq!(ours.len(), 77);
    }

    let expected = reference.rows("text_embeds");
    let batch = encoder.embed_text(&texts).unwrap();
    assert_rows_close(&batch, &expected, RTOL, "text embeddings");
    for (i, text) in texts.iter().enumerate() {
        let alone = encoder.embed_text(&[text]).unwrap();
        assert_close(&alone[0], &batch[i], 1e-5, "text batch vs single");
    }
    assert!(encoder.embed_text(&[]).unwrap().is_empty());
}

#[test]
fn both_towers_load_from_one_folder_and_share_the_model_info() {
    let mut model = ClipModel::load(&clip_dir(), &Device::Cpu).unwrap();
    assert_eq!(model.info(), model.text.info());
    let texts = model.embed_text(&["a photo of a flower"]).unwrap();
    assert_eq!(texts[0].len(), 16);
}

#[test]
fn aesthetic_mlp_matches_the_reference_from_safetensors_and_pth() {
    let reference = Reference::load();
    let dir = fixtures().join("tiny-aesthetic");
    for path in [
        dir.clone(),
        dir.join("model.safetensors"),
        dir.join("model.pth"),
    ] {
        let mlp = AestheticMlp::load(&path, &Device::Cpu).unwrap();
        assert_eq!(mlp.widths(), [16, 64, 32, 16, 8, 1]);
        let what = path.display().to_string();
        // Unnormalised random inputs: the MLP normalises them first, as the reference does.
        let scores = mlp.score(&reference.rows("mlp_inputs")).unwrap();
        assert_close(&scores, &reference.vec1("mlp_scores"), RTOL, &what);
        let scores = mlp.score(&reference.rows("image_embeds")).unwrap();
        assert_close(&scores, &reference.vec1("aesthetic_scores"), RTOL, &what);
    }
}

fn input<'a>(path: &'a str, tiers: &'a [(u32, Arc<RgbImage>)], id: i64) -> ImageInput<'a> {
    ImageInput {
        image_id: id,
        path,
        tiers,
    }
}

#[test]
fn runners_produce_result_rows_matching_the_reference() {
    let reference = Reference::load();
    let batch = BatchConfig::new(8, std::time::Duration::from_secs(60));
    let mut embedding = embedding_runner(&clip_dir(), &Device::Cpu, batch).unwrap();
    let mut aesthetic = aesthetic_runner(
        &clip_dir(),
        &fixtures().join("tiny-aesthetic"),
        &Device::Cpu,
        batch,
    )
    .unwrap();
    assert_eq!(embedding.module(), imgd_clip::EMBEDDING);
    assert_eq!(aesthetic.module(), imgd_clip::AESTHETIC);
    assert_eq!(embedding.model_name(), "tiny-clip");

    let tiers: Vec<Vec<(u32, Arc<RgbImage>)>> = reference
        .images
        .iter()
        .map(|name| vec![(448, Arc::new(reference.image(name)))])
        .collect();
    for (i, tier) in tiers.iter().enumerate() {
        let key = JobKey {
            image_id: i as i64,
            job_id: 100 + i as i64,
        };
        embedding
            .submit(key, &input("x.jpg", tier, i as i64))
            .unwrap();
        aesthetic
            .submit(key, &input("x.jpg", tier, i as i64))
            .unwrap();
    }
    // An image without pixels fails alone, at submit.
    let empty = vec![(448, Arc::new(RgbImage::new(0, 0)))];
    let key = JobKey {
        image_id: 9,
        job_id: 9,
    };
    assert!(embedding.submit(key, &input("e.jpg", &empty, 9)).is_err());
    assert!(aesthetic.submit(key, &input("n.jpg", &[], 9)).is_err());
    assert_eq!(embedding.pending(), reference.images.len());

    let expected = reference.rows("image_embeds");
    let rows = embedding.run(CloseReason::Draining);
    assert_eq!(rows.len(), expected.len());
    for (i, (key, row)) in rows.into_iter().enumerate() {
        assert_eq!(key.image_id, i as i64);
        let row = row.unwrap();
        assert_eq!(row.module, imgd_clip::EMBEDDING);
        assert_eq!(row.model_id.as_deref(), Some("tiny-clip"));
        assert_eq!(row.model_version.as_deref(), Some("fixture-1"));
        let column = |name: &str| {
            row.columns
                .iter()
                .find(|(n, _)| *n == name)
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(column("dim"), SqlValue::Integer(16));
        let SqlValue::Blob(blob) = column("vector") else {
            panic!("vector is not a blob")
        };
        assert_close(
            &vector_from_blob(&blob).unwrap(),
            &expected[i],
            RTOL,
            "row vector",
        );
    }

    let scores = reference.vec1("aesthetic_scores");
    let rows = aesthetic.run(CloseReason::Draining);
    assert_eq!(rows.len(), scores.len());
    for (i, (_, row)) in rows.into_iter().enumerate() {
        let row = row.unwrap();
        assert_eq!(row.model_id.as_deref(), Some("tiny-aesthetic"));
        assert_eq!(
            row.model_version.as_deref(),
            Some("fixture-1+tiny-clip@fixture-1")
        );
        let raw = row.data["raw"].as_f64().unwrap() as f32;
        assert_close(&[raw], &[scores[i]], RTOL, "aesthetic raw score");
        assert_eq!(
            row.columns,
            vec![("score", SqlValue::Real(f64::from(stored_score(raw))))]
        );
    }
}

#[test]
fn model_info_falls_back_to_the_folder_name_and_a_weights_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("my-clip");
    std::fs::create_dir(&dir).unwrap();
    for file in [
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
    ] {
        std::fs::copy(clip_dir().join(file), dir.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(clip_dir().join("config.json")).unwrap())
            .unwrap();
    let object = config.as_object_mut().unwrap();
    object.remove("imgd_model_id");
    object.remove("imgd_model_version");
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();

    let encoder = ClipImageEncoder::load(&dir, &Device::Cpu).unwrap();
    let info = encoder.info().clone();
    assert_eq!(info.id, "my-clip");
    assert!(
        info.version.starts_with("fp-") && info.version.len() == 19,
        "{info:?}"
    );
    // Stable for the same bytes, different for other weights.
    let again = ModelInfo::resolve(&dir, &dir.join("model.safetensors"), None).unwrap();
    assert_eq!(again, info);
    let mut bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(dir.join("model.safetensors"), bytes).unwrap();
    let changed = ModelInfo::resolve(&dir, &dir.join("model.safetensors"), None).unwrap();
    assert_ne!(changed.version, info.version);

    // A missing file is named in the error.
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = ClipTextEncoder::load(&dir, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("tokenizer.json"), "{err}");
}

#[test]
fn an_aesthetic_mlp_of_another_width_than_the_clip_is_refused() {
    use candle_nn::{VarBuilder, VarMap};
    use imgd_clip::aesthetic::REFERENCE_WIDTHS;
    use imgd_clip::runner::AestheticScorer;

    // The reference MLP (768-d input) over the tiny CLIP (16-d vectors).
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
    for (i, prefix) in ["layers.0", "layers.2", "layers.4", "layers.6", "layers.7"]
        .iter()
        .enumerate()
    {
        candle_nn::linear(REFERENCE_WIDTHS[i], REFERENCE_WIDTHS[i + 1], vb.pp(*prefix)).unwrap();
    }
    let tensors = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
        .collect();
    let mlp = AestheticMlp::from_tensors(tensors, &Device::Cpu).unwrap();
    let encoder = ClipImageEncoder::load(&clip_dir(), &Device::Cpu).unwrap();
    let Err(err) = AestheticScorer::new(encoder, mlp, "laion-aesthetic".into()) else {
        panic!("a mismatched pair was accepted")
    };
    let text = err.to_string();
    assert!(text.contains("768") && text.contains("ViT-L/14"), "{text}");
}
