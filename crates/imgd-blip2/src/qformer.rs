//! The Q-Former: learned query tokens run through a BERT whose every
//! `cross_attention_frequency`-th layer also attends to the image features (transformers'
//! `Blip2QFormerModel`, queries only). The reference keeps it in f32; so does this.

use candle_core::{Module, Result, Tensor};
use candle_nn::{LayerNorm, Linear, VarBuilder};

use crate::config::{Activation, QFormerConfig};

/// BERT attention with its output block: `LayerNorm(dense(attention) + input)`.
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    norm: LayerNorm,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(vb: VarBuilder<'_>, c: &QFormerConfig, kv_width: usize) -> Result<Self> {
        let d = c.hidden_size;
        let inner = vb.pp("attention");
        Ok(Attention {
            query: candle_nn::linear(d, d, inner.pp("query"))?,
            key: candle_nn::linear(kv_width, d, inner.pp("key"))?,
            value: candle_nn::linear(kv_width, d, inner.pp("value"))?,
            dense: candle_nn::linear(d, d, vb.pp("output.dense"))?,
            norm: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("output.LayerNorm"))?,
            heads: c.num_attention_heads,
            scale: ((d / c.num_attention_heads) as f64).powf(-0.5),
        })
    }

    fn heads(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        xs.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Attention of `xs` over `context` (itself for self-attention).
    fn forward(&self, xs: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let q = self.heads(&self.query.forward(xs)?)?;
        let k = self.heads(&self.key.forward(context)?)?;
        let v = self.heads(&self.value.forward(context)?)?;
        let weights = candle_nn::ops::softmax_last_dim(&(q.matmul(&k.t()?)? * self.scale)?)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.norm.forward(&(self.dense.forward(&out)? + xs)?)
    }
}

struct Layer {
    attention: Attention,
    cross_attention: Option<Attention>,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
    activation: Activation,
}

impl Layer {
    fn new(
        vb: VarBuilder<'_>,
        c: &QFormerConfig,
        index: usize,
        activation: Activation,
    ) -> Result<Self> {
        let d = c.hidden_size;
        let cross =
            c.cross_attention_frequency > 0 && index.is_multiple_of(c.cross_attention_frequency);
        Ok(Layer {
            attention: Attention::new(vb.pp("attention"), c, d)?,
            cross_attention: cross
                .then(|| Attention::new(vb.pp("crossattention"), c, c.encoder_hidden_size))
                .transpose()?,
            intermediate: candle_nn::linear(
                d,
                c.intermediate_size,
                vb.pp("intermediate_query.dense"),
            )?,
            output: candle_nn::linear(c.intermediate_size, d, vb.pp("output_query.dense"))?,
            output_norm: candle_nn::layer_norm(
                d,
                c.layer_norm_eps,
                vb.pp("output_query.LayerNorm"),
            )?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor, image: &Tensor) -> Result<Tensor> {
        let mut xs = self.attention.forward(xs, xs)?;
        if let Some(cross) = &self.cross_attention {
            xs = cross.forward(&xs, image)?;
        }
        let hidden = self.activation.apply(&self.intermediate.forward(&xs)?)?;
        self.output_norm
            .forward(&(self.output.forward(&hidden)? + xs)?)
    }
}

/// The Q-Former with its query tokens: `(n, tokens, vision width)` image features →
/// `(n, queries, hidden)`.
pub struct QFormer {
    query_tokens: Tensor,
    layernorm: LayerNorm,
    layers: Vec<Layer>,
}

impl QFormer {
    /// Builds it from `vb` (the checkpoint's root: `query_tokens` and `qformer`).
    pub fn new(vb: VarBuilder<'_>, c: &QFormerConfig, queries: usize) -> crate::Result<Self> {
        let activation = Activation::parse(&c.hidden_act)?;
        let qformer = vb.pp("qformer");
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(qformer.pp(format!("encoder.layer.{i}")), c, i, activation))
            .collect::<Result<_>>()?;
        Ok(QFormer {
            query_tokens: vb.get((1, queries, c.hidden_size), "query_tokens")?,
            layernorm: candle_nn::layer_norm(
                c.hidden_size,
                c.layer_norm_eps,
                qformer.pp("layernorm"),
            )?,
            layers,
        })
    }

    /// The queries' last hidden state for each image of `image` (`(n, tokens, width)`, f32).
    pub fn forward(&self, image: &Tensor) -> Result<Tensor> {
        let n = image.dim(0)?;
        let (_, q, d) = self.query_tokens.dims3()?;
        let mut xs = self
            .layernorm
            .forward(&self.query_tokens.broadcast_as((n, q, d))?.contiguous()?)?;
        for layer in &self.layers {
            xs = layer.forward(&xs, image)?;
        }
        Ok(xs)
    }
}
