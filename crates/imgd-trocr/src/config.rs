//! The model configuration: HF `VisionEncoderDecoderModel` `config.json` of a TrOCR checkpoint
//! (a ViT or DeiT encoder, a `trocr` decoder), the recogniser's settings, and the id and version
//! stored on each row.

use std::fs;
use std::path::Path;

use candle_nn::Activation;
use serde::Deserialize;

use crate::TrocrError;

pub use imgd_candle::model_info::ModelInfo;

/// Which image encoder the checkpoint has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderKind {
    /// HF `ViTModel` (trocr-base and -large): a class token before the patches.
    Vit,
    /// HF `DeiTModel` (trocr-small): a class and a distillation token before the patches.
    Deit,
}

impl EncoderKind {
    /// Tokens before the patch tokens.
    pub fn extra_tokens(self) -> usize {
        match self {
            EncoderKind::Vit => 1,
            EncoderKind::Deit => 2,
        }
    }
}

/// The image encoder's shape.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// ViT or DeiT.
    pub kind: EncoderKind,
    /// Width of the transformer.
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads.
    pub num_attention_heads: usize,
    /// Width of the MLP inside each layer.
    pub intermediate_size: usize,
    /// The MLP's activation.
    pub hidden_act: Activation,
    /// Layer-norm epsilon (1e-12 for the released models).
    pub layer_norm_eps: f64,
    /// Input side in pixels (384 for the released models).
    pub image_size: usize,
    /// Patch side in pixels (16).
    pub patch_size: usize,
    /// Input channels (3).
    pub num_channels: usize,
    /// Whether the query, key and value projections have biases.
    pub qkv_bias: bool,
}

impl EncoderConfig {
    /// Patches per image.
    pub fn patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }

    /// Encoder tokens per image: the patches and the class (and distillation) token.
    pub fn tokens(&self) -> usize {
        self.patches() + self.kind.extra_tokens()
    }

    /// candle's ViT configuration of the same shape (its encoder layers are DeiT's too).
    pub fn candle(&self) -> candle_transformers::models::vit::Config {
        candle_transformers::models::vit::Config {
            hidden_size: self.hidden_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            intermediate_size: self.intermediate_size,
            hidden_act: self.hidden_act,
            layer_norm_eps: self.layer_norm_eps,
            image_size: self.image_size,
            patch_size: self.patch_size,
            num_channels: self.num_channels,
            qkv_bias: self.qkv_bias,
        }
    }
}

/// The text decoder's shape (HF `TrOCRConfig`) and its special tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Rows of the embedding and the output projection (64044 for trocr-small: the tokenizer's
    /// 64002 tokens, padded).
    pub vocab_size: usize,
    /// Width of the transformer (`d_model`).
    pub d_model: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Width of the feed-forward layers.
    pub ffn_dim: usize,
    /// The feed-forward activation (ReLU for trocr-small, GELU for trocr-base).
    pub activation: Activation,
    /// Longest token sequence, start token included.
    pub max_position_embeddings: usize,
    /// Multiply token embeddings by √d_model.
    pub scale_embedding: bool,
    /// Learned positions (offset 2, as BART); sinusoidal ones otherwise (trocr-large-printed).
    pub learned_positions: bool,
    /// A layer norm after the embeddings.
    pub layernorm_embedding: bool,
    /// The output projection is the token embedding matrix.
    pub tie_word_embeddings: bool,
    /// The width of what the cross-attention reads (the encoder's, possibly projected).
    pub cross_attention_hidden_size: usize,
    /// The padding token (1).
    pub pad_token_id: u32,
    /// The end of a text (2).
    pub eos_token_id: u32,
    /// The token every decode starts from (2 for the released models: `</s>`).
    pub decoder_start_token_id: u32,
}

/// A TrOCR checkpoint's architecture: both parts.
#[derive(Debug, Clone, PartialEq)]
pub struct TrocrConfig {
    /// The image encoder.
    pub encoder: EncoderConfig,
    /// The text decoder.
    pub decoder: DecoderConfig,
    /// HF's `enc_to_dec_proj`: a linear map from the encoder's width to the decoder's, present
    /// when they differ and the decoder sets no `cross_attention_hidden_size`.
    pub enc_to_dec_proj: bool,
}

fn activation(name: &str, part: &str) -> Result<Activation, TrocrError> {
    // HF's ACT2FN names: "gelu" is the exact (erf) GELU.
    match name {
        "gelu" => Ok(Activation::Gelu),
        "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::NewGelu),
        "relu" => Ok(Activation::Relu),
        "silu" | "swish" => Ok(Activation::Silu),
        _ => Err(TrocrError::Config(format!(
            "the {part}'s activation `{name}` is not supported (gelu, gelu_new, relu, silu)"
        ))),
    }
}

impl TrocrConfig {
    /// Parses HF's `config.json` of a `VisionEncoderDecoderModel` with a `vit` or `deit`
    /// encoder and a `trocr` decoder; absent fields take HF's defaults. The top-level
    /// `decoder_start_token_id` and `eos_token_id`, when set, win over the decoder's.
    pub fn from_hf_json(json: &str) -> Result<Self, TrocrError> {
        let raw: HfConfig = serde_json::from_str(json)
            .map_err(|e| TrocrError::Config(format!("config.json: {e}")))?;
        let (Some(enc), Some(dec)) = (raw.encoder, raw.decoder) else {
            return Err(TrocrError::Config(
                "config.json has no `encoder` and `decoder`: not a VisionEncoderDecoderModel"
                    .into(),
            ));
        };
        let kind = match enc.model_type.as_str() {
            "vit" => EncoderKind::Vit,
            "deit" => EncoderKind::Deit,
            other => {
                return Err(TrocrError::Config(format!(
                    "the encoder is `{other}`; TrOCR checkpoints have `vit` or `deit`"
                )));
            }
        };
        if dec.model_type != "trocr" {
            return Err(TrocrError::Config(format!(
                "the decoder is `{}`, not `trocr`",
                dec.model_type
            )));
        }
        let image_size = match &enc.image_size {
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as usize),
            serde_json::Value::Array(sides) if sides.len() == 2 && sides[0] == sides[1] => {
                sides[0].as_u64().map(|n| n as usize)
            }
            _ => None,
        }
        .ok_or_else(|| {
            TrocrError::Config(format!(
                "encoder image_size {} is not one square side",
                enc.image_size
            ))
        })?;
        let d_model = dec.d_model.or(dec.hidden_size).unwrap_or(1024);
        let enc_to_dec_proj =
            enc.hidden_size != d_model && dec.cross_attention_hidden_size.is_none();
        let cross = dec.cross_attention_hidden_size.unwrap_or(d_model);
        let start = raw
            .decoder_start_token_id
            .or(dec.decoder_start_token_id)
            .unwrap_or(2);
        let eos = raw.eos_token_id.or(dec.eos_token_id).unwrap_or(2);
        let config = TrocrConfig {
            encoder: EncoderConfig {
                kind,
                hidden_size: enc.hidden_size,
                num_hidden_layers: enc.num_hidden_layers,
                num_attention_heads: enc.num_attention_heads,
                intermediate_size: enc.intermediate_size,
                hidden_act: activation(&enc.hidden_act, "encoder")?,
                layer_norm_eps: enc.layer_norm_eps,
                image_size,
                patch_size: enc.patch_size,
                num_channels: enc.num_channels,
                qkv_bias: enc.qkv_bias,
            },
            decoder: DecoderConfig {
                vocab_size: dec.vocab_size,
                d_model,
                layers: dec.decoder_layers,
                heads: dec.decoder_attention_heads,
                ffn_dim: dec.decoder_ffn_dim,
                activation: activation(&dec.activation_function, "decoder")?,
                max_position_embeddings: dec.max_position_embeddings,
                scale_embedding: dec.scale_embedding,
                learned_positions: dec.use_learned_position_embeddings,
                layernorm_embedding: dec.layernorm_embedding,
                tie_word_embeddings: dec.tie_word_embeddings,
                cross_attention_hidden_size: if enc_to_dec_proj { d_model } else { cross },
                pad_token_id: dec.pad_token_id,
                eos_token_id: eos,
                decoder_start_token_id: start,
            },
            enc_to_dec_proj,
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), TrocrError> {
        let bad = |what: String| Err(TrocrError::Config(what));
        let e = &self.encoder;
        if e.patch_size == 0 || e.image_size == 0 || !e.image_size.is_multiple_of(e.patch_size) {
            return bad("encoder image_size must be a multiple of patch_size".into());
        }
        if e.num_channels != 3 {
            return bad(format!(
                "the encoder takes {} channels; only RGB (3) is supported",
                e.num_channels
            ));
        }
        let d = &self.decoder;
        for (part, hidden, heads) in [
            ("encoder", e.hidden_size, e.num_attention_heads),
            ("decoder", d.d_model, d.heads),
        ] {
            if heads == 0 || !hidden.is_multiple_of(heads) {
                return bad(format!(
                    "{part} width {hidden} is not a multiple of its {heads} attention heads"
                ));
            }
        }
        if !self.enc_to_dec_proj && d.cross_attention_hidden_size != e.hidden_size {
            return bad(format!(
                "the decoder reads {}-wide image features but the encoder is {} wide",
                d.cross_attention_hidden_size, e.hidden_size
            ));
        }
        for (name, id) in [
            ("pad", d.pad_token_id),
            ("eos", d.eos_token_id),
            ("decoder_start", d.decoder_start_token_id),
        ] {
            if id as usize >= d.vocab_size {
                return bad(format!(
                    "{name}_token_id {id} is outside the vocabulary ({} tokens)",
                    d.vocab_size
                ));
            }
        }
        if d.max_position_embeddings < 2 {
            return bad("max_position_embeddings must be at least 2".into());
        }
        Ok(())
    }
}

/// Reads and parses `config.json` of a TrOCR model folder.
pub fn load_config(dir: &Path) -> Result<TrocrConfig, TrocrError> {
    let path = crate::require(dir, "config.json")?;
    let text = fs::read_to_string(&path).map_err(|source| TrocrError::Io { path, source })?;
    TrocrConfig::from_hf_json(&text)
}

#[derive(Deserialize)]
struct HfConfig {
    encoder: Option<HfEncoder>,
    decoder: Option<HfDecoder>,
    decoder_start_token_id: Option<u32>,
    eos_token_id: Option<u32>,
}

#[derive(Deserialize)]
#[serde(default)]
struct HfEncoder {
    model_type: String,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    image_size: serde_json::Value,
    patch_size: usize,
    num_channels: usize,
    qkv_bias: bool,
}

impl Default for HfEncoder {
    // HF's `ViTConfig` / `DeiTConfig` defaults.
    fn default() -> Self {
        HfEncoder {
            model_type: String::new(),
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            image_size: serde_json::Value::from(224),
            patch_size: 16,
            num_channels: 3,
            qkv_bias: true,
        }
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct HfDecoder {
    model_type: String,
    vocab_size: usize,
    d_model: Option<usize>,
    hidden_size: Option<usize>,
    decoder_layers: usize,
    decoder_attention_heads: usize,
    decoder_ffn_dim: usize,
    activation_function: String,
    max_position_embeddings: usize,
    scale_embedding: bool,
    use_learned_position_embeddings: bool,
    layernorm_embedding: bool,
    tie_word_embeddings: bool,
    cross_attention_hidden_size: Option<usize>,
    pad_token_id: u32,
    eos_token_id: Option<u32>,
    decoder_start_token_id: Option<u32>,
}

impl Default for HfDecoder {
    // HF's `TrOCRConfig` defaults.
    fn default() -> Self {
        HfDecoder {
            model_type: String::new(),
            vocab_size: 50265,
            d_model: None,
            hidden_size: None,
            decoder_layers: 12,
            decoder_attention_heads: 16,
            decoder_ffn_dim: 4096,
            activation_function: "gelu".into(),
            max_position_embeddings: 512,
            scale_embedding: false,
            use_learned_position_embeddings: true,
            layernorm_embedding: true,
            tie_word_embeddings: true,
            cross_attention_hidden_size: None,
            pad_token_id: 1,
            eos_token_id: None,
            decoder_start_token_id: None,
        }
    }
}

/// How the recogniser decodes and which lines it keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct TrocrSettings {
    /// Most tokens generated per line (the end token included); fewer when the decoder's
    /// positions run out.
    pub max_new_tokens: usize,
    /// Crops encoded and decoded together at most (all crops of a batch of images are read in
    /// chunks of this many; bounds memory, never changes a result).
    pub batch: usize,
}

impl Default for TrocrSettings {
    fn default() -> Self {
        TrocrSettings {
            max_new_tokens: 64,
            batch: 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"{
        "encoder": {"model_type": "deit", "hidden_size": 384, "num_attention_heads": 6,
                    "intermediate_size": 1536, "image_size": 384, "qkv_bias": true},
        "decoder": {"model_type": "trocr", "activation_function": "relu", "d_model": 256,
                    "decoder_attention_heads": 8, "decoder_ffn_dim": 1024, "decoder_layers": 6,
                    "cross_attention_hidden_size": 384, "scale_embedding": true,
                    "tie_word_embeddings": false, "vocab_size": 64044, "eos_token_id": 2,
                    "decoder_start_token_id": 2}
    }"#;

    #[test]
    fn trocr_small_printed_parses_with_hf_defaults_filled_in() {
        let config = TrocrConfig::from_hf_json(SMALL).unwrap();
        assert_eq!(config.encoder.kind, EncoderKind::Deit);
        assert_eq!(config.encoder.tokens(), 24 * 24 + 2);
        assert_eq!(config.encoder.num_hidden_layers, 12);
        assert_eq!(config.decoder.activation, Activation::Relu);
        assert!(config.decoder.learned_positions && config.decoder.layernorm_embedding);
        assert!(!config.enc_to_dec_proj);
        assert_eq!(config.decoder.pad_token_id, 1);
    }

    #[test]
    fn mismatched_or_unsupported_configs_are_refused() {
        let wrong_width = SMALL.replace(
            "\"cross_attention_hidden_size\": 384",
            "\"cross_attention_hidden_size\": 512",
        );
        assert!(TrocrConfig::from_hf_json(&wrong_width).is_err());
        let beit = SMALL.replace("\"deit\"", "\"beit\"");
        assert!(TrocrConfig::from_hf_json(&beit).is_err());
        let act = SMALL.replace("\"relu\"", "\"mish\"");
        assert!(TrocrConfig::from_hf_json(&act).is_err());
        // No cross_attention_hidden_size and different widths: HF's enc_to_dec_proj.
        let projected = SMALL.replace("\"cross_attention_hidden_size\": 384,", "");
        let config = TrocrConfig::from_hf_json(&projected).unwrap();
        assert!(config.enc_to_dec_proj);
        assert_eq!(config.decoder.cross_attention_hidden_size, 256);
        assert!(TrocrConfig::from_hf_json("{}").is_err());
    }
}
