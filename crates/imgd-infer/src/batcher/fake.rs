//! A fake model for tests and benchmarks of code that drives a [`MicroBatcher`](super::MicroBatcher).
//!
//! It behaves like a real accelerator-backed model where it matters to batching: a call on `n`
//! inputs sleeps `fixed + per_item · n` (a fixed launch cost plus a per-item cost, so batching
//! pays), and its output is a deterministic function of its input, the same whether the input
//! ran in a batch or alone. Two input values make it misbehave: [`FakeModel::POISON`] makes the
//! call fail with an error, [`FakeModel::PANIC`] makes it panic.
//!
//! Available in this crate's tests and with the `fake-model` feature.

use std::fmt;
use std::time::Duration;

use super::BatchModel;

/// A deterministic model with configurable latency and failure inputs (see the
/// [module docs](self)).
#[derive(Debug, Clone)]
pub struct FakeModel {
    name: String,
    fixed_latency: Duration,
    per_item_latency: Duration,
    drop_last_output: bool,
    batch_sizes: Vec<usize>,
}

/// The error of a fake call that met [`FakeModel::POISON`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonedInput {
    /// Where in the batch the poisoned input was.
    pub index: usize,
}

impl fmt::Display for PoisonedInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "poison input at batch index {}", self.index)
    }
}

impl FakeModel {
    /// An input that makes the whole call it is part of fail with [`PoisonedInput`].
    pub const POISON: u64 = u64::MAX;
    /// An input that makes the call it is part of panic.
    pub const PANIC: u64 = u64::MAX - 1;

    /// A fake model named `name` with no latency.
    pub fn new(name: impl Into<String>) -> Self {
        FakeModel {
            name: name.into(),
            fixed_latency: Duration::ZERO,
            per_item_latency: Duration::ZERO,
            drop_last_output: false,
            batch_sizes: Vec::new(),
        }
    }

    /// Makes each call on `n` inputs sleep `fixed + per_item · n`.
    pub fn with_latency(mut self, fixed: Duration, per_item: Duration) -> Self {
        self.fixed_latency = fixed;
        self.per_item_latency = per_item;
        self
    }

    /// When `enabled`, every call returns one output too few (a broken model).
    pub fn drop_last_output_in_batches(&mut self, enabled: bool) {
        self.drop_last_output = enabled;
    }

    /// The output the model gives for `input`: a 64-bit mix (splitmix64) of it.
    pub fn expected_output(input: u64) -> u64 {
        let mut z = input.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The size of every call so far, in call order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batch_sizes.clone()
    }

    /// The latency of a call on `items` inputs.
    pub fn latency(&self, items: usize) -> Duration {
        let items = u32::try_from(items).unwrap_or(u32::MAX);
        self.fixed_latency + self.per_item_latency.saturating_mul(items)
    }
}

impl BatchModel for FakeModel {
    type Input = u64;
    type Output = u64;
    type Error = PoisonedInput;

    fn name(&self) -> &str {
        &self.name
    }

    fn run_batch(&mut self, inputs: &[u64]) -> Result<Vec<u64>, PoisonedInput> {
        self.batch_sizes.push(inputs.len());
        let latency = self.latency(inputs.len());
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        if let Some(index) = inputs.iter().position(|&input| input == Self::POISON) {
            return Err(PoisonedInput { index });
        }
        if inputs.contains(&Self::PANIC) {
            panic!("fake model hit its panic input");
        }
        let mut outputs: Vec<u64> = inputs.iter().map(|&i| Self::expected_output(i)).collect();
        if self.drop_last_output {
            outputs.pop();
        }
        Ok(outputs)
    }
}
