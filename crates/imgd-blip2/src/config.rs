//! `config.json` of a `Blip2ForConditionalGeneration` checkpoint, as transformers writes it.

use std::path::Path;

use imgd_candle::ModelError;
use serde::Deserialize;

/// The whole model's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct Blip2Config {
    /// The vision tower.
    pub vision_config: VisionConfig,
    /// The Q-Former.
    pub qformer_config: QFormerConfig,
    /// The language model.
    pub text_config: TextConfig,
    /// How many learned query tokens the Q-Former turns into image tokens.
    pub num_query_tokens: usize,
    /// The id of the placeholder token the image's query embeddings replace.
    #[serde(default)]
    pub image_token_index: Option<u32>,
}

/// The vision tower (EVA ViT as BLIP-2 uses it).
#[derive(Debug, Clone, Deserialize)]
pub struct VisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP.
    pub intermediate_size: usize,
    /// Transformer layers (39 at full size).
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "vision_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the MLP.
    #[serde(default = "gelu")]
    pub hidden_act: String,
    /// Whether the attention has query and value biases.
    #[serde(default = "yes")]
    pub qkv_bias: bool,
}

/// The Q-Former: a BERT whose every `cross_attention_frequency`-th layer attends to the image.
#[derive(Debug, Clone, Deserialize)]
pub struct QFormerConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward layers.
    pub intermediate_size: usize,
    /// Layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// LayerNorm epsilon.
    #[serde(default = "bert_eps")]
    pub layer_norm_eps: f64,
    /// Layer `i` cross-attends to the image when `i % cross_attention_frequency == 0`.
    #[serde(default = "two")]
    pub cross_attention_frequency: usize,
    /// Width of the image features it attends to (the vision tower's).
    pub encoder_hidden_size: usize,
    /// Activation of the feed-forward layers.
    #[serde(default = "gelu")]
    pub hidden_act: String,
}

/// The language model, by `model_type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "model_type")]
pub enum TextConfig {
    /// OPT, decoder-only (`Salesforce/blip2-opt-2.7b`).
    #[serde(rename = "opt")]
    Opt(OptConfig),
    /// Flan-T5, encoder-decoder (`Salesforce/blip2-flan-t5-xl`).
    #[serde(rename = "t5")]
    T5(serde_json::Value),
}

/// OPT's configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct OptConfig {
    /// Vocabulary size (with the image placeholder token).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the feed-forward layers.
    pub ffn_dim: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Positions the learned position table holds (it has 2 more rows: OPT's offset).
    pub max_position_embeddings: usize,
    /// Width of the token embeddings (projected in and out when it differs from the hidden size).
    #[serde(default)]
    pub word_embed_proj_dim: Option<usize>,
    /// Pre-norm layers (every released OPT but 350m; imgd supports these only).
    #[serde(default = "yes")]
    pub do_layer_norm_before: bool,
    /// Whether the linear layers have biases.
    #[serde(default = "yes")]
    pub enable_bias: bool,
    /// Activation of the feed-forward layers.
    #[serde(default = "relu")]
    pub activation_function: String,
    /// Beginning-of-sequence token.
    pub bos_token_id: u32,
    /// End-of-sequence token.
    pub eos_token_id: u32,
    /// Padding token.
    pub pad_token_id: u32,
    /// Whether the output head shares the token embeddings.
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Kept for old checkpoints: no final LayerNorm.
    #[serde(default, rename = "_remove_final_layer_norm")]
    pub remove_final_layer_norm: bool,
}

impl OptConfig {
    /// Width of the token embeddings.
    pub fn embed_dim(&self) -> usize {
        self.word_embed_proj_dim.unwrap_or(self.hidden_size)
    }
}

fn vision_eps() -> f64 {
    1e-6
}
fn bert_eps() -> f64 {
    1e-12
}
fn two() -> usize {
    2
}
fn yes() -> bool {
    true
}
fn gelu() -> String {
    "gelu".into()
}
fn relu() -> String {
    "relu".into()
}

impl Blip2Config {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let path = imgd_candle::model_info::require(dir, "config.json")?;
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        serde_json::from_str(&text)
            .map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
    }
}

/// An activation by its transformers name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The exact (erf) GELU, transformers' `gelu`.
    Gelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// The activation `name` names.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "relu" => Ok(Activation::Relu),
            other => Err(ModelError::Config(format!(
                "activation `{other}` is not supported (gelu, relu)"
            ))),
        }
    }

    /// Applies it.
    pub fn apply(self, xs: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Activation::Gelu => xs.gelu_erf(),
            Activation::Relu => xs.relu(),
        }
    }
}
