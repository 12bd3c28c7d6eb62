//! `imgd`: a local image-analysis daemon for very large photo libraries.
//!
//! This binary is glue: argument parsing and output formatting. The work lives in the library
//! crates (`imgd-store`, `imgd-scan`, `imgd-decode`, `imgd-modules`, `imgd-pipeline`).

mod cli;
mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    settle_cpu_threads();
    cmd::config::configure_model_dirs();
    cmd::config::configure_host();
    let cli = cli::Cli::parse_from(cli::join_hash_values(std::env::args_os()));
    if !matches!(cli.command, cli::Command::Run(_)) {
        end_quietly_on_broken_pipe();
    }
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            cmd::mark_if_corrupt(&err);
            eprintln!("imgd: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Sets `RAYON_NUM_THREADS`, when the user has not, to the thread count candle picks anyway
/// ([`imgd_candle::device::candle_cpu_threads`]). candle asks for that count on every matmul,
/// and without the variable each answer parses `/proc/cpuinfo`: with it, a 1×384 by 384×384
/// matmul is 2.7x faster on a 2-core machine (the decoders of BLIP and TrOCR run thousands of
/// such matmuls per image).
#[allow(unsafe_code)]
fn settle_cpu_threads() {
    if std::env::var_os("RAYON_NUM_THREADS").is_some_and(|value| !value.is_empty()) {
        return;
    }
    let threads = imgd_candle::device::candle_cpu_threads();
    // SAFETY: this runs first in `main`, before the process has any other thread, so nothing
    // reads or writes the environment at the same time.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", threads.to_string()) };
}

/// Lets a command whose reader went away (`imgd status | head`) end quietly, as Unix tools do,
/// instead of panicking on the broken pipe. Not for `imgd run`: there a client that hangs up
/// must stay an error on one connection, never a signal to the daemon.
#[allow(unsafe_code)]
fn end_quietly_on_broken_pipe() {
    // SAFETY: this runs in `main` before any thread is started; restoring the default action
    // of SIGPIPE touches no Rust state.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
