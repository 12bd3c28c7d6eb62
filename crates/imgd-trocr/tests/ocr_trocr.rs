//! TrOCR as the OCR module's recogniser: PP-OCR's detector (the registry models that
//! scripts/fetch-registry-models.sh unpacks) finds the lines of the rendered-text fixtures, the
//! tiny random-weight TrOCR of `fixtures/trocr` reads them. Its text is gibberish but
//! deterministic, so the tests compare it with what the recogniser reads on the same crops.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use candle_core::Device;
use image::RgbImage;
use imgd_core::SqlValue;
use imgd_infer::OrtConfig;
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey};
use imgd_ocr::geometry::crop_quad;
use imgd_ocr::{Ocr, OcrConfig, default_models_dir};
use imgd_trocr::{TrocrRecognizer, TrocrSettings};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn ppocr() -> PathBuf {
    let dir = default_models_dir();
    assert!(
        dir.join(imgd_ocr::DET_FILE).is_file(),
        "{} has no PP-OCR models: run scripts/fetch-registry-models.sh",
        dir.display()
    );
    dir
}

fn trocr_dir() -> PathBuf {
    repo().join("fixtures/trocr/tiny-trocr")
}

fn images(count: usize) -> Vec<(String, RgbImage)> {
    let dir = repo().join("fixtures/ocr");
    let truth: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    truth
        .into_keys()
        .take(count)
        .map(|name| {
            let image = image::open(dir.join(&name)).unwrap().to_rgb8();
            (name, image)
        })
        .collect()
}

fn recognizer() -> TrocrRecognizer {
    TrocrRecognizer::load_with(&trocr_dir(), &Device::Cpu, TrocrSettings::default()).unwrap()
}

/// TrOCR behind PP-OCR's detector, every line kept (the random model's confidences are low).
fn trocr_ocr() -> Ocr {
    let config = OcrConfig {
        text_score: 0.0,
        ..OcrConfig::default()
    };
    imgd_trocr::runner::ocr(&ppocr(), &OrtConfig::default(), config, recognizer()).unwrap()
}

#[test]
fn the_detectors_lines_are_read_by_trocr() {
    let images = images(4);
    let refs: Vec<&RgbImage> = images.iter().map(|(_, i)| i).collect();
    let mut ppocr = Ocr::load(&ppocr(), &OrtConfig::default(), OcrConfig::default()).unwrap();
    let mut trocr = trocr_ocr();
    assert_eq!(trocr.recognizer_info().kind, "trocr");
    let by_ppocr = ppocr.recognize(&refs).unwrap();
    let by_trocr = trocr.recognize(&refs).unwrap();
    let alone = recognizer();
    let mut lines = 0;
    for ((image, ppocr_lines), trocr_lines) in refs.iter().zip(&by_ppocr).zip(&by_trocr) {
        // Every box PP-OCR reads is a box TrOCR reads (the same detector and crops).
        for line in ppocr_lines {
            assert!(
                trocr_lines.iter().any(|l| l.bbox == line.bbox),
                "{line:?} not in {trocr_lines:?}"
            );
        }
        for line in trocr_lines {
            // The text is what TrOCR reads on that crop (the classifier turned none of these
            // upright fixtures).
            let quad = line.bbox.map(|[x, y]| [x as f32, y as f32]);
            let crop = crop_quad(image, &quad).unwrap();
            let reading = alone.read_images(&[&crop]).unwrap().remove(0);
            assert_eq!(line.text, reading.text);
            assert!((line.confidence - reading.confidence).abs() < 1e-4);
            assert!((0.0..=1.0).contains(&line.confidence));
            lines += 1;
        }
    }
    assert!(lines >= 8, "{lines} lines");
}

#[test]
fn a_batch_of_n_images_equals_n_single_runs() {
    let images = images(4);
    let mut ocr = trocr_ocr();
    let refs: Vec<&RgbImage> = images.iter().map(|(_, i)| i).collect();
    let batched = ocr.recognize(&refs).unwrap();
    for (image, batch_lines) in refs.iter().zip(&batched) {
        let single = ocr.recognize(&[image]).unwrap().remove(0);
        assert_eq!(single.len(), batch_lines.len());
        for (a, b) in single.iter().zip(batch_lines) {
            assert_eq!(a.text, b.text);
            assert_eq!(a.bbox, b.bbox);
            assert!((a.confidence - b.confidence).abs() <= 1e-4);
        }
    }
    assert!(batched.iter().map(Vec::len).sum::<usize>() >= 8);
}

#[test]
fn the_runner_writes_result_ocr_rows_naming_trocr() {
    let images = images(3);
    let (mut runner, encodes) = imgd_trocr::runner(
        &ppocr(),
        &OrtConfig::default(),
        &trocr_dir(),
        &Device::Cpu,
        TrocrSettings::default(),
        BatchConfig::DEFAULT,
    )
    .unwrap();
    assert_eq!(runner.module(), imgd_ocr::OCR);
    assert_eq!(runner.model_name(), "pp-ocrv6-small+tiny-trocr");
    for (id, (name, image)) in images.iter().enumerate() {
        let tiers = vec![(960u32, Arc::new(image.clone()))];
        let input = ImageInput {
            image_id: id as i64,
            path: name,
            tiers: &tiers,
        };
        let key = JobKey {
            image_id: id as i64,
            job_id: id as i64,
        };
        runner.submit(key, &input).unwrap();
    }
    let results = runner.run(CloseReason::Draining);
    assert_eq!(results.len(), 3);
    let mut kept = 0;
    for (_, row) in results {
        let row = row.unwrap();
        assert_eq!(row.model_id.as_deref(), Some("pp-ocrv6-small+tiny-trocr"));
        assert_eq!(
            row.model_version.as_deref(),
            Some("rapidocr-3.10.0+fixture-1")
        );
        assert_eq!(row.data["recognizer"], "trocr");
        let lines = row.data["lines"].as_array().unwrap();
        let text = row
            .columns
            .iter()
            .find(|(name, _)| *name == "text")
            .map(|(_, value)| value.clone());
        let joined: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
        assert_eq!(text, Some(SqlValue::Text(joined.join("\n"))));
        // Lines under the default text score (0.5) are dropped, as PP-OCR's are.
        for line in lines {
            assert!(line["confidence"].as_f64().unwrap() >= 0.5, "{line}");
            kept += 1;
        }
    }
    assert!(kept >= 1);
    assert!(encodes.load(Ordering::Relaxed) >= 6);
}
