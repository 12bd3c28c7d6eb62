//! The vector engine of imgd: exact top-k search over the embedding vectors of one model.
//!
//! [`VectorMatrix`] holds the vectors as one contiguous f32 row-major matrix next to their
//! image ids, and searches it on every core. A plain f32 scan is limited by memory bandwidth
//! (2 GB per query at 1 M × 512), so the matrix can also keep an int8 copy of its rows (a
//! per-row scale and one byte per component: a quarter of the bytes): a search then scans the
//! copy, re-ranks the best candidates with the f32 rows, and checks with a proven bound on the
//! int8 error that no row left out can reach the `k`-th exact score, or scores every row still
//! in doubt in a second pass. The result is always the f32 scan's, ids and scores
//! ([`VectorMatrix::top_k_exact_threads`] is that scan); `quantized.rs` has the details.
//!
//! The crate knows nothing of where the vectors come from: `imgd-store` loads them from the
//! database, picks the one model a ranking uses and fuses rankings with full-text search.

#![deny(missing_docs)]

mod matrix;
mod quantized;

use serde::Serialize;

pub use matrix::{Neighbour, VectorMatrix, dot, normalize, rank_order};
pub use quantized::ScanStats;

/// An embedding model: id and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ModelKey {
    /// The model id (e.g. `clip-vit-b32`).
    pub id: String,
    /// Its version.
    pub version: String,
}

impl ModelKey {
    /// A model key.
    pub fn new(id: impl Into<String>, version: impl Into<String>) -> ModelKey {
        ModelKey {
            id: id.into(),
            version: version.into(),
        }
    }
}

impl std::fmt::Display for ModelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.id, self.version)
    }
}
