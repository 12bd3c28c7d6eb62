//! The registry-shipped MTCNN on real photos: faces where a person sees them, the same boxes
//! as the reference implementation, alignment of a rotated face, the embedding path, and
//! batches equal to single runs.

mod common;

use std::sync::Arc;

use common::{mtcnn_models, ort, photo, repo};
use image::RgbImage;
use imgd_faces::align::{Affine, align, warp};
use imgd_faces::arcface::ArcFace;
use imgd_faces::{FaceModels, FacesConfig, FacesInput, FacesModel, FacesOutput, Rect};
use imgd_infer::batcher::BatchModel;
use serde_json::Value;

/// Faces measured by hand, [x, y, w, h], looking at each photo on a pixel grid: from the
/// hairline or brow to the chin, cheek to cheek (ears excluded). MTCNN's boxes run taller
/// (forehead), so agreement is judged at IoU ≥ 0.5.
const HAND_CHECKED: &[(&str, &[[f64; 4]])] = &[
    ("astronaut.jpg", &[[178.0, 76.0, 86.0, 92.0]]),
    // Ancelotti (frontal), Zidane (three-quarter profile, shouting).
    (
        "zidane.jpg",
        &[[910.0, 130.0, 132.0, 152.0], [555.0, 285.0, 105.0, 160.0]],
    ),
    // The two men in front of the bus; the two people cut by the frame show no face.
    (
        "bus.jpg",
        &[[113.0, 420.0, 42.0, 50.0], [268.0, 426.0, 37.0, 46.0]],
    ),
    ("hopper.jpg", &[[44.0, 33.0, 38.0, 45.0]]),
];

fn load(name: &str) -> RgbImage {
    let path = match name {
        "hopper.jpg" => repo().join("fixtures/photos/hopper.jpg"),
        "hopper.png" => repo().join("fixtures/decode/hopper.png"),
        _ => return photo(name),
    };
    image::open(path).unwrap().to_rgb8()
}

fn model() -> FacesModel {
    FacesModel::open(&mtcnn_models(), &ort(), &FacesConfig::default()).unwrap()
}

fn reference() -> Value {
    let path = repo().join("fixtures/faces/mtcnn_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
fn the_detector_finds_the_faces_a_person_sees() {
    let mut model = model();
    for (name, expected) in HAND_CHECKED {
        let image = load(name);
        let out = model.analyse(&[&image]).unwrap().remove(0);
        assert_eq!(out.faces.len(), expected.len(), "{name}: {:#?}", out.faces);
        for hand in *expected {
            let hand = Rect::from_xywh(hand[0], hand[1], hand[2], hand[3]);
            let best = out
                .faces
                .iter()
                .map(|face| face.detection.rect.iou(&hand))
                .fold(0.0, f64::max);
            assert!(
                best >= 0.5,
                "{name}: no face overlaps {hand:?} (best IoU {best})"
            );
        }
        for face in &out.faces {
            let d = face.detection;
            assert!(d.score > 0.9, "{name}: {d:?}");
            // The landmarks lie in the box, eyes above the mouth.
            for p in d.landmarks {
                let (x, y) = (f64::from(p[0]), f64::from(p[1]));
                assert!(x > d.rect.x1 && x < d.rect.x2 && y > d.rect.y1 && y < d.rect.y2);
            }
            assert!(d.landmarks[0][1] < d.landmarks[3][1] && d.landmarks[1][1] < d.landmarks[4][1]);
            assert!(
                d.landmarks[0][0] < d.landmarks[1][0],
                "left eye left of right eye"
            );
        }
    }
}

#[test]
fn boxes_and_landmarks_match_the_reference_implementation() {
    let reference = reference();
    let mut model = model();
    for (name, expected) in reference["photos"].as_object().unwrap() {
        let image = load(name);
        let out = model.analyse(&[&image]).unwrap().remove(0);
        let expected = expected["faces"].as_array().unwrap();
        assert_eq!(out.faces.len(), expected.len(), "{name}");
        for e in expected {
            let b = &e["box"];
            let rect = Rect {
                x1: f(&b[0]),
                y1: f(&b[1]),
                x2: f(&b[2]),
                y2: f(&b[3]),
            }
            .clip(f64::from(image.width()), f64::from(image.height()));
            let face = out
                .faces
                .iter()
                .max_by(|a, b| {
                    a.detection
                        .rect
                        .iou(&rect)
                        .total_cmp(&b.detection.rect.iou(&rect))
                })
                .unwrap();
            let d = face.detection;
            if name.ends_with(".png") {
                // The same pixels as the reference saw: the same numbers.
                for (a, b) in [
                    (d.rect.x1, rect.x1),
                    (d.rect.y1, rect.y1),
                    (d.rect.x2, rect.x2),
                    (d.rect.y2, rect.y2),
                ] {
                    assert!((a - b).abs() < 0.01, "{name}: {:?} vs {rect:?}", d.rect);
                }
                assert!(
                    (f64::from(d.score) - f(&e["score"])).abs() < 1e-4,
                    "{name}: {d:?}"
                );
                for (p, q) in d.landmarks.iter().zip(e["landmarks"].as_array().unwrap()) {
                    let (dx, dy) = (f64::from(p[0]) - f(&q[0]), f64::from(p[1]) - f(&q[1]));
                    assert!(dx.hypot(dy) < 0.01, "{name}: landmark {p:?} vs {q}");
                }
                continue;
            }
            // JPEG decoders differ by a few levels (OpenCV's libjpeg-turbo vs. zune-jpeg), which
            // moves boxes by about a pixel: the same faces, not the same digits.
            let iou = d.rect.iou(&rect);
            assert!(iou > 0.9, "{name}: IoU {iou} with {rect:?}: {d:?}");
            assert!((f64::from(d.score) - f(&e["score"])).abs() < 0.01);
            for (p, q) in d.landmarks.iter().zip(e["landmarks"].as_array().unwrap()) {
                let (dx, dy) = (f64::from(p[0]) - f(&q[0]), f64::from(p[1]) - f(&q[1]));
                assert!(dx.hypot(dy) < 2.0, "{name}: landmark {p:?} vs {q}");
            }
        }
    }
}

#[test]
fn the_embedding_path_matches_insightface_preprocessing() {
    // tiny_arcface.onnx has ArcFace's interface and random weights; the reference ran it on
    // InsightFace-style crops (skimage Umeyama + cv2.warpAffine) of the reference landmarks.
    let reference = reference();
    let path = repo().join("fixtures/faces/tiny_arcface.onnx");
    let mut arcface = ArcFace::open(&path, &ort()).unwrap();
    let mut checked = 0;
    for (name, expected) in reference["photos"].as_object().unwrap() {
        let image = load(name);
        for e in expected["faces"].as_array().unwrap() {
            let lm = e["landmarks"].as_array().unwrap();
            let landmarks: [[f32; 2]; 5] =
                std::array::from_fn(|i| [f(&lm[i][0]) as f32, f(&lm[i][1]) as f32]);
            let crop = align(&image, &landmarks).unwrap();
            let got = arcface.embed(&[crop]).unwrap().remove(0);
            let want: Vec<f32> = e["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| f(v) as f32)
                .collect();
            assert_eq!(got.len(), want.len());
            let cos: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
            assert!(cos > 0.995, "{name}: cosine {cos}");
            checked += 1;
        }
    }
    assert_eq!(checked, 10);
}

/// The astronaut rotated by `degrees` about the image centre, on a canvas large enough.
fn rotated(image: &RgbImage, degrees: f64) -> RgbImage {
    let (s, c) = degrees.to_radians().sin_cos();
    let (w, h) = (f64::from(image.width()), f64::from(image.height()));
    let side = (w.hypot(h)).ceil();
    // out = R (in - centre) + side/2; warp wants out -> in.
    let out_from_in = Affine([
        [c, -s, side / 2.0 - (c * w / 2.0 - s * h / 2.0)],
        [s, c, side / 2.0 - (s * w / 2.0 + c * h / 2.0)],
    ]);
    warp(
        image,
        &out_from_in.inverse().unwrap(),
        side as u32,
        side as u32,
    )
}

fn mean_abs_diff(a: &RgbImage, b: &RgbImage) -> f64 {
    a.as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).abs())
        .sum::<f64>()
        / a.as_raw().len() as f64
}

#[test]
fn a_rotated_face_aligns_to_the_same_crop() {
    let mut model = model();
    let upright = photo("astronaut.jpg");
    let tilted = rotated(&upright, 25.0);
    let found = model.analyse(&[&upright, &tilted]).unwrap();
    assert_eq!(found[0].faces.len(), 1);
    assert_eq!(found[1].faces.len(), 1, "the tilted face is found too");
    let a = align(&upright, &found[0].faces[0].detection.landmarks).unwrap();
    let b = align(&tilted, &found[1].faces[0].detection.landmarks).unwrap();
    let same = mean_abs_diff(&a, &b);
    // Another face's crop, for scale.
    let hopper = load("hopper.jpg");
    let other = model.analyse(&[&hopper]).unwrap().remove(0);
    let c = align(&hopper, &other.faces[0].detection.landmarks).unwrap();
    let different = mean_abs_diff(&a, &c);
    assert!(
        same < 12.0 && same * 3.0 < different,
        "rotated vs upright {same}, another face {different}"
    );
}

fn assert_same(single: &FacesOutput, batched: &FacesOutput, what: &str) {
    assert_eq!(single.frame, batched.frame);
    assert_eq!(single.faces.len(), batched.faces.len(), "{what}");
    for (s, b) in single.faces.iter().zip(&batched.faces) {
        let (s_d, b_d) = (s.detection, b.detection);
        for (x, y) in [
            (s_d.rect.x1, b_d.rect.x1),
            (s_d.rect.y1, b_d.rect.y1),
            (s_d.rect.x2, b_d.rect.x2),
            (s_d.rect.y2, b_d.rect.y2),
            (f64::from(s_d.score), f64::from(b_d.score)),
        ] {
            assert!((x - y).abs() <= 1e-4, "{what}: {x} vs {y}");
        }
        for (p, q) in s_d.landmarks.iter().zip(&b_d.landmarks) {
            assert!(
                (p[0] - q[0]).abs() <= 1e-4 && (p[1] - q[1]).abs() <= 1e-4,
                "{what}"
            );
        }
        match (&s.embedding, &b.embedding) {
            (Some(x), Some(y)) => {
                for (u, v) in x.iter().zip(y) {
                    assert!((u - v).abs() <= 1e-4, "{what}: embedding {u} vs {v}");
                }
            }
            (None, None) => {}
            _ => panic!("{what}: embedded in one run only"),
        }
    }
}

#[test]
fn a_batch_gives_the_same_faces_as_single_images() {
    // With the tiny ArcFace, so the embedding batch is covered too.
    let mut models = mtcnn_models();
    models.arcface = Some(repo().join("fixtures/faces/tiny_arcface.onnx"));
    let mut model = FacesModel::open(&models, &ort(), &FacesConfig::default()).unwrap();
    assert_eq!(model.name(), "mtcnn+w600k_r50");
    // Two images of one size share every P-Net call.
    let zidane = photo("zidane.jpg");
    let mirrored = image::imageops::flip_horizontal(&zidane);
    let images: Vec<Arc<RgbImage>> = [
        photo("astronaut.jpg"),
        zidane,
        photo("bus.jpg"),
        mirrored,
        load("hopper.jpg"),
        RgbImage::new(64, 48), // no face
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    // Prepared as the decode threads prepare them: the tier and its pyramid.
    let inputs: Vec<FacesInput> = images
        .iter()
        .map(|image| FacesInput {
            image: Arc::clone(image),
            pyramid: model
                .pyramid_config()
                .map(|config| imgd_faces::mtcnn::pyramid(&config, image)),
        })
        .collect();
    let batched = model.run_batch(&inputs).unwrap();
    assert_eq!(batched.len(), images.len());
    let counts: Vec<usize> = batched.iter().map(|o| o.faces.len()).collect();
    assert_eq!(counts, vec![1, 2, 2, 2, 1, 0]);
    assert!(
        batched[0].faces[0]
            .embedding
            .as_ref()
            .is_some_and(|e| e.len() == 128)
    );
    // Each image alone, its pyramid made on this thread: the same faces.
    for (i, image) in images.iter().enumerate() {
        let single = model.analyse(&[image.as_ref()]).unwrap().remove(0);
        assert_same(&single, &batched[i], &format!("image {i}"));
    }
}

#[test]
fn fixed_shapes_for_the_gpu_find_the_same_faces() {
    // One session per input shape and batches padded with zero rows to powers of two (what
    // `onnx_cuda` runs), here on the CPU: the padding rows must change nothing.
    let mut models = mtcnn_models();
    models.arcface = Some(repo().join("fixtures/faces/tiny_arcface.onnx"));
    let fixed_ort = imgd_infer::OrtConfig {
        fixed_shapes: true,
        ..ort()
    };
    let mut plain = FacesModel::open(&models, &ort(), &FacesConfig::default()).unwrap();
    let mut fixed = FacesModel::open(&models, &fixed_ort, &FacesConfig::default()).unwrap();
    // Three images of one size: P-Net runs 3 rows padded to 4; R-Net, O-Net and ArcFace see
    // candidate counts that are rarely powers of two.
    let zidane = photo("zidane.jpg");
    let images: Vec<Arc<RgbImage>> = [
        image::imageops::flip_horizontal(&zidane),
        zidane,
        image::imageops::flip_vertical(&photo("zidane.jpg")),
        photo("bus.jpg"),
        load("hopper.jpg"),
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    // Inputs without a prepared pyramid: the model makes it itself.
    let inputs: Vec<FacesInput> = images
        .iter()
        .map(|image| FacesInput {
            image: Arc::clone(image),
            pyramid: None,
        })
        .collect();
    let want = plain.run_batch(&inputs).unwrap();
    let got = fixed.run_batch(&inputs).unwrap();
    assert!(want.iter().map(|o| o.faces.len()).sum::<usize>() >= 6);
    for (i, (w, g)) in want.iter().zip(&got).enumerate() {
        assert_same(w, g, &format!("image {i}"));
    }
}

#[test]
fn without_models_the_error_says_what_to_fetch() {
    let models = FaceModels::locate(std::path::Path::new("/nonexistent"));
    let empty = FaceModels {
        mtcnn: None,
        scrfd: None,
        arcface: None,
        ..models
    };
    let error = FacesModel::open(&empty, &ort(), &FacesConfig::default())
        .err()
        .unwrap()
        .to_string();
    assert!(error.contains("fetch-registry-models.sh"), "{error}");
    assert!(error.contains("det_10g.onnx"), "{error}");
}
