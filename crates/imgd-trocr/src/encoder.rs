//! TrOCR's image encoder: HF's `ViTModel` or `DeiTModel` without its pooler, as
//! `VisionEncoderDecoderModel` runs it (the last hidden state after the final layer norm, every
//! token kept for the decoder's cross-attention).
//!
//! The transformer layers are `candle-transformers`' `vit::Encoder` (DeiT's layers have the same
//! weights and arithmetic as ViT's: pre-norm attention with optional qkv biases, GELU MLP).
//! candle's `vit::Embeddings` has only a class token, so the embeddings are built here: the
//! patch projection, then the class token (and DeiT's distillation token) before the patches,
//! then the position embeddings (`patches + 1` or `patches + 2` rows, never interpolated: the
//! input is always `image_size` square).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2d, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::vit;

use crate::TrocrError;
use crate::config::{EncoderConfig, EncoderKind};

/// The image encoder, with HF's `enc_to_dec_proj` when the checkpoint has one.
#[derive(Debug, Clone)]
pub struct ImageEncoder {
    projection: Conv2d,
    cls_token: Tensor,
    distillation_token: Option<Tensor>,
    position_embeddings: Tensor,
    layers: vit::Encoder,
    layernorm: LayerNorm,
    enc_to_dec_proj: Option<Linear>,
    hidden: usize,
    image_size: usize,
}

impl ImageEncoder {
    /// Builds the encoder from `vb` at a `VisionEncoderDecoderModel` checkpoint's root
    /// (`encoder.*`, and `enc_to_dec_proj.*` when `decoder_width` is given).
    pub fn new(
        config: &EncoderConfig,
        decoder_width: Option<usize>,
        vb: VarBuilder<'_>,
    ) -> Result<Self, TrocrError> {
        let enc = vb.pp("encoder");
        let emb = enc.pp("embeddings");
        let hidden = config.hidden_size;
        let projection = candle_nn::conv2d(
            config.num_channels,
            hidden,
            config.patch_size,
            candle_nn::Conv2dConfig {
                stride: config.patch_size,
                ..Default::default()
            },
            emb.pp("patch_embeddings").pp("projection"),
        )?;
        let cls_token = emb.get((1, 1, hidden), "cls_token")?;
        let distillation_token = match config.kind {
            EncoderKind::Deit => Some(emb.get((1, 1, hidden), "distillation_token")?),
            EncoderKind::Vit => None,
        };
        let position_embeddings = emb.get((1, config.tokens(), hidden), "position_embeddings")?;
        let layers = vit::Encoder::new(&config.candle(), enc.pp("encoder"))?;
        let layernorm = candle_nn::layer_norm(hidden, config.layer_norm_eps, enc.pp("layernorm"))?;
        let enc_to_dec_proj = decoder_width
            .map(|width| candle_nn::linear(hidden, width, vb.pp("enc_to_dec_proj")))
            .transpose()?;
        Ok(ImageEncoder {
            projection,
            cls_token,
            distillation_token,
            position_embeddings,
            layers,
            layernorm,
            enc_to_dec_proj,
            hidden,
            image_size: config.image_size,
        })
    }

    /// The encoder's last hidden state for pixels `(n, 3, S, S)`: `(n, tokens, width)` (the
    /// class and distillation tokens first), mapped to the decoder's width when the checkpoint
    /// has `enc_to_dec_proj`. Each image's output depends on that image alone.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor, TrocrError> {
        let (n, _, h, w) = pixels.dims4()?;
        if (h, w) != (self.image_size, self.image_size) {
            return Err(TrocrError::Input(format!(
                "pixels are {w}×{h}, the encoder takes {0}×{0}",
                self.image_size
            )));
        }
        let patches = self
            .projection
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let cls = self.cls_token.broadcast_as((n, 1, self.hidden))?;
        let tokens = match &self.distillation_token {
            Some(distillation) => {
                let distillation = distillation.broadcast_as((n, 1, self.hidden))?;
                Tensor::cat(&[&cls, &distillation, &patches], 1)?
            }
            None => Tensor::cat(&[&cls, &patches], 1)?,
        };
        let embedded = tokens.broadcast_add(&self.position_embeddings)?;
        let hidden = self.layernorm.forward(&self.layers.forward(&embedded)?)?;
        Ok(match &self.enc_to_dec_proj {
            Some(proj) => proj.forward(&hidden)?,
            None => hidden,
        })
    }
}
