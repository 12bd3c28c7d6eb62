//! Vector search at scale: builds N random normalised vectors (default 1 000 000 × 512) in a
//! real database, loads them the way `imgd search` does, and times top-10 queries.
//!
//! Run: `scripts/bench-vector-search.sh`, or
//! `cargo run --release -p imgd-store --example vector_search_bench -- DB [N] [DIM] [QUERIES]`.
//!
//! Prints the insert and load times, the model-choice query, the median top-10 latency on one
//! thread (the baseline) and on every core, and `vector_search_ms_1m=X` last (the median on
//! every core; with N other than 1 000 000 the key is `vector_search_ms_n<N>`).

use std::time::Instant;

use imgd_core::Module;
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

    let store = Store::open(std::path::Path::new(db), StoreOptions::default())?;
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
                Module::Embedding.bit()
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
        "load_s={:.2} ({} rows, {:.0} MiB in memory)",
        t.elapsed().as_secs_f64(),
        matrix.len(),
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
        matrix.top_k(&qs[0], 10),
        all,
        "top-k differs from a full sort"
    );

    let time = |threads: usize| -> Vec<f64> {
        qs.iter()
            .map(|q| {
                let t = Instant::now();
                let hits = matrix.top_k_threads(q, 10, threads);
                assert_eq!(hits.len(), 10.min(matrix.len()));
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    };
    let one = median(time(1));
    let times = time(threads);
    let many = median(times.clone());
    let max = times.iter().copied().fold(0.0, f64::max);
    println!("full sort of all scores (not counting the dot products): {sort_ms:.0} ms");
    println!(
        "top-10 median over {queries} queries: 1 thread {one:.1} ms, {threads} threads {many:.1} ms (max {max:.1} ms), speedup {:.2}",
        one / many
    );
    let gb_s = (matrix.len() * dim * 4) as f64 / (many / 1e3) / 1e9;
    println!("scan rate {gb_s:.1} GB/s");
    if n == 1_000_000 {
        println!("vector_search_ms_1m={many:.1}");
    } else {
        println!("vector_search_ms_n{n}={many:.1}");
    }
    Ok(())
}
