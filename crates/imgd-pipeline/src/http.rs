//! The daemon's small HTTP server: Prometheus scrapes, health checks and a JSON status.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | every metric, Prometheus text format 0.0.4 ([`Metrics::encode`]) |
//! | `GET /healthz` | `200 ok` while the daemon is healthy, `503 unhealthy` otherwise |
//! | `GET /status` | JSON from the daemon's status closure |
//! | anything else | `404`; a known route with a method other than GET or HEAD: `405` |
//!
//! [`serve`] binds the address (the daemon's default is [`DEFAULT_ADDR`]) and answers on one
//! background thread named `imgd-http`; the returned [`HttpServer`] stops it on
//! [`HttpServer::stop`] or when dropped.
//!
//! ```
//! use std::sync::Arc;
//! use imgd_pipeline::http::{HttpState, serve};
//! use imgd_pipeline::metrics::Metrics;
//!
//! let state = HttpState::new(Arc::new(Metrics::new()))
//!     .with_status(|| serde_json::json!({ "queued": 0 }));
//! let server = serve("127.0.0.1:0", state).unwrap();
//! println!("scrape http://{}/metrics", server.local_addr());
//! server.stop();
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use tiny_http::{Header, Method, Request, Response, Server};

use crate::metrics::Metrics;

/// The address the daemon serves on unless configured otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9187";

/// The name of the server's thread.
pub const THREAD_NAME: &str = "imgd-http";

/// The closure `/status` answers with.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// What the routes read: the metrics, the health flag and the status closure.
#[derive(Clone)]
pub struct HttpState {
    /// Encoded on every `/metrics` scrape.
    pub metrics: Arc<Metrics>,
    /// `/healthz` answers 200 while this is true, 503 once it is false.
    pub healthy: Arc<AtomicBool>,
    /// Called on every `/status` request; its value is the JSON body.
    pub status: StatusFn,
}

impl HttpState {
    /// A state serving `metrics`, healthy, whose status is an empty JSON object.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        HttpState {
            metrics,
            healthy: Arc::new(AtomicBool::new(true)),
            status: Arc::new(|| serde_json::Value::Object(serde_json::Map::new())),
        }
    }

    /// Reads health from `healthy`, which the daemon flips.
    pub fn with_health(mut self, healthy: Arc<AtomicBool>) -> Self {
        self.healthy = healthy;
        self
    }

    /// Answers `/status` with what `status` returns.
    pub fn with_status(
        mut self,
        status: impl Fn() -> serde_json::Value + Send + Sync + 'static,
    ) -> Self {
        self.status = Arc::new(status);
        self
    }
}

impl fmt::Debug for HttpState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpState")
            .field("healthy", &self.healthy.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The address could not be bound (in use, not local, malformed).
    #[error("cannot serve HTTP on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: String,
        /// What the socket layer said.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The bound listener has no IP address (a Unix socket).
    #[error("HTTP listener on {addr} has no IP address")]
    NotIp {
        /// The address asked for.
        addr: String,
    },
    /// The server thread could not be started.
    #[error("cannot start the {THREAD_NAME} thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A running server. It stops on [`stop`](Self::stop) or when dropped.
pub struct HttpServer {
    server: Arc<Server>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops answering and waits for the server thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        self.stopping.store(true, Ordering::SeqCst);
        self.server.unblock();
        if thread.join().is_err() {
            tracing::error!("the {THREAD_NAME} thread panicked");
        }
    }
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .field("running", &self.thread.is_some())
            .finish()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Binds `addr` (e.g. [`DEFAULT_ADDR`], or `127.0.0.1:0` for any free port) and answers the
/// routes of the [module docs](self) on a thread named `imgd-http`.
pub fn serve(addr: &str, state: HttpState) -> Result<HttpServer, HttpError> {
    let server = Server::http(addr).map_err(|source| HttpError::Bind {
        addr: addr.to_string(),
        source,
    })?;
    let local_addr = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| HttpError::NotIp {
            addr: addr.to_string(),
        })?;
    let server = Arc::new(server);
    let stopping = Arc::new(AtomicBool::new(false));

    let thread = std::thread::Builder::new()
        .name(THREAD_NAME.to_string())
        .spawn({
            let server = Arc::clone(&server);
            let stopping = Arc::clone(&stopping);
            move || answer_until_stopped(&server, &stopping, &state)
        })
        .map_err(HttpError::Spawn)?;
    tracing::info!(%local_addr, "serving /metrics, /healthz and /status");

    Ok(HttpServer {
        server,
        stopping,
        thread: Some(thread),
        local_addr,
    })
}

fn answer_until_stopped(server: &Server, stopping: &AtomicBool, state: &HttpState) {
    loop {
        match server.recv() {
            Ok(request) => answer(request, state),
            Err(_) if stopping.load(Ordering::SeqCst) => break,
            // The listener failed; `recv` now blocks until `stop` unblocks it.
            Err(error) => tracing::error!(%error, "HTTP listener failed"),
        }
    }
    tracing::debug!("HTTP server stopped");
}

/// An answer before it becomes a `tiny_http` response.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const ROUTES: [&str; 3] = ["/metrics", "/healthz", "/status"];

impl Reply {
    fn text(status: u16, body: &str) -> Self {
        Reply {
            status,
            content_type: TEXT,
            body: body.as_bytes().to_vec(),
        }
    }
}

fn answer(request: Request, state: &HttpState) {
    let path = request.url().split('?').next().unwrap_or_default();
    let reply = route(request.method(), path, state);
    tracing::debug!(method = %request.method(), url = request.url(), status = reply.status, "HTTP request");

    let mut response = Response::from_data(reply.body).with_status_code(reply.status);
    if let Ok(header) = Header::from_bytes("Content-Type", reply.content_type) {
        response.add_header(header);
    }
    if reply.status == 405
        && let Ok(header) = Header::from_bytes("Allow", "GET, HEAD")
    {
        response.add_header(header);
    }
    if let Err(error) = request.respond(response) {
        tracing::debug!(%error, "could not send an HTTP response");
    }
}

fn route(method: &Method, path: &str, state: &HttpState) -> Reply {
    if !ROUTES.contains(&path) {
        return Reply::text(404, "not found\n");
    }
    if !matches!(method, Method::Get | Method::Head) {
        return Reply::text(405, "method not allowed\n");
    }
    match path {
        "/metrics" => Reply {
            status: 200,
            content_type: Metrics::CONTENT_TYPE,
            body: state.metrics.encode().into_bytes(),
        },
        "/healthz" if state.healthy.load(Ordering::SeqCst) => Reply::text(200, "ok\n"),
        "/healthz" => Reply::text(503, "unhealthy\n"),
        _ => match catch_unwind(AssertUnwindSafe(|| (state.status)())) {
            Ok(value) => Reply {
                status: 200,
                content_type: JSON,
                body: format!("{value}\n").into_bytes(),
            },
            Err(_) => {
                tracing::error!("the status closure panicked");
                Reply::text(500, "status unavailable\n")
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use imgd_core::Module;

    use super::*;

    /// A plain HTTP/1.1 request; returns the status code, the headers and the body.
    fn fetch(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        write!(
            stream,
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let (head, body) = raw.split_once("\r\n\r\n").expect("a header block");
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .expect("a status code");
        (status, head.to_string(), body.to_string())
    }

    fn started() -> (HttpServer, Arc<Metrics>, Arc<AtomicBool>) {
        let metrics = Arc::new(Metrics::new());
        let healthy = Arc::new(AtomicBool::new(true));
        let state = HttpState::new(Arc::clone(&metrics))
            .with_health(Arc::clone(&healthy))
            .with_status(|| serde_json::json!({ "queued": 3, "modules": ["ocr"] }));
        let server = serve("127.0.0.1:0", state).unwrap();
        (server, metrics, healthy)
    }

    #[test]
    fn metrics_route_serves_the_registry_as_prometheus_text() {
        let (server, metrics, _) = started();
        metrics.job_done(Module::Faces);
        let (status, head, body) = fetch(server.local_addr(), "GET", "/metrics");
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            body.contains("imgd_jobs_done_total{module=\"faces\"} 1"),
            "{body}"
        );
        server.stop();
    }

    #[test]
    fn healthz_follows_the_health_flag() {
        let (server, _, healthy) = started();
        let (status, _, body) = fetch(server.local_addr(), "GET", "/healthz");
        assert_eq!((status, body.as_str()), (200, "ok\n"));
        healthy.store(false, Ordering::SeqCst);
        let (status, _, body) = fetch(server.local_addr(), "GET", "/healthz");
        assert_eq!((status, body.as_str()), (503, "unhealthy\n"));
    }

    #[test]
    fn status_serves_the_closure_json() {
        let (server, _, _) = started();
        let (status, head, body) = fetch(server.local_addr(), "GET", "/status?verbose=1");
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase().contains("application/json"),
            "{head}"
        );
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            value,
            serde_json::json!({ "queued": 3, "modules": ["ocr"] })
        );
    }

    #[test]
    fn unknown_paths_are_404_and_other_methods_405() {
        let (server, _, _) = started();
        let addr = server.local_addr();
        assert_eq!(fetch(addr, "GET", "/").0, 404);
        assert_eq!(fetch(addr, "GET", "/metricsx").0, 404);
        let (status, head, _) = fetch(addr, "POST", "/metrics");
        assert_eq!(status, 405);
        assert!(head.contains("Allow: GET, HEAD"), "{head}");
        assert_eq!(fetch(addr, "DELETE", "/healthz").0, 405);
        let (status, _, body) = fetch(addr, "HEAD", "/healthz");
        assert_eq!((status, body.as_str()), (200, ""));
    }

    #[test]
    fn a_panicking_status_closure_answers_500_and_the_server_goes_on() {
        let state =
            HttpState::new(Arc::new(Metrics::new())).with_status(|| panic!("status source gone"));
        let server = serve("127.0.0.1:0", state).unwrap();
        assert_eq!(fetch(server.local_addr(), "GET", "/status").0, 500);
        assert_eq!(fetch(server.local_addr(), "GET", "/healthz").0, 200);
    }

    #[test]
    fn stop_and_drop_release_the_port() {
        let (server, _, _) = started();
        let addr = server.local_addr();
        server.stop();
        assert!(eventually_refused(addr), "{addr} still accepts after stop");
        let (dropped, _, _) = started();
        let addr = dropped.local_addr();
        drop(dropped);
        assert!(eventually_refused(addr), "{addr} still accepts after drop");
    }

    /// Whether connections to `addr` are refused within a few seconds (the listener closes on
    /// tiny_http's accept thread, just after `stop` returns).
    fn eventually_refused(addr: SocketAddr) -> bool {
        (0..200).any(|_| {
            let refused = TcpStream::connect(addr).is_err();
            if !refused {
                std::thread::sleep(Duration::from_millis(10));
            }
            refused
        })
    }

    #[test]
    fn binding_a_bad_address_is_an_error() {
        let error = serve("not an address", HttpState::new(Arc::new(Metrics::new()))).unwrap_err();
        assert!(error.to_string().contains("not an address"), "{error}");
    }

    #[test]
    fn promtool_accepts_a_real_scrape() {
        let (server, metrics, _) = started();
        metrics.register_model("clip-vit-b32");
        metrics.record_decode("jpeg-full", Duration::from_millis(40));
        let (status, _, body) = fetch(server.local_addr(), "GET", "/metrics");
        assert_eq!(status, 200);
        let Some((ok, output)) = crate::metrics::promtool_check(&body) else {
            return;
        };
        assert!(ok, "promtool check metrics failed:\n{output}");
    }
}
