//! Counters of the cloud module, for the daemon's metrics.
//!
//! [`CloudStats`] is shared between the async worker (which counts) and whoever reports
//! (which reads [`CloudStats::snapshot`]). [`CloudSnapshot::prometheus_text`] renders the
//! counters in the Prometheus text format under these names (all labelled `model`):
//!
//! | metric | type | meaning |
//! |---|---|---|
//! | `imgd_cloud_jobs_total{outcome="done"\|"failed"}` | counter | images answered / failed |
//! | `imgd_cloud_calls_total` | counter | calls answered (one per image and prompt) |
//! | `imgd_cloud_attempts_total` | counter | HTTP attempts, retries included |
//! | `imgd_cloud_errors_total{kind="rate_limited"\|"server"\|"timeout"\|"transport"\|"client"\|"invalid"}` | counter | failed attempts by kind |
//! | `imgd_cloud_tokens_total{direction="input"\|"output"}` | counter | tokens the provider reported |
//! | `imgd_cloud_cost_usd_total` | counter | spend by the price table |
//! | `imgd_cloud_limiter_wait_seconds_total` | counter | time calls waited for a slot and budget |
//! | `imgd_cloud_in_flight` | gauge | images submitted and not yet collected |

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Live counters (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct CloudStats {
    pub(crate) jobs_done: AtomicU64,
    pub(crate) jobs_failed: AtomicU64,
    pub(crate) calls: AtomicU64,
    pub(crate) attempts: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) server_errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) transport_errors: AtomicU64,
    pub(crate) client_errors: AtomicU64,
    pub(crate) invalid_responses: AtomicU64,
    pub(crate) input_tokens: AtomicU64,
    pub(crate) output_tokens: AtomicU64,
    pub(crate) cost_nano_usd: AtomicU64,
    pub(crate) limiter_wait_us: AtomicU64,
    pub(crate) in_flight: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CloudSnapshot {
    /// Images whose every prompt was answered.
    pub jobs_done: u64,
    /// Images that failed.
    pub jobs_failed: u64,
    /// Calls answered.
    pub calls: u64,
    /// HTTP attempts, retries included.
    pub attempts: u64,
    /// 429 responses.
    pub rate_limited: u64,
    /// 5xx responses.
    pub server_errors: u64,
    /// Attempts that timed out.
    pub timeouts: u64,
    /// Attempts that failed to connect or broke off.
    pub transport_errors: u64,
    /// Other 4xx responses (they fail their job).
    pub client_errors: u64,
    /// 2xx responses that could not be read.
    pub invalid_responses: u64,
    /// Input tokens the provider reported.
    pub input_tokens: u64,
    /// Output tokens the provider reported.
    pub output_tokens: u64,
    /// Spend by the price table, in US dollars.
    pub cost_usd: f64,
    /// Seconds calls waited for a slot and budget, summed.
    pub limiter_wait_seconds: f64,
    /// Images submitted and not yet collected.
    pub in_flight: u64,
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl CloudStats {
    /// The counters now.
    pub fn snapshot(&self) -> CloudSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CloudSnapshot {
            jobs_done: get(&self.jobs_done),
            jobs_failed: get(&self.jobs_failed),
            calls: get(&self.calls),
            attempts: get(&self.attempts),
            rate_limited: get(&self.rate_limited),
            server_errors: get(&self.server_errors),
            timeouts: get(&self.timeouts),
            transport_errors: get(&self.transport_errors),
            client_errors: get(&self.client_errors),
            invalid_responses: get(&self.invalid_responses),
            input_tokens: get(&self.input_tokens),
            output_tokens: get(&self.output_tokens),
            cost_usd: get(&self.cost_nano_usd) as f64 / 1e9,
            limiter_wait_seconds: get(&self.limiter_wait_us) as f64 / 1e6,
            in_flight: get(&self.in_flight),
        }
    }

    pub(crate) fn add_cost(&self, usd: f64) {
        add(&self.cost_nano_usd, (usd * 1e9).round().max(0.0) as u64);
    }

    pub(crate) fn add_wait(&self, waited: Duration) {
        add(&self.limiter_wait_us, waited.as_micros() as u64);
    }
}

impl CloudSnapshot {
    /// The counters in the Prometheus text exposition format, labelled with `model`.
    pub fn prometheus_text(&self, model: &str) -> String {
        let model = model.replace('\\', "\\\\").replace('"', "\\\"");
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let sep = if labels.is_empty() { "" } else { "," };
                let suffix = if kind == "counter" { "_total" } else { "" };
                let _ = writeln!(
                    out,
                    "{name}{suffix}{{model=\"{model}\"{sep}{labels}}} {value}"
                );
            }
        };
        family(
            "imgd_cloud_jobs",
            "counter",
            "Images the cloud module finished, by outcome.",
            &[
                ("outcome=\"done\"", self.jobs_done as f64),
                ("outcome=\"failed\"", self.jobs_failed as f64),
            ],
        );
        family(
            "imgd_cloud_calls",
            "counter",
            "Cloud calls answered.",
            &[("", self.calls as f64)],
        );
        family(
            "imgd_cloud_attempts",
            "counter",
            "Cloud HTTP attempts, retries included.",
            &[("", self.attempts as f64)],
        );
        family(
            "imgd_cloud_errors",
            "counter",
            "Failed cloud attempts by kind.",
            &[
                ("kind=\"rate_limited\"", self.rate_limited as f64),
                ("kind=\"server\"", self.server_errors as f64),
                ("kind=\"timeout\"", self.timeouts as f64),
                ("kind=\"transport\"", self.transport_errors as f64),
                ("kind=\"client\"", self.client_errors as f64),
                ("kind=\"invalid\"", self.invalid_responses as f64),
            ],
        );
        family(
            "imgd_cloud_tokens",
            "counter",
            "Tokens the provider reported.",
            &[
                ("direction=\"input\"", self.input_tokens as f64),
                ("direction=\"output\"", self.output_tokens as f64),
            ],
        );
        family(
            "imgd_cloud_cost_usd",
            "counter",
            "Cloud spend by the configured price table, in US dollars.",
            &[("", self.cost_usd)],
        );
        family(
            "imgd_cloud_limiter_wait_seconds",
            "counter",
            "Time cloud calls waited for a concurrency slot and rate budget.",
            &[("", self.limiter_wait_seconds)],
        );
        family(
            "imgd_cloud_in_flight",
            "gauge",
            "Images submitted to the cloud module and not yet collected.",
            &[("", self.in_flight as f64)],
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_and_text_carry_the_counters() {
        let stats = CloudStats::default();
        add(&stats.calls, 3);
        add(&stats.input_tokens, 1200);
        stats.add_cost(0.0012345);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.calls, 3);
        assert!((snapshot.cost_usd - 0.0012345).abs() < 1e-12);
        let text = snapshot.prometheus_text("gpt-4o-mini");
        assert!(
            text.contains("imgd_cloud_calls_total{model=\"gpt-4o-mini\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "imgd_cloud_tokens_total{model=\"gpt-4o-mini\",direction=\"input\"} 1200\n"
            )
        );
        assert!(text.contains("imgd_cloud_in_flight{model=\"gpt-4o-mini\"} 0\n"));
    }
}
