//! `imgd status`, `imgd retry`, `imgd pause` and `imgd resume`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use imgd_store::Store;
use serde_json::{Value, json};

use super::config::FileConfig;
use super::modules::REGISTRY;
use super::runners::waiting_reason;
use super::{open_store, print_json};
use crate::cli::{RetryArgs, StatusArgs};

/// `imgd status --json` and the daemon's `/status`: the queue, why modules wait, faces and
/// cloud totals.
pub fn status_document(store: &Store, db: &Path, config: &FileConfig) -> Result<Value> {
    let status = store.queue_status(5)?;
    let cloud = store.cloud_totals()?;
    let faces = store.faces_summary()?;
    let waiting: serde_json::Map<String, Value> = REGISTRY
        .all()
        .iter()
        .filter_map(|m| {
            let counts = status.modules.get(m.name())?;
            let reason = waiting_reason(*m, config)?;
            (counts.queued > 0).then(|| (m.name().to_string(), json!(reason)))
        })
        .collect();
    let mut value = serde_json::to_value(&status)?;
    value["waiting"] = Value::Object(waiting);
    value["database"] = json!(db.display().to_string());
    value["cloud"] = serde_json::to_value(cloud)?;
    value["faces"] = serde_json::to_value(&faces)?;
    Ok(value)
}

pub fn run(db: &Path, args: StatusArgs) -> Result<ExitCode> {
    let config = FileConfig::load(args.config.as_deref())?;
    let store = open_store(db)?;
    if args.json {
        print_json(&status_document(&store, db, &config)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = store.queue_status(5)?;
    let cloud = store.cloud_totals()?;
    let faces = store.faces_summary()?;
    println!("database: {}", db.display());
    println!(
        "images:   {} ({} present, {} missing)",
        status.images.total, status.images.present, status.images.missing
    );
    println!(
        "queue:    {}",
        if status.paused {
            "PAUSED (imgd resume)"
        } else {
            "running"
        }
    );
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9}  note",
        "module", "queued", "leased", "done", "failed"
    );
    for &module in REGISTRY.all() {
        let Some(c) = status.modules.get(module.name()) else {
            continue;
        };
        if c.total() == 0 {
            continue;
        }
        let note = if c.queued > 0 {
            waiting_reason(module, &config).unwrap_or_default()
        } else {
            String::new()
        };
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9}  {note}",
            module.name(),
            c.queued,
            c.leased,
            c.done,
            c.failed
        );
    }
    if faces.faces > 0 {
        println!();
        let embedded = if faces.not_embedded > 0 {
            format!(
                "{} not embedded (no face-embedding model was installed: imgd models fetch arcface-r50)",
                faces.not_embedded
            )
        } else {
            "all embedded".to_string()
        };
        println!(
            "faces:    {} in {} images, {embedded}; {} identities ({} named)",
            faces.faces, faces.images_analysed, faces.identities, faces.named
        );
    }
    if cloud.images > 0 {
        println!();
        println!(
            "cloud:    {} calls, {} tokens, ${:.4} for {} images",
            cloud.calls, cloud.tokens, cloud.cost_usd, cloud.images
        );
    }
    if !status.top_failures.is_empty() {
        println!();
        println!("most common failures (imgd retry re-queues them):");
        for f in &status.top_failures {
            println!("  {:>6} × {}: {}", f.count, f.module, f.error);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn retry(db: &Path, args: RetryArgs) -> Result<ExitCode> {
    let module = args
        .module
        .as_deref()
        .map(|name| REGISTRY.get(name))
        .transpose()?;
    let store = open_store(db)?;
    let requeued = store.retry_failed(module)?;
    if args.json {
        print_json(&json!({ "requeued": requeued }))?;
    } else {
        println!("{requeued} failed jobs re-queued");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn set_paused(db: &Path, paused: bool) -> Result<ExitCode> {
    let store = open_store(db)?;
    store.set_paused(paused)?;
    println!(
        "queue {}",
        if paused {
            "paused: running daemons claim no new work"
        } else {
            "resumed"
        }
    );
    Ok(ExitCode::SUCCESS)
}
