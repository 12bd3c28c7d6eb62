//! `imgd status`, `imgd retry`, `imgd pause` and `imgd resume`.

use imgd_store::location::Location;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;

use imgd_store::Store;
use serde_json::{Value, json};

use super::config::FileConfig;
use super::modules::REGISTRY;
use super::runners::waiting_reason;
use super::{open_store, print_json};
use crate::cli::{RetryArgs, StatusArgs};

/// The most workers `imgd status` lists (running ones first, then the latest ended).
const WORKERS_LISTED: usize = 10;

/// The window rates and ETAs are measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(300);

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

pub use imgd_core::human_duration;

/// `imgd status --json` and the daemon's `/status`: the queue, rates and ETAs over the last
/// minutes, why modules wait, faces and cloud totals.
pub fn status_document(store: &Store, db: &Location, config: &FileConfig) -> Result<Value> {
    let status = store.queue_status(5)?;
    let throughput = store.throughput(&status, RATE_WINDOW, now_ms())?;
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
    value["throughput"] = serde_json::to_value(&throughput)?;
    let batches = store
        .recent_batches(5)?
        .into_iter()
        .map(|id| store.batch_status(id, RATE_WINDOW, now_ms()))
        .collect::<Result<Vec<_>, _>>()?;
    value["batches"] = serde_json::to_value(batches)?;
    value["workers"] = serde_json::to_value(store.workers(now_ms(), WORKERS_LISTED)?)?;
    Ok(value)
}

/// `imgd status --batch ID`.
fn batch(store: &Store, id: i64, json: bool) -> Result<ExitCode> {
    let batch = store.batch_status(id, RATE_WINDOW, now_ms())?;
    if json {
        print_json(&serde_json::to_value(&batch)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let t = &batch.total;
    println!("batch {}: {}", batch.id, batch.roots.join(", "));
    println!(
        "jobs:     {} of {} finished ({} done, {} failed), {} queued, {} leased; {} images",
        t.done + t.failed,
        t.total(),
        t.done,
        t.failed,
        t.queued,
        t.leased,
        batch.images
    );
    let left = batch
        .eta_seconds
        .map_or_else(|| "-".to_string(), human_duration);
    println!(
        "rate:     {:.1} jobs/s over the last 5 minutes; time left {left}",
        batch.jobs_per_second
    );
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9}",
        "module", "queued", "leased", "done", "failed"
    );
    for (module, c) in &batch.modules {
        println!(
            "{module:<10} {:>9} {:>9} {:>9} {:>9}",
            c.queued, c.leased, c.done, c.failed
        );
    }
    if !batch.top_failures.is_empty() {
        println!();
        println!("most common failures (imgd retry re-queues them):");
        for f in &batch.top_failures {
            println!("  {:>6} × {}: {}", f.count, f.module, f.error);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run(db: &Location, args: StatusArgs) -> Result<ExitCode> {
    let config = FileConfig::load(args.config.as_deref())?;
    let store = open_store(db)?;
    if let Some(id) = args.batch {
        return batch(&store, id, args.json);
    }
    if args.json {
        print_json(&status_document(&store, db, &config)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let status = store.queue_status(5)?;
    let throughput = store.throughput(&status, RATE_WINDOW, now_ms())?;
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
    if throughput.images_per_second > 0.0 {
        let eta = throughput
            .eta_seconds
            .map_or_else(|| "nothing left".to_string(), human_duration);
        println!(
            "rate:     {:.1} images/s over the last {}; time left {eta}",
            throughput.images_per_second,
            human_duration(throughput.window_seconds)
        );
    }
    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>9}  note",
        "module", "queued", "leased", "done", "failed", "jobs/s", "left"
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
        let pace = throughput.modules.get(module.name());
        let rate = pace.map_or(0.0, |p| p.jobs_per_second);
        let left = pace
            .and_then(|p| p.eta_seconds)
            .map_or_else(|| "-".to_string(), human_duration);
        println!(
            "{:<10} {:>9} {:>9} {:>9} {:>9} {:>8.1} {:>9}  {note}",
            module.name(),
            c.queued,
            c.leased,
            c.done,
            c.failed,
            rate,
            left
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
    let workers = store.workers(now_ms(), WORKERS_LISTED)?;
    if !workers.is_empty() {
        println!();
        println!(
            "{:<24} {:>8} {:<8} {:>9} {:>9}  last heartbeat",
            "worker (host)", "pid", "state", "images", "images/s"
        );
        for w in &workers {
            let ago = (now_ms() - w.heartbeat_ms) as f64 / 1000.0;
            println!(
                "{:<24} {:>8} {:<8} {:>9} {:>9.2}  {} ago",
                w.host,
                w.pid,
                w.state,
                w.images,
                w.images_per_second,
                human_duration(ago)
            );
        }
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

pub fn retry(db: &Location, args: RetryArgs) -> Result<ExitCode> {
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

pub fn set_paused(db: &Location, paused: bool) -> Result<ExitCode> {
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
