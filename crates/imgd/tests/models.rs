//! `imgd models list|fetch|verify` as a user runs them (the registry models are unpacked by
//! scripts/fetch-registry-models.sh, which CI runs through scripts/setup.sh --deps).

use std::process::Command;

fn imgd(args: &[&str], models: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_imgd"))
        .args(args)
        .env("IMGD_MODELS", models)
        .env_remove("IMGD_MANIFEST")
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn list_and_verify_report_registry_models_installed_and_downloads_missing() {
    let models = tempfile::tempdir().unwrap();
    let (code, out, err) = imgd(&["models", "list", "--json"], models.path());
    assert_eq!(code, 0, "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let status = |id: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .unwrap_or_else(|| panic!("no {id} in {out}"))["status"]
            .clone()
    };
    assert_eq!(status("ppocr-rec"), "installed");
    assert_eq!(status("mtcnn-onet"), "installed");
    assert_eq!(status("arcface-r50"), "missing");

    let (code, out, err) = imgd(&["models", "verify", "--json"], models.path());
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = rows.as_array().unwrap();
    let result = |id: &str| {
        rows.iter().find(|r| r["id"] == id).unwrap()["result"]["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(result("ppocr-det"), "ok");
    assert_eq!(result("scrfd-10g"), "missing");

    // A corrupt download is a mismatch and a failing exit code.
    let clip = models.path().join("clip-vit-b32");
    std::fs::create_dir_all(&clip).unwrap();
    std::fs::write(clip.join("config.json"), b"{}").unwrap();
    let (code, out, _) = imgd(&["models", "verify"], models.path());
    assert_eq!(
        code, 0,
        "an unknown digest is unverified, not a failure: {out}"
    );
    assert!(out.contains("unverified"), "{out}");
}

#[test]
fn fetch_of_an_unknown_id_fails_clearly() {
    let models = tempfile::tempdir().unwrap();
    let (code, _, err) = imgd(&["models", "fetch", "no-such-model"], models.path());
    assert_ne!(code, 0);
    assert!(err.contains("no model `no-such-model`"), "{err}");
    // Registry models already unpacked: fetch has nothing to download.
    let (code, out, err) = imgd(&["models", "fetch", "ppocr-cls"], models.path());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("present, verified"), "{out}");
}
