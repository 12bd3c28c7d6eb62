//! Flan-T5, the encoder-decoder language model of `Salesforce/blip2-flan-t5-*` (transformers'
//! `T5ForConditionalGeneration`): the encoder reads the image's query embeddings and the
//! prompt together, and the decoder writes the answer, its self-attention keys and values
//! cached and its cross-attention keys and values computed once per prompt. Rows of a
//! [`T5Rows`] can be copied (beams) and dropped (rows that ended).
//!
//! T5's attention is unscaled and has no absolute positions: each stack's first layer holds a
//! table of per-head biases by bucketed relative distance ([`relative_bucket`]) that every
//! layer of the stack adds. Norms are RMS norms with a scale only.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{RmsNorm, VarBuilder};

use crate::config::{Activation, T5Config};
use crate::generation::Decoding;
use crate::layers::{Dense, linear};
use imgd_candle::ModelError;

/// What the attention adds where a key must not be seen.
const MASKED: f32 = -1e9;

/// The bucket of a key `relative` positions after its query (negative: before), as T5's
/// `_relative_position_bucket` computes it: exact buckets for short distances, logarithmic
/// ones up to `max_distance`, the last bucket beyond; half the buckets each way when
/// `bidirectional` (the encoder), only keys before the query otherwise (the decoder).
pub fn relative_bucket(
    relative: i64,
    bidirectional: bool,
    num_buckets: usize,
    max_distance: usize,
) -> usize {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0;
    let distance = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            bucket += buckets;
        }
        relative.abs()
    } else {
        -relative.min(0)
    };
    let max_exact = buckets / 2;
    if distance < max_exact {
        return (bucket + distance) as usize;
    }
    // In f32 as the reference computes it, truncated towards zero.
    let scale = ((max_distance as f64) / (max_exact as f64)).ln() as f32;
    let large = max_exact
        + ((distance as f32 / max_exact as f32).ln() / scale * (buckets - max_exact) as f32) as i64;
    (bucket + large.min(buckets - 1)) as usize
}

/// An attention layer (self or cross), without biases.
struct Attention {
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(vb: VarBuilder<'_>, c: &T5Config) -> Result<Self> {
        let inner = c.num_heads * c.d_kv;
        Ok(Attention {
            q: linear(vb.pp("q"), c.d_model, inner, false)?,
            k: linear(vb.pp("k"), c.d_model, inner, false)?,
            v: linear(vb.pp("v"), c.d_model, inner, false)?,
            o: linear(vb.pp("o"), inner, c.d_model, false)?,
            heads: c.num_heads,
            head_dim: c.d_kv,
        })
    }

    /// `(rows, t, d_model)` → `(rows, heads, t, head_dim)`.
    fn split(&self, xs: Tensor) -> Result<Tensor> {
        let (rows, t, _) = xs.dims3()?;
        xs.reshape((rows, t, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// The keys and values of `xs`.
    fn keys_values(&self, xs: &Tensor) -> Result<(Tensor, Tensor)> {
        Ok((
            self.split(self.k.forward(xs)?)?,
            self.split(self.v.forward(xs)?)?,
        ))
    }

    /// Attends from `xs` to `keys` and `values`, `bias` (broadcast to `(rows, heads, t,
    /// keys)`) added to the scores: position biases and masks.
    fn attend(&self, xs: &Tensor, keys: &Tensor, values: &Tensor, bias: &Tensor) -> Result<Tensor> {
        let (rows, t, _) = xs.dims3()?;
        let q = self.split(self.q.forward(xs)?)?;
        // Softmax in f32, as the reference takes it.
        let scores = q
            .matmul(&keys.t()?)?
            .to_dtype(DType::F32)?
            .broadcast_add(bias)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(values.dtype())?;
        let out = weights.matmul(values)?.transpose(1, 2)?.reshape((
            rows,
            t,
            self.heads * self.head_dim,
        ))?;
        self.o.forward(&out)
    }
}

/// The feed-forward layer: `wo(act(wi_0 x) * wi_1 x)` when gated, `wo(act(wi x))` otherwise.
struct FeedForward {
    wi: Dense,
    gate: Option<Dense>,
    wo: Dense,
    activation: Activation,
}

impl FeedForward {
    fn new(vb: VarBuilder<'_>, c: &T5Config) -> crate::Result<Self> {
        let (gated, name) = match c.feed_forward_proj.split_once('-') {
            Some(("gated", name)) => (true, name),
            None => (false, c.feed_forward_proj.as_str()),
            Some(_) => {
                return Err(ModelError::Config(format!(
                    "feed_forward_proj `{}` is not `ACT` or `gated-ACT`",
                    c.feed_forward_proj
                )));
            }
        };
        // transformers reads a gated `gelu` as the tanh approximation (`gelu_new`).
        let activation = match (gated, name) {
            (true, "gelu") => Activation::GeluTanh,
            _ => Activation::parse(name)?,
        };
        let (d, ff) = (c.d_model, c.d_ff);
        Ok(if gated {
            FeedForward {
                gate: Some(linear(vb.pp("wi_0"), d, ff, false)?),
                wi: linear(vb.pp("wi_1"), d, ff, false)?,
                wo: linear(vb.pp("wo"), ff, d, false)?,
                activation,
            }
        } else {
            FeedForward {
                gate: None,
                wi: linear(vb.pp("wi"), d, ff, false)?,
                wo: linear(vb.pp("wo"), ff, d, false)?,
                activation,
            }
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let hidden = match &self.gate {
            Some(gate) => (self.activation.apply(&gate.forward(xs)?)? * self.wi.forward(xs)?)?,
            None => self.activation.apply(&self.wi.forward(xs)?)?,
        };
        self.wo.forward(&hidden)
    }
}

/// One layer of a stack: self-attention, cross-attention in the decoder, feed-forward, each
/// after its RMS norm and added to the residual.
struct Block {
    self_attention: Attention,
    self_norm: RmsNorm,
    cross: Option<(Attention, RmsNorm)>,
    feed_forward: FeedForward,
    feed_forward_norm: RmsNorm,
}

impl Block {
    fn new(vb: VarBuilder<'_>, c: &T5Config, decoder: bool) -> crate::Result<Self> {
        let (d, eps) = (c.d_model, c.layer_norm_epsilon);
        let layer = |i: usize| vb.pp(format!("layer.{i}"));
        let cross = decoder
            .then(|| -> Result<_> {
                Ok((
                    Attention::new(layer(1).pp("EncDecAttention"), c)?,
                    candle_nn::rms_norm(d, eps, layer(1).pp("layer_norm"))?,
                ))
            })
            .transpose()?;
        let ff = layer(if decoder { 2 } else { 1 });
        Ok(Block {
            self_attention: Attention::new(layer(0).pp("SelfAttention"), c)?,
            self_norm: candle_nn::rms_norm(d, eps, layer(0).pp("layer_norm"))?,
            cross,
            feed_forward: FeedForward::new(ff.pp("DenseReluDense"), c)?,
            feed_forward_norm: candle_nn::rms_norm(d, eps, ff.pp("layer_norm"))?,
        })
    }
}

/// The encoder or the decoder.
struct Stack {
    blocks: Vec<Block>,
    final_norm: RmsNorm,
    /// `(buckets, heads)`: the first layer's relative position biases, which all layers add.
    relative_bias: Tensor,
    bidirectional: bool,
    buckets: usize,
    max_distance: usize,
}

impl Stack {
    fn new(vb: VarBuilder<'_>, c: &T5Config, decoder: bool) -> crate::Result<Self> {
        let layers = if decoder {
            c.decoder_layers()
        } else {
            c.num_layers
        };
        Ok(Stack {
            blocks: (0..layers)
                .map(|i| Block::new(vb.pp(format!("block.{i}")), c, decoder))
                .collect::<crate::Result<_>>()?,
            final_norm: candle_nn::rms_norm(
                c.d_model,
                c.layer_norm_epsilon,
                vb.pp("final_layer_norm"),
            )?,
            relative_bias: vb
                .pp("block.0.layer.0.SelfAttention.relative_attention_bias")
                .get((c.relative_attention_num_buckets, c.num_heads), "weight")?,
            bidirectional: !decoder,
            buckets: c.relative_attention_num_buckets,
            max_distance: c.relative_attention_max_distance,
        })
    }

    /// `(1, heads, queries, keys)`: the position bias of queries at positions `first..first +
    /// queries` over keys at `0..keys`, in f32.
    fn position_bias(&self, first: usize, queries: usize, keys: usize) -> Result<Tensor> {
        let device = self.relative_bias.device();
        let mut buckets = Vec::with_capacity(queries * keys);
        for query in first..first + queries {
            for key in 0..keys {
                buckets.push(relative_bucket(
                    key as i64 - query as i64,
                    self.bidirectional,
                    self.buckets,
                    self.max_distance,
                ) as u32);
            }
        }
        let buckets = Tensor::from_vec(buckets, queries * keys, device)?;
        self.relative_bias
            .index_select(&buckets, 0)?
            .to_dtype(DType::F32)?
            .reshape((queries, keys, ()))?
            .permute((2, 0, 1))?
            .unsqueeze(0)
    }
}

/// Flan-T5 with its output head.
pub struct T5 {
    shared: Tensor,
    encoder: Stack,
    decoder: Stack,
    lm_head: Dense,
    config: T5Config,
}

impl T5 {
    /// Builds it from `vb` (the checkpoint's `language_model`).
    pub fn new(vb: VarBuilder<'_>, c: &T5Config) -> crate::Result<Self> {
        if c.d_kv == 0 || c.num_heads == 0 {
            return Err(ModelError::Config("T5 needs d_kv and num_heads".into()));
        }
        let shared_shape = (c.vocab_size, c.d_model);
        let shared = if vb.contains_tensor("shared.weight") {
            vb.get(shared_shape, "shared.weight")?
        } else {
            vb.get(shared_shape, "encoder.embed_tokens.weight")?
        };
        let lm_head = if vb.contains_tensor("lm_head.weight") {
            vb.get(shared_shape, "lm_head.weight")?
        } else {
            shared.clone()
        };
        Ok(T5 {
            encoder: Stack::new(vb.pp("encoder"), c, false)?,
            decoder: Stack::new(vb.pp("decoder"), c, true)?,
            lm_head: Dense {
                weight: lm_head,
                bias: None,
            },
            shared,
            config: c.clone(),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &T5Config {
        &self.config
    }

    /// The input embeddings of `ids` (`(rows, t)` u32) → `(rows, t, d_model)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (rows, t) = ids.dims2()?;
        self.shared
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((rows, t, ()))
    }

    /// Runs the encoder on `embeds` (`(rows, t, d_model)`), `real` saying per row which
    /// positions are tokens (0: padding, which no position attends to), and makes the decoder's
    /// state: each row's cross-attention keys and values, and an empty self-attention cache.
    pub fn encode(&self, embeds: &Tensor, real: &[Vec<u8>]) -> Result<T5Rows<'_>> {
        let (rows, t, _) = embeds.dims3()?;
        let device = embeds.device();
        let mask = key_mask(real, device)?;
        let bias = self.encoder.position_bias(0, t, t)?.broadcast_add(&mask)?;
        let mut xs = embeds.clone();
        for block in &self.encoder.blocks {
            let normed = block.self_norm.forward(&xs)?;
            let (k, v) = block.self_attention.keys_values(&normed)?;
            xs = (&xs + block.self_attention.attend(&normed, &k, &v, &bias)?)?;
            xs = (&xs
                + block
                    .feed_forward
                    .forward(&block.feed_forward_norm.forward(&xs)?)?)?;
        }
        let states = self.encoder.final_norm.forward(&xs)?;
        let cross = self
            .decoder
            .blocks
            .iter()
            .map(|block| {
                let (attention, _) = block.cross.as_ref().expect("a decoder block");
                attention.keys_values(&states)
            })
            .collect::<Result<_>>()?;
        debug_assert_eq!(rows, real.len());
        Ok(T5Rows {
            t5: self,
            cross,
            encoder_mask: mask,
            past: vec![None; self.decoder.blocks.len()],
            seen: 0,
        })
    }

    /// The decoder's next-token logits of one token per row of `rows`, `(rows, vocab)`.
    fn decode_step(&self, rows: &mut T5Rows<'_>, tokens: Vec<u32>) -> Result<Tensor> {
        let count = tokens.len();
        let device = self.shared.device().clone();
        let ids = Tensor::from_vec(tokens, (count, 1), &device)?;
        let mut xs = self.embed(&ids)?;
        let seen = rows.seen;
        let bias = self.decoder.position_bias(seen, 1, seen + 1)?;
        for ((block, past), (cross_k, cross_v)) in self
            .decoder
            .blocks
            .iter()
            .zip(rows.past.iter_mut())
            .zip(&rows.cross)
        {
            let normed = block.self_norm.forward(&xs)?;
            let (mut k, mut v) = block.self_attention.keys_values(&normed)?;
            if let Some((past_k, past_v)) = past.as_ref() {
                k = Tensor::cat(&[past_k, &k], 2)?;
                v = Tensor::cat(&[past_v, &v], 2)?;
            }
            xs = (&xs + block.self_attention.attend(&normed, &k, &v, &bias)?)?;
            *past = Some((k, v));
            let (attention, norm) = block.cross.as_ref().expect("a decoder block");
            let normed = norm.forward(&xs)?;
            xs = (&xs + attention.attend(&normed, cross_k, cross_v, &rows.encoder_mask)?)?;
            xs = (&xs
                + block
                    .feed_forward
                    .forward(&block.feed_forward_norm.forward(&xs)?)?)?;
        }
        rows.seen += 1;
        let mut hidden = self.decoder.final_norm.forward(&xs)?.squeeze(1)?;
        if self.config.scales_decoder_output() {
            hidden = (hidden * (self.config.d_model as f64).powf(-0.5))?;
        }
        self.lm_head.forward(&hidden)
    }
}

/// `(rows, 1, 1, keys)` in f32: 0 for a real key, a large negative number for padding.
fn key_mask(real: &[Vec<u8>], device: &Device) -> Result<Tensor> {
    let keys = real.first().map_or(0, Vec::len);
    let mask: Vec<f32> = real
        .iter()
        .flat_map(|row| row.iter().map(|&bit| if bit == 1 { 0.0 } else { MASKED }))
        .collect();
    Tensor::from_vec(mask, (real.len(), 1, 1, keys), device)
}

/// Rows being decoded by [`T5`]: per decoder layer the cross-attention keys and values of each
/// row's encoder states and the self-attention cache of what it has written.
pub struct T5Rows<'a> {
    t5: &'a T5,
    /// Per decoder layer: the encoder states' keys and values, `(rows, heads, encoded,
    /// head_dim)`.
    cross: Vec<(Tensor, Tensor)>,
    /// `(rows, 1, 1, encoded)`: padding of the encoder's input masked.
    encoder_mask: Tensor,
    /// Per decoder layer: keys and values written so far, `(rows, heads, seen, head_dim)`.
    past: Vec<Option<(Tensor, Tensor)>>,
    /// Decoder positions written.
    seen: usize,
}

impl Decoding for T5Rows<'_> {
    fn select(&mut self, rows: &[usize]) -> Result<()> {
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            self.encoder_mask.device(),
        )?;
        let pick = |(k, v): &(Tensor, Tensor)| -> Result<(Tensor, Tensor)> {
            Ok((k.index_select(&index, 0)?, v.index_select(&index, 0)?))
        };
        self.cross = self.cross.iter().map(pick).collect::<Result<_>>()?;
        self.past = self
            .past
            .iter()
            .map(|layer| layer.as_ref().map(pick).transpose())
            .collect::<Result<_>>()?;
        self.encoder_mask = self.encoder_mask.index_select(&index, 0)?;
        Ok(())
    }

    fn step(&mut self, tokens: Vec<u32>) -> Result<Tensor> {
        let t5 = self.t5;
        t5.decode_step(self, tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::relative_bucket;

    #[test]
    fn relative_buckets_are_exact_near_logarithmic_further_and_capped() {
        // The encoder (bidirectional, 32 buckets, 128 positions: T5's defaults): keys after
        // the query in the upper half, 8 exact buckets each way.
        assert_eq!(relative_bucket(0, true, 32, 128), 0);
        assert_eq!(relative_bucket(-3, true, 32, 128), 3);
        assert_eq!(relative_bucket(3, true, 32, 128), 19);
        assert_eq!(relative_bucket(-7, true, 32, 128), 7);
        // 8 + ln(20 / 8) / ln(128 / 8) × 8 = 10.6 → 10.
        assert_eq!(relative_bucket(-20, true, 32, 128), 10);
        assert_eq!(relative_bucket(20, true, 32, 128), 26);
        assert_eq!(relative_bucket(-500, true, 32, 128), 15);
        assert_eq!(relative_bucket(500, true, 32, 128), 31);
        // The decoder sees only keys before the query: later ones share bucket 0.
        assert_eq!(relative_bucket(5, false, 32, 128), 0);
        assert_eq!(relative_bucket(-5, false, 32, 128), 5);
        // 16 + ln(40 / 16) / ln(128 / 16) × 16 = 23.05 → 23.
        assert_eq!(relative_bucket(-40, false, 32, 128), 23);
        assert_eq!(relative_bucket(-1000, false, 32, 128), 31);
    }
}
