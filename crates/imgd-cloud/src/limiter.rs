//! The shared limiter: one for every call in flight, whatever image or prompt it serves.
//!
//! Three limits hold at once:
//!
//! - **requests per window** and **tokens per window**: two budgets that refill as admitted
//!   calls age out of the provider's rate window (60 s for per-minute limits);
//! - **concurrency**: a semaphore caps the calls in flight.
//!
//! **Why a sliding window and not a classic refilling token bucket.** A bucket that holds a
//! minute's worth of requests and refills continuously admits up to twice its limit within one
//! 60-second window (a full bucket at the start, plus a minute of refill), which a provider that
//! counts a sliding window answers with 429s. Each budget here is therefore a token bucket whose
//! tokens return exactly one window after they were spent: every admitted call is recorded with
//! its time and amount, and a call is admitted only while the amounts recorded within the last
//! window plus its own stay within the limit. So any window of the provider's clock holds at
//! most the limit, and in steady state the whole limit is used. The window is widened by a
//! small margin (`rate_margin_s`) for the time between admitting a call and the provider
//! receiving it.
//!
//! **Pacing.** Requests start at least `window / requests-limit` apart (0.12 s at 500 RPM), so
//! the budget is spent evenly instead of in one burst at the start of each window: a provider
//! that enforces its per-minute limit over shorter periods (OpenAI says it may enforce 60 000
//! RPM as 1 000 per second) sees the same steady rate, and the limit is still reached.
//!
//! **Estimates and corrections.** A call is admitted with its estimated tokens (see
//! [`crate::request`]); when the response reports its `usage`, the record is corrected to the
//! real amount (a refund when the estimate was higher, a charge when lower). A failed attempt
//! keeps its estimate: a provider may have counted it.
//!
//! **Provider headers.** `x-ratelimit-limit-*` lower a limit that is configured too high;
//! `x-ratelimit-remaining-*` below what this limiter believed was left when the call was
//! admitted (someone else is using the same key) add a placeholder record of the difference,
//! which expires after `x-ratelimit-reset-*` (at most one window).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

/// The limits of a [`Limiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterConfig {
    /// Requests per window.
    pub requests: u64,
    /// Tokens per window.
    pub tokens: u64,
    /// Calls in flight at once.
    pub concurrency: usize,
    /// The provider's window (60 s for per-minute limits).
    pub window: Duration,
    /// Added to the window when deciding that a record has expired.
    pub margin: Duration,
}

/// Why [`Limiter::acquire`] gave no ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcquireError {
    /// One call needs more tokens than the whole per-window limit.
    #[error("a call needs about {needed} tokens, more than the limit of {limit} per window")]
    TooLarge {
        /// The call's estimate.
        needed: u64,
        /// The tokens-per-window limit.
        limit: u64,
    },
    /// The worker is shutting down.
    #[error("cancelled: the daemon is stopping")]
    Cancelled,
}

/// The rate-limit headers of one response (OpenAI's names).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// `x-ratelimit-limit-requests`.
    pub limit_requests: Option<u64>,
    /// `x-ratelimit-remaining-requests`.
    pub remaining_requests: Option<u64>,
    /// `x-ratelimit-reset-requests`.
    pub reset_requests: Option<Duration>,
    /// `x-ratelimit-limit-tokens`.
    pub limit_tokens: Option<u64>,
    /// `x-ratelimit-remaining-tokens`.
    pub remaining_tokens: Option<u64>,
    /// `x-ratelimit-reset-tokens`.
    pub reset_tokens: Option<Duration>,
}

impl RateHeaders {
    /// Reads the headers through `get` (name → value).
    pub fn parse<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Self {
        let number = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        let duration = |name: &str| get(name).and_then(parse_duration);
        RateHeaders {
            limit_requests: number("x-ratelimit-limit-requests"),
            remaining_requests: number("x-ratelimit-remaining-requests"),
            reset_requests: duration("x-ratelimit-reset-requests"),
            limit_tokens: number("x-ratelimit-limit-tokens"),
            remaining_tokens: number("x-ratelimit-remaining-tokens"),
            reset_tokens: duration("x-ratelimit-reset-tokens"),
        }
    }
}

/// Parses the durations of OpenAI's reset headers (`1s`, `6m0s`, `20ms`, `1.5s`, `1h2m3s`) and
/// plain seconds (`12`, `0.5`).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds));
    }
    let mut total = 0.0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let value: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "us" | "µs" => 0.000_001,
            "ns" => 0.000_000_001,
            _ => return None,
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// One budget: a limit per window and the records of what was spent within it.
#[derive(Debug)]
struct Ledger {
    limit: u64,
    used: u64,
    /// (sequence number, admitted at, amount), in admission order.
    records: VecDeque<(u64, Instant, u64)>,
    /// (expires at, amount): usage the provider reported that this limiter did not see.
    placeholders: Vec<(Instant, u64)>,
}

impl Ledger {
    fn new(limit: u64) -> Self {
        Ledger {
            limit,
            used: 0,
            records: VecDeque::new(),
            placeholders: Vec::new(),
        }
    }

    fn expire(&mut self, now: Instant, span: Duration) {
        while let Some(&(_, at, amount)) = self.records.front() {
            if at + span > now {
                break;
            }
            self.used -= amount;
            self.records.pop_front();
        }
        self.placeholders.retain(|(expires, _)| *expires > now);
    }

    fn used(&self) -> u64 {
        self.placeholders
            .iter()
            .fold(self.used, |sum, (_, a)| sum.saturating_add(*a))
    }

    fn available(&self) -> u64 {
        self.limit.saturating_sub(self.used())
    }

    /// The earliest time `need` fits, given what expires when.
    fn fits_at(&self, need: u64, now: Instant, span: Duration) -> Instant {
        let used = self.used();
        if used.saturating_add(need) <= self.limit {
            return now;
        }
        let mut excess = used.saturating_add(need) - self.limit;
        let mut expiries: Vec<(Instant, u64)> = self
            .records
            .iter()
            .map(|&(_, at, amount)| (at + span, amount))
            .chain(self.placeholders.iter().copied())
            .collect();
        expiries.sort_by_key(|(at, _)| *at);
        for (at, amount) in expiries {
            if amount >= excess {
                return at;
            }
            excess -= amount;
        }
        // Only a limit lowered below `need` gets here; the caller checks that case.
        now + span
    }

    fn record(&mut self, seq: u64, now: Instant, amount: u64) {
        self.records.push_back((seq, now, amount));
        self.used = self.used.saturating_add(amount);
    }

    /// Sets the amount of record `seq` (if it is still within the window); returns whether
    /// the usage went down.
    fn correct(&mut self, seq: u64, amount: u64) -> bool {
        let Ok(i) = self.records.binary_search_by_key(&seq, |r| r.0) else {
            return false;
        };
        let old = self.records[i].2;
        self.records[i].2 = amount;
        self.used = (self.used - old).saturating_add(amount);
        amount < old
    }
}

#[derive(Debug)]
struct State {
    requests: Ledger,
    tokens: Ledger,
    next_seq: u64,
    /// Pacing: the earliest time the next request may start.
    next_start: Instant,
}

/// An admitted call: hold it while the call is in flight (it keeps a concurrency slot), then
/// hand it to [`Limiter::settle`] and [`Limiter::observe`].
#[derive(Debug)]
pub struct Ticket {
    seq: u64,
    admitted_at: Instant,
    estimate: u64,
    requests_left: u64,
    tokens_left: u64,
    waited: Duration,
    _slot: OwnedSemaphorePermit,
}

impl Ticket {
    /// How long the call waited for its slot and budget.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The tokens the call was admitted with.
    pub fn estimate(&self) -> u64 {
        self.estimate
    }
}

/// The limiter shared by every call (see the [module docs](self)).
#[derive(Debug)]
pub struct Limiter {
    state: Mutex<State>,
    changed: Notify,
    slots: Arc<Semaphore>,
    span: Duration,
    window: Duration,
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(config: LimiterConfig) -> Self {
        Limiter {
            state: Mutex::new(State {
                requests: Ledger::new(config.requests.max(1)),
                tokens: Ledger::new(config.tokens.max(1)),
                next_seq: 0,
                next_start: Instant::now(),
            }),
            changed: Notify::new(),
            slots: Arc::new(Semaphore::new(config.concurrency.max(1))),
            span: config.window + config.margin,
            window: config.window,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current (requests, tokens) limits: the configured ones, lowered by what the
    /// provider's headers said.
    pub fn limits(&self) -> (u64, u64) {
        let state = self.lock();
        (state.requests.limit, state.tokens.limit)
    }

    /// What is left in the current window: (requests, tokens).
    pub fn available(&self) -> (u64, u64) {
        let mut state = self.lock();
        let now = Instant::now();
        state.requests.expire(now, self.span);
        state.tokens.expire(now, self.span);
        (state.requests.available(), state.tokens.available())
    }

    /// Waits for a concurrency slot and for one request and `tokens` tokens of budget, and
    /// records them. Returns early when `cancel` turns true.
    pub async fn acquire(
        &self,
        tokens: u64,
        cancel: &mut watch::Receiver<bool>,
    ) -> Result<Ticket, AcquireError> {
        let started = Instant::now();
        let limit = self.lock().tokens.limit;
        if tokens > limit {
            return Err(AcquireError::TooLarge {
                needed: tokens,
                limit,
            });
        }
        let slot = tokio::select! {
            slot = Arc::clone(&self.slots).acquire_owned() => {
                slot.expect("the limiter's semaphore is never closed")
            }
            _ = cancel.wait_for(|stop| *stop) => return Err(AcquireError::Cancelled),
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wake = {
                let mut state = self.lock();
                let now = Instant::now();
                state.requests.expire(now, self.span);
                state.tokens.expire(now, self.span);
                if tokens > state.tokens.limit {
                    return Err(AcquireError::TooLarge {
                        needed: tokens,
                        limit: state.tokens.limit,
                    });
                }
                let at = state
                    .requests
                    .fits_at(1, now, self.span)
                    .max(state.tokens.fits_at(tokens, now, self.span))
                    .max(state.next_start);
                if at <= now {
                    let seq = state.next_seq;
                    state.next_seq += 1;
                    state.next_start =
                        now + self.window.div_f64(state.requests.limit.max(1) as f64);
                    state.requests.record(seq, now, 1);
                    state.tokens.record(seq, now, tokens);
                    return Ok(Ticket {
                        seq,
                        admitted_at: now,
                        estimate: tokens,
                        requests_left: state.requests.available(),
                        tokens_left: state.tokens.available(),
                        waited: now - started,
                        _slot: slot,
                    });
                }
                at
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = &mut changed => {}
                _ = cancel.wait_for(|stop| *stop) => return Err(AcquireError::Cancelled),
            }
        }
    }

    /// Replaces the ticket's token estimate with what the provider reported.
    pub fn settle(&self, ticket: &Ticket, actual_tokens: u64) {
        let refunded = self.lock().tokens.correct(ticket.seq, actual_tokens);
        if refunded {
            self.changed.notify_waiters();
        }
    }

    /// Tightens the budgets with the provider's rate-limit headers for this ticket's call.
    pub fn observe(&self, ticket: &Ticket, headers: &RateHeaders) {
        let now = Instant::now();
        let mut state = self.lock();
        let window = self.window;
        let tighten = |ledger: &mut Ledger,
                       limit: Option<u64>,
                       remaining: Option<u64>,
                       reset: Option<Duration>,
                       mut believed_left: u64,
                       what: &str| {
            if let Some(limit) = limit.filter(|&l| l > 0 && l < ledger.limit) {
                tracing::info!(
                    "the provider's {what} limit is {limit} per window, below the configured \
                     {}; using {limit}",
                    ledger.limit
                );
                // What was left under the old limit is that much less under the new one;
                // otherwise the whole difference would be held back as unexplained use.
                believed_left = believed_left.saturating_sub(ledger.limit - limit);
                ledger.limit = limit;
            }
            if let Some(remaining) = remaining
                && remaining < believed_left
            {
                let expires = ticket.admitted_at + reset.unwrap_or(window).min(window);
                if expires > now {
                    tracing::debug!(
                        "the provider reports {remaining} {what} left where {believed_left} \
                         were expected; holding back the difference"
                    );
                    ledger
                        .placeholders
                        .push((expires, believed_left - remaining));
                }
            }
        };
        tighten(
            &mut state.requests,
            headers.limit_requests,
            headers.remaining_requests,
            headers.reset_requests,
            ticket.requests_left,
            "requests",
        );
        tighten(
            &mut state.tokens,
            headers.limit_tokens,
            headers.remaining_tokens,
            headers.reset_tokens,
            ticket.tokens_left,
            "tokens",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(requests: u64, tokens: u64, window_ms: u64) -> LimiterConfig {
        LimiterConfig {
            requests,
            tokens,
            concurrency: 64,
            window: Duration::from_millis(window_ms),
            margin: Duration::ZERO,
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn reset_durations_parse() {
        let d = |s| parse_duration(s);
        assert_eq!(d("1s"), Some(Duration::from_secs(1)));
        assert_eq!(d("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(d("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(d("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(d("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(d("7"), Some(Duration::from_secs(7)));
        assert_eq!(d("soon"), None);
        assert_eq!(d(""), None);
        let headers = RateHeaders::parse(|name| match name {
            "x-ratelimit-remaining-requests" => Some("12"),
            "x-ratelimit-reset-tokens" => Some("250ms"),
            _ => None,
        });
        assert_eq!(headers.remaining_requests, Some(12));
        assert_eq!(headers.reset_tokens, Some(Duration::from_millis(250)));
        assert_eq!(headers.limit_tokens, None);
    }

    #[test]
    fn no_window_ever_holds_more_than_the_limits() {
        runtime().block_on(async {
            let limiter = Limiter::new(config(5, 1000, 200));
            let (_stop, mut cancel) = watch::channel(false);
            let mut admitted = Vec::new();
            for _ in 0..12 {
                let ticket = limiter.acquire(100, &mut cancel).await.unwrap();
                admitted.push(ticket.admitted_at);
            }
            for (i, at) in admitted.iter().enumerate() {
                let in_window = admitted[i..]
                    .iter()
                    .filter(|later| **later - *at < Duration::from_millis(200))
                    .count();
                assert!(in_window <= 5, "{in_window} requests within one window");
            }
            // 12 requests at 5 per window: the last batch starts two windows in.
            assert!(admitted[11] - admitted[0] >= Duration::from_millis(400));
        });
    }

    #[test]
    fn the_token_budget_binds_and_refunds_free_it_at_once() {
        runtime().block_on(async {
            let limiter = Limiter::new(config(100, 1000, 10_000));
            let (_stop, mut cancel) = watch::channel(false);
            let first = limiter.acquire(600, &mut cancel).await.unwrap();
            assert_eq!(limiter.available(), (99, 400));
            // The second call does not fit until the first is settled at its real usage.
            let mut cancel2 = cancel.clone();
            let second = limiter.acquire(600, &mut cancel2);
            tokio::pin!(second);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), &mut second)
                    .await
                    .is_err()
            );
            limiter.settle(&first, 250);
            let second = tokio::time::timeout(Duration::from_millis(500), second)
                .await
                .expect("the refund admits the waiting call")
                .unwrap();
            assert_eq!(limiter.available().1, 1000 - 250 - 600);
            // A charge above the estimate counts too.
            limiter.settle(&second, 700);
            assert_eq!(limiter.available().1, 1000 - 250 - 700);
            let too_big = limiter.acquire(5000, &mut cancel).await.unwrap_err();
            assert!(matches!(too_big, AcquireError::TooLarge { .. }));
        });
    }

    #[test]
    fn provider_headers_tighten_but_never_loosen() {
        runtime().block_on(async {
            let limiter = Limiter::new(config(100, 10_000, 10_000));
            let (_stop, mut cancel) = watch::channel(false);
            let ticket = limiter.acquire(100, &mut cancel).await.unwrap();
            // The provider agrees or has more left: nothing changes.
            limiter.observe(
                &ticket,
                &RateHeaders {
                    remaining_requests: Some(99),
                    remaining_tokens: Some(9_950),
                    limit_requests: Some(500),
                    ..RateHeaders::default()
                },
            );
            assert_eq!(limiter.available(), (99, 9_900));
            assert_eq!(limiter.limits(), (100, 10_000));
            // The real limit is 80 and 69 are left: someone else spent 10 requests (and 4000
            // tokens) on the same key.
            limiter.observe(
                &ticket,
                &RateHeaders {
                    limit_requests: Some(80),
                    remaining_requests: Some(69),
                    remaining_tokens: Some(5_900),
                    reset_requests: Some(Duration::from_millis(100)),
                    ..RateHeaders::default()
                },
            );
            assert_eq!(limiter.limits(), (80, 10_000));
            // Under the limit of 80, 79 were believed left: 80 - 1 used - placeholder
            // (79 - 69 = 10) = 69, what the provider says; tokens 9900 - 4000.
            assert_eq!(limiter.available(), (69, 5_900));
            // The request placeholder expires after the reset time.
            tokio::time::sleep(Duration::from_millis(150)).await;
            assert_eq!(limiter.available().0, 79);
        });
    }

    #[test]
    fn a_lower_provider_limit_is_not_mistaken_for_foreign_use() {
        runtime().block_on(async {
            // Configured far above the provider's real limits, as a user might.
            let limiter = Limiter::new(config(600, 1_000_000, 60_000));
            let (_stop, mut cancel) = watch::channel(false);
            let ticket = limiter.acquire(100, &mut cancel).await.unwrap();
            limiter.observe(
                &ticket,
                &RateHeaders {
                    limit_requests: Some(500),
                    remaining_requests: Some(499),
                    limit_tokens: Some(200_000),
                    remaining_tokens: Some(199_900),
                    ..RateHeaders::default()
                },
            );
            assert_eq!(limiter.limits(), (500, 200_000));
            assert_eq!(limiter.available(), (499, 199_900));
        });
    }

    #[test]
    fn the_concurrency_cap_and_cancellation_hold() {
        runtime().block_on(async {
            let mut config = config(100, 10_000, 1000);
            config.concurrency = 1;
            let limiter = Limiter::new(config);
            let (stop, mut cancel) = watch::channel(false);
            let held = limiter.acquire(1, &mut cancel).await.unwrap();
            let mut cancel2 = cancel.clone();
            let waiting = limiter.acquire(1, &mut cancel2);
            tokio::pin!(waiting);
            assert!(
                tokio::time::timeout(Duration::from_millis(30), &mut waiting)
                    .await
                    .is_err()
            );
            stop.send(true).unwrap();
            assert_eq!(waiting.await.unwrap_err(), AcquireError::Cancelled);
            drop(held);
        });
    }
}
