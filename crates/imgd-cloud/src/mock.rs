//! An OpenAI-compatible mock of `/v1/chat/completions` on 127.0.0.1, for tests and
//! `scripts/bench-cloud.sh`.
//!
//! It enforces its own limits over a sliding window (requests and tokens per
//! [`MockConfig::window`]), answers a request beyond them with a 429 and counts it as a
//! **violation**, and injects failures on purpose: 429s with `retry-after-ms` or `retry-after`,
//! 500s, slow answers, and answers that stall past the client's timeout. The answers are a
//! deterministic function of the prompt and the image ([`expected_answer`]); usage is
//! `ceil(chars/4)` of the prompt text + the image tokens by OpenAI's formula for input, and
//! `ceil(chars/4)` of the answer for output. It sends OpenAI's `x-ratelimit-*` headers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use crate::config::{Detail, ImageTokens};
use crate::request::{image_tokens, text_tokens};

/// The mock's limits and failure injection.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// The rate window (60 s for a real per-minute limit; seconds in tests).
    pub window: Duration,
    /// Requests allowed per window.
    pub rpm: u64,
    /// Tokens (input + output) allowed per window.
    pub tpm: u64,
    /// Time to answer a normal request.
    pub latency: Duration,
    /// Share of requests answered with an injected 429.
    pub p_rate_limited: f64,
    /// The retry-after the injected 429s carry (alternately as `retry-after-ms` and as
    /// `retry-after` in whole seconds, rounded up).
    pub retry_after: Duration,
    /// Share of requests answered with an injected 500.
    pub p_server_error: f64,
    /// Share of requests answered late (but within the client's timeout).
    pub p_slow: f64,
    /// How late.
    pub slow: Duration,
    /// Share of requests answered after the client has given up.
    pub p_stall: f64,
    /// How late those are (longer than the client's timeout).
    pub stall: Duration,
    /// Requests whose prompt text contains this get a 400 with an error message.
    pub reject_prompt_containing: Option<String>,
    /// The message of those 400s.
    pub reject_message: String,
    /// Seed of the failure injection.
    pub seed: u64,
    /// Whether responses carry OpenAI's `x-ratelimit-*` headers.
    pub send_rate_headers: bool,
    /// The image-token formula used for the reported usage.
    pub image_tokens: ImageTokens,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            window: Duration::from_secs(60),
            rpm: 500,
            tpm: 200_000,
            latency: Duration::from_millis(5),
            p_rate_limited: 0.0,
            retry_after: Duration::from_millis(200),
            p_server_error: 0.0,
            p_slow: 0.0,
            slow: Duration::from_millis(300),
            p_stall: 0.0,
            stall: Duration::from_secs(5),
            reject_prompt_containing: None,
            reject_message: "Invalid image".into(),
            seed: 1,
            send_rate_headers: true,
            image_tokens: ImageTokens::default(),
        }
    }
}

/// What the mock saw.
#[derive(Debug, Clone, Default)]
pub struct MockReport {
    /// Requests received.
    pub requests: u64,
    /// Answers delivered in time (billed).
    pub answered: u64,
    /// Injected 429s.
    pub injected_rate_limited: u64,
    /// Injected 500s.
    pub injected_server_errors: u64,
    /// Slow answers (in time).
    pub slow: u64,
    /// Answers stalled past the client's timeout (not billed: the client never sees them).
    pub stalled: u64,
    /// 400s for rejected prompts.
    pub rejected: u64,
    /// Requests that arrived beyond the request limit of the window.
    pub request_violations: u64,
    /// Requests that arrived beyond the token limit of the window.
    pub token_violations: u64,
    /// Input tokens billed (answers delivered in time).
    pub billed_input_tokens: u64,
    /// Output tokens billed.
    pub billed_output_tokens: u64,
    /// Distinct (image, prompt) pairs answered: a pair answered again after the client gave
    /// up on a late answer counts once.
    pub distinct_answers: u64,
    /// Input tokens of the distinct answers (the same pair always has the same usage).
    pub distinct_input_tokens: u64,
    /// Output tokens of the distinct answers.
    pub distinct_output_tokens: u64,
    /// The most requests any window held.
    pub peak_requests_in_window: u64,
    /// The most tokens any window held.
    pub peak_tokens_in_window: u64,
    /// Arrival times, from the server's start.
    pub arrivals: Vec<Duration>,
}

impl MockReport {
    /// Requests per window achieved while work was saturating the limit, as a share of the
    /// limit: the arrivals in whole windows from one window after the first arrival up to one
    /// window before the last, divided by `rpm` × those windows. (Whole windows, because a
    /// sliding-window limit allows `rpm` in every window: a span that is not a multiple of
    /// the window could hold more than its pro-rata share.) With fewer than three windows of
    /// arrivals, the whole run over its length.
    pub fn rpm_utilization(&self, window: Duration, rpm: u64) -> f64 {
        let (Some(&first), Some(&last)) = (self.arrivals.first(), self.arrivals.last()) else {
            return 0.0;
        };
        let whole = ((last.saturating_sub(first)).as_secs_f64() / window.as_secs_f64()).floor();
        let (from, windows) = if whole >= 3.0 {
            (first + window, whole - 2.0)
        } else {
            (first, (last - first).as_secs_f64() / window.as_secs_f64())
        };
        if windows <= 0.0 {
            return 0.0;
        }
        let to = from + window.mul_f64(windows);
        let count = self
            .arrivals
            .iter()
            .filter(|t| **t >= from && **t < to)
            .count() as f64;
        count / (windows * rpm as f64)
    }
}

struct State {
    config: MockConfig,
    client_timeout: Duration,
    started: Instant,
    rng: u64,
    window: VecDeque<(Instant, u64)>,
    answered_pairs: std::collections::HashSet<u64>,
    report: MockReport,
}

/// The running mock server; stops when dropped.
pub struct MockServer {
    base_url: String,
    state: Arc<Mutex<State>>,
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

/// The answer the mock gives to `prompt_text` (with or without a schema) for the image in
/// `data_url`.
pub fn expected_answer(prompt_text: &str, has_schema: bool, data_url: &str) -> Value {
    let hash = pair_hash(prompt_text, data_url);
    let word = prompt_text
        .split_whitespace()
        .next()
        .unwrap_or("answer")
        .to_ascii_lowercase();
    if has_schema {
        json!({ "tags": [format!("tag{:x}", hash & 0xffff), "photo"], "hash": format!("{hash:016x}") })
    } else {
        Value::String(format!("{word} lighthouse {hash:016x}"))
    }
}

fn pair_hash(prompt_text: &str, data_url: &str) -> u64 {
    fnv1a(data_url.as_bytes()) ^ fnv1a(prompt_text.as_bytes()).rotate_left(17)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn next_unit(rng: &mut u64) -> f64 {
    *rng = rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *rng;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

struct Parsed {
    prompt_text: String,
    data_url: String,
    has_schema: bool,
    input_tokens: u64,
}

fn parse_request(body: &[u8], formula: ImageTokens) -> Result<Parsed, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let content = value["messages"][0]["content"]
        .as_array()
        .ok_or("no message content")?;
    let mut prompt_text = String::new();
    let mut data_url = String::new();
    let mut detail = Detail::Auto;
    for part in content {
        match part["type"].as_str() {
            Some("text") => prompt_text = part["text"].as_str().unwrap_or("").to_string(),
            Some("image_url") => {
                data_url = part["image_url"]["url"].as_str().unwrap_or("").to_string();
                detail = match part["image_url"]["detail"].as_str() {
                    Some("low") => Detail::Low,
                    Some("high") => Detail::High,
                    _ => Detail::Auto,
                };
            }
            _ => {}
        }
    }
    let b64 = data_url
        .strip_prefix("data:image/jpeg;base64,")
        .ok_or("the image is not a JPEG data URL")?;
    let jpeg = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| e.to_string())?;
    let (w, h) =
        image::ImageReader::with_format(std::io::Cursor::new(jpeg), image::ImageFormat::Jpeg)
            .into_dimensions()
            .map_err(|e| e.to_string())?;
    Ok(Parsed {
        input_tokens: text_tokens(&prompt_text) + image_tokens(w, h, detail, formula),
        has_schema: value.get("response_format").is_some(),
        prompt_text,
        data_url,
    })
}

enum Reply {
    Status(u16, Value, Vec<(String, String)>),
}

impl MockServer {
    /// Starts the mock on an ephemeral port of 127.0.0.1. `client_timeout` is the client's
    /// request timeout: answers later than it are not billed.
    pub fn start(config: MockConfig, client_timeout: Duration) -> std::io::Result<MockServer> {
        let server = tiny_http::Server::http("127.0.0.1:0").map_err(std::io::Error::other)?;
        let port = server
            .server_addr()
            .to_ip()
            .map(|a| a.port())
            .ok_or_else(|| std::io::Error::other("the mock has no IP address"))?;
        let server = Arc::new(server);
        let state = Arc::new(Mutex::new(State {
            rng: config.seed,
            config,
            client_timeout,
            started: Instant::now(),
            window: VecDeque::new(),
            answered_pairs: std::collections::HashSet::new(),
            report: MockReport::default(),
        }));
        let thread = {
            let server = Arc::clone(&server);
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("imgd-cloud-mock".into())
                .spawn(move || {
                    for request in server.incoming_requests() {
                        handle(&state, request);
                    }
                })?
        };
        Ok(MockServer {
            base_url: format!("http://127.0.0.1:{port}/v1"),
            state,
            server,
            thread: Some(thread),
        })
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// What the mock has seen so far.
    pub fn report(&self) -> MockReport {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .report
            .clone()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Accounts one request at its arrival (on the accept thread, so arrival order is the
/// window's order) and answers it on a thread of its own.
fn handle(state: &Mutex<State>, mut request: tiny_http::Request) {
    let arrived = Instant::now();
    let mut body = Vec::new();
    if request.as_reader().read_to_end(&mut body).is_err() {
        return;
    }
    let path_ok = request.url().ends_with("/chat/completions");
    let (reply, delay) = {
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        s.report.requests += 1;
        let offset = arrived - s.started;
        s.report.arrivals.push(offset);
        let parsed = if path_ok {
            parse_request(&body, s.config.image_tokens)
        } else {
            Err("unknown path".into())
        };
        match parsed {
            Err(message) => (
                Reply::Status(400, json!({"error": {"message": message}}), Vec::new()),
                Duration::ZERO,
            ),
            Ok(parsed) => decide(s, arrived, parsed),
        }
    };
    std::thread::spawn(move || {
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        let Reply::Status(status, body, headers) = reply;
        let mut response = tiny_http::Response::from_string(body.to_string())
            .with_status_code(status)
            .with_header(
                tiny_http::Header::from_bytes("content-type", "application/json")
                    .expect("a valid header"),
            );
        for (name, value) in headers {
            if let Ok(header) = tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()) {
                response.add_header(header);
            }
        }
        let _ = request.respond(response);
    });
}

fn decide(s: &mut State, now: Instant, parsed: Parsed) -> (Reply, Duration) {
    let window = s.config.window;
    while let Some(&(at, _)) = s.window.front() {
        if at + window > now {
            break;
        }
        s.window.pop_front();
    }
    let answer = expected_answer(&parsed.prompt_text, parsed.has_schema, &parsed.data_url);
    let content = match &answer {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    let output_tokens = text_tokens(&content);
    let tokens = parsed.input_tokens + output_tokens;

    let requests_in_window = s.window.len() as u64 + 1;
    let tokens_in_window = s.window.iter().map(|(_, t)| t).sum::<u64>();
    let send_headers = s.config.send_rate_headers;
    let rate_headers = |requests: u64, tokens_used: u64, window_q: &VecDeque<(Instant, u64)>| {
        if !send_headers {
            return Vec::new();
        }
        let reset = window_q.front().map_or(Duration::ZERO, |(at, _)| {
            (*at + window).saturating_duration_since(now)
        });
        let reset = format!("{}ms", reset.as_millis());
        vec![
            (
                "x-ratelimit-limit-requests".to_string(),
                s.config.rpm.to_string(),
            ),
            (
                "x-ratelimit-remaining-requests".to_string(),
                s.config.rpm.saturating_sub(requests).to_string(),
            ),
            ("x-ratelimit-reset-requests".to_string(), reset.clone()),
            (
                "x-ratelimit-limit-tokens".to_string(),
                s.config.tpm.to_string(),
            ),
            (
                "x-ratelimit-remaining-tokens".to_string(),
                s.config.tpm.saturating_sub(tokens_used).to_string(),
            ),
            ("x-ratelimit-reset-tokens".to_string(), reset),
        ]
    };

    if requests_in_window > s.config.rpm {
        s.report.request_violations += 1;
        s.window.push_back((now, 0));
        let headers = rate_headers(requests_in_window, tokens_in_window, &s.window);
        let body =
            json!({"error": {"message": "Rate limit reached for requests", "type": "requests"}});
        return (Reply::Status(429, body, headers), Duration::ZERO);
    }
    if tokens_in_window + tokens > s.config.tpm {
        s.report.token_violations += 1;
        s.window.push_back((now, 0));
        let headers = rate_headers(requests_in_window, tokens_in_window, &s.window);
        let body = json!({"error": {"message": "Rate limit reached for tokens", "type": "tokens"}});
        return (Reply::Status(429, body, headers), Duration::ZERO);
    }
    if let Some(needle) = &s.config.reject_prompt_containing
        && parsed.prompt_text.contains(needle.as_str())
    {
        s.report.rejected += 1;
        s.window.push_back((now, 0));
        let body =
            json!({"error": {"message": s.config.reject_message, "type": "invalid_request_error"}});
        return (Reply::Status(400, body, Vec::new()), s.config.latency);
    }
    let roll = next_unit(&mut s.rng);
    let mut threshold = s.config.p_rate_limited;
    if roll < threshold {
        s.report.injected_rate_limited += 1;
        s.window.push_back((now, 0));
        let mut headers = rate_headers(requests_in_window, tokens_in_window, &s.window);
        if s.report.injected_rate_limited.is_multiple_of(2) {
            headers.push((
                "retry-after-ms".into(),
                s.config.retry_after.as_millis().to_string(),
            ));
        } else {
            headers.push((
                "retry-after".into(),
                s.config
                    .retry_after
                    .as_secs_f64()
                    .ceil()
                    .max(1.0)
                    .to_string(),
            ));
        }
        let body =
            json!({"error": {"message": "Too many requests (injected)", "type": "requests"}});
        return (Reply::Status(429, body, headers), Duration::ZERO);
    }
    threshold += s.config.p_server_error;
    if roll < threshold {
        s.report.injected_server_errors += 1;
        s.window.push_back((now, 0));
        let body = json!({"error": {"message": "The server had an error (injected)", "type": "server_error"}});
        return (Reply::Status(500, body, Vec::new()), s.config.latency);
    }
    // A normal answer: counted in the window at arrival.
    s.window.push_back((now, tokens));
    let tokens_used = tokens_in_window + tokens;
    s.report.peak_requests_in_window = s.report.peak_requests_in_window.max(requests_in_window);
    s.report.peak_tokens_in_window = s.report.peak_tokens_in_window.max(tokens_used);
    threshold += s.config.p_slow;
    let delay = if roll < threshold {
        s.report.slow += 1;
        s.config.slow
    } else if roll < threshold + s.config.p_stall {
        s.report.stalled += 1;
        s.config.stall
    } else {
        s.config.latency
    };
    if s.answered_pairs
        .insert(pair_hash(&parsed.prompt_text, &parsed.data_url))
    {
        s.report.distinct_answers += 1;
        s.report.distinct_input_tokens += parsed.input_tokens;
        s.report.distinct_output_tokens += output_tokens;
    }
    if delay < s.client_timeout {
        s.report.answered += 1;
        s.report.billed_input_tokens += parsed.input_tokens;
        s.report.billed_output_tokens += output_tokens;
    }
    let headers = rate_headers(requests_in_window, tokens_used, &s.window);
    let body = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": parsed.input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": tokens,
        },
    });
    (Reply::Status(200, body, headers), delay)
}
