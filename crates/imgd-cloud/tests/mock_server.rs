//! The cloud runner against a real HTTP mock on 127.0.0.1 that enforces its own request and
//! token windows and injects 429s, 500s, slow and stalled answers. Windows are scaled down to
//! 2 s so the scenario runs in seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;
use imgd_cloud::config::{Price, PromptConfig};
use imgd_cloud::mock::{MockConfig, MockServer, expected_answer};
use imgd_cloud::request::encode_jpeg;
use imgd_cloud::{CloudConfig, CloudRunner, Secret};
use imgd_core::SqlValue;
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey, ModelRunner, RunnerResults};

const API_KEY: &str = "sk-test-do-not-log-0123456789";

fn test_image(id: i64) -> Arc<RgbImage> {
    Arc::new(RgbImage::from_fn(64, 48, move |x, y| {
        image::Rgb([
            (id * 37 % 256) as u8,
            ((x as i64 * 5 + id) % 256) as u8,
            ((y as i64 * 3 + id * 11) % 256) as u8,
        ])
    }))
}

fn prompts() -> Vec<PromptConfig> {
    vec![
        PromptConfig {
            name: "description".into(),
            text: "Describe this photo in one sentence.".into(),
            schema: None,
            strict: true,
        },
        PromptConfig {
            name: "place".into(),
            text: "Where was this photo taken?".into(),
            schema: None,
            strict: true,
        },
        PromptConfig {
            name: "tags".into(),
            text: "List subject tags.".into(),
            schema: Some(serde_json::json!({
                "type": "object",
                "properties": {
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "hash": {"type": "string"}
                },
                "required": ["tags", "hash"],
                "additionalProperties": false
            })),
            strict: true,
        },
    ]
}

fn cloud_config(base_url: &str, window_s: f64, rpm: u64, tpm: u64) -> CloudConfig {
    CloudConfig {
        base_url: base_url.to_string(),
        model: "mock-vision".into(),
        api_key: Some(Secret::new(API_KEY)),
        prompts: prompts(),
        rpm,
        tpm,
        concurrency: 16,
        max_output_tokens: 40,
        timeout_s: 1.0,
        max_attempts: 10,
        backoff_base_ms: 50,
        backoff_max_ms: 800,
        rate_window_s: window_s,
        rate_margin_s: 0.15,
        prices: BTreeMap::from([(
            "mock-vision".to_string(),
            Price {
                input_per_mtok: 2.5,
                output_per_mtok: 10.0,
            },
        )]),
        ..CloudConfig::default()
    }
}

/// Submits every image the way the inference thread does, then polls like it: waits until the
/// runner's deadline, collects when it is ready. Returns the results and the time `submit`
/// took in total.
fn drive(runner: &mut dyn ModelRunner, images: i64, limit: Duration) -> (RunnerResults, Duration) {
    let started = Instant::now();
    let mut submit_time = Duration::ZERO;
    for id in 1..=images {
        let tiers = vec![(1568u32, test_image(id))];
        let input = ImageInput {
            image_id: id,
            path: "/photos/x.jpg",
            tiers: &tiers,
        };
        let t = Instant::now();
        runner
            .submit(
                JobKey {
                    image_id: id,
                    job_id: 1000 + id,
                },
                &input,
            )
            .unwrap();
        submit_time += t.elapsed();
    }
    assert_eq!(runner.pending(), images as usize);
    let mut results = Vec::new();
    while runner.pending() > 0 {
        assert!(
            started.elapsed() < limit,
            "only {} of {images} images done after {limit:?}",
            results.len()
        );
        if let Some(reason) = runner.ready(Instant::now()) {
            results.extend(runner.run(reason));
            continue;
        }
        let deadline = runner
            .next_deadline()
            .expect("a deadline while images are in flight");
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }
    assert_eq!(runner.next_deadline(), None);
    (results, submit_time)
}

#[test]
fn two_hundred_images_three_prompts_within_the_mock_limits_with_failures_injected() {
    let window = Duration::from_secs(2);
    let (rpm, tpm) = (150, 40_000);
    let timeout = Duration::from_secs(1);
    let mock = MockServer::start(
        MockConfig {
            window,
            rpm,
            tpm,
            latency: Duration::from_millis(5),
            p_rate_limited: 0.03,
            retry_after: Duration::from_millis(150),
            p_server_error: 0.03,
            p_slow: 0.05,
            slow: Duration::from_millis(300),
            p_stall: 0.01,
            stall: Duration::from_millis(2500),
            seed: 7,
            ..MockConfig::default()
        },
        timeout,
    )
    .unwrap();
    let config = cloud_config(mock.base_url(), window.as_secs_f64(), rpm, tpm);
    let price = config.price().unwrap();
    let mut runner = CloudRunner::new(config.clone(), BatchConfig::DEFAULT).unwrap();
    let stats = runner.stats();
    let (results, submit_time) = drive(&mut runner, 200, Duration::from_secs(50));

    // submit() only hands the job over.
    assert!(submit_time < Duration::from_secs(1), "{submit_time:?}");

    // Nothing lost: every image, every prompt, the right answer for the right image.
    assert_eq!(results.len(), 200);
    let mut ids: Vec<i64> = results.iter().map(|(k, _)| k.image_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 200);
    let mut cost_sum = 0.0;
    let mut token_sum = 0i64;
    for (key, result) in &results {
        assert_eq!(key.job_id, 1000 + key.image_id);
        let row = result.as_ref().unwrap_or_else(|e| panic!("{key:?}: {e}"));
        assert_eq!(row.module, imgd_cloud::CLOUD);
        assert_eq!(row.model_id.as_deref(), Some("mock-vision"));
        let data_url = encode_jpeg(&test_image(key.image_id), config.jpeg_quality)
            .unwrap()
            .data_url;
        let answers = row.data["answers"].as_object().unwrap();
        assert_eq!(answers.len(), 3);
        for prompt in &config.prompts {
            assert_eq!(
                answers[&prompt.name],
                expected_answer(&prompt.text, prompt.schema.is_some(), &data_url),
                "image {} prompt {}",
                key.image_id,
                prompt.name
            );
        }
        assert_eq!(row.data["calls"], 3);
        for (name, value) in &row.columns {
            match (*name, value) {
                ("cost_usd", SqlValue::Real(cost)) => cost_sum += cost,
                ("tokens", SqlValue::Integer(tokens)) => token_sum += tokens,
                other => panic!("unexpected column {other:?}"),
            }
        }
    }

    let report = mock.report();
    eprintln!("{report:?}", report = MockReportSummary(&report));
    // The limits held: the mock saw no request beyond its windows.
    assert_eq!(
        report.request_violations,
        0,
        "{:?}",
        MockReportSummary(&report)
    );
    assert_eq!(
        report.token_violations,
        0,
        "{:?}",
        MockReportSummary(&report)
    );
    assert!(report.peak_requests_in_window <= rpm);
    assert!(report.peak_tokens_in_window <= tpm);
    // The scenario did exercise every failure.
    assert!(report.injected_rate_limited > 0);
    assert!(report.injected_server_errors > 0);
    assert!(report.slow > 0);
    assert!(report.stalled > 0);
    let snapshot = stats.snapshot();
    eprintln!("{snapshot:?}");
    // Every (image, prompt) pair was answered; a pair answered twice (the client gave up on a
    // late answer and asked again) has the same usage both times.
    assert_eq!(report.distinct_answers, 600);
    assert!(report.answered >= 600);

    // Costs add up: the per-image costs == the usage the mock reported × the prices == the
    // runner's own counters.
    let expected_cost = price.cost(report.distinct_input_tokens, report.distinct_output_tokens);
    assert!(
        (cost_sum - expected_cost).abs() < 1e-9,
        "{cost_sum} vs {expected_cost}"
    );
    assert_eq!(
        token_sum as u64,
        report.distinct_input_tokens + report.distinct_output_tokens
    );
    assert_eq!(snapshot.input_tokens, report.distinct_input_tokens);
    assert_eq!(snapshot.output_tokens, report.distinct_output_tokens);
    assert!((snapshot.cost_usd - expected_cost).abs() < 1e-6);
    assert_eq!(snapshot.calls, 600);
    assert_eq!(snapshot.jobs_done, 200);
    assert_eq!(snapshot.in_flight, 0);
    assert_eq!(snapshot.attempts, report.requests);
    assert!(snapshot.rate_limited >= report.injected_rate_limited);
    assert!(snapshot.timeouts >= report.stalled);
}

struct MockReportSummary<'a>(&'a imgd_cloud::mock::MockReport);

impl std::fmt::Debug for MockReportSummary<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = self.0;
        write!(
            f,
            "requests={} answered={} 429={} 500={} slow={} stalled={} violations={}/{} peak={}/{}",
            r.requests,
            r.answered,
            r.injected_rate_limited,
            r.injected_server_errors,
            r.slow,
            r.stalled,
            r.request_violations,
            r.token_violations,
            r.peak_requests_in_window,
            r.peak_tokens_in_window
        )
    }
}

#[test]
fn a_client_error_fails_the_job_with_the_provider_message_and_no_retry() {
    let mock = MockServer::start(
        MockConfig {
            reject_prompt_containing: Some("Where".into()),
            reject_message: format!("Invalid image. Your key {API_KEY} was used."),
            ..MockConfig::default()
        },
        Duration::from_secs(1),
    )
    .unwrap();
    let config = cloud_config(mock.base_url(), 60.0, 500, 200_000);
    let mut runner = CloudRunner::new(config, BatchConfig::DEFAULT).unwrap();
    let (results, _) = drive(&mut runner, 3, Duration::from_secs(20));
    assert_eq!(results.len(), 3);
    for (_, result) in results {
        let error = result.unwrap_err();
        assert!(error.contains("cloud prompt `place`"), "{error}");
        assert!(error.contains("HTTP 400"), "{error}");
        assert!(error.contains("Invalid image"), "{error}");
        assert!(!error.contains(API_KEY), "the key leaked: {error}");
    }
    let report = mock.report();
    // One attempt per prompt: the 400s were not retried.
    assert_eq!(report.requests, 9);
    assert_eq!(report.rejected, 3);
    assert_eq!(runner.stats().snapshot().jobs_failed, 3);
}

#[test]
fn draining_waits_for_calls_in_flight_and_starts_no_new_ones() {
    let timeout = Duration::from_secs(2);
    let mock = MockServer::start(
        MockConfig {
            latency: Duration::from_millis(600),
            ..MockConfig::default()
        },
        timeout,
    )
    .unwrap();
    let mut config = cloud_config(mock.base_url(), 60.0, 500, 200_000);
    config.concurrency = 3;
    config.timeout_s = timeout.as_secs_f64();
    let mut runner = CloudRunner::new(config, BatchConfig::DEFAULT).unwrap();
    for id in 1..=10 {
        let tiers = vec![(1568u32, test_image(id))];
        let input = ImageInput {
            image_id: id,
            path: "/photos/x.jpg",
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
            .unwrap();
    }
    // Let the first calls go out, then stop. (A call the client has started may not have
    // reached the mock yet: the mock's count is a lower bound of the calls in flight.)
    std::thread::sleep(Duration::from_millis(250));
    let reached = mock.report().requests;
    assert!(reached >= 1, "no call went out");
    let started = Instant::now();
    let mut results = Vec::new();
    while runner.pending() > 0 {
        results.extend(runner.run(CloseReason::Draining));
    }
    let took = started.elapsed();
    assert_eq!(results.len(), 10);
    assert!(took < timeout + Duration::from_secs(1), "{took:?}");
    // The calls already sent were answered and waited for; the images whose every prompt
    // was in flight are done. Every call of the first wave (at most `concurrency`, each
    // answered after 600 ms, so none had finished to free its slot) and no other was made.
    let done = results.iter().filter(|(_, r)| r.is_ok()).count() as u64;
    let calls = runner.stats().snapshot().calls;
    assert!(
        (reached..=3).contains(&calls),
        "{calls} calls, {reached} seen"
    );
    assert!(done * 3 <= calls);
    let cancelled = results
        .iter()
        .filter(|(_, r)| r.as_ref().is_err_and(|e| e.contains("stopping")))
        .count();
    assert_eq!(cancelled as u64, 10 - done, "{cancelled} cancelled");
    // No call started after the drain began.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(mock.report().requests, calls);
}
