//! imgd's three-stage pipeline and the daemon machinery around it.
//!
//! - [`daemon`]: [`daemon::run`] wires the stages: the scheduler (caller's thread) claims
//!   images under a lease, N decode threads decode each image once and run the CPU modules,
//!   one inference thread owns every model and micro-batches across images, one writer thread
//!   commits many images per transaction and acks their jobs.
//! - [`runner`] and [`batcher`] (re-exported from `imgd-infer`): the model-runner interface
//!   and the per-model micro-batcher.
//! - [`metrics`]: the Prometheus registry; [`http`]: the HTTP server (`/metrics`, `/healthz`,
//!   `/status`, event streams, and the application the daemon plugs in behind a token).
//! - [`messages`]: what the stages pass each other; the store's types stop at the edges.
//! - [`budget`]: the byte budget of decoded pixels in flight, which claims wait for.
//! - [`owner`]: lease owner names and whether a daemon of this host is dead; [`fault`]:
//!   fault-injection points for the supervision tests.

#![deny(missing_docs)]

pub use imgd_infer::{batcher, runner};
pub mod budget;
pub mod daemon;
mod decode_stage;
pub mod fault;
pub mod http;
mod infer_stage;
pub mod messages;
pub mod metrics;
pub mod owner;
mod writer_stage;
