//! The real binary on a real PostgreSQL server: the whole job (enqueue, run, status, search,
//! show), connection errors, new work claimed without a poll, several workers on several
//! hosts sharing one queue while one of them is killed, and a server restart in the middle of
//! a run. Tests that need the fake model are compiled with `--features fake-model`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::postgres::{Cluster, Schema, server};
use common::{Daemon, FIXTURES, free_port, signal, wait_exit};
use serde_json::Value;

/// `imgd --db URL ARGS` with no user models and no fake model.
fn imgd(db: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imgd"));
    cmd.arg("--db")
        .arg(db)
        .args(args)
        .env("IMGD_MODELS", std::env::temp_dir().join("imgd-no-models"))
        .env_remove("IMGD_FAKE_MODEL")
        .env_remove("IMGD_CONFIG")
        .env_remove("IMGD_HOST");
    cmd
}

fn json(db: &str, args: &[&str]) -> Value {
    let out = imgd(db, args).output().unwrap();
    assert!(
        out.status.success(),
        "imgd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn photo(name: &str) -> String {
    format!("{FIXTURES}/photos/{name}")
}

/// `n` copies of real JPEGs in `dir`.
fn copies(dir: &Path, n: usize) {
    let sources = ["flower.jpg", "hopper.jpg", "flower2.jpg", "exif_gps.jpg"];
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::copy(
            photo(sources[i % sources.len()]),
            dir.join(format!("img{i:04}.jpg")),
        )
        .unwrap();
    }
}

#[test]
fn connection_errors_name_the_server_never_the_password() {
    let Some(server) = server() else { return };
    let closed = free_port();
    let base = server
        .split('@')
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for (url, expected) in [
        (
            format!("postgres://imgd:s3cret@127.0.0.1:{closed}/photos"),
            format!("127.0.0.1:{closed}"),
        ),
        (
            format!("postgres://no_such_role:s3cret@{base}/postgres"),
            "no_such_role".to_string(),
        ),
        (
            format!("postgres://postgres:s3cret@{base}/no_such_database"),
            "no_such_database".to_string(),
        ),
    ] {
        let started = Instant::now();
        let out = imgd(&url, &["status", "--json"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}");
        assert!(stderr.contains("PostgreSQL"), "{stderr}");
        assert!(stderr.contains(&expected), "names {expected}: {stderr}");
        assert!(!stderr.contains("s3cret"), "{stderr}");
        assert!(stderr.contains("***"), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "a clear error, not a hang"
        );
    }
}

#[test]
fn the_whole_job_runs_on_postgres() {
    let Some(server) = server() else { return };
    let schema = Schema::new(&server);
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("photos");
    std::fs::create_dir_all(&tree).unwrap();
    for name in ["flower.jpg", "hopper.jpg", "exif_gps.jpg", "xmp_test.jpg"] {
        std::fs::copy(photo(name), tree.join(name)).unwrap();
    }
    std::fs::write(tree.join("broken.jpg"), b"\xff\xd8\xff not a whole JPEG").unwrap();
    let tree_text = tree.to_str().unwrap();
    let enqueued = json(
        &schema.url,
        &[
            "enqueue",
            "--json",
            "--modules",
            "metadata,technical,phash",
            tree_text,
        ],
    );
    assert_eq!(enqueued["new"], 5, "{enqueued}");
    let out = imgd(&schema.url, &["run", "--once", "--metrics-addr", "off"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = json(&schema.url, &["status", "--json"]);
    assert_eq!(status["modules"]["metadata"]["done"], 4, "{status}");
    assert_eq!(status["modules"]["technical"]["done"], 4, "{status}");
    assert_eq!(status["modules"]["technical"]["failed"], 1, "{status}");
    assert!(
        status["database"]
            .as_str()
            .unwrap()
            .starts_with("postgres://"),
        "{status}"
    );
    // The worker that ran is listed, ended.
    let workers = status["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{status}");
    assert_eq!(workers[0]["state"], "stopped", "{status}");
    assert_eq!(workers[0]["images"], 5, "{status}");
    // Search: by folder and file name, by camera.
    let hits = json(&schema.url, &["search", "--json", "hopper"]);
    assert_eq!(hits.as_array().map(Vec::len), Some(1), "{hits}");
    assert!(
        hits[0]["path"].as_str().unwrap().ends_with("/hopper.jpg"),
        "{hits}"
    );
    let camera = schema.count("SELECT COUNT(*) FROM result_metadata WHERE make IS NOT NULL");
    assert!(camera >= 1, "EXIF was read");
    // Show by path.
    let shown = json(
        &schema.url,
        &[
            "show",
            "--json",
            tree.join("exif_gps.jpg").to_str().unwrap(),
        ],
    );
    assert_eq!(shown["metadata"]["make"], "Make", "{shown}");
    assert_eq!(shown["jobs"]["technical"]["state"], "done", "{shown}");
    // Enqueue again: nothing new.
    let again = json(&schema.url, &["enqueue", "--json", tree_text]);
    assert_eq!(again["new"], 0, "{again}");
    assert_eq!(again["unchanged"], 5, "{again}");
    // The library copied into a SQLite file is the same library there.
    let status = json(&schema.url, &["status", "--json"]);
    let file = dir.path().join("copy.db");
    let file = file.to_str().unwrap();
    let copied = json(&schema.url, &["db", "copy", &schema.url, file, "--json"]);
    let images = copied
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "images")
        .unwrap();
    assert_eq!(images["destination_rows"], 5, "{copied}");
    let there = json(file, &["status", "--json"]);
    assert_eq!(there["modules"], status["modules"], "{there}");
    let hits = json(file, &["search", "--json", "hopper"]);
    assert_eq!(hits.as_array().map(Vec::len), Some(1), "{hits}");
}

#[cfg(feature = "fake-model")]
mod with_fake_model {
    use super::*;

    fn fake(cmd: &mut Command, fixed_ms: &str, item_ms: &str) {
        cmd.env("IMGD_FAKE_MODEL", "1")
            .env("IMGD_FAKE_MODEL_FIXED_MS", fixed_ms)
            .env("IMGD_FAKE_MODEL_ITEM_MS", item_ms);
    }

    /// Starts a daemon whose log goes to `log`.
    fn spawn(cmd: &mut Command, log: &Path) -> Daemon {
        let file = std::fs::File::create(log).unwrap();
        Daemon(cmd.stdout(Stdio::null()).stderr(file).spawn().unwrap())
    }

    /// The last lines of every daemon log in `dir`, for a failure's message.
    fn logs(dir: &Path) -> String {
        let mut out = String::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                out.push_str(&format!("--- {}\n", path.display()));
                out.push_str(&lines[lines.len().saturating_sub(30)..].join("\n"));
                out.push('\n');
            }
        }
        out
    }

    /// Waits up to `limit` for `done`; the daemons' logs in `dir` explain a timeout.
    fn wait_for(what: &str, limit: Duration, dir: &Path, mut done: impl FnMut() -> bool) {
        let until = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what}\n{}",
                logs(dir)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A daemon waiting for work claims a new file when it is enqueued, not at its next poll:
    /// the enqueue notifies every listening worker.
    #[test]
    fn new_work_is_claimed_without_waiting_for_a_poll() {
        let Some(server) = server() else { return };
        let schema = Schema::new(&server);
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("photos");
        copies(&tree, 1);
        let config = dir.path().join("imgd.toml");
        // A poll an hour apart: only the notification can wake the daemon in time.
        std::fs::write(&config, "[daemon]\npoll_seconds = 3600\n").unwrap();
        let config = config.to_str().unwrap();
        json(
            &schema.url,
            &[
                "enqueue",
                "--json",
                "--modules",
                "metadata",
                tree.to_str().unwrap(),
            ],
        );
        let mut cmd = imgd(
            &schema.url,
            &["run", "--config", config, "--metrics-addr", "off"],
        );
        fake(&mut cmd, "1", "1");
        let mut daemon = spawn(&mut cmd, &dir.path().join("daemon.log"));
        let done = |n: i64| schema.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'") >= n;
        wait_for(
            "the first image",
            Duration::from_secs(60),
            dir.path(),
            || done(1),
        );
        // The daemon now waits. A new file and an enqueue wake it.
        std::thread::sleep(Duration::from_millis(500));
        std::fs::copy(photo("hopper.jpg"), tree.join("new.jpg")).unwrap();
        json(
            &schema.url,
            &[
                "enqueue",
                "--json",
                "--modules",
                "metadata",
                tree.to_str().unwrap(),
            ],
        );
        wait_for("the new image", Duration::from_secs(60), dir.path(), || {
            done(2)
        });
        signal(&daemon.0, "TERM");
        assert!(wait_exit(&mut daemon.0, Duration::from_secs(30)).is_some_and(|s| s.success()));
    }

    /// The acceptance test of many hosts: three workers with distinct hosts drain one queue
    /// of 600 images; one is killed (SIGKILL) in the middle and its leases are taken back at
    /// once by the others (its session lock went with its connection); a fourth started late
    /// takes work; every job ends done exactly once, and no result row is duplicated.
    #[test]
    fn three_hosts_share_one_queue_and_a_killed_one_loses_nothing() {
        let Some(server) = server() else { return };
        let schema = Schema::new(&server);
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("photos");
        copies(&tree, 600);
        json(
            &schema.url,
            &[
                "enqueue",
                "--json",
                "--modules",
                "embedding",
                tree.to_str().unwrap(),
            ],
        );
        // A latency-bound model: 40 ms per batch of up to 8, so that three workers share the
        // work on two cores.
        let worker = |host: &str| {
            let mut cmd = imgd(
                &schema.url,
                &["run", "--metrics-addr", "off", "--batch-size", "8"],
            );
            cmd.env("IMGD_HOST", host);
            fake(&mut cmd, "40", "0");
            spawn(&mut cmd, &dir.path().join(format!("{host}.log")))
        };
        let mut a = worker("host-a");
        let mut b = worker("host-b");
        let mut c = worker("host-c");
        let done = || schema.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'");
        wait_for(
            "a third of the work",
            Duration::from_secs(120),
            dir.path(),
            || done() >= 200,
        );
        let held_by_b = schema.count(
            "SELECT COUNT(*) FROM jobs WHERE state = 'leased' AND lease_owner LIKE 'host-b:%'",
        );
        signal(&b.0, "KILL");
        let _ = wait_exit(&mut b.0, Duration::from_secs(10));
        let mut d = worker("host-d");
        wait_for("every job", Duration::from_secs(180), dir.path(), || {
            done() == 600
        });
        // B's leases came back long before they would have expired (5 minutes).
        assert_eq!(
            schema.count("SELECT COUNT(*) FROM jobs WHERE state <> 'done'"),
            0
        );
        assert_eq!(schema.count("SELECT COUNT(*) FROM result_embedding"), 600);
        assert_eq!(
            schema.count("SELECT COUNT(DISTINCT image_id) FROM result_embedding"),
            600
        );
        let status = json(&schema.url, &["status", "--json"]);
        let workers = status["workers"].as_array().unwrap();
        let state_of = |host: &str| {
            workers
                .iter()
                .find(|w| w["host"] == host)
                .unwrap_or_else(|| panic!("{host} is listed: {status}"))
        };
        assert_eq!(state_of("host-b")["state"], "died", "{status}");
        for host in ["host-a", "host-c", "host-d"] {
            assert_eq!(state_of(host)["state"], "running", "{status}");
        }
        // The late worker took work (its heartbeat counts what it finished).
        wait_for(
            "the late worker's heartbeat",
            Duration::from_secs(30),
            dir.path(),
            || {
                let status = json(&schema.url, &["status", "--json"]);
                status["workers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|w| w["host"] == "host-d" && w["images"].as_i64().unwrap_or(0) > 0)
            },
        );
        eprintln!("host-b held {held_by_b} jobs when it was killed");
        for daemon in [&mut a, &mut c, &mut d] {
            signal(&daemon.0, "TERM");
            assert!(wait_exit(&mut daemon.0, Duration::from_secs(30)).is_some_and(|s| s.success()));
        }
    }

    /// The server restarts in the middle of a run: the daemon keeps running, connects again,
    /// and every job ends done exactly once.
    #[test]
    fn a_server_restart_in_the_middle_of_a_run_is_survived() {
        if server().is_none() {
            return;
        }
        let cluster = Cluster::start();
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("photos");
        copies(&tree, 300);
        json(
            &cluster.url,
            &[
                "enqueue",
                "--json",
                "--modules",
                "metadata,embedding",
                tree.to_str().unwrap(),
            ],
        );
        let addr = format!("127.0.0.1:{}", free_port());
        let mut cmd = imgd(
            &cluster.url,
            &["run", "--metrics-addr", &addr, "--batch-size", "8"],
        );
        fake(&mut cmd, "20", "0");
        let mut daemon = spawn(&mut cmd, &dir.path().join("daemon.log"));
        let count = |sql: &str| -> Option<i64> {
            let mut client = ::postgres::Client::connect(&cluster.url, ::postgres::NoTls).ok()?;
            client.query_one(sql, &[]).ok().map(|row| row.get(0))
        };
        let done = || count("SELECT COUNT(*) FROM jobs WHERE state = 'done'").unwrap_or(0);
        wait_for("some work", Duration::from_secs(120), dir.path(), || {
            done() >= 100
        });
        cluster.restart();
        wait_for("every job", Duration::from_secs(240), dir.path(), || {
            done() == 600
        });
        assert!(
            daemon.0.try_wait().unwrap().is_none(),
            "the daemon survived the restart"
        );
        assert_eq!(count("SELECT COUNT(*) FROM result_embedding"), Some(300));
        assert_eq!(count("SELECT COUNT(*) FROM result_metadata"), Some(300));
        assert_eq!(
            count("SELECT COUNT(*) FROM jobs WHERE state = 'failed'"),
            Some(0)
        );
        let (code, _) = common::http_get(&addr, "/healthz").unwrap();
        assert_eq!(code, 200);
        signal(&daemon.0, "TERM");
        assert!(wait_exit(&mut daemon.0, Duration::from_secs(30)).is_some_and(|s| s.success()));
    }
}
