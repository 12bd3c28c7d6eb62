//! The cloud module against the mock server, at length: achieved requests per window against
//! the limit, with 429s, 500s, slow and stalled answers injected. Run by
//! `scripts/bench-cloud.sh`; the last line is `cloud_rpm_utilization=X`.
//!
//! Baseline in the same run: the same client with only a requests limit (the token budget
//! switched off, as in a limiter that counts requests alone) against a mock whose token limit
//! binds and which sends no rate-limit headers; the mock counts the requests it had to refuse.
//! The same short scenario with both budgets follows for comparison.
//!
//! Settings (environment): `BENCH_CLOUD_IMAGES` (default 800), `BENCH_CLOUD_WINDOW_S` (6),
//! `BENCH_CLOUD_RPM` (300 per window), `BENCH_CLOUD_TPM` (100000 per window),
//! `BENCH_CLOUD_BASELINE_IMAGES` (150).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use imgd_cloud::config::{Price, PromptConfig};
use imgd_cloud::mock::{MockConfig, MockReport, MockServer};
use imgd_cloud::{CloudConfig, CloudRunner};
use imgd_infer::batcher::BatchConfig;
use imgd_infer::runner::{ImageInput, JobKey, ModelRunner};

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn image(id: i64) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_fn(64, 48, move |x, y| {
        image::Rgb([
            (id * 37 % 256) as u8,
            ((x as i64 * 5 + id) % 256) as u8,
            ((y as i64 * 3 + id * 11) % 256) as u8,
        ])
    }))
}

fn prompts() -> Vec<PromptConfig> {
    let plain = |name: &str, text: &str| PromptConfig {
        name: name.into(),
        text: text.into(),
        schema: None,
        strict: true,
    };
    let mut tags = plain("tags", "List subject tags.");
    tags.schema = Some(serde_json::json!({
        "type": "object",
        "properties": {"tags": {"type": "array", "items": {"type": "string"}}, "hash": {"type": "string"}},
        "required": ["tags", "hash"],
        "additionalProperties": false
    }));
    vec![
        plain("description", "Describe this photo in one sentence."),
        plain("place", "Where was this photo taken?"),
        tags,
    ]
}

struct Outcome {
    report: MockReport,
    seconds: f64,
    ok: usize,
    failed: usize,
}

fn scenario(
    images: i64,
    window: Duration,
    rpm: u64,
    mock_tpm: u64,
    client_tpm: u64,
    headers: bool,
) -> Outcome {
    let timeout = Duration::from_secs(2);
    let mock = MockServer::start(
        MockConfig {
            window,
            rpm,
            tpm: mock_tpm,
            latency: Duration::from_millis(20),
            p_rate_limited: 0.03,
            retry_after: Duration::from_millis(300),
            p_server_error: 0.03,
            p_slow: 0.05,
            slow: Duration::from_millis(600),
            p_stall: 0.01,
            stall: Duration::from_secs(4),
            seed: 11,
            send_rate_headers: headers,
            ..MockConfig::default()
        },
        timeout,
    )
    .expect("the mock starts");
    let config = CloudConfig {
        base_url: mock.base_url().to_string(),
        model: "mock-vision".into(),
        prompts: prompts(),
        rpm,
        tpm: client_tpm,
        concurrency: 32,
        max_output_tokens: 40,
        timeout_s: timeout.as_secs_f64(),
        max_attempts: 10,
        backoff_base_ms: 100,
        backoff_max_ms: 2000,
        rate_window_s: window.as_secs_f64(),
        rate_margin_s: window.as_secs_f64() * 0.02,
        prices: BTreeMap::from([(
            "mock-vision".to_string(),
            Price {
                input_per_mtok: 2.5,
                output_per_mtok: 10.0,
            },
        )]),
        ..CloudConfig::default()
    };
    let mut runner = CloudRunner::new(config, BatchConfig::DEFAULT).expect("the runner starts");
    let started = Instant::now();
    for id in 1..=images {
        let tiers = vec![(1568u32, image(id))];
        let input = ImageInput {
            image_id: id,
            path: "bench.jpg",
            tiers: &tiers,
        };
        runner
            .submit(
                JobKey {
                    image_id: id,
                    job_id: id,
                },
                &input,
            )
            .expect("submit");
    }
    let (mut ok, mut failed) = (0, 0);
    while runner.pending() > 0 {
        if let Some(reason) = runner.ready(Instant::now()) {
            for (_, result) in runner.run(reason) {
                if result.is_ok() {
                    ok += 1;
                } else {
                    failed += 1;
                }
            }
            continue;
        }
        if let Some(deadline) = runner.next_deadline() {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        }
    }
    Outcome {
        report: mock.report(),
        seconds: started.elapsed().as_secs_f64(),
        ok,
        failed,
    }
}

fn main() {
    let images: i64 = env("BENCH_CLOUD_IMAGES", 800);
    let window = Duration::from_secs_f64(env("BENCH_CLOUD_WINDOW_S", 6.0));
    let rpm: u64 = env("BENCH_CLOUD_RPM", 300);
    let tpm: u64 = env("BENCH_CLOUD_TPM", 100_000);
    let baseline_images: i64 = env("BENCH_CLOUD_BASELINE_IMAGES", 150);
    let per_minute = 60.0 / window.as_secs_f64();

    // Baseline: requests limited, tokens not, against a mock whose token limit binds.
    let tight_tpm = tpm / 3;
    let baseline = scenario(baseline_images, window, rpm, tight_tpm, u64::MAX / 4, false);
    let limited = scenario(baseline_images, window, rpm, tight_tpm, tight_tpm, false);
    println!(
        "baseline (requests-only limiter, token limit {tight_tpm}/window): {} requests, {} refused \
         by the mock's limits; imgd limiter: {} requests, {} refused",
        baseline.report.requests,
        baseline.report.request_violations + baseline.report.token_violations,
        limited.report.requests,
        limited.report.request_violations + limited.report.token_violations,
    );

    let run = scenario(images, window, rpm, tpm, tpm, true);
    let r = &run.report;
    let utilization = r.rpm_utilization(window, rpm);
    println!(
        "{} images x 3 prompts in {:.1} s: {} ok, {} failed",
        images, run.seconds, run.ok, run.failed
    );
    println!(
        "mock: {} requests, {} answered, injected {} x 429, {} x 500, {} slow, {} stalled",
        r.requests,
        r.answered,
        r.injected_rate_limited,
        r.injected_server_errors,
        r.slow,
        r.stalled
    );
    println!(
        "limit {rpm} requests / {tpm} tokens per {:.1} s window (= {:.0} rpm); peak window \
         {} requests / {} tokens; violations {} requests, {} tokens",
        window.as_secs_f64(),
        rpm as f64 * per_minute,
        r.peak_requests_in_window,
        r.peak_tokens_in_window,
        r.request_violations,
        r.token_violations
    );
    println!(
        "achieved {:.0} requests/min in steady state against a limit of {:.0}",
        utilization * rpm as f64 * per_minute,
        rpm as f64 * per_minute
    );
    println!(
        "cloud_violations={}",
        r.request_violations + r.token_violations
    );
    println!("cloud_rpm_utilization={utilization:.3}");
}
