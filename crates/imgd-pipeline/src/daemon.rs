//! The daemon: wires the scheduler, the decode threads, the inference thread and the writer
//! thread together, and stops them in order.
//!
//! ```text
//! scheduler ──claims──▶ [decode ×N] ──▶ [inference ×1] ──▶ [writer ×1] ──▶ SQLite
//!    (caller)   bounded        bounded           bounded
//! ```
//!
//! Every channel is bounded, so a slow stage holds the ones before it back instead of letting
//! memory grow. The scheduler claims only when the decode queue has room, extends the leases of
//! images in flight, and on stop claims nothing more, closes the decode queue and waits for the
//! stages to finish what they hold; the writer flushes last. Anything still leased afterwards
//! (a commit that kept failing) is released back to the queue.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use imgd_core::Module;
use imgd_decode::{DecodeCache, DecodeOptions};
use imgd_store::queue::ClaimRequest;
use imgd_store::{Store, StoreError, StoreOptions};
use serde::Serialize;

use crate::decode_stage::DecodeStage;
use crate::infer_stage::InferStage;
use crate::metrics::{Metrics, QueueState};
use crate::runner::{ModelRunner, SharedPrepare};
pub use crate::writer_stage::WriterConfig;
use crate::writer_stage::WriterStage;

/// The pipeline's settings.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Decode threads (0: one per CPU).
    pub decode_threads: usize,
    /// Images claimed per queue round-trip.
    pub claim_batch: usize,
    /// How long a claim's lease lasts; extended while the image is in flight.
    pub lease: Duration,
    /// Failed attempts before a job is marked failed.
    pub max_attempts: u32,
    /// Byte budget of the decode cache.
    pub cache_bytes: u64,
    /// How often an idle daemon looks for new work.
    pub poll_interval: Duration,
    /// When the writer commits.
    pub writer: WriterConfig,
    /// Decoder limits.
    pub decode: DecodeOptions,
    /// Skip OCR on images where the objects module ran and found no text (OCR then waits
    /// for objects when this daemon runs both).
    pub ocr_needs_text: bool,
    /// The most images claimed and not yet written. Slow modules (the cloud API) hold images
    /// for seconds; this bounds the memory their decoded tiers take and the leases kept alive.
    pub max_in_flight: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            decode_threads: 0,
            claim_batch: 16,
            lease: Duration::from_secs(300),
            max_attempts: 3,
            cache_bytes: 1 << 30,
            poll_interval: Duration::from_secs(2),
            writer: WriterConfig::default(),
            decode: DecodeOptions::default(),
            ocr_needs_text: true,
            max_in_flight: 1024,
        }
    }
}

/// Whether to stop when the queue is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Drain the queue, then return.
    Once,
    /// Keep looking for work until stopped.
    Forever,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct RunSummary {
    /// Images claimed and handled.
    pub images: u64,
    /// Pixel decodes (at most one per image that needed pixels).
    pub decodes: u64,
    /// Jobs acked with a result.
    pub jobs_done: u64,
    /// Failed attempts recorded.
    pub jobs_failed: u64,
    /// Results dropped because their lease was lost meanwhile.
    pub stale: u64,
    /// Writer transactions.
    pub transactions: u64,
    /// Seconds the inference thread spent running models.
    pub infer_busy_seconds: f64,
    /// Seconds from the inference thread's first image to its end.
    pub infer_wall_seconds: f64,
    /// Model batches run, every module together.
    pub batches: u64,
    /// Requests in those batches: `batched_items / batches` is the mean batch size.
    pub batched_items: u64,
    /// Seconds spent inside the models' batched calls, a part of `infer_busy_seconds` (the
    /// rest is the inference thread's own work: queues, tensors in and out, results).
    pub model_seconds: f64,
    /// Wall-clock seconds of the run.
    pub seconds: f64,
}

/// Events the caller may report (e.g. to systemd).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Every stage is up.
    Ready,
    /// The scheduler is alive (sent every loop turn, at most once a second).
    Alive,
    /// A stop was requested; stages are finishing.
    Stopping,
}

/// Errors that stop the pipeline.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stage thread could not be started.
    #[error("cannot start the {0} thread: {1}")]
    Spawn(&'static str, std::io::Error),
    /// A stage thread panicked.
    #[error("the {0} thread panicked")]
    StagePanicked(&'static str),
}

/// The modules this pipeline can run: the CPU modules plus one per runner.
pub fn runnable_modules(runners: &[Box<dyn ModelRunner>]) -> Vec<Module> {
    let mut modules = vec![Module::Metadata, Module::Technical];
    modules.extend(runners.iter().map(|r| r.module()));
    modules.sort();
    modules.dedup();
    modules
}

/// A lease owner name unique to this process: `host:pid:nonce`.
pub fn lease_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}:{}:{nonce:08x}", std::process::id())
}

/// Runs the pipeline on the database at `db` until the queue is empty (`Once`) or `stop` is
/// set. The caller's thread is the scheduler.
pub fn run(
    db: &Path,
    config: &PipelineConfig,
    runners: Vec<Box<dyn ModelRunner>>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    mode: RunMode,
    on_event: &mut dyn FnMut(Event),
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let store_options = StoreOptions {
        max_attempts: config.max_attempts,
        ..StoreOptions::default()
    };
    let mut scheduler_store = Store::open(db, store_options.clone())?;
    let writer_store = Store::open(db, store_options)?;
    let owner = lease_owner();
    let modules = runnable_modules(&runners);
    for runner in &runners {
        metrics.register_model(runner.model_name());
    }
    let decode_threads = if config.decode_threads == 0 {
        thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.decode_threads
    };
    let cache = Arc::new(DecodeCache::new(config.cache_bytes));
    let decodes = Arc::new(AtomicU64::new(0));
    let in_flight: Arc<Mutex<HashMap<i64, Vec<i64>>>> = Arc::default();

    let (claim_tx, claim_rx) = bounded(decode_threads * 2);
    let (decoded_tx, decoded_rx) = bounded(config.claim_batch.max(8) * 2);
    let (finished_tx, finished_rx) = bounded(config.writer.flush_images.max(8) * 2);

    let writer = WriterStage {
        store: writer_store,
        owner: owner.clone(),
        config: config.writer,
        metrics: Arc::clone(&metrics),
        in_flight: Arc::clone(&in_flight),
    };
    let writer_handle = thread::Builder::new()
        .name("imgd-writer".into())
        .spawn(move || writer.run(finished_rx))
        .map_err(|e| PipelineError::Spawn("writer", e))?;

    let preparers: Arc<HashMap<Module, SharedPrepare>> = Arc::new(
        runners
            .iter()
            .filter_map(|r| r.preparer().map(|p| (r.module(), p)))
            .collect(),
    );
    let mut runners = runners;
    let batch_totals = Arc::new(BatchTotals::default());
    for runner in &mut runners {
        let metrics = Arc::clone(&metrics);
        let totals = Arc::clone(&batch_totals);
        runner.set_observer(Box::new(move |stats| {
            metrics.record_batch(stats);
            totals.batches.fetch_add(1, Ordering::Relaxed);
            totals
                .items
                .fetch_add(stats.items as u64, Ordering::Relaxed);
            totals
                .model_nanos
                .fetch_add(stats.busy.as_nanos() as u64, Ordering::Relaxed);
        }));
    }
    let infer = InferStage {
        runners,
        cache: Arc::clone(&cache),
        metrics: Arc::clone(&metrics),
        ocr_needs_text: config.ocr_needs_text,
    };
    let infer_finished_tx = finished_tx.clone();
    let infer_handle = thread::Builder::new()
        .name("imgd-infer".into())
        .spawn(move || infer.run(decoded_rx, infer_finished_tx))
        .map_err(|e| PipelineError::Spawn("inference", e))?;
    drop(finished_tx);

    let mut decode_handles = Vec::new();
    for i in 0..decode_threads {
        let stage = DecodeStage {
            options: config.decode,
            cache: Arc::clone(&cache),
            metrics: Arc::clone(&metrics),
            decodes: Arc::clone(&decodes),
            ocr_needs_text: config.ocr_needs_text,
            preparers: Arc::clone(&preparers),
        };
        let rx = claim_rx.clone();
        let tx = decoded_tx.clone();
        decode_handles.push(
            thread::Builder::new()
                .name(format!("imgd-decode-{i}"))
                .spawn(move || stage.run(rx, tx))
                .map_err(|e| PipelineError::Spawn("decode", e))?,
        );
    }
    drop(claim_rx);
    drop(decoded_tx);
    on_event(Event::Ready);

    // The scheduler loop.
    let mut images = 0u64;
    let mut last_extend = Instant::now();
    let mut last_alive = Instant::now();
    let mut last_gauges = Instant::now() - Duration::from_secs(60);
    let mut scheduler_error = None;
    while !stop.load(Ordering::Relaxed) {
        if last_alive.elapsed() >= Duration::from_secs(1) {
            on_event(Event::Alive);
            last_alive = Instant::now();
        }
        if last_gauges.elapsed() >= Duration::from_secs(10) {
            if let Ok(status) = scheduler_store.queue_status(0) {
                let mut totals = [0i64; 4];
                for counts in status.modules.values() {
                    totals[0] += counts.queued;
                    totals[1] += counts.leased;
                    totals[2] += counts.done;
                    totals[3] += counts.failed;
                }
                for (state, total) in QueueState::ALL.iter().zip(totals) {
                    metrics.set_queue_jobs(*state, total.max(0) as u64);
                }
            }
            last_gauges = Instant::now();
        }
        if last_extend.elapsed() >= config.lease / 3 {
            let jobs: Vec<i64> = in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .flatten()
                .copied()
                .collect();
            if let Err(err) = scheduler_store.extend_lease(&owner, &jobs, config.lease) {
                tracing::warn!("cannot extend leases: {err}");
            }
            last_extend = Instant::now();
        }
        let held = in_flight.lock().unwrap_or_else(|e| e.into_inner()).len();
        let room = (claim_tx.capacity().unwrap_or(1) - claim_tx.len())
            .min(config.max_in_flight.max(1).saturating_sub(held));
        if room == 0 {
            thread::sleep(Duration::from_millis(5));
            continue;
        }
        let request = ClaimRequest {
            owner: &owner,
            modules: &modules,
            max_images: room.min(config.claim_batch.max(1)),
            lease: config.lease,
        };
        let claimed = match scheduler_store.claim(&request) {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::error!("claim failed: {err}");
                scheduler_error = Some(err);
                break;
            }
        };
        if claimed.is_empty() {
            let idle = in_flight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if mode == RunMode::Once && idle {
                break;
            }
            let pause = if mode == RunMode::Once {
                Duration::from_millis(20)
            } else {
                config.poll_interval
            };
            sleep_unless_stopped(pause, &stop);
            continue;
        }
        for image in claimed {
            images += 1;
            in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(
                image.image_id,
                image.jobs.iter().map(|j| j.job_id).collect(),
            );
            if claim_tx.send(image).is_err() {
                break;
            }
        }
    }
    if stop.load(Ordering::Relaxed) {
        on_event(Event::Stopping);
    }

    // Stop in order: decode threads finish their queue, then inference drains, then the
    // writer flushes.
    drop(claim_tx);
    for handle in decode_handles {
        handle
            .join()
            .map_err(|_| PipelineError::StagePanicked("decode"))?;
    }
    let infer_stats = infer_handle
        .join()
        .map_err(|_| PipelineError::StagePanicked("inference"))?;
    let writer_stats = writer_handle
        .join()
        .map_err(|_| PipelineError::StagePanicked("writer"))?;
    let released = scheduler_store.release_all(&owner)?;
    if released > 0 {
        tracing::warn!("released {released} jobs that were still leased at shutdown");
    }
    if let Some(err) = scheduler_error {
        return Err(err.into());
    }
    Ok(RunSummary {
        images,
        decodes: decodes.load(Ordering::Relaxed),
        jobs_done: writer_stats.jobs_done,
        jobs_failed: writer_stats.jobs_failed,
        stale: writer_stats.stale,
        transactions: writer_stats.transactions,
        infer_busy_seconds: infer_stats.busy.as_secs_f64(),
        infer_wall_seconds: infer_stats.wall.as_secs_f64(),
        batches: batch_totals.batches.load(Ordering::Relaxed),
        batched_items: batch_totals.items.load(Ordering::Relaxed),
        model_seconds: batch_totals.model_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// What the runners' batch observers add up for [`RunSummary`].
#[derive(Default)]
struct BatchTotals {
    batches: AtomicU64,
    items: AtomicU64,
    model_nanos: AtomicU64,
}

fn sleep_unless_stopped(duration: Duration, stop: &AtomicBool) {
    let until = Instant::now() + duration;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
    }
}
