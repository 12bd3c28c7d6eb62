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
fn application_paths_answer_the_closure_or_404() {
    let state = HttpState::new(Arc::new(Metrics::new(&[]))).with_app(|request| {
        match (request.method.as_str(), request.path.as_str()) {
            ("GET" | "HEAD", "/api/batches") => {
                AppReply::Json(200, serde_json::json!([{ "id": 1 }]))
            }
            (_, "/api/batches") => AppReply::MethodNotAllowed("GET, HEAD"),
            ("GET", "/page") => AppReply::Html(
                200,
                format!("<p>{}</p>", request.param("q").unwrap_or_default()),
            ),
            ("GET", "/panic") => panic!("api source gone"),
            _ => AppReply::NotFound,
        }
    });
    let server = serve("127.0.0.1:0", state).unwrap();
    let addr = server.local_addr();
    let (status, head, body) = fetch(addr, "GET", "/api/batches");
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("application/json"), "{head}");
    assert_eq!(body.trim(), r#"[{"id":1}]"#);
    let (status, head, body) = fetch(addr, "GET", "/page?q=a%20b");
    assert_eq!((status, body.as_str()), (200, "<p>a b</p>"));
    assert!(head.to_lowercase().contains("text/html"), "{head}");
    assert_eq!(fetch(addr, "GET", "/api/other").0, 404);
    assert_eq!(fetch(addr, "PUT", "/api/batches").0, 405);
    assert_eq!(fetch(addr, "GET", "/panic").0, 500);
    assert_eq!(fetch(addr, "GET", "/api/batches").0, 200, "still serving");
}

/// Sends `request` with `Host` and `Connection: close` added; returns status and body.
fn send(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "{head}\r\nHost: localhost:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        addr.port(),
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

fn echo_state(token: Option<&str>, reads_need_token: bool) -> HttpState {
    HttpState::new(Arc::new(Metrics::new(&[])))
        .with_app(|request| {
            AppReply::Text(
                200,
                format!("{} {} bytes\n", request.method, request.body.len()),
            )
        })
        .with_access(Access {
            token: token.map(str::to_string),
            reads_need_token,
        })
}

#[test]
fn a_post_needs_the_token_and_its_body_is_read_up_to_the_limit() {
    let server = serve("127.0.0.1:0", echo_state(Some("s3cret"), false)).unwrap();
    let addr = server.local_addr();
    let body = br#"{"paths":["/photos"]}"#;
    assert_eq!(send(addr, "POST /api/enqueue HTTP/1.1", body).0, 401);
    let authorized = "POST /api/enqueue HTTP/1.1\r\nAuthorization: Bearer s3cret";
    assert_eq!(
        send(addr, authorized, body),
        (200, format!("POST {} bytes\n", body.len()))
    );
    let huge = vec![b'x'; 65 * 1024];
    assert_eq!(send(addr, authorized, &huge).0, 413);
    // A read is open on loopback.
    assert_eq!(send(addr, "GET /api/batches HTTP/1.1", b"").0, 200);
    // Without a token no change is accepted at all.
    let open = serve("127.0.0.1:0", echo_state(None, false)).unwrap();
    let (status, body) = send(open.local_addr(), authorized, body);
    assert_eq!(status, 403);
    assert!(body.contains("[http] token"), "{body}");
}

#[test]
fn beyond_loopback_every_route_but_metrics_and_healthz_needs_the_token() {
    let server = serve("0.0.0.0:0", echo_state(Some("s3cret"), true)).unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], server.local_addr().port()).into();
    assert_eq!(fetch(addr, "GET", "/healthz").0, 200);
    assert_eq!(fetch(addr, "GET", "/metrics").0, 200);
    let (status, head, _) = fetch(addr, "GET", "/");
    assert_eq!(status, 401);
    assert!(
        head.to_lowercase().contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(fetch(addr, "GET", "/status").0, 401);
    assert_eq!(fetch(addr, "GET", "/api/events").0, 401);
    assert_eq!(fetch(addr, "GET", "/?token=wrong").0, 401);
    let (status, head, _) = fetch(addr, "GET", "/?token=s3cret");
    assert_eq!(status, 200);
    assert!(
        head.contains("imgd_token=s3cret; Path=/; HttpOnly; SameSite=Strict"),
        "{head}"
    );
    let (status, _) = send(addr, "GET / HTTP/1.1\r\nCookie: imgd_token=s3cret", b"");
    assert_eq!(status, 200);
}

#[test]
fn a_loopback_server_refuses_a_foreign_host_name() {
    let server = serve("127.0.0.1:0", echo_state(Some("s3cret"), false)).unwrap();
    let addr = server.local_addr();
    let answer = raw(
        addr,
        b"GET /api/batches HTTP/1.1\r\nHost: rebound.example\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(fetch(addr, "GET", "/api/batches").0, 200);
}

#[test]
fn an_event_stream_sends_each_changed_snapshot_then_ends() {
    let asked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&asked);
    let state = HttpState::new(Arc::new(Metrics::new(&[]))).with_events(move |path| {
        if path != "/api/count/events" {
            return None;
        }
        // Each snapshot is asked twice before it changes: the repeat sends nothing.
        let n = counter.fetch_add(1, Ordering::SeqCst) / 2;
        Some(EventUpdate {
            data: serde_json::json!({ "n": n }),
            last: n == 3,
        })
    });
    let limits = HttpLimits {
        event_interval: Duration::from_millis(20),
        ..HttpLimits::default()
    };
    let server = serve_with_limits("127.0.0.1:0", state, limits).unwrap();
    let addr = server.local_addr();
    assert_eq!(fetch(addr, "GET", "/api/other/events").0, 404);
    let (status, head, body) = fetch(addr, "GET", "/api/count/events");
    assert_eq!(status, 200);
    assert!(head.to_lowercase().contains("text/event-stream"), "{head}");
    let data: Vec<&str> = body.lines().filter(|l| l.starts_with("data: ")).collect();
    assert_eq!(
        data,
        [
            "data: {\"n\":0}",
            "data: {\"n\":1}",
            "data: {\"n\":2}",
            "data: {\"n\":3}",
            "data: {}"
        ],
        "{body}"
    );
    assert!(body.contains("\nretry: 2000\n"), "{body}");
    assert!(body.contains("event: end\n"), "{body}");
}

#[test]
fn event_streams_outlive_the_request_time_limit_and_are_bounded_in_number() {
    let state = HttpState::new(Arc::new(Metrics::new(&[]))).with_events(|_| {
        Some(EventUpdate {
            data: serde_json::json!({ "same": true }),
            last: false,
        })
    });
    let limits = HttpLimits {
        connection_timeout: Duration::from_millis(300),
        event_interval: Duration::from_millis(20),
        max_event_streams: 2,
        ..HttpLimits::default()
    };
    let server = serve_with_limits("127.0.0.1:0", state, limits).unwrap();
    let addr = server.local_addr();
    let open = |_| {
        let mut stream = TcpStream::connect(addr).unwrap();
        write!(
            stream,
            "GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        .unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut first = [0u8; 12];
        stream.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"HTTP/1.1 200");
        stream
    };
    let streams: Vec<TcpStream> = (0..2).map(open).collect();
    assert_eq!(fetch(addr, "GET", "/api/events").0, 503, "a third stream");
    // Past the request time limit the streams are still open.
    std::thread::sleep(Duration::from_millis(600));
    for mut stream in streams {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buffer = [0u8; 256];
        match stream.read(&mut buffer) {
            Ok(0) => panic!("the stream was closed"),
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{e}"
            ),
        }
    }
    // Closed streams give their slots back.
    assert!(
        (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let mut stream = TcpStream::connect(addr).unwrap();
            write!(
                stream,
                "HEAD /api/events HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer.starts_with("HTTP/1.1 200")
        }),
        "stream slots were not released"
    );
}

#[test]
fn a_panicking_status_closure_answers_500_and_the_server_goes_on() {
    let state =
        HttpState::new(Arc::new(Metrics::new(&[]))).with_status(|| panic!("status source gone"));
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
