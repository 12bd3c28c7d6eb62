//! The inference-and-output side of imgd's three-stage pipeline: the micro-batcher the
//! inference thread runs every model through ([`batcher`]), the Prometheus registry holding
//! every metric of the daemon ([`metrics`]), and the small HTTP server exposing `/metrics`,
//! `/healthz` and `/status` ([`http`]).

#![deny(missing_docs)]

pub mod batcher;
pub mod http;
pub mod metrics;
