//! imgd's model runtime.
//!
//! - [`batcher`]: the per-model micro-batcher of the inference thread (max items / max wait,
//!   close reasons, failure isolation).
//! - [`runner`]: [`runner::ModelRunner`], the interface between the inference thread and a
//!   model module, and the [`runner::Batched`] adapter from any [`batcher::BatchModel`].
//! - [`onnx`]: ONNX Runtime through `ort`, loaded at run time ([`init`], [`session`]).
//! - [`shaped`]: [`ShapedSessions`], one session per input shape for the CUDA provider.
//! - [`manifest`]: `models/manifest.toml` — model files, sources, checksums, downloads.
//! - [`models_dir`](mod@models_dir): where model files live ([`models_dir()`],
//!   [`registry_dir()`]).

#![deny(missing_docs)]

pub mod batcher;
mod error;
pub mod loader;
pub mod manifest;
pub mod models_dir;
pub mod onnx;
pub mod runner;
pub mod shaped;

pub use error::InferError;
pub use models_dir::{models_dir, registry_dir, repo_dir};
/// The `ndarray` version `ort` takes tensors from.
pub use ndarray;
pub use onnx::{OrtConfig, OrtInfo, init, session};
/// The `ort` crate imgd is built with (use it rather than depending on `ort` directly, so the
/// versions agree).
pub use ort;
pub use shaped::ShapedSessions;
