//! Vector search at scale: builds N random normalised vectors (default 1 000 000 × 512) in a
//! real database, loads them the way `imgd search` does, and times top-10 queries.
//!
//! Run: `scripts/bench-vector-search.sh`, or
//! `cargo run --release -p imgd-store --example vector_search_bench -- DB [N] [DIM] [QUERIES]`.
//!
//! Prints the insert and load times, the model-choice query, the time to build the int8 copy,
//! then, in this one process and over the same queries: the median top-10 latency of the plain
//! f32 scan on every core (`vector_search_exact_ms_1m`, the baseline), of the int8 search with
//! exact re-ranking on one thread and on every core, its recall@10 against the f32 scan
//! (`vector_search_recall_at_10`, 1.0 when every list matches), `vector_search_speedup` (f32
//! median / int8 median), and `vector_search_ms_1m=X` last (the int8 median on every core; with
//! N other than 1 000 000 the keys end in `_n<N>` instead of `_1m`).

use std::time::Instant;

use imgd_store::vectors::{ModelKey, Neighbour, dot, normalize, rank_order};
use imgd_store::{Store, StoreOptions};

/// xorshift64*: reproducible random numbers without a dependency.
struct Rng(u64);

impl Rng {
    fn unit(&mut self, dim: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                self.0 ^= self.0 >> 12;
                self.0 ^= self.0 << 25;
                self.0 ^= self.0 >> 27;
                let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
                (x >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
            })
            .collect();
        normalize(&mut v);
        v
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let db = args
        .first()
        .ok_or("usage: vector_search_bench DB [N] [DIM] [QUERIES]")?;
    let n: usize = args.get(1).map_or(Ok(1_000_000), |s| s.parse())?;
    let dim: usize = args.get(2).map_or(Ok(512), |s| s.parse())?;
    let queries: usize = args.get(3).map_or(Ok(25), |s| s.parse())?;
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let model = ModelKey::new("clip-vit-b32", "bench");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let store = Store::open(
        std::path::Path::new(db),
        StoreOptions {
            modules: imgd_registry::registry(),
            ..StoreOptions::default()
        },
    )?;
    let t = Instant::now();
    {
        let conn = store.connection();
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut stmt = conn.prepare(
            "INSERT INTO images (id, path, size, mtime_ns, format, modules_mask,
                                 first_seen_ms, last_seen_ms)
             VALUES (?1, ?2, 1, 1, 'jpeg', ?3, 0, 0)",
        )?;
        for id in 1..=n as i64 {
            stmt.execute(rusqlite::params![
                id,
                format!("/bench/{:03}/{id:07}.jpg", id % 1000),
                imgd_clip::EMBEDDING.bit()
            ])?;
        }
        drop(stmt);
        conn.execute_batch("COMMIT")?;
    }
    let images_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let written = store.insert_embeddings(&model, (1..=n as i64).map(|id| (id, rng.unit(dim))))?;
    let insert_s = t.elapsed().as_secs_f64();
    println!(
        "inserted {n} images in {images_s:.1} s and {written} vectors of {dim} f32 in one \
         transaction in {insert_s:.1} s ({:.0} vectors/s)",
        written as f64 / insert_s
    );

    let t = Instant::now();
    let serving = store.serving_model()?.ok_or("no serving model")?;
    println!(
        "model_choice_ms={:.0} (serving {} with {} vectors, complete: {})",
        t.elapsed().as_secs_f64() * 1e3,
        serving.model,
        serving.vectors,
        serving.complete()
    );
    let t = Instant::now();
    let matrix = store.load_vectors(&serving.model)?;
    println!(
        "load_s={:.2} ({} rows, {:.0} MiB in memory as f32)",
        t.elapsed().as_secs_f64(),
        matrix.len(),
        matrix.memory_bytes() as f64 / (1 << 20) as f64
    );
    let f32_bytes = matrix.memory_bytes();
    let t = Instant::now();
    matrix.prepare_search();
    println!(
        "quantise_s={:.2} (int8 copy {:.0} MiB; {:.0} MiB in all)",
        t.elapsed().as_secs_f64(),
        (matrix.memory_bytes() - f32_bytes) as f64 / (1 << 20) as f64,
        matrix.memory_bytes() as f64 / (1 << 20) as f64
    );

    let qs: Vec<Vec<f32>> = (0..queries).map(|_| rng.unit(dim)).collect();
    // Correctness first: one query against a full sort.
    let mut all: Vec<Neighbour> = (0..matrix.len())
        .map(|i| Neighbour {
            image_id: matrix.ids()[i],
            score: dot(matrix.row(i), &qs[0]),
        })
        .collect();
    let t = Instant::now();
    all.sort_by(rank_order);
    let sort_ms = t.elapsed().as_secs_f64() * 1e3;
    all.truncate(10);
    assert_eq!(
        matrix.top_k_exact_threads(&qs[0], 10, threads),
        all,
        "the f32 scan differs from a full sort"
    );
    assert_eq!(
        matrix.top_k(&qs[0], 10),
        all,
        "the int8 search differs from a full sort"
    );
    println!("full sort of all scores (not counting the dot products): {sort_ms:.0} ms");

    // The two searches alternate query by query, so that a change in the machine's load
    // weighs on both alike.
    let (mut exact_ms, mut int8_ms) = (Vec::new(), Vec::new());
    let (mut found, mut identical, mut second_passes, mut candidates) = (0, 0, 0, 0);
    for q in &qs {
        let t = Instant::now();
        let want = matrix.top_k_exact_threads(q, 10, threads);
        exact_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let (got, stats) = matrix.top_k_stats(q, 10, threads);
        int8_ms.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(stats.int8 && got.len() == 10.min(matrix.len()));
        found += got
            .iter()
            .filter(|g| want.iter().any(|w| w.image_id == g.image_id))
            .count();
        identical += usize::from(got == want);
        second_passes += usize::from(stats.second_pass);
        candidates += stats.candidates;
    }
    let one = median(
        qs.iter()
            .map(|q| {
                let t = Instant::now();
                matrix.top_k_threads(q, 10, 1);
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect(),
    );
    let exact = median(exact_ms);
    let max = int8_ms.iter().copied().fold(0.0, f64::max);
    let many = median(int8_ms);
    let recall = found as f64 / (10 * queries.max(1)) as f64;
    let gb_s = |bytes: usize, ms: f64| bytes as f64 / (ms / 1e3) / 1e9;
    println!(
        "f32 scan, top-10 median over {queries} queries on {threads} threads: {exact:.1} ms \
         ({:.1} GB/s)",
        gb_s(matrix.len() * dim * 4, exact)
    );
    println!(
        "int8 scan + exact re-rank, top-10 median: 1 thread {one:.1} ms, {threads} threads \
         {many:.1} ms (max {max:.1} ms, {:.1} GB/s of int8 codes); {} candidates re-ranked per \
         query on average, second pass in {second_passes} of {queries} queries, {identical} of \
         {queries} lists identical to the f32 scan (ids and scores)",
        gb_s(matrix.len() * dim, many),
        candidates / queries.max(1),
    );
    let key = if n == 1_000_000 {
        "1m".to_string()
    } else {
        format!("n{n}")
    };
    println!("vector_search_exact_ms_{key}={exact:.1}");
    println!("vector_search_recall_at_10={recall:.4}");
    println!("vector_search_speedup={:.2}", exact / many);
    println!("vector_search_ms_{key}={many:.1}");
    Ok(())
}
