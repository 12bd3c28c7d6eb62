//! Time of [`imgd_modules::technical::analyze`] on a 1024×768 photo (the size of the tier the
//! pipeline hands the module). Run with `cargo bench -p imgd-modules --bench technical`; it
//! prints the median and fastest of 40 runs on one thread.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use image::imageops;
use imgd_modules::technical::analyze;

fn main() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/photos/flower.jpg");
    let photo = image::open(path).expect("fixture photo").to_rgb8();
    let img = imageops::resize(&photo, 1024, 768, imageops::FilterType::Triangle);

    for _ in 0..3 {
        black_box(analyze(black_box(&img)));
    }
    let mut times: Vec<Duration> = (0..40)
        .map(|_| {
            let start = Instant::now();
            black_box(analyze(black_box(&img)));
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "technical::analyze 1024x768: median {:.2} ms, fastest {:.2} ms ({} runs)",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times.len()
    );
}
