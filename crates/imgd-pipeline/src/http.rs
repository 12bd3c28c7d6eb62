//! The daemon's HTTP server: Prometheus scrapes, health checks and a JSON status.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | every metric, Prometheus text format 0.0.4 ([`Metrics::encode`]) |
//! | `GET /healthz` | `200 ok` while the daemon is healthy, `503 unhealthy` otherwise |
//! | `GET /status` | JSON from the daemon's status closure |
//! | `GET /api/…` | JSON from the daemon's API closure (`/api/batches`, `/api/batches/ID`); `404` for a path it does not know |
//! | anything else | `404`; a known route with a method other than GET or HEAD: `405` |
//!
//! [`serve`] binds the address (the daemon's default is [`DEFAULT_ADDR`]) and answers on one
//! background thread named `imgd-http`, which runs hyper on a single-threaded tokio runtime:
//! connections are tasks, not threads. What a client can make the server do is bounded by
//! [`HttpLimits`]: every request that declares a body is refused with 413 before a byte of it
//! is read, the header block has a size, count and time limit, each connection a lifetime
//! (which also bounds a client that never reads its answer), and at most
//! `max_connections` are open at once. Failed accepts (out of file descriptors, for one)
//! are retried with a backoff, never fatal. The returned [`HttpServer`] stops on
//! [`HttpServer::stop`] or when dropped.
//!
//! ```
//! use std::sync::Arc;
//! use imgd_pipeline::http::{HttpState, serve};
//! use imgd_pipeline::metrics::Metrics;
//!
//! let state = HttpState::new(Arc::new(Metrics::new(&[])))
//!     .with_status(|| serde_json::json!({ "queued": 0 }));
//! let server = serve("127.0.0.1:0", state).unwrap();
//! println!("scrape http://{}/metrics", server.local_addr());
//! server.stop();
//! ```

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};

use crate::metrics::Metrics;

/// The address the daemon serves on unless configured otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9187";

/// The name of the server's thread.
pub const THREAD_NAME: &str = "imgd-http";

/// The closure `/status` answers with.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The closure `/api/…` answers with, given the path after `/api/`: the JSON body, or `None`
/// for a path it does not serve (404).
pub type ApiFn = Arc<dyn Fn(&str) -> Option<serde_json::Value> + Send + Sync>;

/// What the routes read: the metrics, the health flag and the status closure.
#[derive(Clone)]
pub struct HttpState {
    /// Encoded on every `/metrics` scrape.
    pub metrics: Arc<Metrics>,
    /// `/healthz` answers 200 while this is true, 503 once it is false.
    pub healthy: Arc<AtomicBool>,
    /// Called on every `/status` request; its value is the JSON body.
    pub status: StatusFn,
    /// Called on every `/api/…` request.
    pub api: ApiFn,
}

impl HttpState {
    /// A state serving `metrics`, healthy, whose status is an empty JSON object.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        HttpState {
            metrics,
            healthy: Arc::new(AtomicBool::new(true)),
            status: Arc::new(|| serde_json::Value::Object(serde_json::Map::new())),
            api: Arc::new(|_| None),
        }
    }

    /// Answers `/api/…` with what `api` returns for the path after `/api/`.
    pub fn with_api(
        mut self,
        api: impl Fn(&str) -> Option<serde_json::Value> + Send + Sync + 'static,
    ) -> Self {
        self.api = Arc::new(api);
        self
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

/// What one client can make the server do.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once; past it the server accepts no more until one closes.
    pub max_connections: usize,
    /// How long a client may take to send its request line and headers.
    pub header_timeout: Duration,
    /// How long a connection may live, request and answer together (a client that stops
    /// reading its answer is cut off here).
    pub connection_timeout: Duration,
    /// The most bytes of request line and headers (hyper's floor is 8 KiB).
    pub max_header_bytes: usize,
    /// The most header fields in one request.
    pub max_headers: usize,
    /// `/status` and `/api/…` requests answered at once (each reads the database).
    pub max_status_requests: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(3),
            connection_timeout: Duration::from_secs(15),
            max_header_bytes: 16 * 1024,
            max_headers: 32,
            max_status_requests: 2,
        }
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
    /// The server thread or its runtime could not be started.
    #[error("cannot start the {THREAD_NAME} thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A running server. It stops on [`stop`](Self::stop) or when dropped.
pub struct HttpServer {
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops answering, closes the listener and waits for the server thread to end.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        let _ = self.shutdown.send(true);
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
/// routes of the [module docs](self) on a thread named `imgd-http`, with the default
/// [`HttpLimits`].
pub fn serve(addr: &str, state: HttpState) -> Result<HttpServer, HttpError> {
    serve_with_limits(addr, state, HttpLimits::default())
}

/// [`serve`] with explicit limits.
pub fn serve_with_limits(
    addr: &str,
    state: HttpState,
    limits: HttpLimits,
) -> Result<HttpServer, HttpError> {
    let bind_error = |source: Box<dyn std::error::Error + Send + Sync>| HttpError::Bind {
        addr: addr.to_string(),
        source,
    };
    let socket_addr: SocketAddr = addr.parse().map_err(|e| bind_error(Box::new(e)))?;
    let listener = std::net::TcpListener::bind(socket_addr).map_err(|e| bind_error(Box::new(e)))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| bind_error(Box::new(e)))?;
    let local_addr = listener.local_addr().map_err(|e| bind_error(Box::new(e)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name(THREAD_NAME)
        .max_blocking_threads(limits.max_status_requests.max(1))
        .build()
        .map_err(HttpError::Spawn)?;
    let (shutdown, stopped) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name(THREAD_NAME.to_string())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => accept_until_stopped(listener, state, limits, stopped).await,
                    Err(error) => tracing::error!(%error, "cannot register the HTTP listener"),
                }
            });
            // Dropping the runtime ends every connection task.
        })
        .map_err(HttpError::Spawn)?;
    tracing::debug!(%local_addr, "serving /metrics, /healthz and /status");
    Ok(HttpServer {
        shutdown,
        thread: Some(thread),
        local_addr,
    })
}

async fn accept_until_stopped(
    listener: tokio::net::TcpListener,
    state: HttpState,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let status_slots = Arc::new(Semaphore::new(limits.max_status_requests.max(1)));
    let mut backoff = Duration::ZERO;
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stopped.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(error) => {
                // Out of file descriptors, a connection reset before it was accepted, ...:
                // wait a little and go on; the listener itself stays open.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(%error, "cannot accept an HTTP connection; retrying in {backoff:?}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => continue,
                    _ = stopped.changed() => return,
                }
            }
        };
        let state = state.clone();
        let status_slots = Arc::clone(&status_slots);
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let state = state.clone();
                let status_slots = Arc::clone(&status_slots);
                async move { Ok::<_, Infallible>(answer(request, state, status_slots).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers)
                .serve_connection(TokioIo::new(stream), service);
            match tokio::time::timeout(limits.connection_timeout, connection).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "HTTP connection ended with an error"),
                Err(_) => tracing::debug!("HTTP connection cut off after its time limit"),
            }
        });
    }
}

/// An answer before it becomes a hyper response.
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

/// Whether a request says a body follows (no route takes one).
fn declares_body(request: &Request<Incoming>) -> bool {
    let length = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().parse::<u64>().map_or(true, |n| n > 0));
    length.unwrap_or(false) || request.headers().contains_key(TRANSFER_ENCODING)
}

async fn answer(
    request: Request<Incoming>,
    state: HttpState,
    status_slots: Arc<Semaphore>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let reply = if declares_body(&request) {
        // Answered before a byte of the body is read; the connection then closes.
        Reply::text(413, "request bodies are not accepted\n")
    } else if (path == "/status" || path.starts_with("/api/"))
        && matches!(method, Method::GET | Method::HEAD)
    {
        match status_slots.acquire_owned().await {
            Ok(slot) => {
                let state = state.clone();
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    match path.strip_prefix("/api/") {
                        Some(api_path) => api_reply(&state.api, api_path),
                        None => status_reply(&state.status),
                    }
                })
                .await
                .unwrap_or_else(|_| Reply::text(500, "status unavailable\n"))
            }
            Err(_) => Reply::text(503, "shutting down\n"),
        }
    } else {
        route(&method, &path, &state)
    };
    tracing::debug!(%method, path, status = reply.status, "HTTP request");
    let mut response = Response::builder()
        .status(reply.status)
        .header(CONTENT_TYPE, reply.content_type);
    if reply.status == 405 {
        response = response.header(ALLOW, "GET, HEAD");
    }
    let body = if method == Method::HEAD {
        Vec::new()
    } else {
        reply.body
    };
    response
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

fn status_reply(status: &StatusFn) -> Reply {
    match catch_unwind(AssertUnwindSafe(|| status())) {
        Ok(value) => Reply {
            status: 200,
            content_type: JSON,
            body: format!("{value}\n").into_bytes(),
        },
        Err(_) => {
            tracing::error!("the status closure panicked");
            Reply::text(500, "status unavailable\n")
        }
    }
}

fn api_reply(api: &ApiFn, path: &str) -> Reply {
    match catch_unwind(AssertUnwindSafe(|| api(path))) {
        Ok(Some(value)) => Reply {
            status: 200,
            content_type: JSON,
            body: format!("{value}\n").into_bytes(),
        },
        Ok(None) => Reply::text(404, "not found\n"),
        Err(_) => {
            tracing::error!("the API closure panicked");
            Reply::text(500, "status unavailable\n")
        }
    }
}

fn route(method: &Method, path: &str, state: &HttpState) -> Reply {
    if path.starts_with("/api/") {
        // Every GET and HEAD under /api/ was answered by the API closure.
        return Reply::text(405, "method not allowed\n");
    }
    if !ROUTES.contains(&path) {
        return Reply::text(404, "not found\n");
    }
    if !matches!(*method, Method::GET | Method::HEAD) {
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
        _ => status_reply(&state.status),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

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
        let metrics = Arc::new(Metrics::new(&[]));
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
        metrics.job_done(imgd_modules::TECHNICAL);
        let (status, head, body) = fetch(server.local_addr(), "GET", "/metrics");
        assert_eq!(status, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        assert!(
            body.contains("imgd_jobs_done_total{module=\"technical\"} 1"),
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
        assert!(
            head.to_ascii_lowercase().contains("allow: get, head"),
            "{head}"
        );
        assert_eq!(fetch(addr, "DELETE", "/healthz").0, 405);
        let (status, _, body) = fetch(addr, "HEAD", "/healthz");
        assert_eq!((status, body.as_str()), (200, ""));
    }

    #[test]
    fn api_paths_answer_the_closures_json_or_404_and_only_get() {
        let state = HttpState::new(Arc::new(Metrics::new(&[]))).with_api(|path| match path {
            "batches" => Some(serde_json::json!([{ "id": 1 }])),
            "panic" => panic!("api source gone"),
            _ => None,
        });
        let server = serve("127.0.0.1:0", state).unwrap();
        let addr = server.local_addr();
        let (status, head, body) = fetch(addr, "GET", "/api/batches");
        assert_eq!(status, 200);
        assert!(head.to_lowercase().contains("application/json"), "{head}");
        assert_eq!(body.trim(), r#"[{"id":1}]"#);
        assert_eq!(fetch(addr, "GET", "/api/other").0, 404);
        assert_eq!(fetch(addr, "POST", "/api/batches").0, 405);
        assert_eq!(fetch(addr, "GET", "/api/panic").0, 500);
        assert_eq!(fetch(addr, "GET", "/api/batches").0, 200, "still serving");
    }

    #[test]
    fn a_panicking_status_closure_answers_500_and_the_server_goes_on() {
        let state = HttpState::new(Arc::new(Metrics::new(&[])))
            .with_status(|| panic!("status source gone"));
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

    /// Whether connections to `addr` are refused within a few seconds of `stop`.
    fn eventually_refused(addr: SocketAddr) -> bool {
        (0..200).any(|_| {
            let refused = TcpStream::connect(addr).is_err();
            if !refused {
                std::thread::sleep(Duration::from_millis(10));
            }
            refused
        })
    }

    /// Sends raw bytes, then reads the whole answer (the server closes after one request).
    fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(request).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[test]
    fn a_huge_declared_body_is_refused_without_reading_it() {
        let (server, _, _) = started();
        let addr = server.local_addr();
        let answer = raw(
            addr,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
        );
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        let chunked = raw(
            addr,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
        assert_eq!(fetch(addr, "GET", "/healthz").0, 200);
    }

    #[test]
    fn a_body_that_never_comes_does_not_block_other_clients() {
        let (server, _, _) = started();
        let addr = server.local_addr();
        // Declares 5000 bytes and sends none, holding the connection open.
        let mut held = TcpStream::connect(addr).unwrap();
        held.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n")
            .unwrap();
        for _ in 0..3 {
            assert_eq!(fetch(addr, "GET", "/healthz").0, 200);
        }
        // The held client got its refusal too, at once.
        held.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut answer = [0u8; 12];
        held.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"HTTP/1.1 413");
    }

    #[test]
    fn a_thousand_idle_connections_leave_healthz_answering() {
        let (server, _, _) = started();
        let addr = server.local_addr();
        let idle: Vec<TcpStream> = (0..1000)
            .map(|_| TcpStream::connect(addr).unwrap())
            .collect();
        // A slowloris client: half a header block, never finished.
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        assert_eq!(fetch(addr, "GET", "/healthz").0, 200);
        assert_eq!(fetch(addr, "GET", "/metrics").0, 200);
        // Idle clients are cut off once the header time limit passes: the server closes them.
        slow.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut rest = Vec::new();
        let _ = slow.read_to_end(&mut rest);
        drop(idle);
        assert_eq!(fetch(addr, "GET", "/healthz").0, 200);
    }

    #[test]
    fn oversized_or_too_many_headers_are_refused() {
        let (server, _, _) = started();
        let addr = server.local_addr();
        let big = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(64 * 1024)
        );
        let answer = raw(addr, big.as_bytes());
        assert!(
            answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
            "{answer}"
        );
        let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
        let answer = raw(
            addr,
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        );
        assert!(
            answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
            "{answer}"
        );
        assert_eq!(fetch(addr, "GET", "/healthz").0, 200);
    }

    #[test]
    fn binding_a_bad_address_is_an_error() {
        let error = serve(
            "not an address",
            HttpState::new(Arc::new(Metrics::new(&[]))),
        )
        .unwrap_err();
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
