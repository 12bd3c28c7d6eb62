//! `imgd run` and `imgd validate`.

use imgd_store::location::Location;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use imgd_core::Module;
use imgd_infer::loader::ModuleCounter;
use imgd_pipeline::daemon::{Event, Modules, RunMode, RunSummary, run as run_pipeline};
use imgd_pipeline::http::{self, HttpState};
use imgd_pipeline::metrics::Metrics;
use sd_notify::NotifyState;
use serde_json::json;

use super::config::FileConfig;
use super::modules::{REGISTRY, cpu_analyses};
use super::runners::{self, Availability};
use super::{default_database, open_store, print_json};
use crate::cli::{RunArgs, ValidateArgs};

fn resolve_db(flag: Option<PathBuf>, config: &FileConfig) -> Result<Location> {
    match flag.or_else(|| config.db.clone()) {
        Some(db) => super::database(db),
        None => default_database(),
    }
}

fn notify(states: &[NotifyState<'_>]) {
    // Outside systemd NOTIFY_SOCKET is unset and this does nothing.
    if let Err(err) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {err}");
    }
}

pub fn run(db_flag: Option<PathBuf>, args: RunArgs) -> Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IMGD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(super::progress::log_writer)
        .try_init();
    let file = settings(&args)?;
    let db = resolve_db(db_flag, &file)?;
    let mut config = file.pipeline();
    raise_file_limit();
    arm_fault_injection()?;
    // Open once up front so a bad database fails before any thread starts.
    drop(open_store(&db)?);

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    let metrics = Arc::new(Metrics::new(REGISTRY.all()));
    let healthy = Arc::new(AtomicBool::new(true));
    let server = serve_http(
        &file.daemon.metrics_addr,
        &db,
        &args,
        &file,
        &metrics,
        &healthy,
    )?;

    let mut loaded = runners::load(&file, args.batch_size);
    add_model_metrics(&metrics, &mut loaded);
    requeue_for_new_models(&db, &loaded.models)?;
    let counters = loaded.counters.clone();
    let modules = Modules {
        registry: REGISTRY.clone(),
        analyses: cpu_analyses(),
        runners: loaded.runners,
    };
    let names: Vec<&str> = modules.runnable().iter().map(|m| m.name()).collect();
    tracing::info!(
        "database {}; running modules: {}",
        db.display(),
        names.join(", ")
    );
    let mut on_event = systemd_events(Arc::clone(&healthy), config.stop_timeout);
    let sidecars = if file.xmp.write {
        let (committed, listener) = crossbeam_channel::unbounded();
        config.committed_images = Some(committed);
        Some(super::xmp::spawn_writer(&db, file.xmp.clone(), listener)?)
    } else {
        None
    };
    let mode = match (args.once, args.no_wait) {
        (true, false) => RunMode::Once,
        (true, true) => RunMode::OnceNoWait,
        (false, _) => RunMode::Forever,
    };
    let progress = super::progress::Progress::start(&db, modules.runnable())?;
    let result = run_pipeline(
        &db,
        &config,
        modules,
        Arc::clone(&metrics),
        Arc::clone(&stop),
        mode,
        &mut on_event,
    );
    progress.finish();
    healthy.store(false, Ordering::Relaxed);
    // The last sender goes: the sidecar thread writes what is left and ends.
    config.committed_images = None;
    if let Some(sidecars) = sidecars
        && sidecars.join().is_err()
    {
        tracing::error!("the XMP sidecar thread panicked");
    }
    if let Some(server) = server {
        server.stop();
    }
    let summary = result.context("the daemon stopped")?;
    print_summary(&summary, &metrics, &counters, args.json)?;
    if summary.leased_elsewhere > 0 {
        eprintln!(
            "imgd: {} jobs are still leased by other running daemons (--no-wait)",
            summary.leased_elsewhere
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// The settings `imgd run` runs with: the file, overridden by the environment and the flags,
/// checked as `imgd validate` checks them.
fn settings(args: &RunArgs) -> Result<FileConfig> {
    let mut file = FileConfig::load(args.config.as_deref())?;
    if let Some(n) = args.decode_threads {
        file.daemon.decode_threads = n;
    }
    if let Some(n) = args.claim_batch {
        file.daemon.claim_batch = n;
    }
    if let Some(addr) = &args.metrics_addr {
        file.daemon.metrics_addr.clone_from(addr);
    }
    file.check().context("invalid settings")?;
    Ok(file)
}

/// Arms the fault named by `IMGD_FAULT` in builds with the `fault-injection` feature.
fn arm_fault_injection() -> Result<()> {
    #[cfg(feature = "fault-injection")]
    if let Ok(point) = std::env::var("IMGD_FAULT") {
        let fault = point
            .parse()
            .map_err(|e: String| anyhow::anyhow!("IMGD_FAULT: {e}"))?;
        tracing::warn!("fault injection armed: {fault:?}");
        imgd_pipeline::fault::arm(fault);
    }
    Ok(())
}

/// Serves `/metrics`, `/healthz`, `/status` and the web application on `addr`, unless it is
/// empty or `off`.
fn serve_http(
    addr: &str,
    db: &Location,
    args: &RunArgs,
    file: &FileConfig,
    metrics: &Arc<Metrics>,
    healthy: &Arc<AtomicBool>,
) -> Result<Option<http::HttpServer>> {
    if addr.is_empty() || addr == "off" {
        return Ok(None);
    }
    let web = super::web::Web::new(
        db,
        args.config.as_deref(),
        Arc::clone(metrics),
        file.http.token.clone(),
    );
    let (status, app, events) = (web.clone(), web.clone(), web);
    let reads_need_token = !addr
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback());
    let state = HttpState::new(Arc::clone(metrics))
        .with_health(Arc::clone(healthy))
        .with_status(move || {
            status
                .status()
                .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
        })
        .with_app(move |request| app.answer(request))
        .with_events(move |path| events.events(path))
        .with_access(http::Access {
            token: file.http.token.clone(),
            reads_need_token,
        });
    let server =
        http::serve(addr, state).with_context(|| format!("cannot serve metrics on {addr}"))?;
    tracing::info!(
        "serving /metrics, /healthz, /status and /api on http://{}{}",
        server.local_addr(),
        if reads_need_token {
            " (token required)"
        } else {
            ""
        }
    );
    Ok(Some(server))
}

/// The metrics the loaded models add: their counters (the caption module's vision encodes)
/// and their own text (the cloud API's counters).
fn add_model_metrics(metrics: &Metrics, loaded: &mut runners::Loaded) {
    for counter in loaded.counters.clone() {
        metrics.add_text_source(Box::new(move || counter.prometheus_text()));
    }
    for text in loaded.metrics.drain(..) {
        metrics.add_text_source(text);
    }
}

/// The pipeline's events told to systemd (ready, watchdog, stopping, failing); a failure also
/// turns `/healthz` unhealthy.
fn systemd_events(healthy: Arc<AtomicBool>, stop_timeout: Duration) -> impl FnMut(Event) {
    let watchdog = sd_notify::watchdog_enabled();
    let mut last_watchdog = Instant::now();
    move |event: Event| match event {
        Event::Ready => notify(&[
            NotifyState::Ready,
            NotifyState::Status("processing the queue"),
        ]),
        Event::Alive => {
            if let Some(interval) = watchdog
                && last_watchdog.elapsed() >= interval / 2
            {
                notify(&[NotifyState::Watchdog]);
                last_watchdog = Instant::now();
            }
        }
        Event::Stopping => {
            tracing::info!(
                "stopping: finishing the work in flight (at most {}s, then the rest is released)",
                stop_timeout.as_secs()
            );
            notify(&[NotifyState::Stopping]);
        }
        Event::Failed => {
            healthy.store(false, Ordering::SeqCst);
            notify(&[NotifyState::Status("failing: a pipeline stage died")]);
        }
    }
}

/// The run's summary: JSON on stdout with `--json`, a few lines on stderr otherwise. Beside
/// the pipeline's totals it tells where the time went: each model's batches and seconds on the
/// inference thread (`models`), and the decode threads' seconds (`decode_seconds`).
fn print_summary(
    summary: &RunSummary,
    metrics: &Metrics,
    counters: &[ModuleCounter],
    json: bool,
) -> Result<()> {
    let models = metrics.inference_summary().models;
    if json {
        let mut value = serde_json::to_value(summary)?;
        for counter in counters {
            value[counter.summary_key] = json!(counter.value.load(Ordering::Relaxed));
        }
        value["decode_seconds"] = json!(metrics.decode_busy_seconds());
        value["models"] = models
            .iter()
            .map(|(name, model)| {
                let entry = json!({
                    "batches": model.batches,
                    "items": model.items,
                    "seconds": model.busy_seconds,
                });
                (name.clone(), entry)
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        return print_json(&value);
    }
    eprintln!(
        "imgd: {} images, {} jobs done, {} failed attempts, {} decodes ({:.1}s on the decode \
         threads), in {:.1}s",
        summary.images,
        summary.jobs_done,
        summary.jobs_failed,
        summary.decodes,
        metrics.decode_busy_seconds(),
        summary.seconds
    );
    if summary.batches > 0 {
        eprintln!(
            "imgd: {} model batches of {:.1} on average, {:.1}s in the models",
            summary.batches,
            summary.batched_items as f64 / summary.batches as f64,
            summary.model_seconds
        );
        for (name, model) in &models {
            eprintln!(
                "imgd:   {name}: {} batches, {} items, {:.1}s ({:.0}% of the models' time)",
                model.batches,
                model.items,
                model.busy_seconds,
                100.0 * model.busy_seconds / summary.model_seconds.max(1e-9)
            );
        }
    }
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit: the HTTP server may
/// hold many connections at once, and systemd's default soft limit is 1024.
fn raise_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(error) = setrlimit(Resource::Nofile, limit) {
            tracing::debug!(%error, "cannot raise the open-file limit");
        }
    }
}

/// Re-queues, for each versioned module, the images whose result came from another model than
/// the one now loaded (a changed `[models]` setting, or new weights).
fn requeue_for_new_models(db: &Location, models: &[(Module, String, String)]) -> Result<()> {
    if models.is_empty() {
        return Ok(());
    }
    let store = open_store(db)?;
    for (module, id, version) in models {
        let requeued = store
            .requeue_missing_for_model(*module, id, version)
            .with_context(|| format!("cannot re-queue {module} for model {id} {version}"))?;
        if requeued > 0 {
            tracing::info!(
                "module {module}: {requeued} images re-queued for model {id} (version {version})"
            );
        }
    }
    Ok(())
}

pub fn validate(db_flag: Option<PathBuf>, args: ValidateArgs) -> Result<ExitCode> {
    let mut problems: Vec<String> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let file = match FileConfig::load(args.config.as_deref()) {
        Ok(file) => {
            notes.push(match &args.config {
                Some(path) => format!("config {} is valid", path.display()),
                None => "no config file: using the defaults".to_string(),
            });
            Some(file)
        }
        Err(err) => {
            problems.push(format!("{err:#}"));
            None
        }
    };
    let default = FileConfig::default();
    let db = resolve_db(db_flag, file.as_ref().unwrap_or(&default))?;
    // A database marked corrupt is opened all the same: the integrity check decides.
    let options = imgd_store::StoreOptions {
        ignore_corrupt_marker: true,
        ..super::store_options()
    };
    match imgd_store::Store::open_location(&db, options) {
        Ok(store) => {
            notes.push(format!(
                "database {} is usable (schema version {})",
                db.display(),
                store.schema_version()?
            ));
            match store.integrity_check() {
                Ok(verdict) if verdict == "ok" => {
                    if let Some(file) = db.sqlite_file() {
                        imgd_store::Store::clear_corrupt_marker(file).with_context(|| {
                            format!(
                                "cannot remove {}",
                                imgd_store::Store::corrupt_marker(file).display()
                            )
                        })?;
                    }
                }
                Ok(verdict) => problems.push(format!("database integrity check: {verdict}")),
                Err(err) => problems.push(format!("{err:#}")),
            }
        }
        Err(err) => problems.push(format!("{err:#}")),
    }
    let file = file.as_ref().unwrap_or(&default);
    let loaded = runners::load(file, None);
    for (module, err) in &loaded.problems {
        problems.push(format!("module {module}: its model does not load: {err}"));
    }
    let runnable: Vec<Module> = loaded.runners.iter().map(|r| r.module()).collect();
    for &module in REGISTRY.all() {
        match runners::availability(module, file) {
            Availability::BuiltIn => notes.push(format!("module {module}: built in")),
            Availability::Installed(what) if runnable.contains(&module) => {
                notes.push(format!("module {module}: {what}"));
            }
            Availability::Installed(_) => {}
            Availability::Waiting(why) => notes.push(format!("module {module}: {why}")),
        }
    }
    if args.json {
        print_json(&json!({ "ok": problems.is_empty(), "problems": problems, "notes": notes }))?;
    } else {
        for note in &notes {
            println!("ok: {note}");
        }
        for problem in &problems {
            println!("problem: {problem}");
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
