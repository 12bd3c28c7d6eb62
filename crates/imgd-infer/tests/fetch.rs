//! `manifest::fetch` against a real HTTP server on 127.0.0.1 (tiny_http in a thread).

use std::path::Path;
use std::thread::JoinHandle;

use imgd_infer::InferError;
use imgd_infer::manifest::{self, Dirs, FileStatus, Manifest, fetch, sha256_file, verify_file};

/// A fixture of a realistic size (a few hundred KB, several read chunks), deterministic.
fn fixture() -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..300_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Serves `body` at /model.bin and 404 elsewhere, for `requests` requests.
fn serve(body: Vec<u8>, requests: usize) -> (String, JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let address = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        for request in server.incoming_requests().take(requests) {
            let response = if request.url() == "/model.bin" {
                tiny_http::Response::from_data(body.clone()).boxed()
            } else {
                tiny_http::Response::from_string("not here")
                    .with_status_code(404)
                    .boxed()
            };
            request.respond(response).unwrap();
        }
    });
    (address, handle)
}

fn sha256_hex(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, bytes).unwrap();
    sha256_file(&path).unwrap()
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn fetch_downloads_checks_the_digest_and_writes_atomically() {
    let body = fixture();
    let expected = sha256_hex(&body);
    let (address, server) = serve(body.clone(), 4);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("models/sub/model.bin");

    // Right digest: the file appears, complete.
    let got = fetch(
        &format!("{address}/model.bin"),
        &dest,
        Some(&expected),
        false,
    )
    .unwrap();
    assert_eq!(got, expected);
    assert_eq!(std::fs::read(&dest).unwrap(), body);
    assert_eq!(leftovers(dest.parent().unwrap()), vec!["model.bin"]);

    // Wrong digest: an error naming both digests; nothing written, no temporary file left.
    let wrong_dest = dir.path().join("models/sub/wrong.bin");
    let wrong = "0".repeat(64);
    let error = fetch(
        &format!("{address}/model.bin"),
        &wrong_dest,
        Some(&wrong),
        false,
    )
    .unwrap_err();
    match &error {
        InferError::Checksum {
            expected: e,
            actual,
            ..
        } => {
            assert_eq!(e, &wrong);
            assert_eq!(actual, &expected);
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(error.to_string().contains("sha256 mismatch"), "{error}");
    assert!(!wrong_dest.exists());
    assert_eq!(leftovers(dest.parent().unwrap()), vec!["model.bin"]);

    // An unknown digest is accepted and reported.
    let unknown_dest = dir.path().join("unknown.bin");
    let got = fetch(&format!("{address}/model.bin"), &unknown_dest, None, false).unwrap();
    assert_eq!(got, expected);

    // HTTP errors are errors, naming the URL.
    let error = fetch(
        &format!("{address}/missing"),
        &dir.path().join("m"),
        None,
        false,
    )
    .unwrap_err();
    assert!(matches!(error, InferError::Fetch { .. }), "{error:?}");
    assert!(error.to_string().contains("/missing"), "{error}");
    assert!(!dir.path().join("m").exists());
    server.join().unwrap();
}

#[test]
fn fetch_model_then_verify_round_trip_through_a_manifest() {
    let body = fixture();
    let digest = sha256_hex(&body);
    let (address, server) = serve(body.clone(), 1);
    let text = format!(
        r#"schema = 1
[[model]]
id = "tiny"
version = "1"
module = "ocr"
licence = "MIT"
[model.input]
layout = "NCHW"
channels = "RGB"
[[model.files]]
path = "tiny/model.bin"
size = {size}
sha256 = "{digest}"
url = "{address}/model.bin"
[[model]]
id = "shipped"
version = "1"
module = "ocr"
licence = "MIT"
[model.input]
layout = "NCHW"
channels = "RGB"
[[model.files]]
path = "pkg/shipped.onnx"
size = 1
sha256 = "{digest}"
registry = "pypi:pkg==1:pkg/shipped.onnx"
"#,
        size = body.len()
    );
    let manifest = Manifest::parse(&text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dirs = Dirs {
        models: dir.path().join("models"),
        registry: dir.path().join("registry"),
    };
    let tiny = manifest.get("tiny").unwrap();
    let file = &tiny.files[0];
    let path = file.local_path(&dirs);
    assert_eq!(verify_file(&path, file).unwrap(), FileStatus::Missing);

    let fetched = manifest::fetch_model(tiny, &dirs, false).unwrap();
    assert_eq!(fetched.len(), 1);
    assert!(!fetched[0].already_present && fetched[0].verified);
    assert_eq!(verify_file(&path, file).unwrap(), FileStatus::Ok);
    // A second fetch downloads nothing (the server answers only one request).
    let again = manifest::fetch_model(tiny, &dirs, false).unwrap();
    assert!(again[0].already_present);
    server.join().unwrap();

    // A corrupted file is a mismatch.
    std::fs::write(&path, b"corrupt").unwrap();
    assert!(matches!(
        verify_file(&path, file).unwrap(),
        FileStatus::Mismatch { size: 7, .. }
    ));

    // Registry-shipped files are not downloadable: the error says which script to run.
    let error = manifest::fetch_model(manifest.get("shipped").unwrap(), &dirs, false).unwrap_err();
    assert!(
        error.to_string().contains("fetch-registry-models.sh"),
        "{error}"
    );
}

#[test]
fn the_registry_files_on_disk_match_the_builtin_manifest() {
    let manifest = Manifest::builtin();
    let dirs = Dirs::current();
    for model in manifest
        .models
        .iter()
        .filter(|m| m.files[0].from_registry())
    {
        for file in &model.files {
            let path = file.local_path(&dirs);
            let status = verify_file(&path, file).unwrap();
            assert_eq!(
                status,
                FileStatus::Ok,
                "{}: {} (run scripts/fetch-registry-models.sh)",
                model.id,
                path.display()
            );
        }
    }
}
