//! `imgd`: a local image-analysis daemon for very large photo libraries.
//!
//! This binary is glue: argument parsing and output formatting. The work lives in the library
//! crates (`imgd-store`, `imgd-scan`, `imgd-decode`, `imgd-modules`, `imgd-pipeline`).

mod cli;
mod cmd;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("imgd: error: {err:#}");
            std::process::ExitCode::from(1)
        }
    }
}
