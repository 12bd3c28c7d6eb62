//! imgd's model runtime.
//!
//! - [`batcher`]: the per-model micro-batcher of the inference thread (max items / max wait,
//!   close reasons, failure isolation).
//! - [`runner`]: [`runner::ModelRunner`], the interface between the inference thread and a
//!   model module, and the [`runner::Batched`] adapter from any [`batcher::BatchModel`].

#![deny(missing_docs)]

pub mod batcher;
pub mod runner;
