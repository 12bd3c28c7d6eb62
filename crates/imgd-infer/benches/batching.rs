//! Throughput of the inference loop with micro-batching against one request per model call.
//!
//! A producer thread sends N = 400 requests through a bounded channel (capacity 64) to an
//! inference-thread loop driving a [`MicroBatcher`] over the fake model, whose call on `n`
//! inputs takes `5 ms + 0.5 ms · n` (a fixed launch cost plus a per-item cost, the shape of a
//! GPU forward pass). Run with `cargo bench -p imgd-infer --bench batching`.
//!
//! Figure on the 2-core build machine (release, three runs, identical to 0.01 s): unbatched
//! 2.24 s (179 req/s, 400 model calls), batched (max_items 32, max_wait 20 ms) 0.27 s
//! (1 490 req/s, 13 model calls: 12 full, 1 drained): `batching_speedup=8.3`. The model's own
//! bound is (5 + 0.5) / (5/32 + 0.5) = 8.4.

use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, bounded};
use imgd_infer::batcher::fake::FakeModel;
use imgd_infer::batcher::{BatchConfig, MicroBatcher};

const REQUESTS: u64 = 400;
const CHANNEL_CAPACITY: usize = 64;
const FIXED_LATENCY: Duration = Duration::from_millis(5);
const PER_ITEM_LATENCY: Duration = Duration::from_micros(500);

/// Runs every request through the loop and returns the wall time and the number of batches.
fn run(config: BatchConfig) -> (Duration, usize) {
    let (requests, inbox) = bounded::<(u64, u64)>(CHANNEL_CAPACITY);
    let model = FakeModel::new("fake").with_latency(FIXED_LATENCY, PER_ITEM_LATENCY);
    let mut batcher = MicroBatcher::new(model, config);

    let started = Instant::now();
    let producer = thread::spawn(move || {
        for id in 0..REQUESTS {
            if requests.send((id, id.wrapping_mul(31))).is_err() {
                break;
            }
        }
    });

    let mut done = 0u64;
    loop {
        let now = Instant::now();
        if let Some(reason) = batcher.ready(now) {
            done += batcher.run(reason).len() as u64;
            continue;
        }
        let received = match batcher.next_deadline() {
            Some(deadline) => inbox.recv_timeout(deadline.saturating_duration_since(now)),
            None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match received {
            Ok((id, input)) => batcher.push(id, input),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    done += batcher.drain().len() as u64;
    let elapsed = started.elapsed();
    producer.join().expect("producer thread");
    assert_eq!(done, REQUESTS, "every request answered");
    (elapsed, batcher.model().batch_sizes().len())
}

fn main() {
    let (unbatched, unbatched_calls) = run(BatchConfig::UNBATCHED);
    let batched_config = BatchConfig::new(32, Duration::from_millis(20));
    let (batched, batched_calls) = run(batched_config);

    let rate = |elapsed: Duration| REQUESTS as f64 / elapsed.as_secs_f64();
    println!(
        "unbatched: {REQUESTS} requests in {:.3} s ({:.0} req/s, {unbatched_calls} model calls)",
        unbatched.as_secs_f64(),
        rate(unbatched)
    );
    println!(
        "batched (max_items {}, max_wait {:?}): {REQUESTS} requests in {:.3} s ({:.0} req/s, {batched_calls} model calls)",
        batched_config.max_items,
        batched_config.max_wait,
        batched.as_secs_f64(),
        rate(batched)
    );
    println!(
        "batching_speedup={:.1}",
        unbatched.as_secs_f64() / batched.as_secs_f64()
    );
}
