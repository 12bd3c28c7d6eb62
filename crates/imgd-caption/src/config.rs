//! Model configuration: the BLIP architecture (named presets and HF `config.json`), the image
//! processor (`preprocessor_config.json`), the questions, and the id and version stored on
//! each result.

use std::path::Path;

use candle_nn::Activation;
use candle_transformers::models::{blip, blip_text};
use serde::{Deserialize, Serialize};

use crate::CaptionError;
use crate::preprocess::Preprocess;

pub use imgd_candle::model_info::{ModelInfo, require};

/// The vision tower's shape (a ViT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionConfig {
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP inside each layer.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input side in pixels (384).
    pub image_size: usize,
    /// Patch side in pixels (16).
    pub patch_size: usize,
}

/// The text decoder's shape (BERT with cross-attention to the image) and its special tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextConfig {
    /// Tokens in the vocabulary (30524: bert-base-uncased plus `[DEC]` and `[ENC]`).
    pub vocab_size: usize,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP inside each layer.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest token sequence, prompt and generated tokens together.
    pub max_position_embeddings: usize,
    /// The token every decode starts from (`[DEC]`, 30522).
    pub bos_token_id: u32,
    /// The token that ends a decode (`[SEP]`, 102).
    pub sep_token_id: u32,
    /// The padding token (`[PAD]`, 0), fed to rows that already ended.
    pub pad_token_id: u32,
}

/// A BLIP captioning architecture: both parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlipConfig {
    /// The image encoder.
    pub vision: VisionConfig,
    /// The text decoder.
    pub text: TextConfig,
}

/// A named BLIP configuration (the HF `BlipForConditionalGeneration` checkpoints).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The model id imgd stores with each result (`blip-base-caption`).
    pub id: &'static str,
    /// The HF repository the weights come from.
    pub hf_repo: &'static str,
}

/// Every preset, the default first.
pub const PRESETS: [Preset; 2] = [
    Preset {
        id: "blip-base-caption",
        hf_repo: "Salesforce/blip-image-captioning-base",
    },
    Preset {
        id: "blip-large-caption",
        hf_repo: "Salesforce/blip-image-captioning-large",
    },
];

/// The text decoder of both released captioners.
fn released_text() -> TextConfig {
    TextConfig {
        vocab_size: 30524,
        hidden_size: 768,
        intermediate_size: 3072,
        num_hidden_layers: 12,
        num_attention_heads: 12,
        max_position_embeddings: 512,
        bos_token_id: 30522,
        sep_token_id: 102,
        pad_token_id: 0,
    }
}

impl BlipConfig {
    /// `Salesforce/blip-image-captioning-base` (the default): ViT-B/16 at 384 px.
    pub fn base() -> Self {
        BlipConfig {
            vision: VisionConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                image_size: 384,
                patch_size: 16,
            },
            text: released_text(),
        }
    }

    /// `Salesforce/blip-image-captioning-large`: ViT-L/16 at 384 px.
    pub fn large() -> Self {
        BlipConfig {
            vision: VisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                image_size: 384,
                patch_size: 16,
            },
            text: released_text(),
        }
    }

    /// The preset called `id` (see [`PRESETS`]).
    pub fn preset(id: &str) -> Result<Self, CaptionError> {
        match id {
            "blip-base-caption" => Ok(Self::base()),
            "blip-large-caption" => Ok(Self::large()),
            _ => Err(CaptionError::Config(format!(
                "unknown BLIP preset `{id}` (known: {})",
                PRESETS.map(|p| p.id).join(", ")
            ))),
        }
    }

    /// The id of the preset with this architecture, if any (the vision tower and the text
    /// decoder's depth, width and vocabulary are compared).
    pub fn preset_id(&self) -> Option<&'static str> {
        PRESETS.iter().map(|p| p.id).find(|id| {
            Self::preset(id).is_ok_and(|preset| {
                preset.vision == self.vision
                    && preset.text.hidden_size == self.text.hidden_size
                    && preset.text.num_hidden_layers == self.text.num_hidden_layers
                    && preset.text.vocab_size == self.text.vocab_size
            })
        })
    }

    /// Parses HF's `config.json` of a `BlipForConditionalGeneration`; absent fields take HF's
    /// defaults. Refuses what candle's BLIP cannot run (an activation other than GELU, a text
    /// model that is not a decoder, a decoder that does not read the vision tower's width).
    pub fn from_hf_json(json: &str) -> Result<Self, CaptionError> {
        let raw: HfConfig = serde_json::from_str(json)
            .map_err(|e| CaptionError::Config(format!("config.json: {e}")))?;
        let text = raw.text_config.unwrap_or_default();
        let vision = raw.vision_config.unwrap_or_default();
        for (part, act) in [("text", &text.hidden_act), ("vision", &vision.hidden_act)] {
            if act != "gelu" {
                return Err(CaptionError::Config(format!(
                    "the {part} model's activation is `{act}`; only `gelu` (BLIP) is supported"
                )));
            }
        }
        if (text.layer_norm_eps - 1e-12).abs() > 1e-15
            || (vision.layer_norm_eps - 1e-5).abs() > 1e-12
        {
            return Err(CaptionError::Config(format!(
                "layer_norm_eps is {} (text) / {} (vision); only BLIP's 1e-12 / 1e-5 are supported",
                text.layer_norm_eps, vision.layer_norm_eps
            )));
        }
        if !text.is_decoder {
            return Err(CaptionError::Config(
                "text_config.is_decoder is false: not a captioning decoder".into(),
            ));
        }
        if text.encoder_hidden_size != vision.hidden_size {
            return Err(CaptionError::Config(format!(
                "the decoder reads {}-wide image features but the vision tower is {} wide",
                text.encoder_hidden_size, vision.hidden_size
            )));
        }
        let config = BlipConfig {
            vision: VisionConfig {
                hidden_size: vision.hidden_size,
                intermediate_size: vision.intermediate_size,
                num_hidden_layers: vision.num_hidden_layers,
                num_attention_heads: vision.num_attention_heads,
                image_size: vision.image_size,
                patch_size: vision.patch_size,
            },
            text: TextConfig {
                vocab_size: text.vocab_size,
                hidden_size: text.hidden_size,
                intermediate_size: text.intermediate_size,
                num_hidden_layers: text.num_hidden_layers,
                num_attention_heads: text.num_attention_heads,
                max_position_embeddings: text.max_position_embeddings,
                bos_token_id: text.bos_token_id,
                sep_token_id: text.sep_token_id,
                pad_token_id: text.pad_token_id,
            },
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), CaptionError> {
        let bad = |what: String| Err(CaptionError::Config(what));
        let v = &self.vision;
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return bad("vision image_size must be a multiple of patch_size".into());
        }
        for (part, hidden, heads) in [
            ("text", self.text.hidden_size, self.text.num_attention_heads),
            ("vision", v.hidden_size, v.num_attention_heads),
        ] {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                return bad(format!(
                    "{part} hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
                ));
            }
        }
        let t = &self.text;
        for (name, id) in [
            ("bos", t.bos_token_id),
            ("sep", t.sep_token_id),
            ("pad", t.pad_token_id),
        ] {
            if id as usize >= t.vocab_size {
                return bad(format!(
                    "{name}_token_id {id} is outside the vocabulary ({} tokens)",
                    t.vocab_size
                ));
            }
        }
        if t.max_position_embeddings < 2 {
            return bad("max_position_embeddings must be at least 2".into());
        }
        Ok(())
    }

    /// candle's configuration of the whole model.
    pub fn candle(&self) -> blip::Config {
        let v = &self.vision;
        let t = &self.text;
        blip::Config {
            text_config: blip_text::Config {
                vocab_size: t.vocab_size,
                hidden_size: t.hidden_size,
                encoder_hidden_size: v.hidden_size,
                intermediate_size: t.intermediate_size,
                projection_dim: t.hidden_size,
                num_hidden_layers: t.num_hidden_layers,
                num_attention_heads: t.num_attention_heads,
                max_position_embeddings: t.max_position_embeddings,
                hidden_act: Activation::Gelu,
                layer_norm_eps: 1e-12,
                is_decoder: true,
            },
            vision_config: blip::VisionConfig {
                hidden_size: v.hidden_size,
                intermediate_size: v.intermediate_size,
                projection_dim: 512,
                num_hidden_layers: v.num_hidden_layers,
                num_attention_heads: v.num_attention_heads,
                image_size: v.image_size,
                patch_size: v.patch_size,
                hidden_act: Activation::Gelu,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 512,
            image_text_hidden_size: 256,
        }
    }

    /// Image tokens per image: one per patch plus the class token.
    pub fn image_tokens(&self) -> usize {
        let side = self.vision.image_size / self.vision.patch_size;
        side * side + 1
    }
}

impl Default for BlipConfig {
    /// `blip-base-caption`.
    fn default() -> Self {
        Self::base()
    }
}

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    text_config: Option<HfText>,
    #[serde(default)]
    vision_config: Option<HfVision>,
}

#[derive(Deserialize)]
#[serde(default)]
struct HfText {
    vocab_size: usize,
    hidden_size: usize,
    encoder_hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    is_decoder: bool,
    bos_token_id: u32,
    sep_token_id: u32,
    pad_token_id: u32,
}

impl Default for HfText {
    // HF's `BlipTextConfig` defaults.
    fn default() -> Self {
        HfText {
            vocab_size: 30524,
            hidden_size: 768,
            encoder_hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 512,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            is_decoder: true,
            bos_token_id: 30522,
            sep_token_id: 102,
            pad_token_id: 0,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct HfVision {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for HfVision {
    // HF's `BlipVisionConfig` defaults.
    fn default() -> Self {
        HfVision {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 384,
            patch_size: 16,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// Reads HF's `preprocessor_config.json` when the model folder has one; otherwise the
/// released BLIP processor for the model's input size. The output size must be the model's.
pub fn load_preprocess(dir: &Path, image_size: usize) -> Result<Preprocess, CaptionError> {
    Preprocess::load(dir, image_size, crate::preprocess::blip(image_size as u32))
}

/// One configured question: a name (the key of its answer in `data.answers`), the text prefix
/// BLIP continues, and the question BLIP-2 answers.
///
/// BLIP (`blip-base-caption`) is a captioning model with no VQA head, so it asks a question as
/// a prompted continuation: "the lighting is" is fed after `[DEC]` and the decoder completes
/// it ("the lighting is *soft and warm*"); the completion is the answer. BLIP-2 answers real
/// questions, asked as "Question: How is the lighting? Answer:" after the image; a question
/// with no `question` is a continuation of its `prefix` there too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// The answer's key: short, unique, e.g. `lighting`.
    pub name: String,
    /// The prompt BLIP's answer continues, e.g. `the lighting is`.
    #[serde(default)]
    pub prefix: String,
    /// The question BLIP-2 answers, e.g. `How is the lighting?`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<String>,
}

impl Question {
    /// A question called `name` asked with `prefix` (a continuation, for either model).
    pub fn new(name: impl Into<String>, prefix: impl Into<String>) -> Self {
        Question {
            name: name.into(),
            prefix: prefix.into(),
            question: None,
        }
    }

    /// This question with `question` as what BLIP-2 is asked.
    pub fn asking(mut self, question: impl Into<String>) -> Self {
        self.question = Some(question.into());
        self
    }

    /// The default questions: scene type, main subject, lighting and mood.
    pub fn defaults() -> Vec<Question> {
        vec![
            Question::new("scene", "a photo of a scene that is")
                .asking("What kind of place is this?"),
            Question::new("subject", "the main subject is")
                .asking("What is the main subject of this photo?"),
            Question::new("lighting", "the lighting is").asking("How is the lighting?"),
            Question::new("mood", "the mood is").asking("What is the mood of this photo?"),
        ]
    }
}

/// How the caption and the answers are decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptionSettings {
    /// The caption's prompt: empty for HF's unconditional captioning (from `[DEC]` alone, the
    /// default), or a prefix such as `a picture of`, which then starts the stored caption.
    pub caption_prompt: String,
    /// Most tokens generated for the caption.
    pub caption_max_tokens: usize,
    /// The questions, each decoded from the same image embeddings as the caption.
    pub questions: Vec<Question>,
    /// Most tokens generated for each answer.
    pub answer_max_tokens: usize,
}

impl Default for CaptionSettings {
    fn default() -> Self {
        CaptionSettings {
            caption_prompt: String::new(),
            caption_max_tokens: 30,
            questions: Question::defaults(),
            answer_max_tokens: 10,
        }
    }
}

impl CaptionSettings {
    /// The defaults with these questions.
    pub fn with_questions(questions: &[Question]) -> Self {
        CaptionSettings {
            questions: questions.to_vec(),
            ..Self::default()
        }
    }

    /// Refuses unnamed or duplicate questions, questions with neither a prefix nor a
    /// question, and zero token limits. (BLIP needs the prefix; its prompts check that.)
    pub fn validate(&self) -> Result<(), CaptionError> {
        let bad = |what: String| Err(CaptionError::Config(what));
        if self.caption_max_tokens == 0 || self.answer_max_tokens == 0 {
            return bad("the caption and answer token limits must be positive".into());
        }
        for (i, q) in self.questions.iter().enumerate() {
            if q.name.trim().is_empty() {
                return bad(format!("question {} has no name", i + 1));
            }
            let asked = q
                .question
                .as_deref()
                .is_some_and(|text| !text.trim().is_empty());
            if q.prefix.trim().is_empty() && !asked {
                return bad(format!(
                    "question `{}` has neither a `prefix` nor a `question`",
                    q.name
                ));
            }
            if self.questions[..i].iter().any(|other| other.name == q.name) {
                return bad(format!("question `{}` is configured twice", q.name));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_their_ids() {
        for preset in PRESETS {
            let config = BlipConfig::preset(preset.id).unwrap();
            assert_eq!(config.preset_id(), Some(preset.id));
        }
        assert_eq!(BlipConfig::default().image_tokens(), 577);
        assert!(BlipConfig::preset("blip2-opt").is_err());
    }

    #[test]
    fn hf_config_of_the_base_captioner_parses_to_the_preset() {
        // The fields of Salesforce/blip-image-captioning-base's config.json that matter.
        let json = r#"{
            "architectures": ["BlipForConditionalGeneration"],
            "text_config": {"num_attention_heads": 12, "bos_token_id": 30522,
              "sep_token_id": 102, "pad_token_id": 0, "vocab_size": 30524},
            "vision_config": {"hidden_size": 768, "image_size": 384, "patch_size": 16}
        }"#;
        let config = BlipConfig::from_hf_json(json).unwrap();
        assert_eq!(config, BlipConfig::base());
        assert_eq!(config.preset_id(), Some("blip-base-caption"));
    }

    #[test]
    fn unsupported_configs_are_refused_with_a_reason() {
        let act = r#"{"vision_config": {"hidden_act": "quick_gelu"}}"#;
        let err = BlipConfig::from_hf_json(act).unwrap_err().to_string();
        assert!(err.contains("gelu"), "{err}");
        let width = r#"{"vision_config": {"hidden_size": 1024, "num_attention_heads": 16}}"#;
        assert!(BlipConfig::from_hf_json(width).is_err());
        let bos = r#"{"text_config": {"vocab_size": 100}}"#;
        assert!(BlipConfig::from_hf_json(bos).is_err());
        assert!(BlipConfig::from_hf_json("not json").is_err());
    }

    #[test]
    fn settings_refuse_bad_questions() {
        assert!(CaptionSettings::default().validate().is_ok());
        let twice = CaptionSettings::with_questions(&[
            Question::new("mood", "the mood is"),
            Question::new("mood", "the feeling is"),
        ]);
        assert!(twice.validate().is_err());
        let empty = CaptionSettings::with_questions(&[Question::new("x", " ")]);
        assert!(empty.validate().is_err());
        let unnamed = CaptionSettings::with_questions(&[Question::new("", "the mood is")]);
        assert!(unnamed.validate().is_err());
    }
}
