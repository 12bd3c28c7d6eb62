//! The interface between the inference thread and a model module.
//!
//! The inference thread owns a list of [`ModelRunner`]s, one per model module. For each image
//! it submits the module's job together with the image's decoded tiers; the runner turns them
//! into a model input and queues it in its [`MicroBatcher`]; when the batcher says a batch is
//! ready, the thread runs it and scatters the rows back to their images.
//!
//! [`Batched`] adapts any [`BatchModel`] into a runner with two functions: one that prepares
//! an input from the tiers, one that turns an output into a [`ResultRow`]. Its preparation is
//! pure CPU work on the pixels (resize, crop, normalise), so it is also offered as a
//! [`SharedPrepare`] that the decode threads run, leaving the inference thread to the models.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use image::RgbImage;
use imgd_core::{Module, ResultRow};

use crate::batcher::{BatchConfig, BatchModel, BatchStats, CloseReason, MicroBatcher};

/// Identifies one job of one image inside the inference stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// The image's row id.
    pub image_id: i64,
    /// The job's row id.
    pub job_id: i64,
}

/// What a runner may look at to build its input.
#[derive(Debug, Clone)]
pub struct ImageInput<'a> {
    /// The image's row id.
    pub image_id: i64,
    /// Its path.
    pub path: &'a str,
    /// The decoded tiers, largest first: (long edge requested, pixels).
    pub tiers: &'a [(u32, Arc<RgbImage>)],
}

impl ImageInput<'_> {
    /// The tier requested with this long edge.
    pub fn tier(&self, long_edge: u32) -> Option<&Arc<RgbImage>> {
        self.tiers
            .iter()
            .find(|(edge, _)| *edge == long_edge)
            .map(|(_, image)| image)
    }

    /// The tier requested with this long edge, else the largest one decoded (an image smaller
    /// than the tier is never upscaled, so its largest tier is the whole image).
    pub fn tier_or_largest(&self, long_edge: u32) -> Option<&Arc<RgbImage>> {
        self.tier(long_edge)
            .or_else(|| self.tiers.first().map(|(_, image)| image))
    }
}

/// What a CPU module reads: the file's header facts and, when its spec names a tier, that
/// decoded tier.
#[derive(Debug, Clone, Copy)]
pub struct CpuInput<'a> {
    /// The raw EXIF block, when the file has one.
    pub exif: Option<&'a [u8]>,
    /// The stored width, before EXIF orientation.
    pub width: u32,
    /// The stored height, before EXIF orientation.
    pub height: u32,
    /// The module's tier, when its spec names one and the image was decoded.
    pub tier: Option<&'a RgbImage>,
}

/// A module computed on the decode threads without a model
/// ([`imgd_core::RunsOn::DecodeThreads`]): pure CPU work on the header and one tier.
pub trait CpuAnalysis: Send + Sync {
    /// The module it computes.
    fn module(&self) -> Module;
    /// The module's row for one image; an error fails its job alone.
    fn analyse(&self, input: &CpuInput<'_>) -> Result<ResultRow, String>;
}

/// The results of one batch: each job with its row or its error text.
pub type RunnerResults = Vec<(JobKey, Result<ResultRow, String>)>;

/// A model input prepared away from the inference thread, for [`ModelRunner::submit_prepared`],
/// with the bytes it holds (charged to the pixel budget while it is in flight).
pub struct Prepared {
    input: Box<dyn Any + Send>,
    bytes: u64,
}

impl Prepared {
    /// Wraps an input that holds `bytes` of memory.
    pub fn new<T: Any + Send>(input: T, bytes: u64) -> Self {
        Prepared {
            input: Box::new(input),
            bytes,
        }
    }

    /// The bytes the input holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The input, when it is a `T`.
    pub fn take<T: Any>(self) -> Option<T> {
        self.input.downcast::<T>().ok().map(|input| *input)
    }
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

/// The memory a model input holds while it waits for its batch: what the pixel budget
/// charges for it once the decoded tiers it came from are dropped.
pub trait InputBytes {
    /// Bytes held (heap and inline).
    fn input_bytes(&self) -> u64;
}

impl InputBytes for RgbImage {
    fn input_bytes(&self) -> u64 {
        self.as_raw().len() as u64
    }
}

impl InputBytes for Arc<RgbImage> {
    fn input_bytes(&self) -> u64 {
        self.as_raw().len() as u64
    }
}

impl InputBytes for Vec<f32> {
    fn input_bytes(&self) -> u64 {
        (self.len() * std::mem::size_of::<f32>()) as u64
    }
}

/// A runner's input preparation, callable from any thread (the decode threads run it).
pub type SharedPrepare = Arc<dyn Fn(&ImageInput<'_>) -> Result<Prepared, String> + Send + Sync>;

/// A model module as the inference thread drives it.
pub trait ModelRunner: Send {
    /// The module this runner serves.
    fn module(&self) -> Module;
    /// The model's name (metrics label, logs).
    fn model_name(&self) -> &str;
    /// Prepares this job's input and queues it. An error fails the job alone.
    fn submit(&mut self, key: JobKey, image: &ImageInput<'_>) -> Result<(), String>;
    /// Whether a batch should run now, and why.
    fn ready(&self, now: Instant) -> Option<CloseReason>;
    /// When the oldest queued request reaches its wait limit.
    fn next_deadline(&self) -> Option<Instant>;
    /// Runs one batch.
    fn run(&mut self, reason: CloseReason) -> RunnerResults;
    /// Queued requests.
    fn pending(&self) -> usize;
    /// Registers a callback for each batch's statistics (metrics).
    fn set_observer(&mut self, observer: Box<dyn FnMut(&BatchStats) + Send>);
    /// The input preparation other threads may run, when this runner offers one; its outputs
    /// go to [`submit_prepared`](Self::submit_prepared). `None`: `submit` does all the work.
    fn preparer(&self) -> Option<SharedPrepare> {
        None
    }
    /// Queues an input made by [`preparer`](Self::preparer). An error fails the job alone.
    fn submit_prepared(&mut self, key: JobKey, input: Prepared) -> Result<(), String> {
        let _ = (key, input);
        Err(format!(
            "the {} runner takes no prepared inputs",
            self.model_name()
        ))
    }
}

type Prepare<I> = Arc<dyn Fn(&ImageInput<'_>) -> Result<I, String> + Send + Sync>;
type Finish<O> = Box<dyn Fn(O) -> ResultRow + Send>;

/// A [`ModelRunner`] made of a [`BatchModel`] and two conversion functions.
pub struct Batched<M: BatchModel> {
    module: Module,
    name: String,
    batcher: MicroBatcher<M, JobKey>,
    prepare: Prepare<M::Input>,
    finish: Finish<M::Output>,
}

impl<M: BatchModel> Batched<M> {
    /// A runner for `module` that batches `model` with `config`.
    pub fn new(
        module: Module,
        model: M,
        config: BatchConfig,
        prepare: impl Fn(&ImageInput<'_>) -> Result<M::Input, String> + Send + Sync + 'static,
        finish: impl Fn(M::Output) -> ResultRow + Send + 'static,
    ) -> Self {
        let name = model.name().to_string();
        Batched {
            module,
            name,
            batcher: MicroBatcher::new(model, config),
            prepare: Arc::new(prepare),
            finish: Box::new(finish),
        }
    }
}

impl<M> ModelRunner for Batched<M>
where
    M: BatchModel + Send,
    M::Input: InputBytes + Send + 'static,
{
    fn module(&self) -> Module {
        self.module
    }

    fn model_name(&self) -> &str {
        &self.name
    }

    fn submit(&mut self, key: JobKey, image: &ImageInput<'_>) -> Result<(), String> {
        let input = (self.prepare)(image)?;
        self.batcher.push(key, input);
        Ok(())
    }

    fn ready(&self, now: Instant) -> Option<CloseReason> {
        self.batcher.ready(now)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.batcher.next_deadline()
    }

    fn run(&mut self, reason: CloseReason) -> RunnerResults {
        self.batcher
            .run(reason)
            .into_iter()
            .map(|(key, result)| (key, result.map(&self.finish).map_err(|e| e.to_string())))
            .collect()
    }

    fn pending(&self) -> usize {
        self.batcher.len()
    }

    fn set_observer(&mut self, observer: Box<dyn FnMut(&BatchStats) + Send>) {
        self.batcher.set_observer(observer);
    }

    fn preparer(&self) -> Option<SharedPrepare> {
        let prepare = Arc::clone(&self.prepare);
        Some(Arc::new(move |image: &ImageInput<'_>| {
            prepare(image).map(|input| {
                let bytes = input.input_bytes();
                Prepared::new(input, bytes)
            })
        }))
    }

    fn submit_prepared(&mut self, key: JobKey, input: Prepared) -> Result<(), String> {
        let input = input
            .take::<M::Input>()
            .ok_or_else(|| format!("a prepared input of another type reached {}", self.name))?;
        self.batcher.push(key, input);
        Ok(())
    }
}

/// The fake model's input in [`fake_runner`]: its seed and the tier it was computed from,
/// held until the batch runs as a model's own input would be (so the pixel budget has real
/// bytes to charge).
#[cfg(any(test, feature = "fake-model"))]
struct FakeInput {
    seed: u64,
    tier: Arc<RgbImage>,
}

#[cfg(any(test, feature = "fake-model"))]
impl InputBytes for FakeInput {
    fn input_bytes(&self) -> u64 {
        self.tier.input_bytes()
    }
}

/// [`crate::batcher::fake::FakeModel`] over [`FakeInput`]s.
#[cfg(any(test, feature = "fake-model"))]
struct FakeTierModel(crate::batcher::fake::FakeModel);

#[cfg(any(test, feature = "fake-model"))]
impl BatchModel for FakeTierModel {
    type Input = FakeInput;
    type Output = u64;
    type Error = crate::batcher::fake::PoisonedInput;

    fn name(&self) -> &str {
        self.0.name()
    }

    fn run_batch(&mut self, inputs: &[FakeInput]) -> Result<Vec<u64>, Self::Error> {
        let seeds: Vec<u64> = inputs.iter().map(|input| input.seed).collect();
        self.0.run_batch(&seeds)
    }
}

/// A test-only runner around [`crate::batcher::fake::FakeModel`], standing in for a model
/// module to test the pipeline's plumbing (batching, overlap, failure isolation, the pixel
/// budget). It serves `module` (whose result table takes `dim` and `vector` columns, as the
/// embedding's does) with model id `fake`; an image whose path contains `poison` makes its
/// batch fail, and `panic` makes the model panic.
#[cfg(any(test, feature = "fake-model"))]
pub fn fake_runner(
    module: Module,
    config: BatchConfig,
    fixed: std::time::Duration,
    per_item: std::time::Duration,
) -> Box<dyn ModelRunner> {
    use crate::batcher::fake::FakeModel;
    use imgd_core::SqlValue;

    let model = FakeTierModel(FakeModel::new("fake").with_latency(fixed, per_item));
    Box::new(Batched::new(
        module,
        model,
        config,
        |image| {
            let Some((_, pixels)) = image.tiers.first() else {
                return Err("no decoded tier".to_string());
            };
            let seed = if image.path.contains("poison") {
                FakeModel::POISON
            } else if image.path.contains("panic") {
                FakeModel::PANIC
            } else {
                // A deterministic function of the pixels, so results depend on the decode only.
                pixels.as_raw().iter().step_by(97).fold(0u64, |acc, &b| {
                    acc.wrapping_mul(31).wrapping_add(u64::from(b))
                })
            };
            Ok(FakeInput {
                seed,
                tier: Arc::clone(pixels),
            })
        },
        move |output: u64| ResultRow {
            module,
            model_id: Some("fake".into()),
            model_version: Some("1".into()),
            columns: vec![
                ("dim", SqlValue::Integer(2)),
                ("vector", SqlValue::Blob(output.to_le_bytes().to_vec())),
            ],
            data: serde_json::json!({ "fake_output": output.to_string() }),
            vectors: Vec::new(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use imgd_core::{ModuleSpec, ResultKey, RunsOn};

    use super::*;

    static FAKE: ModuleSpec = ModuleSpec {
        name: "fake",
        bit: 2,
        summary: "",
        tier: Some(448),
        runs_on: RunsOn::InferenceThread,
        queued_by_default: false,
        result_table: "result_embedding",
        result_key: ResultKey::ImageAndModel,
        migrations: &[],
        search_text: &[],
        gate: None,
        store_hook: None,
    };

    fn image(seed: u8) -> Arc<RgbImage> {
        Arc::new(RgbImage::from_fn(16, 12, |x, y| {
            image::Rgb([seed, x as u8 * 7, y as u8 * 11])
        }))
    }

    /// The rows of `n` images through `submit`, or through `preparer` + `submit_prepared`.
    fn rows(prepared_elsewhere: bool) -> Vec<(JobKey, Result<ResultRow, String>)> {
        let mut runner = fake_runner(
            Module::of(&FAKE),
            BatchConfig::new(8, std::time::Duration::from_millis(1)),
            std::time::Duration::ZERO,
            std::time::Duration::ZERO,
        );
        let prepare = runner
            .preparer()
            .expect("a batched runner offers its preparation");
        for i in 0..5u8 {
            let tiers = vec![(448, image(i))];
            let input = ImageInput {
                image_id: i64::from(i),
                path: "/photos/a.jpg",
                tiers: &tiers,
            };
            let key = JobKey {
                image_id: i64::from(i),
                job_id: 100 + i64::from(i),
            };
            if prepared_elsewhere {
                let ready = std::thread::scope(|s| s.spawn(|| prepare(&input)).join().unwrap());
                runner.submit_prepared(key, ready.unwrap()).unwrap();
            } else {
                runner.submit(key, &input).unwrap();
            }
        }
        let mut out = runner.run(CloseReason::Draining);
        out.sort_by_key(|(key, _)| key.job_id);
        out
    }

    #[test]
    fn inputs_prepared_on_another_thread_give_the_same_rows() {
        let direct = rows(false);
        let elsewhere = rows(true);
        assert_eq!(direct.len(), 5);
        assert_eq!(
            format!("{direct:?}"),
            format!("{elsewhere:?}"),
            "prepared elsewhere differs"
        );
    }

    #[test]
    fn a_prepared_input_of_the_wrong_type_fails_its_job() {
        let mut runner = fake_runner(
            Module::of(&FAKE),
            BatchConfig::new(8, std::time::Duration::from_millis(1)),
            std::time::Duration::ZERO,
            std::time::Duration::ZERO,
        );
        let key = JobKey {
            image_id: 1,
            job_id: 1,
        };
        let err = runner
            .submit_prepared(key, Prepared::new("not a fake input", 0))
            .unwrap_err();
        assert!(err.contains("another type"), "{err}");
        assert_eq!(runner.pending(), 0);
    }
}
