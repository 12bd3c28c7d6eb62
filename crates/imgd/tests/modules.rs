//! The model modules inside `imgd run`, end to end through the real binary and a real database:
//! OCR and face detection with the registry-shipped models, CLIP embeddings and the aesthetic
//! MLP with the committed tiny fixtures (semantic search, model change), and the cloud module
//! against the mock OpenAI-compatible server on 127.0.0.1.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{Daemon, Env, copy_dir, env, fixture, free_port, http_get, signal, wait_exit};

#[test]
fn ocr_text_and_face_boxes_come_out_of_the_daemon_and_into_search() {
    let env = env();
    let sign = env.add(&fixture("ocr/text_00.jpg"), "sign.jpg");
    let portrait = env.add(&fixture("faces/astronaut.jpg"), "portrait.jpg");
    env.enqueue("metadata,ocr,faces");
    env.ok(&["run", "--once", "--metrics-addr", "off"]);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE state = 'done'"),
        6
    );

    let shown = env.json(&["show", "--json", &sign]);
    let lines: Vec<&str> = shown["ocr"]["data"]["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "Wedding of Sara and Tom",
            "Botanical gardens",
            "Bus stop ahead"
        ]
    );

    let shown = env.json(&["show", "--json", &portrait]);
    let faces = shown["faces"]["data"]["faces"].as_array().unwrap();
    assert_eq!(faces.len(), 1, "{shown}");
    let face = &faces[0];
    let b: Vec<f64> = face["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // Hand-checked: the astronaut's face spans about x 175–270, y 55–180 of 512×512.
    assert!(
        (165.0..195.0).contains(&b[0]) && (45.0..75.0).contains(&b[1]),
        "{b:?}"
    );
    assert!(
        (70.0..110.0).contains(&b[2]) && (95.0..135.0).contains(&b[3]),
        "{b:?}"
    );
    assert!(face["score"].as_f64().unwrap() > 0.9);
    assert_eq!(face["landmarks"].as_array().unwrap().len(), 5);

    // The human-readable views name the lines and the boxes.
    let text = env.ok(&["show", &sign]);
    assert!(text.contains("line: \"Wedding of Sara and Tom\""), "{text}");
    let text = env.ok(&["show", &portrait]);
    assert!(text.contains("face 1: box x "), "{text}");

    // OCR text is searchable (the row is written although other modules could still wait).
    let hits = env.json(&["search", "--json", "wedding"]);
    assert_eq!(hits.as_array().unwrap().len(), 1, "{hits}");
    assert_eq!(hits[0]["path"], sign.as_str());

    // Without ArcFace, faces are detected but not embedded, and status says so.
    let status = env.json(&["status", "--json"]);
    assert_eq!(status["faces"]["faces"], 1, "{status}");
    assert_eq!(status["faces"]["not_embedded"], 1);
    let text = env.ok(&["status"]);
    assert!(text.contains("not embedded"), "{text}");
    assert!(text.contains("imgd models fetch arcface-r50"), "{text}");
}

#[test]
fn a_disabled_module_waits_and_says_why() {
    let env = env();
    env.add(&fixture("ocr/text_00.jpg"), "sign.jpg");
    env.enqueue("ocr");
    let config = env.config("[models]\ndisabled = [\"ocr\"]\n");
    env.ok(&[
        "run",
        "--once",
        "--metrics-addr",
        "off",
        "--config",
        &config,
    ]);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND module = 'ocr'"),
        1
    );
    let status = env.json(&["status", "--json", "--config", &config]);
    assert!(
        status["waiting"]["ocr"]
            .as_str()
            .unwrap()
            .contains("disabled"),
        "{status}"
    );
    let bad = env.config("[models]\ndisabled = [\"ocrr\"]\n");
    let (ok, stdout, _) = env.run(&["validate", "--config", &bad]);
    assert!(!ok);
    assert!(stdout.contains("\"ocrr\" names no module"), "{stdout}");
}

/// Installs the tiny CLIP fixture as `name` in the user model folder, with `version` as its
/// model version.
fn install_tiny_clip(env: &Env, name: &str, version: &str) {
    let to = env.models.join(name);
    copy_dir(Path::new(&fixture("clip/tiny-clip")), &to);
    let config_path = to.join("config.json");
    let mut config: Value =
        serde_json::from_str(&fs::read_to_string(&config_path).unwrap()).unwrap();
    config["imgd_model_version"] = Value::from(version);
    fs::write(&config_path, config.to_string()).unwrap();
}

#[test]
fn clip_embeddings_and_aesthetic_scores_serve_search_and_a_model_change_requeues() {
    let env = env();
    install_tiny_clip(&env, "clip-vit-b32", "v1");
    copy_dir(
        Path::new(&fixture("clip/tiny-aesthetic")),
        &env.models.join("aesthetic"),
    );
    let flower = env.add(&fixture("clip/images/flower-448.png"), "flower.png");
    env.add(&fixture("clip/images/hopper.png"), "hopper.png");
    env.add(&fixture("clip/images/xmp-448.png"), "xmp.png");
    env.add(&fixture("photos/flower2.jpg"), "flower2.jpg");
    let config = env.config(&format!(
        "[models]\naesthetic_clip = \"clip-vit-b32\"\naesthetic_mlp = \"{}\"\n",
        env.models.join("aesthetic").display()
    ));
    env.enqueue("embedding,aesthetic");
    env.ok(&[
        "run",
        "--once",
        "--metrics-addr",
        "off",
        "--config",
        &config,
    ]);
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM result_embedding
             WHERE model_id = 'tiny-clip' AND model_version = 'v1'"
        ),
        4
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM result_aesthetic WHERE score BETWEEN 1 AND 10"),
        4
    );

    // Image to image: the other three images, most similar first.
    let hits = env.json(&["search", "--json", "--similar", &flower]);
    let similarities: Vec<f64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["similarity"].as_f64().unwrap())
        .collect();
    assert_eq!(similarities.len(), 3, "{hits}");
    assert!(similarities.windows(2).all(|w| w[0] >= w[1]), "{hits}");
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .all(|h| h["path"] != flower.as_str())
    );

    // Text to image through the CLIP text tower: every image has a similarity, and the
    // ranking is by it.
    let hits = env.json(&[
        "search", "--json", "--mode", "semantic", "--config", &config, "a", "flower",
    ]);
    let similarities: Vec<f64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["similarity"].as_f64().unwrap())
        .collect();
    assert_eq!(similarities.len(), 4, "{hits}");
    assert!(similarities.windows(2).all(|w| w[0] >= w[1]), "{hits}");

    // The daemon's search page ranks the same way, its text encoder loaded on first use.
    let ranked: Vec<i64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["image_id"].as_i64().unwrap())
        .collect();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon(
        env.cmd(&["run", "--config", &config, "--metrics-addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(common::wait_healthy(&addr, Duration::from_secs(30)));
    let page_ids = |path: &str| {
        let (status, page) = http_get(&addr, path).unwrap();
        assert_eq!(status, 200, "{page}");
        assert!(!page.contains("no text encoder"), "{page}");
        let mut ids: Vec<i64> = page
            .split("<a href=\"/image/")
            .skip(1)
            .filter_map(|rest| rest.split('"').next()?.parse().ok())
            .collect();
        ids.dedup();
        ids
    };
    assert_eq!(page_ids("/search?q=a+flower&mode=semantic"), ranked);
    let flower_id = env.json(&["show", "--json", &flower])["image"]["id"]
        .as_i64()
        .unwrap();
    let similar = page_ids(&format!("/search?similar={flower_id}"));
    assert_eq!(similar.len(), 3, "{similar:?}");
    assert!(!similar.contains(&flower_id));
    signal(&daemon, "TERM");
    assert!(wait_exit(&mut daemon, Duration::from_secs(30)).is_some_and(|s| s.success()));

    // Sorted by aesthetic score.
    let hits = env.json(&[
        "search",
        "--json",
        "--similar",
        &flower,
        "--sort",
        "aesthetic",
    ]);
    let scores: Vec<f64> = hits
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["aesthetic"].as_f64().unwrap())
        .collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "{hits}");

    // A new model: the daemon re-queues every image's embedding at start, and search serves
    // the old model's vectors until the new ones cover the library.
    install_tiny_clip(&env, "clip-new", "v2");
    let switched = env.config(&format!(
        "[models]\nembedding = \"clip-new\"\ndisabled = [\"aesthetic\"]\naesthetic_mlp = \"{}\"\n",
        env.models.join("aesthetic").display()
    ));
    let (ok, _, stderr) = env.run(&["search", "--similar", &flower, "--config", &switched]);
    assert!(ok);
    assert!(stderr.contains("v1"), "old vectors are served: {stderr}");
    let (ok, _, stderr) = env.run(&[
        "run",
        "--once",
        "--metrics-addr",
        "off",
        "--config",
        &switched,
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("4 images re-queued"), "{stderr}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM result_embedding WHERE model_version = 'v2'"),
        4
    );
    let (ok, _, stderr) = env.run(&["search", "--similar", &flower, "--config", &switched]);
    assert!(ok);
    assert!(stderr.contains("v2"), "new vectors are served: {stderr}");
    // A second start re-queues nothing.
    let (ok, _, stderr) = env.run(&[
        "run",
        "--once",
        "--metrics-addr",
        "off",
        "--config",
        &switched,
    ]);
    assert!(ok);
    assert!(!stderr.contains("re-queued"), "{stderr}");
}

#[test]
fn clip_on_onnx_runtime_gives_candles_vectors_and_switching_engines_requeues_nothing() {
    // The same library twice: the model folder with its image tower's ONNX export (what the
    // CPU runs by default), and candle by setting.
    let run_library = |engine: &str| {
        let env = env();
        install_tiny_clip(&env, "clip-vit-b32", "v1");
        let onnx = env.models.join("clip-vit-b32").join("onnx");
        fs::create_dir_all(&onnx).unwrap();
        fs::copy(
            fixture("clip/tiny-clip-vision.onnx"),
            onnx.join("vision_model.onnx"),
        )
        .unwrap();
        env.add(&fixture("clip/images/flower-448.png"), "flower.png");
        env.add(&fixture("clip/images/hopper.png"), "hopper.png");
        env.add(&fixture("clip/images/xmp-448.png"), "xmp.png");
        env.add(&fixture("photos/flower2.jpg"), "flower2.jpg");
        let config = env.config(&format!("[models]\nembedding_engine = \"{engine}\"\n"));
        env.enqueue("embedding");
        let validated = env.ok(&["validate", "--config", &config]);
        let summary = env.json(&[
            "run",
            "--once",
            "--json",
            "--metrics-addr",
            "off",
            "--config",
            &config,
        ]);
        assert_eq!(summary["images"], 4, "{summary}");
        assert_eq!(summary["jobs_failed"], 0, "{summary}");
        let hits = semantic_hits(&env, &config, "a flower");
        (env, validated, hits)
    };
    let (env, validated, on_onnx) = run_library("auto");
    assert!(
        validated.contains("CLIP (image tower on ONNX Runtime)"),
        "{validated}"
    );
    let (_, validated, on_candle) = run_library("candle");
    assert!(!validated.contains("ONNX Runtime"), "{validated}");
    // The same vectors: the same ranking and similarities.
    assert_eq!(on_onnx.len(), 4);
    for ((name, similarity), (candle_name, candle_similarity)) in on_onnx.iter().zip(&on_candle) {
        assert_eq!(name, candle_name, "{on_onnx:?} vs {on_candle:?}");
        assert!(
            (similarity - candle_similarity).abs() < 1e-4,
            "{on_onnx:?} vs {on_candle:?}"
        );
    }
    // The same model version: switching the engine re-queues nothing.
    let candle = env.config("[models]\nembedding_engine = \"candle\"\n");
    let summary = env.json(&[
        "run",
        "--once",
        "--json",
        "--metrics-addr",
        "off",
        "--config",
        &candle,
    ]);
    assert_eq!(summary["images"], 0, "{summary}");
}

/// Semantic search's hits: (file name, similarity), most similar first.
fn semantic_hits(env: &Env, config: &str, query: &str) -> Vec<(String, f64)> {
    let hits = env.json(&[
        "search", "--json", "--mode", "semantic", "--config", config, query,
    ]);
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let path = h["path"].as_str().unwrap();
            let name = Path::new(path).file_name().unwrap().to_string_lossy();
            (name.into_owned(), h["similarity"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn switching_to_siglip2_requeues_and_queries_in_any_script_search_its_vectors_only() {
    let env = env();
    install_tiny_clip(&env, "clip-vit-b32", "v1");
    copy_dir(
        Path::new(&fixture("siglip/tiny-siglip2")),
        &env.models.join("siglip2-base-patch16-224"),
    );
    for name in ["flower-448.png", "hopper.png", "xmp-448.png"] {
        env.add(&fixture(&format!("siglip/images/{name}")), name);
    }
    env.enqueue("embedding");
    let clip = env.config("[models]\ndisabled = [\"aesthetic\"]\n");
    env.ok(&["run", "--once", "--metrics-addr", "off", "--config", &clip]);
    assert_eq!(
        env.count("SELECT COUNT(*) FROM result_embedding WHERE model_id = 'tiny-clip'"),
        3
    );

    let siglip = env
        .config("[models]\nembedding = \"siglip2-base-patch16-224\"\ndisabled = [\"aesthetic\"]\n");
    let (ok, stdout, _) = env.run(&["validate", "--config", &siglip]);
    assert!(ok && stdout.contains("SigLIP from"), "{stdout}");
    let (ok, _, stderr) = env.run(&[
        "run",
        "--once",
        "--metrics-addr",
        "off",
        "--config",
        &siglip,
    ]);
    assert!(ok, "{stderr}");
    assert!(stderr.contains("3 images re-queued"), "{stderr}");
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM result_embedding
             WHERE model_id = 'tiny-siglip2' AND dim = 32"
        ),
        3
    );
    // Queries in six scripts: each ranks the three images by SigLIP similarity, computed
    // here from the stored vectors and the reference-checked text tower.
    for query in [
        "a dog on the beach",
        "ein Hund am Strand",
        "浜辺の犬",
        "كلب على الشاطئ",
        "σκύλος",
        "собака на пляже",
    ] {
        let hits = semantic_hits(&env, &siglip, query);
        assert_eq!(hits.len(), 3, "{query}: {hits:?}");
        assert!(
            hits.windows(2).all(|w| w[0].1 >= w[1].1),
            "{query}: {hits:?}"
        );
    }
    let text = imgd_clip::runner::TextTower::load(
        &env.models.join("siglip2-base-patch16-224"),
        &imgd_clip::Device::Cpu,
    );
    let query = text.unwrap().embed_text(&["浜辺の犬"]).unwrap().remove(0);
    let mut stored: Vec<(String, f64)> = env
        .db
        .store()
        .db()
        .query_map(
            "SELECT i.path, e.vector FROM result_embedding e JOIN images i ON i.id = e.image_id
             WHERE e.model_id = 'tiny-siglip2'",
            &[],
            |r| Ok((r.get::<String>(0)?, r.get::<Vec<u8>>(1)?)),
        )
        .unwrap()
        .into_iter()
        .map(|(path, blob)| {
            let vector = imgd_clip::runner::vector_from_blob(&blob).unwrap();
            let dot: f32 = vector.iter().zip(&query).map(|(a, b)| a * b).sum();
            let name = Path::new(&path).file_name().unwrap().to_string_lossy();
            (name.into_owned(), f64::from(dot))
        })
        .collect();
    stored.sort_by(|a, b| b.1.total_cmp(&a.1));
    let hits = semantic_hits(&env, &siglip, "浜辺の犬");
    for ((name, similarity), (want_name, want)) in hits.iter().zip(&stored) {
        assert_eq!(name, want_name);
        assert!((similarity - want).abs() < 1e-4, "{similarity} vs {want}");
    }
}

#[test]
fn the_cloud_module_answers_every_prompt_and_counts_calls_tokens_and_cost() {
    use imgd_cloud::mock::{MockConfig, MockServer};
    let mock = MockServer::start(MockConfig::default(), Duration::from_secs(5)).unwrap();
    let env = env();
    for (i, name) in ["flower.jpg", "hopper.jpg", "flower2.jpg"]
        .iter()
        .enumerate()
    {
        env.add(&fixture(&format!("photos/{name}")), &format!("{i}-{name}"));
    }
    let config = env.config(&format!(
        r#"
[cloud]
base_url = "{}"
model = "mock-vision"
rpm = 600
tpm = 1000000
concurrency = 4
detail = "low"

[[cloud.prompts]]
name = "description"
text = "Describe this photo."

[[cloud.prompts]]
name = "tags"
text = "List subject tags."

[cloud.prices."mock-vision"]
input_per_mtok = 1.0
output_per_mtok = 2.0
"#,
        mock.base_url()
    ));
    env.enqueue("cloud");
    let addr = format!("127.0.0.1:{}", free_port());
    let log = env.dir.path().join("daemon.log");
    let mut child = Daemon(
        env.cmd(&["run", "--metrics-addr", &addr, "--config", &config])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let until = Instant::now() + Duration::from_secs(60);
    while env.count("SELECT COUNT(*) FROM jobs WHERE module = 'cloud' AND state = 'done'") < 3 {
        assert!(
            Instant::now() < until,
            "the cloud jobs did not finish: {:?}\n{}\n{}",
            mock.report(),
            env.ok(&["status"]),
            fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, metrics) = http_get(&addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains("imgd_cloud_calls_total{model=\"mock-vision\"} 6"),
        "{metrics}"
    );
    signal(&child, "TERM");
    let exit = wait_exit(&mut child, Duration::from_secs(30)).expect("no exit within 30 s");
    assert!(exit.success());

    let report = mock.report();
    assert_eq!(report.answered, 6);
    assert_eq!(report.request_violations + report.token_violations, 0);
    let status = env.json(&["status", "--json"]);
    assert_eq!(status["cloud"]["images"], 3, "{status}");
    assert_eq!(status["cloud"]["calls"], 6);
    let tokens = status["cloud"]["tokens"].as_i64().unwrap();
    assert_eq!(
        tokens as u64,
        report.billed_input_tokens + report.billed_output_tokens
    );
    let expected_cost =
        (report.billed_input_tokens as f64 * 1.0 + report.billed_output_tokens as f64 * 2.0) / 1e6;
    assert!((status["cloud"]["cost_usd"].as_f64().unwrap() - expected_cost).abs() < 1e-9);
    let text = env.ok(&["status"]);
    assert!(text.contains("cloud:    6 calls"), "{text}");
}

#[test]
fn ocr_is_skipped_where_objects_found_no_text_unless_configured_otherwise() {
    let env = env();
    let plain = env.add(&fixture("ocr/text_01.jpg"), "plain.jpg");
    let sign = env.add(&fixture("ocr/text_00.jpg"), "sign.jpg");
    env.enqueue("ocr");
    // What the objects module would have stored: text on the sign, none on the other image.
    for (path, has_text) in [(&plain, 0), (&sign, 1)] {
        env.db.execute(
            "INSERT INTO result_objects (image_id, model_id, model_version, created_ms, has_text)
             SELECT id, 'grounding-dino', 't', 0, ?2 FROM images WHERE path = ?1",
            imgd_store::params![path, has_text],
        );
    }
    let (ok, stdout, stderr) = env.run(&["run", "--once", "--json", "--metrics-addr", "off"]);
    assert!(ok, "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap();
    // Only the sign needed pixels.
    assert_eq!(summary["decodes"], 1, "{summary}");
    let shown = env.json(&["show", "--json", &plain]);
    assert_eq!(shown["ocr"]["line_count"], 0, "{shown}");
    assert!(shown["ocr"]["data"]["skipped"].is_string(), "{shown}");
    let shown = env.json(&["show", "--json", &sign]);
    assert_eq!(shown["ocr"]["line_count"], 3, "{shown}");

    // With `ocr_needs_text = false` OCR reads every image.
    env.db.execute(
        "UPDATE jobs SET state = 'queued' WHERE module = 'ocr'",
        imgd_store::params![],
    );
    let config = env.config("[models]\nocr_needs_text = false\n");
    env.ok(&[
        "run",
        "--once",
        "--metrics-addr",
        "off",
        "--config",
        &config,
    ]);
    let shown = env.json(&["show", "--json", &plain]);
    assert!(shown["ocr"]["line_count"].as_i64().unwrap() > 0, "{shown}");
    assert!(shown["ocr"]["data"]["skipped"].is_null(), "{shown}");
}

#[test]
fn captions_and_four_answers_come_from_one_vision_encode_per_image() {
    let env = env();
    copy_dir(
        Path::new(&fixture("blip/tiny-blip")),
        &env.models.join("blip-base-caption"),
    );
    let mut paths = env.add_all(&fixture("blip/images"));
    paths.push(env.add(&fixture("photos/flower.jpg"), "flower.jpg"));
    env.enqueue("caption");
    let config = env.config("[batch.caption]\nmax_items = 2\nmax_wait_ms = 10\n");
    let summary = env.json(&[
        "run",
        "--once",
        "--json",
        "--metrics-addr",
        "off",
        "--config",
        &config,
    ]);
    let images = paths.len() as u64;
    assert_eq!(summary["images"], images, "{summary}");
    assert_eq!(summary["vision_encodes"], images, "{summary}");
    // Batches of at most 2: 3 images take at least 2 batches.
    assert_eq!(summary["batched_items"], images, "{summary}");
    assert!(summary["batches"].as_u64().unwrap() >= 2, "{summary}");
    assert!(
        summary["model_seconds"].as_f64().unwrap() > 0.0,
        "{summary}"
    );

    let mut words = Vec::new();
    for path in &paths {
        let shown = env.json(&["show", "--json", path]);
        let caption = shown["caption"]["caption"].as_str().unwrap();
        assert!(!caption.trim().is_empty(), "{shown}");
        let answers = shown["caption"]["data"]["answers"].as_object().unwrap();
        let names: Vec<&str> = answers.keys().map(String::as_str).collect();
        assert_eq!(names.len(), 4, "{shown}");
        for name in ["scene", "subject", "lighting", "mood"] {
            assert!(names.contains(&name), "{name} missing: {shown}");
        }
        words.push(caption.split_whitespace().last().unwrap().to_string());
    }
    // Captions are searchable.
    let hits = env.json(&["search", "--json", &words[0]]);
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .any(|h| h["path"] == paths[0].as_str()),
        "{hits}"
    );
}

#[test]
fn blip2_answers_real_questions_and_switching_models_requeues_the_captions() {
    let env = env();
    copy_dir(
        Path::new(&fixture("blip/tiny-blip")),
        &env.models.join("blip-base-caption"),
    );
    copy_dir(
        Path::new(&fixture("blip2/tiny-blip2-opt")),
        &env.models.join("blip2-opt-2.7b"),
    );
    let mut paths = env.add_all(&fixture("blip/images"));
    paths.push(env.add(&fixture("photos/flower.jpg"), "flower.jpg"));
    let images = paths.len() as i64;
    env.enqueue("caption");
    let run = |config: &str| {
        env.json(&[
            "run",
            "--once",
            "--json",
            "--metrics-addr",
            "off",
            "--config",
            config,
        ])
    };
    // BLIP, the default model, first.
    let summary = run(&env.config(""));
    assert_eq!(summary["images"], images, "{summary}");
    let blip_rows = "SELECT COUNT(*) FROM result_caption WHERE model_id = 'tiny-blip'";
    assert_eq!(env.count(blip_rows), images);

    // BLIP-2 with two real questions: every caption is re-queued and redone, each image
    // encoded once for its caption and both answers.
    let settings = r#"
[models]
caption = "blip2-opt-2.7b"

[[caption.questions]]
name = "subject"
question = "What is in the picture?"

[[caption.questions]]
name = "indoors"
question = "Is it taken indoors?"
"#;
    let config = env.config(settings);
    let status = env.ok(&["status", "--config", &config]);
    assert!(!status.contains("waiting:"), "{status}");
    let summary = run(&config);
    assert_eq!(summary["images"], images, "{summary}");
    assert_eq!(summary["vision_encodes"], images, "{summary}");
    assert_eq!(summary["jobs_failed"], 0, "{summary}");
    assert_eq!(env.count(blip_rows), 0);
    assert_eq!(
        env.count(
            "SELECT COUNT(*) FROM result_caption
             WHERE model_id = 'tiny-blip2-opt' AND model_version = 'fixture-1'"
        ),
        images
    );
    let mut words = Vec::new();
    for path in &paths {
        let shown = env.json(&["show", "--json", path]);
        let answers = shown["caption"]["data"]["answers"].as_object().unwrap();
        let mut names: Vec<&str> = answers.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["indoors", "subject"], "{shown}");
        let texts = std::iter::once(&shown["caption"]["caption"]).chain(answers.values());
        for text in texts {
            // The random-weight model's words: runs of three or more letters or digits.
            for word in text
                .as_str()
                .unwrap()
                .split(|c: char| !c.is_ascii_alphanumeric())
            {
                if word.len() >= 3 {
                    words.push((word.to_string(), path.clone()));
                }
            }
        }
    }
    // Captions and answers are searchable.
    let (word, path) = words
        .first()
        .expect("no searchable word in any caption or answer");
    let hits = env.json(&["search", "--json", word]);
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .any(|h| h["path"] == path.as_str()),
        "{word}: {hits}"
    );
    // Nothing left to do: the next run with the same model re-queues nothing.
    let summary = run(&config);
    assert_eq!(summary["images"], 0, "{summary}");

    // BLIP-2 with Flan-T5, the same questions: every caption redone again, each image encoded
    // once, every answer there.
    copy_dir(
        Path::new(&fixture("blip2/tiny-blip2-flan-t5")),
        &env.models.join("blip2-flan-t5-xl"),
    );
    let config = env.config(&settings.replace("blip2-opt-2.7b", "blip2-flan-t5-xl"));
    let summary = run(&config);
    assert_eq!(summary["images"], images, "{summary}");
    assert_eq!(summary["vision_encodes"], images, "{summary}");
    assert_eq!(summary["jobs_failed"], 0, "{summary}");
    assert_eq!(
        env.count("SELECT COUNT(*) FROM result_caption WHERE model_id = 'tiny-blip2-flan-t5'"),
        images
    );
    for path in &paths {
        let shown = env.json(&["show", "--json", path]);
        let answers = shown["caption"]["data"]["answers"].as_object().unwrap();
        let mut names: Vec<&str> = answers.keys().map(String::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["indoors", "subject"], "{shown}");
    }
    let summary = run(&config);
    assert_eq!(summary["images"], 0, "{summary}");
}

#[test]
fn every_module_runs_together_on_the_sample_folder() {
    use imgd_cloud::mock::{MockConfig, MockServer};
    let mock = MockServer::start(MockConfig::default(), Duration::from_secs(5)).unwrap();
    let env = env();
    // The fixture models stand in for the full-size ones; PP-OCR and MTCNN are the registry's.
    install_tiny_clip(&env, "clip-vit-b32", "v1");
    copy_dir(
        Path::new(&fixture("clip/tiny-aesthetic")),
        &env.models.join("aesthetic"),
    );
    copy_dir(
        Path::new(&fixture("blip/tiny-blip")),
        &env.models.join("blip-base-caption"),
    );
    copy_dir(
        Path::new(&fixture("objects/tiny-grounding-dino")),
        &env.models.join("grounding-dino-tiny"),
    );
    let mut paths = env.add_all(&fixture("photos"));
    let face = env.add(&fixture("faces/astronaut.jpg"), "astronaut.jpg");
    let sign = env.add(&fixture("ocr/text_00.jpg"), "sign.jpg");
    paths.extend([face.clone(), sign.clone()]);
    let mlp = env.models.join("aesthetic");
    let config = env.config(&format!(
        r#"
[models]
aesthetic_clip = "clip-vit-b32"
aesthetic_mlp = "{}"

[objects]
# With the random weights "dog" fires on some of these images and not on others: as the text
# phrase, it makes the OCR gate go both ways.
prompts = ["cat", "dog", "text", "street sign"]
text_prompts = ["dog"]
box_threshold = 0.5
text_threshold = 0.3
size = 128

[cloud]
base_url = "{}"
model = "mock-vision"
rpm = 6000
tpm = 10000000
concurrency = 4

[[cloud.prompts]]
name = "description"
text = "Describe this photo."
"#,
        mlp.display(),
        mock.base_url()
    ));
    let modules = "metadata,technical,embedding,aesthetic,objects,caption,ocr,faces,cloud,phash";
    env.enqueue(modules);
    let status = env.ok(&["status", "--config", &config]);
    assert!(!status.contains("waiting:"), "a module waits: {status}");
    let summary = env.json(&[
        "run",
        "--once",
        "--json",
        "--metrics-addr",
        "off",
        "--config",
        &config,
    ]);
    // One claim and one decode per image: OCR waits for objects inside the pass.
    let images = paths.len() as u64;
    assert_eq!(summary["images"], images, "{summary}");
    assert_eq!(summary["decodes"], images, "{summary}");
    assert_eq!(summary["jobs_done"], images * 10, "{summary}");
    assert_eq!(summary["jobs_failed"], 0, "{summary}");
    assert_eq!(summary["vision_encodes"], images, "{summary}");
    // Where the time went: every model's batches and seconds, which add up to the models'
    // total, and the decode threads' seconds.
    let models = summary["models"].as_object().unwrap();
    let mut seconds = 0.0;
    for (name, model) in models {
        assert!(model["batches"].as_u64().unwrap() >= 1, "{name}: {summary}");
        assert!(model["items"].as_u64().unwrap() >= 1, "{name}: {summary}");
        seconds += model["seconds"].as_f64().unwrap();
    }
    assert!(models.len() >= 5, "{summary}");
    let model_seconds = summary["model_seconds"].as_f64().unwrap();
    assert!(
        (seconds - model_seconds).abs() <= 1e-6 * model_seconds.max(1.0),
        "{seconds} vs {model_seconds}: {summary}"
    );
    assert!(
        summary["decode_seconds"].as_f64().unwrap() > 0.0,
        "{summary}"
    );
    assert_eq!(
        env.count("SELECT COUNT(*) FROM jobs WHERE state != 'done'"),
        0,
        "{}",
        env.ok(&["status", "--config", &config])
    );

    let mut labelled = 0;
    for path in &paths {
        let shown = env.json(&["show", "--json", path]);
        for module in modules.split(',') {
            assert!(
                shown[module].is_object(),
                "{path}: no {module} section: {shown}"
            );
        }
        assert!(shown["caption"]["caption"].is_string(), "{shown}");
        assert!(shown["cloud"]["data"].is_object(), "{shown}");
        let objects = &shown["objects"];
        let detections = objects["data"]["detections"].as_array().unwrap();
        labelled += usize::from(!detections.is_empty());
        // The OCR gate: OCR ran where the objects module saw the text phrase, else it was
        // skipped.
        let has_text = objects["has_text"].as_i64().unwrap() == 1;
        let texts = detections.iter().any(|d| d["label"] == "dog");
        assert_eq!(has_text, texts, "{objects}");
        assert_eq!(
            shown["ocr"]["data"]["skipped"].is_string(),
            !has_text,
            "{path}: {shown}"
        );
    }
    assert!(labelled > 0, "no image got a box");
    // Object labels are in the search index.
    let (path, label) = paths
        .iter()
        .find_map(|path| {
            let shown = env.json(&["show", "--json", path]);
            let label = shown["objects"]["data"]["detections"][0]["label"].as_str()?;
            Some((path.clone(), label.to_string()))
        })
        .unwrap();
    let text = env.ok(&["show", &path]);
    assert!(text.contains(&format!("object: {label:?}")), "{text}");
    assert!(text.contains(" box x "), "boxes in pixels: {text}");
    let hits = env.json(&["search", "--json", "--mode", "text", &label]);
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .any(|h| h["path"] == path.as_str()),
        "{label}: {hits}"
    );
    // The gate went both ways on these images: some read, some skipped.
    let with_text = env.count("SELECT COUNT(*) FROM result_objects WHERE has_text = 1") as u64;
    let skipped =
        env.count(r#"SELECT COUNT(*) FROM result_ocr WHERE data LIKE '%"skipped":%'"#) as u64;
    assert_eq!(with_text + skipped, images, "{summary}");
    assert!(
        with_text > 0 && skipped > 0,
        "{with_text} read, {skipped} skipped"
    );
    let shown = env.json(&["show", "--json", &face]);
    assert_eq!(
        shown["faces"]["data"]["faces"].as_array().unwrap().len(),
        1,
        "{shown}"
    );
    let text = env.ok(&["show", &face]);
    assert!(text.contains("objects:"), "{text}");
}

#[test]
fn changing_the_objects_settings_requeues_the_objects_module() {
    let env = env();
    copy_dir(
        Path::new(&fixture("objects/tiny-grounding-dino")),
        &env.models.join("grounding-dino-tiny"),
    );
    env.add(&fixture("photos/flower.jpg"), "flower.jpg");
    env.add(&fixture("photos/hopper.jpg"), "hopper.jpg");
    env.enqueue("objects");
    let settings = |threshold: f64| {
        env.config(&format!(
            "[objects]\nprompts = [\"cat\", \"text\"]\ntext_prompts = [\"text\"]\n\
             box_threshold = {threshold}\nsize = 128\n"
        ))
    };
    let run = |config: &str| {
        env.json(&[
            "run",
            "--once",
            "--json",
            "--metrics-addr",
            "off",
            "--config",
            config,
        ])["jobs_done"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(run(&settings(0.4)), 2);
    // The same settings again: nothing to do.
    assert_eq!(run(&settings(0.4)), 0);
    // Another threshold: both images' objects are redone, under a new version.
    let versions = || {
        env.db
            .strings("SELECT DISTINCT model_version FROM result_objects")
    };
    let before = versions();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(run(&settings(0.6)), 2);
    let after = versions();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(before, after);
    assert_eq!(run(&settings(0.6)), 0);
}

/// `phash` runs on the decode threads without any model, and `imgd duplicates --method phash`
/// groups each photo with its resized, recompressed and cropped copies, and identical files by
/// their content hash.
#[test]
fn phash_groups_copies_of_a_photo_without_a_model() {
    use image::codecs::jpeg::JpegEncoder;
    use image::imageops::FilterType;

    let env = env();
    let photos = ["photos/flower.jpg", "faces/bus.jpg", "faces/zidane.jpg"];
    for photo in photos {
        let name = Path::new(photo).file_stem().unwrap().to_str().unwrap();
        env.add(&fixture(photo), &format!("{name}.jpg"));
        let pixels = image::open(fixture(photo)).unwrap().to_rgb8();
        let (w, h) = pixels.dimensions();
        let save = |image: &image::RgbImage, quality: u8, suffix: &str| {
            let file = fs::File::create(env.tree.join(format!("{name}_{suffix}.jpg"))).unwrap();
            JpegEncoder::new_with_quality(file, quality)
                .encode_image(image)
                .unwrap();
        };
        save(
            &image::imageops::resize(&pixels, w / 2, h / 2, FilterType::Lanczos3),
            90,
            "half",
        );
        save(&pixels, 40, "q40");
        let (dx, dy) = (w / 40, h / 40);
        let cropped = image::imageops::crop_imm(&pixels, dx, dy, w - 2 * dx, h - 2 * dy);
        save(&cropped.to_image(), 90, "crop");
    }
    // A byte-for-byte copy, found by its content hash as well.
    env.add(&fixture("faces/bus.jpg"), "bus_again.jpg");
    env.json(&[
        "enqueue",
        "--json",
        "--hash",
        "--modules",
        "phash",
        env.tree.to_str().unwrap(),
    ]);
    let summary = env.json(&["run", "--once", "--json", "--metrics-addr", "off"]);
    assert_eq!(summary["jobs_done"], 13, "{summary}");

    let report = env.json(&["duplicates", "--method", "phash", "--json"]);
    assert_eq!(report["method"], "phash");
    assert_eq!(report["compared"], 13);
    let mut groups: Vec<Vec<String>> = report["near"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            group["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let name = Path::new(p.as_str().unwrap()).file_name().unwrap();
                    name.to_str().unwrap().to_string()
                })
                .collect()
        })
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            vec![
                "bus.jpg",
                "bus_again.jpg",
                "bus_crop.jpg",
                "bus_half.jpg",
                "bus_q40.jpg"
            ],
            vec![
                "flower.jpg",
                "flower_crop.jpg",
                "flower_half.jpg",
                "flower_q40.jpg"
            ],
            vec![
                "zidane.jpg",
                "zidane_crop.jpg",
                "zidane_half.jpg",
                "zidane_q40.jpg"
            ],
        ]
    );
    let exact = report["exact"].as_array().unwrap();
    assert_eq!(exact.len(), 1, "{report}");
    assert_eq!(exact[0]["paths"].as_array().unwrap().len(), 2);
    // A distance of 0 bits keeps only identical hashes: the resized and recompressed copies
    // (pHash ignores them) but not the crops. The two methods' settings are not mixed up.
    let strict = env.json(&[
        "duplicates",
        "--method",
        "phash",
        "--distance",
        "0",
        "--json",
    ]);
    let strict = strict.to_string();
    assert!(
        strict.contains("flower_q40.jpg") && !strict.contains("_crop.jpg"),
        "{strict}"
    );
    let (ok, _, stderr) = env.run(&["duplicates", "--method", "phash", "--threshold", "0.1"]);
    assert!(!ok && stderr.contains("--threshold"), "{stderr}");
    let (ok, _, stderr) = env.run(&["duplicates", "--method", "phash", "--distance", "65"]);
    assert!(!ok && stderr.contains("--distance"), "{stderr}");
}
