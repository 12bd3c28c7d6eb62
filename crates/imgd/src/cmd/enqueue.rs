//! `imgd enqueue`.

use imgd_store::location::Location;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use imgd_scan::{HashAlgorithm, ScanError, ScanOptions, ScanReport, scan};
use imgd_store::Store;
use serde_json::{Value, json};

use super::modules::REGISTRY;
use super::{open_store, print_json};
use crate::cli::{EnqueueArgs, HashArg};

pub fn run(db: &Location, args: EnqueueArgs) -> Result<ExitCode> {
    let modules = match &args.modules {
        Some(list) => REGISTRY.parse_list(list)?,
        None => REGISTRY.defaults(),
    };
    anyhow::ensure!(!modules.is_empty(), "--modules names no module");
    let store = open_store(db)?;
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let roots: Vec<String> = args
        .paths
        .iter()
        .map(|p| {
            std::fs::canonicalize(p)
                .map(|p| p.display().to_string())
                .with_context(|| format!("cannot scan {}", p.display()))
        })
        .collect::<Result<_>>()?;
    let batch = store.create_batch(&roots)?;
    let options = ScanOptions {
        modules,
        priority: args.priority,
        hash: args.hash.map(|algorithm| match algorithm {
            HashArg::Blake3 => HashAlgorithm::Blake3,
            HashArg::Sha256 => HashAlgorithm::Sha256,
        }),
        force: args.force,
        batch: Some(batch),
        threads,
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let started = Instant::now();
    let scanned = scan(&store, &args.paths, &options);
    let elapsed = started.elapsed();
    let report = finish(&store, batch, scanned, elapsed)?;
    if args.json {
        print_json(&report_json(batch, &report, elapsed))?;
    } else {
        for problem in &report.problems {
            match &problem.path {
                Some(path) => eprintln!("imgd: warning: {path}: {}", problem.message),
                None => eprintln!("imgd: warning: {}", problem.message),
            }
        }
        if report.errors > report.problems.len() as u64 {
            eprintln!(
                "imgd: warning: {} more problems not shown",
                report.errors - report.problems.len() as u64
            );
        }
        for group in &report.duplicates {
            println!("identical content: {}", group.join("  "));
        }
        println!(
            "batch {batch}: {} new, {} changed, {} unchanged, {} missing, {} skipped (not \
             images), {} errors in {:.2}s (imgd status --batch {batch})",
            report.new,
            report.changed,
            report.unchanged,
            report.missing,
            report.skipped,
            report.errors,
            elapsed.as_secs_f64()
        );
    }
    // Errors were reported above; a script sees them in the exit status too.
    Ok(if report.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Records how batch `batch`'s scan went (its report, or the error that stopped it) and marks
/// the batch's scan finished; returns the report.
pub fn finish(
    store: &Store,
    batch: i64,
    scanned: Result<ScanReport, ScanError>,
    elapsed: Duration,
) -> Result<ScanReport> {
    match scanned {
        Ok(report) => {
            store.finish_batch(batch, &report_json(batch, &report, elapsed))?;
            Ok(report)
        }
        Err(error) => {
            store.finish_batch(
                batch,
                &json!({ "batch": batch, "error": error.to_string() }),
            )?;
            Err(error.into())
        }
    }
}

/// A scan's report as `imgd enqueue --json` prints it and a batch records it.
pub fn report_json(batch: i64, report: &ScanReport, elapsed: Duration) -> Value {
    json!({
        "batch": batch,
        "new": report.new,
        "changed": report.changed,
        "unchanged": report.unchanged,
        "missing": report.missing,
        "skipped": report.skipped,
        "errors": report.errors,
        "problems": report.problems,
        "duplicates": report.duplicates,
        "seconds": elapsed.as_secs_f64(),
    })
}
