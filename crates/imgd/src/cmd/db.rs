//! `imgd db`: the database itself.

use std::process::ExitCode;

use anyhow::{Context, Result};
use imgd_store::Store;

use super::{print_json, store_options};
use crate::cli::{DbArgs, DbCommand};

/// Runs an `imgd db` subcommand.
pub fn run(args: DbArgs) -> Result<ExitCode> {
    match args.command {
        DbCommand::Copy {
            source,
            destination,
            json,
        } => copy(&source, &destination, json),
    }
}

fn copy(source: &str, destination: &str, json: bool) -> Result<ExitCode> {
    let shown =
        |db: &str| imgd_store::location::parse(db).map_or_else(|_| db.to_string(), |l| l.display());
    let from = Store::open_location(&super::database(source.into())?, store_options())
        .with_context(|| format!("cannot open the source {}", shown(source)))?;
    let to = Store::open_location(&super::database(destination.into())?, store_options())
        .with_context(|| format!("cannot open the destination {}", shown(destination)))?;
    let mut current = String::new();
    let report = from
        .copy_library_to(&to, |table, read, total| {
            if table != current {
                current = table.to_string();
            }
            if !json && (read == total || read % 10_000 == 0) {
                eprintln!("{table}: {read} of {total} rows");
            }
        })
        .with_context(|| format!("copying {} to {}", shown(source), shown(destination)))?;
    if json {
        print_json(&report)?;
    } else {
        let copied: i64 = report.iter().map(|t| t.copied).sum();
        let rows: i64 = report.iter().map(|t| t.destination_rows).sum();
        println!(
            "copied {copied} rows; the destination holds all {rows} rows of the source in {} \
             tables",
            report.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}
