//! `imgd duplicates`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Result, bail};
use imgd_store::vectors::{DEFAULT_DUPLICATE_DISTANCE, ModelKey, near_duplicate_groups};
use serde::Serialize;

use super::{open_store, print_json};
use crate::cli::DuplicatesArgs;

/// A group of near-duplicates.
#[derive(Debug, Serialize)]
struct NearGroup {
    /// Largest cosine distance among the pairs that link the group.
    max_distance: f32,
    image_ids: Vec<i64>,
    paths: Vec<String>,
}

/// Identical files.
#[derive(Debug, Serialize)]
struct ExactGroup {
    hash: String,
    paths: Vec<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// The embedding model compared (none when no image has an embedding).
    model: Option<ModelKey>,
    threshold: f32,
    near: Vec<NearGroup>,
    exact: Vec<ExactGroup>,
}

pub fn run(db: &Path, args: DuplicatesArgs) -> Result<ExitCode> {
    let threshold = args.threshold.unwrap_or(DEFAULT_DUPLICATE_DISTANCE);
    if !(0.0..=2.0).contains(&threshold) {
        bail!("--threshold is a cosine distance between 0 and 2, not {threshold}");
    }
    let store = open_store(db)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut near = Vec::new();
    let serving = store.serving_model()?;
    if let Some(serving) = &serving {
        let matrix = store.load_vectors(&serving.model)?;
        for group in near_duplicate_groups(&matrix, threshold, threads)
            .into_iter()
            .take(args.limit)
        {
            let paths = store.image_paths(&group.image_ids)?;
            let mut members: Vec<(i64, String)> = group
                .image_ids
                .iter()
                .filter_map(|id| Some((*id, paths.get(id)?.clone())))
                .collect();
            members.sort_by(|a, b| a.1.cmp(&b.1));
            near.push(NearGroup {
                max_distance: group.max_distance,
                image_ids: members.iter().map(|m| m.0).collect(),
                paths: members.into_iter().map(|m| m.1).collect(),
            });
        }
    }
    let exact: Vec<ExactGroup> = store
        .content_duplicates(args.limit)?
        .into_iter()
        .map(|(hash, paths)| ExactGroup { hash, paths })
        .collect();
    let report = Report {
        model: serving.map(|s| s.model),
        threshold,
        near,
        exact,
    };
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &report.model {
        Some(model) => println!(
            "near-duplicates ({model}, cosine distance <= {threshold}): {} groups",
            report.near.len()
        ),
        None => println!("near-duplicates: no image has an embedding yet"),
    }
    for group in &report.near {
        println!("  group (max distance {:.4}):", group.max_distance);
        for path in &group.paths {
            println!("    {path}");
        }
    }
    println!(
        "identical files (content hash, from `imgd enqueue --hash`): {} groups",
        report.exact.len()
    );
    for group in &report.exact {
        println!("  {}:", &group.hash[..group.hash.len().min(16)]);
        for path in &group.paths {
            println!("    {path}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
