//! `imgd run` end to end, through the real binary on real photos and a real database: results,
//! bad inputs, failure isolation, parallelism, graceful stop, crash safety and the metrics
//! endpoint. Tests that need the fake model are compiled with `--features fake-model`.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{
    Daemon, Env, env, free_port, http_get, http_request, signal, wait_exit, wait_healthy,
};

const PHOTOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/photos");
const DECODE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/decode");

/// Starts `cmd` with its output discarded; the child is killed if the test ends first.
fn quiet(cmd: &mut Command) -> Daemon {
    Daemon(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
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
    env.enqueue("metadata,technical");
    fs::remove_file(doomed).unwrap();
    // The default settings (three attempts): errors that cannot change on retry still fail
    // on the first one.
    let (ok, stdout, stderr) = env.run(&["run", "--once", "--json", "--metrics-addr", "off"]);
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
        assert_eq!(
            job["attempts"], 1,
            "{bad}: a permanent error is not retried"
        );
    }
    // Regression: a file deleted after enqueue ended `failed`; it is `missing`, its jobs wait
    // in the queue for it to come back, and the run still ends.
    let deleted = env.count("SELECT id FROM images WHERE path LIKE '%deleted.jpg'");
    let v = env.json(&["show", "--json", &deleted.to_string()]);
    assert_eq!(v["image"]["state"], "missing", "{v}");
    assert_eq!(v["jobs"]["metadata"]["state"], "queued", "{v}");
    assert_eq!(v["jobs"]["metadata"]["attempts"], 0, "{v}");
    assert_eq!(env.json(&["status", "--json"])["images"]["missing"], 1);
    assert_eq!(
        env.count(&format!(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'leased') AND image_id != {deleted}"
        )),
        0
    );
    assert_eq!(
        env.count("SELECT COUNT(DISTINCT image_id) FROM jobs WHERE state = 'failed'"),
        6
    );
}

/// Regression: a FIFO swapped in for a registered JPEG wedged `imgd run --once` for ever
/// (SIGTERM did not stop it), a `/dev/zero` symlink was read until memory ran out, and a 3 GiB
/// sparse file was read whole, three times, before it failed as too large.
#[test]
fn a_fifo_a_device_or_a_huge_sparse_file_fails_at_once_without_retry() {
    let env = env();
    let fifo = env.add(&photo("flower.jpg"), "fifo.jpg");
    let zero = env.add(&photo("flower.jpg"), "zero.jpg");
    let huge = env.add(&photo("flower.jpg"), "huge.jpg");
    env.add(&photo("hopper.jpg"), "fine.jpg");
    env.enqueue("metadata,technical");
    fs::remove_file(&fifo).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    fs::remove_file(&zero).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    fs::File::create(&huge).unwrap().set_len(3 << 30).unwrap();

    let started = Instant::now();
    let mut child = common::Daemon(
        env.cmd(&["run", "--once", "--json", "--metrics-addr", "off"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let exit = wait_exit(&mut child, Duration::from_secs(60)).expect("the run is wedged");
    assert!(exit.success(), "{exit}");
    eprintln!("three hostile files handled in {:?}", started.elapsed());
    for (name, words) in [
        ("fifo.jpg", "a fifo"),
        ("zero.jpg", "a character device"),
        ("huge.jpg", "too large"),
    ] {
        let id = env.count(&format!("SELECT id FROM images WHERE path LIKE '%/{name}'"));
        let v = env.json(&["show", "--json", &id.to_string()]);
        for module in ["metadata", "technical"] {
            let job = &v["jobs"][module];
            assert_eq!(job["state"], "failed", "{name}: {v}");
            assert_eq!(job["attempts"], 1, "{name}: {v}");
            let error = job["last_error"].as_str().unwrap().to_lowercase();
            assert!(error.contains(words), "{name}: {error}");
        }
    }
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
        2
    );
}

/// Regression: a file whose name is not valid UTF-8 could never be registered.
#[test]
fn a_name_that_is_not_utf8_registers_runs_and_shows_escaped() {
    use std::os::unix::ffi::OsStrExt;
    let env = env();
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9-\xff.jpg");
    fs::copy(photo("flower.jpg"), env.tree.join(name)).unwrap();
    let v = env.json(&["enqueue", "--json", env.tree.to_str().unwrap()]);
    assert_eq!(v["new"], 1, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    let (ok, _, stderr) = env.run(&["run", "--once", "--metrics-addr", "off"]);
    assert!(ok, "{stderr}");
    let shown = env.json(&["show", "--json", "1"]);
    let path = shown["image"]["path"].as_str().unwrap();
    assert!(path.ends_with("/caf\\xe9-\\xff.jpg"), "{path}");
    assert_eq!(shown["jobs"]["technical"]["state"], "done", "{shown}");
    assert_eq!(shown["metadata"]["make"], "Canon", "{shown}");
    // A second scan finds the same file unchanged.
    let again = env.json(&["enqueue", "--json", env.tree.to_str().unwrap()]);
    assert_eq!(again["unchanged"], 1, "{again}");
}

/// Regressions: `imgd enqueue` exited 0 after reporting errors, and `imgd status | head`
/// panicked on the broken pipe.
#[test]
fn enqueue_exits_one_after_errors_and_a_closed_pipe_ends_quietly() {
    let env = env();
    env.add(&photo("flower.jpg"), "a.jpg");
    let missing = env.dir.path().join("no-such-folder");
    let out = env
        .cmd(&[
            "enqueue",
            env.tree.to_str().unwrap(),
            missing.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-folder"), "{stderr}");

    // A reader that has gone away: every write to this pipe fails.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    for args in [["status"], ["help"]] {
        let out = env
            .cmd(&args)
            .stdout(writer.try_clone().unwrap())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}

/// Regression: with garbage written into the middle of the database file, `status` and
/// `search` said nothing and `enqueue` wrote rows into it.
#[test]
fn a_corrupt_database_is_refused_with_a_clear_error() {
    let env = env();
    for i in 0..300 {
        env.add(&photo("flower.jpg"), &format!("f{i:03}.jpg"));
    }
    env.json(&["enqueue", "--json", env.tree.to_str().unwrap()]);
    let Some(db) = env.db.sqlite_only("a damaged SQLite file") else {
        return;
    };
    // Checkpoint the WAL into the main file, then damage its middle.
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    drop(conn);
    let len = fs::metadata(db).unwrap().len();
    let mut file = fs::OpenOptions::new().write(true).open(db).unwrap();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(len / 2)).unwrap();
    file.write_all(&vec![0xA5; 16 * 1024]).unwrap();
    drop(file);
    // The first command that meets a damaged page says so; from then on no command reads
    // or writes the file, even where its own pages look whole.
    for args in [
        vec!["status"],
        vec!["search", "flower"],
        vec!["enqueue", env.tree.to_str().unwrap()],
        vec!["run", "--once", "--metrics-addr", "off"],
    ] {
        let (ok, _, stderr) = env.run(&args);
        assert!(!ok, "{args:?} succeeded on a corrupt database");
        assert!(stderr.contains("is corrupt"), "{args:?}: {stderr}");
    }
    let before = fs::read(db).unwrap();
    let (ok, stdout, _) = env.run(&["validate"]);
    assert!(!ok);
    assert!(stdout.contains("integrity"), "{stdout}");
    assert_eq!(fs::read(db).unwrap(), before, "nothing was written");
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

    /// Every `imgd enqueue` is a batch; `imgd status --batch ID` counts that batch's jobs
    /// only: its progress, rate, time left and failures.
    #[test]
    fn each_enqueue_is_a_batch_with_its_own_progress_and_failures() {
        let env = env();
        tree_of_copies(&env, 5);
        let first = env.enqueue("metadata,embedding");
        assert_eq!(first["batch"], 1, "{first}");
        env.add(&photo("hopper.jpg"), "poison.jpg");
        env.add(&photo("flower.jpg"), "late.jpg");
        let second = env.enqueue("metadata,embedding");
        assert_eq!(second["batch"], 2, "{second}");
        // Only the new files are queued by the second batch.
        let batch = env.json(&["status", "--batch", "2", "--json"]);
        assert_eq!(batch["images"], 2, "{batch}");
        assert_eq!(batch["total"]["queued"], 4, "{batch}");
        assert_eq!(batch["roots"][0], env.tree.to_str().unwrap());
        assert!(batch["eta_seconds"].is_null(), "nothing done yet: {batch}");

        let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", "off"]);
        fake(&mut cmd, "1", "0.1");
        assert!(cmd.output().unwrap().status.success());
        let first = env.json(&["status", "--batch", "1", "--json"]);
        assert_eq!(first["total"]["done"], 10, "{first}");
        assert_eq!(first["total"]["failed"], 0, "{first}");
        let second = env.json(&["status", "--batch", "2", "--json"]);
        assert_eq!(second["total"]["done"], 3, "{second}");
        assert_eq!(second["modules"]["embedding"]["failed"], 1, "{second}");
        assert_eq!(second["top_failures"][0]["module"], "embedding", "{second}");
        assert!(
            second["jobs_per_second"].as_f64().unwrap() > 0.0,
            "{second}"
        );
        let (ok, text, _) = env.run(&["status", "--batch", "2"]);
        assert!(ok, "{text}");
        assert!(
            text.contains("4 of 4 finished (3 done, 1 failed)"),
            "{text}"
        );
        let listed = env.json(&["status", "--json"]);
        assert_eq!(listed["batches"][0]["id"], 2, "newest first");
        let (ok, _, stderr) = env.run(&["status", "--batch", "9"]);
        assert!(!ok && stderr.contains("no batch 9"), "{stderr}");

        // The daemon serves the same over HTTP.
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = env.cmd(&["run", "--metrics-addr", &addr]);
        fake(&mut cmd, "1", "0.1");
        let mut child = quiet(&mut cmd);
        let until = Instant::now() + Duration::from_secs(20);
        while http_get(&addr, "/healthz").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < until, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (status, body) = http_get(&addr, "/api/batches").unwrap();
        assert_eq!(status, 200, "{body}");
        let listed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(listed[0]["id"], 2);
        assert_eq!(listed[1]["total"]["done"], 10);
        let (status, body) = http_get(&addr, "/api/batches/2").unwrap();
        assert_eq!(status, 200, "{body}");
        let one: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(one["modules"]["embedding"]["failed"], 1, "{one}");
        for missing in ["/api/batches/9", "/api/batches/x", "/api/nothing"] {
            assert_eq!(http_get(&addr, missing).unwrap().0, 404, "{missing}");
        }
        signal(&child.0, "TERM");
        assert!(wait_exit(&mut child.0, Duration::from_secs(30)).is_some_and(|s| s.success()));
    }

    /// A remote client starts a batch with `POST /api/enqueue` (token required) and follows
    /// it over Server-Sent Events until it is finished: counts rise, the last message says
    /// every job is done, and the stream ends.
    #[test]
    fn an_http_enqueue_is_a_batch_followed_to_its_end_over_server_sent_events() {
        let env = env();
        tree_of_copies(&env, 6);
        let token = "0123456789abcdef-test";
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = env.cmd(&["run", "--metrics-addr", &addr]);
        cmd.env("IMGD_HTTP_TOKEN", token);
        fake(&mut cmd, "1", "150");
        let mut child = quiet(&mut cmd);
        assert!(
            wait_healthy(&addr, Duration::from_secs(20)),
            "the daemon did not come up"
        );
        let body = json!({ "paths": [env.tree], "modules": ["metadata", "embedding"] }).to_string();
        let bearer = format!("Authorization: Bearer {token}");
        let post = |headers: &[&str], body: &str| {
            http_request(&addr, "POST", "/api/enqueue", headers, body.as_bytes()).unwrap()
        };
        assert_eq!(post(&[], &body).0, 401, "no token");
        assert_eq!(
            post(&["Authorization: Bearer wrong-token-000000"], &body).0,
            401
        );
        let (status, _, answer) = post(&[&bearer], r#"{"paths": ["relative/photos"]}"#);
        assert_eq!(status, 400);
        assert!(answer.contains("must be absolute"), "{answer}");
        let (status, _, answer) = post(&[&bearer], r#"{"paths": ["/no/such/folder"]}"#);
        assert!(
            status == 400 && answer.contains("/no/such/folder"),
            "{answer}"
        );
        let (status, _, answer) = post(&[&bearer], "paths=/photos");
        assert!(status == 400 && answer.contains("must be JSON"), "{answer}");

        let (status, _, answer) = post(&[&bearer], &body);
        assert_eq!(status, 202, "{answer}");
        let started: Value = serde_json::from_str(&answer).unwrap();
        let events = started["events"].as_str().unwrap().to_string();
        assert_eq!(events, format!("/api/batches/{}/events", started["batch"]));

        // The stream: read until it ends.
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(stream, "GET {events} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(text.contains("text/event-stream"), "{text}");
        assert!(
            text.contains("event: end"),
            "the stream did not end: {text}"
        );
        let snapshots: Vec<Value> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .filter(|d| *d != "{}")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let done: Vec<i64> = snapshots
            .iter()
            .map(|s| s["total"]["done"].as_i64().unwrap())
            .collect();
        assert!(done.len() >= 3, "the progress was not followed: {done:?}");
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
        let last = snapshots.last().unwrap();
        assert_eq!(last["total"]["done"], 12, "{last}");
        assert_eq!(last["scanning"], false, "{last}");
        assert_eq!(last["scan"]["new"], 6, "{last}");
        assert_eq!(last["images"], 6, "{last}");
        // The CLI sees the same batch.
        let batch = env.json(&["status", "--batch", &started["batch"].to_string(), "--json"]);
        assert_eq!(batch["total"]["done"], 12, "{batch}");
        // The daemon's own status streams too, and stays open.
        let mut status = std::net::TcpStream::connect(&addr).unwrap();
        status
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(status, "GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut first = vec![0u8; 4096];
        let n = status.read(&mut first).unwrap();
        let first = String::from_utf8_lossy(&first[..n]);
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        signal(&child.0, "TERM");
        assert!(wait_exit(&mut child.0, Duration::from_secs(30)).is_some_and(|s| s.success()));
    }

    /// Bound beyond loopback, the daemon refuses to start without a token, and with one
    /// answers 401 to every route but `/metrics` and `/healthz` until it is given.
    #[test]
    fn beyond_loopback_the_daemon_needs_a_token() {
        let env = env();
        let addr = format!("0.0.0.0:{}", free_port());
        let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", &addr]);
        fake(&mut cmd, "1", "1");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(stderr.contains("[http] token"), "{stderr}");

        let token = "0123456789abcdef-test";
        let mut cmd = env.cmd(&["run", "--metrics-addr", &addr]);
        cmd.env("IMGD_HTTP_TOKEN", token);
        fake(&mut cmd, "1", "1");
        let mut child = quiet(&mut cmd);
        let local = addr.replace("0.0.0.0", "127.0.0.1");
        assert!(
            wait_healthy(&local, Duration::from_secs(20)),
            "the daemon did not come up"
        );
        assert_eq!(http_get(&local, "/metrics").unwrap().0, 200);
        for path in ["/status", "/api/batches", "/api/events"] {
            assert_eq!(http_get(&local, path).unwrap().0, 401, "{path}");
        }
        let bearer = format!("Authorization: Bearer {token}");
        let (status, _, body) = http_request(&local, "GET", "/status", &[&bearer], b"").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"queued\""), "{body}");
        signal(&child.0, "TERM");
        assert!(wait_exit(&mut child.0, Duration::from_secs(30)).is_some_and(|s| s.success()));
    }

    /// Every daemon is listed by `imgd status` with its host, pid, state and images: running
    /// while it beats, `died` once a later daemon of its host finds it gone, `stopped` after a
    /// clean end.
    #[test]
    fn status_lists_the_workers_and_how_they_ended() {
        let env = env();
        tree_of_copies(&env, 6);
        env.enqueue("metadata,embedding");
        let mut cmd = env.cmd(&["run", "--metrics-addr", "off"]);
        // Slow enough that it finishes no image before it is killed.
        fake(&mut cmd, "1", "5000");
        let mut killed = quiet(&mut cmd);
        let pid = killed.id() as i64;
        let until = Instant::now() + Duration::from_secs(30);
        let running = loop {
            let status = env.json(&["status", "--json"]);
            let workers = status["workers"].as_array().unwrap().clone();
            if !workers.is_empty() {
                break workers;
            }
            assert!(Instant::now() < until, "no worker listed");
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(running.len(), 1, "{running:?}");
        assert_eq!(running[0]["pid"], pid);
        assert_eq!(running[0]["state"], "running");
        assert!(running[0]["host"].as_str().is_some_and(|h| !h.is_empty()));
        signal(&killed.0, "KILL");
        wait_exit(&mut killed.0, Duration::from_secs(10)).unwrap();

        let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", "off"]);
        fake(&mut cmd, "1", "1");
        assert!(cmd.output().unwrap().status.success());
        let status = env.json(&["status", "--json"]);
        let workers = status["workers"].as_array().unwrap();
        let state_of = |pid: i64| {
            workers
                .iter()
                .find(|w| w["pid"] == pid)
                .map(|w| (w["state"].clone(), w["images"].clone()))
        };
        assert_eq!(state_of(pid).unwrap().0, "died", "{workers:?}");
        let finished: Vec<&Value> = workers.iter().filter(|w| w["pid"] != pid).collect();
        assert_eq!(finished.len(), 1, "{workers:?}");
        assert_eq!(finished[0]["state"], "stopped");
        assert_eq!(finished[0]["images"], 6, "{workers:?}");
        let (ok, text, _) = env.run(&["status"]);
        assert!(ok);
        assert!(
            text.contains(" died ") && text.contains(" stopped "),
            "{text}"
        );
    }

    /// `imgd status` states each module's rate over the last minutes and the time left for
    /// what is queued; a module whose model is missing gets no time, and neither does the
    /// whole queue while it is the only one left.
    #[test]
    fn status_reports_rates_and_the_time_left() {
        let env = env();
        tree_of_copies(&env, 12);
        env.enqueue("metadata,embedding,caption");
        let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", "off"]);
        fake(&mut cmd, "1", "0.1");
        assert!(cmd.output().unwrap().status.success());
        let status = env.json(&["status", "--json"]);
        let throughput = &status["throughput"];
        assert!(
            throughput["images_per_second"].as_f64().unwrap() > 0.0,
            "{throughput}"
        );
        let window = throughput["window_seconds"].as_f64().unwrap();
        assert!((1.0..=300.0).contains(&window), "{throughput}");
        let embedding = &throughput["modules"]["embedding"];
        let rate = embedding["jobs_per_second"].as_f64().unwrap();
        assert!((rate - 12.0 / window).abs() < 1e-6, "{throughput}");
        assert!(
            embedding["eta_seconds"].is_null(),
            "nothing queued: {throughput}"
        );
        // No BLIP installed: the caption jobs wait, with no rate and no time.
        let caption = &throughput["modules"]["caption"];
        assert_eq!(caption["jobs_per_second"], 0.0);
        assert!(caption["eta_seconds"].is_null());
        assert!(throughput["eta_seconds"].is_null(), "{throughput}");

        // More work queued: its time is the queued jobs over the recent rate.
        for i in 12..18 {
            env.add(&photo("flower.jpg"), &format!("img{i:04}.jpg"));
        }
        env.enqueue("embedding");
        let status = env.json(&["status", "--json"]);
        let throughput = &status["throughput"];
        let window = throughput["window_seconds"].as_f64().unwrap();
        let eta = throughput["modules"]["embedding"]["eta_seconds"]
            .as_f64()
            .unwrap();
        assert!(
            (eta - 6.0 / (12.0 / window)).abs() < 1e-3 * eta,
            "{throughput}"
        );
        assert_eq!(throughput["eta_seconds"].as_f64(), Some(eta));
        let (ok, text, _) = env.run(&["status"]);
        assert!(ok && text.contains("images/s over the last"), "{text}");
        assert!(text.contains("jobs/s"), "{text}");
    }

    /// `[xmp] write = true`: the daemon writes each image's sidecar as it finishes, off the
    /// pipeline's threads; a sidecar another program wrote keeps its fields.
    #[test]
    fn the_daemon_writes_each_finished_images_sidecar_when_asked() {
        let env = env();
        tree_of_copies(&env, 6);
        let darktable = env.tree.join("img0001.jpg.xmp");
        fs::write(
            &darktable,
            "<x:xmpmeta xmlns:x=\"adobe:ns:meta/\"><rdf:RDF \
             xmlns:rdf=\"http://www.w3.org/1999/02/22-rdf-syntax-ns#\"><rdf:Description \
             rdf:about=\"\" xmlns:xmp=\"http://ns.adobe.com/xap/1.0/\" xmp:Rating=\"3\"/>\
             </rdf:RDF></x:xmpmeta>",
        )
        .unwrap();
        env.enqueue("metadata,technical,embedding");
        let config = env.config("[xmp]\nwrite = true\nnaming = \"append\"\n");
        let mut cmd = env.cmd(&[
            "run",
            "--once",
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
        for i in 0..6 {
            let sidecar = env.tree.join(format!("img{i:04}.jpg.xmp"));
            let read = Command::new("exiftool")
                .args(["-j", "-G1"])
                .arg(&sidecar)
                .output()
                .expect("exiftool (.ci/run installs it)");
            assert!(read.status.success(), "{}", sidecar.display());
            let tags: Value = serde_json::from_slice(&read.stdout).unwrap();
            let tags = &tags[0];
            // The fake model stands in for CLIP; the technical flags are real results.
            assert_eq!(tags["XMP-imgd:ModelEmbedding"], "fake", "{tags}");
            assert!(tags["XMP-imgd:Blurry"].is_boolean() || tags["XMP-imgd:Blurry"].is_string());
            if i == 1 {
                assert_eq!(
                    tags["XMP-xmp:Rating"], 3,
                    "the other program's rating stays"
                );
            }
        }
        assert!(
            !env.tree.join("img0000.xmp").exists(),
            "named as configured"
        );
    }

    #[test]
    fn a_poisoned_input_fails_only_its_own_job_and_parallelism_never_changes_results() {
        let mut runs = Vec::new();
        for (threads, batch) in [("1", "1"), ("2", "8")] {
            let env = env();
            tree_of_copies(&env, 11);
            env.add(&photo("hopper.jpg"), "poison.jpg");
            env.add(&photo("hopper.jpg"), "panic.jpg");
            env.enqueue("metadata,technical,embedding");
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
        env.enqueue("metadata,technical,embedding");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = env.cmd(&["run", "--metrics-addr", &addr, "--batch-size", "4"]);
        fake(&mut cmd, "40", "10");
        let mut child = quiet(&mut cmd);
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
        env.enqueue("embedding");
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
        let mut child = quiet(&mut cmd);
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

    /// Memory in flight follows the size of the images: with a budget of 16 MiB of decoded
    /// pixels, a slow model never has more images claimed than fit in it (plus the few the
    /// decode threads and their queue hold before their size is known).
    #[test]
    fn a_slow_model_never_holds_more_decoded_pixels_than_the_budget() {
        let env = env();
        for i in 0..200 {
            env.add(&photo("flower.jpg"), &format!("f{i:03}.jpg"));
        }
        env.enqueue("embedding");
        let config = env.config("[decode]\nmemory_mb = 16\n");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = env.cmd(&[
            "run",
            "--once",
            "--metrics-addr",
            &addr,
            "--decode-threads",
            "2",
            "--config",
            &config,
        ]);
        fake(&mut cmd, "200", "1");
        let mut child = quiet(&mut cmd);
        // flower.jpg's 448-px tier: 448 x 336 RGB bytes.
        let per_image = 448 * 336 * 3;
        let budget = 16 << 20;
        let mut most_leased = 0;
        let mut most_bytes = 0;
        let until = Instant::now() + Duration::from_secs(120);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < until, "the run did not finish");
            most_leased = most_leased
                .max(env.count("SELECT COUNT(DISTINCT image_id) FROM jobs WHERE state = 'leased'"));
            if let Some((200, metrics)) = http_get(&addr, "/metrics") {
                let bytes: i64 = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("imgd_decode_pixels_in_flight_bytes "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                most_bytes = most_bytes.max(bytes);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(child.wait().unwrap().success());
        eprintln!("at most {most_leased} images and {most_bytes} bytes of pixels in flight");
        // What the budget allows, plus the overshoot: 2 decode threads, their queue of 4 and
        // one claim of up to 16, claimed before their size was known.
        assert!(
            most_leased >= 10,
            "the budget was never used: {most_leased}"
        );
        assert!(
            most_leased <= budget / per_image + 2 + 4 + 16,
            "{most_leased} images in flight"
        );
        assert!(most_bytes > 0, "the gauge never moved");
        assert!(
            most_bytes <= budget + (2 + 4 + 16) * per_image,
            "{most_bytes} bytes in flight"
        );
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            200
        );
    }

    /// Regression: after a SIGKILL, the dead daemon's leases waited 300 s and `run --once`
    /// right after exited 0 with "0 images" while 1 144 jobs stayed leased; the project's own
    /// crash test hid it with `lease_seconds = 1` and a sleep.
    #[test]
    fn sigkill_at_random_moments_loses_no_job_and_duplicates_no_result() {
        let env = env();
        let images = 300;
        for i in 0..images {
            env.add(&photo("hopper.jpg"), &format!("h{i:04}.jpg"));
        }
        env.enqueue("metadata,technical,embedding");
        // The settings a user runs: leases of 300 s. A restart must not wait for them.
        let config = env.config("[daemon]\nclaim_batch = 8\n");
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
        // Right after the last kill, as systemd's `Restart=on-failure` does.
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
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'"),
            0
        );
        assert_eq!(env.db.store().integrity_check().unwrap(), "ok");
    }

    /// `imgd run --once` with the fake model and a fault armed; returns the exit status, the
    /// time it took and stderr.
    fn run_with_fault(env: &Env, fault: &str) -> (std::process::ExitStatus, Duration, String) {
        let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", "off"]);
        fake(&mut cmd, "5", "1");
        cmd.env("IMGD_FAULT", fault)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = Daemon(cmd.spawn().unwrap());
        let exit = wait_exit(&mut child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("{fault}: still running after 60 s"));
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (exit, started.elapsed(), stderr)
    }

    /// Regression: a stage thread that panicked outside `catch_unwind` left the scheduler
    /// claiming and extending leases for ever, `/healthz` at 200 and `--once` never ending.
    #[test]
    fn a_panic_in_any_stage_ends_the_daemon_non_zero_with_no_lease_left() {
        for (fault, stage) in [
            ("decode", "decode"),
            ("infer-submit", "inference"),
            ("infer-finish", "inference"),
            ("writer-commit", "writer"),
            ("scheduler", "scheduler"),
        ] {
            let env = env();
            tree_of_copies(&env, 20);
            env.enqueue("metadata,embedding");
            let (exit, took, stderr) = run_with_fault(&env, fault);
            assert!(!exit.success(), "{fault}: exit {exit}");
            assert!(
                stderr.contains(&format!("the {stage} stage failed")),
                "{fault}: {stderr}"
            );
            assert!(stderr.contains("injected fault"), "{fault}: {stderr}");
            eprintln!("{fault}: exited {exit} after {took:?}");
            assert_eq!(
                env.count("SELECT COUNT(*) FROM jobs WHERE state = 'leased'"),
                0,
                "{fault}: leases left"
            );
            // Nothing is lost: a restart does everything.
            let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", "off"]);
            fake(&mut cmd, "1", "0.1");
            assert!(cmd.output().unwrap().status.success());
            assert_eq!(
                env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
                40,
                "{fault}"
            );
        }
    }

    /// Regression: every crash counted against every image the dead daemon had claimed, so a
    /// file that killed the daemon on each start took dozens of innocent images down with it.
    #[test]
    fn a_file_that_kills_the_daemon_on_every_start_fails_alone() {
        let env = env();
        tree_of_copies(&env, 40);
        env.add(&photo("hopper.jpg"), "img0017-poison.jpg");
        env.enqueue("metadata,technical,embedding");
        let mut crashes = 0;
        loop {
            let (exit, _, stderr) = run_with_fault(&env, "abort-on:poison");
            if exit.success() {
                break;
            }
            crashes += 1;
            assert!(
                crashes <= 15,
                "still crashing after {crashes} starts: {stderr}"
            );
        }
        assert_eq!(
            crashes, 10,
            "max_lease_expiries deaths, then the file is failed"
        );
        let failed = env.db.strings(
            "SELECT DISTINCT i.path FROM jobs j JOIN images i ON i.id = j.image_id
             WHERE j.state = 'failed'",
        );
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].ends_with("img0017-poison.jpg"));
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            40 * 3
        );
        let poison = env.json(&[
            "show",
            "--json",
            env.tree.join("img0017-poison.jpg").to_str().unwrap(),
        ]);
        let error = poison["jobs"]["technical"]["last_error"].as_str().unwrap();
        assert!(error.contains("the daemon died 10 times"), "{error}");
    }

    /// Regression: `stop_timeout_seconds` was read nowhere; a stop with a slow model drained
    /// every image in flight and overran systemd's `TimeoutStopSec`.
    #[test]
    fn sigterm_honours_stop_timeout_and_releases_the_rest() {
        let env = env();
        tree_of_copies(&env, 40);
        env.enqueue("embedding");
        let config = env.config("[daemon]\nstop_timeout_seconds = 1\n");
        let mut cmd = env.cmd(&["run", "--metrics-addr", "off", "--config", &config]);
        // A slow model: 1.5 s per batch of up to 8 images.
        fake(&mut cmd, "1500", "0");
        let mut child = quiet(&mut cmd);
        let until = Instant::now() + Duration::from_secs(30);
        while env.count("SELECT COUNT(*) FROM jobs WHERE state = 'leased'") == 0 {
            assert!(Instant::now() < until, "nothing was claimed");
            std::thread::sleep(Duration::from_millis(50));
        }
        let stopping = Instant::now();
        signal(&child, "TERM");
        let exit = wait_exit(&mut child, Duration::from_secs(30)).expect("no exit");
        let took = stopping.elapsed();
        assert!(exit.success(), "{exit}");
        eprintln!("stopped in {took:?} with stop_timeout_seconds = 1");
        // The budget, plus at most one batch that was already running and a moment.
        assert!(took < Duration::from_secs(6), "the stop took {took:?}");
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'leased'"),
            0
        );
        assert!(env.count("SELECT COUNT(*) FROM jobs WHERE state = 'queued'") > 0);
        assert_eq!(env.count("SELECT MAX(attempts) FROM jobs"), 0);
        let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", "off"]);
        fake(&mut cmd, "1", "0.1");
        assert!(cmd.output().unwrap().status.success());
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            40
        );
    }

    /// `--once` waits for images a live daemon holds; `--no-wait` reports them and exits 1.
    #[test]
    fn once_waits_for_a_live_daemon_or_reports_it_with_no_wait() {
        let env = env();
        tree_of_copies(&env, 12);
        env.enqueue("embedding");
        let mut cmd = env.cmd(&["run", "--metrics-addr", "off"]);
        fake(&mut cmd, "400", "0");
        let mut holder = quiet(&mut cmd);
        let until = Instant::now() + Duration::from_secs(30);
        while env.count("SELECT COUNT(*) FROM jobs WHERE state = 'queued'") > 0 {
            assert!(
                Instant::now() < until,
                "the first daemon never claimed everything"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut cmd = env.cmd(&["run", "--once", "--no-wait", "--metrics-addr", "off"]);
        fake(&mut cmd, "1", "0");
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if env.count("SELECT COUNT(*) FROM jobs WHERE state = 'leased'") > 0 {
            assert_eq!(out.status.code(), Some(1), "{stderr}");
            assert!(stderr.contains("still leased by other"), "{stderr}");
        }
        // Without --no-wait it waits for the live daemon and ends once all is done.
        let mut cmd = env.cmd(&["run", "--once", "--metrics-addr", "off"]);
        fake(&mut cmd, "1", "0");
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            12
        );
        signal(&holder, "TERM");
        assert!(
            wait_exit(&mut holder, Duration::from_secs(30))
                .unwrap()
                .success()
        );
    }

    /// Regression: one request declaring `Content-Length: 99999999999` aborted the daemon, one
    /// that never sent its declared body blocked `/healthz`, and idle connections exhausted
    /// the descriptors for good.
    #[test]
    fn hostile_http_clients_leave_the_daemon_working_and_answering() {
        use std::io::Read;
        use std::net::TcpStream;
        let env = env();
        tree_of_copies(&env, 30);
        env.enqueue("embedding");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = env.cmd(&["run", "--metrics-addr", &addr]);
        fake(&mut cmd, "50", "5");
        let mut child = quiet(&mut cmd);
        let until = Instant::now() + Duration::from_secs(20);
        while http_get(&addr, "/healthz").is_none_or(|(s, _)| s != 200) {
            assert!(Instant::now() < until, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut huge = TcpStream::connect(&addr).unwrap();
        huge.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        huge.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let _ = huge.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let mut held = TcpStream::connect(&addr).unwrap();
        held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
            .unwrap();
        let idle: Vec<TcpStream> = (0..1000)
            .map(|_| TcpStream::connect(&addr).unwrap())
            .collect();
        let asked = Instant::now();
        let (status, _) = http_get(&addr, "/healthz").expect("/healthz answers");
        assert_eq!(status, 200);
        eprintln!(
            "/healthz answered in {:?} with 1000 idle connections",
            asked.elapsed()
        );
        drop(idle);
        drop(held);
        assert!(child.try_wait().unwrap().is_none(), "the daemon died");
        // And it kept working.
        let until = Instant::now() + Duration::from_secs(60);
        while env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'") < 30 {
            assert!(Instant::now() < until, "the work stopped");
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(&child, "TERM");
        assert!(
            wait_exit(&mut child, Duration::from_secs(30))
                .unwrap()
                .success()
        );
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
