//! What coalescing buys the writer thread.
//!
//! Run with `cargo bench -p imgd-store --bench writer`. In one process, on real SQLite files in
//! a temporary folder (WAL, `synchronous = NORMAL`, as [`Store::open`] sets them up), it
//! registers N = 2000 images with `metadata` and `technical` jobs, claims them all, and writes
//! their results (a metadata row with 17 typed columns and ~500 bytes of JSON, a technical row
//! with 9 typed columns and a small JSON) in two ways:
//!
//! - **coalesced**: 64 images (128 results) per [`Store::commit_outcomes`] call, as the daemon's
//!   writer does;
//! - **per-result**: one `commit_outcomes` call, so one transaction, per image per module.
//!
//! Each variant gets a fresh database and runs 3 times; the best run counts. The last line is
//! `writer_speedup=X` (coalesced ÷ per-result results per second). With
//! `WRITER_BENCH_EXPLAIN=1` it also reruns both variants with other `synchronous` and
//! checkpoint settings, to show where a commit's cost goes.
//!
//! # Measured
//!
//! On a 2-core VM with an ext4 disk (best of 3, release build):
//!
//! | setting                                  | coalesced   | per-result | speedup |
//! |------------------------------------------|-------------|------------|---------|
//! | as opened (WAL, `synchronous = NORMAL`)  | 21 700 /s   | 3 800 /s   | **5.7** |
//! | `synchronous = OFF`                      | 35 400 /s   | 11 700 /s  | 3.0     |
//! | `wal_autocheckpoint = 0`                 | 35 600 /s   | 8 200 /s   | 4.4     |
//! | `synchronous = FULL` (fsync per commit)  | 17 100 /s   | 4 900 /s   | 3.5     |
//!
//! Across runs `writer_speedup` is 5.5–7 here (the last: 21 800 / 3 200 = 6.8), below the goal
//! of 20. Why:
//!
//! - In WAL mode with `synchronous = NORMAL` a commit does not fsync; only checkpoints do. What
//!   a transaction costs is CPU and WAL pages: `BEGIN IMMEDIATE`/`COMMIT`, every page it dirties
//!   written again as a WAL frame (the jobs row and its three indexes, the result row and its
//!   indexes, the FTS5 segment that each transaction flushes), and the checkpoints that this
//!   extra WAL volume triggers every ~1000 pages, each with an fsync of the WAL and the
//!   database. Without fsyncs at all (`synchronous = OFF`) one transaction costs ~55 µs on top
//!   of ~28 µs of per-result work, which caps the speedup near 3; the checkpoints' I/O brings
//!   it to ~5.5.
//! - The per-result work cannot shrink much below that: two upserts and two acks per image,
//!   plus the search row (eight small reads and an FTS5 insert, tokenised with porter). A
//!   20× gap needs each commit to cost ~20 results' work, which is what a durable fsync per
//!   commit costs on a disk with a real cache flush (milliseconds). This VM's fsync is cheap
//!   (`synchronous = FULL` costs per-result commits little more than `NORMAL`), so the figure
//!   here is a lower bound: on spinning disks or network storage the gap widens.
//! - Not a cause here: statement caching. With these two modules the 15 statements of a
//!   commit all stay in rusqlite's 16-entry cache (a writer handling all nine modules needs up
//!   to 22 and would re-prepare every one of them, cyclic use defeating the LRU), and none is
//!   re-prepared between calls (the search row's `result_cloud`
//!   query used to be re-planned on every call, because its `json_tree` join made the plan
//!   depend on the bound image id; it now takes the document from a scalar subquery, which
//!   made coalesced commits ~25% faster).

use std::path::Path;
use std::time::{Duration, Instant};

use imgd_core::{Module, ResultRow, SqlValue};
use imgd_store::queue::{ClaimRequest, ClaimedImage};
use imgd_store::results::ImageOutcome;
use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::{Store, StoreOptions};

/// Images per run.
const IMAGES: usize = 2000;
/// Images per `commit_outcomes` call in the coalesced variant (the daemon's `flush_images`).
const FLUSH_IMAGES: usize = 64;
/// Runs per variant; the best counts.
const RUNS: usize = 3;
/// The lease owner.
const OWNER: &str = "bench-host:1:writer";
const MODULES: [Module; 2] = [imgd_modules::METADATA, imgd_modules::TECHNICAL];

const CAMERAS: [(&str, &str, &str); 4] = [
    ("Canon", "Canon EOS R5", "RF24-105mm F4 L IS USM"),
    ("NIKON CORPORATION", "NIKON Z 6_2", "NIKKOR Z 24-70mm f/4 S"),
    ("FUJIFILM", "X-T4", "XF16-55mmF2.8 R LM WR"),
    (
        "Apple",
        "iPhone 13 Pro",
        "iPhone 13 Pro back triple camera 5.7mm f/1.5",
    ),
];

/// Registers `IMAGES` images with jobs for both modules and claims them all.
fn prepare(db: &Path) -> (Store, Vec<ClaimedImage>) {
    let mut store = Store::open(
        db,
        StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        },
    )
    .expect("opening the database");
    let actions: Vec<ScanAction> = (0..IMAGES)
        .map(|i| {
            ScanAction::New(FoundFile {
                path: format!(
                    "/srv/photos/{}/{:02}/trip to the coast/IMG_{i:05}.JPG",
                    2015 + i % 10,
                    1 + i % 12
                ),
                fingerprint: Fingerprint {
                    size: 3_000_000 + i as i64 * 17,
                    mtime_ns: 1_600_000_000_000_000_000 + i as i64 * 1_000_000_007,
                    inode: Some(1_000_000 + i as i64),
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            })
        })
        .collect();
    store
        .apply_scan(&actions, &MODULES, 0)
        .expect("registering images");
    let mut claimed = Vec::with_capacity(IMAGES);
    loop {
        let batch = store
            .claim(&ClaimRequest {
                owner: OWNER,
                modules: &MODULES,
                max_images: 256,
                lease: Duration::from_secs(3600),
                idle: true,
            })
            .expect("claiming");
        if batch.is_empty() {
            break;
        }
        claimed.extend(batch);
    }
    assert_eq!(claimed.len(), IMAGES, "every image is claimed");
    (store, claimed)
}

fn text(s: impl Into<String>) -> SqlValue {
    SqlValue::Text(s.into())
}

/// A metadata result like the EXIF reader produces for a camera JPEG.
fn metadata_row(i: usize) -> ResultRow {
    let (make, model, lens) = CAMERAS[i % CAMERAS.len()];
    let taken_at = format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}",
        2015 + i % 10,
        1 + i % 12,
        1 + i % 28,
        i % 24,
        i % 60,
        (i * 7) % 60
    );
    let iso = 100 << (i % 6);
    let data = serde_json::json!({
        "make": make,
        "model": model,
        "lens": lens,
        "lens_make": make,
        "lens_serial": format!("{:010}", 4_200_000_000u64 + i as u64),
        "body_serial": format!("{:012}", 31_000_000_000u64 + i as u64),
        "exposure_program": "aperture_priority",
        "exposure_mode": "auto",
        "exposure_bias_ev": -0.3,
        "metering_mode": "multi_segment",
        "flash": "off, did not fire",
        "white_balance": "auto",
        "color_space": "srgb",
        "focal_range": "24-105mm",
        "summary": format!("{}mm f/{} 1/{}s ISO {iso}", 24 + i % 80, 4.0, 125 << (i % 4)),
        "subsec": format!("{:03}", i % 1000),
        "offset": "+02:00",
        "artist": "",
        "copyright": "",
        "warnings": [],
    });
    ResultRow {
        module: imgd_modules::METADATA,
        model_id: None,
        model_version: None,
        columns: vec![
            ("make", text(make)),
            ("model", text(model)),
            ("lens", text(lens)),
            ("iso", SqlValue::Integer(iso as i64)),
            ("aperture", SqlValue::Real(4.0)),
            ("shutter_s", SqlValue::Real(1.0 / f64::from(125 << (i % 4)))),
            ("focal_mm", SqlValue::Real(24.0 + (i % 80) as f64)),
            ("focal_35mm", SqlValue::Real(24.0 + (i % 80) as f64)),
            ("taken_at", text(taken_at)),
            (
                "taken_utc_ms",
                SqlValue::Integer(1_420_070_400_000 + i as i64 * 86_400_000),
            ),
            ("gps_lat", SqlValue::Real(43.2965 + i as f64 * 1e-4)),
            ("gps_lon", SqlValue::Real(5.3698 - i as f64 * 1e-4)),
            ("gps_alt", SqlValue::Real(12.5)),
            ("orientation", SqlValue::Integer(1)),
            ("width", SqlValue::Integer(6000)),
            ("height", SqlValue::Integer(4000)),
            ("software", text("Firmware Version 1.8.1")),
        ],
        data,
        vectors: Vec::new(),
    }
}

/// A technical result like the measurements of the 1024-px tier.
fn technical_row(i: usize) -> ResultRow {
    let sharpness = 50.0 + (i % 300) as f64;
    ResultRow {
        module: imgd_modules::TECHNICAL,
        model_id: None,
        model_version: None,
        columns: vec![
            ("sharpness", SqlValue::Real(sharpness)),
            ("sharpness_max", SqlValue::Real(sharpness * 3.1)),
            ("mean_luma", SqlValue::Real(0.45)),
            ("clipped_high_pct", SqlValue::Real(0.8)),
            ("clipped_low_pct", SqlValue::Real(0.3)),
            ("noise", SqlValue::Real(1.7)),
            ("is_blurry", SqlValue::Integer(i64::from(sharpness < 80.0))),
            ("is_dark", SqlValue::Integer(0)),
            ("is_overexposed", SqlValue::Integer(0)),
        ],
        data: serde_json::json!({
            "colours": [
                { "hex": "#3a5f8c", "share": 0.41 },
                { "hex": "#d9c8a0", "share": 0.27 },
                { "hex": "#1f2a1c", "share": 0.18 },
            ],
            "tier": 1024,
        }),
        vectors: Vec::new(),
    }
}

/// The whole outcome of one image: both modules done.
fn full_outcome(index: usize, image: &ClaimedImage) -> ImageOutcome {
    let done = image
        .jobs
        .iter()
        .map(|job| {
            let row = if job.module == imgd_modules::METADATA {
                metadata_row(index)
            } else {
                technical_row(index)
            };
            (job.job_id, row)
        })
        .collect();
    ImageOutcome {
        image_id: image.image_id,
        dimensions: Some((6000, 4000)),
        done,
        failed: vec![],
        missing: false,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Coalesced,
    PerResult,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Coalesced => "coalesced (64 images per commit)",
            Variant::PerResult => "per-result (one commit per result)",
        }
    }
}

/// One run on a fresh database: returns the time of the writes alone and the result count.
fn run(variant: Variant, tweak: &dyn Fn(&Store)) -> (Duration, usize) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (store, claimed) = prepare(&dir.path().join("imgd.db"));
    tweak(&store);
    let outcomes: Vec<ImageOutcome> = claimed
        .iter()
        .enumerate()
        .map(|(i, image)| full_outcome(i, image))
        .collect();
    let results: usize = outcomes.iter().map(|o| o.done.len()).sum();
    // The per-result commits are built up front too, so that only the writes are timed.
    let singles: Vec<ImageOutcome> = outcomes
        .iter()
        .flat_map(|o| {
            o.done.iter().enumerate().map(|(k, done)| ImageOutcome {
                image_id: o.image_id,
                dimensions: if k == 0 { o.dimensions } else { None },
                done: vec![done.clone()],
                failed: vec![],
                missing: false,
            })
        })
        .collect();

    let start = Instant::now();
    let (mut acked, mut search_rows) = (0, 0);
    match variant {
        Variant::Coalesced => {
            for chunk in outcomes.chunks(FLUSH_IMAGES) {
                let s = store.commit_outcomes(OWNER, chunk).expect("committing");
                acked += s.acked;
                search_rows += s.search_rows;
            }
        }
        Variant::PerResult => {
            for single in &singles {
                let s = store
                    .commit_outcomes(OWNER, std::slice::from_ref(single))
                    .expect("committing");
                acked += s.acked;
                search_rows += s.search_rows;
            }
        }
    }
    let elapsed = start.elapsed();
    assert_eq!(acked, results, "every result is acked");
    assert_eq!(search_rows, IMAGES, "every image gets one search row");
    (elapsed, results)
}

/// The best results/s of `RUNS` runs.
fn best(variant: Variant, tweak: &dyn Fn(&Store)) -> f64 {
    (0..RUNS)
        .map(|_| {
            let (elapsed, results) = run(variant, tweak);
            results as f64 / elapsed.as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let as_opened = |_: &Store| {};
    let coalesced = best(Variant::Coalesced, &as_opened);
    println!("{}: {coalesced:.0} results/s", Variant::Coalesced.name());
    let per_result = best(Variant::PerResult, &as_opened);
    println!("{}: {per_result:.0} results/s", Variant::PerResult.name());
    if std::env::var_os("WRITER_BENCH_EXPLAIN").is_some() {
        // Where a commit's cost goes: the same runs with the WAL's fsyncs (at checkpoints, under
        // `synchronous = NORMAL`) or its checkpoints removed, or with an fsync at every commit.
        for pragmas in [
            "synchronous=OFF",
            "wal_autocheckpoint=0",
            "synchronous=OFF,wal_autocheckpoint=0",
            "synchronous=FULL",
        ] {
            let tweak = |store: &Store| {
                for (key, value) in pragmas.split(',').filter_map(|kv| kv.split_once('=')) {
                    store
                        .connection()
                        .pragma_update(None, key, value)
                        .expect("setting a pragma");
                }
            };
            let c = best(Variant::Coalesced, &tweak);
            let p = best(Variant::PerResult, &tweak);
            println!(
                "  with {pragmas}: coalesced {c:.0}/s, per-result {p:.0}/s, speedup {:.1}",
                c / p
            );
        }
    }
    println!("writer_speedup={:.1}", coalesced / per_result);
}
