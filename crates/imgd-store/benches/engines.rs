//! The store on its two engines: how fast concurrent workers claim, and how fast full-text
//! search answers at library scale.
//!
//! Run with `IMGD_BENCH_POSTGRES=postgres://user@host:port/db cargo bench -p imgd-store --bench
//! engines` (`scripts/pg-test-cluster.sh start` prints the URL of a throwaway local cluster).
//! In one process, each engine gets a fresh database (a SQLite file in a temporary folder; a
//! fresh schema on the server):
//!
//! - **claims**: 4 000 images with one queued job each; 1, 4 and 16 threads, each with its own
//!   connection as separate workers have, claim 4 images at a time and ack them with a small
//!   result row until the queue is empty. Prints `claims_per_second` per engine and thread
//!   count, and `claims_pg_vs_sqlite_N=X` (PostgreSQL ÷ SQLite, same thread count).
//! - **search**: 100 000 images with search rows of 40 words drawn from a 5 000-word
//!   vocabulary (Zipf-like), then 200 two-word queries; prints the median and 95th percentile
//!   milliseconds per engine (`fts_pg_p50_ms=X`).
//!
//! # Measured
//!
//! On the 2-core build machine with a local PostgreSQL 15 (`scripts/pg-test-cluster.sh`,
//! fsync off) in the same run:
//!
//! | workers | SQLite images/s | PostgreSQL images/s | ratio |
//! |---------|-----------------|---------------------|-------|
//! | 1       | 5 001           | 137                 | 0.03  |
//! | 4       | 3 462           | 635                 | 0.18  |
//! | 16      | 3 463           | 624                 | 0.18  |
//!
//! A claim and its commit run about 20 statements per image (the claim's scan, lookups and
//! lease update; the ack, the result upsert and the search row's eight text queries), each a
//! round trip to the server: ~0.35 ms here, where the server shares the two cores. SQLite runs
//! them in-process in microseconds and serialises writers on its one lock, so more threads do
//! not help it; PostgreSQL's workers overlap their round trips until the server's CPU is full.
//! Full-text search at 100 000 images: median 6.1 ms (SQLite) vs 9.1 ms (PostgreSQL), 95th
//! percentile 68 vs 184 ms.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imgd_core::{ResultRow, SqlValue};
use imgd_store::queue::ClaimRequest;
use imgd_store::results::ImageOutcome;
use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::{Store, StoreOptions, params};

/// A fresh database of one engine.
struct Fresh {
    url: String,
    _dir: Option<tempfile::TempDir>,
}

fn fresh(engine: &str, server: &str, tag: &str) -> Fresh {
    if engine == "sqlite" {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().join("bench.db").display().to_string();
        return Fresh {
            url,
            _dir: Some(dir),
        };
    }
    let schema = format!("bench_{tag}_{}", std::process::id());
    let mut admin = postgres::Client::connect(server, postgres::NoTls).unwrap();
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .unwrap();
    let separator = if server.contains('?') { '&' } else { '?' };
    Fresh {
        url: format!("{server}{separator}options=-csearch_path%3D{schema}"),
        _dir: None,
    }
}

fn open(url: &str) -> Store {
    Store::connect(
        url,
        StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

fn register(store: &Store, n: usize, modules: &[imgd_core::Module]) {
    let actions: Vec<ScanAction> = (0..n)
        .map(|i| {
            ScanAction::New(FoundFile {
                path: format!("/library/{:03}/img{i:06}.jpg", i % 500),
                fingerprint: Fingerprint {
                    size: 1000 + i as i64,
                    mtime_ns: 1,
                    inode: None,
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            })
        })
        .collect();
    for chunk in actions.chunks(5000) {
        store.apply_scan(chunk, modules, 0).unwrap();
    }
}

/// Claims per second with `threads` workers draining `images` one-job images.
fn claims(url: &str, threads: usize, images: usize) -> f64 {
    let modules = [imgd_modules::METADATA];
    register(&open(url), images, &modules);
    let url = Arc::new(url.to_string());
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let url = Arc::clone(&url);
            std::thread::spawn(move || {
                let mut store = open(&url);
                let owner = format!("bench-{t}");
                let mut claimed_images = 0usize;
                loop {
                    let claimed = store
                        .claim(&ClaimRequest {
                            owner: &owner,
                            modules: &modules,
                            max_images: 4,
                            lease: Duration::from_secs(300),
                            idle: true,
                        })
                        .unwrap();
                    if claimed.is_empty() {
                        break claimed_images;
                    }
                    claimed_images += claimed.len();
                    let outcomes: Vec<ImageOutcome> = claimed
                        .iter()
                        .map(|image| ImageOutcome {
                            image_id: image.image_id,
                            dimensions: Some((4000, 3000)),
                            done: vec![(
                                image.jobs[0].job_id,
                                ResultRow {
                                    module: imgd_modules::METADATA,
                                    model_id: None,
                                    model_version: None,
                                    columns: vec![("make", SqlValue::Text("Canon".into()))],
                                    data: serde_json::json!({ "make": "Canon" }),
                                    vectors: Vec::new(),
                                },
                            )],
                            failed: vec![],
                            missing: false,
                        })
                        .collect();
                    store.commit_outcomes(&owner, &outcomes).unwrap();
                }
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(total, images, "every image claimed exactly once");
    total as f64 / started.elapsed().as_secs_f64()
}

/// xorshift64*: reproducible numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A word index, small ones far more often (roughly Zipf).
    fn word(&mut self, vocabulary: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((vocabulary as f64).powf(u) as usize).saturating_sub(1)
    }
}

fn word(i: usize) -> String {
    // Pronounceable, distinct, never a stop word of any stemmer.
    const SYLLABLES: [&str; 16] = [
        "ka", "ro", "mi", "tu", "sel", "van", "dor", "pli", "gu", "ne", "zor", "bam", "qui", "fe",
        "lon", "hy",
    ];
    let mut w = String::new();
    let mut n = i + 16;
    while n > 0 {
        w.push_str(SYLLABLES[n % 16]);
        n /= 16;
    }
    w
}

/// Milliseconds of full-text search at `images` images: (median, 95th percentile).
fn search(url: &str, images: usize) -> (f64, f64) {
    let store = open(url);
    register(&store, images, &[]);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    const VOCABULARY: usize = 5000;
    let key = if store.dialect() == imgd_store::db::Dialect::Sqlite {
        "rowid"
    } else {
        "image_id"
    };
    let tx = store.db().write_tx().unwrap();
    for id in 1..=images as i64 {
        let caption: Vec<String> = (0..40).map(|_| word(rng.word(VOCABULARY))).collect();
        tx.execute(
            &format!("INSERT INTO search_fts ({key}, path, caption) VALUES (?1, ?2, ?3)"),
            params![
                id,
                format!("library {} img{id:06} jpg", id % 500),
                caption.join(" ")
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    if store.dialect() == imgd_store::db::Dialect::Postgres {
        store.db().batch("ANALYZE").unwrap();
    }
    let mut times = Vec::new();
    for q in 0..200 {
        let query = format!(
            "{} {}",
            word(rng.word(VOCABULARY / 10)),
            word(rng.word(VOCABULARY))
        );
        let started = Instant::now();
        let hits = store.search_text(&query, 20).unwrap();
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        if q == 0 {
            eprintln!("  {query:?}: {} hits", hits.len());
        }
    }
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() * 95 / 100])
}

fn main() {
    let Ok(server) =
        std::env::var("IMGD_BENCH_POSTGRES").or_else(|_| std::env::var("IMGD_TEST_POSTGRES"))
    else {
        eprintln!("set IMGD_BENCH_POSTGRES to a PostgreSQL URL (scripts/pg-test-cluster.sh start)");
        std::process::exit(2);
    };
    let claim_images: usize = std::env::var("BENCH_CLAIM_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let search_images: usize = std::env::var("BENCH_SEARCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    for threads in [1, 4, 16] {
        let mut rates = Vec::new();
        for engine in ["sqlite", "postgres"] {
            let db = fresh(engine, &server, &format!("claims{threads}"));
            let rate = claims(&db.url, threads, claim_images);
            println!("{engine} threads={threads} claims_per_second={rate:.0}");
            rates.push(rate);
        }
        println!("claims_pg_vs_sqlite_{threads}={:.2}", rates[1] / rates[0]);
    }
    for engine in ["sqlite", "postgres"] {
        let db = fresh(engine, &server, "search");
        let (p50, p95) = search(&db.url, search_images);
        let short = if engine == "sqlite" { "sqlite" } else { "pg" };
        println!("fts_{short}_p50_ms={p50:.2} fts_{short}_p95_ms={p95:.2} images={search_images}");
    }
}
