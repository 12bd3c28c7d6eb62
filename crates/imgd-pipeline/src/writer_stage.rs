//! Stage 3: the writer thread. It gathers finished images from both stages and commits many
//! images per transaction (flushing on count or time): results upserted, jobs acked, search
//! rows written. It is the only thread that writes results.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use imgd_store::Store;
use imgd_store::results::ImageOutcome;

use crate::decode_stage::DecodedImage;
use crate::fault::{self, Fault};
use crate::metrics::Metrics;

/// When the writer commits.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Commit once this many images are waiting...
    pub flush_images: usize,
    /// ...or once the oldest has waited this long.
    pub flush_interval: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            flush_images: 64,
            flush_interval: Duration::from_millis(500),
        }
    }
}

/// What the writer did.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WriterStats {
    pub images: u64,
    pub jobs_done: u64,
    pub jobs_failed: u64,
    pub stale: u64,
    pub transactions: u64,
}

pub(crate) struct WriterStage {
    pub store: Store,
    pub owner: String,
    pub config: WriterConfig,
    pub metrics: Arc<Metrics>,
    /// Job ids of images in flight, by image; the writer removes an image once committed.
    pub in_flight: Arc<Mutex<HashMap<i64, Vec<i64>>>>,
    /// Set when a stop runs out of time: commit what is here and end.
    pub abandon: Arc<AtomicBool>,
    /// Told the id of every image committed.
    pub committed: Option<crossbeam_channel::Sender<i64>>,
}

/// How often an idle writer looks at the abandon flag.
const TICK: Duration = Duration::from_millis(100);

impl WriterStage {
    pub fn run(mut self, input: Receiver<DecodedImage>) -> WriterStats {
        let mut stats = WriterStats::default();
        let mut buffer: Vec<DecodedImage> = Vec::new();
        let mut oldest: Option<Instant> = None;
        loop {
            if self.abandon.load(Ordering::Relaxed) {
                self.flush(&mut buffer, &mut stats);
                return stats;
            }
            let wait = oldest.map_or(TICK, |t| {
                self.config
                    .flush_interval
                    .saturating_sub(t.elapsed())
                    .min(TICK)
            });
            match input.recv_timeout(wait) {
                Ok(image) => {
                    oldest.get_or_insert_with(Instant::now);
                    buffer.push(image);
                    // Flush on count, or at once when every image in flight is here (the
                    // tail of a run, a lull): nothing else is coming to share the commit.
                    if buffer.len() >= self.config.flush_images || self.holds_all(buffer.len()) {
                        self.flush(&mut buffer, &mut stats);
                        oldest = None;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if oldest.is_some_and(|t| t.elapsed() >= self.config.flush_interval) {
                        self.flush(&mut buffer, &mut stats);
                        oldest = None;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush(&mut buffer, &mut stats);
                    return stats;
                }
            }
        }
    }

    /// Whether `buffered` images are every image in flight.
    fn holds_all(&self, buffered: usize) -> bool {
        self.in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
            <= buffered
    }

    fn flush(&mut self, buffer: &mut Vec<DecodedImage>, stats: &mut WriterStats) {
        if buffer.is_empty() {
            return;
        }
        fault::point(Fault::WriterCommit);
        let started = Instant::now();
        let outcomes: Vec<ImageOutcome> = buffer.iter().map(|i| i.outcome.to_store()).collect();
        let mut attempt = 0;
        let summary = loop {
            match self.store.commit_outcomes(&self.owner, &outcomes) {
                Ok(summary) => break Some(summary),
                Err(err) if attempt < 5 => {
                    attempt += 1;
                    tracing::warn!("writer: commit failed (attempt {attempt}), retrying: {err}");
                    std::thread::sleep(Duration::from_millis(200 * attempt));
                }
                Err(err) => {
                    // The jobs stay leased; their leases expire and they run again.
                    tracing::error!("writer: giving up on {} images: {err}", outcomes.len());
                    break None;
                }
            }
        };
        if let Some(summary) = summary {
            stats.transactions += 1;
            stats.images += outcomes.len() as u64;
            stats.jobs_done += summary.acked as u64;
            stats.jobs_failed += summary.failed as u64;
            stats.stale += summary.stale as u64;
            for outcome in &outcomes {
                for (_, row) in &outcome.done {
                    self.metrics.job_done(row.module);
                }
                self.metrics.image_processed();
            }
            self.metrics
                .record_writer_flush(outcomes.len() as u64, started.elapsed());
            if let Some(committed) = &self.committed {
                for outcome in &outcomes {
                    // Unbounded: never blocks; a listener that is gone is no error.
                    let _ = committed.send(outcome.image_id);
                }
            }
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        for image in buffer.drain(..) {
            if summary.is_some() {
                for failure in &image.outcome.failed {
                    if let Some((_, module)) = image.jobs.iter().find(|(j, _)| *j == failure.job_id)
                    {
                        self.metrics.job_failed(*module);
                    }
                }
            }
            in_flight.remove(&image.image_id);
        }
    }
}
