//! The daemon's HTTP server: Prometheus scrapes, health checks, a JSON status, and the
//! application (API, pages, event streams) the daemon plugs in.
//!
//! | route | answer |
//! |---|---|
//! | `GET /metrics` | every metric, Prometheus text format 0.0.4 ([`Metrics::encode`]) |
//! | `GET /healthz` | `200 ok` while the daemon is healthy, `503 unhealthy` otherwise |
//! | `GET /status` | JSON from the daemon's status closure |
//! | `GET …/events` | a Server-Sent Events stream of the events closure's snapshots ([`events`]) |
//! | anything else | the application closure's [`AppReply`]; `404` when it has none |
//!
//! Every route but `/metrics` and `/healthz` passes the [`Access`] check first (token, and
//! the Host check of a loopback server).
//!
//! [`serve`] binds the address (the daemon's default is [`DEFAULT_ADDR`]) and answers on one
//! background thread named `imgd-http`, which runs hyper on a single-threaded tokio runtime:
//! connections are tasks, not threads. What a client can make the server do is bounded by
//! [`HttpLimits`]: a body is read only for a POST that declares its length, up to
//! `max_body_bytes` (anything else that declares a body is refused with 413 before a byte of
//! it is read), the header block has a size, count and time limit, each connection a lifetime
//! (which also bounds a client that never reads its answer; event streams have their own),
//! and at most `max_connections` are open at once. Failed accepts (out of file descriptors,
//! for one) are retried with a backoff, never fatal. The returned [`HttpServer`] stops on
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

mod access;
pub mod events;
#[cfg(test)]
mod tests;

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{
    ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, SET_COOKIE, TRANSFER_ENCODING,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{Semaphore, watch};

pub use access::{Access, TOKEN_COOKIE, Verdict};
pub use events::EventUpdate;

use crate::metrics::Metrics;

/// The address the daemon serves on unless configured otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9187";

/// The name of the server's thread.
pub const THREAD_NAME: &str = "imgd-http";

/// The closure `/status` answers with.
pub type StatusFn = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// The closure that answers every application route.
pub type AppFn = Arc<dyn Fn(&AppRequest) -> AppReply + Send + Sync>;

/// The closure event streams ask for their snapshots, given the path (`/api/events`): `None`
/// for a path it does not serve (404 at the start; the stream's end later).
pub type EventsFn = Arc<dyn Fn(&str) -> Option<EventUpdate> + Send + Sync>;

/// One request for the application: anything but `/metrics`, `/healthz`, `/status` and event
/// streams, once it passed the [`Access`] check.
#[derive(Debug, Clone)]
pub struct AppRequest {
    /// GET, HEAD or POST (other methods are refused before).
    pub method: Method,
    /// The path, `/` first, without the query.
    pub path: String,
    /// The query string after `?`, undecoded (empty when there is none).
    pub query: String,
    /// The body of a POST (empty otherwise).
    pub body: Bytes,
    /// Whether the request carried the right token.
    pub authorized: bool,
}

impl AppRequest {
    /// The query's parameters, percent-decoded, in order.
    pub fn params(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// The application's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum AppReply {
    /// A JSON body with a status code.
    Json(u16, serde_json::Value),
    /// An HTML page with a status code.
    Html(u16, String),
    /// Plain text with a status code (errors).
    Text(u16, String),
    /// Bytes of a given type that a browser may cache (thumbnails).
    Cached {
        /// The `Content-Type`.
        content_type: &'static str,
        /// The bytes.
        body: Vec<u8>,
    },
    /// A `303 See Other` to a path (after a form's change).
    Redirect(String),
    /// Nothing at this path: 404.
    NotFound,
    /// The path exists but not for this method: 405 with the methods it takes.
    MethodNotAllowed(&'static str),
}

/// What the routes read: the metrics, the health flag, the closures and the access rules.
#[derive(Clone)]
pub struct HttpState {
    /// Encoded on every `/metrics` scrape.
    pub metrics: Arc<Metrics>,
    /// `/healthz` answers 200 while this is true, 503 once it is false.
    pub healthy: Arc<AtomicBool>,
    /// Called on every `/status` request; its value is the JSON body.
    pub status: StatusFn,
    /// Called for every application route.
    pub app: AppFn,
    /// Called for every snapshot of an event stream.
    pub events: EventsFn,
    /// Who may use the routes.
    pub access: Access,
}

impl HttpState {
    /// A state serving `metrics`, healthy, whose status is an empty JSON object, with no
    /// application, no event stream and no token.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        HttpState {
            metrics,
            healthy: Arc::new(AtomicBool::new(true)),
            status: Arc::new(|| serde_json::Value::Object(serde_json::Map::new())),
            app: Arc::new(|_| AppReply::NotFound),
            events: Arc::new(|_| None),
            access: Access::default(),
        }
    }

    /// Answers the application routes with `app`.
    pub fn with_app(
        mut self,
        app: impl Fn(&AppRequest) -> AppReply + Send + Sync + 'static,
    ) -> Self {
        self.app = Arc::new(app);
        self
    }

    /// Serves event streams from `events`.
    pub fn with_events(
        mut self,
        events: impl Fn(&str) -> Option<EventUpdate> + Send + Sync + 'static,
    ) -> Self {
        self.events = Arc::new(events);
        self
    }

    /// Guards the routes with `access`.
    pub fn with_access(mut self, access: Access) -> Self {
        self.access = access;
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
    /// Application and `/status` requests answered at once (each reads the database).
    pub max_status_requests: usize,
    /// The largest POST body read.
    pub max_body_bytes: usize,
    /// Event streams open at once; past it a new one is answered 503.
    pub max_event_streams: usize,
    /// How long an event stream may live before the server closes it (the browser reconnects).
    pub event_stream_lifetime: Duration,
    /// How often an event stream asks for its next snapshot.
    pub event_interval: Duration,
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
            max_body_bytes: 64 * 1024,
            max_event_streams: 32,
            event_stream_lifetime: Duration::from_secs(600),
            event_interval: Duration::from_secs(1),
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
                    Ok(listener) => {
                        accept_until_stopped(listener, local_addr, state, limits, stopped).await
                    }
                    Err(error) => tracing::error!(%error, "cannot register the HTTP listener"),
                }
            });
            // Dropping the runtime ends every connection task.
        })
        .map_err(HttpError::Spawn)?;
    tracing::debug!(%local_addr, "serving HTTP");
    Ok(HttpServer {
        shutdown,
        thread: Some(thread),
        local_addr,
    })
}

async fn accept_until_stopped(
    listener: tokio::net::TcpListener,
    local_addr: SocketAddr,
    state: HttpState,
    limits: HttpLimits,
    mut stopped: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shared = Arc::new(Shared {
        state,
        limits,
        local_addr,
        reads: Arc::new(Semaphore::new(limits.max_status_requests.max(1))),
        streams: Arc::new(Semaphore::new(limits.max_event_streams.max(1))),
    });
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
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let _permit = permit;
            // Set when the answer is an event stream, which lives longer than a request.
            let streaming = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&streaming);
            let service = service_fn(move |request| {
                let shared = Arc::clone(&shared);
                let flag = Arc::clone(&flag);
                async move { Ok::<_, Infallible>(answer(request, &shared, &flag).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .keep_alive(false)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers)
                .serve_connection(TokioIo::new(stream), service);
            let mut connection = pin!(connection);
            let mut outcome =
                tokio::time::timeout(limits.connection_timeout, connection.as_mut()).await;
            if outcome.is_err() && streaming.load(Ordering::SeqCst) {
                let rest = limits
                    .event_stream_lifetime
                    .saturating_sub(limits.connection_timeout);
                outcome = tokio::time::timeout(rest, connection.as_mut()).await;
            }
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "HTTP connection ended with an error"),
                Err(_) => tracing::debug!("HTTP connection cut off after its time limit"),
            }
        });
    }
}

/// What every connection task reads.
struct Shared {
    state: HttpState,
    limits: HttpLimits,
    local_addr: SocketAddr,
    /// Slots for answers that read the database (`/status`, the application, snapshots).
    reads: Arc<Semaphore>,
    /// Slots for open event streams.
    streams: Arc<Semaphore>,
}

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// An answer before it becomes a hyper response.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    /// Extra headers.
    headers: Vec<(hyper::header::HeaderName, String)>,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";

impl Reply {
    fn text(status: u16, body: &str) -> Self {
        Reply {
            status,
            content_type: TEXT,
            body: body.as_bytes().to_vec(),
            headers: Vec::new(),
        }
    }

    fn json(status: u16, value: &serde_json::Value) -> Self {
        Reply {
            status,
            content_type: JSON,
            body: format!("{value}\n").into_bytes(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: hyper::header::HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    fn method_not_allowed(allow: &str) -> Self {
        Reply::text(405, "method not allowed\n").with_header(ALLOW, allow.to_string())
    }
}

impl From<AppReply> for Reply {
    fn from(reply: AppReply) -> Self {
        match reply {
            AppReply::Json(status, value) => Reply::json(status, &value),
            AppReply::Html(status, html) => Reply {
                status,
                content_type: HTML,
                body: html.into_bytes(),
                headers: Vec::new(),
            },
            AppReply::Text(status, text) => Reply::text(status, &text),
            AppReply::Cached { content_type, body } => Reply {
                status: 200,
                content_type,
                body,
                headers: vec![(CACHE_CONTROL, "private, max-age=86400".to_string())],
            },
            AppReply::Redirect(to) => {
                Reply::text(303, "see other\n").with_header(hyper::header::LOCATION, to)
            }
            AppReply::NotFound => Reply::text(404, "not found\n"),
            AppReply::MethodNotAllowed(allow) => Reply::method_not_allowed(allow),
        }
    }
}

/// The declared body length: `Ok(0)` without one, `Err(())` when it cannot be read (chunked,
/// unparsable).
fn declared_length(request: &Request<Incoming>) -> Result<u64, ()> {
    if request.headers().contains_key(TRANSFER_ENCODING) {
        return Err(());
    }
    match request.headers().get(CONTENT_LENGTH) {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or(()),
    }
}

async fn answer(
    request: Request<Incoming>,
    shared: &Shared,
    streaming: &AtomicBool,
) -> Response<Body> {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (reply, stream) = match respond(request, shared, streaming).await {
        Respond::Now(reply) => (reply, None),
        Respond::Stream(body) => (
            Reply {
                status: 200,
                content_type: "text/event-stream",
                body: Vec::new(),
                headers: vec![(CACHE_CONTROL, "no-store".to_string())],
            },
            Some(body),
        ),
    };
    tracing::debug!(%method, path, status = reply.status, "HTTP request");
    let mut response = Response::builder()
        .status(reply.status)
        .header(CONTENT_TYPE, reply.content_type);
    for (name, value) in reply.headers {
        response = response.header(name, value);
    }
    let body: Body = match stream {
        Some(stream) if method != Method::HEAD => stream.boxed_unsync(),
        _ if method == Method::HEAD => Full::new(Bytes::new()).boxed_unsync(),
        _ => Full::new(Bytes::from(reply.body)).boxed_unsync(),
    };
    response
        .body(body)
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()).boxed_unsync()))
}

enum Respond {
    Now(Reply),
    Stream(events::ChannelBody),
}

async fn respond(request: Request<Incoming>, shared: &Shared, streaming: &AtomicBool) -> Respond {
    let state = &shared.state;
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let Ok(length) = declared_length(&request) else {
        return Respond::Now(Reply::text(413, "request bodies need a Content-Length\n"));
    };
    if length > 0 && (method != Method::POST || length > shared.limits.max_body_bytes as u64) {
        // Answered before a byte of the body is read; the connection then closes.
        return Respond::Now(Reply::text(413, "request body not accepted\n"));
    }
    match path.as_str() {
        "/metrics" | "/healthz" => {
            if !matches!(method, Method::GET | Method::HEAD) {
                return Respond::Now(Reply::method_not_allowed("GET, HEAD"));
            }
            return Respond::Now(if path == "/metrics" {
                Reply {
                    status: 200,
                    content_type: Metrics::CONTENT_TYPE,
                    body: state.metrics.encode().into_bytes(),
                    headers: Vec::new(),
                }
            } else if state.healthy.load(Ordering::SeqCst) {
                Reply::text(200, "ok\n")
            } else {
                Reply::text(503, "unhealthy\n")
            });
        }
        _ => {}
    }
    if !matches!(method, Method::GET | Method::HEAD | Method::POST) {
        return Respond::Now(Reply::method_not_allowed("GET, HEAD, POST"));
    }
    let (authorized, set_cookie) =
        match state
            .access
            .judge(&method, &query, request.headers(), shared.local_addr.ip())
        {
            Verdict::Allowed {
                authorized,
                set_cookie,
            } => (authorized, set_cookie),
            Verdict::Unauthorized => {
                return Respond::Now(
                    Reply::text(401, "a token is needed: `Authorization: Bearer TOKEN`\n")
                        .with_header(WWW_AUTHENTICATE, "Bearer realm=\"imgd\"".to_string()),
                );
            }
            Verdict::Forbidden(reason) => return Respond::Now(Reply::text(403, reason)),
        };
    let cookie = match (&state.access.token, set_cookie) {
        (Some(token), true) => Some(access::token_cookie(token)),
        _ => None,
    };
    let with_cookie = |reply: Reply| match &cookie {
        Some(cookie) => reply.with_header(SET_COOKIE, cookie.clone()),
        None => reply,
    };
    if path.ends_with("/events") && method != Method::POST {
        return match open_stream(shared, &path, streaming).await {
            Respond::Now(reply) => Respond::Now(with_cookie(reply)),
            stream => stream,
        };
    }
    let body = if length > 0 {
        match Limited::new(request.into_body(), shared.limits.max_body_bytes)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(_) => return Respond::Now(Reply::text(400, "the request body was cut short\n")),
        }
    } else {
        Bytes::new()
    };
    let Ok(slot) = Arc::clone(&shared.reads).acquire_owned().await else {
        return Respond::Now(Reply::text(503, "shutting down\n"));
    };
    let status = Arc::clone(&state.status);
    let app = Arc::clone(&state.app);
    let app_request = AppRequest {
        method: method.clone(),
        path: path.clone(),
        query,
        body,
        authorized,
    };
    let reply = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        catch_unwind(AssertUnwindSafe(|| {
            if app_request.path == "/status" {
                if app_request.method == Method::POST {
                    return Reply::method_not_allowed("GET, HEAD");
                }
                Reply::json(200, &status())
            } else {
                Reply::from(app(&app_request))
            }
        }))
    })
    .await;
    Respond::Now(with_cookie(match reply {
        Ok(Ok(reply)) => reply,
        _ => {
            tracing::error!(path, "the HTTP answer panicked");
            Reply::text(500, "status unavailable\n")
        }
    }))
}

/// Opens the event stream of `path`: its first snapshot now (404 when there is none), the
/// rest from [`events::stream`].
async fn open_stream(shared: &Shared, path: &str, streaming: &AtomicBool) -> Respond {
    let Ok(stream_slot) = Arc::clone(&shared.streams).try_acquire_owned() else {
        return Respond::Now(Reply::text(503, "too many event streams open\n"));
    };
    let Ok(slot) = Arc::clone(&shared.reads).acquire_owned().await else {
        return Respond::Now(Reply::text(503, "shutting down\n"));
    };
    let events = Arc::clone(&shared.state.events);
    let asked = path.to_string();
    let first = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        catch_unwind(AssertUnwindSafe(|| events(&asked)))
    })
    .await;
    match first {
        Ok(Ok(Some(first))) => {
            streaming.store(true, Ordering::SeqCst);
            Respond::Stream(events::stream(
                Arc::clone(&shared.state.events),
                path.to_string(),
                first,
                shared.limits.event_interval,
                Arc::clone(&shared.reads),
                stream_slot,
            ))
        }
        Ok(Ok(None)) => Respond::Now(Reply::text(404, "not found\n")),
        _ => {
            tracing::error!(path, "the events closure panicked");
            Respond::Now(Reply::text(500, "status unavailable\n"))
        }
    }
}
