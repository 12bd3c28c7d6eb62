//! `imgd enqueue`, `status`, `retry`, `pause`, `search` and `show` through the real binary on
//! real files and a real database.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

mod common;
use common::TestDb;

struct Env {
    dir: tempfile::TempDir,
    db: TestDb,
    tree: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new(dir.path().join("state/imgd.db"));
    let tree = dir.path().join("Pictures");
    fs::create_dir_all(&tree).unwrap();
    Env {
        db,
        tree: fs::canonicalize(&tree).unwrap(),
        dir,
    }
}

fn imgd(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imgd"))
        .arg("--db")
        .arg(env.db.arg())
        .args(args)
        // No fetched model weights: what a model module waits for is predictable.
        .env("IMGD_MODELS", env.dir.path().join("models"))
        .env_remove("IMGD_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn imgd_json(env: &Env, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = imgd(env, args);
    assert!(ok, "imgd {args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

fn enqueue(env: &Env, extra: &[&str]) -> Value {
    let tree = env.tree.to_str().unwrap().to_string();
    let mut args = vec!["enqueue", "--json", tree.as_str()];
    args.extend_from_slice(extra);
    imgd_json(env, &args)
}

/// A tree of `folders` × 12 files: 8 images with mixed-case extensions, 4 other files.
fn make_tree(root: &Path, folders: usize) -> (usize, usize) {
    let images = [
        "a.jpg", "b.JPG", "c.jpeg", "d.png", "e.CR2", "f.dng", "g.heic", "h.TiF",
    ];
    let others = ["notes.txt", "sidecar.xmp", "video.mp4", "noextension"];
    for f in 0..folders {
        let dir = root.join(format!("{}/{:03}", 2000 + f % 5, f));
        fs::create_dir_all(&dir).unwrap();
        for name in images.iter().chain(others.iter()) {
            fs::write(dir.join(name), format!("{f}/{name}")).unwrap();
        }
    }
    (folders * images.len(), folders * others.len())
}

fn count(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing or not an integer in {v}"))
}

#[test]
fn enqueue_registers_images_and_a_rescan_of_an_unchanged_tree_changes_nothing() {
    let env = env();
    let (images, others) = make_tree(&env.tree, 25);
    let first = enqueue(&env, &["--modules", "metadata,technical"]);
    assert_eq!(count(&first, "new"), images as u64);
    assert_eq!(count(&first, "skipped"), others as u64);
    assert_eq!(count(&first, "changed"), 0);
    assert_eq!(count(&first, "errors"), 0);

    let status = imgd_json(&env, &["status", "--json"]);
    assert_eq!(status["modules"]["metadata"]["queued"], images as u64);
    assert_eq!(status["modules"]["technical"]["queued"], images as u64);
    assert_eq!(status["modules"]["embedding"]["queued"], 0);
    assert_eq!(status["images"]["total"], images as u64);
    for state in ["queued", "leased", "done", "failed"] {
        assert!(status["modules"]["ocr"][state].is_u64());
    }

    let again = enqueue(&env, &["--modules", "metadata,technical"]);
    assert_eq!(count(&again, "new"), 0);
    assert_eq!(count(&again, "changed"), 0);
    assert_eq!(count(&again, "unchanged"), images as u64);
    assert_eq!(count(&again, "missing"), 0);

    // Touch 10 files: exactly 10 changed, their jobs re-queued.
    let later = SystemTime::now() + Duration::from_secs(5);
    let mut touched = 0;
    for entry in walk(&env.tree) {
        if touched < 10 && entry.extension().is_some_and(|e| e == "jpg") {
            fs::File::options()
                .write(true)
                .open(&entry)
                .unwrap()
                .set_modified(later)
                .unwrap();
            touched += 1;
        }
    }
    let third = enqueue(&env, &["--modules", "metadata,technical"]);
    assert_eq!(count(&third, "changed"), 10);
    assert_eq!(count(&third, "new"), 0);

    // Delete 3: marked missing, and status counts them.
    let mut removed = 0;
    for entry in walk(&env.tree) {
        if removed < 3 && entry.extension().is_some_and(|e| e == "png") {
            fs::remove_file(&entry).unwrap();
            removed += 1;
        }
    }
    let fourth = enqueue(&env, &["--modules", "metadata,technical"]);
    assert_eq!(count(&fourth, "missing"), 3);
    let status = imgd_json(&env, &["status", "--json"]);
    assert_eq!(status["images"]["missing"], 3);
    // A rescan does not count them again.
    assert_eq!(
        count(
            &enqueue(&env, &["--modules", "metadata,technical"]),
            "missing"
        ),
        0
    );

    // Asking for another module queues only that one, for every present image.
    let fifth = enqueue(&env, &["--modules", "embedding"]);
    assert_eq!(count(&fifth, "new"), 0);
    let status = imgd_json(&env, &["status", "--json"]);
    assert_eq!(
        status["modules"]["embedding"]["queued"],
        (images - 3) as u64
    );
    assert!(
        status["waiting"]["embedding"]
            .as_str()
            .unwrap()
            .contains("imgd models fetch clip-vit-b32"),
        "{status}"
    );
}

fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn symlink_loops_and_unreadable_folders_are_reported_not_fatal() {
    let env = env();
    make_tree(&env.tree, 2);
    std::os::unix::fs::symlink(&env.tree, env.tree.join("2000/000/loop")).unwrap();
    let locked = env.tree.join("locked");
    fs::create_dir(&locked).unwrap();
    fs::write(locked.join("x.jpg"), "x").unwrap();
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
    // root can read anything; only expect the error where permissions hold.
    let permissions_hold = fs::read_dir(&locked).is_err();

    let tree = env.tree.to_str().unwrap().to_string();
    let (ok, stdout, _) = imgd(&env, &["enqueue", "--json", &tree]);
    fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // The problems are reported and the rest registered; the exit status says so.
    assert!(!ok, "enqueue exits 1 after errors");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(count(&report, "new"), 16 + u64::from(!permissions_hold));
    let expected_errors = 1 + u64::from(permissions_hold);
    assert_eq!(count(&report, "errors"), expected_errors, "{report}");
    let problems = report["problems"].to_string();
    assert!(problems.to_lowercase().contains("loop"), "{problems}");
}

#[test]
fn hashing_reports_identical_content_under_different_paths() {
    let env = env();
    fs::write(env.tree.join("one.jpg"), b"same bytes").unwrap();
    fs::write(env.tree.join("two.JPG"), b"same bytes").unwrap();
    fs::write(env.tree.join("three.png"), b"other bytes").unwrap();
    let report = enqueue(&env, &["--hash"]);
    assert_eq!(count(&report, "new"), 3);
    let groups = report["duplicates"].as_array().unwrap();
    assert_eq!(groups.len(), 1);
    let group: Vec<&str> = groups[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(
        group[0].ends_with("one.jpg") && group[1].ends_with("two.JPG"),
        "{group:?}"
    );
}

/// `sha256sum`'s digest of a file.
fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn sha256_is_recorded_as_sha256sum_computes_it_and_never_outlives_the_content() {
    let env = env();
    let photos = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/photos");
    for name in ["flower.jpg", "hopper.jpg"] {
        fs::copy(photos.join(name), env.tree.join(name)).unwrap();
    }
    let tree = env.tree.to_str().unwrap();
    let flower = env.tree.join("flower.jpg");
    let shown = |path: &Path| imgd_json(&env, &["show", "--json", path.to_str().unwrap()]);

    // `--hash PATH`: the path is not taken for the flag's value; BLAKE3 only.
    imgd_json(
        &env,
        &["enqueue", "--json", "--hash", tree, "--modules", "metadata"],
    );
    let image = &shown(&flower)["image"];
    assert_eq!(image["content_hash"].as_str().unwrap().len(), 64);
    assert!(image["sha256"].is_null(), "{image}");

    // `--hash sha256`: the unchanged files get their SHA-256 too.
    let report = imgd_json(&env, &["enqueue", "--json", "--hash", "sha256", tree]);
    assert_eq!(count(&report, "unchanged"), 2);
    for name in ["flower.jpg", "hopper.jpg"] {
        let path = env.tree.join(name);
        assert_eq!(shown(&path)["image"]["sha256"], sha256sum(&path).as_str());
    }
    let (ok, text, _) = imgd(&env, &["show", flower.to_str().unwrap()]);
    assert!(ok && text.contains(&sha256sum(&flower)), "{text}");

    // The file changes and is scanned without hashing: the old content's hashes are gone.
    let mut bytes = fs::read(&flower).unwrap();
    bytes.extend_from_slice(b"appended");
    fs::write(&flower, &bytes).unwrap();
    let report = imgd_json(&env, &["enqueue", "--json", tree]);
    assert_eq!(count(&report, "changed"), 1);
    let image = &shown(&flower)["image"];
    assert!(
        image["sha256"].is_null() && image["content_hash"].is_null(),
        "{image}"
    );
    imgd_json(&env, &["enqueue", "--json", "--hash=sha256", tree]);
    assert_eq!(
        shown(&flower)["image"]["sha256"],
        sha256sum(&flower).as_str()
    );
}

#[test]
fn search_show_retry_and_pause_work_on_a_fresh_queue() {
    let env = env();
    let album = env.tree.join("Holidays Lisbon");
    fs::create_dir_all(&album).unwrap();
    fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/photos/flower.jpg"
        ),
        album.join("IMG_0042.jpg"),
    )
    .unwrap();
    enqueue(&env, &["--modules", "metadata"]);

    let (ok, stdout, stderr) = imgd(&env, &["search", "--json", "lisbon"]);
    assert!(ok, "{stderr}");
    let hits: Value = serde_json::from_str(&stdout).unwrap();
    // Search rows are written once an image's modules are done; nothing ran yet.
    assert_eq!(hits.as_array().unwrap().len(), 0);
    // FTS syntax is plain text, never an error.
    assert!(imgd(&env, &["search", "\"unbalanced (* OR"]).0);

    let path = album.join("IMG_0042.jpg");
    let shown = imgd_json(&env, &["show", "--json", path.to_str().unwrap()]);
    assert_eq!(shown["jobs"]["metadata"]["state"], "queued");
    assert_eq!(shown["image"]["format"], "jpeg");
    let id = shown["image"]["id"].as_i64().unwrap().to_string();
    let by_id = imgd_json(&env, &["show", "--json", &id]);
    assert_eq!(by_id["image"]["path"], shown["image"]["path"]);
    let (ok, _, stderr) = imgd(&env, &["show", "/no/such/file.jpg"]);
    assert!(!ok);
    assert!(stderr.contains("no image"), "{stderr}");

    let (ok, stdout, _) = imgd(&env, &["pause"]);
    assert!(ok && stdout.contains("paused"));
    assert_eq!(imgd_json(&env, &["status", "--json"])["paused"], true);
    assert!(imgd(&env, &["resume"]).0);
    assert_eq!(imgd_json(&env, &["status", "--json"])["paused"], false);

    let retried = imgd_json(&env, &["retry", "--json", "--module", "metadata"]);
    assert_eq!(retried["requeued"], 0);
    let (ok, _, stderr) = imgd(&env, &["retry", "--module", "colour"]);
    assert!(!ok && stderr.contains("unknown module"), "{stderr}");
}

#[test]
fn a_database_from_a_newer_imgd_is_refused_with_a_clear_message() {
    let env = env();
    enqueue(&env, &[]);
    env.db.execute(
        "INSERT INTO schema_version VALUES (999, 'future', 0)",
        imgd_store::params![],
    );
    let (ok, _, stderr) = imgd(&env, &["status"]);
    assert!(!ok);
    assert!(stderr.contains("upgrade imgd"), "{stderr}");
}

/// Regression: `--db postgres://…` created a SQLite database in a folder named `postgres:` under
/// the working directory. A URL of a scheme imgd does not open is an error naming it, without
/// the password, and nothing is created.
#[test]
fn a_database_url_of_another_scheme_is_refused_and_creates_nothing() {
    let env = env();
    for (url, named) in [
        (
            "postgres://imgd:s3cret@db.lan:5432/photos",
            "cannot connect to the PostgreSQL server",
        ),
        ("mysql://root:s3cret@db.lan/photos", "mysql://"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgd"))
            .current_dir(env.dir.path())
            .args(["--db", url, "enqueue"])
            .arg(&env.tree)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains(named), "{stderr}");
        assert!(stderr.contains("db.lan"), "names the host: {stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
    let created: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        created
            .iter()
            .all(|name| name != "postgres:" && name != "mysql:"),
        "{created:?}"
    );
    // A sqlite:// URL is the file it names.
    let db = env.dir.path().join("by-url.db");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_imgd"))
        .args([
            "--db",
            &format!("sqlite://{}", db.display()),
            "status",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.exists());
}
