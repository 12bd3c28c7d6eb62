//! The daemon's web application: the JSON API and its event streams, and the pages
//! (`imgd_web`), behind the HTTP server's access check.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/batches` | the 20 most recent batches, newest first |
//! | `GET /api/batches/ID` | one batch's progress, rate, ETA, failures and scan report |
//! | `POST /api/enqueue` | scans paths on the server's disk as a new batch: `202` with its id |
//! | `GET /api/events` | Server-Sent Events: the daemon's status (as `/status`) as it changes |
//! | `GET /api/batches/ID/events` | Server-Sent Events: the batch's progress until it is finished |
//! | anything else | `imgd_web`'s pages, images and face changes |

use imgd_store::location::Location;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use imgd_pipeline::http::{AppReply, AppRequest, EventUpdate};
use imgd_pipeline::metrics::Metrics;
use imgd_scan::{HashAlgorithm, ScanOptions};
use serde::Deserialize;
use serde_json::{Value, json};

use super::config::FileConfig;
use super::modules::REGISTRY;
use super::open_store;
use super::status::{RATE_WINDOW, now_ms, status_document};

/// What the application reads: the database, the configuration file and the metrics.
#[derive(Clone)]
pub struct Web {
    db: Location,
    config: Option<PathBuf>,
    metrics: Arc<Metrics>,
    /// Written into pages requested with it, for their forms.
    token: Option<String>,
    /// The web search's loaded vectors and text encoder.
    search: Arc<Mutex<imgd_web::SearchState>>,
    /// The event streams' snapshots, shared by every stream of a path.
    snapshots: Arc<Snapshots>,
    /// The batch whose scan an HTTP client started and that is still running: one at a time.
    scanning: Arc<Mutex<Option<i64>>>,
}

/// The body of `POST /api/enqueue`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnqueueRequest {
    /// Files or folders on the server's disk, absolute.
    paths: Vec<PathBuf>,
    /// Module names; the default set when absent.
    modules: Option<Vec<String>>,
    #[serde(default)]
    priority: i64,
    /// `"blake3"` or `"sha256"`: content hashes to compute.
    hash: Option<String>,
    #[serde(default)]
    force: bool,
}

impl Web {
    /// The application over the database `db`, reading the config file `config` for status
    /// and `metrics` for the inference thread's figures.
    pub fn new(
        db: &Location,
        config: Option<&Path>,
        metrics: Arc<Metrics>,
        token: Option<String>,
    ) -> Self {
        let config = config.map(Path::to_path_buf);
        let encoder_config = config.clone();
        let load: imgd_web::EncoderLoader = Box::new(move |model| {
            let config = FileConfig::load(encoder_config.as_deref()).ok()?;
            super::embedder::text_embedder(Some(model), &config)
        });
        Web {
            db: db.clone(),
            config,
            metrics,
            token,
            search: Arc::new(Mutex::new(imgd_web::SearchState::new(load))),
            snapshots: Arc::new(Snapshots::default()),
            scanning: Arc::new(Mutex::new(None)),
        }
    }

    /// Answers one application request.
    pub fn answer(&self, request: &AppRequest) -> AppReply {
        let path = request.path.trim_end_matches('/');
        let read = matches!(request.method.as_str(), "GET" | "HEAD");
        match path {
            "/api/enqueue" if request.method == "POST" => self.enqueue(&request.body),
            "/api/enqueue" => AppReply::MethodNotAllowed("POST"),
            "/api/batches" if read => self.json(|web| web.batches()),
            _ => match batch_id(path, "") {
                Some(_) if !read => AppReply::MethodNotAllowed("GET, HEAD"),
                Some(id) => match self.batch(id) {
                    Ok(Some(batch)) => AppReply::Json(200, batch),
                    Ok(None) => AppReply::NotFound,
                    Err(e) => error_reply(&e),
                },
                None if path == "/api/batches" => AppReply::MethodNotAllowed("GET, HEAD"),
                None => self.page(request),
            },
        }
    }

    /// The next snapshot of the event stream at `path` (shared by every stream of it, see
    /// [`Snapshots`]).
    pub fn events(&self, path: &str) -> Option<EventUpdate> {
        self.snapshots
            .get(path, Instant::now(), || self.snapshot(path))
    }

    fn snapshot(&self, path: &str) -> Option<EventUpdate> {
        if path == "/api/events" {
            let data = self
                .status()
                .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
            return Some(EventUpdate { data, last: false });
        }
        let id = batch_id(path, "/events")?;
        match self.batch(id) {
            Ok(Some(data)) => {
                let last = finished(&data);
                Some(EventUpdate { data, last })
            }
            Ok(None) => None,
            Err(e) => Some(EventUpdate {
                data: json!({ "error": format!("{e:#}") }),
                last: false,
            }),
        }
    }

    /// The daemon's status document (`/status`): `imgd status --json`, with the inference
    /// thread's batches and busy time since the daemon started (`inference`).
    pub fn status(&self) -> Result<Value> {
        let config = FileConfig::load(self.config.as_deref())?;
        let mut status = status_document(&open_store(&self.db)?, &self.db, &config)?;
        status["inference"] = serde_json::to_value(self.metrics.inference_summary())?;
        Ok(status)
    }

    /// A page of `imgd_web`, the dashboard among them.
    fn page(&self, request: &AppRequest) -> AppReply {
        let token = self.token.as_deref().filter(|_| request.authorized);
        if request.path == "/" && matches!(request.method.as_str(), "GET" | "HEAD") {
            return match self.status() {
                Ok(status) => imgd_web::dashboard(&status, token),
                Err(e) => error_reply(&e),
            };
        }
        match open_store(&self.db) {
            Ok(store) => {
                imgd_web::answer(&store, request, token, &self.search).unwrap_or(AppReply::NotFound)
            }
            Err(e) => error_reply(&e),
        }
    }

    fn json(&self, f: impl Fn(&Web) -> Result<Value>) -> AppReply {
        match f(self) {
            Ok(value) => AppReply::Json(200, value),
            Err(e) => error_reply(&e),
        }
    }

    fn batches(&self) -> Result<Value> {
        let store = open_store(&self.db)?;
        let batches = store
            .recent_batches(20)?
            .into_iter()
            .map(|id| store.batch_status(id, RATE_WINDOW, now_ms()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(serde_json::to_value(batches)?)
    }

    /// Batch `id`, or `None` when there is no such batch.
    fn batch(&self, id: i64) -> Result<Option<Value>> {
        let store = open_store(&self.db)?;
        match store.batch_status(id, RATE_WINDOW, now_ms()) {
            Ok(batch) => Ok(Some(serde_json::to_value(batch)?)),
            Err(imgd_store::StoreError::NoSuchBatch(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /api/enqueue`: checks the request, records the batch, and scans on a thread of
    /// its own; answers at once with the batch's id.
    fn enqueue(&self, body: &[u8]) -> AppReply {
        let request: EnqueueRequest = match serde_json::from_slice(body) {
            Ok(request) => request,
            Err(e) => {
                return bad_request(format!(
                    "the body must be JSON such as {{\"paths\": [\"/srv/photos\"]}}: {e}"
                ));
            }
        };
        let options = match scan_options(&request) {
            Ok(options) => options,
            Err(e) => return bad_request(format!("{e:#}")),
        };
        let mut roots = Vec::with_capacity(request.paths.len());
        for path in &request.paths {
            if !path.is_absolute() {
                return bad_request(format!(
                    "{}: paths are on the server's disk and must be absolute",
                    path.display()
                ));
            }
            match std::fs::canonicalize(path) {
                Ok(root) => roots.push(root.display().to_string()),
                Err(e) => return bad_request(format!("cannot scan {}: {e}", path.display())),
            }
        }
        let mut scanning = self.scanning.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(batch) = *scanning {
            return AppReply::Json(
                429,
                json!({
                    "error": format!("batch {batch} is still scanning; try again when it is done"),
                    "batch": batch,
                }),
            );
        }
        let started = open_store(&self.db).and_then(|store| {
            let batch = store.create_batch(&roots)?;
            Ok((store, batch))
        });
        let (store, batch) = match started {
            Ok(started) => started,
            Err(e) => return error_reply(&e),
        };
        let options = ScanOptions {
            batch: Some(batch),
            ..options
        };
        let slot = Arc::clone(&self.scanning);
        let spawned = std::thread::Builder::new()
            .name("imgd-enqueue".to_string())
            .spawn(move || {
                let started = Instant::now();
                let scanned = imgd_scan::scan(&store, &request.paths, &options);
                match super::enqueue::finish(&store, batch, scanned, started.elapsed()) {
                    Ok(report) => tracing::info!(
                        batch,
                        new = report.new,
                        changed = report.changed,
                        errors = report.errors,
                        "batch scanned"
                    ),
                    Err(error) => tracing::error!(batch, "batch scan failed: {error:#}"),
                }
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = None;
            });
        if let Err(e) = spawned {
            return error_reply(&anyhow::Error::from(e).context("cannot start the scan"));
        }
        *scanning = Some(batch);
        tracing::info!(batch, roots = ?roots, "batch enqueued over HTTP");
        AppReply::Json(
            202,
            json!({
                "batch": batch,
                "status": format!("/api/batches/{batch}"),
                "events": format!("/api/batches/{batch}/events"),
            }),
        )
    }
}

/// Event snapshots shared by every stream of a path: one database read serves every open
/// dashboard, and a read that took T is reused for max(1 s, 5 T), so that open pages take at
/// most about a fifth of the database's time however large the library has grown.
#[derive(Default)]
pub struct Snapshots {
    cached: Mutex<HashMap<String, Snapshot>>,
}

struct Snapshot {
    at: Instant,
    took: Duration,
    update: EventUpdate,
}

impl Snapshots {
    /// The shortest time a snapshot is reused.
    const MIN_AGE: Duration = Duration::from_secs(1);
    /// Snapshots unused this long are dropped.
    const FORGET: Duration = Duration::from_secs(60);

    /// The snapshot of `path` at `now`: the cached one while it is young enough, else what
    /// `make` reads (a path without one is not cached).
    fn get(
        &self,
        path: &str,
        now: Instant,
        make: impl FnOnce() -> Option<EventUpdate>,
    ) -> Option<EventUpdate> {
        // Held while reading, so that streams asking at once share one read.
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = cached.get(path) {
            let reuse_for = Self::MIN_AGE.max(snapshot.took * 5);
            if now.saturating_duration_since(snapshot.at) < reuse_for {
                return Some(snapshot.update.clone());
            }
        }
        let started = Instant::now();
        let update = make()?;
        cached.retain(|_, s| now.saturating_duration_since(s.at) < Self::FORGET);
        cached.insert(
            path.to_string(),
            Snapshot {
                at: now,
                took: started.elapsed(),
                update: update.clone(),
            },
        );
        Some(update)
    }
}

/// The scan options an enqueue request asks for (without its batch).
fn scan_options(request: &EnqueueRequest) -> Result<ScanOptions> {
    anyhow::ensure!(!request.paths.is_empty(), "\"paths\" names nothing to scan");
    let modules = match &request.modules {
        Some(names) => REGISTRY.parse_list(&names.join(","))?,
        None => REGISTRY.defaults(),
    };
    anyhow::ensure!(!modules.is_empty(), "\"modules\" names no module");
    let hash = match request.hash.as_deref() {
        None => None,
        Some("blake3") => Some(HashAlgorithm::Blake3),
        Some("sha256") => Some(HashAlgorithm::Sha256),
        Some(other) => anyhow::bail!("\"hash\" is \"blake3\" or \"sha256\", not {other:?}"),
    };
    Ok(ScanOptions {
        modules,
        priority: request.priority,
        hash,
        force: request.force,
        batch: None,
        threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        progress: false,
    })
}

/// `ID` from `/api/batches/ID{suffix}`.
fn batch_id(path: &str, suffix: &str) -> Option<i64> {
    path.strip_prefix("/api/batches/")?
        .strip_suffix(suffix)?
        .parse()
        .ok()
}

/// Whether a batch's document says it is done: scanned, nothing queued or leased.
fn finished(batch: &Value) -> bool {
    let total = &batch["total"];
    batch["scanning"] == false && total["queued"] == 0 && total["leased"] == 0
}

fn bad_request(message: String) -> AppReply {
    AppReply::Json(400, json!({ "error": message }))
}

fn error_reply(error: &anyhow::Error) -> AppReply {
    tracing::warn!("HTTP request failed: {error:#}");
    AppReply::Json(500, json!({ "error": format!("{error:#}") }))
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[test]
    fn a_snapshot_serves_every_stream_until_it_is_old_then_is_read_again() {
        let snapshots = Snapshots::default();
        let reads = Cell::new(0);
        let read = |n: i64| {
            reads.set(reads.get() + 1);
            Some(EventUpdate {
                data: json!({ "n": n }),
                last: false,
            })
        };
        let start = Instant::now();
        let first = snapshots.get("/api/events", start, || read(1)).unwrap();
        let again = snapshots
            .get("/api/events", start + Duration::from_millis(900), || {
                read(2)
            })
            .unwrap();
        assert_eq!(
            (first.data.clone(), again.data, reads.get()),
            (json!({"n": 1}), json!({"n": 1}), 1)
        );
        let later = snapshots
            .get("/api/events", start + Duration::from_millis(1100), || {
                read(3)
            })
            .unwrap();
        assert_eq!((later.data, reads.get()), (json!({ "n": 3 }), 2));
        // Another path has its own; a path without a snapshot is never cached.
        assert!(
            snapshots
                .get("/api/batches/9/events", start, || None)
                .is_none()
        );
        assert!(
            snapshots
                .get("/api/batches/9/events", start, || read(4))
                .is_some()
        );
        assert_eq!(reads.get(), 3);
    }

    #[test]
    fn a_slow_read_is_reused_for_five_times_its_duration() {
        let snapshots = Snapshots::default();
        let start = Instant::now();
        snapshots.get("/api/events", start, || {
            std::thread::sleep(Duration::from_millis(400));
            Some(EventUpdate {
                data: json!(1),
                last: false,
            })
        });
        let reused = snapshots.get("/api/events", start + Duration::from_millis(1900), || {
            panic!("read again too soon")
        });
        assert_eq!(reused.unwrap().data, json!(1));
    }
}
