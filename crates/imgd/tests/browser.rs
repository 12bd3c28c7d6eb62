//! The web page in a real browser: Debian's Chromium, driven by playwright-core
//! (`tests/browser/pages.mjs`), against a daemon bound beyond loopback with a token, over a
//! database filled by a real run over the fixtures (OCR and face detection with the
//! registry-shipped models) while a second run goes on, through a restart of the daemon.
//! `scripts/setup.sh --deps` installs
//! Chromium and the script's npm package.

#![cfg(feature = "fake-model")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{Daemon, env, fixture, free_port, signal, wait_exit, wait_healthy};

const SCRIPT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");

/// The screenshots' folder.
fn output_folder() -> std::path::PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&out).unwrap();
    out
}

#[test]
fn the_web_page_searches_shows_boxes_names_faces_and_follows_a_run_in_chromium() {
    assert!(
        Path::new(SCRIPT_DIR)
            .join("node_modules/playwright-core")
            .is_dir()
            && Path::new("/usr/bin/chromium").exists(),
        "Chromium or playwright-core is missing: run scripts/setup.sh --deps"
    );
    let env = env();
    let sign = env.add(&fixture("ocr/text_00.jpg"), "sign.jpg");
    let portrait = env.add(&fixture("faces/astronaut.jpg"), "portrait.jpg");
    env.add(&fixture("photos/flower.jpg"), "flower.jpg");
    env.enqueue("metadata,technical,ocr,faces,thumbnail");
    env.ok(&["run", "--once", "--metrics-addr", "off"]);
    let id = |path: &str| env.json(&["show", "--json", path])["image"]["id"].to_string();
    let (sign_id, portrait_id) = (id(&sign), id(&portrait));

    // A second run that goes on while the browser watches: copies for the (slow) fake model.
    std::fs::create_dir_all(env.tree.join("more")).unwrap();
    for i in 0..60 {
        env.add(
            &fixture("photos/flower2.jpg"),
            &format!("more/copy{i:02}.jpg"),
        );
    }
    env.enqueue("embedding,thumbnail");
    let port = free_port();
    let token = "browser-test-token-0123456789";
    let start = || {
        Daemon(
            env.cmd(&["run", "--metrics-addr", &format!("0.0.0.0:{port}")])
                .env("IMGD_HTTP_TOKEN", token)
                .env("IMGD_FAKE_MODEL", "1")
                .env("IMGD_FAKE_MODEL_FIXED_MS", "1")
                .env("IMGD_FAKE_MODEL_ITEM_MS", "300")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut daemon = start();
    let base = format!("127.0.0.1:{port}");
    assert!(
        wait_healthy(&base, Duration::from_secs(30)),
        "the daemon did not come up"
    );

    let out = output_folder();
    let mut script = Command::new("node")
        .current_dir(SCRIPT_DIR)
        .args(["pages.mjs", &format!("http://{base}"), token])
        .arg(&out)
        .args([&sign_id, &portrait_id])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/setup.sh --deps installs it)");
    let stderr = script.stderr.take().unwrap();
    let errors = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let mut printed = String::new();
    for line in BufReader::new(script.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "RESTART" {
            // As `systemctl restart` does it; the stopping daemon finishes what it holds, so
            // more work is queued for the new one.
            signal(&daemon, "TERM");
            assert!(wait_exit(&mut daemon, Duration::from_secs(60)).is_some_and(|s| s.success()));
            for i in 0..30 {
                env.add(
                    &fixture("photos/flower2.jpg"),
                    &format!("more/later{i:02}.jpg"),
                );
            }
            env.enqueue("embedding,thumbnail");
            daemon = start();
        }
        printed.push_str(&line);
        printed.push('\n');
    }
    let status = script.wait().unwrap();
    printed.push_str(&errors.join().unwrap());
    assert!(status.success(), "{printed}");
    for page in ["dashboard", "search", "image-text", "image-face", "people"] {
        let shot = out.join(format!("{page}.png"));
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
            "no screenshot {}",
            shot.display()
        );
    }

    // The name given in the page is the one `imgd faces list` shows.
    let listed = env.json(&["faces", "list", "--json"]);
    let names: Vec<&str> = listed["identities"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str())
        .collect();
    assert_eq!(names, ["Eileen Collins"], "{listed}");
    signal(&daemon, "TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(30)).is_some_and(|s| s.success()));
}
