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
    T5(T5Config),
}

/// T5's configuration (Flan-T5 is T5 v1.1: gated GELU, an output head of its own).
#[derive(Debug, Clone, Deserialize)]
pub struct T5Config {
    /// Vocabulary size (with the image placeholder token).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Width of one attention head.
    pub d_kv: usize,
    /// Width of the feed-forward layers.
    pub d_ff: usize,
    /// Encoder layers.
    pub num_layers: usize,
    /// Decoder layers (the encoder's count when absent).
    #[serde(default)]
    pub num_decoder_layers: Option<usize>,
    /// Attention heads.
    pub num_heads: usize,
    /// Buckets of relative positions (half each way in the encoder).
    #[serde(default = "t5_buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distances from this on share the last bucket.
    #[serde(default = "t5_max_distance")]
    pub relative_attention_max_distance: usize,
    /// RMS norm epsilon.
    #[serde(default = "vision_eps")]
    pub layer_norm_epsilon: f64,
    /// The feed-forward layers: `relu`, `gelu`, `silu`, or `gated-` one of them (`gated-gelu`
    /// is Flan-T5's, with the tanh approximation of GELU).
    #[serde(default = "relu")]
    pub feed_forward_proj: String,
    /// Padding token.
    #[serde(default)]
    pub pad_token_id: u32,
    /// End-of-sequence token.
    #[serde(default = "one")]
    pub eos_token_id: u32,
    /// The decoder's first token (the padding token when absent).
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    /// Whether the output head shares the token embeddings (original T5; the decoder's output is
    /// then scaled by `d_model^-0.5`). Flan-T5 says `false`.
    #[serde(default)]
    pub tie_word_embeddings: Option<bool>,
    /// Whether the decoder's output is scaled by `d_model^-0.5`, as transformers 5 writes it
    /// (it then always says `tie_word_embeddings: true`).
    #[serde(default)]
    pub scale_decoder_outputs: Option<bool>,
}

impl T5Config {
    /// Decoder layers.
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    /// The decoder's first token.
    pub fn decoder_start(&self) -> u32 {
        self.decoder_start_token_id.unwrap_or(self.pad_token_id)
    }

    /// Whether the decoder's output is scaled by `d_model^-0.5` before the output head.
    pub fn scales_decoder_output(&self) -> bool {
        self.scale_decoder_outputs
            .unwrap_or(self.tie_word_embeddings != Some(false))
    }
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

fn t5_buckets() -> usize {
    32
}
fn t5_max_distance() -> usize {
    128
}
fn one() -> u32 {
    1
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
    /// The tanh approximation of GELU, transformers' `gelu_new`.
    GeluTanh,
    /// `relu`.
    Relu,
    /// `silu`.
    Silu,
}

impl Activation {
    /// The activation `name` names.
    pub fn parse(name: &str) -> Result<Self, ModelError> {
        match name {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            "silu" => Ok(Activation::Silu),
            other => Err(ModelError::Config(format!(
                "activation `{other}` is not supported (gelu, gelu_new, relu, silu)"
            ))),
        }
    }

    /// Applies it.
    pub fn apply(self, xs: &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor> {
        match self {
            Activation::Gelu => xs.gelu_erf(),
            Activation::GeluTanh => xs.gelu(),
            Activation::Relu => xs.relu(),
            Activation::Silu => xs.silu(),
        }
    }
}
