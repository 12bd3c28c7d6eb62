//! Every Prometheus metric of the daemon, in one registry.
//!
//! [`Metrics`] is built once at start-up and shared as `Arc<Metrics>`; each stage records
//! through its methods, and the HTTP server's `/metrics` route serves [`Metrics::encode`].
//! The reference of every metric (name, type, labels, meaning) is `docs/METRICS.md`.
//!
//! Names follow `imgd_<stage>_<name>_<unit>` (counters end in `_total`). Label values come from
//! bounded sets only: the registered modules' names, close reasons from
//! [`CloseReason::ALL`], queue states from [`QueueState::ALL`], decode paths as
//! `&'static str`, and model names from the model manifest. Every known label value is
//! created at start-up, so rates start at zero instead of appearing on first use.

use std::fmt;
use std::time::Duration;

use imgd_core::Module;
use prometheus_client::encoding::{EncodeLabelSet, prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::batcher::{BatchStats, CloseReason};

/// The decode paths the decoder reports, created at start-up with a zero count. Others may be
/// recorded too; they appear on first use.
pub const DECODE_PATHS: [&str; 13] = [
    "jpeg-dct-2",
    "jpeg-dct-4",
    "jpeg-dct-8",
    "jpeg-full",
    "raw-preview",
    "raw-half",
    "raw-full",
    "heic-thumbnail",
    "heic-primary",
    "png",
    "tiff",
    "webp",
    "other",
];

/// A state of a job in the queue: the label values of `imgd_queue_jobs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueState {
    /// Waiting to be claimed.
    Queued,
    /// Claimed by a worker whose lease has not expired.
    Leased,
    /// Finished with a stored result.
    Done,
    /// Failed for good.
    Failed,
}

impl QueueState {
    /// Every state.
    pub const ALL: [QueueState; 4] = [
        QueueState::Queued,
        QueueState::Leased,
        QueueState::Done,
        QueueState::Failed,
    ];

    /// The state as a label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            QueueState::Queued => "queued",
            QueueState::Leased => "leased",
            QueueState::Done => "done",
            QueueState::Failed => "failed",
        }
    }
}

impl fmt::Display for QueueState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModuleLabel {
    module: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PathLabel {
    path: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ModelReasonLabels {
    model: String,
    reason: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Stage latencies from 1 ms to ~16 s.
fn stage_seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Batch sizes 1, 2, 4, … 256.
fn batch_items_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 9))
}

/// Every metric of the daemon (see the [module docs](self) and `docs/METRICS.md`).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    jobs_done: Family<ModuleLabel, Counter>,
    jobs_failed: Family<ModuleLabel, Counter>,
    queue_jobs: Family<StateLabel, Gauge>,
    decode_seconds: Histogram,
    /// The decode threads' seconds, all of them together (the histogram's sum, readable).
    decode_busy_seconds: Counter<f64>,
    decode_images: Family<PathLabel, Counter>,
    decode_pixels_in_flight_bytes: Gauge,
    decode_pixels_budget_bytes: Gauge,
    module_seconds: HistogramFamily<ModuleLabel>,
    infer_batch_seconds: HistogramFamily<ModelLabel>,
    infer_batch_items: HistogramFamily<ModelLabel>,
    infer_batches: Family<ModelReasonLabels, Counter>,
    infer_busy_seconds: Counter<f64>,
    infer_failed_items: Family<ModelLabel, Counter>,
    writer_flush_seconds: Histogram,
    writer_images: Counter,
    writer_transactions: Counter,
    images_processed: Counter,
    bad_images: Counter,
    text_sources: TextSources,
    /// The same batches as `infer_batches`, kept readable for the web page.
    batches_by_model: std::sync::Mutex<std::collections::BTreeMap<String, ModelBatches>>,
    started: std::time::Instant,
}

/// One model's batches since the daemon started (the dashboard's table).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModelBatches {
    /// Batches run.
    pub batches: u64,
    /// Items in them.
    pub items: u64,
    /// Seconds the inference thread spent on them.
    pub busy_seconds: f64,
    /// Batches by the reason they closed (`full`, `timeout`, `drain`, ...).
    pub close_reasons: std::collections::BTreeMap<&'static str, u64>,
}

/// The inference thread's work since the daemon started.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InferenceSummary {
    /// Seconds since the daemon started.
    pub uptime_seconds: f64,
    /// Seconds the inference thread spent running model batches.
    pub busy_seconds: f64,
    /// Per model.
    pub models: std::collections::BTreeMap<String, ModelBatches>,
}

/// The registered [`TextSource`]s.
#[derive(Default)]
struct TextSources(std::sync::Mutex<Vec<TextSource>>);

impl fmt::Debug for TextSources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.0.lock().map_or(0, |v| v.len());
        write!(f, "TextSources({count})")
    }
}

/// Metrics kept outside this registry (a module's own counters), rendered in the Prometheus
/// text format 0.0.4 on every scrape.
pub type TextSource = Box<dyn Fn() -> String + Send + Sync>;

impl Metrics {
    /// The content type of [`encode`](Self::encode)'s output (Prometheus text 0.0.4).
    pub const CONTENT_TYPE: &'static str = prometheus_text::CONTENT_TYPE;
    /// The content type of [`encode_openmetrics`](Self::encode_openmetrics)'s output.
    pub const OPENMETRICS_CONTENT_TYPE: &'static str =
        "application/openmetrics-text; version=1.0.0; charset=utf-8";

    /// A registry holding every metric, each at zero, with every known label value created
    /// (those of `modules` among them).
    pub fn new(modules: &[Module]) -> Self {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("imgd"),
            jobs_done: Family::default(),
            jobs_failed: Family::default(),
            queue_jobs: Family::default(),
            decode_seconds: stage_seconds_histogram(),
            decode_busy_seconds: Counter::default(),
            decode_images: Family::default(),
            decode_pixels_in_flight_bytes: Gauge::default(),
            decode_pixels_budget_bytes: Gauge::default(),
            module_seconds: Family::new_with_constructor(stage_seconds_histogram),
            infer_batch_seconds: Family::new_with_constructor(stage_seconds_histogram),
            infer_batch_items: Family::new_with_constructor(batch_items_histogram),
            infer_batches: Family::default(),
            infer_busy_seconds: Counter::default(),
            infer_failed_items: Family::default(),
            writer_flush_seconds: stage_seconds_histogram(),
            writer_images: Counter::default(),
            writer_transactions: Counter::default(),
            text_sources: TextSources::default(),
            images_processed: Counter::default(),
            bad_images: Counter::default(),
            batches_by_model: std::sync::Mutex::default(),
            started: std::time::Instant::now(),
        };
        metrics.register_queue_and_decode();
        metrics.register_inference_and_writer();
        metrics.create_known_labels(modules);
        metrics
    }

    /// Registers the job, queue and decode metrics. Counters are registered without `_total`:
    /// the encoder appends it.
    fn register_queue_and_decode(&mut self) {
        let r = &mut self.registry;
        r.register(
            "jobs_done",
            "Jobs finished with a stored result, per module",
            self.jobs_done.clone(),
        );
        r.register(
            "jobs_failed",
            "Jobs that failed, per module",
            self.jobs_failed.clone(),
        );
        r.register(
            "queue_jobs",
            "Jobs in the queue per state, as last read from the database",
            self.queue_jobs.clone(),
        );
        r.register(
            "decode_seconds",
            "Time to decode one image and derive its resolution tiers",
            self.decode_seconds.clone(),
        );
        r.register(
            "decode_images",
            "Images whose pixels were decoded, per decode path",
            self.decode_images.clone(),
        );
        r.register(
            "decode_pixels_in_flight_bytes",
            "Bytes of decoded pixels held by images in flight (claimed and not yet written)",
            self.decode_pixels_in_flight_bytes.clone(),
        );
        r.register(
            "decode_pixels_budget_bytes",
            "The budget of decoded pixels in flight ([decode] memory_mb): no claim past it",
            self.decode_pixels_budget_bytes.clone(),
        );
        r.register(
            "module_seconds",
            "Time a CPU module spent on one image on a decode thread",
            self.module_seconds.clone(),
        );
    }

    /// Registers the inference thread's and the writer's self.
    fn register_inference_and_writer(&mut self) {
        let r = &mut self.registry;
        r.register(
            "infer_batch_seconds",
            "Time the inference thread spent on one batch of one model, single retries included",
            self.infer_batch_seconds.clone(),
        );
        r.register(
            "infer_batch_items",
            "Requests per model batch",
            self.infer_batch_items.clone(),
        );
        r.register(
            "infer_batches",
            "Model batches run, per model and close reason (full, timed_out, draining)",
            self.infer_batches.clone(),
        );
        r.register(
            "infer_busy_seconds",
            "Seconds the inference thread spent running models",
            self.infer_busy_seconds.clone(),
        );
        r.register(
            "infer_failed_items",
            "Model requests that ended with an error, per model",
            self.infer_failed_items.clone(),
        );
        r.register(
            "writer_flush_seconds",
            "Time the writer spent committing one transaction",
            self.writer_flush_seconds.clone(),
        );
        r.register(
            "writer_images",
            "Images whose results the writer committed",
            self.writer_images.clone(),
        );
        r.register(
            "writer_transactions",
            "Transactions the writer committed",
            self.writer_transactions.clone(),
        );
        r.register(
            "images_processed",
            "Images that went through every queued module",
            self.images_processed.clone(),
        );
        r.register(
            "bad_images",
            "Images that could not be read or decoded",
            self.bad_images.clone(),
        );
    }

    /// Creates every series whose labels are known up front at zero, so rates exist from
    /// start-up.
    fn create_known_labels(&self, modules: &[Module]) {
        for module in modules {
            let label = ModuleLabel {
                module: module.name(),
            };
            self.jobs_done.get_or_create_owned(&label);
            self.jobs_failed.get_or_create_owned(&label);
            if !module.needs_model() {
                self.module_seconds.get_or_create_owned(&label);
            }
        }
        for state in QueueState::ALL {
            self.queue_jobs.get_or_create_owned(&StateLabel {
                state: state.as_str(),
            });
        }
        for path in DECODE_PATHS {
            self.decode_images.get_or_create_owned(&PathLabel { path });
        }
    }

    /// Creates the per-model series of `model` at zero, so a model's rates exist from
    /// start-up. Call it once per loaded model.
    pub fn register_model(&self, model: &str) {
        let label = ModelLabel {
            model: model.to_string(),
        };
        self.infer_batch_seconds.get_or_create_owned(&label);
        self.infer_batch_items.get_or_create_owned(&label);
        self.infer_failed_items.get_or_create_owned(&label);
        for reason in CloseReason::ALL {
            self.infer_batches.get_or_create_owned(&ModelReasonLabels {
                model: model.to_string(),
                reason: reason.as_str(),
            });
        }
    }

    /// Counts a job of `module` finished with a stored result.
    pub fn job_done(&self, module: Module) {
        self.jobs_done
            .get_or_create(&ModuleLabel {
                module: module.name(),
            })
            .inc();
    }

    /// Counts a failed job of `module`.
    pub fn job_failed(&self, module: Module) {
        self.jobs_failed
            .get_or_create(&ModuleLabel {
                module: module.name(),
            })
            .inc();
    }

    /// Sets how many jobs the queue holds in `state`.
    pub fn set_queue_jobs(&self, state: QueueState, jobs: u64) {
        self.queue_jobs
            .get_or_create(&StateLabel {
                state: state.as_str(),
            })
            .set(i64::try_from(jobs).unwrap_or(i64::MAX));
    }

    /// Records one image decoded through `path` (e.g. `jpeg-dct-4`, see [`DECODE_PATHS`]) in
    /// `elapsed`.
    pub fn record_decode(&self, path: &'static str, elapsed: Duration) {
        self.decode_images.get_or_create(&PathLabel { path }).inc();
        self.decode_seconds.observe(elapsed.as_secs_f64());
        self.decode_busy_seconds.inc_by(elapsed.as_secs_f64());
    }

    /// Seconds the decode threads spent decoding images since the daemon started, all threads
    /// together.
    pub fn decode_busy_seconds(&self) -> f64 {
        self.decode_busy_seconds.get()
    }

    /// Sets the bytes of decoded pixels in flight.
    pub fn set_pixels_in_flight(&self, bytes: u64) {
        self.decode_pixels_in_flight_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Sets the budget of decoded pixels in flight.
    pub fn set_pixels_budget(&self, bytes: u64) {
        self.decode_pixels_budget_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Records the time a CPU module (metadata, technical) spent on one image.
    pub fn record_module(&self, module: Module, elapsed: Duration) {
        self.module_seconds
            .get_or_create(&ModuleLabel {
                module: module.name(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one model batch: its size, close reason, busy time and failed items. Hand it to
    /// [`MicroBatcher::set_observer`](crate::batcher::MicroBatcher::set_observer).
    pub fn record_batch(&self, stats: &BatchStats) {
        let model = ModelLabel {
            model: stats.model.clone(),
        };
        let busy = stats.busy.as_secs_f64();
        self.infer_batch_seconds.get_or_create(&model).observe(busy);
        self.infer_batch_items
            .get_or_create(&model)
            .observe(stats.items as f64);
        self.infer_batches
            .get_or_create(&ModelReasonLabels {
                model: stats.model.clone(),
                reason: stats.reason.as_str(),
            })
            .inc();
        self.infer_busy_seconds.inc_by(busy);
        {
            let mut models = self
                .batches_by_model
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let model = models.entry(stats.model.clone()).or_default();
            model.batches += 1;
            model.items += stats.items as u64;
            model.busy_seconds += busy;
            *model
                .close_reasons
                .entry(stats.reason.as_str())
                .or_default() += 1;
        }
        if stats.failed_items > 0 {
            self.infer_failed_items
                .get_or_create(&model)
                .inc_by(stats.failed_items as u64);
        }
    }

    /// Images finished (every job written) since the daemon started.
    pub fn images_processed_total(&self) -> u64 {
        self.images_processed.get()
    }

    /// The inference thread's batches and busy time since the daemon started.
    pub fn inference_summary(&self) -> InferenceSummary {
        let models = self
            .batches_by_model
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        InferenceSummary {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            busy_seconds: self.infer_busy_seconds.get(),
            models,
        }
    }

    /// Records one writer transaction carrying the results of `images` images, committed in
    /// `elapsed`.
    pub fn record_writer_flush(&self, images: u64, elapsed: Duration) {
        self.writer_transactions.inc();
        self.writer_images.inc_by(images);
        self.writer_flush_seconds.observe(elapsed.as_secs_f64());
    }

    /// Counts an image that went through every queued module.
    pub fn image_processed(&self) {
        self.images_processed.inc();
    }

    /// Counts an image that could not be read or decoded.
    pub fn bad_image(&self) {
        self.bad_images.inc();
    }

    /// Every metric in the Prometheus text format 0.0.4 ([`Self::CONTENT_TYPE`]), which
    /// `promtool check metrics` and every Prometheus version read.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(error) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        for source in self
            .text_sources
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            out.push_str(&source());
        }
        out
    }

    /// Adds metrics kept elsewhere to [`encode`](Self::encode)'s output (not to the
    /// OpenMetrics one): `source` renders them in the Prometheus text format 0.0.4, with
    /// names that no metric of this registry uses.
    pub fn add_text_source(&self, source: TextSource) {
        self.text_sources
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(source);
    }

    /// Every metric in the OpenMetrics text format ([`Self::OPENMETRICS_CONTENT_TYPE`]),
    /// ending with `# EOF`.
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::new();
        if let Err(error) = text::encode(&mut out, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&[])
    }
}

/// Runs `promtool check metrics` on `exposition` when promtool is on `PATH`; `None` (with a
/// note on stderr) when it is not. Returns promtool's verdict and output.
#[cfg(test)]
pub(crate) fn promtool_check(exposition: &str) -> Option<(bool, String)> {
    use std::io::Write;
    use std::process::{Command, Stdio};

    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            eprintln!("note: promtool not runnable ({error}); skipping the promtool check");
            return None;
        }
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .expect("write to promtool");
    let output = child.wait_with_output().expect("promtool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded() -> Metrics {
        let metrics = Metrics::new(imgd_registry::REGISTRY.all());
        metrics.register_model("clip-vit-b32");
        metrics.job_done(imgd_clip::EMBEDDING);
        metrics.job_done(imgd_clip::EMBEDDING);
        metrics.job_failed(imgd_ocr::OCR);
        metrics.set_queue_jobs(QueueState::Queued, 1200);
        metrics.set_queue_jobs(QueueState::Leased, 64);
        metrics.record_decode("jpeg-dct-4", Duration::from_millis(12));
        metrics.set_pixels_in_flight(3 << 20);
        metrics.set_pixels_budget(512 << 20);
        metrics.record_module(imgd_modules::TECHNICAL, Duration::from_millis(4));
        metrics.record_batch(&BatchStats {
            model: "clip-vit-b32".to_string(),
            items: 32,
            reason: CloseReason::Full,
            busy: Duration::from_millis(250),
            retried_singly: false,
            failed_items: 0,
        });
        metrics.record_batch(&BatchStats {
            model: "clip-vit-b32".to_string(),
            items: 5,
            reason: CloseReason::TimedOut,
            busy: Duration::from_millis(50),
            retried_singly: true,
            failed_items: 1,
        });
        metrics.record_writer_flush(40, Duration::from_millis(30));
        metrics.image_processed();
        metrics.bad_image();
        metrics
    }

    #[test]
    fn the_exposition_names_every_metric_with_its_type_and_labels() {
        let text = recorded().encode();
        for type_line in [
            "# TYPE imgd_jobs_done_total counter",
            "# TYPE imgd_jobs_failed_total counter",
            "# TYPE imgd_queue_jobs gauge",
            "# TYPE imgd_decode_seconds histogram",
            "# TYPE imgd_decode_images_total counter",
            "# TYPE imgd_decode_pixels_in_flight_bytes gauge",
            "# TYPE imgd_decode_pixels_budget_bytes gauge",
            "# TYPE imgd_module_seconds histogram",
            "# TYPE imgd_infer_batch_seconds histogram",
            "# TYPE imgd_infer_batch_items histogram",
            "# TYPE imgd_infer_batches_total counter",
            "# TYPE imgd_infer_busy_seconds_total counter",
            "# TYPE imgd_infer_failed_items_total counter",
            "# TYPE imgd_writer_flush_seconds histogram",
            "# TYPE imgd_writer_images_total counter",
            "# TYPE imgd_writer_transactions_total counter",
            "# TYPE imgd_images_processed_total counter",
            "# TYPE imgd_bad_images_total counter",
        ] {
            assert!(text.contains(type_line), "missing `{type_line}` in\n{text}");
        }
        for sample in [
            "imgd_jobs_done_total{module=\"embedding\"} 2",
            "imgd_jobs_done_total{module=\"cloud\"} 0",
            "imgd_jobs_failed_total{module=\"ocr\"} 1",
            "imgd_queue_jobs{state=\"queued\"} 1200",
            "imgd_queue_jobs{state=\"failed\"} 0",
            "imgd_decode_images_total{path=\"jpeg-dct-4\"} 1",
            "imgd_decode_images_total{path=\"raw-preview\"} 0",
            "imgd_decode_seconds_count 1",
            "imgd_decode_pixels_in_flight_bytes 3145728",
            "imgd_decode_pixels_budget_bytes 536870912",
            "imgd_module_seconds_count{module=\"technical\"} 1",
            "imgd_infer_batches_total{model=\"clip-vit-b32\",reason=\"full\"} 1",
            "imgd_infer_batches_total{model=\"clip-vit-b32\",reason=\"timed_out\"} 1",
            "imgd_infer_batches_total{model=\"clip-vit-b32\",reason=\"draining\"} 0",
            "imgd_infer_batch_items_sum{model=\"clip-vit-b32\"} 37",
            "imgd_infer_batch_items_bucket{model=\"clip-vit-b32\",le=\"32\"} 2",
            "imgd_infer_busy_seconds_total 0.3",
            "imgd_infer_failed_items_total{model=\"clip-vit-b32\"} 1",
            "imgd_writer_images_total 40",
            "imgd_writer_transactions_total 1",
            "imgd_images_processed_total 1",
            "imgd_bad_images_total 1",
        ] {
            assert!(text.contains(sample), "missing `{sample}` in\n{text}");
        }
        // Model modules have no CPU-module latency series.
        assert!(!text.contains("imgd_module_seconds_count{module=\"embedding\"}"));
    }

    #[test]
    fn a_batcher_observer_feeds_the_inference_metrics() {
        use std::sync::Arc;

        use crate::batcher::fake::FakeModel;
        use crate::batcher::{BatchConfig, MicroBatcher};

        let metrics = Arc::new(Metrics::new(&[]));
        metrics.register_model("fake");
        let mut batcher = MicroBatcher::new(
            FakeModel::new("fake"),
            BatchConfig::new(4, Duration::from_millis(20)),
        );
        batcher.set_observer({
            let metrics = Arc::clone(&metrics);
            move |stats| metrics.record_batch(stats)
        });
        for (tag, input) in [1, 2, FakeModel::POISON, 4, 5].into_iter().enumerate() {
            batcher.push(tag, input);
        }
        let reason = batcher.ready(std::time::Instant::now()).unwrap();
        assert_eq!(batcher.run(reason).len(), 4);
        assert_eq!(batcher.drain().len(), 1);

        let text = metrics.encode();
        for sample in [
            "imgd_infer_batches_total{model=\"fake\",reason=\"full\"} 1",
            "imgd_infer_batches_total{model=\"fake\",reason=\"draining\"} 1",
            "imgd_infer_batches_total{model=\"fake\",reason=\"timed_out\"} 0",
            "imgd_infer_batch_items_sum{model=\"fake\"} 5",
            "imgd_infer_batch_items_count{model=\"fake\"} 2",
            "imgd_infer_failed_items_total{model=\"fake\"} 1",
        ] {
            assert!(text.contains(sample), "missing `{sample}` in\n{text}");
        }
    }

    #[test]
    fn the_openmetrics_exposition_ends_with_eof() {
        let text = recorded().encode_openmetrics();
        assert!(text.contains("# TYPE imgd_jobs_done counter"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn promtool_accepts_the_exposition() {
        let Some((ok, output)) = promtool_check(&recorded().encode()) else {
            return;
        };
        assert!(ok, "promtool check metrics failed:\n{output}");
        assert!(
            output.trim().is_empty(),
            "promtool lint findings:\n{output}"
        );
    }
}
