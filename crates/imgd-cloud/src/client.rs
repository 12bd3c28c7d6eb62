//! One chat-completions call with its retries.
//!
//! - **429**: waits `retry-after-ms`, else `retry-after` (seconds), else an exponential backoff
//!   with full jitter, and tries again;
//! - **5xx, 408, timeouts, broken connections, unreadable 2xx**: backoff and try again;
//! - **other 4xx**: fails at once with the provider's `error.message` (the API key redacted);
//! - at most `max_attempts` attempts; every attempt passes the shared [`Limiter`] first.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use crate::config::{CloudConfig, Price, PromptConfig};
use crate::limiter::{AcquireError, Limiter, RateHeaders};
use crate::secret::Secret;
use crate::stats::{CloudStats, add};

/// The longest a `retry-after` is honoured; beyond it the call waits this long.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// What an answered call returns.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// The answer: text, or the parsed JSON for a prompt with a schema.
    pub value: serde_json::Value,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub attempts: u32,
    pub cost_usd: Option<f64>,
}

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    #[error("the provider refused the request (HTTP {status}): {message}")]
    Provider { status: u16, message: String },
    #[error("no answer after {attempts} attempts; the last error: {last}")]
    Exhausted { attempts: u32, last: String },
    #[error("{0}")]
    TooLarge(String),
    #[error("not sent: the daemon was stopping")]
    Cancelled,
}

/// What every call shares.
pub(crate) struct Caller {
    pub http: reqwest::Client,
    pub endpoint: String,
    pub api_key: Option<Secret>,
    pub config: Arc<CloudConfig>,
    pub price: Option<Price>,
    pub limiter: Arc<Limiter>,
    pub stats: Arc<CloudStats>,
}

#[derive(Deserialize)]
struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ChoiceMessage,
}

#[derive(Deserialize)]
struct ChoiceMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

/// A small SplitMix64 for backoff jitter: no need for cryptographic randomness.
fn jitter_unit() -> f64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut seed = STATE.load(Ordering::Relaxed);
    if seed == 0 {
        seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64)
            | 1;
    }
    let next = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    STATE.store(next, Ordering::Relaxed);
    let mut z = next;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base × 2^(attempt-1))]`.
pub(crate) fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(20))
        .min(max);
    ceiling.mul_f64(jitter_unit())
}

/// `retry-after-ms`, else `retry-after` in seconds (HTTP dates are not used by the APIs this
/// talks to and fall back to the backoff).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let ms = get("retry-after-ms")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| Duration::from_secs_f64(v / 1000.0));
    let seconds = || {
        get("retry-after")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite() && *v >= 0.0)
            .map(Duration::from_secs_f64)
    };
    ms.or_else(seconds).map(|d| d.min(MAX_RETRY_AFTER))
}

/// The provider's error message from an error body (`{"error": {"message": …}}`), else the
/// body's start.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorDetail,
    }
    #[derive(Deserialize)]
    struct ErrorDetail {
        message: String,
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(parsed) => parsed.error.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            if text.is_empty() {
                "(no message)".to_string()
            } else {
                text.chars().take(300).collect()
            }
        }
    }
}

enum Attempt {
    Answered(Answer),
    Retry {
        error: String,
        wait: Option<Duration>,
    },
    Fail(CallError),
}

impl Caller {
    fn redact(&self, text: &str) -> String {
        match &self.api_key {
            Some(key) => key.redact(text),
            None => text.to_string(),
        }
    }

    /// Sends `body` for `prompt` until it is answered, fails for good, or is cancelled.
    pub async fn call(
        &self,
        prompt: &PromptConfig,
        body: &[u8],
        estimate: u64,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Answer, CallError> {
        let config = &self.config;
        let base = Duration::from_millis(config.backoff_base_ms);
        let max = Duration::from_millis(config.backoff_max_ms.max(config.backoff_base_ms));
        let mut last = String::new();
        for attempt in 1..=config.max_attempts {
            if *cancel.borrow() {
                return Err(CallError::Cancelled);
            }
            let wait = match self
                .attempt(prompt, body, estimate, attempt, cancel)
                .await?
            {
                Attempt::Answered(answer) => return Ok(answer),
                Attempt::Fail(error) => return Err(error),
                Attempt::Retry { error, wait } => {
                    last = error;
                    wait.unwrap_or_else(|| backoff(attempt, base, max))
                }
            };
            if attempt == config.max_attempts {
                break;
            }
            tracing::debug!(
                prompt = prompt.name,
                attempt,
                "cloud call failed ({last}); retrying in {wait:?}"
            );
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.wait_for(|stop| *stop) => return Err(CallError::Cancelled),
            }
        }
        Err(CallError::Exhausted {
            attempts: config.max_attempts,
            last,
        })
    }

    async fn attempt(
        &self,
        prompt: &PromptConfig,
        body: &[u8],
        estimate: u64,
        attempt: u32,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Attempt, CallError> {
        let ticket = match self.limiter.acquire(estimate, cancel).await {
            Ok(ticket) => ticket,
            Err(AcquireError::Cancelled) => return Err(CallError::Cancelled),
            Err(error @ AcquireError::TooLarge { .. }) => {
                return Err(CallError::TooLarge(error.to_string()));
            }
        };
        self.stats.add_wait(ticket.waited());
        add(&self.stats.attempts, 1);
        let mut request = self
            .http
            .post(&self.endpoint)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        // The request runs to its end (bounded by the client's timeout) even when the worker
        // is cancelled meanwhile: a call in flight is waited for, not abandoned.
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Ok(self.transport_error(&error)),
        };
        let status = response.status();
        let headers = response.headers().clone();
        let rate = RateHeaders::parse(|name| headers.get(name).and_then(|v| v.to_str().ok()));
        self.limiter.observe(&ticket, &rate);
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return Ok(self.transport_error(&error)),
        };
        if status.is_success() {
            return Ok(match parse_completion(&bytes, prompt) {
                Ok((value, usage)) => {
                    let (input_tokens, output_tokens) = match usage {
                        Some(usage) => (usage.prompt_tokens, usage.completion_tokens),
                        // No usage reported: keep the estimate, count nothing we cannot know.
                        None => (estimate - u64::from(self.config.max_output_tokens), 0),
                    };
                    self.limiter.settle(&ticket, input_tokens + output_tokens);
                    let cost_usd = self
                        .price
                        .map(|price| price.cost(input_tokens, output_tokens));
                    add(&self.stats.calls, 1);
                    add(&self.stats.input_tokens, input_tokens);
                    add(&self.stats.output_tokens, output_tokens);
                    if let Some(cost) = cost_usd {
                        self.stats.add_cost(cost);
                    }
                    Attempt::Answered(Answer {
                        value,
                        input_tokens,
                        output_tokens,
                        attempts: attempt,
                        cost_usd,
                    })
                }
                Err(error) => {
                    add(&self.stats.invalid_responses, 1);
                    Attempt::Retry {
                        error: format!("unreadable response: {error}"),
                        wait: None,
                    }
                }
            });
        }
        let message = self.redact(&error_message(&bytes));
        let code = status.as_u16();
        Ok(if code == 429 {
            add(&self.stats.rate_limited, 1);
            Attempt::Retry {
                error: format!("HTTP 429: {message}"),
                wait: retry_after(&headers),
            }
        } else if status.is_server_error() || code == 408 {
            add(&self.stats.server_errors, 1);
            Attempt::Retry {
                error: format!("HTTP {code}: {message}"),
                wait: retry_after(&headers),
            }
        } else {
            add(&self.stats.client_errors, 1);
            Attempt::Fail(CallError::Provider {
                status: code,
                message,
            })
        })
    }

    fn transport_error(&self, error: &reqwest::Error) -> Attempt {
        let text = if error.is_timeout() {
            add(&self.stats.timeouts, 1);
            format!("timed out after {:.1} s", self.config.timeout_s)
        } else {
            add(&self.stats.transport_errors, 1);
            // Without the URL: it carries nothing secret, but keeps messages short.
            let error = error.without_url_ref();
            self.redact(&format!("HTTP request failed: {error}"))
        };
        Attempt::Retry {
            error: text,
            wait: None,
        }
    }
}

trait WithoutUrl {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrl for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut text = self.to_string();
        if let Some(url) = self.url() {
            text = text.replace(&format!(" ({url})"), "");
        }
        let mut source = std::error::Error::source(self);
        while let Some(inner) = source {
            text.push_str(": ");
            text.push_str(&inner.to_string());
            source = inner.source();
        }
        text
    }
}

fn parse_completion(
    bytes: &[u8],
    prompt: &PromptConfig,
) -> Result<(serde_json::Value, Option<Usage>), String> {
    let completion: Completion = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let Some(choice) = completion.choices.into_iter().next() else {
        return Err("no choices in the response".into());
    };
    let text = match (choice.message.content, choice.message.refusal) {
        (Some(content), _) => content,
        (None, Some(refusal)) => format!("(refused) {refusal}"),
        (None, None) => return Err("the response has no message content".into()),
    };
    let value = if prompt.schema.is_some() {
        // A schema answer is stored as JSON; text that does not parse (truncated output) is
        // kept as text rather than lost.
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    } else {
        serde_json::Value::String(text)
    };
    Ok((value, completion.usage))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_jittered_and_bounded() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        for attempt in 1..12 {
            let ceiling = (base * 2u32.pow(attempt - 1)).min(max);
            for _ in 0..50 {
                assert!(backoff(attempt, base, max) <= ceiling);
            }
        }
        let samples: Vec<Duration> = (0..20).map(|_| backoff(5, base, max)).collect();
        assert!(samples.windows(2).any(|w| w[0] != w[1]), "no jitter");
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(250)));
        headers.insert("retry-after-ms", "nonsense".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
    }

    #[test]
    fn provider_errors_and_completions_parse() {
        assert_eq!(
            error_message(
                br#"{"error":{"message":"Invalid image","type":"invalid_request_error"}}"#
            ),
            "Invalid image"
        );
        assert_eq!(error_message(b"  Bad Gateway "), "Bad Gateway");
        let plain = PromptConfig {
            name: "d".into(),
            text: "t".into(),
            schema: None,
            strict: true,
        };
        let mut schema = plain.clone();
        schema.schema = Some(serde_json::json!({"type": "object"}));
        let body = br#"{"choices":[{"message":{"content":"{\"tags\":[\"a\"]}"}}],"usage":{"prompt_tokens":10,"completion_tokens":5}}"#;
        let (value, usage) = parse_completion(body, &schema).unwrap();
        assert_eq!(value, serde_json::json!({"tags": ["a"]}));
        assert_eq!(usage.unwrap().prompt_tokens, 10);
        let (value, _) = parse_completion(body, &plain).unwrap();
        assert_eq!(value, serde_json::json!("{\"tags\":[\"a\"]}"));
        assert!(parse_completion(br#"{"choices":[]}"#, &plain).is_err());
    }
}
