//! `imgd probe`.

use std::process::ExitCode;

use anyhow::Result;
use imgd_decode::{DecodeOptions, probe};

use super::modules::REGISTRY;
use crate::cli::ProbeArgs;

pub fn run(args: ProbeArgs) -> Result<ExitCode> {
    let tiers: Vec<u32> = args
        .tiers
        .unwrap_or_else(|| REGISTRY.all().iter().filter_map(|m| m.tier()).collect());
    let options = DecodeOptions::default();
    let mut failures = 0;
    for file in &args.files {
        let report = probe(file, &tiers, &options);
        if !report.ok {
            failures += 1;
        }
        if args.json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            println!("{}", report.human_line());
        }
    }
    // Probing never crashes on bad files; the exit code says whether all decoded.
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}
