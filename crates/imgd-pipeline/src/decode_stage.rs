//! Stage 1: decode threads. Each claimed image is read once, its header parsed, its pixels
//! decoded once into the tiers its modules need, and the CPU modules run here. The image then
//! goes on to the inference thread with its pending model jobs.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use imgd_core::{Module, ResultRow};
use imgd_decode::{DecodeError, DecodeOptions, DecodePath, Decoded, Header, RgbImage};

use crate::budget::{PixelBudget, PixelCharge};
use crate::fault::{self, Fault};
use crate::messages::{Failure, Job, Outcome, Work};
use crate::metrics::Metrics;
use crate::runner::{CpuAnalysis, CpuInput, ImageInput, Prepared, SharedPrepare};

/// An image on its way from the decode threads to the inference thread.
pub(crate) struct DecodedImage {
    pub image_id: i64,
    pub path: String,
    /// Results and failures gathered so far.
    pub outcome: Outcome,
    /// Jobs for the inference thread.
    pub model_jobs: Vec<Job>,
    /// Inputs of model jobs already prepared here, by job id.
    pub prepared: HashMap<i64, Prepared>,
    /// The tiers, largest first.
    pub tiers: Vec<(u32, Arc<RgbImage>)>,
    /// Every job of the image: id and module.
    pub jobs: Vec<(i64, Module)>,
    /// The image's decoded pixels, charged to the budget until the image is dropped (held for
    /// its `Drop`, never read).
    #[allow(dead_code)]
    pub pixels: PixelCharge,
}

/// Shared state of the decode threads.
pub(crate) struct DecodeStage {
    pub options: DecodeOptions,
    /// What decoded pixels in flight may take.
    pub budget: Arc<PixelBudget>,
    pub metrics: Arc<Metrics>,
    /// Pixel decodes done by this pipeline (the once-per-image invariant).
    pub decodes: Arc<AtomicU64>,
    /// Settle gated jobs whose gate is shut without running them ([`imgd_core::Gate`]).
    pub follow_gates: bool,
    /// The CPU modules, run here.
    pub analyses: Arc<HashMap<Module, &'static dyn CpuAnalysis>>,
    /// The model runners' input preparations (resize, crop, normalise), run here so the
    /// inference thread only runs models.
    pub preparers: Arc<HashMap<Module, SharedPrepare>>,
    /// Set when a stop runs out of time: drop what is left.
    pub abandon: Arc<AtomicBool>,
}

/// The metrics label of a decode path (a bounded set).
fn decode_label(path: DecodePath) -> &'static str {
    match path {
        DecodePath::JpegFull => "jpeg-full",
        DecodePath::JpegDct { denominator: 2 } => "jpeg-dct-2",
        DecodePath::JpegDct { denominator: 4 } => "jpeg-dct-4",
        DecodePath::JpegDct { .. } => "jpeg-dct-8",
        DecodePath::RawPreview => "raw-preview",
        DecodePath::RawHalf => "raw-half",
        DecodePath::RawFull => "raw-full",
        DecodePath::HeifThumbnail => "heic-thumbnail",
        DecodePath::HeifPrimary => "heic-primary",
        DecodePath::Full(format) => match format.name() {
            "png" => "png",
            "tiff" => "tiff",
            "webp" => "webp",
            _ => "other",
        },
    }
}

/// The text of a panic payload.
pub(crate) fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Runs one CPU module, turning a panic into that job's error.
fn run_module(
    module: Module,
    metrics: &Metrics,
    f: impl FnOnce() -> Result<ResultRow, String>,
) -> Result<ResultRow, String> {
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
        Err(format!(
            "the {module} module panicked: {}",
            panic_text(p.as_ref())
        ))
    });
    metrics.record_module(module, started.elapsed());
    result
}

/// Fails `jobs` with `error`.
fn fail_jobs<'a>(
    outcome: &mut Outcome,
    jobs: impl Iterator<Item = &'a Job>,
    error: &str,
    permanent: bool,
) {
    for job in jobs {
        outcome.failed.push(Failure {
            job_id: job.job_id,
            error: error.to_string(),
            permanent,
        });
    }
}

fn describe(err: &DecodeError, path: &str) -> String {
    format!("cannot decode {path}: {err}")
}

impl DecodeStage {
    /// The decode thread's loop: until the channel closes or the stop runs out of time.
    pub fn run(&self, input: Receiver<Work>, output: Sender<DecodedImage>) {
        for image in input {
            if self.abandon.load(Ordering::Relaxed) {
                return;
            }
            fault::point(Fault::Decode);
            let mut decoded = self.process(image);
            // Never blocked for good on a full queue: a stop past its budget ends the wait.
            loop {
                match output.send_timeout(decoded, Duration::from_millis(50)) {
                    Ok(()) => break,
                    Err(SendTimeoutError::Timeout(back))
                        if !self.abandon.load(Ordering::Relaxed) =>
                    {
                        decoded = back;
                    }
                    Err(_) => return,
                }
            }
        }
    }

    /// Reads, decodes and runs the CPU modules of one image.
    pub fn process(&self, mut image: Work) -> DecodedImage {
        let mut outcome = Outcome {
            image_id: image.image_id,
            ..Outcome::default()
        };
        let jobs: Vec<(i64, Module)> = image.jobs.iter().map(|j| (j.job_id, j.module)).collect();
        if self.follow_gates {
            settle_shut_gates(&mut image, &mut outcome);
        }
        let tiers_needed: Vec<u32> = image.jobs.iter().filter_map(|j| j.module.tier()).collect();
        let (header, bytes) = match self.read(&image.path, &tiers_needed) {
            Ok(read) => read,
            Err(err) => {
                if err.is_missing() {
                    // Gone since it was registered: missing, not failed.
                    outcome.missing = true;
                } else {
                    self.metrics.bad_image();
                    let error = describe(&err, &image.path);
                    fail_jobs(&mut outcome, image.jobs.iter(), &error, err.is_permanent());
                }
                return DecodedImage {
                    image_id: image.image_id,
                    path: image.path,
                    outcome,
                    model_jobs: Vec::new(),
                    prepared: HashMap::new(),
                    tiers: Vec::new(),
                    jobs,
                    pixels: PixelCharge::default(),
                };
            }
        };
        outcome.dimensions = Some(header.oriented_dimensions());
        let decoded =
            bytes.and_then(|bytes| self.decode(&bytes, &tiers_needed, &image, &mut outcome));
        let mut model_jobs =
            self.run_cpu_modules(&image.jobs, &header, decoded.as_ref(), &mut outcome);
        let (mut tiers, decoded_bytes) = match &decoded {
            Some(d) => (
                d.tiers
                    .iter()
                    .map(|t| (t.long_edge, Arc::clone(&t.image)))
                    .collect(),
                d.tiers.iter().map(|t| t.image.as_raw().len() as u64).sum(),
            ),
            None => (Vec::new(), 0),
        };
        let prepared = self.prepare_inputs(&image, &tiers, &mut model_jobs, &mut outcome);
        // Only runners that prepare their own inputs on the inference thread read the tiers
        // there; when every model job is prepared, the pixels are not kept.
        let mut in_flight: u64 = prepared.values().map(Prepared::bytes).sum();
        if model_jobs
            .iter()
            .all(|job| prepared.contains_key(&job.job_id))
        {
            tiers.clear();
        } else {
            in_flight += decoded_bytes;
        }
        DecodedImage {
            image_id: image.image_id,
            path: image.path,
            outcome,
            model_jobs,
            prepared,
            tiers,
            jobs,
            // Charged for as long as the image is in flight: the tiers kept for the inference
            // thread and every prepared input (a pyramid, a detector's planes).
            pixels: self.budget.charge(in_flight),
        }
    }

    /// The header and, when pixels are needed, the whole file, read once and bounded: a FIFO,
    /// a device or an oversized file fails before a byte is read.
    fn read(
        &self,
        stored_path: &str,
        tiers_needed: &[u32],
    ) -> Result<(Header, Option<Vec<u8>>), DecodeError> {
        fault::abort_on_path(stored_path);
        let path = imgd_core::stored_path::decode(stored_path);
        if tiers_needed.is_empty() {
            return Ok((imgd_decode::read_header(&path, &self.options)?, None));
        }
        let bytes = imgd_decode::read_image_file(&path, &self.options)?;
        let header = imgd_decode::read_header_bytes(&bytes, &self.options)?;
        Ok((header, Some(bytes)))
    }

    /// The tiers of one image, decoded once; a failure fails the jobs that needed pixels.
    fn decode(
        &self,
        bytes: &[u8],
        tiers_needed: &[u32],
        image: &Work,
        outcome: &mut Outcome,
    ) -> Option<Decoded> {
        let started = Instant::now();
        self.decodes.fetch_add(1, Ordering::Relaxed);
        match imgd_decode::decode_tiers_bytes(bytes, tiers_needed, &self.options) {
            Ok(decoded) => {
                self.metrics
                    .record_decode(decode_label(decoded.decode_path), started.elapsed());
                Some(decoded)
            }
            Err(err) => {
                self.metrics.bad_image();
                fail_jobs(
                    outcome,
                    image.jobs.iter().filter(|j| j.module.tier().is_some()),
                    &describe(&err, &image.path),
                    err.is_permanent(),
                );
                None
            }
        }
    }

    /// Runs the CPU modules into `outcome`; returns the model jobs that go on to the
    /// inference thread (those with their pixels, or that read none).
    fn run_cpu_modules(
        &self,
        jobs: &[Job],
        header: &Header,
        decoded: Option<&Decoded>,
        outcome: &mut Outcome,
    ) -> Vec<Job> {
        let mut model_jobs = Vec::new();
        for job in jobs {
            let module = job.module;
            let Some(analysis) = self.analyses.get(&module) else {
                // Model modules need their tier, unless they read no pixels.
                if module.tier().is_none() || decoded.is_some() {
                    model_jobs.push(job.clone());
                }
                continue;
            };
            if module.tier().is_some() && decoded.is_none() {
                // The decode failed and has failed this job already.
                continue;
            }
            let tier = module
                .tier()
                .and_then(|t| decoded.and_then(|d| d.tier(t)))
                .map(|tier| &**tier);
            let input = CpuInput {
                exif: header.exif.as_deref(),
                width: header.width,
                height: header.height,
                tier,
            };
            match run_module(module, &self.metrics, || analysis.analyse(&input)) {
                Ok(row) => outcome.done.push((job.job_id, row)),
                Err(error) => outcome.failed.push(Failure {
                    job_id: job.job_id,
                    error,
                    permanent: false,
                }),
            }
        }
        model_jobs
    }

    /// Runs the preparation of every runner that offers one here, on the decode thread; a job
    /// whose preparation fails (or panics) fails alone and leaves `model_jobs`.
    fn prepare_inputs(
        &self,
        image: &Work,
        tiers: &[(u32, Arc<RgbImage>)],
        model_jobs: &mut Vec<Job>,
        outcome: &mut Outcome,
    ) -> HashMap<i64, Prepared> {
        let mut prepared = HashMap::new();
        if model_jobs.is_empty() || self.preparers.is_empty() {
            return prepared;
        }
        let input = ImageInput {
            image_id: image.image_id,
            path: &image.path,
            tiers,
        };
        model_jobs.retain(|job| {
            let Some(prepare) = self.preparers.get(&job.module) else {
                return true;
            };
            let result = catch_unwind(AssertUnwindSafe(|| prepare(&input))).unwrap_or_else(|p| {
                Err(format!(
                    "preparing the {} input panicked: {}",
                    job.module,
                    panic_text(p.as_ref())
                ))
            });
            match result {
                Ok(ready) => {
                    prepared.insert(job.job_id, ready);
                    true
                }
                Err(error) => {
                    outcome.failed.push(Failure {
                        job_id: job.job_id,
                        error,
                        permanent: false,
                    });
                    false
                }
            }
        });
        prepared
    }
}

/// Settles the image's gated jobs whose gate is shut ([`Job::gate_open`] false) with
/// their module's skipped row, without decoding for them or running a model.
fn settle_shut_gates(image: &mut Work, outcome: &mut Outcome) {
    image.jobs.retain(|job| {
        let gate = job.module.spec().gate.as_ref();
        match gate {
            Some(gate) if job.gate_open == Some(false) => {
                outcome.done.push((job.job_id, (gate.skipped_row)()));
                false
            }
            _ => true,
        }
    });
}
