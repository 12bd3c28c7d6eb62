//! BLIP-2 as the caption module's model: the runner on the tiny random-weight BLIP-2 checkpoints
//! (with OPT and with Flan-T5) that `scripts/make-fixtures.py blip2` made into
//! `fixtures/blip2/`, whose rows must carry the texts the reference's `generate` decoded
//! (greedy, and beam search when the folder's `generation_config.json` asks for it), each image
//! encoded once.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use candle_core::{DType, Device};
use image::RgbImage;
use imgd_blip2::generation::Generation;
use imgd_blip2::model::Blip2;
use imgd_blip2::text::TextCodec;
use imgd_caption::blip2::{Blip2Captioner, is_blip2};
use imgd_caption::config::{CaptionSettings, Question};
use imgd_caption::{Captioner, runner, runner_from};
use imgd_core::{ResultRow, SqlValue};
use imgd_infer::batcher::{BatchConfig, CloseReason};
use imgd_infer::runner::{ImageInput, JobKey, ModelRunner};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/blip2")
}

/// A checkpoint of the fixtures: its folder and the reference's record of it.
#[derive(Clone, Copy)]
struct Checkpoint {
    folder: &'static str,
    reference: &'static str,
}

const OPT: Checkpoint = Checkpoint {
    folder: "tiny-blip2-opt",
    reference: "reference.json",
};

const FLAN_T5: Checkpoint = Checkpoint {
    folder: "tiny-blip2-flan-t5",
    reference: "reference-flan-t5.json",
};

const CHECKPOINTS: [Checkpoint; 2] = [OPT, FLAN_T5];

impl Checkpoint {
    fn dir(self) -> PathBuf {
        fixtures().join(self.folder)
    }

    fn reference(self) -> Value {
        serde_json::from_str(&std::fs::read_to_string(fixtures().join(self.reference)).unwrap())
            .unwrap()
    }

    /// A copy of the checkpoint's folder with `generation_config` written into it.
    fn with_generation_config(self, name: &str, generation_config: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "imgd-blip2-{}-{name}-{}",
            self.folder,
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(self.dir()).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
        std::fs::write(dir.join("generation_config.json"), generation_config).unwrap();
        dir
    }
}

/// The reference's images as the caption module's 384-px tiers.
fn tiers(reference: &Value) -> Vec<Vec<(u32, Arc<RgbImage>)>> {
    reference["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|name| {
            let path = fixtures()
                .join("../blip/images")
                .join(name.as_str().unwrap());
            vec![(384, Arc::new(image::open(path).unwrap().to_rgb8()))]
        })
        .collect()
}

/// The reference's two questions, asked as questions.
fn questions(reference: &Value) -> Vec<Question> {
    ["q1", "q2"]
        .iter()
        .map(|name| {
            let prompt = reference["prompt_texts"][name].as_str().unwrap();
            let question = prompt
                .strip_prefix("Question: ")
                .and_then(|rest| rest.strip_suffix(" Answer:"))
                .unwrap();
            Question::new(*name, "").asking(question)
        })
        .collect()
}

fn settings(reference: &Value) -> CaptionSettings {
    let max_new = reference["max_new_tokens"].as_u64().unwrap() as usize;
    CaptionSettings {
        caption_prompt: String::new(),
        caption_max_tokens: max_new,
        questions: questions(reference),
        answer_max_tokens: max_new,
    }
}

/// Every image of `tiers` through `runner` in one batch: its rows, in image order.
fn run_all(runner: &mut dyn ModelRunner, tiers: &[Vec<(u32, Arc<RgbImage>)>]) -> Vec<ResultRow> {
    for (i, tier) in tiers.iter().enumerate() {
        let key = JobKey {
            image_id: i as i64,
            job_id: i as i64,
        };
        let input = ImageInput {
            image_id: i as i64,
            path: "x.png",
            tiers: tier,
        };
        runner.submit(key, &input).unwrap();
    }
    runner
        .run(CloseReason::Draining)
        .into_iter()
        .enumerate()
        .map(|(i, (key, row))| {
            assert_eq!(key.image_id, i as i64);
            row.unwrap()
        })
        .collect()
}

/// The reference's decoded texts of `decoding` (`greedy`, `beam3`, ...) for `prompt`.
fn texts(reference: &Value, decoding: &str, prompt: &str) -> Vec<String> {
    reference["generated_texts"][format!("{decoding}.{prompt}")]
        .as_array()
        .unwrap()
        .iter()
        .map(|text| text.as_str().unwrap().trim().to_string())
        .collect()
}

/// Checks each row's caption and answers against the reference's `decoding`.
fn assert_rows_match(rows: &[ResultRow], reference: &Value, decoding: &str) {
    let captions = texts(reference, decoding, "caption");
    let (q1, q2) = (
        texts(reference, decoding, "q1"),
        texts(reference, decoding, "q2"),
    );
    assert_eq!(rows.len(), captions.len());
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(
            row.columns,
            vec![("caption", SqlValue::Text(captions[i].clone()))],
            "{decoding}, image {i}"
        );
        assert_eq!(
            row.data["answers"]["q1"],
            q1[i].as_str(),
            "{decoding}, image {i}"
        );
        assert_eq!(
            row.data["answers"]["q2"],
            q2[i].as_str(),
            "{decoding}, image {i}"
        );
    }
}

#[test]
fn the_runner_picks_blip2_by_its_config_and_encodes_each_image_once() {
    assert!(!is_blip2(&fixtures().join("../blip/tiny-blip")));
    for checkpoint in CHECKPOINTS {
        assert!(is_blip2(&checkpoint.dir()));
        let reference = checkpoint.reference();
        let batch = BatchConfig::new(8, Duration::from_secs(60));
        let (mut runner, encodes) = runner(
            &checkpoint.dir(),
            &Device::Cpu,
            DType::F16,
            batch,
            &questions(&reference),
        )
        .unwrap();
        assert_eq!(runner.module(), imgd_caption::CAPTION);
        assert_eq!(runner.model_name(), checkpoint.folder);
        let rows = run_all(runner.as_mut(), &tiers(&reference));
        assert_eq!(encodes.load(Ordering::Relaxed), 2);
        for row in &rows {
            assert_eq!(row.model_id.as_deref(), Some(checkpoint.folder));
            assert_eq!(row.model_version.as_deref(), Some("fixture-1"));
            let answers = row.data["answers"].as_object().unwrap();
            let mut names: Vec<&str> = answers.keys().map(String::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, ["q1", "q2"]);
        }
    }
}

#[test]
fn rows_carry_the_reference_greedy_caption_and_answers() {
    for checkpoint in CHECKPOINTS {
        let reference = checkpoint.reference();
        let captioner = Blip2Captioner::load(&checkpoint.dir(), &Device::Cpu, DType::F32).unwrap();
        let (mut runner, encodes) = runner_from(
            captioner,
            BatchConfig::new(8, Duration::from_secs(60)),
            &settings(&reference),
        )
        .unwrap();
        let rows = run_all(runner.as_mut(), &tiers(&reference));
        assert_eq!(encodes.load(Ordering::Relaxed), 2);
        assert_rows_match(&rows, &reference, "greedy");
    }
}

#[test]
fn beam_search_and_penalties_follow_the_folders_generation_config() {
    for checkpoint in CHECKPOINTS {
        let reference = checkpoint.reference();
        for (decoding, config) in [
            ("beam3", r#"{"num_beams": 3}"#),
            (
                "beam3_penalised",
                r#"{"num_beams": 3, "length_penalty": -1.0, "repetition_penalty": 1.5,
                    "min_new_tokens": 2}"#,
            ),
            (
                "greedy_penalised",
                r#"{"repetition_penalty": 1.5, "min_new_tokens": 3}"#,
            ),
            ("beam3_min_length", r#"{"num_beams": 3, "min_length": 13}"#),
        ] {
            let dir = checkpoint.with_generation_config(decoding, config);
            let captioner = Blip2Captioner::load(&dir, &Device::Cpu, DType::F32).unwrap();
            let (mut runner, _) = runner_from(
                captioner,
                BatchConfig::new(8, Duration::from_secs(60)),
                &settings(&reference),
            )
            .unwrap();
            let rows = run_all(runner.as_mut(), &tiers(&reference));
            assert_rows_match(&rows, &reference, decoding);
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn a_prefix_is_continued_and_a_caption_prompt_starts_the_caption() {
    for checkpoint in CHECKPOINTS {
        let reference = checkpoint.reference();
        let mut settings = settings(&reference);
        settings.caption_prompt = "a photo of".into();
        settings.questions = vec![Question::new("mood", "the mood is")];
        let captioner = Blip2Captioner::load(&checkpoint.dir(), &Device::Cpu, DType::F32).unwrap();
        let pixels: Vec<Vec<f32>> = tiers(&reference)
            .iter()
            .map(|tier| captioner.preprocess(&tier[0].1).unwrap())
            .collect();
        let prompts = captioner.prompts(&settings).unwrap();
        let described = captioner.describe_pixels(&pixels, &prompts).unwrap();

        // The same prompts through the model directly.
        let model = Blip2::load(&checkpoint.dir(), &Device::Cpu).unwrap();
        let codec = TextCodec::load(&checkpoint.dir(), model.bos_token_id()).unwrap();
        let batch =
            candle_core::Tensor::from_vec(pixels.concat(), (2, 3, 32, 32), &Device::Cpu).unwrap();
        let projected = model.encode(&batch).unwrap().projected;
        let prompts = [
            codec.prompt("a photo of").unwrap(),
            codec.prompt("the mood is").unwrap(),
        ];
        let direct = model
            .generate(&projected, &prompts, Generation::greedy(8))
            .unwrap();
        for (description, direct) in described.iter().zip(&direct) {
            let caption = codec.decode(&direct[0].tokens).unwrap();
            assert_eq!(description.caption, format!("a photo of {caption}").trim());
            assert_eq!(
                description.answers,
                vec![("mood".to_string(), codec.decode(&direct[1].tokens).unwrap())]
            );
        }
    }
}

#[test]
fn a_question_with_neither_prefix_nor_question_is_refused() {
    let batch = BatchConfig::new(1, Duration::ZERO);
    let empty = [Question::new("mood", " ")];
    let Err(err) = runner(&OPT.dir(), &Device::Cpu, DType::F32, batch, &empty) else {
        panic!("an empty question was accepted")
    };
    assert!(err.to_string().contains("neither"), "{err}");
    // A question longer than OPT's positions, refused at load with the reason; Flan-T5's
    // positions are relative, without a limit.
    let long = [Question::new("long", "").asking("is it ".repeat(40))];
    let Err(err) = runner(&OPT.dir(), &Device::Cpu, DType::F32, batch, &long) else {
        panic!("a question past the language model's positions was accepted")
    };
    assert!(err.to_string().contains("positions"), "{err}");
    assert!(runner(&FLAN_T5.dir(), &Device::Cpu, DType::F32, batch, &long).is_ok());
    // So are more beams than imgd decodes with.
    let dir = OPT.with_generation_config("beams", r#"{"num_beams": 1000}"#);
    let Err(err) = Blip2Captioner::load(&dir, &Device::Cpu, DType::F32) else {
        panic!("1000 beams were accepted")
    };
    assert!(err.to_string().contains("num_beams"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
    // BLIP needs the prefix: a question-only entry is refused there, with the reason.
    let only_question = [Question::new("mood", "").asking("What is the mood?")];
    let blip = fixtures().join("../blip/tiny-blip");
    let Err(err) = runner(&blip, &Device::Cpu, DType::F32, batch, &only_question) else {
        panic!("BLIP accepted a question without a prefix")
    };
    assert!(err.to_string().contains("prefix"), "{err}");
}
