//! `imgd run` end to end, through the real binary on real photos and a real database: results,
//! bad inputs, failure isolation, parallelism, graceful stop, crash safety and the metrics
//! endpoint. Tests that need the fake model are compiled with `--features fake-model`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Daemon, free_port, http_get, signal, wait_exit};

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/photos");
const DECODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/decode");

struct Env {
    dir: tempfile::TempDir,
    db: PathBuf,
    tree: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("imgd.db");
    let tree = dir.path().join("photos");
    fs::create_dir_all(&tree).unwrap();
    let tree = fs::canonicalize(&tree).unwrap();
    Env { dir, db, tree }
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgd"));
        cmd.arg("--db")
            .arg(&self.db)
            .args(args)
            .env_remove("IMGD_FAKE_MODEL");
        cmd
    }

    fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cmd(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn json(&self, args: &[&str]) -> Value {
        let (ok, stdout, stderr) = self.run(args);
        assert!(ok, "imgd {args:?} failed: {stderr}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    fn config(&self, text: &str) -> String {
        let path = self.dir.path().join("imgd.toml");
        fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_string()
    }

    fn add(&self, source: &str, name: &str) -> PathBuf {
        let to = self.tree.join(name);
        fs::copy(source, &to).unwrap();
        to
    }

    fn count(&self, sql: &str) -> i64 {
        let conn = rusqlite::Connection::open(&self.db).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }
}

fn photo(name: &str) -> String {
    format!("{PHOTOS}/{name}")
}

#[test]
fn real_photos_run_to_completion_with_their_exif_and_one_decode_each() {
    let env = env();
    for name in [
        "flower.jpg",
        "xmp_test.jpg",
        "hopper.jpg",
        "pil_sample_cmyk.jpg",
    ] {
        env.add(&photo(name), name);
    }
    env.add(&photo("hopper_orientation_6.jpg"), "rotated.jpg");
    let tree = env.tree.to_str().unwrap();
    env.json(&["enqueue", "--json", "--modules", "metadata,technical", tree]);
    let summary = env.json(&["run", "--once", "--json", "--metrics-addr", "off"]);
    assert_eq!(summary["images"], 5);
    assert_eq!(
        summary["decodes"], 5,
        "one pixel decode per image: {summary}"
    );
    assert_eq!(summary["jobs_done"], 10);
    assert_eq!(summary["jobs_failed"], 0);

    let status = env.json(&["status", "--json"]);
    for module in ["metadata", "technical"] {
        assert_eq!(status["modules"][module]["done"], 5, "{status}");
    }
    let flower = env.json(&[
        "show",
        "--json",
        env.tree.join("flower.jpg").to_str().unwrap(),
    ]);
    assert_eq!(flower["metadata"]["make"], "Canon");
    assert_eq!(flower["metadata"]["model"], "Canon PowerShot S40");
    assert_eq!(flower["metadata"]["taken_at"], "2003-12-14T12:01:44");
    assert_eq!(flower["metadata"]["aperture"], 4.9);
    assert_eq!(flower["metadata"]["shutter_s"], 0.002);
    assert!(flower["technical"]["sharpness"].as_f64().unwrap() > 0.0);
    let canon = env.json(&[
        "show",
        "--json",
        env.tree.join("xmp_test.jpg").to_str().unwrap(),
    ]);
    assert_eq!(canon["metadata"]["lens"], "EF-S18-55mm f/3.5-5.6 III");
    assert_eq!(canon["metadata"]["iso"], 100);
    // Orientation 6 swaps the stored axes.
    let rotated = env.json(&[
        "show",
        "--json",
        env.tree.join("rotated.jpg").to_str().unwrap(),
    ]);
    let plain = env.json(&[
        "show",
        "--json",
        env.tree.join("hopper.jpg").to_str().unwrap(),
    ]);
    assert_eq!(rotated["image"]["width"], plain["image"]["height"]);

    // The search index holds camera, dates and folder words.
    let hits = env.json(&["search", "--json", "december", "2003"]);
    assert_eq!(hits.as_array().unwrap().len(), 1);
    assert!(hits[0]["path"].as_str().unwrap().ends_with("flower.jpg"));
    let hits = env.json(&["search", "--json", "rebel"]);
    assert!(hits[0]["path"].as_str().unwrap().ends_with("xmp_test.jpg"));
}

#[test]
fn probe_reports_every_file_and_never_crashes_and_validate_checks_config_and_db() {
    let env = env();
    let good = photo("flower.jpg");
    let bad = format!("{DECODE}/bad/truncated.jpg");
    let bomb = format!("{DECODE}/bad/bomb.png");
    let out = env
        .cmd(&["probe", "--json", &good, &bad, &bomb, "/no/such/file.jpg"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "some files failed");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["ok"], true);
    assert_eq!(lines[0]["format"], "jpeg");
    assert_eq!(lines[0]["width"], 480);
    for failed in &lines[1..] {
        assert_eq!(failed["ok"], false);
        assert!(!failed["error"].as_str().unwrap().is_empty());
    }

    let (ok, stdout, _) = env.run(&["validate"]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("schema version"), "{stdout}");
    let config = env.config(
        "[daemon]
claim_bach = 3
",
    );
    let (ok, stdout, _) = env.run(&["validate", "--config", &config]);
    assert!(!ok);
    assert!(stdout.contains("claim_bach"), "{stdout}");
}

#[test]
fn bad_files_fail_their_own_jobs_with_readable_errors_and_the_run_goes_on() {
    let env = env();
    env.add(&photo("flower.jpg"), "good.jpg");
    env.add(&format!("{DECODE}/png_named.jpg"), "png_named.jpg");
    env.add(&format!("{DECODE}/bad/truncated.jpg"), "truncated.jpg");
    env.add(&format!("{DECODE}/bad/empty.jpg"), "zero.jpg");
    env.add(&format!("{DECODE}/bad/random.jpg"), "random.jpg");
    env.add(&format!("{DECODE}/bad/bomb.png"), "bomb.png");
    env.add(&format!("{DECODE}/bad/bomb.jpg"), "bomb.jpg");
    fs::write(env.tree.join("notes.jpg"), "this is text, not a JPEG").unwrap();
    let doomed = env.add(&photo("hopper.jpg"), "deleted.jpg");
    env.json(&[
        "enqueue",
        "--json",
        "--modules",
        "metadata,technical",
        env.tree.to_str().unwrap(),
    ]);
    fs::remove_file(doomed).unwrap();
    let config = env.config("[daemon]\nmax_attempts = 1\n");
    let (ok, stdout, stderr) = env.run(&[
        "run",
        "--once",
        "--json",
        "--metrics-addr",
        "off",
        "--config",
        &config,
    ]);
    assert!(ok, "the daemon must exit 0 on bad input: {stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(summary["images"], 9);

    let show = |name: &str| env.json(&["show", "--json", env.tree.join(name).to_str().unwrap()]);
    for good in ["good.jpg", "png_named.jpg"] {
        let v = show(good);
        assert_eq!(v["jobs"]["technical"]["state"], "done", "{good}: {v}");
        assert_eq!(v["jobs"]["metadata"]["state"], "done", "{good}: {v}");
    }
    for (bad, words) in [
        ("truncated.jpg", "truncated"),
        ("zero.jpg", "empty"),
        ("random.jpg", "format"),
        ("notes.jpg", "format"),
        ("bomb.png", "limit"),
        ("bomb.jpg", "limit"),
    ] {
        let v = show(bad);
        let job = &v["jobs"]["technical"];
        assert_eq!(job["state"], "failed", "{bad}: {v}");
        let error = job["last_error"].as_str().unwrap().to_lowercase();
        assert!(error.contains(bad), "the error names the file: {error}");
        assert!(error.contains(words), "{bad}: {error}");
    }
    // A file deleted after enqueue fails with the reason, by id since its path is gone.
    let deleted = env.count("SELECT id FROM images WHERE path LIKE '%deleted.jpg'");
    let v = env.json(&["show", "--json", &deleted.to_string()]);
    let error = v["jobs"]["metadata"]["last_error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("no such file"), "{error}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased')"),
        0
    );
}

/// Runs a child until it exits or `limit` passes.
#[cfg(feature = "fake-model")]
mod with_fake_model {
    use super::*;

    fn fake(cmd: &mut Command, fixed_ms: &str, item_ms: &str) {
        cmd.env("IMGD_FAKE_MODEL", "1")
            .env("IMGD_FAKE_MODEL_FIXED_MS", fixed_ms)
            .env("IMGD_FAKE_MODEL_ITEM_MS", item_ms);
    }

    fn tree_of_copies(env: &Env, n: usize) {
        let sources = [
            "flower.jpg",
            "hopper.jpg",
            "flower2.jpg",
            "pil_sample_cmyk.jpg",
        ];
        for i in 0..n {
            let source = sources[i % sources.len()];
            env.add(&photo(source), &format!("img{i:04}.jpg"));
        }
    }

    /// `show --json` without what legitimately differs between two runs.
    fn comparable(mut v: Value) -> Value {
        fn strip(v: &mut Value) {
            if let Value::Object(map) = v {
                map.retain(|k, _| !k.ends_with("_ms") && k != "id");
                map.values_mut().for_each(strip);
            }
        }
        strip(&mut v);
        v
    }

    #[test]
    fn a_poisoned_input_fails_only_its_own_job_and_parallelism_never_changes_results() {
        let mut runs = Vec::new();
        for (threads, batch) in [("1", "1"), ("2", "8")] {
            let env = env();
            tree_of_copies(&env, 11);
            env.add(&photo("hopper.jpg"), "poison.jpg");
            env.add(&photo("hopper.jpg"), "panic.jpg");
            env.json(&[
                "enqueue",
                "--json",
                "--modules",
                "metadata,technical,embedding",
                env.tree.to_str().unwrap(),
            ]);
            let mut cmd = env.cmd(&[
                "run",
                "--once",
                "--json",
                "--metrics-addr",
                "off",
                "--decode-threads",
                threads,
                "--batch-size",
                batch,
                "--config",
                &env.config("[daemon]\nmax_attempts = 1\n"),
            ]);
            fake(&mut cmd, "2", "0.5");
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let poison = env.json(&[
                "show",
                "--json",
                env.tree.join("poison.jpg").to_str().unwrap(),
            ]);
            assert_eq!(poison["jobs"]["embedding"]["state"], "failed");
            assert!(
                poison["jobs"]["embedding"]["last_error"]
                    .as_str()
                    .unwrap()
                    .contains("fake")
            );
            assert_eq!(poison["jobs"]["technical"]["state"], "done");
            let panicked = env.json(&[
                "show",
                "--json",
                env.tree.join("panic.jpg").to_str().unwrap(),
            ]);
            assert_eq!(panicked["jobs"]["embedding"]["state"], "failed");
            let error = panicked["jobs"]["embedding"]["last_error"]
                .as_str()
                .unwrap();
            assert!(error.contains("panicked"), "{error}");
            assert_eq!(
                env.count(
                    "SELECT COUNT(*) FROM jobs WHERE module = 'embedding' AND state = 'done'"
                ),
                11
            );
            let shows: Vec<Value> = (0..11)
                .map(|i| {
                    let path = env.tree.join(format!("img{i:04}.jpg"));
                    let mut v = comparable(env.json(&["show", "--json", path.to_str().unwrap()]));
                    // Paths differ between the two temp trees; compare the rest.
                    v["image"]["path"] = Value::Null;
                    v["image"]["inode"] = Value::Null;
                    v["image"]["mtime_ns"] = Value::Null;
                    v
                })
                .collect();
            runs.push(shows);
        }
        assert_eq!(
            runs[0], runs[1],
            "1 thread × batch 1 and 2 threads × batch 8 differ"
        );
    }

    #[test]
    fn sigterm_on_a_busy_daemon_exits_zero_quickly_and_loses_nothing() {
        let env = env();
        tree_of_copies(&env, 60);
        env.json(&[
            "enqueue",
            "--json",
            "--modules",
            "metadata,technical,embedding",
            env.tree.to_str().unwrap(),
        ]);
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = env.cmd(&["run", "--metrics-addr", &addr, "--batch-size", "4"]);
        fake(&mut cmd, "40", "10");
        let mut child = Daemon(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let until = Instant::now() + Duration::from_secs(20);
        while http_get(&addr, "/healthz").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < until, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        // The models load after the endpoint is up; wait for the first batches.
        let metrics = loop {
            let (status, metrics) = http_get(&addr, "/metrics").unwrap();
            assert_eq!(status, 200);
            if metrics.contains("imgd_infer_batches_total") {
                break metrics;
            }
            assert!(Instant::now() < until, "no batch metrics: {metrics}");
            std::thread::sleep(Duration::from_millis(100));
        };
        let (status, body) = http_get(&addr, "/status").unwrap();
        assert_eq!(status, 200);
        let status_json: Value = serde_json::from_str(&body).unwrap();
        assert!(status_json["modules"]["embedding"].is_object());
        if Path::new("/usr/bin/promtool").exists() {
            let mut promtool = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(Stdio::piped())
                .output_and_input(metrics.as_bytes());
            assert!(promtool.0, "promtool check metrics: {}", promtool.1);
            promtool.1.clear();
        } else {
            eprintln!("promtool not installed: skipping the live promtool check");
        }

        let stopping = Instant::now();
        signal(&child, "TERM");
        let exit = wait_exit(&mut child, Duration::from_secs(30)).expect("no exit within 30 s");
        assert!(exit.success(), "exit status {exit}");
        eprintln!("stopped in {:?}", stopping.elapsed());
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'leased'"),
            0,
            "leases released"
        );

        let mut cmd = env.cmd(&["run", "--once", "--json", "--metrics-addr", "off"]);
        fake(&mut cmd, "1", "0.1");
        assert!(cmd.output().unwrap().status.success());
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            180
        );
        assert_eq!(env.count("SELECT COUNT(*) FROM result_embedding"), 60);
    }

    #[test]
    fn a_slow_model_never_holds_more_images_than_max_in_flight() {
        let env = env();
        tree_of_copies(&env, 40);
        env.json(&[
            "enqueue",
            "--json",
            "--modules",
            "embedding",
            env.tree.to_str().unwrap(),
        ]);
        let config = env.config("[daemon]\nclaim_batch = 16\nmax_in_flight = 3\n");
        let mut cmd = env.cmd(&[
            "run",
            "--once",
            "--metrics-addr",
            "off",
            "--config",
            &config,
        ]);
        fake(&mut cmd, "30", "1");
        let mut child = Daemon(
            cmd.stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let mut most = 0;
        let until = Instant::now() + Duration::from_secs(60);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < until, "the run did not finish");
            most = most.max(env.count("SELECT COUNT(*) FROM jobs WHERE state = 'leased'"));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(child.wait().unwrap().success());
        assert!(most >= 1, "never saw a lease");
        assert!(most <= 3, "{most} images in flight");
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            40
        );
    }

    #[test]
    fn sigkill_at_random_moments_loses_no_job_and_duplicates_no_result() {
        let env = env();
        let images = 300;
        for i in 0..images {
            env.add(&photo("hopper.jpg"), &format!("h{i:04}.jpg"));
        }
        env.json(&[
            "enqueue",
            "--json",
            "--modules",
            "metadata,technical,embedding",
            env.tree.to_str().unwrap(),
        ]);
        let config = env.config("[daemon]\nlease_seconds = 1\nclaim_batch = 8\n[writer]\nflush_images = 16\nflush_ms = 50\n");
        let mut seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("kill-timing seed {seed}");
        for _ in 0..5 {
            let mut cmd = env.cmd(&["run", "--metrics-addr", "off", "--config", &config]);
            fake(&mut cmd, "5", "1");
            let mut child = cmd
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(150 + seed % 700));
            signal(&child, "KILL");
            child.wait().unwrap();
        }
        // Let the dead processes' leases expire, then drain.
        std::thread::sleep(Duration::from_millis(1200));
        let mut cmd = env.cmd(&[
            "run",
            "--once",
            "--json",
            "--metrics-addr",
            "off",
            "--config",
            &config,
        ]);
        fake(&mut cmd, "1", "0.1");
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            images * 3
        );
        for table in ["result_metadata", "result_technical", "result_embedding"] {
            assert_eq!(
                env.count(&format!("SELECT COUNT(*) FROM {table}")),
                images,
                "{table}"
            );
        }
        assert_eq!(env.count("SELECT COUNT(*) FROM search_fts"), images);
        let conn = rusqlite::Connection::open(&env.db).unwrap();
        let verdict: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(verdict, "ok");
    }

    trait OutputAndInput {
        fn output_and_input(&mut self, input: &[u8]) -> (bool, String);
    }

    impl OutputAndInput for Command {
        fn output_and_input(&mut self, input: &[u8]) -> (bool, String) {
            let mut child = self
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(input).unwrap();
            let out = child.wait_with_output().unwrap();
            (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        }
    }
}
