//! `imgd`: a local image-analysis daemon for very large photo libraries.
//!
//! This binary is glue: argument parsing and output formatting. The work lives in the library
//! crates (`imgd-store`, `imgd-scan`, `imgd-decode`, `imgd-modules`, `imgd-pipeline`).

mod cli;
mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    settle_cpu_threads();
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("imgd: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Sets `RAYON_NUM_THREADS`, when the user has not, to the thread count candle picks anyway
/// ([`imgd_clip::device::candle_cpu_threads`]). candle asks for that count on every matmul,
/// and without the variable each answer parses `/proc/cpuinfo`: with it, a 1×384 by 384×384
/// matmul is 2.7x faster on a 2-core machine (the decoders of BLIP and TrOCR run thousands of
/// such matmuls per image).
#[allow(unsafe_code)]
fn settle_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some_and(|value| !value.is_empty()) {
        return;
    }
    let threads = imgd_clip::device::candle_cpu_threads();
    // SAFETY: this runs first in `main`, before the process has any other thread, so nothing
    // reads or writes the environment at the same time.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
}
