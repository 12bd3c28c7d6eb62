//! The in-memory vector matrix and its exact brute-force searches.
//!
//! Rows are stored contiguously (f32, row-major) next to their image ids. The dot product runs
//! over chunks of 16 floats with 16 independent accumulators, a shape the compiler turns into
//! SIMD code on any x86-64 or AArch64 baseline without `unsafe` or target flags. A search splits
//! the rows into one contiguous chunk per thread (`std::thread::scope`).
//!
//! Once [`VectorMatrix::prepare_search`] has built an int8 copy of the rows,
//! [`VectorMatrix::top_k`] scans that copy and re-ranks its candidates with the f32 rows, with a
//! certificate that the result is the exact one (see `quantized.rs`). Before that, and in
//! [`VectorMatrix::top_k_exact_threads`], it is the plain f32 scan, where each thread keeps a
//! bounded min-heap of its best `k` and the per-thread heaps are merged at the end. Both return
//! the same neighbours and scores. Coding the rows costs several f32 scans, so a process that
//! searches once (`imgd search`) never builds the copy; the store's vector cache builds it when a
//! process searches the same matrix again.
//!
//! Rankings are deterministic: higher score first, and on equal scores the smaller image id
//! first, whatever the number of threads.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};

use serde::Serialize;

use crate::ModelKey;
use crate::quantized::{self, Quantized, ScanStats};

/// Below this many rows a search runs on the calling thread: spawning costs more than it saves.
const PARALLEL_MIN_ROWS: usize = 16_384;

/// Rows per tile of the all-pairs scan: 64 rows of 512 floats (128 KiB) stay in L2.
const PAIR_TILE: usize = 64;

/// One result of a vector search.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Neighbour {
    /// The image's row id.
    pub image_id: i64,
    /// The dot product with the query: the cosine similarity, since vectors are normalised.
    pub score: f32,
}

/// A heap entry ordered so that the *worst* neighbour is the greatest, i.e. sits on top of
/// `BinaryHeap` (a max-heap) and is the one to evict.
#[derive(Debug, Clone, Copy)]
pub(super) struct Worst(pub(super) Neighbour);

impl Worst {
    /// `Less` when `self` ranks before (is better than) `other`.
    fn rank_cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.image_id.cmp(&other.0.image_id))
    }
}

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.rank_cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank_cmp(other)
    }
}

/// Adds `candidate` to `heap`, which keeps the best `k`.
#[inline]
pub(super) fn offer(heap: &mut BinaryHeap<Worst>, candidate: Neighbour, k: usize) {
    let candidate = Worst(candidate);
    if heap.len() < k {
        heap.push(candidate);
    } else if let Some(mut worst) = heap.peek_mut()
        && candidate < *worst
    {
        *worst = candidate;
    }
}

/// Orders neighbours best first: score descending, then image id ascending.
pub fn rank_order(a: &Neighbour, b: &Neighbour) -> Ordering {
    b.score
        .total_cmp(&a.score)
        .then(a.image_id.cmp(&b.image_id))
}

/// The dot product of two equally long slices, in a shape the compiler vectorises: 16
/// independent accumulators over chunks of 16, then the tail.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 16];
    let (a_chunks, b_chunks) = (a.chunks_exact(16), b.chunks_exact(16));
    let (a_tail, b_tail) = (a_chunks.remainder(), b_chunks.remainder());
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut tail = 0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        tail += x * y;
    }
    // A fixed reduction order keeps results identical across calls and threads.
    let mut sum = [0f32; 4];
    for (i, v) in acc.iter().enumerate() {
        sum[i % 4] += v;
    }
    (sum[0] + sum[1]) + (sum[2] + sum[3]) + tail
}

/// Scales `v` to unit length in place (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        for x in v {
            *x /= norm;
        }
    }
}

/// The vectors of one model: a contiguous row-major f32 matrix with the image id of each row,
/// and, once [`Self::prepare_search`] has run, an int8 copy of the rows.
#[derive(Debug, Clone)]
pub struct VectorMatrix {
    model: ModelKey,
    dim: usize,
    ids: Vec<i64>,
    data: Vec<f32>,
    quantized: OnceLock<Quantized>,
}

impl VectorMatrix {
    /// An empty matrix of `dim`-long rows.
    pub fn new(model: ModelKey, dim: usize) -> VectorMatrix {
        VectorMatrix {
            model,
            dim,
            ids: Vec::new(),
            data: Vec::new(),
            quantized: OnceLock::new(),
        }
    }

    /// An empty matrix with room for `rows` rows.
    pub fn with_capacity(model: ModelKey, dim: usize, rows: usize) -> VectorMatrix {
        VectorMatrix {
            model,
            dim,
            ids: Vec::with_capacity(rows),
            data: Vec::with_capacity(rows * dim),
            quantized: OnceLock::new(),
        }
    }

    /// Appends one row. Returns `false` (and appends nothing) when its length is not `dim`.
    pub fn push(&mut self, image_id: i64, vector: &[f32]) -> bool {
        if vector.len() != self.dim {
            return false;
        }
        self.ids.push(image_id);
        self.data.extend_from_slice(vector);
        self.quantized.take();
        true
    }

    /// Appends one row from a little-endian f32 BLOB as stored in `result_embedding.vector`.
    /// Returns `false` (and appends nothing) when its length is not `dim` floats.
    pub fn push_le_bytes(&mut self, image_id: i64, blob: &[u8]) -> bool {
        if blob.len() != self.dim * 4 {
            return false;
        }
        self.ids.push(image_id);
        self.data.extend(
            blob.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        self.quantized.take();
        true
    }

    /// The model the vectors come from.
    pub fn model(&self) -> &ModelKey {
        &self.model
    }

    /// The length of each row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The image id of every row, in row order.
    pub fn ids(&self) -> &[i64] {
        &self.ids
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The row of an image, if it has one (a linear scan of the ids).
    pub fn row_of(&self, image_id: i64) -> Option<&[f32]> {
        self.ids
            .iter()
            .position(|&id| id == image_id)
            .map(|i| self.row(i))
    }

    /// Bytes held by the matrix: the f32 rows, the ids and the int8 copy once built.
    pub fn memory_bytes(&self) -> usize {
        self.data.len() * 4
            + self.ids.len() * 8
            + self.quantized.get().map_or(0, Quantized::memory_bytes)
    }

    /// Builds the int8 copy of the rows that [`Self::top_k`] then scans, unless built already.
    /// Costs about as much as several f32 scans (a pass over the rows, and 1 byte per
    /// component of new memory). Pushing a row drops the copy.
    pub fn prepare_search(&self) {
        self.quantized.get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            Quantized::build(&self.data, self.dim, threads)
        });
    }

    /// Whether the int8 copy is built.
    pub fn is_prepared(&self) -> bool {
        self.quantized.get().is_some()
    }

    /// The `k` rows with the largest dot product with `query`, best first, on as many threads
    /// as the machine has cores. An empty result when `query.len() != dim`.
    ///
    /// Exact: the same neighbours and scores as [`Self::top_k_exact_threads`], found through
    /// the int8 copy of the rows once [`Self::prepare_search`] has built it (see the module
    /// docs), else by that f32 scan.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<Neighbour> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        self.top_k_threads(query, k, threads)
    }

    /// [`Self::top_k`] on exactly `threads` threads (1: the calling thread).
    pub fn top_k_threads(&self, query: &[f32], k: usize, threads: usize) -> Vec<Neighbour> {
        self.top_k_stats(query, k, threads).0
    }

    /// [`Self::top_k_threads`], and what the search did.
    pub fn top_k_stats(
        &self,
        query: &[f32],
        k: usize,
        threads: usize,
    ) -> (Vec<Neighbour>, ScanStats) {
        if k == 0 || self.is_empty() || query.len() != self.dim {
            return (Vec::new(), ScanStats::default());
        }
        let exact = |rows: usize| {
            let found = self.top_k_exact_threads(query, k, threads);
            let stats = ScanStats {
                candidates: rows,
                ..ScanStats::default()
            };
            (found, stats)
        };
        // With no more rows than candidates, every row would be re-ranked anyway.
        let Some(quant) = self.quantized.get() else {
            return exact(self.len());
        };
        if self.len() <= quantized::candidates_for(k) {
            return exact(self.len());
        }
        let threads = if self.len() < PARALLEL_MIN_ROWS {
            1
        } else {
            threads.max(1)
        };
        quantized::top_k(quant, &self.data, &self.ids, query, k, threads)
            .unwrap_or_else(|| exact(self.len()))
    }

    /// The `k` best rows by a plain scan of the f32 rows on `threads` threads (1: the calling
    /// thread): the reference [`Self::top_k`] must match, and its fallback for queries the int8
    /// copy cannot code (zero or non-finite).
    pub fn top_k_exact_threads(&self, query: &[f32], k: usize, threads: usize) -> Vec<Neighbour> {
        if k == 0 || self.is_empty() || query.len() != self.dim {
            return Vec::new();
        }
        let threads = if self.len() < PARALLEL_MIN_ROWS {
            1
        } else {
            threads.max(1)
        };
        let rows_per_thread = self.len().div_ceil(threads);
        let mut best: Vec<Neighbour> = if threads == 1 {
            top_k_chunk(&self.data, &self.ids, self.dim, query, k)
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = self
                    .data
                    .chunks(rows_per_thread * self.dim)
                    .zip(self.ids.chunks(rows_per_thread))
                    .map(|(data, ids)| {
                        scope.spawn(move || top_k_chunk(data, ids, self.dim, query, k))
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("a vector search thread panicked"))
                    .collect()
            })
        };
        best.sort_by(rank_order);
        best.truncate(k);
        best
    }

    /// Every pair of rows `(i, j)`, `i < j`, whose dot product is at least `min_score`, found by
    /// an exact scan of all pairs in cache-sized tiles on `threads` threads. Costs
    /// `len² / 2 × dim` multiply-adds: an estimated one to two minutes per 50 000 rows of 512
    /// floats on 2 cores (from the top-k scan rate; not benchmarked).
    pub fn pairs_at_least(&self, min_score: f32, threads: usize) -> Vec<(usize, usize, f32)> {
        let n = self.len();
        let tiles = n.div_ceil(PAIR_TILE);
        let next = AtomicUsize::new(0);
        let threads = if n < 2 * PAIR_TILE { 1 } else { threads.max(1) };
        let work = || {
            let mut found = Vec::new();
            loop {
                let tile = next.fetch_add(1, AtomicOrdering::Relaxed);
                if tile >= tiles {
                    break;
                }
                let a0 = tile * PAIR_TILE;
                let a1 = (a0 + PAIR_TILE).min(n);
                for b0 in (a0..n).step_by(PAIR_TILE) {
                    let b1 = (b0 + PAIR_TILE).min(n);
                    for i in a0..a1 {
                        let row_i = self.row(i);
                        for j in b0.max(i + 1)..b1 {
                            let s = dot(row_i, self.row(j));
                            if s >= min_score {
                                found.push((i, j, s));
                            }
                        }
                    }
                }
            }
            found
        };
        let mut pairs: Vec<(usize, usize, f32)> = if threads == 1 {
            work()
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("a pair-scan thread panicked"))
                    .collect()
            })
        };
        pairs.sort_by_key(|&(i, j, _)| (i, j));
        pairs
    }
}

/// The best `k` rows of one chunk, unordered.
fn top_k_chunk(data: &[f32], ids: &[i64], dim: usize, query: &[f32], k: usize) -> Vec<Neighbour> {
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    for (row, &image_id) in data.chunks_exact(dim).zip(ids) {
        let score = dot(row, query);
        offer(&mut heap, Neighbour { image_id, score }, k);
    }
    heap.into_iter().map(|w| w.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelKey {
        ModelKey::new("m", "1")
    }

    #[test]
    fn dot_matches_a_plain_sum_for_every_length() {
        for len in [0, 1, 7, 16, 17, 33, 512] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "{len}");
        }
    }

    #[test]
    fn ties_rank_the_smaller_id_first_and_k_bounds_the_result() {
        let mut m = VectorMatrix::new(model(), 2);
        for id in [5, 3, 9, 1] {
            assert!(m.push(id, &[1.0, 0.0]));
        }
        assert!(!m.push(7, &[1.0]));
        let got: Vec<i64> = m
            .top_k_threads(&[1.0, 0.0], 3, 2)
            .iter()
            .map(|n| n.image_id)
            .collect();
        assert_eq!(got, vec![1, 3, 5]);
        assert!(m.top_k(&[1.0, 0.0, 0.0], 3).is_empty());
        assert!(m.top_k(&[1.0, 0.0], 0).is_empty());
    }

    #[test]
    fn le_bytes_round_trip() {
        let mut m = VectorMatrix::new(model(), 3);
        let blob: Vec<u8> = [0.5f32, -1.0, 2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert!(m.push_le_bytes(4, &blob));
        assert!(!m.push_le_bytes(5, &blob[..8]));
        assert_eq!(m.row_of(4).unwrap(), &[0.5, -1.0, 2.0]);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn pairs_are_every_close_pair_once() {
        let mut m = VectorMatrix::new(model(), 2);
        // 300 rows spread over a circle, so tiles and threads both come into play.
        for i in 0..300 {
            let a = i as f32 * 0.02;
            m.push(i, &[a.cos(), a.sin()]);
        }
        let min = 0.9995;
        let mut naive = Vec::new();
        for i in 0..m.len() {
            for j in i + 1..m.len() {
                let s = dot(m.row(i), m.row(j));
                if s >= min {
                    naive.push((i, j, s));
                }
            }
        }
        assert!(!naive.is_empty());
        assert_eq!(m.pairs_at_least(min, 2), naive);
        assert_eq!(m.pairs_at_least(min, 1), naive);
    }
}
