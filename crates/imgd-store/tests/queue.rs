//! The job queue on real databases, SQLite and PostgreSQL: claims, leases, acks, failures,
//! retries, pause, and two processes claiming from one database at once.

use std::collections::HashSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use imgd_core::{Module, ResultRow, SqlValue};
use imgd_store::queue::{ClaimRequest, JobFailure};
use imgd_store::results::ImageOutcome;
use imgd_store::scan::{Fingerprint, FoundFile, ScanAction};
use imgd_store::{Store, StoreOptions, params};

mod common;
use common::backends::{TestDb, each_backend};

const BOTH: [Module; 2] = [imgd_modules::METADATA, imgd_modules::TECHNICAL];

fn store_with_images(db: &TestDb, n: usize, priority: i64) -> Store {
    let store = db.open();
    let actions: Vec<ScanAction> = (0..n)
        .map(|i| {
            ScanAction::New(FoundFile {
                path: format!("/photos/p{priority}/img{i:05}.jpg"),
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
    store.apply_scan(&actions, &BOTH, priority).unwrap();
    store
}

fn request<'a>(owner: &'a str, modules: &'a [Module], max_images: usize) -> ClaimRequest<'a> {
    ClaimRequest {
        owner,
        modules,
        max_images,
        lease: Duration::from_secs(60),
        idle: true,
    }
}

fn metadata_row(make: &str) -> ResultRow {
    ResultRow {
        module: imgd_modules::METADATA,
        model_id: None,
        model_version: None,
        columns: vec![("make", SqlValue::Text(make.into()))],
        data: serde_json::json!({ "make": make }),
        vectors: Vec::new(),
    }
}

fn count(store: &Store, sql: &str) -> i64 {
    store.db().query_row(sql, params![], |r| r.get(0)).unwrap()
}

#[test]
fn claims_hand_out_whole_images_in_priority_order() {
    each_backend(|db| {
        drop(store_with_images(db, 5, 0));
        let mut store = store_with_images(db, 2, 10);

        let claimed = store.claim(&request("w1", &BOTH, 3)).unwrap();
        assert_eq!(claimed.len(), 3);
        // The two high-priority images come first, each with both of its jobs.
        assert!(claimed[0].path.starts_with("/photos/p10/"));
        assert!(claimed[1].path.starts_with("/photos/p10/"));
        assert!(claimed[2].path.starts_with("/photos/p0/"));
        for image in &claimed {
            let modules: Vec<Module> = image.jobs.iter().map(|j| j.module).collect();
            assert_eq!(modules, BOTH);
        }
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM jobs WHERE state = 'leased'"),
            6
        );

        // A worker that can only run `technical` leaves `metadata` queued.
        let only_technical = store
            .claim(&request("w2", &[imgd_modules::TECHNICAL], 10))
            .unwrap();
        assert_eq!(only_technical.len(), 4);
        assert!(only_technical.iter().all(|i| i.jobs.len() == 1));
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND module = 'metadata'"
            ),
            4
        );
    });
}

#[test]
fn an_ack_writes_the_result_in_the_same_transaction_and_replays_do_not_duplicate() {
    each_backend(|db| {
        let mut store = store_with_images(db, 1, 0);
        let claimed = store
            .claim(&request("w", &[imgd_modules::METADATA], 1))
            .unwrap();
        let job = claimed[0].jobs[0].job_id;
        let outcome = ImageOutcome {
            image_id: claimed[0].image_id,
            dimensions: Some((640, 480)),
            done: vec![(job, metadata_row("Canon"))],
            failed: vec![],
            missing: false,
        };
        let summary = store
            .commit_outcomes("w", std::slice::from_ref(&outcome))
            .unwrap();
        assert_eq!(summary.acked, 1);
        // No job of the image is in flight any more: its search row is written now, although
        // `technical` is still queued (a module waiting for its model must not hide the image
        // from search); `technical` refreshes it when it runs.
        assert_eq!(summary.search_rows, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM result_metadata"), 1);
        assert_eq!(count(&store, "SELECT width FROM images"), 640);

        // A replay of the same outcome (e.g. after a crash between two writers) is stale: no second
        // row, no second ack.
        let replay = store.commit_outcomes("w", &[outcome]).unwrap();
        assert_eq!(replay.acked, 0);
        assert_eq!(replay.stale, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM result_metadata"), 1);

        // Re-running the job after a re-queue upserts: still one row, with the new value.
        store.retry_failed(None).unwrap();
        store
            .db()
            .execute(
                "UPDATE jobs SET state = 'queued' WHERE module = 'metadata'",
                params![],
            )
            .unwrap();
        let claimed = store.claim(&request("w", &BOTH, 1)).unwrap();
        let done = claimed[0]
            .jobs
            .iter()
            .map(|j| match j.module {
                m if m == imgd_modules::METADATA => (j.job_id, metadata_row("Nikon")),
                _ => (
                    j.job_id,
                    ResultRow {
                        module: imgd_modules::TECHNICAL,
                        model_id: None,
                        model_version: None,
                        columns: vec![("sharpness", SqlValue::Real(12.5))],
                        data: serde_json::json!({}),
                        vectors: Vec::new(),
                    },
                ),
            })
            .collect();
        let summary = store
            .commit_outcomes(
                "w",
                &[ImageOutcome {
                    image_id: claimed[0].image_id,
                    dimensions: None,
                    done,
                    failed: vec![],
                    missing: false,
                }],
            )
            .unwrap();
        assert_eq!(summary.acked, 2);
        assert_eq!(summary.search_rows, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM result_metadata"), 1);
        let make: String = store
            .db()
            .query_row("SELECT make FROM result_metadata", params![], |r| r.get(0))
            .unwrap();
        assert_eq!(make, "Nikon");
        let hits = store.search_text("nikon", 10).unwrap();
        assert_eq!(hits.len(), 1);
        assert!(hits[0].snippet.contains("[Nikon]"), "{}", hits[0].snippet);
        // FTS syntax in user input is only text.
        assert!(
            store
                .search_text("nikon OR \"(* AND", 10)
                .unwrap()
                .is_empty()
        );
    });
}

#[test]
fn failures_retry_until_the_attempt_limit_then_fail_and_retry_requeues() {
    each_backend(|db| {
        drop(store_with_images(db, 1, 0));
        let options = StoreOptions {
            max_attempts: 2,
            ..StoreOptions {
                modules: imgd_registry::registry(),
                ..StoreOptions::default()
            }
        };
        let mut store = db.open_with(options);
        for attempt in 1..=2 {
            let claimed = store
                .claim(&request("w", &[imgd_modules::TECHNICAL], 1))
                .unwrap();
            assert_eq!(claimed.len(), 1, "attempt {attempt} gets the job again");
            store
                .fail_jobs(
                    "w",
                    &[JobFailure {
                        job_id: claimed[0].jobs[0].job_id,
                        error: format!("corrupt JPEG (attempt {attempt})"),
                        permanent: false,
                    }],
                )
                .unwrap();
        }
        assert!(
            store
                .claim(&request("w", &[imgd_modules::TECHNICAL], 1))
                .unwrap()
                .is_empty()
        );
        let status = store.queue_status(5).unwrap();
        assert_eq!(status.modules["technical"].failed, 1);
        assert_eq!(status.top_failures[0].error, "corrupt JPEG (attempt 2)");

        assert_eq!(store.retry_failed(Some(imgd_modules::METADATA)).unwrap(), 0);
        assert_eq!(
            store.retry_failed(Some(imgd_modules::TECHNICAL)).unwrap(),
            1
        );
        assert_eq!(
            store
                .claim(&request("w", &[imgd_modules::TECHNICAL], 1))
                .unwrap()
                .len(),
            1
        );
    });
}

#[test]
fn expired_leases_return_to_the_queue_and_extensions_keep_them() {
    each_backend(|db| {
        let mut store = store_with_images(db, 2, 0);
        let short = ClaimRequest {
            lease: Duration::from_millis(200),
            ..request("dead-worker", &BOTH, 1)
        };
        let dead = store.claim(&short).unwrap();
        let kept = store
            .claim(&ClaimRequest {
                lease: Duration::from_millis(200),
                ..request("live-worker", &BOTH, 1)
            })
            .unwrap();
        let kept_ids: Vec<i64> = kept[0].jobs.iter().map(|j| j.job_id).collect();
        assert_eq!(
            store
                .extend_lease("live-worker", &kept_ids, Duration::from_secs(60))
                .unwrap(),
            2
        );
        std::thread::sleep(Duration::from_millis(250));
        let again = store.claim(&request("new-worker", &BOTH, 10)).unwrap();
        assert_eq!(again.len(), 1, "only the dead worker's image comes back");
        assert_eq!(again[0].image_id, dead[0].image_id);
        // The dead worker's late ack is refused: its lease is gone.
        let late = store
            .commit_outcomes(
                "dead-worker",
                &[ImageOutcome {
                    image_id: dead[0].image_id,
                    dimensions: None,
                    done: vec![(dead[0].jobs[0].job_id, metadata_row("Late"))],
                    failed: vec![],
                    missing: false,
                }],
            )
            .unwrap();
        assert_eq!(late.stale, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM result_metadata"), 0);
        // Graceful shutdown releases without counting an attempt.
        assert_eq!(store.release_all("new-worker").unwrap(), 2);
        assert_eq!(count(&store, "SELECT MAX(attempts) FROM jobs"), 0);
    });
}

#[test]
fn a_job_whose_worker_keeps_dying_fails_after_the_expiry_limit() {
    each_backend(|db| {
        drop(store_with_images(db, 1, 0));
        let options = StoreOptions {
            max_lease_expiries: 3,
            ..StoreOptions {
                modules: imgd_registry::registry(),
                ..StoreOptions::default()
            }
        };
        let mut store = db.open_with(options);
        let mut claims = 0;
        loop {
            let claimed = store
                .claim(&ClaimRequest {
                    lease: Duration::from_millis(1),
                    ..request("crashy", &[imgd_modules::METADATA], 1)
                })
                .unwrap();
            if claimed.is_empty() {
                break;
            }
            claims += 1;
            std::thread::sleep(Duration::from_millis(3));
            assert!(claims < 10, "the job must fail eventually");
        }
        assert_eq!(claims, 3);
        let status = store.queue_status(1).unwrap();
        assert_eq!(status.modules["metadata"].failed, 1);
        assert!(status.top_failures[0].error.contains("lease expired"));
    });
}

#[test]
fn a_paused_queue_hands_out_nothing() {
    each_backend(|db| {
        let mut store = store_with_images(db, 1, 0);
        store.set_paused(true).unwrap();
        assert!(store.is_paused().unwrap());
        assert!(store.claim(&request("w", &BOTH, 1)).unwrap().is_empty());
        store.set_paused(false).unwrap();
        assert_eq!(store.claim(&request("w", &BOTH, 1)).unwrap().len(), 1);
    });
}

/// The body of one claiming process: claims small batches until the queue is empty, acks every
/// job, and prints each claimed job id. Runs only when the parent test spawns it.
#[test]
#[ignore = "spawned by two_processes_never_get_the_same_job"]
fn claim_child() {
    let (Ok(db), Ok(dir)) = (
        std::env::var("IMGD_CLAIM_CHILD_DB"),
        std::env::var("IMGD_CLAIM_CHILD_DIR"),
    ) else {
        return;
    };
    let owner = format!("child-{}", std::process::id());
    let mut store = Store::connect(
        &db,
        StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    // Start together: announce readiness, then wait for the parent's go.
    let dir = Path::new(&dir);
    std::fs::write(dir.join(format!("ready-{}", std::process::id())), "").unwrap();
    while !dir.join("go").exists() {
        std::thread::sleep(Duration::from_millis(2));
    }
    loop {
        let claimed = store.claim(&request(&owner, &BOTH, 3)).unwrap();
        if claimed.is_empty() {
            break;
        }
        let mut outcomes = Vec::new();
        for image in claimed {
            let mut done = Vec::new();
            for job in &image.jobs {
                println!("JOB {}", job.job_id);
                if job.module == imgd_modules::METADATA {
                    done.push((job.job_id, metadata_row(&owner)));
                } else {
                    done.push((
                        job.job_id,
                        ResultRow {
                            module: imgd_modules::TECHNICAL,
                            model_id: None,
                            model_version: None,
                            columns: vec![],
                            data: serde_json::json!({}),
                            vectors: Vec::new(),
                        },
                    ));
                }
            }
            outcomes.push(ImageOutcome {
                image_id: image.image_id,
                dimensions: None,
                done,
                failed: vec![],
                missing: false,
            });
        }
        let summary = store.commit_outcomes(&owner, &outcomes).unwrap();
        assert_eq!(summary.stale, 0);
        // Give the other process a turn at the lock, as real workers doing work between
        // claims would.
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn two_processes_never_get_the_same_job() {
    each_backend(|db| {
        let store = store_with_images(db, 400, 0);
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..2)
            .map(|_| {
                Command::new(&exe)
                    .args([
                        "--exact",
                        "claim_child",
                        "--ignored",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("IMGD_CLAIM_CHILD_DB", &db.url)
                    .env("IMGD_CLAIM_CHILD_DIR", db.dir())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let ready = || {
            std::fs::read_dir(db.dir())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with("ready-")
                })
                .count()
        };
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while ready() < 2 && std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::fs::write(db.dir().join("go"), "").unwrap();
        let mut seen = HashSet::new();
        let mut per_child = Vec::new();
        for child in children {
            let output = child.wait_with_output().unwrap();
            assert!(output.status.success(), "a claiming process failed");
            let stdout = String::from_utf8(output.stdout).unwrap();
            let ids: Vec<i64> = stdout
                .lines()
                // libtest may print its own "test claim_child ... " before the first line.
                .filter_map(|l| l.split_once("JOB ").map(|(_, id)| id))
                .map(|id| id.trim().parse().unwrap())
                .collect();
            per_child.push(ids.len());
            for id in ids {
                assert!(seen.insert(id), "job {id} was handed out twice");
            }
        }
        assert_eq!(seen.len(), 800, "every job handed out exactly once");
        assert!(
            per_child.iter().all(|&n| n > 0),
            "both processes claimed work: {per_child:?}"
        );
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
            800
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM result_metadata"), 400);
        assert_eq!(store.integrity_check().unwrap(), "ok");
    });
}

#[test]
fn a_claimed_ocr_job_carries_what_objects_found() {
    each_backend(|db| {
        let mut store = db.open();
        let found = |i: i64| {
            ScanAction::New(FoundFile {
                path: format!("/photos/img{i}.jpg"),
                fingerprint: Fingerprint {
                    size: 1000 + i,
                    mtime_ns: 1,
                    inode: None,
                },
                format: "jpeg".into(),
                content_hash: None,
                sha256: None,
            })
        };
        let both = [imgd_objects::OBJECTS, imgd_ocr::OCR];
        store.apply_scan(&[found(1), found(2)], &both, 0).unwrap();

        // Objects and OCR of an image go out together (the pipeline gates OCR in the same pass);
        // nothing is known about text yet.
        let first = store.claim(&request("w", &both, 10)).unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|i| i.jobs.len() == 2));
        assert!(
            first
                .iter()
                .all(|i| i.jobs.iter().all(|j| j.gate_open.is_none()))
        );

        // Objects finds text in image 1 and none in image 2; OCR fails once and is retried.
        let outcomes: Vec<ImageOutcome> = first
            .iter()
            .map(|image| {
                let job = |module| {
                    image
                        .jobs
                        .iter()
                        .find(|j| j.module == module)
                        .unwrap()
                        .job_id
                };
                ImageOutcome {
                    image_id: image.image_id,
                    dimensions: None,
                    done: vec![(
                        job(imgd_objects::OBJECTS),
                        ResultRow {
                            module: imgd_objects::OBJECTS,
                            model_id: Some("grounding-dino".into()),
                            model_version: Some("t".into()),
                            columns: vec![(
                                "has_text",
                                SqlValue::Integer(i64::from(image.path.ends_with("img1.jpg"))),
                            )],
                            data: serde_json::json!({}),
                            vectors: Vec::new(),
                        },
                    )],
                    failed: vec![JobFailure {
                        job_id: job(imgd_ocr::OCR),
                        error: "try again".into(),
                        permanent: false,
                    }],
                    missing: false,
                }
            })
            .collect();
        store.commit_outcomes("w", &outcomes).unwrap();

        // The retried OCR job goes out with what objects found.
        let second = store.claim(&request("w", &both, 10)).unwrap();
        assert_eq!(second.len(), 2);
        for image in &second {
            assert_eq!(image.jobs.len(), 1);
            assert_eq!(image.jobs[0].module, imgd_ocr::OCR);
            assert_eq!(
                image.jobs[0].gate_open,
                Some(image.path.ends_with("img1.jpg")),
                "{}",
                image.path
            );
        }
    });
}

/// Acks every job of `images` with a metadata row.
fn ack_all(store: &Store, owner: &str, images: &[imgd_store::queue::ClaimedImage]) {
    let outcomes: Vec<ImageOutcome> = images
        .iter()
        .map(|image| ImageOutcome {
            image_id: image.image_id,
            dimensions: None,
            done: image
                .jobs
                .iter()
                .map(|job| (job.job_id, metadata_row("Ok")))
                .collect(),
            failed: vec![],
            missing: false,
        })
        .collect();
    store.commit_outcomes(owner, &outcomes).unwrap();
}

#[test]
fn dead_owners_are_reclaimed_at_once_and_live_ones_are_left_alone() {
    each_backend(|db| {
        let mut store = store_with_images(db, 3, 0);
        store.claim(&request("dead", &BOTH, 2)).unwrap();
        store.claim(&request("alive", &BOTH, 1)).unwrap();
        let holders = store.lease_holders("me").unwrap();
        assert_eq!(
            holders
                .iter()
                .map(|h| (h.owner.as_str(), h.jobs))
                .collect::<Vec<_>>(),
            [("alive", 2), ("dead", 4)]
        );
        let reclaimed = store
            .reclaim_dead_owners("me", |owner| owner == "dead")
            .unwrap();
        assert_eq!(reclaimed, 4);
        assert_eq!(
            count(&store, "SELECT COUNT(*) FROM jobs WHERE state = 'leased'"),
            2
        );
        // The dead daemon's images come back as suspects, one death each, no attempt counted.
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND lease_expiries = 1"
            ),
            4
        );
        assert_eq!(count(&store, "SELECT MAX(attempts) FROM jobs"), 0);
        // A busy worker claims nothing while suspects wait; an idle one claims them.
        let busy = ClaimRequest {
            idle: false,
            ..request("me", &BOTH, 10)
        };
        assert!(store.claim(&busy).unwrap().is_empty());
        let suspects = store.claim(&request("me", &BOTH, 10)).unwrap();
        assert_eq!(suspects.len(), 2);
        assert!(suspects.iter().all(|s| s.lease_expiries == 1));
    });
}

#[test]
fn probation_groups_shrink_to_one() {
    use imgd_store::queue::probation_group;
    let sizes: Vec<usize> = (1..=6).map(probation_group).collect();
    assert_eq!(sizes, [64, 16, 4, 1, 1, 1]);
}

/// Regression: every crash counted a lease expiry against every image the dead daemon had
/// claimed, so a file that crashed the daemon on every start failed the images claimed with
/// it too once `max_lease_expiries` was reached.
#[test]
fn a_file_that_kills_every_daemon_fails_alone_and_its_companions_finish() {
    each_backend(|db| {
        let mut store = store_with_images(db, 200, 0);
        let poison: i64 = 137;
        let metadata = [imgd_modules::METADATA];
        let mut deaths = 0;
        for daemon in 0.. {
            assert!(daemon < 200, "the queue never drained");
            let owner = format!("daemon-{daemon}");
            store.reclaim_dead_owners(&owner, |_| true).unwrap();
            // One daemon's life: claim up to 64 images in flight, then process them; it dies
            // when the poison is among them.
            let mut died = false;
            loop {
                let mut in_flight = Vec::new();
                loop {
                    let claimed = store
                        .claim(&ClaimRequest {
                            idle: in_flight.is_empty(),
                            ..request(&owner, &metadata, 16)
                        })
                        .unwrap();
                    let empty = claimed.is_empty();
                    in_flight.extend(claimed);
                    // As the daemon's scheduler does: suspects in flight are never joined by
                    // other images.
                    let probation = in_flight.iter().any(|image| image.lease_expiries > 0);
                    if empty || probation || in_flight.len() >= 64 {
                        break;
                    }
                }
                if in_flight.is_empty() {
                    break;
                }
                if in_flight.iter().any(|image| image.image_id == poison) {
                    died = true;
                    deaths += 1;
                    break;
                }
                ack_all(&store, &owner, &in_flight);
            }
            if !died {
                break;
            }
        }
        let max_lease_expiries = StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        }
        .max_lease_expiries as i64;
        assert_eq!(deaths, max_lease_expiries);
        let failed: Vec<i64> = {
            store
                .db()
                .query_map(
                    "SELECT image_id FROM jobs WHERE module = 'metadata' AND state = 'failed'",
                    params![],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(failed, [poison]);
        assert_eq!(
            count(
                &store,
                "SELECT COUNT(*) FROM jobs WHERE module = 'metadata' AND state = 'done'"
            ),
            199
        );
        let error: String = store
            .db()
            .query_row(
                "SELECT last_error FROM jobs WHERE image_id = ?1 AND module = 'metadata'",
                params![poison],
                |r| r.get(0),
            )
            .unwrap();
        assert!(error.contains("the daemon died 10 times"), "{error}");
    });
}

/// Regression: one row that failed to write failed the whole transaction of up to 64 images,
/// which were retried 5 times and then dropped.
#[test]
fn a_row_that_cannot_be_written_fails_only_its_own_image() {
    each_backend(|db| {
        let mut store = store_with_images(db, 3, 0);
        let claimed = store
            .claim(&request("w", &[imgd_modules::METADATA], 3))
            .unwrap();
        assert_eq!(claimed.len(), 3);
        let mut broken = metadata_row("Broken");
        broken
            .columns
            .push(("no_such_column", SqlValue::Text("x".into())));
        let outcomes: Vec<ImageOutcome> = claimed
            .iter()
            .enumerate()
            .map(|(i, image)| ImageOutcome {
                image_id: image.image_id,
                dimensions: Some((10, 10)),
                done: vec![(
                    image.jobs[0].job_id,
                    if i == 1 {
                        broken.clone()
                    } else {
                        metadata_row("Fine")
                    },
                )],
                failed: vec![],
                missing: false,
            })
            .collect();
        let summary = store.commit_outcomes("w", &outcomes).unwrap();
        assert_eq!(summary.acked, 2);
        assert_eq!(summary.rejected_images, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM result_metadata"), 2);
        let (state, attempts, error): (String, i64, String) = store
            .db()
            .query_row(
                "SELECT state, attempts, last_error FROM jobs WHERE id = ?1",
                params![claimed[1].jobs[0].job_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((state.as_str(), attempts), ("queued", 1));
        assert!(error.contains("cannot store the result"), "{error}");
        assert!(error.contains("no_such_column"), "{error}");
        // Nothing of the rejected image was half-written: not even its dimensions.
        let width: Option<i64> = store
            .db()
            .query_row(
                "SELECT width FROM images WHERE id = ?1",
                params![claimed[1].image_id],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(width, None);
    });
}
