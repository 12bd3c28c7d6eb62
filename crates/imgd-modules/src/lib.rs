//! The analysis modules that run on the CPU, on the pipeline's decode threads.
//!
//! - [`metadata`]: camera, lens, exposure, capture time, GPS, orientation and dimensions from
//!   the EXIF block; headers only, no pixel decode.
//! - [`technical`]: sharpness, exposure and clipping, noise, dominant colours and quality flags
//!   from the decoded 1024-px tier.
//!
//! Both are pure functions without I/O: they take bytes or pixels and return a value whose
//! `to_row()` is the [`imgd_core::ResultRow`] for the module's result table.

#![deny(missing_docs)]

pub mod metadata;
pub mod technical;
