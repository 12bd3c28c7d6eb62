//! [`CloudRunner`]: the cloud module as a [`ModelRunner`] of the inference thread, backed by its
//! own async worker.
//!
//! ```text
//!  inference thread                         async worker (tokio, 1–2 threads)
//!  ─────────────────                        ───────────────────────────────────────────────
//!  submit(key, tiers) ──unbounded channel──▶ dispatcher ─▶ per image: JPEG encode (blocking
//!    returns at once                          pool, ≤ 2 at once) ─▶ one call per prompt, each
//!                                             through the shared limiter, with retries
//!  ready(): results waiting? ◀──channel──── one ResultRow (or error) per image
//!  run():   collects them
//!  next_deadline(): now + poll while images are in flight
//! ```
//!
//! `submit`, `ready`, `next_deadline`, `pending` and `run` never wait on the network: the only
//! blocking call is `run(CloseReason::Draining)` at shutdown, which stops new calls from
//! starting, waits for the calls already in flight (each bounded by the request timeout), and
//! returns the images that could not finish with an error (their jobs are retried later).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use image::RgbImage;
use imgd_core::{Module, ResultRow, SqlValue};
use imgd_infer::batcher::{BatchConfig, BatchStats, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey, ModelRunner, RunnerResults};
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::CloudError;
use crate::client::{Answer, CallError, Caller};
use crate::config::CloudConfig;
use crate::limiter::{Limiter, LimiterConfig};
use crate::request::{EncodedImage, encode_jpeg, estimate_tokens, request_body};
use crate::stats::{CloudStats, add};

/// The shortest poll interval while calls are in flight.
const MIN_POLL: Duration = Duration::from_millis(10);
/// JPEG encodes at once (CPU work, on tokio's blocking pool).
const ENCODERS: usize = 2;

type Outcome = (JobKey, Result<ResultRow, String>);
type Observer = Box<dyn FnMut(&BatchStats) + Send>;

struct Job {
    key: JobKey,
    image: Arc<RgbImage>,
}

/// What every task of the worker shares.
struct Shared {
    caller: Caller,
    config: Arc<CloudConfig>,
    model_version: String,
    encoders: Semaphore,
    cancel: watch::Receiver<bool>,
    results: Sender<Outcome>,
}

/// The cloud module's runner (see the [module docs](self)).
pub struct CloudRunner {
    name: String,
    runtime: Option<tokio::runtime::Runtime>,
    jobs: Option<mpsc::UnboundedSender<Job>>,
    results: Receiver<Outcome>,
    outstanding: HashSet<JobKey>,
    cancel: watch::Sender<bool>,
    poll: Duration,
    max_per_run: usize,
    stall_limit: Duration,
    stats: Arc<CloudStats>,
    limiter: Arc<Limiter>,
    observer: Option<Observer>,
}

/// The `model_version` stored with each row: a digest of everything that shapes the answers
/// (prompts, schemas, detail, JPEG quality, output limit, temperature), so rows made with
/// other settings can be told apart.
pub fn model_version(config: &CloudConfig) -> String {
    let mut hash = Sha256::new();
    for prompt in &config.prompts {
        hash.update(prompt.name.as_bytes());
        hash.update([0]);
        hash.update(prompt.text.as_bytes());
        hash.update([0]);
        if let Some(schema) = &prompt.schema {
            hash.update(schema.to_string().as_bytes());
        }
        hash.update([0, u8::from(prompt.strict)]);
    }
    hash.update(config.detail.as_str().as_bytes());
    hash.update([config.jpeg_quality]);
    hash.update(config.max_output_tokens.to_le_bytes());
    hash.update(config.temperature.to_le_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
    format!("prompts-{hex}")
}

impl CloudRunner {
    /// Starts the async worker for `config` (validated here). `batch.max_items` caps how many
    /// finished images one `run` hands back, `batch.max_wait` is the poll interval while calls
    /// are in flight (at least 10 ms).
    pub fn new(config: CloudConfig, batch: BatchConfig) -> Result<Self, CloudError> {
        config.validate()?;
        let config = Arc::new(config);
        let price = config.price();
        if price.is_none() {
            tracing::warn!(
                "no price for the cloud model `{}` in [cloud.prices]: its costs are not recorded",
                config.model
            );
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads)
            .max_blocking_threads(ENCODERS + 2)
            .thread_name("imgd-cloud")
            .enable_all()
            .build()
            .map_err(CloudError::Runtime)?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout())
            .connect_timeout(config.timeout().min(Duration::from_secs(10)))
            .user_agent(concat!("imgd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CloudError::Http(e.to_string()))?;
        let limiter = Arc::new(Limiter::new(LimiterConfig {
            requests: config.rpm,
            tokens: config.tpm,
            concurrency: config.concurrency,
            window: config.rate_window(),
            margin: Duration::from_secs_f64(config.rate_margin_s),
        }));
        let stats = Arc::new(CloudStats::default());
        let (cancel_tx, cancel_rx) = watch::channel(false);
        let (results_tx, results_rx) = crossbeam_channel::unbounded();
        let (jobs_tx, mut jobs_rx) = mpsc::unbounded_channel::<Job>();
        let shared = Arc::new(Shared {
            caller: Caller {
                http,
                endpoint: config.endpoint(),
                api_key: config.api_key.clone().filter(|k| !k.is_empty()),
                config: Arc::clone(&config),
                price,
                limiter: Arc::clone(&limiter),
                stats: Arc::clone(&stats),
            },
            config: Arc::clone(&config),
            model_version: model_version(&config),
            encoders: Semaphore::new(ENCODERS),
            cancel: cancel_rx,
            results: results_tx,
        });
        runtime.spawn(async move {
            while let Some(job) = jobs_rx.recv().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let key = job.key;
                    let task = tokio::spawn(process(Arc::clone(&shared), job));
                    let outcome = match task.await {
                        Ok(outcome) => outcome,
                        Err(error) => Err(format!("the cloud task failed: {error}")),
                    };
                    let _ = shared.results.send((key, outcome));
                });
            }
        });
        Ok(CloudRunner {
            name: config.model.clone(),
            runtime: Some(runtime),
            jobs: Some(jobs_tx),
            results: results_rx,
            outstanding: HashSet::new(),
            cancel: cancel_tx,
            poll: batch.max_wait.max(MIN_POLL),
            max_per_run: batch.effective_max_items(),
            stall_limit: config.timeout() + Duration::from_secs(2),
            stats,
            limiter,
            observer: None,
        })
    }

    /// The module's counters (see [`crate::stats`]); keep a clone to report them.
    pub fn stats(&self) -> Arc<CloudStats> {
        Arc::clone(&self.stats)
    }

    /// The current (requests, tokens) limits, as lowered by the provider's headers.
    pub fn limits(&self) -> (u64, u64) {
        self.limiter.limits()
    }

    fn take_ready(&mut self, out: &mut RunnerResults) {
        while out.len() < self.max_per_run {
            match self.results.try_recv() {
                Ok(outcome) => self.accept(outcome, out),
                Err(_) => break,
            }
        }
    }

    fn accept(&mut self, (key, result): Outcome, out: &mut RunnerResults) {
        // An image given up at shutdown may still answer later: drop it then.
        if self.outstanding.remove(&key) {
            self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            out.push((key, result));
        }
    }
}

impl ModelRunner for CloudRunner {
    fn module(&self) -> Module {
        crate::CLOUD
    }

    fn model_name(&self) -> &str {
        &self.name
    }

    fn submit(&mut self, key: JobKey, image: &ImageInput<'_>) -> Result<(), String> {
        let tier = crate::CLOUD.tier().unwrap_or(1568);
        let Some(pixels) = image.tier_or_largest(tier) else {
            return Err("no decoded image for the cloud module".into());
        };
        let Some(jobs) = &self.jobs else {
            return Err("the cloud worker has stopped".into());
        };
        jobs.send(Job {
            key,
            image: Arc::clone(pixels),
        })
        .map_err(|_| "the cloud worker has stopped".to_string())?;
        if self.outstanding.insert(key) {
            add(&self.stats.in_flight, 1);
        }
        Ok(())
    }

    fn ready(&self, _now: Instant) -> Option<CloseReason> {
        (!self.results.is_empty()).then_some(CloseReason::Full)
    }

    fn next_deadline(&self) -> Option<Instant> {
        (!self.outstanding.is_empty()).then(|| Instant::now() + self.poll)
    }

    fn run(&mut self, reason: CloseReason) -> RunnerResults {
        let started = Instant::now();
        let mut out = Vec::new();
        if reason == CloseReason::Draining && !*self.cancel.borrow() {
            tracing::info!(
                "cloud: {} images in flight; waiting for the calls already sent",
                self.outstanding.len()
            );
            let _ = self.cancel.send(true);
        }
        self.take_ready(&mut out);
        if out.is_empty() && reason == CloseReason::Draining && !self.outstanding.is_empty() {
            match self.results.recv_timeout(self.stall_limit) {
                Ok(outcome) => {
                    self.accept(outcome, &mut out);
                    self.take_ready(&mut out);
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                    tracing::warn!(
                        "cloud: {} images got no answer in time at shutdown",
                        self.outstanding.len()
                    );
                    for key in self.outstanding.drain() {
                        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                        out.push((key, Err(CallError::Cancelled.to_string())));
                    }
                }
            }
        }
        if !out.is_empty()
            && let Some(observer) = self.observer.as_mut()
        {
            observer(&BatchStats {
                model: self.name.clone(),
                items: out.len(),
                reason,
                busy: started.elapsed(),
                retried_singly: false,
                failed_items: out.iter().filter(|(_, r)| r.is_err()).count(),
            });
        }
        out
    }

    fn pending(&self) -> usize {
        self.outstanding.len()
    }

    fn set_observer(&mut self, observer: Box<dyn FnMut(&BatchStats) + Send>) {
        self.observer = Some(observer);
    }
}

impl Drop for CloudRunner {
    fn drop(&mut self) {
        let _ = self.cancel.send(true);
        self.jobs = None;
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// One image: encode once, ask every prompt (concurrently, through the limiter), and build its
/// row.
async fn process(shared: Arc<Shared>, job: Job) -> Result<ResultRow, String> {
    let cancelled = || CallError::Cancelled.to_string();
    if *shared.cancel.borrow() {
        return Err(cancelled());
    }
    let encoded = {
        let _permit = shared.encoders.acquire().await.map_err(|_| cancelled())?;
        if *shared.cancel.borrow() {
            return Err(cancelled());
        }
        let quality = shared.config.jpeg_quality;
        let image = job.image;
        tokio::task::spawn_blocking(move || encode_jpeg(&image, quality))
            .await
            .map_err(|e| format!("the JPEG encoder failed: {e}"))??
    };
    let encoded = Arc::new(encoded);
    let mut calls = tokio::task::JoinSet::new();
    for index in 0..shared.config.prompts.len() {
        let shared = Arc::clone(&shared);
        let encoded: Arc<EncodedImage> = Arc::clone(&encoded);
        calls.spawn(async move {
            let prompt = &shared.config.prompts[index];
            let body = request_body(&shared.config, prompt, &encoded);
            let estimate = estimate_tokens(prompt, &encoded, &shared.config);
            let mut cancel = shared.cancel.clone();
            let answer = shared
                .caller
                .call(prompt, &body, estimate, &mut cancel)
                .await;
            (index, answer)
        });
    }
    let mut answers: Vec<Option<Result<Answer, CallError>>> =
        vec![None; shared.config.prompts.len()];
    while let Some(joined) = calls.join_next().await {
        match joined {
            Ok((index, answer)) => answers[index] = Some(answer),
            Err(error) => return Err(format!("a cloud call task failed: {error}")),
        }
    }
    let stats = &shared.caller.stats;
    let mut answered = Vec::with_capacity(answers.len());
    let mut first_error: Option<(String, CallError)> = None;
    for (prompt, answer) in shared.config.prompts.iter().zip(answers) {
        match answer {
            Some(Ok(answer)) => answered.push((prompt.name.as_str(), answer)),
            Some(Err(error)) => {
                // A provider refusal says the most; a cancellation the least.
                let better = match (&first_error, &error) {
                    (None, _) => true,
                    (Some((_, CallError::Cancelled)), e) => *e != CallError::Cancelled,
                    (Some((_, CallError::Provider { .. })), _) => false,
                    (Some(_), CallError::Provider { .. }) => true,
                    _ => false,
                };
                if better {
                    first_error = Some((prompt.name.clone(), error));
                }
            }
            None => first_error = Some((prompt.name.clone(), CallError::Cancelled)),
        }
    }
    if let Some((name, error)) = first_error {
        add(&stats.jobs_failed, 1);
        return Err(match error {
            CallError::Cancelled => error.to_string(),
            other => format!("cloud prompt `{name}`: {other}"),
        });
    }
    add(&stats.jobs_done, 1);
    Ok(build_row(&shared.config, &shared.model_version, &answered))
}

/// The `result_cloud` row of one image: `cost_usd` (NULL without a price), `tokens` (input +
/// output, all prompts), and `data`:
///
/// ```json
/// {"answers": {"<prompt>": "text" | {…schema answer…}},
///  "usage": {"<prompt>": {"input_tokens": 1,"output_tokens": 2,"attempts": 1}},
///  "calls": 3, "input_tokens": 3, "output_tokens": 6}
/// ```
///
/// Only the answers are text, so only they reach the search index (which indexes every text
/// value of `data`).
fn build_row(config: &CloudConfig, model_version: &str, answered: &[(&str, Answer)]) -> ResultRow {
    let mut answers = serde_json::Map::new();
    let mut usage = serde_json::Map::new();
    let (mut input, mut output) = (0u64, 0u64);
    let mut cost: Option<f64> = Some(0.0);
    for (name, answer) in answered {
        answers.insert((*name).to_string(), answer.value.clone());
        usage.insert(
            (*name).to_string(),
            serde_json::json!({
                "input_tokens": answer.input_tokens,
                "output_tokens": answer.output_tokens,
                "attempts": answer.attempts,
            }),
        );
        input += answer.input_tokens;
        output += answer.output_tokens;
        cost = cost.zip(answer.cost_usd).map(|(a, b)| a + b);
    }
    ResultRow {
        module: crate::CLOUD,
        model_id: Some(config.model.clone()),
        model_version: Some(model_version.to_string()),
        columns: vec![
            ("cost_usd", SqlValue::from(cost)),
            ("tokens", SqlValue::Integer((input + output) as i64)),
        ],
        data: serde_json::json!({
            "answers": answers,
            "usage": usage,
            "calls": answered.len(),
            "input_tokens": input,
            "output_tokens": output,
        }),
        vectors: Vec::new(),
    }
}
