//! The memory budget of decoded pixels in flight.
//!
//! When a decode thread has decoded an image and prepared its model inputs, it charges what
//! the image holds in flight to one [`PixelBudget`]: every prepared input's bytes (a resized
//! crop, MTCNN's pyramid, the OCR detector's planes) and, when a runner prepares on the
//! inference thread, the decoded tiers kept for it. The charge ([`PixelCharge`]) travels with
//! the image until it is written (or dropped). The scheduler
//! claims only while the budget has room (one image at a time may always be in flight, however
//! large), so memory in flight follows the size of the images, not their count. The overshoot
//! is bounded: what the decode threads hold and the few images in the decode queue, claimed
//! before their size was known.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::Metrics;

/// Bytes of decoded pixels in flight, against a limit.
#[derive(Debug)]
pub struct PixelBudget {
    limit: u64,
    used: AtomicU64,
    metrics: Arc<Metrics>,
}

impl PixelBudget {
    /// A budget of `limit` bytes, reported on `metrics`.
    pub fn new(limit: u64, metrics: Arc<Metrics>) -> Arc<Self> {
        metrics.set_pixels_budget(limit);
        metrics.set_pixels_in_flight(0);
        Arc::new(PixelBudget {
            limit,
            used: AtomicU64::new(0),
            metrics,
        })
    }

    /// Charges `bytes` until the returned charge is dropped.
    pub fn charge(self: &Arc<Self>, bytes: u64) -> PixelCharge {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.metrics.set_pixels_in_flight(used);
        PixelCharge {
            budget: Some(Arc::clone(self)),
            bytes,
        }
    }

    /// Bytes charged now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether more images may be claimed.
    pub fn has_room(&self) -> bool {
        self.used() < self.limit
    }
}

/// Pixels charged to a [`PixelBudget`], released when dropped.
#[derive(Debug, Default)]
pub struct PixelCharge {
    budget: Option<Arc<PixelBudget>>,
    bytes: u64,
}

impl PixelCharge {
    /// The bytes this charge holds.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for PixelCharge {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            let used = budget.used.fetch_sub(self.bytes, Ordering::Relaxed) - self.bytes;
            budget.metrics.set_pixels_in_flight(used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_are_released_when_dropped() {
        let metrics = Arc::new(Metrics::new(&[]));
        let budget = PixelBudget::new(100, Arc::clone(&metrics));
        let a = budget.charge(60);
        assert!(budget.has_room());
        let b = budget.charge(50);
        assert_eq!(budget.used(), 110);
        assert!(!budget.has_room());
        assert!(
            metrics
                .encode()
                .contains("imgd_decode_pixels_in_flight_bytes 110")
        );
        drop(a);
        assert!(budget.has_room());
        drop(b);
        assert_eq!(budget.used(), 0);
        assert!(
            metrics
                .encode()
                .contains("imgd_decode_pixels_in_flight_bytes 0")
        );
    }
}
