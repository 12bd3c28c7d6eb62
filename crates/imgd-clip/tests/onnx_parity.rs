//! CLIP's image tower through ONNX Runtime ([`imgd_clip::onnx`]) against the reference and the
//! candle tower, for the `embedding` and the `aesthetic` modules: the tiny CLIP of `fixtures/clip` with its ONNX export
//! (`tiny-clip-vision.onnx`, `scripts/make-fixtures.py clip-onnx`) copied in as
//! `onnx/vision_model.onnx`, where a user's folder holds it. ONNX Runtime is the registry's
//! (`scripts/setup.sh`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;
use imgd_clip::aesthetic::AestheticMlp;
use imgd_clip::clip::ClipImageEncoder;
use imgd_clip::onnx::{OnnxClipImageEncoder, onnx_export};
use imgd_clip::runner::{AestheticScorer, ImageTower};
use imgd_clip::{AESTHETIC_LOADER, EMBEDDING_LOADER};
use imgd_infer::OrtConfig;
use imgd_infer::batcher::BatchModel;
use imgd_infer::loader::{Availability, LoadContext, ModuleLoader};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clip")
}

/// A copy of the tiny CLIP's folder, with the export at `onnx/vision_model.onnx` when `export`.
fn clip_folder(export: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join("tiny-clip")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    if export {
        std::fs::create_dir(dir.path().join("onnx")).unwrap();
        std::fs::copy(
            fixtures().join("tiny-clip-vision.onnx"),
            dir.path().join("onnx/vision_model.onnx"),
        )
        .unwrap();
    }
    dir
}

/// The reference's images and their expected vectors, in the reference's order.
fn reference() -> (Vec<RgbImage>, Vec<Vec<f32>>) {
    let tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(fixtures().join("reference.safetensors"), &Device::Cpu)
            .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("reference.json")).unwrap())
            .unwrap();
    let images = json["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| {
            image::open(fixtures().join("images").join(name.as_str().unwrap()))
                .unwrap()
                .to_rgb8()
        })
        .collect();
    (images, tensors["image_embeds"].to_vec2().unwrap())
}

fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

#[test]
fn the_onnx_tower_gives_the_references_and_the_candle_towers_vectors() {
    let dir = clip_folder(true);
    let export = onnx_export(dir.path()).expect("the export is found");
    let onnx = OnnxClipImageEncoder::load(dir.path(), &export, &OrtConfig::default()).unwrap();
    let candle = ClipImageEncoder::load(dir.path(), &Device::Cpu).unwrap();
    // The same model id and version: switching engines re-queues nothing.
    assert_eq!(onnx.info(), candle.info());

    let (images, expected) = reference();
    let crops: Vec<RgbImage> = images
        .iter()
        .map(|image| onnx.preprocessor().resize_and_crop(image).unwrap())
        .collect();
    let vectors = onnx.embed_crops(&crops).unwrap();
    let difference = max_difference(&vectors, &expected);
    assert!(difference < 1e-4, "against the reference: {difference}");
    let difference = max_difference(&vectors, &candle.embed_crops(&crops).unwrap());
    assert!(difference < 1e-5, "against candle: {difference}");
    for vector in &vectors {
        let norm: f32 = vector.iter().map(|v| v * v).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not L2-normalised: {norm}");
    }
    // A batch of N equals N single runs.
    for (crop, batched) in crops.iter().zip(&vectors) {
        let alone = onnx.embed_crops(std::slice::from_ref(crop)).unwrap();
        let difference = max_difference(&alone, std::slice::from_ref(batched));
        assert!(difference < 1e-6, "batch vs single: {difference}");
    }
    assert!(onnx.embed_crops(&[]).unwrap().is_empty());
    let wrong = RgbImage::new(10, 10);
    assert!(onnx.embed_crops(&[wrong]).is_err());
}

/// What the embedding loader says and does for the folder `dir` with `[models]` `engine`.
fn context<'a>(keys: &'a toml::Table, sections: &'a toml::Table) -> LoadContext<'a> {
    LoadContext {
        model_keys: keys,
        sections,
        models_dir: std::env::temp_dir(),
        ort: OrtConfig::default(),
        cuda: false,
        gpu_f16: false,
        env: &|_| None,
    }
}

fn keys(dir: &Path, engine: Option<&str>) -> toml::Table {
    let mut keys = toml::Table::new();
    keys.insert(
        "embedding".into(),
        toml::Value::String(dir.to_str().unwrap().into()),
    );
    if let Some(engine) = engine {
        keys.insert(
            "embedding_engine".into(),
            toml::Value::String(engine.into()),
        );
    }
    keys
}

#[test]
fn the_embedding_module_runs_the_export_on_the_cpu_unless_told_otherwise() {
    let sections = toml::Table::new();
    let with_export = clip_folder(true);
    let without = clip_folder(false);
    let described = |dir: &Path, engine: Option<&str>| {
        let keys = keys(dir, engine);
        match EMBEDDING_LOADER.availability(&context(&keys, &sections)) {
            Availability::Installed(text) => text,
            other => panic!("{other:?}"),
        }
    };
    let on_onnx = "CLIP (image tower on ONNX Runtime)";
    assert!(described(with_export.path(), None).starts_with(on_onnx));
    assert!(described(with_export.path(), Some("onnx")).starts_with(on_onnx));
    assert!(described(with_export.path(), Some("candle")).starts_with("CLIP from"));
    assert!(described(without.path(), None).starts_with("CLIP from"));

    // Each engine loads; the runner's version is the folder's either way.
    let batch = imgd_infer::batcher::BatchConfig::new(4, std::time::Duration::ZERO);
    for engine in [None, Some("onnx"), Some("candle")] {
        let keys = keys(with_export.path(), engine);
        let loaded = EMBEDDING_LOADER
            .load(&context(&keys, &sections), batch)
            .unwrap();
        assert_eq!(
            loaded.version,
            Some(("tiny-clip".to_string(), "fixture-1".to_string())),
            "{engine:?}"
        );
    }
    // Asking for ONNX Runtime without an export, or for an engine that does not exist, is
    // refused with the reason.
    let keys_onnx = keys(without.path(), Some("onnx"));
    let Err(err) = EMBEDDING_LOADER.load(&context(&keys_onnx, &sections), batch) else {
        panic!("onnx without an export was accepted")
    };
    assert!(err.contains("no ONNX export"), "{err}");
    let keys_bad = keys(with_export.path(), Some("tensorrt"));
    let Err(err) = EMBEDDING_LOADER.check(&context(&keys_bad, &sections)) else {
        panic!("an unknown engine passed the check")
    };
    assert!(err.contains("expected"), "{err}");
    let Err(err) = EMBEDDING_LOADER.load(&context(&keys_bad, &sections), batch) else {
        panic!("an unknown engine was accepted")
    };
    assert!(err.contains("expected"), "{err}");
    // With `cuda = true`, `auto` leaves the tower to candle (on the GPU).
    let keys_auto = keys(with_export.path(), None);
    let mut on_gpu = context(&keys_auto, &sections);
    on_gpu.cuda = true;
    let Availability::Installed(text) = EMBEDDING_LOADER.availability(&on_gpu) else {
        panic!("not installed")
    };
    assert!(text.starts_with("CLIP from"), "{text}");
}

#[test]
fn the_aesthetic_score_is_the_same_over_either_engines_tower() {
    let dir = clip_folder(true);
    let export = onnx_export(dir.path()).unwrap();
    let mlp_path = fixtures().join("tiny-aesthetic");
    let (images, _) = reference();
    let onnx = OnnxClipImageEncoder::load(dir.path(), &export, &OrtConfig::default()).unwrap();
    let crops: Vec<RgbImage> = images
        .iter()
        .map(|image| onnx.preprocessor().resize_and_crop(image).unwrap())
        .collect();
    let score = |tower: ImageTower| -> Vec<f32> {
        let mlp = AestheticMlp::load(&mlp_path, &Device::Cpu).unwrap();
        let mut scorer = AestheticScorer::new(tower, mlp, "aesthetic".into()).unwrap();
        scorer.run_batch(&crops).unwrap()
    };
    let candle = ClipImageEncoder::load(dir.path(), &Device::Cpu).unwrap();
    let (on_onnx, on_candle) = (score(onnx.into()), score(candle.into()));
    let difference = on_onnx
        .iter()
        .zip(&on_candle)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(difference < 1e-5, "{on_onnx:?} vs {on_candle:?}");

    // The loader says which engine runs the tower.
    let sections = toml::Table::new();
    let mut keys = toml::Table::new();
    keys.insert(
        "aesthetic_clip".into(),
        toml::Value::String(dir.path().to_str().unwrap().into()),
    );
    keys.insert(
        "aesthetic_mlp".into(),
        toml::Value::String(mlp_path.to_str().unwrap().into()),
    );
    let described =
        |keys: &toml::Table| match AESTHETIC_LOADER.availability(&context(keys, &sections)) {
            Availability::Installed(text) => text,
            other => panic!("{other:?}"),
        };
    assert!(described(&keys).contains("over CLIP (image tower on ONNX Runtime)"));
    keys.insert(
        "aesthetic_engine".into(),
        toml::Value::String("candle".into()),
    );
    assert!(described(&keys).contains("over CLIP from"));
}
