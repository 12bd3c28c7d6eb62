//! imgd's cloud vision module: every image asked N configured prompts through an
//! OpenAI-compatible `/v1/chat/completions` endpoint.
//!
//! - [`config`]: [`CloudConfig`], the daemon's `[cloud]` section, with environment overrides;
//!   [`Secret`] keeps the API key out of logs and errors.
//! - [`request`]: the base64 JPEG data URL of the ≤ 1568-px tier, the deterministic request
//!   body, and the token estimate (text ≈ chars/4, the provider's image formula, the output
//!   limit).
//! - [`limiter`]: one limiter for every call in flight: requests and tokens per window (budgets
//!   that return one window after they were spent, corrected with the reported usage and
//!   tightened by the provider's rate-limit headers) and a concurrency cap.
//! - `client` (private): one call with retries (429 with `retry-after-ms` / `retry-after`,
//!   5xx and timeouts with exponential backoff and full jitter; other 4xx fail the job).
//! - [`runner`]: [`CloudRunner`], the [`ModelRunner`] the inference thread drives; the calls
//!   run on the module's own tokio runtime, so the inference and writer threads never wait on
//!   the network.
//! - [`stats`]: counters (calls, tokens, cost, errors, limiter wait) for the metrics.
//! - `mock` (feature `mock-server`): an OpenAI-compatible mock server that enforces its own
//!   limits and injects failures, for tests and `scripts/bench-cloud.sh`.
//!
//! Wiring: `imgd_cloud::runner(config, batch)` gives the `Box<dyn ModelRunner>` for
//! [`CLOUD`].

#![deny(missing_docs)]

mod client;
pub mod config;
pub mod limiter;
pub mod loader;
#[cfg(feature = "mock-server")]
pub mod mock;
pub mod request;
pub mod runner;
mod secret;
pub mod stats;

use std::sync::Arc;

pub use config::{CloudConfig, Detail, Price, PromptConfig};
use imgd_core::{Module, ModuleSpec, ResultKey, RunsOn, SearchText};
use imgd_infer::batcher::BatchConfig;
use imgd_infer::runner::ModelRunner;
pub use loader::CLOUD_LOADER;
pub use runner::CloudRunner;
pub use secret::Secret;
pub use stats::{CloudSnapshot, CloudStats};

/// The `cloud` module's declaration.
pub static CLOUD_SPEC: ModuleSpec = ModuleSpec {
    name: "cloud",
    bit: 8,
    summary: "answers from an OpenAI-compatible vision API (paid per call: queued only when asked)",
    tier: Some(1568),
    runs_on: RunsOn::InferenceThread,
    queued_by_default: false,
    result_table: "result_cloud",
    result_key: ResultKey::Image,
    // Its table is in the store's first migrations.
    migrations: &[],
    search_text: &[SearchText {
        column: "cloud",
        sql: "SELECT group_concat(value, ' ')
              FROM json_tree((SELECT data FROM result_cloud WHERE image_id = ?1))
              WHERE type = 'text'",
        postgres: Some(
            "SELECT string_agg(text #>> '{}', ' ')
             FROM result_cloud,
                  jsonb_path_query(data::jsonb, 'strict $.** ? (@.type() == \"string\")') text
             WHERE image_id = ?1",
        ),
        words: None,
    }],
    gate: None,
    store_hook: None,
};

/// The `cloud` module.
pub const CLOUD: Module = Module::of(&CLOUD_SPEC);

/// Errors of setting the cloud module up. (Per-image failures are job errors, not these.)
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// A setting is invalid; the message names it.
    #[error("invalid cloud configuration: {0}")]
    Config(String),
    /// The async runtime could not start.
    #[error("cannot start the cloud worker: {0}")]
    Runtime(#[source] std::io::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// The runner for [`CLOUD`]: validates `config`, starts the
/// module's async worker and returns it as the inference thread's [`ModelRunner`].
pub fn runner(config: CloudConfig, batch: BatchConfig) -> Result<Box<dyn ModelRunner>, CloudError> {
    Ok(Box::new(CloudRunner::new(config, batch)?))
}

/// [`runner`], also returning the module's counters for the daemon's metrics.
pub fn runner_with_stats(
    config: CloudConfig,
    batch: BatchConfig,
) -> Result<(Box<dyn ModelRunner>, Arc<CloudStats>), CloudError> {
    let runner = CloudRunner::new(config, batch)?;
    let stats = runner.stats();
    Ok((Box::new(runner), stats))
}
