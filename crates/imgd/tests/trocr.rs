//! `[models] ocr_recognizer = "trocr"` through the real binary and a real database: PP-OCR's
//! detector (the registry models) finds the lines, the tiny random-weight TrOCR of
//! `fixtures/trocr` reads them. Its text is gibberish but deterministic, so the test compares
//! the rows with what the libraries read on the same pixels.

use std::fs;
use std::path::Path;

use imgd_infer::OrtConfig;

mod common;
use common::{FIXTURES, env};

#[test]
fn ocr_rows_come_from_trocr_when_it_is_the_recognizer() {
    let env = env();
    // PNG: the daemon and this test decode the same pixels (the 880×600 image is its own OCR
    // tier).
    let sign = env.tree.join("sign.png");
    let pixels = image::open(format!("{FIXTURES}/ocr/text_00.jpg"))
        .unwrap()
        .to_rgb8();
    pixels.save(&sign).unwrap();
    let sign = sign.to_str().unwrap().to_string();
    let config = env.dir.path().join("imgd.toml");
    fs::write(&config, "[models]\nocr_recognizer = \"trocr\"\n").unwrap();
    let config = config.to_str().unwrap();
    env.json(&[
        "enqueue",
        "--json",
        "--modules",
        "ocr",
        env.tree.to_str().unwrap(),
    ]);

    // TrOCR selected but not installed: the job waits, and status says why.
    let (ok, _, stderr) = env.run(&["run", "--once", "--metrics-addr", "off", "--config", config]);
    assert!(ok, "{stderr}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE module = 'ocr' AND state = 'queued'"),
        1
    );
    let status = env.json(&["status", "--json", "--config", config]);
    let why = status["waiting"]["ocr"].as_str().unwrap_or_default();
    assert!(
        why.contains("no TrOCR model") && why.contains("imgd models fetch trocr-small-printed"),
        "{status}"
    );

    // Installed where `[models] trocr` points by default: the rows come from TrOCR.
    let installed = env.models.join("trocr-small-printed");
    fs::create_dir_all(&installed).unwrap();
    for entry in fs::read_dir(format!("{FIXTURES}/trocr/tiny-trocr")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), installed.join(entry.file_name())).unwrap();
    }
    let (ok, stdout, stderr) = env.run(&["validate", "--config", config]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("TrOCR from"), "{stdout}");
    let (ok, _, stderr) = env.run(&["run", "--once", "--metrics-addr", "off", "--config", config]);
    assert!(ok, "{stderr}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE module = 'ocr' AND state = 'done'"),
        1
    );
    let shown = env.json(&["show", "--json", &sign]);
    let ocr = &shown["ocr"];
    assert_eq!(ocr["data"]["recognizer"], "trocr", "{shown}");
    assert_eq!(ocr["model_id"], "pp-ocrv6-small+tiny-trocr", "{shown}");
    assert_eq!(ocr["model_version"], "rapidocr-3.10.0+fixture-1", "{shown}");
    let lines = ocr["data"]["lines"].as_array().unwrap();
    assert!(!lines.is_empty(), "{shown}");

    // What the libraries read on the same pixels with the runner's settings.
    let recognizer = imgd_trocr::TrocrRecognizer::load(
        Path::new(&format!("{FIXTURES}/trocr/tiny-trocr")),
        &imgd_trocr::Device::Cpu,
    )
    .unwrap();
    let mut expected = imgd_trocr::runner::ocr(
        &imgd_ocr::default_models_dir(),
        &OrtConfig::default(),
        imgd_ocr::runner_config(),
        recognizer,
    )
    .unwrap();
    let want = expected.recognize(&[&pixels]).unwrap().remove(0);
    assert_eq!(lines.len(), want.len(), "{shown}");
    for (got, want) in lines.iter().zip(&want) {
        assert_eq!(got["text"], want.text.as_str());
        let bbox: Vec<Vec<i64>> = serde_json::from_value(got["box"].clone()).unwrap();
        let want_box: Vec<Vec<i64>> = want
            .bbox
            .iter()
            .map(|p| p.iter().map(|&v| i64::from(v)).collect())
            .collect();
        assert_eq!(bbox, want_box);
        assert!((got["confidence"].as_f64().unwrap() - f64::from(want.confidence)).abs() < 1e-4);
    }
    let joined: Vec<&str> = lines.iter().map(|l| l["text"].as_str().unwrap()).collect();
    assert_eq!(ocr["text"], joined.join("\n"));
}
