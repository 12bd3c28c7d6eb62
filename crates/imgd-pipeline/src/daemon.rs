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
//! images in flight, and takes back at once the leases of daemons of this host that died
//! ([`crate::owner`]); images they held come back as suspects, run apart from all others
//! until the one that kills the daemon is found (see [`imgd_store::queue`]).
//!
//! **Stopping.** On stop the scheduler claims nothing more, closes the decode queue and gives
//! the stages `stop_timeout` to finish what they hold; past it they abandon the rest, the
//! writer commits what it has, and every lease still held is released, unacked and without an
//! attempt counted, for the next run.
//!
//! **Supervision.** Every stage runs under a supervisor: a stage thread (or the scheduler) that
//! panics outside the per-image guards ends the run at once: no more claims, no more `Alive`
//! events (so systemd's watchdog stops being fed), [`Event::Failed`] for the health endpoint,
//! every lease released, and [`PipelineError::StageFailed`] naming the stage and the panic.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, bounded};
use imgd_core::{Module, Registry};
use imgd_decode::DecodeOptions;
use imgd_store::location::Location;
use imgd_store::queue::ClaimRequest;
use imgd_store::{Store, StoreError, StoreOptions};
use serde::Serialize;

use crate::budget::PixelBudget;
use crate::decode_stage::{DecodeStage, panic_text};
use crate::fault::{self, Fault};
use crate::infer_stage::{InferStage, InferStats};
use crate::messages::Work;
use crate::metrics::{Metrics, QueueState};
use crate::owner;
use crate::runner::{CpuAnalysis, ModelRunner, SharedPrepare};
pub use crate::writer_stage::WriterConfig;
use crate::writer_stage::{WriterStage, WriterStats};

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
    /// What the decoded pixels of the images in flight may take, in bytes: the scheduler
    /// claims only while they take less (one image at a time may always be in flight).
    pub pixel_budget: u64,
    /// How often an idle daemon looks for new work.
    pub poll_interval: Duration,
    /// When the writer commits.
    pub writer: WriterConfig,
    /// Decoder limits.
    pub decode: DecodeOptions,
    /// Follow the modules' gates ([`imgd_core::Gate`]): a gated job (OCR) whose gate stays
    /// shut (objects found no text) is settled with its module's skipped row without running,
    /// and it waits for its gate's result when this daemon runs both.
    pub follow_gates: bool,
    /// The most images claimed and not yet written. Slow modules (the cloud API) hold images
    /// for seconds; this bounds the memory their decoded tiers take and the leases kept alive.
    pub max_in_flight: usize,
    /// How long a stop may take: the work in flight that finishes within it is committed, the
    /// rest is released to the queue.
    pub stop_timeout: Duration,
    /// Where the writer sends the id of each image it has committed (never blocking: the
    /// channel is unbounded); the XMP sidecar thread listens.
    pub committed_images: Option<crossbeam_channel::Sender<i64>>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            decode_threads: 0,
            claim_batch: 16,
            lease: Duration::from_secs(300),
            max_attempts: 3,
            pixel_budget: 1 << 30,
            poll_interval: Duration::from_secs(2),
            writer: WriterConfig::default(),
            decode: DecodeOptions::default(),
            follow_gates: true,
            max_in_flight: 1024,
            stop_timeout: Duration::from_secs(30),
            committed_images: None,
        }
    }
}

/// When the run ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunMode {
    /// Drain the queue, wait for images other live daemons hold, then return.
    Once,
    /// Drain the queue, then return at once; [`RunSummary::leased_elsewhere`] counts the jobs
    /// other live daemons still hold.
    OnceNoWait,
    /// Keep looking for work until stopped.
    Forever,
}

impl RunMode {
    fn drains(self) -> bool {
        self != RunMode::Forever
    }
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
    /// Jobs taken back from daemons of this host that had died.
    pub reclaimed: u64,
    /// Jobs released unfinished at the end (a stop past `stop_timeout`).
    pub released: u64,
    /// Jobs other live daemons still held when a [`RunMode::OnceNoWait`] run ended.
    pub leased_elsewhere: u64,
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
    /// A stage died: the run is ending with [`PipelineError::StageFailed`].
    Failed,
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
    /// A stage ended unexpectedly (it panicked outside the per-image guards). The leases of
    /// the images in flight were released.
    #[error("the {stage} stage failed: {message}")]
    StageFailed {
        /// The stage: `decode`, `inference`, `writer` or `scheduler`.
        stage: &'static str,
        /// The panic's message.
        message: String,
    },
}

/// The modules a run serves.
pub struct Modules {
    /// Every module this build knows: result tables, migrations, search text, gates.
    pub registry: Registry,
    /// The CPU modules the decode threads run.
    pub analyses: Vec<&'static dyn CpuAnalysis>,
    /// The model runners the inference thread owns, one per model module that loaded.
    pub runners: Vec<Box<dyn ModelRunner>>,
}

impl Modules {
    /// The modules this pipeline can run: one per CPU analysis and per runner.
    pub fn runnable(&self) -> Vec<Module> {
        let mut modules: Vec<Module> = self.analyses.iter().map(|a| a.module()).collect();
        modules.extend(self.runners.iter().map(|r| r.module()));
        modules.sort();
        modules.dedup();
        modules
    }
}

pub use crate::owner::lease_owner;

/// The store's options for a run with `config` serving `registry`'s modules.
fn store_options(config: &PipelineConfig, registry: &Registry) -> StoreOptions {
    StoreOptions {
        max_attempts: config.max_attempts,
        modules: registry.clone(),
        ..StoreOptions::default()
    }
}

/// Watches the stage threads: the first one to die records why, and the scheduler ends the
/// run on it.
#[derive(Default)]
struct Supervisor {
    failure: Mutex<Option<(&'static str, String)>>,
    failed: AtomicBool,
}

impl Supervisor {
    fn record(&self, stage: &'static str, message: String) {
        tracing::error!("the {stage} stage failed: {message}");
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert((stage, message));
        self.failed.store(true, Ordering::SeqCst);
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::SeqCst)
    }

    fn error(&self) -> Option<PipelineError> {
        let failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure
            .as_ref()
            .map(|(stage, message)| PipelineError::StageFailed {
                stage,
                message: message.clone(),
            })
    }

    /// Starts a stage thread whose panic is recorded instead of lost.
    fn spawn<T: Send + 'static>(
        self: &Arc<Self>,
        name: String,
        stage: &'static str,
        body: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<Option<T>>, PipelineError> {
        let supervisor = Arc::clone(self);
        thread::Builder::new()
            .name(name)
            .spawn(move || match catch_unwind(AssertUnwindSafe(body)) {
                Ok(value) => Some(value),
                Err(payload) => {
                    supervisor.record(stage, panic_text(payload.as_ref()));
                    None
                }
            })
            .map_err(|e| PipelineError::Spawn(stage, e))
    }
}

/// Waits for `handle` until `deadline`; `None` when it is still running then.
fn join_by<T>(handle: JoinHandle<Option<T>>, deadline: Instant) -> Option<Option<T>> {
    while !handle.is_finished() {
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
    handle.join().ok()
}

/// The running stages, as the scheduler sees them.
struct Stages {
    claim_tx: Option<Sender<Work>>,
    decode: Vec<JoinHandle<Option<()>>>,
    infer: Option<JoinHandle<Option<InferStats>>>,
    writer: Option<JoinHandle<Option<WriterStats>>>,
    /// Set past the stop budget (or on a failure): stages drop what they still hold.
    abandon: Arc<AtomicBool>,
    decodes: Arc<AtomicU64>,
    in_flight: Arc<Mutex<HashMap<i64, Vec<i64>>>>,
    batch_totals: Arc<BatchTotals>,
    budget: Arc<PixelBudget>,
}

/// Starts the writer, the inference thread and the decode threads.
fn start_stages(
    db: &Location,
    config: &PipelineConfig,
    modules: Modules,
    metrics: &Arc<Metrics>,
    owner: &str,
    supervisor: &Arc<Supervisor>,
) -> Result<Stages, PipelineError> {
    let writer_store = Store::open_location(db, store_options(config, &modules.registry))?;
    let Modules {
        analyses, runners, ..
    } = modules;
    let analyses: Arc<HashMap<Module, &'static dyn CpuAnalysis>> =
        Arc::new(analyses.into_iter().map(|a| (a.module(), a)).collect());
    let decode_threads = if config.decode_threads == 0 {
        thread::available_parallelism().map_or(2, |n| n.get())
    } else {
        config.decode_threads
    };
    let budget = PixelBudget::new(config.pixel_budget, Arc::clone(metrics));
    let decodes = Arc::new(AtomicU64::new(0));
    let in_flight: Arc<Mutex<HashMap<i64, Vec<i64>>>> = Arc::default();
    let abandon = Arc::new(AtomicBool::new(false));

    let (claim_tx, claim_rx) = bounded(decode_threads * 2);
    let (decoded_tx, decoded_rx) = bounded(config.claim_batch.max(8) * 2);
    let (finished_tx, finished_rx) = bounded(config.writer.flush_images.max(8) * 2);

    let writer = WriterStage {
        store: writer_store,
        owner: owner.to_string(),
        config: config.writer,
        metrics: Arc::clone(metrics),
        in_flight: Arc::clone(&in_flight),
        abandon: Arc::clone(&abandon),
        committed: config.committed_images.clone(),
    };
    let writer = supervisor.spawn("imgd-writer".into(), "writer", move || {
        writer.run(finished_rx)
    })?;

    let preparers: Arc<HashMap<Module, SharedPrepare>> = Arc::new(
        runners
            .iter()
            .filter_map(|r| r.preparer().map(|p| (r.module(), p)))
            .collect(),
    );
    let mut runners = runners;
    let batch_totals = Arc::new(BatchTotals::default());
    for runner in &mut runners {
        let metrics = Arc::clone(metrics);
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
        follow_gates: config.follow_gates,
        abandon: Arc::clone(&abandon),
    };
    let infer_finished_tx = finished_tx.clone();
    let infer = supervisor.spawn("imgd-infer".into(), "inference", move || {
        infer.run(decoded_rx, infer_finished_tx)
    })?;
    drop(finished_tx);

    let mut decode = Vec::new();
    for i in 0..decode_threads {
        let stage = DecodeStage {
            options: config.decode,
            budget: Arc::clone(&budget),
            metrics: Arc::clone(metrics),
            decodes: Arc::clone(&decodes),
            follow_gates: config.follow_gates,
            analyses: Arc::clone(&analyses),
            preparers: Arc::clone(&preparers),
            abandon: Arc::clone(&abandon),
        };
        let rx = claim_rx.clone();
        let tx = decoded_tx.clone();
        decode.push(
            supervisor.spawn(format!("imgd-decode-{i}"), "decode", move || {
                stage.run(rx, tx)
            })?,
        );
    }
    Ok(Stages {
        claim_tx: Some(claim_tx),
        decode,
        infer: Some(infer),
        writer: Some(writer),
        abandon,
        decodes,
        in_flight,
        batch_totals,
        budget,
    })
}

/// Why the scheduler loop ended.
enum LoopEnd {
    /// Stopped, or the queue is drained in a `Once` mode.
    Done,
    /// A stage died.
    StageFailed,
    /// The database failed.
    Store(StoreError),
}

/// The scheduler: the caller's thread. It claims, extends leases, refreshes the queue gauges
/// and reports liveness, until stopped, drained or a stage fails.
struct Scheduler<'a> {
    store: Store,
    owner: &'a str,
    config: &'a PipelineConfig,
    modules: Vec<Module>,
    metrics: &'a Metrics,
    supervisor: &'a Supervisor,
    stop: &'a AtomicBool,
    mode: RunMode,
    images: u64,
    reclaimed: u64,
    leased_elsewhere: u64,
    /// Suspect images in flight: nothing else is claimed while any is.
    probation: HashSet<i64>,
    waiting_logged: bool,
    /// Images finished at each heartbeat of the last minute, for the rate the heartbeat
    /// records.
    beats: VecDeque<(Instant, u64)>,
    /// When dead daemons' leases were last looked for (at most once a second).
    last_reaped: Option<Instant>,
}

impl Scheduler<'_> {
    fn run(&mut self, stages: &Stages, on_event: &mut dyn FnMut(Event)) -> LoopEnd {
        let mut last_extend = Instant::now();
        let mut last_alive = Instant::now() - Duration::from_secs(1);
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        let mut outage: Option<Instant> = None;
        while !self.stop.load(Ordering::Relaxed) {
            if self.supervisor.failed() {
                return LoopEnd::StageFailed;
            }
            fault::point(Fault::Scheduler);
            if last_alive.elapsed() >= Duration::from_secs(1) {
                on_event(Event::Alive);
                last_alive = Instant::now();
            }
            if last_gauges.elapsed() >= Duration::from_secs(10) {
                self.refresh_gauges();
                self.heartbeat();
                last_gauges = Instant::now();
            }
            if last_extend.elapsed() >= self.config.lease / 3 {
                self.extend_leases(stages);
                last_extend = Instant::now();
            }
            match self.turn(stages) {
                Ok(true) => outage = None,
                Ok(false) => return LoopEnd::Done,
                Err(err) if err.is_transient() => {
                    // The server restarts or is unreachable: the work in flight carries on,
                    // and claims resume once it answers (the store connects again).
                    let since = *outage.get_or_insert_with(Instant::now);
                    tracing::warn!(
                        "the database is unavailable ({}s so far), trying again: {err}",
                        since.elapsed().as_secs()
                    );
                    sleep_unless_stopped(Duration::from_secs(1), self.stop);
                }
                Err(err) => {
                    tracing::error!("claim failed: {err}");
                    return LoopEnd::Store(err);
                }
            }
        }
        LoopEnd::Done
    }

    /// One claim round; `false` when a `Once` run is complete.
    fn turn(&mut self, stages: &Stages) -> Result<bool, StoreError> {
        let in_flight = lock(&stages.in_flight);
        self.probation.retain(|id| in_flight.contains_key(id));
        let held = in_flight.len();
        drop(in_flight);
        let claim_tx = stages.claim_tx.as_ref().expect("open until the loop ends");
        let room = (claim_tx.capacity().unwrap_or(1) - claim_tx.len())
            .min(self.config.max_in_flight.max(1).saturating_sub(held));
        let over_budget = held > 0 && !stages.budget.has_room();
        if room == 0 || over_budget || !self.probation.is_empty() {
            thread::sleep(Duration::from_millis(5));
            return Ok(true);
        }
        if self
            .last_reaped
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            self.reclaim_dead()?;
            self.last_reaped = Some(Instant::now());
        }
        let claimed = self.store.claim(&ClaimRequest {
            owner: self.owner,
            modules: &self.modules,
            max_images: room.min(self.config.claim_batch.max(1)),
            lease: self.config.lease,
            idle: held == 0,
        })?;
        if claimed.is_empty() {
            if self.mode.drains() && held == 0 {
                return self.drained();
            }
            if self.mode.drains() {
                sleep_unless_stopped(Duration::from_millis(20), self.stop);
            } else {
                // Woken at once by new work on PostgreSQL; a poll on SQLite.
                self.store
                    .wait_for_work(self.config.poll_interval, self.stop)?;
            }
            return Ok(true);
        }
        for image in claimed {
            self.images += 1;
            if image.lease_expiries > 0 {
                self.probation.insert(image.image_id);
            }
            lock(&stages.in_flight).insert(
                image.image_id,
                image.jobs.iter().map(|j| j.job_id).collect(),
            );
            if claim_tx.send(Work::from(image)).is_err() {
                break;
            }
        }
        Ok(true)
    }

    /// Records the images this daemon finished and its rate over the last minute in its
    /// `workers` row.
    fn heartbeat(&mut self) {
        let now = Instant::now();
        let images = self.metrics.images_processed_total();
        self.beats.push_back((now, images));
        while self
            .beats
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > Duration::from_secs(60))
        {
            self.beats.pop_front();
        }
        let rate = match self.beats.front() {
            Some((at, first)) if now.duration_since(*at) >= Duration::from_secs(1) => {
                (images - first) as f64 / now.duration_since(*at).as_secs_f64()
            }
            _ => 0.0,
        };
        if let Err(err) =
            self.store
                .worker_heartbeat(self.owner, images, rate, imgd_store::now_ms())
        {
            tracing::warn!("cannot record a heartbeat: {err}");
        }
    }

    /// Takes back the leases of daemons that died: of this host, proven by their processes;
    /// of any host on PostgreSQL, proven by their session locks.
    fn reclaim_dead(&mut self) -> Result<(), StoreError> {
        let now = imgd_store::now_ms();
        self.store
            .bury_dead_workers(owner::host_name(), owner::is_dead_here, now)?;
        let elsewhere = self.store.dead_elsewhere(self.owner)?;
        for dead in &elsewhere {
            self.store.worker_ended(dead, true, now)?;
        }
        let is_dead =
            |owner: &str| owner::is_dead_here(owner) || elsewhere.iter().any(|d| d == owner);
        let reclaimed = self.store.reclaim_dead_owners(self.owner, is_dead)?;
        if reclaimed > 0 {
            tracing::warn!(
                "took back {reclaimed} jobs from a daemon that died; their images run apart \
                 from others until the one that kills the daemon is found"
            );
            self.reclaimed += reclaimed as u64;
        }
        Ok(())
    }

    /// The queue has nothing for this daemon and it holds nothing: whether a `Once` run ends
    /// now (`false`) or waits for images other live daemons hold.
    fn drained(&mut self) -> Result<bool, StoreError> {
        let holders = self.store.lease_holders(self.owner)?;
        if holders.is_empty() {
            return Ok(false);
        }
        let jobs: i64 = holders.iter().map(|h| h.jobs).sum();
        let owners: Vec<&str> = holders.iter().map(|h| h.owner.as_str()).collect();
        if self.mode == RunMode::OnceNoWait {
            tracing::warn!(
                "{jobs} jobs are still leased by other daemons ({})",
                owners.join(", ")
            );
            self.leased_elsewhere = jobs.max(0) as u64;
            return Ok(false);
        }
        if !self.waiting_logged {
            tracing::info!(
                "the queue is empty; waiting for {jobs} jobs leased by other daemons ({}) to \
                 finish or their leases to expire (--no-wait does not wait)",
                owners.join(", ")
            );
            self.waiting_logged = true;
        }
        sleep_unless_stopped(Duration::from_millis(250), self.stop);
        Ok(true)
    }

    fn extend_leases(&self, stages: &Stages) {
        let jobs: Vec<i64> = lock(&stages.in_flight)
            .values()
            .flatten()
            .copied()
            .collect();
        if let Err(err) = self
            .store
            .extend_lease(self.owner, &jobs, self.config.lease)
        {
            tracing::warn!("cannot extend leases: {err}");
        }
    }

    fn refresh_gauges(&self) {
        if let Ok(status) = self.store.queue_status(0) {
            let mut totals = [0i64; 4];
            for counts in status.modules.values() {
                totals[0] += counts.queued;
                totals[1] += counts.leased;
                totals[2] += counts.done;
                totals[3] += counts.failed;
            }
            for (state, total) in QueueState::ALL.iter().zip(totals) {
                self.metrics.set_queue_jobs(*state, total.max(0) as u64);
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs the pipeline on the database at `db` until the queue is empty (`Once`), `stop` is set
/// or a stage fails. The caller's thread is the scheduler.
pub fn run(
    db: &Location,
    config: &PipelineConfig,
    modules: Modules,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    mode: RunMode,
    on_event: &mut dyn FnMut(Event),
) -> Result<RunSummary, PipelineError> {
    let owner = owner::lease_owner();
    // Its own connection: the end is recorded however the run ends.
    let workers = Store::open_location(db, store_options(config, &modules.registry))?;
    // Locked before it is listed: a worker found listed without its lock is dead.
    workers.hold_worker_lock(&owner)?;
    workers.register_worker(
        &owner,
        owner::host_name(),
        std::process::id(),
        imgd_store::now_ms(),
    )?;
    let counted = Arc::clone(&metrics);
    let result = run_as(db, config, modules, metrics, stop, mode, on_event, &owner);
    let now = imgd_store::now_ms();
    let ended = workers
        .worker_heartbeat(&owner, counted.images_processed_total(), 0.0, now)
        .and_then(|()| workers.worker_ended(&owner, false, now));
    if let Err(err) = ended {
        tracing::warn!("cannot record the end of this worker: {err}");
    }
    result
}

/// [`run`] as the worker `owner`.
#[allow(clippy::too_many_arguments)]
fn run_as(
    db: &Location,
    config: &PipelineConfig,
    modules: Modules,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    mode: RunMode,
    on_event: &mut dyn FnMut(Event),
    owner: &str,
) -> Result<RunSummary, PipelineError> {
    let started = Instant::now();
    let owner = owner.to_string();
    for runner in &modules.runners {
        metrics.register_model(runner.model_name());
    }
    let supervisor = Arc::new(Supervisor::default());
    let store = Store::open_location(db, store_options(config, &modules.registry))?;
    // While this connection lives, workers on other hosts know this one runs.
    store.hold_worker_lock(&owner)?;
    let mut scheduler = Scheduler {
        store,
        owner: &owner,
        config,
        modules: modules.runnable(),
        metrics: &metrics,
        supervisor: &supervisor,
        stop: &stop,
        mode,
        images: 0,
        reclaimed: 0,
        leased_elsewhere: 0,
        probation: HashSet::new(),
        waiting_logged: false,
        last_reaped: None,
        beats: VecDeque::new(),
    };
    // Daemons of this host that died before this start: their images are not left waiting
    // for their leases to run out.
    scheduler.reclaim_dead()?;
    let mut stages = start_stages(db, config, modules, &metrics, &owner, &supervisor)?;
    on_event(Event::Ready);

    let end = catch_unwind(AssertUnwindSafe(|| scheduler.run(&stages, on_event))).unwrap_or_else(
        |payload| {
            supervisor.record("scheduler", panic_text(payload.as_ref()));
            LoopEnd::StageFailed
        },
    );
    if let LoopEnd::StageFailed = end {
        on_event(Event::Failed);
        stages.abandon.store(true, Ordering::SeqCst);
        let released = scheduler.store.release_all(&owner)?;
        tracing::error!("released the {released} jobs in flight");
        return Err(supervisor.error().unwrap_or(PipelineError::StageFailed {
            stage: "scheduler",
            message: "ended unexpectedly".into(),
        }));
    }
    if stop.load(Ordering::Relaxed) {
        on_event(Event::Stopping);
    }
    let (infer_stats, writer_stats) = finish_stages(&mut stages, config.stop_timeout);
    if supervisor.failed() {
        on_event(Event::Failed);
        scheduler.store.release_all(&owner)?;
        return Err(supervisor.error().expect("recorded"));
    }
    let released = scheduler.store.release_all(&owner)?;
    if released > 0 {
        tracing::warn!(
            "released {released} jobs still in flight at the end of the stop budget; they run \
             again next time"
        );
    }
    if let LoopEnd::Store(err) = end {
        return Err(err.into());
    }
    let totals = &stages.batch_totals;
    Ok(RunSummary {
        images: scheduler.images,
        decodes: stages.decodes.load(Ordering::Relaxed),
        jobs_done: writer_stats.jobs_done,
        jobs_failed: writer_stats.jobs_failed,
        stale: writer_stats.stale,
        transactions: writer_stats.transactions,
        infer_busy_seconds: infer_stats.busy.as_secs_f64(),
        infer_wall_seconds: infer_stats.wall.as_secs_f64(),
        batches: totals.batches.load(Ordering::Relaxed),
        batched_items: totals.items.load(Ordering::Relaxed),
        model_seconds: totals.model_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        reclaimed: scheduler.reclaimed,
        released: released as u64,
        leased_elsewhere: scheduler.leased_elsewhere,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Closes the decode queue and lets the stages finish what they hold within `budget`; past it
/// they abandon the rest (the inference thread may still be inside one model call: it is not
/// waited for more than a moment) and the writer commits what it has.
fn finish_stages(stages: &mut Stages, budget: Duration) -> (InferStats, WriterStats) {
    drop(stages.claim_tx.take());
    let deadline = Instant::now() + budget;
    let all_done = |s: &Stages| {
        s.decode.iter().all(JoinHandle::is_finished)
            && s.infer.as_ref().is_none_or(JoinHandle::is_finished)
            && s.writer.as_ref().is_none_or(JoinHandle::is_finished)
    };
    while !all_done(stages) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    if !all_done(stages) {
        tracing::warn!("the stop budget of {budget:?} ran out: releasing the work still in flight");
        stages.abandon.store(true, Ordering::SeqCst);
    }
    let grace = Instant::now() + Duration::from_secs(2);
    for handle in std::mem::take(&mut stages.decode) {
        join_by(handle, grace);
    }
    let infer_stats = stages
        .infer
        .take()
        .and_then(|handle| join_by(handle, grace).flatten())
        .unwrap_or_default();
    // The writer ends once its input closes, or at once when abandoning; either way it
    // commits what it holds first.
    stages.abandon.store(true, Ordering::SeqCst);
    let writer_stats = stages
        .writer
        .take()
        .and_then(|handle| handle.join().ok().flatten())
        .unwrap_or_default();
    (infer_stats, writer_stats)
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
