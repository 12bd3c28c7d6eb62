//! ONNX Runtime loading and sessions, against the real library and a real model that
//! `scripts/fetch-registry-models.sh` unpacks (CI runs it through `scripts/setup.sh --deps`).

use std::path::PathBuf;

use imgd_infer::ndarray::Array4;
use imgd_infer::ort::value::TensorRef;
use imgd_infer::{InferError, OrtConfig, ShapedSessions, init, registry_dir, session};

fn registry_file(relative: &str) -> PathBuf {
    let path = registry_dir().join(relative);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/fetch-registry-models.sh (scripts/setup.sh --deps does)",
        path.display()
    );
    path
}

fn real_library() -> PathBuf {
    registry_file("onnxruntime/libonnxruntime.so.1.31.1")
}

#[test]
fn init_with_a_bogus_path_fails_naming_the_path_and_the_fix() {
    let bogus = PathBuf::from("/nonexistent/imgd-test/libonnxruntime.so.1.31.1");
    let config = OrtConfig {
        dylib: Some(bogus.clone()),
        ..OrtConfig::default()
    };
    let error = init(&config).unwrap_err();
    assert!(matches!(error, InferError::OrtNotFound { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&bogus.display().to_string()), "{message}");
    assert!(message.contains("fetch-registry-models.sh"), "{message}");
    assert!(message.contains("ORT_DYLIB_PATH"), "{message}");
}

#[test]
fn a_file_that_is_not_a_library_fails_to_load_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"definitely not ELF").unwrap();
    let error = init(&OrtConfig {
        dylib: Some(fake.clone()),
        ..OrtConfig::default()
    });
    // Once the real library is loaded (another test), the file is still checked to exist,
    // but the process keeps its library: either outcome names no panic.
    if let Err(error) = error {
        assert!(matches!(error, InferError::OrtLoad { .. }), "{error:?}");
        assert!(error.to_string().contains(&fake.display().to_string()));
    }
}

#[test]
fn init_loads_the_real_library_once() {
    let config = OrtConfig {
        dylib: Some(real_library()),
        ..OrtConfig::default()
    };
    let info = init(&config).unwrap();
    assert_eq!(info.version, "1.31.1");
    assert!(
        info.providers.iter().any(|p| p == "CPUExecutionProvider"),
        "{:?}",
        info.providers
    );
    // Idempotent: the same answer again, also when the library is found by searching.
    assert_eq!(init(&config).unwrap(), info);
    let searched = init(&OrtConfig::default()).unwrap();
    assert_eq!(searched.version, info.version);
}

#[test]
fn a_session_runs_a_real_model() {
    let config = OrtConfig {
        dylib: Some(real_library()),
        intra_threads: 1,
        ..OrtConfig::default()
    };
    // The PP-OCR text-direction classifier: [N, 3, 48, 192] → [N, 2] probabilities.
    let model = registry_file("rapidocr/ch_ppocr_mobile_v2.0_cls_mobile.onnx");
    let mut session = session(&model, &config).unwrap();
    assert_eq!(session.inputs().len(), 1);
    let input = Array4::<f32>::zeros((2, 3, 48, 192));
    let outputs = session
        .run(imgd_infer::ort::inputs![
            TensorRef::from_array_view(&input).unwrap()
        ])
        .unwrap();
    let probabilities = outputs[0].try_extract_array::<f32>().unwrap();
    assert_eq!(probabilities.shape(), &[2, 2]);
    for row in probabilities.rows() {
        assert!((row.sum() - 1.0).abs() < 1e-4, "{row:?}");
    }
}

#[test]
fn a_missing_model_is_a_clear_error() {
    let config = OrtConfig {
        dylib: Some(real_library()),
        ..OrtConfig::default()
    };
    let missing = PathBuf::from("/nonexistent/model.onnx");
    let error = session(&missing, &config).unwrap_err();
    assert!(
        matches!(error, InferError::ModelMissing { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("imgd models fetch"));
}

#[test]
fn cuda_without_the_feature_or_a_gpu_library_is_an_error_not_a_silent_fallback() {
    let config = OrtConfig {
        dylib: Some(real_library()),
        intra_threads: 1,
        cuda: true,
        ..OrtConfig::default()
    };
    let model = registry_file("rapidocr/ch_ppocr_mobile_v2.0_cls_mobile.onnx");
    let info = init(&config).unwrap();
    if info.providers.iter().any(|p| p == "CUDAExecutionProvider") && cfg!(feature = "cuda") {
        return; // a GPU build with a GPU library: nothing to check here.
    }
    let error = session(&model, &config).unwrap_err();
    assert!(matches!(error, InferError::CudaUnavailable(_)), "{error:?}");
}

/// Runs the classifier on zeros of `shape` and returns its probabilities.
fn classify_zeros(sessions: &mut ShapedSessions, shape: [usize; 4]) -> Vec<f32> {
    let input = Array4::<f32>::zeros(shape);
    let session = sessions.for_shape(&shape).unwrap();
    let outputs = session
        .run(imgd_infer::ort::inputs![
            TensorRef::from_array_view(&input).unwrap()
        ])
        .unwrap();
    let (_, data) = outputs[0].try_extract_tensor::<f32>().unwrap();
    data.to_vec()
}

#[test]
fn fixed_shapes_keep_one_session_per_shape_and_close_the_least_recently_used() {
    let model = registry_file("rapidocr/ch_ppocr_mobile_v2.0_cls_mobile.onnx");
    let cpu = OrtConfig {
        dylib: Some(real_library()),
        intra_threads: 1,
        ..OrtConfig::default()
    };
    let fixed = OrtConfig {
        fixed_shapes: true,
        ..cpu.clone()
    };
    let (a, b, c) = ([1, 3, 48, 192], [2, 3, 48, 192], [4, 3, 48, 192]);

    // Without fixed shapes one session runs everything.
    let mut shared = ShapedSessions::with_capacity(&model, &cpu, 2).unwrap();
    let expected_a = classify_zeros(&mut shared, a);
    let expected_c = classify_zeros(&mut shared, c);
    assert_eq!(shared.opened(), 1);
    assert!(shared.shapes().is_empty());
    assert_eq!(shared.padded_batch(3, 16), 3);

    let mut sessions = ShapedSessions::with_capacity(&model, &fixed, 2).unwrap();
    assert_eq!(sessions.padded_batch(3, 16), 4);
    // The session opened at load takes the first shape.
    assert_eq!(classify_zeros(&mut sessions, a), expected_a);
    assert_eq!(sessions.opened(), 1);
    classify_zeros(&mut sessions, b);
    assert_eq!(sessions.opened(), 2);
    // Shape `a` again: its own session, now the most recently used.
    classify_zeros(&mut sessions, a);
    assert_eq!(sessions.opened(), 2);
    assert_eq!(sessions.shapes(), vec![b.to_vec(), a.to_vec()]);
    // A third shape closes `b`, the least recently used, and gives the same answers.
    assert_eq!(classify_zeros(&mut sessions, c), expected_c);
    assert_eq!(sessions.opened(), 3);
    assert_eq!(sessions.shapes(), vec![a.to_vec(), c.to_vec()]);
    assert_eq!(sessions.any().inputs().len(), 1);

    // `open` keeps as many as the configuration says: with one, alternating shapes reopen.
    let one = OrtConfig {
        sessions_per_model: 1,
        ..fixed.clone()
    };
    let mut sessions = ShapedSessions::open(&model, &one).unwrap();
    for shape in [a, b, a] {
        classify_zeros(&mut sessions, shape);
    }
    assert_eq!(sessions.opened(), 3);
    assert_eq!(sessions.shapes(), vec![a.to_vec()]);
}
