//! `imgd duplicates`.

use imgd_store::location::Location;
use std::process::ExitCode;

use anyhow::{Result, bail};
use imgd_store::Store;
use imgd_store::vectors::{DEFAULT_DUPLICATE_DISTANCE, ModelKey, near_duplicate_groups};
use serde::Serialize;

use super::{open_store, print_json};
use crate::cli::{DuplicateMethod, DuplicatesArgs};

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
    /// `clip` or `phash`.
    method: &'static str,
    /// The embedding model compared (none when no image has an embedding, or with phash).
    model: Option<ModelKey>,
    /// The largest distance within a group: cosine (clip) or bits (phash).
    threshold: f32,
    /// Images compared.
    compared: usize,
    near: Vec<NearGroup>,
    exact: Vec<ExactGroup>,
}

pub fn run(db: &Location, args: DuplicatesArgs) -> Result<ExitCode> {
    let store = open_store(db)?;
    let mut report = match args.method {
        DuplicateMethod::Clip => by_embedding(&store, &args)?,
        DuplicateMethod::Phash => by_perceptual_hash(&store, &args)?,
    };
    report.exact = store
        .content_duplicates(args.limit)?
        .into_iter()
        .map(|(hash, paths)| ExactGroup { hash, paths })
        .collect();
    if args.json {
        print_json(&report)?;
        return Ok(ExitCode::SUCCESS);
    }
    let threshold = report.threshold;
    match (&report.model, args.method) {
        (Some(model), _) => println!(
            "near-duplicates ({model}, cosine distance <= {threshold}): {} groups",
            report.near.len()
        ),
        (None, DuplicateMethod::Clip) => {
            println!("near-duplicates: no image has an embedding yet");
        }
        (None, DuplicateMethod::Phash) => println!(
            "near-duplicates (pHash, {} images, at most {threshold} bits apart): {} groups",
            report.compared,
            report.near.len()
        ),
    }
    let decimals = if args.method == DuplicateMethod::Clip {
        4
    } else {
        0
    };
    for group in &report.near {
        println!("  group (max distance {:.decimals$}):", group.max_distance);
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

/// Near-duplicates by CLIP embedding: the vectors of the model that serves searches.
fn by_embedding(store: &Store, args: &DuplicatesArgs) -> Result<Report> {
    if args.distance.is_some() {
        bail!("--distance is for --method phash; --threshold sets the cosine distance");
    }
    let threshold = args.threshold.unwrap_or(DEFAULT_DUPLICATE_DISTANCE);
    if !(0.0..=2.0).contains(&threshold) {
        bail!("--threshold is a cosine distance between 0 and 2, not {threshold}");
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut near = Vec::new();
    let mut compared = 0;
    let serving = store.serving_model()?;
    if let Some(serving) = &serving {
        let matrix = store.load_vectors(&serving.model)?;
        compared = matrix.len();
        for group in near_duplicate_groups(&matrix, threshold, threads)
            .into_iter()
            .take(args.limit)
        {
            near.push(near_group(store, &group.image_ids, group.max_distance)?);
        }
    }
    Ok(Report {
        method: "clip",
        model: serving.map(|s| s.model),
        threshold,
        compared,
        near,
        exact: Vec::new(),
    })
}

/// Near-duplicates by perceptual hash: the `phash` module's pHashes within `--distance` bits.
fn by_perceptual_hash(store: &Store, args: &DuplicatesArgs) -> Result<Report> {
    if args.threshold.is_some() {
        bail!("--threshold is for --method clip; --distance sets the bits");
    }
    let distance = args.distance.unwrap_or(imgd_phash::DEFAULT_MAX_DISTANCE);
    if distance > 64 {
        bail!("--distance counts bits of a 64-bit hash: 0 to 64, not {distance}");
    }
    let hashes: Vec<(i64, u64)> = store
        .result_integers(imgd_phash::PHASH, &["phash"])?
        .into_iter()
        .filter_map(|(id, values)| Some((id, values.first().copied().flatten()? as u64)))
        .collect();
    let mut near = Vec::new();
    for group in imgd_phash::near_duplicate_groups(&hashes, distance)
        .into_iter()
        .take(args.limit)
    {
        near.push(near_group(
            store,
            &group.image_ids,
            group.max_distance as f32,
        )?);
    }
    Ok(Report {
        method: "phash",
        model: None,
        threshold: distance as f32,
        compared: hashes.len(),
        near,
        exact: Vec::new(),
    })
}

/// A group with its members' paths, sorted by path.
fn near_group(store: &Store, image_ids: &[i64], max_distance: f32) -> Result<NearGroup> {
    let paths = store.image_paths(image_ids)?;
    let mut members: Vec<(i64, String)> = image_ids
        .iter()
        .filter_map(|id| Some((*id, paths.get(id)?.clone())))
        .collect();
    members.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(NearGroup {
        max_distance,
        image_ids: members.iter().map(|m| m.0).collect(),
        paths: members.into_iter().map(|m| m.1).collect(),
    })
}
