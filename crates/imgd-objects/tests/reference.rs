//! GroundingDINO against the reference implementation, on the tiny random-weight export in
//! fixtures/objects (made by scripts/make-objects-fixture.py): the image processor's tensors,
//! the tokenised prompts, the ONNX outputs for the same batch, and
//! `post_process_grounded_object_detection`'s boxes, scores and labels. ONNX Runtime is the
//! registry's library (scripts/setup.sh).

use std::path::{Path, PathBuf};

use image::RgbImage;
use imgd_infer::OrtConfig;
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey};
use imgd_objects::{GroundingDino, ObjectsConfig, Prepared, postprocess, preprocess};
use safetensors::SafeTensors;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/objects")
}

#[derive(Deserialize)]
struct Reference {
    prompts: Vec<String>,
    text: String,
    input_ids: Vec<i64>,
    images: Vec<String>,
    sizes: Vec<[u32; 2]>,
    box_threshold: f32,
    text_threshold: f32,
    detections: Vec<Vec<ReferenceDetection>>,
}

#[derive(Deserialize)]
struct ReferenceDetection {
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    text_label: String,
}

struct Tensors {
    pixel_values: Vec<f32>,
    pixel_mask: Vec<u8>,
    logits: (Vec<usize>, Vec<f32>),
    pred_boxes: Vec<f32>,
}

fn reference() -> (Reference, Tensors) {
    let json = std::fs::read_to_string(fixtures().join("reference.json")).unwrap();
    let bytes = std::fs::read(fixtures().join("reference.safetensors")).unwrap();
    let tensors = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| {
        let view = tensors.tensor(name).unwrap();
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect::<Vec<f32>>();
        (view.shape().to_vec(), data)
    };
    let tensors = Tensors {
        pixel_values: f32s("pixel_values").1,
        pixel_mask: tensors.tensor("pixel_mask").unwrap().data().to_vec(),
        logits: f32s("logits"),
        pred_boxes: f32s("pred_boxes").1,
    };
    (serde_json::from_str(&json).unwrap(), tensors)
}

fn images(reference: &Reference) -> Vec<RgbImage> {
    reference
        .images
        .iter()
        .map(|name| {
            image::open(fixtures().join("images").join(name))
                .unwrap()
                .to_rgb8()
        })
        .collect()
}

fn config(reference: &Reference) -> ObjectsConfig {
    ObjectsConfig {
        prompts: reference.prompts.clone(),
        text_prompts: vec!["text".into(), "street sign".into()],
        box_threshold: reference.box_threshold,
        text_threshold: reference.text_threshold,
        size: 128,
        ..ObjectsConfig::default()
    }
}

fn model(reference: &Reference) -> GroundingDino {
    GroundingDino::load(
        &fixtures().join("tiny-grounding-dino"),
        &OrtConfig::default(),
        config(reference),
    )
    .unwrap()
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() || y.is_finite())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn preprocessing_matches_the_reference_processor() {
    let (reference, tensors) = reference();
    let mut pixels = Vec::new();
    let mut mask = Vec::new();
    for (image, size) in images(&reference).iter().zip(&reference.sizes) {
        assert_eq!(image.dimensions(), (size[0], size[1]));
        let (image_pixels, image_mask) = preprocess::prepare(image, 128).normalized();
        pixels.extend_from_slice(&image_pixels);
        mask.extend_from_slice(&image_mask);
    }
    assert_eq!(mask, tensors.pixel_mask, "pixel masks");
    let difference = max_difference(&pixels, &tensors.pixel_values);
    assert!(difference < 1e-5, "pixel values differ by {difference}");
}

#[test]
fn prompts_tokenise_as_the_reference_tokenizer() {
    let (reference, _) = reference();
    let model = model(&reference);
    let prompt = model.prompt();
    assert_eq!(prompt.text, reference.text);
    assert_eq!(prompt.input_ids, reference.input_ids);
    // "cat . dog . text . street sign .": the phrase of every token.
    let phrases: Vec<Option<usize>> = prompt.phrase_of_token.clone();
    assert_eq!(
        phrases,
        vec![
            None,
            Some(0),
            None,
            Some(1),
            None,
            Some(2),
            None,
            Some(3),
            Some(3),
            None,
            None
        ]
    );
}

#[test]
fn model_outputs_match_the_reference_run_and_batching_changes_nothing() {
    let (reference, tensors) = reference();
    let mut model = model(&reference);
    let prepared: Vec<Prepared> = images(&reference)
        .iter()
        .map(|image| preprocess::prepare(image, 128))
        .collect();
    let batch: Vec<&Prepared> = prepared.iter().collect();
    let together = model.raw(&batch).unwrap();
    let (shape, logits) = &tensors.logits;
    let per_image = shape[1] * shape[2];
    for (i, raw) in together.iter().enumerate() {
        assert_eq!(raw.tokens, shape[2]);
        let expected = &logits[i * per_image..][..per_image];
        let difference = max_difference(&raw.logits, expected);
        assert!(
            difference < 1e-3,
            "image {i}: logits differ by {difference}"
        );
        let boxes = &tensors.pred_boxes[i * shape[1] * 4..][..shape[1] * 4];
        let difference = max_difference(&raw.boxes, boxes);
        assert!(difference < 1e-4, "image {i}: boxes differ by {difference}");
        let alone = model.raw(&[&prepared[i]]).unwrap().remove(0);
        let logits_difference = max_difference(&alone.logits, &raw.logits);
        let boxes_difference = max_difference(&alone.boxes, &raw.boxes);
        assert!(
            logits_difference < 1e-4,
            "logits differ by {logits_difference}"
        );
        assert!(
            boxes_difference < 1e-5,
            "boxes differ by {boxes_difference}"
        );
    }
}

#[test]
fn fixed_shapes_pad_the_batch_with_blank_images_and_change_nothing() {
    // What `onnx_cuda` runs: one session per input shape, batches padded to powers of two.
    let (reference, _) = reference();
    let mut plain = model(&reference);
    let mut fixed = GroundingDino::load(
        &fixtures().join("tiny-grounding-dino"),
        &OrtConfig {
            fixed_shapes: true,
            ..OrtConfig::default()
        },
        config(&reference),
    )
    .unwrap();
    let images = images(&reference);
    let mut prepared: Vec<Prepared> = images
        .iter()
        .map(|image| preprocess::prepare(image, 128))
        .collect();
    // Three images: a batch of 4 with one blank row.
    while prepared.len() < 3 {
        prepared.push(preprocess::prepare(&images[0], 128));
    }
    prepared.truncate(3);
    let batch: Vec<&Prepared> = prepared.iter().collect();
    let want = plain.raw(&batch).unwrap();
    let got = fixed.raw(&batch).unwrap();
    assert_eq!(got.len(), 3);
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.tokens, g.tokens);
        let logits = max_difference(&w.logits, &g.logits);
        let boxes = max_difference(&w.boxes, &g.boxes);
        assert!(logits < 1e-4 && boxes < 1e-5, "{logits} {boxes}");
    }
}

#[test]
fn post_processing_agrees_with_the_reference() {
    let (reference, tensors) = reference();
    let model = model(&reference);
    let prompt = model.prompt();
    let (shape, logits) = &tensors.logits;
    let (queries, tokens) = (shape[1], shape[2]);
    let thresholds = postprocess::Thresholds {
        box_threshold: reference.box_threshold,
        text_threshold: reference.text_threshold,
        nms_iou: 0.5,
    };
    let mut labelled = 0;
    for (i, expected) in reference.detections.iter().enumerate() {
        let logits = &logits[i * queries * tokens..][..queries * tokens];
        let boxes = &tensors.pred_boxes[i * queries * 4..][..queries * 4];
        let [width, height] = reference.sizes[i];
        // Every box the reference keeps, in query order; imgd keeps those with a phrase.
        let mut ours = postprocess::decode(logits, boxes, tokens, prompt, &thresholds).into_iter();
        let mut next = ours.next();
        for want in expected {
            let words: Vec<&str> = want.text_label.split_whitespace().collect();
            let has_phrase = prompt
                .phrases
                .iter()
                .any(|p| p.split_whitespace().any(|w| words.contains(&w)));
            if !has_phrase {
                continue;
            }
            let got = next
                .take()
                .expect("a detection for every labelled reference box");
            assert!(
                (got.score - want.score).abs() < 1e-5,
                "{} vs {}",
                got.score,
                want.score
            );
            let scaled = [
                got.bbox[0] * width as f32,
                got.bbox[1] * height as f32,
                got.bbox[2] * width as f32,
                got.bbox[3] * height as f32,
            ];
            for (g, w) in scaled.iter().zip(want.bbox) {
                assert!((g - w).abs() < 1e-3, "box {scaled:?} vs {:?}", want.bbox);
            }
            // The phrase's best token passed the text threshold: the reference's label has it.
            assert!(
                got.label
                    .split_whitespace()
                    .any(|word| words.contains(&word)),
                "label `{}` not in the reference's `{}`",
                got.label,
                want.text_label
            );
            labelled += 1;
            next = ours.next();
        }
        assert!(next.is_none(), "a detection the reference does not have");
    }
    assert!(labelled >= 10, "only {labelled} labelled boxes compared");
}

#[test]
fn the_runner_writes_labels_and_has_text() {
    let (reference, _) = reference();
    let images = images(&reference);
    let (mut runner, _, version) = imgd_objects::runner(
        &fixtures().join("tiny-grounding-dino"),
        &OrtConfig::default(),
        config(&reference),
        BatchConfig::DEFAULT,
    )
    .unwrap();
    for (i, image) in images.iter().enumerate() {
        let tiers = [(800, std::sync::Arc::new(image.clone()))];
        let input = ImageInput {
            image_id: i as i64,
            path: "x.png",
            tiers: &tiers,
        };
        runner
            .submit(
                JobKey {
                    image_id: i as i64,
                    job_id: i as i64,
                },
                &input,
            )
            .unwrap();
    }
    let rows = runner.run(CloseReason::Draining);
    assert_eq!(rows.len(), 2);
    let mut model = model(&reference);
    for (key, result) in rows {
        let row = result.unwrap();
        let prepared = preprocess::prepare(&images[key.image_id as usize], 128);
        let want = model.detect(&[&prepared]).unwrap().remove(0);
        assert!(!want.detections.is_empty());
        assert_eq!(
            row.data["detections"].as_array().unwrap().len(),
            want.detections.len()
        );
        let has_text = row
            .columns
            .iter()
            .find(|(name, _)| *name == "has_text")
            .map(|(_, v)| v.clone())
            .unwrap();
        assert_eq!(
            has_text,
            imgd_core::SqlValue::Integer(i64::from(want.has_text))
        );
        let labels = row
            .columns
            .iter()
            .find(|(name, _)| *name == "labels")
            .map(|(_, v)| v.clone())
            .unwrap();
        let imgd_core::SqlValue::Text(labels) = labels else {
            panic!("labels is text")
        };
        for detection in &want.detections {
            assert!(labels.contains(&detection.label));
        }
        assert_eq!(row.model_id.as_deref(), Some("tiny-grounding-dino"));
        assert_eq!(row.model_version.as_deref(), Some(version.as_str()));
    }
    // The version covers the settings: the same ones give the same version, others another.
    assert_eq!(model.info().1, version);
    let stricter = ObjectsConfig {
        box_threshold: 0.9,
        ..config(&reference)
    };
    let other = GroundingDino::load(
        &fixtures().join("tiny-grounding-dino"),
        &OrtConfig::default(),
        stricter,
    )
    .unwrap();
    assert_ne!(other.info().1, version);
    assert!(version.starts_with("fp-"), "{version}");
}

#[test]
fn too_many_prompts_for_the_model_are_a_clear_error() {
    let (reference, _) = reference();
    let config = ObjectsConfig {
        prompts: (0..20).map(|i| format!("cat {i}")).collect(),
        ..config(&reference)
    };
    let Err(err) = GroundingDino::load(
        &fixtures().join("tiny-grounding-dino"),
        &OrtConfig::default(),
        config,
    ) else {
        panic!("20 prompts fit a 32-token model")
    };
    let message = err.to_string();
    assert!(message.contains("more than the model's 32"), "{message}");
    let empty = ObjectsConfig {
        prompts: vec![" . ".into()],
        ..ObjectsConfig::default()
    };
    let Err(err) = GroundingDino::load(
        &fixtures().join("tiny-grounding-dino"),
        &OrtConfig::default(),
        empty,
    ) else {
        panic!("no prompts accepted")
    };
    assert!(err.to_string().contains("no prompts"), "{err}");
}
