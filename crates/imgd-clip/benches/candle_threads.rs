//! What `RAYON_NUM_THREADS` saves candle's CPU matmuls: candle asks for its thread count on
//! every matmul, and without the variable it parses `/proc/cpuinfo` each time. The `imgd`
//! binary sets the variable at start (`imgd_candle::device::candle_cpu_threads`).
//!
//! Times a 1×384 by 384×384 f32 matmul (one row through a decoder projection of TrOCR-small's
//! or BLIP's width) without and with the variable, in this process, twice after a warm-up;
//! the ratio is the mean of the two. Run with
//! `cargo bench -p imgd-clip --bench candle_threads`; prints `candle_threads_env_speedup=X`.
//!
//! Figure on the 2-core build machine (three runs): 54–96 µs without, 21–36 µs with,
//! `candle_threads_env_speedup=2.72–2.77`.
#![allow(unsafe_code)] // setting the environment variable in this single-threaded bench

use std::time::Instant;

use candle_core::{Device, Tensor};

fn microseconds_per_matmul() -> f64 {
    let row = Tensor::randn(0f32, 1.0, (1, 384), &Device::Cpu).expect("row");
    let weights = Tensor::randn(0f32, 1.0, (384, 384), &Device::Cpu).expect("weights");
    let runs = 3000;
    let started = Instant::now();
    for _ in 0..runs {
        std::hint::black_box(row.matmul(&weights).expect("matmul"));
    }
    started.elapsed().as_secs_f64() / f64::from(runs) * 1e6
}

fn main() {
    let threads = imgd_candle::device::candle_cpu_threads();
    if std::env::var_os("RAYON_NUM_THREADS").is_some() {
        eprintln!("unset RAYON_NUM_THREADS to measure the difference");
        return;
    }
    microseconds_per_matmul(); // warm-up
    let mut ratios = Vec::new();
    for _ in 0..2 {
        let without = microseconds_per_matmul();
        // SAFETY: this bench has no other thread that reads the environment (candle's pool
        // threads only compute).
        unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
        let with = microseconds_per_matmul();
        unsafe { std::env::remove_var("RAYON_NUM_THREADS") };
        println!(
            "candle_matmul_us{{shape=\"1x384x384\",rayon_num_threads=\"unset\"}} {without:.1}"
        );
        println!(
            "candle_matmul_us{{shape=\"1x384x384\",rayon_num_threads=\"{threads}\"}} {with:.1}"
        );
        ratios.push(without / with);
    }
    let mean = ratios.iter().sum::<f64>() / ratios.len() as f64;
    println!("candle_threads_env_speedup={mean:.2}");
}
