//! Model configurations: the CLIP architectures (named presets and HF `config.json`), the
//! image processor (`preprocessor_config.json`), and the id and version stored on each result.

use std::path::Path;

use candle_transformers::models::clip::text_model::{Activation, ClipTextConfig};
use serde::Deserialize;

pub use imgd_candle::model_info::{ModelInfo, fingerprint, require};
use imgd_candle::processor::{PilFilter, ProcessorConfig};

use crate::ClipError;
use crate::preprocess::Preprocess;

/// The text tower's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Width of the MLP inside each layer.
    pub intermediate_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Longest token sequence (77 for CLIP): texts are padded and truncated to it.
    pub max_position_embeddings: usize,
    /// The end-of-text token whose final hidden state is the text's feature. HF's rule: when
    /// it is 2 (configs older than the fix), the position of the largest token id is used
    /// instead, which is the end token in CLIP's vocabulary.
    pub eos_token_id: u32,
}

/// The image tower's shape.
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
    /// Input side in pixels (224 or 336).
    pub image_size: usize,
    /// Patch side in pixels (32, 16 or 14).
    pub patch_size: usize,
}

/// A CLIP architecture: both towers and the shared embedding width.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClipConfig {
    /// The text tower.
    pub text: TextConfig,
    /// The image tower.
    pub vision: VisionConfig,
    /// Width of the shared embedding space: the length of every vector.
    pub projection_dim: usize,
}

/// A named CLIP configuration that candle's CLIP implementation runs (quick-GELU, OpenAI
/// weights as published on the HF hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// The model id imgd stores with each result (`clip-vit-b32`).
    pub id: &'static str,
    /// The HF repository the weights come from.
    pub hf_repo: &'static str,
    /// Width of the vectors.
    pub dim: usize,
}

/// Every preset, the default first.
pub const PRESETS: [Preset; 4] = [
    Preset {
        id: "clip-vit-b32",
        hf_repo: "openai/clip-vit-base-patch32",
        dim: 512,
    },
    Preset {
        id: "clip-vit-b16",
        hf_repo: "openai/clip-vit-base-patch16",
        dim: 512,
    },
    Preset {
        id: "clip-vit-l14",
        hf_repo: "openai/clip-vit-large-patch14",
        dim: 768,
    },
    Preset {
        id: "clip-vit-l14-336",
        hf_repo: "openai/clip-vit-large-patch14-336",
        dim: 768,
    },
];

fn openai_text(hidden: usize, heads: usize) -> TextConfig {
    TextConfig {
        vocab_size: 49408,
        hidden_size: hidden,
        intermediate_size: 4 * hidden,
        num_hidden_layers: 12,
        num_attention_heads: heads,
        max_position_embeddings: 77,
        eos_token_id: 2,
    }
}

impl ClipConfig {
    /// OpenAI CLIP ViT-B/32 (the default): 224 px, 512-d vectors.
    pub fn vit_b32() -> Self {
        ClipConfig {
            text: openai_text(512, 8),
            vision: VisionConfig {
                hidden_size: 768,
                intermediate_size: 3072,
                num_hidden_layers: 12,
                num_attention_heads: 12,
                image_size: 224,
                patch_size: 32,
            },
            projection_dim: 512,
        }
    }

    /// OpenAI CLIP ViT-B/16: 224 px, 512-d vectors.
    pub fn vit_b16() -> Self {
        let mut config = Self::vit_b32();
        config.vision.patch_size = 16;
        config
    }

    /// OpenAI CLIP ViT-L/14: 224 px, 768-d vectors (the aesthetic predictor's input).
    pub fn vit_l14() -> Self {
        ClipConfig {
            text: openai_text(768, 12),
            vision: VisionConfig {
                hidden_size: 1024,
                intermediate_size: 4096,
                num_hidden_layers: 24,
                num_attention_heads: 16,
                image_size: 224,
                patch_size: 14,
            },
            projection_dim: 768,
        }
    }

    /// OpenAI CLIP ViT-L/14 at 336 px, 768-d vectors.
    pub fn vit_l14_336() -> Self {
        let mut config = Self::vit_l14();
        config.vision.image_size = 336;
        config
    }

    /// The preset called `id` (see [`PRESETS`]).
    pub fn preset(id: &str) -> Result<Self, ClipError> {
        match id {
            "clip-vit-b32" => Ok(Self::vit_b32()),
            "clip-vit-b16" => Ok(Self::vit_b16()),
            "clip-vit-l14" => Ok(Self::vit_l14()),
            "clip-vit-l14-336" => Ok(Self::vit_l14_336()),
            _ => Err(ClipError::Config(format!(
                "unknown CLIP preset `{id}` (known: {})",
                PRESETS.map(|p| p.id).join(", ")
            ))),
        }
    }

    /// The id of the preset with this architecture, if any. The tokenizer-dependent
    /// `eos_token_id` is not compared.
    pub fn preset_id(&self) -> Option<&'static str> {
        PRESETS.iter().map(|p| p.id).find(|id| {
            Self::preset(id).is_ok_and(|preset| {
                let mut text = self.text.clone();
                text.eos_token_id = preset.text.eos_token_id;
                preset.vision == self.vision
                    && preset.text == text
                    && preset.projection_dim == self.projection_dim
            })
        })
    }

    /// Parses HF's `config.json` of a `CLIPModel`; absent fields take HF's defaults. Refuses
    /// what candle's CLIP cannot run (an activation other than quick-GELU, a layer-norm
    /// epsilon other than 1e-5, other than 3 channels).
    pub fn from_hf_json(json: &str) -> Result<Self, ClipError> {
        let raw: HfConfig = serde_json::from_str(json)
            .map_err(|e| ClipError::Config(format!("config.json: {e}")))?;
        let text = raw.text_config.unwrap_or_default();
        let vision = raw.vision_config.unwrap_or_default();
        for (tower, act, eps) in [
            ("text", &text.hidden_act, text.layer_norm_eps),
            ("vision", &vision.hidden_act, vision.layer_norm_eps),
        ] {
            if act != "quick_gelu" {
                return Err(ClipError::Config(format!(
                    "the {tower} tower's activation is `{act}`; only `quick_gelu` (OpenAI CLIP) is supported"
                )));
            }
            if (eps - 1e-5).abs() > 1e-12 {
                return Err(ClipError::Config(format!(
                    "the {tower} tower's layer_norm_eps is {eps}; only 1e-5 is supported"
                )));
            }
        }
        if vision.num_channels != 3 {
            return Err(ClipError::Config(format!(
                "num_channels is {}; only RGB (3) is supported",
                vision.num_channels
            )));
        }
        let config = ClipConfig {
            text: TextConfig {
                vocab_size: text.vocab_size,
                hidden_size: text.hidden_size,
                intermediate_size: text.intermediate_size,
                num_hidden_layers: text.num_hidden_layers,
                num_attention_heads: text.num_attention_heads,
                max_position_embeddings: text.max_position_embeddings,
                eos_token_id: text.eos_token_id,
            },
            vision: VisionConfig {
                hidden_size: vision.hidden_size,
                intermediate_size: vision.intermediate_size,
                num_hidden_layers: vision.num_hidden_layers,
                num_attention_heads: vision.num_attention_heads,
                image_size: vision.image_size,
                patch_size: vision.patch_size,
            },
            projection_dim: raw.projection_dim,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ClipError> {
        let bad = |what: &str| Err(ClipError::Config(what.to_string()));
        if self.vision.patch_size == 0
            || !self
                .vision
                .image_size
                .is_multiple_of(self.vision.patch_size)
        {
            return bad("vision image_size must be a multiple of patch_size");
        }
        for (tower, hidden, heads) in [
            ("text", self.text.hidden_size, self.text.num_attention_heads),
            (
                "vision",
                self.vision.hidden_size,
                self.vision.num_attention_heads,
            ),
        ] {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                return Err(ClipError::Config(format!(
                    "{tower} hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
                )));
            }
        }
        if self.projection_dim == 0 || self.text.max_position_embeddings == 0 {
            return bad("projection_dim and max_position_embeddings must be positive");
        }
        Ok(())
    }

    /// candle's text tower configuration.
    pub fn candle_text(&self) -> ClipTextConfig {
        ClipTextConfig {
            vocab_size: self.text.vocab_size,
            embed_dim: self.text.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: self.text.intermediate_size,
            max_position_embeddings: self.text.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: self.text.num_hidden_layers,
            num_attention_heads: self.text.num_attention_heads,
            projection_dim: self.projection_dim,
        }
    }
}

impl Default for ClipConfig {
    /// ViT-B/32.
    fn default() -> Self {
        Self::vit_b32()
    }
}

#[derive(Deserialize)]
struct HfConfig {
    #[serde(default)]
    text_config: Option<HfText>,
    #[serde(default)]
    vision_config: Option<HfVision>,
    #[serde(default = "default_projection")]
    projection_dim: usize,
}

fn default_projection() -> usize {
    512
}

#[derive(Deserialize)]
#[serde(default)]
struct HfText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    max_position_embeddings: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    eos_token_id: u32,
}

impl Default for HfText {
    // HF's `CLIPTextConfig` defaults.
    fn default() -> Self {
        HfText {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
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
    num_channels: usize,
    image_size: usize,
    patch_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
}

impl Default for HfVision {
    // HF's `CLIPVisionConfig` defaults.
    fn default() -> Self {
        HfVision {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// Reads HF's `preprocessor_config.json` when the model folder has one; otherwise the OpenAI
/// processor for the model's input size. The crop must be the model's input.
pub fn load_preprocess(dir: &Path, image_size: usize) -> Result<Preprocess, ClipError> {
    let default = Preprocess::openai(image_size as u32);
    let Some(config) = ProcessorConfig::read(dir)? else {
        return Ok(default);
    };
    if config.filter(PilFilter::Bicubic)? != PilFilter::Bicubic {
        return Err(config.unsupported("a resample filter other than bicubic (3)"));
    }
    config.require_every_step()?;
    if config.do_center_crop == Some(false) {
        return Err(config.unsupported("do_center_crop=false"));
    }
    let shortest_edge = config
        .size
        .and_then(|size| size.shortest_edge)
        .unwrap_or(default.shortest_edge);
    let crop = config
        .crop_size
        .and_then(|crop| crop.height.or(crop.width))
        .unwrap_or(default.crop);
    if crop as usize != image_size {
        return Err(config.mismatch(&format!(
            "crop size {crop} differs from the model's image_size {image_size}"
        )));
    }
    Ok(Preprocess {
        shortest_edge,
        crop,
        normalize: config.normalize(&default.normalize),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_round_trip_through_their_ids() {
        for preset in PRESETS {
            let config = ClipConfig::preset(preset.id).unwrap();
            assert_eq!(config.preset_id(), Some(preset.id));
            assert_eq!(config.projection_dim, preset.dim);
        }
        assert_eq!(ClipConfig::default().preset_id(), Some("clip-vit-b32"));
        assert!(ClipConfig::preset("clip-vit-h14").is_err());
    }

    #[test]
    fn hf_config_of_vit_b32_parses_to_the_preset() {
        // The fields of openai/clip-vit-base-patch32's config.json that matter.
        let json = r#"{
            "architectures": ["CLIPModel"], "projection_dim": 512,
            "text_config": {"hidden_size": 512, "intermediate_size": 2048,
              "num_attention_heads": 8, "num_hidden_layers": 12, "eos_token_id": 2,
              "max_position_embeddings": 77, "vocab_size": 49408, "hidden_act": "quick_gelu"},
            "vision_config": {"hidden_size": 768, "intermediate_size": 3072,
              "num_attention_heads": 12, "num_hidden_layers": 12, "patch_size": 32,
              "image_size": 224}
        }"#;
        let config = ClipConfig::from_hf_json(json).unwrap();
        assert_eq!(config, ClipConfig::vit_b32());
        assert_eq!(config.text.eos_token_id, 2);
    }

    #[test]
    fn unsupported_configs_are_refused_with_a_reason() {
        let gelu = r#"{"vision_config": {"hidden_act": "gelu"}}"#;
        let err = ClipConfig::from_hf_json(gelu).unwrap_err().to_string();
        assert!(err.contains("quick_gelu"), "{err}");
        let patch = r#"{"vision_config": {"patch_size": 30}}"#;
        assert!(ClipConfig::from_hf_json(patch).is_err());
        assert!(ClipConfig::from_hf_json("not json").is_err());
    }
}
