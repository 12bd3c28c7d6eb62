//! The micro-batcher of the inference thread.
//!
//! The inference thread owns every model. Requests for one model arrive one image at a time
//! from many images; a [`MicroBatcher`] gathers them until it holds
//! [`BatchConfig::max_items`] requests or the oldest pending request has waited
//! [`BatchConfig::max_wait`], runs them through the model in one call, and hands each output
//! back with the tag (image id, module, …) it came with. Why a batch closed is recorded as a
//! [`CloseReason`] and reported, with the batch's size and busy time, as [`BatchStats`].
//!
//! **Failure isolation.** When a batched call fails, panics, or returns the wrong number of
//! outputs, every item of the batch is run again alone: one bad input fails with its own error
//! and the others get their outputs. A batch of one is never retried.
//!
//! # The intended loop
//!
//! The inference thread blocks on its input channel no longer than the batcher's next
//! deadline, runs a batch whenever one is ready, and drains what is left when the channel
//! closes:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use crossbeam_channel::{RecvTimeoutError, bounded};
//! use imgd_infer::batcher::fake::FakeModel;
//! use imgd_infer::batcher::{BatchConfig, MicroBatcher};
//!
//! let (requests, inbox) = bounded::<(u32, u64)>(64);
//! let producer = std::thread::spawn(move || {
//!     for image_id in 0..100u32 {
//!         requests.send((image_id, u64::from(image_id) * 7)).unwrap();
//!     }
//!     // Dropping `requests` closes the channel and ends the loop below.
//! });
//!
//! let config = BatchConfig { max_items: 16, max_wait: Duration::from_millis(5) };
//! let mut batcher = MicroBatcher::new(FakeModel::new("fake"), config);
//! let mut outputs = Vec::new();
//! loop {
//!     let now = Instant::now();
//!     if let Some(reason) = batcher.ready(now) {
//!         outputs.extend(batcher.run(reason));
//!         continue;
//!     }
//!     let received = match batcher.next_deadline() {
//!         Some(deadline) => inbox.recv_timeout(deadline.saturating_duration_since(now)),
//!         None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
//!     };
//!     match received {
//!         Ok((image_id, input)) => batcher.push(image_id, input),
//!         Err(RecvTimeoutError::Timeout) => {} // the next turn runs the timed-out batch
//!         Err(RecvTimeoutError::Disconnected) => break,
//!     }
//! }
//! outputs.extend(batcher.drain());
//! producer.join().unwrap();
//!
//! assert_eq!(outputs.len(), 100);
//! assert!(outputs.iter().all(|(_, output)| output.is_ok()));
//! ```

use std::any::Any;
use std::collections::VecDeque;
use std::fmt::{self, Display};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

#[cfg(any(test, feature = "fake-model"))]
pub mod fake;

/// When a batch closes: at `max_items` pending requests, or once the oldest pending request has
/// waited `max_wait`, whichever comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// The most requests one model call carries. Values below 1 are treated as 1.
    pub max_items: usize,
    /// The longest the oldest pending request waits for the batch to fill before the batch
    /// runs with fewer items.
    pub max_wait: Duration,
}

impl BatchConfig {
    /// Default batch size: large enough to keep a GPU busy for the vision models imgd runs,
    /// small enough that a batch of 448 px inputs stays in the tens of megabytes.
    pub const DEFAULT_MAX_ITEMS: usize = 32;
    /// Default wait: short next to a model call, so a half-full batch costs little latency.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(20);

    /// The default: [`Self::DEFAULT_MAX_ITEMS`] items or [`Self::DEFAULT_MAX_WAIT`].
    pub const DEFAULT: BatchConfig = BatchConfig {
        max_items: Self::DEFAULT_MAX_ITEMS,
        max_wait: Self::DEFAULT_MAX_WAIT,
    };

    /// No batching: every request runs alone, at once. The baseline batching is measured
    /// against, and the setting for models that cannot take a batch dimension.
    pub const UNBATCHED: BatchConfig = BatchConfig {
        max_items: 1,
        max_wait: Duration::ZERO,
    };

    /// Small batches and a short wait, for CPU inference where a large batch gains little and
    /// holds images in memory longer (8 items / 5 ms).
    pub const LOW_LATENCY: BatchConfig = BatchConfig {
        max_items: 8,
        max_wait: Duration::from_millis(5),
    };

    /// Large batches and a longer wait, for a GPU with memory to spare when throughput is all
    /// that matters (64 items / 50 ms).
    pub const THROUGHPUT: BatchConfig = BatchConfig {
        max_items: 64,
        max_wait: Duration::from_millis(50),
    };

    /// A configuration with the given limits.
    pub const fn new(max_items: usize, max_wait: Duration) -> Self {
        BatchConfig {
            max_items,
            max_wait,
        }
    }

    /// `max_items`, at least 1.
    pub fn effective_max_items(&self) -> usize {
        self.max_items.max(1)
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a batch closed and ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// It reached `max_items`.
    Full,
    /// Its oldest request waited `max_wait`.
    TimedOut,
    /// The input ended (shutdown or end of work) and the pending requests were flushed.
    Draining,
}

impl CloseReason {
    /// Every reason, for pre-creating metric label values.
    pub const ALL: [CloseReason; 3] = [
        CloseReason::Full,
        CloseReason::TimedOut,
        CloseReason::Draining,
    ];

    /// The reason as a metrics label value: `full`, `timed_out` or `draining`.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::Full => "full",
            CloseReason::TimedOut => "timed_out",
            CloseReason::Draining => "draining",
        }
    }
}

impl Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model that runs on a batch of inputs.
///
/// Implementations must return exactly one output per input, in input order; the batcher
/// checks the count and treats a mismatch as a failed batch.
pub trait BatchModel {
    /// One preprocessed input (e.g. a 224×224 tensor of one image).
    type Input;
    /// The model's output for one input.
    type Output;
    /// The error a failed call returns.
    type Error: Display;

    /// The model's name, used in logs, errors and the `model` metrics label. It should come
    /// from a small fixed set (the models of the manifest).
    fn name(&self) -> &str;

    /// Runs the model on `inputs` and returns one output per input, in order.
    fn run_batch(&mut self, inputs: &[Self::Input]) -> Result<Vec<Self::Output>, Self::Error>;
}

/// Why one request got no output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ItemError {
    /// The model returned an error for this input (run alone).
    #[error("model `{model}` failed: {message}")]
    Model {
        /// The model's name.
        model: String,
        /// The model's error, as text.
        message: String,
    },
    /// The model panicked on this input (run alone).
    #[error("model `{model}` panicked: {message}")]
    Panicked {
        /// The model's name.
        model: String,
        /// The panic message.
        message: String,
    },
    /// The model returned a different number of outputs than it got inputs.
    #[error("model `{model}` returned {returned} outputs for {expected} inputs")]
    OutputCount {
        /// The model's name.
        model: String,
        /// How many inputs it got.
        expected: usize,
        /// How many outputs it returned.
        returned: usize,
    },
}

/// What happened in one call of [`MicroBatcher::run`]: what the metrics layer records per
/// batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStats {
    /// The model's name.
    pub model: String,
    /// How many requests the batch held.
    pub items: usize,
    /// Why it closed.
    pub reason: CloseReason,
    /// Time spent inside the model, the batched call and any single retries together.
    pub busy: Duration,
    /// Whether the batched call failed and the items were run again one by one.
    pub retried_singly: bool,
    /// How many items ended with an error.
    pub failed_items: usize,
}

/// The results of one batch: each request's tag with its output or its own error.
pub type BatchResults<Tag, Output> = Vec<(Tag, Result<Output, ItemError>)>;

type StatsObserver = Box<dyn FnMut(&BatchStats) + Send>;

struct Pending<Tag, Input> {
    tag: Tag,
    input: Input,
    enqueued_at: Instant,
}

/// Gathers requests for one model into batches (see the [module docs](self)).
///
/// `Tag` says where an output goes (image id, module, …); the batcher only carries it.
pub struct MicroBatcher<M: BatchModel, Tag> {
    model: M,
    config: BatchConfig,
    pending: VecDeque<Pending<Tag, M::Input>>,
    observer: Option<StatsObserver>,
}

impl<M: BatchModel, Tag> MicroBatcher<M, Tag> {
    /// A batcher running `model` with the limits of `config`.
    pub fn new(model: M, config: BatchConfig) -> Self {
        MicroBatcher {
            model,
            config,
            pending: VecDeque::new(),
            observer: None,
        }
    }

    /// Calls `observer` with the [`BatchStats`] of every batch run from now on (the metrics
    /// layer counts them: see `Metrics::record_batch`).
    pub fn set_observer(&mut self, observer: impl FnMut(&BatchStats) + Send + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// The limits this batcher closes batches at.
    pub fn config(&self) -> BatchConfig {
        self.config
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The model, mutably (e.g. to reconfigure it between batches).
    pub fn model_mut(&mut self) -> &mut M {
        &mut self.model
    }

    /// Gives the model back, dropping any pending requests.
    pub fn into_model(self) -> M {
        self.model
    }

    /// How many requests wait for a batch.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Adds a request; its output will come back from [`run`](Self::run) with `tag`.
    pub fn push(&mut self, tag: Tag, input: M::Input) {
        self.pending.push_back(Pending {
            tag,
            input,
            enqueued_at: Instant::now(),
        });
    }

    /// Whether a batch should run at `now`, and why: [`CloseReason::Full`] when
    /// `max_items` requests wait, [`CloseReason::TimedOut`] when the oldest has waited
    /// `max_wait`, `None` otherwise (also when nothing waits).
    pub fn ready(&self, now: Instant) -> Option<CloseReason> {
        if self.pending.len() >= self.config.effective_max_items() {
            return Some(CloseReason::Full);
        }
        match self.next_deadline() {
            Some(deadline) if deadline <= now => Some(CloseReason::TimedOut),
            _ => None,
        }
    }

    /// When the oldest pending request times out: the longest the inference loop may block
    /// waiting for more input. `None` when nothing waits (block until input arrives).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending
            .front()
            .map(|oldest| oldest.enqueued_at + self.config.max_wait)
    }

    /// Runs one batch of the oldest pending requests (at most `max_items`) and returns each
    /// request's tag with its output or error, in arrival order. `reason` is what
    /// [`ready`](Self::ready) said (or [`CloseReason::Draining`]); it is only recorded.
    /// Returns nothing, and records nothing, when no request waits.
    pub fn run(&mut self, reason: CloseReason) -> BatchResults<Tag, M::Output> {
        let take = self.pending.len().min(self.config.effective_max_items());
        if take == 0 {
            return Vec::new();
        }
        let (tags, inputs): (Vec<Tag>, Vec<M::Input>) = self
            .pending
            .drain(..take)
            .map(|pending| (pending.tag, pending.input))
            .unzip();

        let started = Instant::now();
        let batched = call_model(&mut self.model, &inputs);
        let retried_singly = batched.is_err() && inputs.len() > 1;
        let outputs: Vec<Result<M::Output, ItemError>> = match batched {
            Ok(outputs) => outputs.into_iter().map(Ok).collect(),
            Err(error) if inputs.len() == 1 => vec![Err(error)],
            Err(error) => {
                tracing::warn!(
                    model = self.model.name(),
                    items = inputs.len(),
                    %error,
                    "batched call failed; running each item alone"
                );
                inputs
                    .iter()
                    .map(|input| {
                        call_model(&mut self.model, std::slice::from_ref(input))
                            .map(|mut single| single.remove(0))
                    })
                    .collect()
            }
        };
        let busy = started.elapsed();

        let failed_items = outputs.iter().filter(|output| output.is_err()).count();
        if let Some(observer) = self.observer.as_mut() {
            observer(&BatchStats {
                model: self.model.name().to_string(),
                items: take,
                reason,
                busy,
                retried_singly,
                failed_items,
            });
        }
        tags.into_iter().zip(outputs).collect()
    }

    /// Runs every pending request, in batches of at most `max_items`, each closed with
    /// [`CloseReason::Draining`]. For shutdown and the end of the input.
    pub fn drain(&mut self) -> BatchResults<Tag, M::Output> {
        let mut results = Vec::with_capacity(self.pending.len());
        while !self.pending.is_empty() {
            results.extend(self.run(CloseReason::Draining));
        }
        results
    }
}

impl<M: BatchModel, Tag> fmt::Debug for MicroBatcher<M, Tag> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MicroBatcher")
            .field("model", &self.model.name())
            .field("config", &self.config)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// One model call with panics caught and the output count checked.
fn call_model<M: BatchModel>(
    model: &mut M,
    inputs: &[M::Input],
) -> Result<Vec<M::Output>, ItemError> {
    let outcome = catch_unwind(AssertUnwindSafe(|| model.run_batch(inputs)));
    let model_name = || model.name().to_string();
    match outcome {
        Ok(Ok(outputs)) if outputs.len() == inputs.len() => Ok(outputs),
        Ok(Ok(outputs)) => Err(ItemError::OutputCount {
            model: model_name(),
            expected: inputs.len(),
            returned: outputs.len(),
        }),
        Ok(Err(error)) => Err(ItemError::Model {
            model: model_name(),
            message: error.to_string(),
        }),
        Err(payload) => Err(ItemError::Panicked {
            model: model_name(),
            message: panic_message(payload.as_ref()),
        }),
    }
}

/// The text of a panic payload (`panic!("...")` carries a `&str` or a `String`).
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "non-text panic payload".to_string()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::thread::sleep;

    use super::fake::FakeModel;
    use super::*;

    const SHORT_WAIT: Duration = Duration::from_millis(20);

    fn batcher(max_items: usize) -> MicroBatcher<FakeModel, usize> {
        MicroBatcher::new(
            FakeModel::new("fake"),
            BatchConfig::new(max_items, SHORT_WAIT),
        )
    }

    fn recorded_stats(batcher: &mut MicroBatcher<FakeModel, usize>) -> Arc<Mutex<Vec<BatchStats>>> {
        let stats = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&stats);
        batcher.set_observer(move |batch| sink.lock().unwrap().push(batch.clone()));
        stats
    }

    #[test]
    fn a_batch_closes_full_at_max_items_and_runs_at_most_max_items() {
        let mut batcher = batcher(4);
        let stats = recorded_stats(&mut batcher);
        for i in 0..3 {
            batcher.push(i, i as u64);
        }
        assert_eq!(batcher.ready(Instant::now()), None);
        batcher.push(3, 3);
        batcher.push(4, 4);
        assert_eq!(batcher.ready(Instant::now()), Some(CloseReason::Full));

        let results = batcher.run(CloseReason::Full);
        let tags: Vec<usize> = results.iter().map(|(tag, _)| *tag).collect();
        assert_eq!(tags, vec![0, 1, 2, 3]);
        assert_eq!(batcher.len(), 1);
        assert_eq!(batcher.model().batch_sizes(), vec![4]);
        let stats = stats.lock().unwrap();
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].items, stats[0].reason), (4, CloseReason::Full));
        assert_eq!(stats[0].model, "fake");
        assert!(!stats[0].retried_singly);
    }

    #[test]
    fn a_partial_batch_times_out_after_max_wait() {
        let mut batcher = batcher(32);
        assert_eq!(batcher.next_deadline(), None);
        batcher.push(0, 10);
        batcher.push(1, 11);
        let deadline = batcher
            .next_deadline()
            .expect("a deadline once a request waits");
        assert_eq!(batcher.ready(Instant::now()), None);

        sleep(SHORT_WAIT + Duration::from_millis(5));
        assert!(Instant::now() >= deadline);
        assert_eq!(batcher.ready(Instant::now()), Some(CloseReason::TimedOut));
        let results = batcher.run(CloseReason::TimedOut);
        assert_eq!(results.len(), 2);
        assert!(batcher.is_empty());
        assert_eq!(batcher.ready(Instant::now()), None);
    }

    #[test]
    fn drain_runs_everything_in_batches_of_max_items_as_draining() {
        let mut batcher = batcher(3);
        let stats = recorded_stats(&mut batcher);
        for i in 0..7 {
            batcher.push(i, i as u64);
        }
        let results = batcher.drain();
        assert_eq!(results.len(), 7);
        assert!(batcher.is_empty());
        assert_eq!(batcher.model().batch_sizes(), vec![3, 3, 1]);
        let stats = stats.lock().unwrap();
        assert!(stats.iter().all(|s| s.reason == CloseReason::Draining));
        assert_eq!(batcher.drain().len(), 0, "draining nothing runs nothing");
    }

    #[test]
    fn a_poisoned_input_fails_alone_and_the_others_get_their_outputs() {
        let mut batcher = batcher(8);
        let stats = recorded_stats(&mut batcher);
        let inputs = [1, 2, FakeModel::POISON, 4, 5];
        for (tag, input) in inputs.iter().enumerate() {
            batcher.push(tag, *input);
        }
        let results = batcher.run(CloseReason::TimedOut);
        assert_eq!(results.len(), inputs.len());
        for ((tag, output), input) in results.into_iter().zip(inputs) {
            if input == FakeModel::POISON {
                let error = output.unwrap_err();
                assert!(matches!(error, ItemError::Model { .. }), "{error:?}");
                assert!(error.to_string().contains("poison"), "{error}");
                assert_eq!(tag, 2);
            } else {
                assert_eq!(output.unwrap(), FakeModel::expected_output(input));
            }
        }
        // One failed batch of five, then five single runs.
        assert_eq!(batcher.model().batch_sizes(), vec![5, 1, 1, 1, 1, 1]);
        let stats = stats.lock().unwrap();
        assert!(stats[0].retried_singly);
        assert_eq!(stats[0].failed_items, 1);
    }

    #[test]
    fn a_panicking_model_is_caught_and_fails_only_the_panicking_input() {
        let mut batcher = batcher(8);
        batcher.push(0, 7);
        batcher.push(1, FakeModel::PANIC);
        batcher.push(2, 9);
        let results = batcher.run(CloseReason::Full);
        assert_eq!(results[0].1, Ok(FakeModel::expected_output(7)));
        match &results[1].1 {
            Err(ItemError::Panicked { model, message }) => {
                assert_eq!(model, "fake");
                assert!(message.contains("panic input"), "{message}");
            }
            other => panic!("expected a caught panic, got {other:?}"),
        }
        assert_eq!(results[2].1, Ok(FakeModel::expected_output(9)));

        // The batcher keeps working after a panic.
        batcher.push(3, 3);
        assert_eq!(
            batcher.run(CloseReason::Draining)[0].1,
            Ok(FakeModel::expected_output(3))
        );
    }

    #[test]
    fn a_single_failing_item_is_not_run_twice() {
        let mut batcher = batcher(8);
        batcher.push(0, FakeModel::POISON);
        let results = batcher.run(CloseReason::TimedOut);
        assert!(results[0].1.is_err());
        assert_eq!(batcher.model().batch_sizes(), vec![1]);
    }

    #[test]
    fn a_wrong_output_count_is_an_error_per_item() {
        let mut batcher = batcher(8);
        batcher.model_mut().drop_last_output_in_batches(true);
        batcher.push(0, 1);
        batcher.push(1, 2);
        let results = batcher.run(CloseReason::Full);
        // The single retries also drop their output: each item reports the count mismatch.
        for (_, output) in results {
            assert_eq!(
                output,
                Err(ItemError::OutputCount {
                    model: "fake".to_string(),
                    expected: 1,
                    returned: 0
                })
            );
        }
    }

    #[test]
    fn batched_outputs_equal_single_outputs() {
        let inputs: Vec<u64> = (0..50).map(|i| i * 977 + 3).collect();
        let mut batched = batcher(16);
        let mut single = MicroBatcher::new(FakeModel::new("fake"), BatchConfig::UNBATCHED);
        for (tag, input) in inputs.iter().enumerate() {
            batched.push(tag, *input);
            single.push(tag, *input);
        }
        let batched = batched.drain();
        let single = single.drain();
        assert_eq!(batched, single);
        assert_eq!(batched.len(), inputs.len());
    }

    #[test]
    fn unbatched_config_closes_at_once() {
        let mut batcher = MicroBatcher::new(FakeModel::new("fake"), BatchConfig::UNBATCHED);
        batcher.push(0usize, 1);
        assert_eq!(batcher.ready(Instant::now()), Some(CloseReason::Full));
        let zero_items = MicroBatcher::<FakeModel, usize>::new(
            FakeModel::new("fake"),
            BatchConfig::new(0, SHORT_WAIT),
        );
        assert_eq!(zero_items.config().effective_max_items(), 1);
    }

    #[test]
    fn close_reasons_have_metric_label_names() {
        let names: Vec<&str> = CloseReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names, ["full", "timed_out", "draining"]);
        assert_eq!(
            BatchConfig::default(),
            BatchConfig::new(32, Duration::from_millis(20))
        );
    }
}
