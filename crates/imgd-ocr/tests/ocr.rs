//! OCR on rendered text (fixtures/ocr, made by scripts/make-ocr-fixtures.py) with the real
//! PP-OCR models that scripts/fetch-registry-models.sh unpacks (CI: scripts/setup.sh --deps).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use image::RgbImage;
use imgd_core::SqlValue;
use imgd_infer::OrtConfig;
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey};
use imgd_ocr::{Line, Ocr, OcrConfig, default_models_dir};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn models() -> PathBuf {
    let dir = default_models_dir();
    assert!(
        dir.join(imgd_ocr::REC_FILE).is_file(),
        "{} has no PP-OCR models: run scripts/fetch-registry-models.sh",
        dir.display()
    );
    dir
}

fn fixtures() -> Vec<(String, RgbImage, Vec<String>)> {
    let dir = repo().join("fixtures/ocr");
    let truth: BTreeMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("truth.json")).unwrap()).unwrap();
    truth
        .into_iter()
        .map(|(name, lines)| {
            let image = image::open(dir.join(&name)).unwrap().to_rgb8();
            (name, image, lines)
        })
        .collect()
}

fn ocr() -> Ocr {
    Ocr::load(&models(), &OrtConfig::default(), OcrConfig::default()).unwrap()
}

/// Ground-truth lines found exactly (each recognised line used once).
fn exact_matches(truth: &[String], lines: &[Line]) -> usize {
    let mut got: Vec<&str> = lines.iter().map(|l| l.text.trim()).collect();
    truth
        .iter()
        .filter(|want| {
            if let Some(at) = got.iter().position(|g| g == want) {
                got.remove(at);
                true
            } else {
                false
            }
        })
        .count()
}

#[test]
fn at_least_90_percent_of_rendered_lines_come_back_exactly() {
    let fixtures = fixtures();
    assert!(fixtures.len() >= 20);
    let mut ocr = ocr();
    let images: Vec<&RgbImage> = fixtures.iter().map(|(_, image, _)| image).collect();
    let results = ocr.recognize(&images).unwrap();
    let (mut right, mut total) = (0, 0);
    for ((name, _, truth), lines) in fixtures.iter().zip(&results) {
        let found = exact_matches(truth, lines);
        if found < truth.len() {
            let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
            eprintln!("{name}: want {truth:?}, got {texts:?}");
        }
        right += found;
        total += truth.len();
        for line in lines {
            assert!((0.0..=1.0).contains(&line.confidence), "{line:?}");
        }
    }
    let accuracy = right as f64 / total as f64;
    eprintln!("exact lines: {right}/{total} = {accuracy:.3}");
    assert!(accuracy >= 0.9, "{right}/{total} lines exactly right");
}

#[test]
fn a_batch_of_n_images_equals_n_single_runs() {
    let fixtures = fixtures();
    let mut ocr = ocr();
    // Different sizes too, so detector groups and recogniser buckets mix.
    let mut images: Vec<RgbImage> = fixtures
        .iter()
        .take(10)
        .map(|(_, i, _)| i.clone())
        .collect();
    images.push(image::imageops::crop_imm(&images[0], 0, 0, 700, 400).to_image());
    images.push(image::imageops::resize(
        &images[1],
        1200,
        818,
        image::imageops::FilterType::Triangle,
    ));
    let refs: Vec<&RgbImage> = images.iter().collect();
    let batched = ocr.recognize(&refs).unwrap();
    for (image, batch_lines) in images.iter().zip(&batched) {
        let single = ocr.recognize(&[image]).unwrap().remove(0);
        assert_eq!(single.len(), batch_lines.len());
        for (a, b) in single.iter().zip(batch_lines) {
            assert_eq!(a.text, b.text);
            assert_eq!(a.bbox, b.bbox);
            assert!(
                (a.confidence - b.confidence).abs() <= 1e-4,
                "{} vs {}",
                a.confidence,
                b.confidence
            );
        }
    }
    assert!(batched.iter().map(Vec::len).sum::<usize>() > 20);
}

#[test]
fn fixed_shapes_for_the_gpu_read_the_same_lines() {
    // One session per input shape, batches padded to powers of two, coarser recogniser widths:
    // what `onnx_cuda` runs. Run here on the CPU, it must read what the default path reads.
    let fixtures: Vec<_> = fixtures().into_iter().take(12).collect();
    let images: Vec<&RgbImage> = fixtures.iter().map(|(_, image, _)| image).collect();
    let config = OcrConfig {
        use_cls: true,
        ..OcrConfig::default()
    };
    let fixed_ort = OrtConfig {
        fixed_shapes: true,
        ..OrtConfig::default()
    };
    let expected = Ocr::load(&models(), &OrtConfig::default(), config.clone())
        .unwrap()
        .recognize(&images)
        .unwrap();
    let mut fixed = Ocr::load(&models(), &fixed_ort, config).unwrap();
    let got = fixed.recognize(&images).unwrap();
    let (mut same, mut total, mut right) = (0, 0, 0);
    for (((name, _, truth), want), got) in fixtures.iter().zip(&expected).zip(&got) {
        // The detector's maps are per row: padding the batch changes no box.
        let boxes = |lines: &[Line]| lines.iter().map(|l| l.bbox).collect::<Vec<_>>();
        assert_eq!(boxes(want), boxes(got), "{name}");
        for (a, b) in want.iter().zip(got) {
            total += 1;
            if a.text == b.text {
                same += 1;
            } else {
                eprintln!(
                    "{name}: {:?} with fixed shapes, {:?} without",
                    b.text, a.text
                );
            }
        }
        right += exact_matches(truth, got);
    }
    assert!(total > 20);
    // Wider zero padding can move a recogniser that mixes the whole line (SVTR) on a rare
    // crop; nearly every line reads the same.
    assert!(same * 100 >= total * 95, "{same}/{total} lines the same");
    let lines: usize = fixtures.iter().map(|(_, _, truth)| truth.len()).sum();
    assert!(
        right * 10 >= lines * 9,
        "{right}/{lines} exact with fixed shapes"
    );
}

#[test]
fn an_image_without_text_gives_no_lines_and_tiny_images_work() {
    let mut ocr = ocr();
    let blank = RgbImage::from_pixel(640, 480, image::Rgb([128, 140, 150]));
    let tiny = RgbImage::from_pixel(3, 2, image::Rgb([0, 0, 0]));
    let results = ocr.recognize(&[&blank, &tiny]).unwrap();
    assert_eq!(results, vec![Vec::new(), Vec::new()]);
    assert!(ocr.recognize(&[]).unwrap().is_empty());
}

#[test]
fn upside_down_text_is_turned_by_the_classifier() {
    let fixtures = fixtures();
    let (_, image, truth) = &fixtures[1];
    let rotated = image::imageops::rotate180(image);
    let mut ocr = ocr();
    let lines = ocr.recognize(&[&rotated]).unwrap().remove(0);
    let found = exact_matches(truth, &lines);
    assert!(
        found * 2 >= truth.len(),
        "{found}/{} lines: {lines:?}",
        truth.len()
    );
}

#[test]
fn the_runner_produces_result_ocr_rows_with_the_migrations_columns() {
    let fixtures = fixtures();
    let mut runner =
        imgd_ocr::runner(&models(), &OrtConfig::default(), BatchConfig::DEFAULT).unwrap();
    assert_eq!(runner.module(), imgd_ocr::OCR);
    for (id, (name, image, _)) in fixtures.iter().take(3).enumerate() {
        let tiers = vec![(960u32, Arc::new(image.clone()))];
        let input = ImageInput {
            image_id: id as i64,
            path: name,
            tiers: &tiers,
        };
        let key = JobKey {
            image_id: id as i64,
            job_id: 100 + id as i64,
        };
        runner.submit(key, &input).unwrap();
    }
    assert_eq!(runner.pending(), 3);
    let results = runner.run(CloseReason::Draining);
    assert_eq!(results.len(), 3);

    let schema = std::fs::read_to_string(repo().join("migrations/0001_init.sql")).unwrap();
    let table = &schema[schema.find("CREATE TABLE result_ocr").unwrap()..];
    let table = &table[..table.find(");").unwrap()];
    for ((key, row), (_, _, truth)) in results.into_iter().zip(&fixtures) {
        let row = row.unwrap();
        assert!(key.job_id >= 100);
        assert_eq!(row.module, imgd_ocr::OCR);
        for (column, _) in &row.columns {
            assert!(
                table.contains(&format!("\n    {column} ")),
                "no column {column}"
            );
        }
        let text = match &row.columns[0] {
            ("text", SqlValue::Text(text)) => text.clone(),
            other => panic!("{other:?}"),
        };
        let count = truth
            .iter()
            .filter(|t| text.lines().any(|l| l == t.as_str()))
            .count();
        assert!(count * 10 >= truth.len() * 8, "{text:?} vs {truth:?}");
        let lines = row.data["lines"].as_array().unwrap();
        assert_eq!(
            row.columns[1],
            ("line_count", SqlValue::Integer(lines.len() as i64))
        );
        assert_eq!(lines[0]["box"].as_array().unwrap().len(), 4);
        assert!(lines[0]["confidence"].as_f64().unwrap() > 0.5);
        assert_eq!(row.data["recognizer"], "ppocr");
        assert_eq!(row.model_id.as_deref(), Some(imgd_ocr::MODEL_ID));
        assert_eq!(row.data["width"], 880);
    }
}

/// The detector's input is made on the decode threads (the runner's preparer); the rows must
/// be the ones the inference thread gets when it makes that input itself.
#[test]
fn detector_inputs_prepared_on_another_thread_read_the_same_lines() {
    let fixtures = fixtures();
    let mut runner =
        imgd_ocr::runner(&models(), &OrtConfig::default(), BatchConfig::DEFAULT).unwrap();
    let prepare = runner
        .preparer()
        .expect("the OCR runner prepares its inputs");
    let tiers: Vec<Vec<(u32, Arc<RgbImage>)>> = fixtures
        .iter()
        .take(4)
        .map(|(_, image, _)| vec![(960u32, Arc::new(image.clone()))])
        .collect();
    let mut rows = Vec::new();
    for prepared_elsewhere in [false, true] {
        for (id, tiers) in tiers.iter().enumerate() {
            let input = ImageInput {
                image_id: id as i64,
                path: "text.png",
                tiers,
            };
            let key = JobKey {
                image_id: id as i64,
                job_id: id as i64,
            };
            if prepared_elsewhere {
                let made =
                    std::thread::scope(|s| s.spawn(|| prepare(&input)).join().unwrap()).unwrap();
                // The tier and the detector's f32 planes (at most 960 px on the long side,
                // both sides multiples of 32).
                let (w, h) = (tiers[0].1.width() as u64, tiers[0].1.height() as u64);
                assert!(made.bytes() > w * h * 3, "{} bytes", made.bytes());
                runner.submit_prepared(key, made).unwrap();
            } else {
                runner.submit(key, &input).unwrap();
            }
        }
        let results = runner.run(CloseReason::Draining);
        rows.push(
            results
                .into_iter()
                .map(|(key, row)| (key, row.unwrap().data))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(rows[0], rows[1]);
    assert!(
        rows[0]
            .iter()
            .all(|(_, data)| !data["lines"].as_array().unwrap().is_empty())
    );
}
