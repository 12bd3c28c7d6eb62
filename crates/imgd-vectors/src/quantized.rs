//! The int8 copy of a [`VectorMatrix`](crate::VectorMatrix) and the exact two-pass search
//! over it.
//!
//! # The int8 copy
//!
//! Each row `x` is stored as `s·X + e`: a per-row scale `s = max|xᵢ| / 127` and integers
//! `Xᵢ = round(xᵢ / s)` in `-127..=127`, so that every component's error `|eᵢ| ≤ s/2`. Two
//! consecutive components share one `i16` word (the even one in the low byte, the odd one in
//! the high byte; an odd-length row ends with a zero). A byte comes back out of its word with
//! two shifts, a shape the compiler turns into SIMD code (`pmaddwd`) even on the x86-64
//! baseline, where an `i8` slice would be widened four lanes at a time. A row with a
//! non-finite component, or too small to scale, gets no code: it is re-scored exactly on every
//! search.
//!
//! # The search
//!
//! The query `q` is coded the same way, but with 16-bit integers `Q` and scale `t`
//! (`q = t·Q + f`, `|fᵢ| ≤ t/2`), so its own error is negligible. Then
//!
//! ```text
//! q·x = t·s·(Q·X) + t·(Q·e) + f·x,   |t·(Q·e)| ≤ s · t·Σ|Qᵢ| / 2,   |f·x| ≤ t · Σ|xᵢ| / 2
//! ```
//!
//! so the integer dot product gives an estimate of each row's score with a proven bound on its
//! error (plus the f32 rounding of the exact score, also bounded). The search:
//!
//! 1. **First pass**: every thread scans its rows' int8 codes (a quarter of the f32 matrix's
//!    memory traffic) and keeps the `max(10·k, 100)` best estimates.
//! 2. **Re-rank**: the candidates (and the rows with no code) are scored exactly with the f32
//!    rows and sorted; `S` is the `k`-th exact score.
//! 3. **Certificate**: a row left out has an estimate at most `T` (the worst estimate its
//!    thread kept), so its exact score is at most `T + bound`. When that is below `S`, no row
//!    left out can enter the top `k`, and the re-ranked list is the answer: exactly what the f32
//!    scan returns, ids and scores.
//! 4. **Second pass**, only when the certificate fails (near-identical scores, adversarial
//!    data): every row whose estimate plus bound reaches `S` is scored exactly. Still exact; at
//!    worst about the cost of the int8 scan plus the exact scores of the rows in doubt.
//!
//! On x86-64 the integer dot products run in a copy of the same safe loop compiled for AVX2
//! when the CPU has it (two to three times the baseline SSE2 build's rate on cached rows),
//! chosen once per block of 1024 rows; calling it after the CPU check is this crate's one
//! `unsafe` expression.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use crate::matrix::{Neighbour, Worst, dot, offer, rank_order};

/// The largest magnitude of a row's int8 code.
const ROW_MAX: f32 = 127.0;

/// How many candidates the first pass keeps per thread for a top-`k` search.
pub fn candidates_for(k: usize) -> usize {
    k.saturating_mul(10).max(100)
}

/// What one search did (for benchmarks and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Whether the int8 copy was scanned (else the f32 rows were).
    pub int8: bool,
    /// Rows scored exactly: after the first pass, the candidates and the rows with no int8
    /// code; or every row, when the f32 rows were scanned.
    pub candidates: usize,
    /// Whether the certificate failed and the second pass ran.
    pub second_pass: bool,
    /// Rows the second pass scored exactly.
    pub second_pass_rows: usize,
}

/// The int8 codes of every row of a matrix, with what the error bound needs.
#[derive(Debug, Clone)]
pub struct Quantized {
    /// `i16` words per row: `dim.div_ceil(2)`.
    words: usize,
    /// Row-major words, two components each.
    packed: Vec<i16>,
    /// The scale `s` of each row (0 for a row with no code).
    scales: Vec<f32>,
    /// The largest scale.
    max_scale: f32,
    /// The largest `Σ|xᵢ|` of a row with a code.
    max_l1: f64,
    /// The largest `|xᵢ|` of a row with a code.
    max_abs: f32,
    /// Rows with no code (a non-finite component, or too small to scale), ascending.
    uncoded: Vec<usize>,
}

/// One row's code summary.
struct RowCode {
    scale: f32,
    l1: f64,
    max_abs: f32,
    coded: bool,
}

/// Codes one row into `out` (`dim.div_ceil(2)` words), with `codes` as scratch space.
fn quantize_row(x: &[f32], out: &mut [i16], codes: &mut Vec<i8>) -> RowCode {
    // max|xᵢ| and Σ|xᵢ| over 16 lanes, so that the loops vectorise; the sum is NaN or infinite
    // when a component is.
    let (mut max, mut sum) = ([0f32; 16], [0f32; 16]);
    let chunks = x.chunks_exact(16);
    for v in chunks.remainder() {
        max[0] = max[0].max(v.abs());
        sum[0] += v.abs();
    }
    for chunk in chunks {
        for i in 0..16 {
            max[i] = max[i].max(chunk[i].abs());
            sum[i] += chunk[i].abs();
        }
    }
    let max_abs = max.iter().fold(0f32, |m, &v| m.max(v));
    let l1: f32 = sum.iter().sum();
    let scale = max_abs / ROW_MAX;
    let inv = if max_abs > 0.0 {
        ROW_MAX / max_abs
    } else {
        0.0
    };
    if !l1.is_finite() || (max_abs > 0.0 && !(scale > 0.0 && inv.is_finite())) {
        out.fill(0);
        return RowCode {
            scale: 0.0,
            l1: 0.0,
            max_abs: 0.0,
            coded: false,
        };
    }
    // Adding and subtracting 1.5·2²³ rounds to the nearest integer in two additions (the
    // baseline x86-64 has no rounding instruction: `f32::round` is a libm call per component).
    const ROUND: f32 = 12_582_912.0;
    codes.clear();
    codes.extend(
        x.iter()
            .map(|&v| ((v * inv + ROUND) - ROUND).clamp(-ROW_MAX, ROW_MAX) as i32 as i8),
    );
    codes.resize(out.len() * 2, 0);
    for (word, pair) in out.iter_mut().zip(codes.chunks_exact(2)) {
        *word = pack(pair[0], pair[1]);
    }
    RowCode {
        scale,
        // The f32 sum is off by far less than the bound's 0.1 % margin.
        l1: f64::from(l1),
        max_abs,
        coded: true,
    }
}

/// Two components in one word: `lo` in the low byte, `hi` in the high byte.
fn pack(lo: i8, hi: i8) -> i16 {
    (i16::from(hi) << 8) | i16::from(lo as u8)
}

impl Quantized {
    /// Codes every row of `data` (`dim`-long rows) on up to `threads` threads.
    pub fn build(data: &[f32], dim: usize, threads: usize) -> Quantized {
        let rows = data.len().checked_div(dim).unwrap_or(0);
        let words = dim.div_ceil(2);
        let mut packed = vec![0i16; rows * words];
        let mut scales = vec![0f32; rows];
        let mut out = Quantized {
            words,
            packed: Vec::new(),
            scales: Vec::new(),
            max_scale: 0.0,
            max_l1: 0.0,
            max_abs: 0.0,
            uncoded: Vec::new(),
        };
        if rows == 0 {
            return out;
        }
        let threads = threads.clamp(1, rows.div_ceil(4096));
        let per = rows.div_ceil(threads);
        let work = |first: usize, data: &[f32], packed: &mut [i16], scales: &mut [f32]| {
            let (mut max_scale, mut max_l1, mut max_abs, mut uncoded) = (0f32, 0f64, 0f32, vec![]);
            let mut codes = Vec::with_capacity(words * 2);
            for (i, ((x, out), scale)) in data
                .chunks_exact(dim)
                .zip(packed.chunks_exact_mut(words))
                .zip(scales.iter_mut())
                .enumerate()
            {
                let code = quantize_row(x, out, &mut codes);
                *scale = code.scale;
                if code.coded {
                    max_scale = max_scale.max(code.scale);
                    max_l1 = max_l1.max(code.l1);
                    max_abs = max_abs.max(code.max_abs);
                } else {
                    uncoded.push(first + i);
                }
            }
            (max_scale, max_l1, max_abs, uncoded)
        };
        let parts: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = data
                .chunks(per * dim)
                .zip(packed.chunks_mut(per * words))
                .zip(scales.chunks_mut(per))
                .enumerate()
                .map(|(t, ((data, packed), scales))| {
                    scope.spawn(move || work(t * per, data, packed, scales))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a quantising thread panicked"))
                .collect()
        });
        for (max_scale, max_l1, max_abs, uncoded) in parts {
            out.max_scale = out.max_scale.max(max_scale);
            out.max_l1 = out.max_l1.max(max_l1);
            out.max_abs = out.max_abs.max(max_abs);
            out.uncoded.extend(uncoded);
        }
        out.packed = packed;
        out.scales = scales;
        out
    }

    /// Bytes held by the codes and scales.
    pub fn memory_bytes(&self) -> usize {
        self.packed.len() * 2 + self.scales.len() * 4 + self.uncoded.len() * 8
    }

    /// How many rows.
    fn len(&self) -> usize {
        self.scales.len()
    }
}

/// A query's 16-bit code and the error bound's per-query terms.
struct QueryCode {
    /// `Q` at the even components (one per word).
    even: Vec<i16>,
    /// `Q` at the odd components (one per word; 0 past the end).
    odd: Vec<i16>,
    /// The query's scale `t`.
    scale: f32,
    /// A row's bound is `s · per_scale + fixed`.
    per_scale: f32,
    /// The part of the bound shared by every row: `f·x` and the f32 rounding.
    fixed: f32,
}

impl QueryCode {
    /// Codes `query` for rows coded in `quant`; `None` when the query is zero or not finite, or
    /// the row is too long for an `i32` sum (the caller then scans the f32 rows).
    fn new(query: &[f32], quant: &Quantized) -> Option<QueryCode> {
        if !query.iter().all(|v| v.is_finite()) {
            return None;
        }
        let max_abs = query.iter().fold(0f32, |m, v| m.max(v.abs()));
        // |Σ Qᵢ·Xᵢ| ≤ 2·words · 127 · limit must fit an i32 (and so must every partial sum).
        let limit = (i64::from(i32::MAX) / (127 * 2 * quant.words.max(1) as i64)).min(32_767);
        if max_abs == 0.0 || limit < 1 {
            return None;
        }
        let limit = limit as f32;
        let scale = max_abs / limit;
        let inv = limit / max_abs;
        if !(scale > 0.0 && inv.is_finite()) {
            return None;
        }
        let code = |v: f32| (v * inv).round().clamp(-limit, limit) as i16;
        let mut even = Vec::with_capacity(quant.words);
        let mut odd = Vec::with_capacity(quant.words);
        for pair in query.chunks(2) {
            even.push(code(pair[0]));
            odd.push(pair.get(1).map_or(0, |&v| code(v)));
        }
        let q_code_l1: f64 = even.iter().chain(&odd).map(|&v| f64::from(v.abs())).sum();
        let q_l1: f64 = query.iter().map(|&v| f64::from(v.abs())).sum();
        let t = f64::from(scale);
        // The rounding of the f32 scores (exact and estimated) is at most a few ulps of
        // Σ|qᵢ·xᵢ| ≤ Σ|qᵢ| · max|xᵢ| per component summed; (2·dim + 16)·ε covers it amply.
        let rounding = (4 * quant.words + 16) as f64
            * f64::from(f32::EPSILON)
            * q_l1
            * f64::from(quant.max_abs);
        // A 0.1 % margin covers the f32 rounding of the bound itself and of `xᵢ · (127 / max)`
        // (a few ulps of at most 127). `qᵢ · (1 / t)` reaches 32 767, where a few ulps are
        // under 0.01: hence 0.51·t rather than t/2 for the query's own error.
        let margin = 1.001;
        Some(QueryCode {
            even,
            odd,
            scale,
            per_scale: (margin * 0.5 * t * q_code_l1) as f32,
            fixed: (margin * (0.51 * t * quant.max_l1 + rounding)) as f32,
        })
    }

    /// The estimate of a row's score from its integer dot product.
    #[inline(always)]
    fn estimate(&self, row_scale: f32, int_dot: i32) -> f32 {
        self.scale * row_scale * int_dot as f32
    }

    /// An upper bound of how far a row's exact f32 score can be from its estimate.
    #[inline(always)]
    fn bound(&self, row_scale: f32) -> f32 {
        row_scale * self.per_scale + self.fixed
    }
}

/// The integer dot product of one row's words with the query's even and odd codes.
#[inline(always)]
fn int_dot(row: &[i16], even: &[i16], odd: &[i16]) -> i32 {
    row.iter()
        .zip(even)
        .zip(odd)
        .map(|((&w, &e), &o)| {
            let lo = (w << 8) >> 8;
            let hi = w >> 8;
            i32::from(lo) * i32::from(e) + i32::from(hi) * i32::from(o)
        })
        .sum()
}

/// Rows per block of integer dot products: 1024 rows of 512 bytes stay in L2, and the results
/// (4 KiB) in L1.
const BLOCK_ROWS: usize = 1024;

/// `out[i] = Q·X` of row `i` of `packed`, for as many rows as `out` holds.
#[inline(always)]
fn int_dots_portable(packed: &[i16], words: usize, code: &QueryCode, out: &mut [i32]) {
    for (o, row) in out.iter_mut().zip(packed.chunks_exact(words)) {
        *o = int_dot(row, &code.even, &code.odd);
    }
}

/// [`int_dots_portable`] compiled for AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn int_dots_avx2(packed: &[i16], words: usize, code: &QueryCode, out: &mut [i32]) {
    int_dots_portable(packed, words, code, out);
}

/// [`int_dots_portable`], in its AVX2 build when the CPU has AVX2.
fn int_dots(packed: &[i16], words: usize, code: &QueryCode, out: &mut [i32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        #[allow(unsafe_code)]
        // SAFETY: `int_dots_avx2` is safe code whose only requirement is AVX2, which the CPU
        // was just checked to have.
        unsafe {
            int_dots_avx2(packed, words, code, out);
        }
        return;
    }
    int_dots_portable(packed, words, code, out);
}

/// Calls `sink(row, Q·X)` for every row of `packed`, in order, a block of rows at a time.
fn scan(packed: &[i16], words: usize, code: &QueryCode, mut sink: impl FnMut(usize, i32)) {
    let mut dots = [0i32; BLOCK_ROWS];
    for (b, block) in packed.chunks(BLOCK_ROWS * words).enumerate() {
        let dots = &mut dots[..block.len() / words];
        int_dots(block, words, code, dots);
        for (j, &d) in dots.iter().enumerate() {
            sink(b * BLOCK_ROWS + j, d);
        }
    }
}

/// A first-pass candidate, ordered so that the worst (lowest estimate, then highest row) is
/// the greatest and sits on top of a `BinaryHeap`.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    estimate: f32,
    row: usize,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .estimate
            .total_cmp(&self.estimate)
            .then(self.row.cmp(&other.row))
    }
}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Candidate {}

/// One thread's first pass over rows `first..first + scales.len()`: its best `keep` rows by
/// estimate, and the worst estimate kept when some row was left out.
fn first_pass(
    quant: &Quantized,
    code: &QueryCode,
    first: usize,
    rows: usize,
    keep: usize,
) -> (Vec<usize>, Option<f32>) {
    let words = quant.words;
    let packed = &quant.packed[first * words..(first + rows) * words];
    let scales = &quant.scales[first..first + rows];
    let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(keep + 1);
    let mut worst = f32::NEG_INFINITY;
    scan(packed, words, code, |i, d| {
        let estimate = code.estimate(scales[i], d);
        if heap.len() < keep {
            heap.push(Candidate {
                estimate,
                row: first + i,
            });
            if heap.len() == keep {
                worst = heap.peek().map_or(worst, |c| c.estimate);
            }
        } else if estimate > worst {
            if let Some(mut top) = heap.peek_mut() {
                *top = Candidate {
                    estimate,
                    row: first + i,
                };
            }
            worst = heap.peek().map_or(worst, |c| c.estimate);
        }
    });
    let threshold = (rows > keep).then_some(worst);
    (heap.into_iter().map(|c| c.row).collect(), threshold)
}

/// One thread's second pass over rows `first..first + rows`: the best `k` exact scores among
/// the rows not in `skip` whose estimate plus bound reaches `floor`, and how many were scored.
#[allow(clippy::too_many_arguments)]
fn second_pass(
    quant: &Quantized,
    code: &QueryCode,
    data: &[f32],
    ids: &[i64],
    query: &[f32],
    (first, rows): (usize, usize),
    k: usize,
    floor: f32,
    skip: &[usize],
) -> (Vec<Neighbour>, usize) {
    let words = quant.words;
    let dim = query.len();
    let packed = &quant.packed[first * words..(first + rows) * words];
    let scales = &quant.scales[first..first + rows];
    let mut heap: BinaryHeap<Worst> = BinaryHeap::with_capacity(k + 1);
    let mut scored = 0;
    scan(packed, words, code, |i, d| {
        let s = scales[i];
        let upper = code.estimate(s, d) + code.bound(s);
        // Not below the floor, or not comparable (a NaN keeps the row in doubt).
        if upper.partial_cmp(&floor) != Some(Ordering::Less) {
            let row = first + i;
            if skip.binary_search(&row).is_err() {
                scored += 1;
                let score = dot(&data[row * dim..(row + 1) * dim], query);
                offer(
                    &mut heap,
                    Neighbour {
                        image_id: ids[row],
                        score,
                    },
                    k,
                );
            }
        }
    });
    (heap.into_iter().map(|w| w.0).collect(), scored)
}

/// The exact top `k` of the f32 rows `data` (with `ids`) for `query`, through their int8
/// codes `quant` (see the module docs), on `threads` threads (`rows_per_thread` rows each).
/// `None` when the query cannot be coded (zero or non-finite): the caller scans the f32 rows.
pub fn top_k(
    quant: &Quantized,
    data: &[f32],
    ids: &[i64],
    query: &[f32],
    k: usize,
    threads: usize,
) -> Option<(Vec<Neighbour>, ScanStats)> {
    let n = quant.len();
    debug_assert_eq!(n, ids.len());
    let dim = query.len();
    let code = QueryCode::new(query, quant)?;
    let keep = candidates_for(k);
    let threads = threads.max(1);
    let per = n.div_ceil(threads);
    let ranges: Vec<(usize, usize)> = (0..n)
        .step_by(per.max(1))
        .map(|first| (first, per.min(n - first)))
        .collect();

    // 1. First pass.
    let passes: Vec<(Vec<usize>, Option<f32>)> = if ranges.len() == 1 {
        vec![first_pass(quant, &code, 0, n, keep)]
    } else {
        std::thread::scope(|scope| {
            let handles: Vec<_> = ranges
                .iter()
                .map(|&(first, rows)| {
                    let code = &code;
                    scope.spawn(move || first_pass(quant, code, first, rows, keep))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("a vector search thread panicked"))
                .collect()
        })
    };
    let mut threshold: Option<f32> = None;
    let mut rows: Vec<usize> = quant.uncoded.clone();
    for (candidates, worst) in passes {
        rows.extend(candidates);
        if let Some(w) = worst {
            threshold = Some(threshold.map_or(w, |t| t.max(w)));
        }
    }
    rows.sort_unstable();
    rows.dedup();

    // 2. Re-rank.
    let mut best: Vec<Neighbour> = rows
        .iter()
        .map(|&row| Neighbour {
            image_id: ids[row],
            score: dot(&data[row * dim..(row + 1) * dim], query),
        })
        .collect();
    best.sort_by(rank_order);
    best.truncate(k);
    let mut stats = ScanStats {
        int8: true,
        candidates: rows.len(),
        ..ScanStats::default()
    };

    // 3. Certificate: no row was left out, or none left out can reach the k-th score.
    let Some(threshold) = threshold else {
        return Some((best, stats));
    };
    let floor = best.last().map_or(f32::NEG_INFINITY, |w| w.score);
    if best.len() == k && threshold + code.bound(quant.max_scale) < floor {
        return Some((best, stats));
    }

    // 4. Second pass over the rows in doubt.
    stats.second_pass = true;
    let extra: Vec<(Vec<Neighbour>, usize)> = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&range| {
                let (code, rows) = (&code, &rows);
                scope.spawn(move || {
                    second_pass(quant, code, data, ids, query, range, k, floor, rows)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a vector search thread panicked"))
            .collect()
    });
    for (found, scored) in extra {
        best.extend(found);
        stats.second_pass_rows += scored;
    }
    best.sort_by(rank_order);
    best.truncate(k);
    Some((best, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: reproducible random numbers.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }
        fn vector(&mut self, dim: usize) -> Vec<f32> {
            (0..dim).map(|_| self.next()).collect()
        }
    }

    #[test]
    fn packed_words_give_back_both_bytes() {
        for lo in [-127i8, -1, 0, 1, 5, 127] {
            for hi in [-127i8, -2, 0, 3, 127] {
                let w = pack(lo, hi);
                assert_eq!(((w << 8) >> 8, w >> 8), (i16::from(lo), i16::from(hi)));
            }
        }
    }

    #[test]
    fn the_avx2_scan_and_the_portable_scan_agree_with_a_plain_sum() {
        let mut rng = Rng(7);
        for dim in [1, 2, 15, 33, 64, 512] {
            // More rows than one block.
            let data: Vec<f32> = rng.vector(dim * 2100);
            let quant = Quantized::build(&data, dim, 1);
            let code = QueryCode::new(&rng.vector(dim), &quant).unwrap();
            let plain: Vec<i32> = quant
                .packed
                .chunks_exact(quant.words)
                .map(|row| {
                    row.iter()
                        .enumerate()
                        .map(|(j, &w)| {
                            let (lo, hi) = (i32::from(w as u8 as i8), i32::from(w >> 8));
                            lo * i32::from(code.even[j]) + hi * i32::from(code.odd[j])
                        })
                        .sum()
                })
                .collect();
            let mut portable = vec![0; quant.len()];
            int_dots_portable(&quant.packed, quant.words, &code, &mut portable);
            let mut dispatched = Vec::new();
            scan(&quant.packed, quant.words, &code, |_, d| dispatched.push(d));
            assert_eq!(portable, plain, "{dim}");
            assert_eq!(dispatched, plain, "{dim}");
        }
    }

    #[test]
    fn every_estimate_is_within_its_bound() {
        let mut rng = Rng(11);
        for (dim, spread) in [(512, 1.0f32), (64, 1e-3), (7, 50.0)] {
            let mut data: Vec<f32> = rng.vector(dim * 500);
            // A few rows with one large component: coarse codes, wide bounds.
            for r in (0..500).step_by(50) {
                data[r * dim] = 3.0;
            }
            data.iter_mut().for_each(|v| *v *= spread);
            let quant = Quantized::build(&data, dim, 3);
            assert!(quant.uncoded.is_empty());
            for _ in 0..10 {
                let query = rng.vector(dim);
                let code = QueryCode::new(&query, &quant).unwrap();
                let mut worst_ratio = 0f32;
                scan(&quant.packed, quant.words, &code, |i, d| {
                    let exact = dot(&data[i * dim..(i + 1) * dim], &query);
                    let s = quant.scales[i];
                    let err = (code.estimate(s, d) - exact).abs();
                    assert!(err <= code.bound(s), "{dim}: row {i} off by {err}");
                    worst_ratio = worst_ratio.max(err / code.bound(s));
                });
                // The bound is not uselessly loose either.
                assert!(worst_ratio > 0.01, "{dim}: {worst_ratio}");
            }
        }
    }

    fn unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
        let mut v = rng.vector(dim);
        crate::normalize(&mut v);
        v
    }

    /// Same ids and the same score bits (NaN included) as the f32 scan.
    fn assert_exact(m: &VectorMatrix, query: &[f32], k: usize, threads: usize) -> ScanStats {
        m.prepare_search();
        let (got, stats) = m.top_k_stats(query, k, threads);
        let want = m.top_k_exact_threads(query, k, threads);
        let bits = |v: &[Neighbour]| -> Vec<(i64, u32)> {
            v.iter().map(|n| (n.image_id, n.score.to_bits())).collect()
        };
        assert_eq!(
            bits(&got),
            bits(&want),
            "k {k}, {threads} threads, {stats:?}"
        );
        assert_eq!(got.len(), k.min(m.len()));
        stats
    }

    use crate::{ModelKey, VectorMatrix};

    fn matrix(dim: usize) -> VectorMatrix {
        VectorMatrix::new(ModelKey::new("m", "1"), dim)
    }

    #[test]
    fn int8_search_matches_the_f32_scan_on_random_data() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut m = matrix(512);
        for i in 0..3000 {
            m.push(i * 7 + 3, &unit(&mut rng, 512));
        }
        for _ in 0..8 {
            let q = unit(&mut rng, 512);
            for k in [1, 10, 25] {
                let stats = assert_exact(&m, &q, k, 1);
                // Random data leaves a clear gap after the k-th score: certified at once.
                assert!(stats.int8 && !stats.second_pass, "{stats:?}");
                assert!(stats.candidates >= 100 && stats.candidates < 3000);
            }
        }
        // Enough rows to split across threads.
        let mut m = matrix(48);
        for i in 0..20_000 {
            m.push(20_000 - i, &unit(&mut rng, 48));
        }
        for _ in 0..3 {
            let q = unit(&mut rng, 48);
            for threads in [1, 2, 3] {
                assert_exact(&m, &q, 10, threads);
                assert_exact(&m, &q, 60, threads);
            }
        }
    }

    #[test]
    fn int8_search_matches_the_f32_scan_on_clustered_data() {
        // 30 tight clusters: a query near a centre has hundreds of rows within a hair of each
        // other, so estimates alone cannot order them.
        let mut rng = Rng(42);
        let dim = 64;
        let centres: Vec<Vec<f32>> = (0..30).map(|_| unit(&mut rng, dim)).collect();
        let mut m = matrix(dim);
        for i in 0..20_000 {
            let c = &centres[i % centres.len()];
            let spread = if i % 3 == 0 { 0.002 } else { 0.05 };
            let mut v: Vec<f32> = c.iter().map(|x| x + spread * rng.next()).collect();
            crate::normalize(&mut v);
            m.push(i as i64, &v);
        }
        // Exact duplicates too (ties broken by id).
        for i in 0..50 {
            m.push(100_000 + i, &centres[0]);
        }
        let mut second = 0;
        for (j, c) in centres.iter().enumerate().take(6) {
            let mut q: Vec<f32> = c.iter().map(|x| x + 0.01 * rng.next()).collect();
            crate::normalize(&mut q);
            for (k, threads) in [(1, 1), (10, 2), (100, 2), (10, 3)] {
                second += usize::from(assert_exact(&m, &q, k, threads).second_pass);
            }
            if j == 0 {
                let stats = assert_exact(&m, &centres[0], 20, 2);
                assert!(stats.second_pass, "50 tied rows need the second pass");
            }
        }
        assert!(second > 0, "clustered data should exercise the second pass");
    }

    #[test]
    fn int8_search_edge_cases() {
        let mut rng = Rng(5);
        let empty = matrix(8);
        assert!(empty.top_k(&unit(&mut rng, 8), 10).is_empty());
        let mut m = matrix(8);
        for i in 0..500 {
            m.push(i, &unit(&mut rng, 8));
        }
        let q = unit(&mut rng, 8);
        // k beyond n, k = 0, a query of the wrong length.
        assert_exact(&m, &q, 600, 2);
        assert!(m.top_k(&q, 0).is_empty());
        assert!(m.top_k(&q[..7], 5).is_empty());
        assert!(m.top_k(&[q.clone(), vec![0.0]].concat(), 5).is_empty());
        // A zero query (every score 0: ties by id) and a non-finite one fall back to the scan.
        assert_exact(&m, &[0.0; 8], 5, 1);
        let mut bad = q.clone();
        bad[3] = f32::NAN;
        assert_exact(&m, &bad, 5, 1);
        // Rows with no int8 code (NaN, infinity, subnormal) are always re-scored.
        let mut odd = q.clone();
        odd[0] = f32::NAN;
        m.push(10_000, &odd);
        m.push(10_001, &[-f32::INFINITY, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        m.push(10_002, &[1e-44; 8]);
        for k in [1, 5, 20] {
            assert_exact(&m, &q, k, 1);
            assert_exact(&m, &q.iter().map(|x| -x).collect::<Vec<_>>(), k, 1);
        }
        // Pushing a row drops the int8 copy (searches scan the f32 rows until it is rebuilt).
        // The new row ranks behind the NaN row, and the infinite one if it scores +inf, as
        // `total_cmp` orders them in the f32 scan too.
        assert!(m.is_prepared());
        m.push(20_000, &q);
        assert!(!m.is_prepared());
        let (top, stats) = m.top_k_stats(&q, 3, 1);
        assert!(!stats.int8 && top.iter().any(|n| n.image_id == 20_000));
        assert!(assert_exact(&m, &q, 3, 1).int8);
    }

    #[test]
    fn rows_that_cannot_be_coded_are_listed() {
        let data = [1.0, f32::NAN, 0.0, 0.0, f32::INFINITY, 1.0, 1e-44, 0.0];
        let quant = Quantized::build(&data, 2, 2);
        assert_eq!(quant.uncoded, vec![0, 2, 3]);
        assert_eq!(quant.scales[1], 0.0);
        assert!(QueryCode::new(&[0.0, 0.0], &quant).is_none());
        assert!(QueryCode::new(&[f32::NAN, 1.0], &quant).is_none());
    }
}
