//! TrOCR's text decoder (HF `TrOCRForCausalLM`), batched over line crops with key/value
//! caches.
//!
//! `candle-transformers`' `trocr` module cannot run the released checkpoints: its attention and
//! feed-forward projections are built without their biases (HF's `TrOCRAttention` and `fc1`/
//! `fc2` have them), it has no `layernorm_embedding` (on in every released TrOCR), its
//! cross-attention is handed the causal self-attention mask, and it recomputes the keys and
//! values of all encoder tokens at every step. This module is the decoder as HF defines it:
//!
//! - embeddings: token embeddings × √d_model when `scale_embedding`, plus learned positions
//!   (offset 2, as BART) or sinusoidal ones (padding-aware, offset `pad + 1`), then
//!   `layernorm_embedding` when the config has it;
//! - post-norm layers: causal self-attention, cross-attention to the encoder, feed-forward,
//!   each added to its input and layer-normalised (ε 1e-5), every projection with its bias;
//! - the output projection (`decoder.output_projection`, or the token embeddings when tied).
//!
//! Caching: the cross-attention keys and values of a batch of crops are computed once
//! ([`EncoderContext`]), the self-attention keys and values grow by one token per step. A batch
//! of crops decodes together; a row that produced the end token leaves the batch (its caches
//! are dropped), so the others run on. Every row reads only its own caches, and every row
//! starts from the same start token: batching never changes a row's tokens.

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::TrocrError;
use crate::config::DecoderConfig;

/// Layer-norm epsilon of HF's TrOCR decoder (`nn.LayerNorm`'s default).
const LAYER_NORM_EPS: f64 = 1e-5;
/// HF's offset of learned positions (`TrOCRLearnedPositionalEmbedding.offset`).
const LEARNED_OFFSET: usize = 2;

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(
        width: usize,
        kv_in: usize,
        heads: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        Ok(Attention {
            q: candle_nn::linear(width, width, vb.pp("q_proj"))?,
            k: candle_nn::linear(kv_in, width, vb.pp("k_proj"))?,
            v: candle_nn::linear(kv_in, width, vb.pp("v_proj"))?,
            out: candle_nn::linear(width, width, vb.pp("out_proj"))?,
            heads,
            head_dim: width / heads,
        })
    }

    /// `(b, l, width)` → `(b, heads, l, head_dim)`.
    fn split(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        xs.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn keys_values(&self, xs: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split(&self.k.forward(xs)?)?,
            self.split(&self.v.forward(xs)?)?,
        ))
    }

    /// HF's `TrOCRAttention`: queries scaled by 1/√head_dim before the product, an additive
    /// `mask`, softmax, the output projection.
    fn attend(
        &self,
        xs: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, l, width) = xs.dims3()?;
        let scaling = (self.head_dim as f64).powf(-0.5);
        let q = self.split(&(self.q.forward(xs)? * scaling)?)?;
        let mut scores = q.matmul(&keys.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(values)?
            .transpose(1, 2)?
            .reshape((b, l, width))?;
        self.out.forward(&out)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

#[derive(Debug, Clone)]
enum Positions {
    /// `embed_positions.weight`, read at position + 2.
    Learned(Embedding),
    /// The sinusoidal table of HF's `TrOCRSinusoidalPositionalEmbedding` (row `pad` zero).
    Sinusoidal(Embedding),
}

/// The cross-attention keys and values of a batch of crops' encoder states, per layer:
/// computed once, read by every step.
#[derive(Debug, Clone)]
pub struct EncoderContext {
    keys_values: Vec<(Tensor, Tensor)>,
    rows: usize,
}

impl EncoderContext {
    /// The number of crops.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The context of the crops at `rows` (in that order).
    fn select(&self, rows: &Tensor, count: usize) -> candle_core::Result<Self> {
        Ok(EncoderContext {
            keys_values: self
                .keys_values
                .iter()
                .map(|(k, v)| Ok((k.index_select(rows, 0)?, v.index_select(rows, 0)?)))
                .collect::<candle_core::Result<_>>()?,
            rows: count,
        })
    }
}

/// The self-attention cache of one decode: keys and values per layer.
struct SelfCache {
    keys_values: Vec<Option<(Tensor, Tensor)>>,
    length: usize,
}

impl SelfCache {
    fn select(&mut self, rows: &Tensor) -> candle_core::Result<()> {
        for entry in self.keys_values.iter_mut().flatten() {
            *entry = (
                entry.0.index_select(rows, 0)?,
                entry.1.index_select(rows, 0)?,
            );
        }
        Ok(())
    }
}

/// One crop's greedy decode.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// The start token, then the generated tokens up to and including the end token (as HF's
    /// `generate` returns them, without the padding after it).
    pub ids: Vec<u32>,
    /// The probability of each generated token (softmax of its step's logits), one per id
    /// after the start token.
    pub probs: Vec<f32>,
}

impl Generated {
    /// Whether the decode produced the end token (rather than running out of tokens).
    pub fn ended(&self, eos: u32) -> bool {
        self.ids.len() > 1 && self.ids.last() == Some(&eos)
    }
}

/// The TrOCR decoder with its output projection.
#[derive(Debug, Clone)]
pub struct TextDecoder {
    embed_tokens: Embedding,
    embed_scale: Option<f64>,
    positions: Positions,
    layernorm_embedding: Option<LayerNorm>,
    layers: Vec<Layer>,
    output_projection: Linear,
    config: DecoderConfig,
    device: Device,
}

/// HF's `TrOCRSinusoidalPositionalEmbedding.get_embedding`, in f32 as torch computes it.
fn sinusoidal_table(rows: usize, dim: usize, pad: usize) -> Vec<f32> {
    let half = dim / 2;
    let step = (10000f64.ln() / (half.saturating_sub(1).max(1)) as f64) as f32;
    let freqs: Vec<f32> = (0..half).map(|i| (i as f32 * -step).exp()).collect();
    let mut table = vec![0f32; rows * dim];
    for (pos, row) in table.chunks_exact_mut(dim).enumerate() {
        if pos == pad {
            continue;
        }
        for (i, &freq) in freqs.iter().enumerate() {
            let angle = pos as f32 * freq;
            row[i] = angle.sin();
            row[half + i] = angle.cos();
        }
    }
    table
}

impl TextDecoder {
    /// Builds the decoder from `vb` at a `VisionEncoderDecoderModel` checkpoint's root
    /// (`decoder.model.decoder.*`, `decoder.output_projection.weight`).
    pub fn new(config: &DecoderConfig, vb: VarBuilder<'_>) -> Result<Self, TrocrError> {
        let c = config;
        let d = c.d_model;
        let root = vb.pp("decoder");
        let dec = root.pp("model").pp("decoder");
        let embed_tokens = candle_nn::embedding(c.vocab_size, d, dec.pp("embed_tokens"))?;
        let positions = if c.learned_positions {
            Positions::Learned(candle_nn::embedding(
                c.max_position_embeddings + LEARNED_OFFSET,
                d,
                dec.pp("embed_positions"),
            )?)
        } else {
            let pad = c.pad_token_id as usize;
            let rows = c.max_position_embeddings + pad + 1;
            let table = Tensor::from_vec(sinusoidal_table(rows, d, pad), (rows, d), vb.device())?;
            Positions::Sinusoidal(Embedding::new(table, d))
        };
        let layernorm_embedding = c
            .layernorm_embedding
            .then(|| candle_nn::layer_norm(d, LAYER_NORM_EPS, dec.pp("layernorm_embedding")))
            .transpose()?;
        let layers = (0..c.layers)
            .map(|i| {
                let vb = dec.pp("layers").pp(i);
                let norm = |name: &str| candle_nn::layer_norm(d, LAYER_NORM_EPS, vb.pp(name));
                Ok(Layer {
                    self_attn: Attention::new(d, d, c.heads, vb.pp("self_attn"))?,
                    self_attn_layer_norm: norm("self_attn_layer_norm")?,
                    encoder_attn: Attention::new(
                        d,
                        c.cross_attention_hidden_size,
                        c.heads,
                        vb.pp("encoder_attn"),
                    )?,
                    encoder_attn_layer_norm: norm("encoder_attn_layer_norm")?,
                    fc1: candle_nn::linear(d, c.ffn_dim, vb.pp("fc1"))?,
                    fc2: candle_nn::linear(c.ffn_dim, d, vb.pp("fc2"))?,
                    final_layer_norm: norm("final_layer_norm")?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let output_projection = if c.tie_word_embeddings {
            Linear::new(embed_tokens.embeddings().clone(), None)
        } else {
            candle_nn::linear_no_bias(d, c.vocab_size, root.pp("output_projection"))?
        };
        Ok(TextDecoder {
            embed_tokens,
            embed_scale: c.scale_embedding.then(|| (d as f64).sqrt()),
            positions,
            layernorm_embedding,
            layers,
            output_projection,
            config: config.clone(),
            device: vb.device().clone(),
        })
    }

    /// The cross-attention keys and values of encoder states `(n, tokens, width)`.
    pub fn encoder_context(&self, encoder_states: &Tensor) -> Result<EncoderContext, TrocrError> {
        let keys_values = self
            .layers
            .iter()
            .map(|layer| layer.encoder_attn.keys_values(encoder_states))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(EncoderContext {
            keys_values,
            rows: encoder_states.dim(0)?,
        })
    }

    fn new_cache(&self) -> SelfCache {
        SelfCache {
            keys_values: vec![None; self.layers.len()],
            length: 0,
        }
    }

    /// The position embeddings of `ids` `(b, l)` after `past` tokens: `(b or 1, l, d)`.
    fn position_embeddings(&self, ids: &Tensor, past: usize) -> Result<Tensor, TrocrError> {
        let (b, l) = ids.dims2()?;
        match &self.positions {
            Positions::Learned(table) => {
                let rows = Tensor::arange(
                    (past + LEARNED_OFFSET) as u32,
                    (past + l + LEARNED_OFFSET) as u32,
                    &self.device,
                )?;
                Ok(table.forward(&rows)?.unsqueeze(0)?)
            }
            Positions::Sinusoidal(table) => {
                // HF: padding tokens sit at row `pad` (zeros); the others at pad + 1 + their
                // index (as its cached decoding counts them).
                let pad = self.config.pad_token_id;
                let ids: Vec<Vec<u32>> = ids.to_vec2()?;
                let rows: Vec<u32> = ids
                    .iter()
                    .flat_map(|row| {
                        row.iter().enumerate().map(move |(i, &id)| {
                            if id == pad {
                                pad
                            } else {
                                pad + 1 + (past + i) as u32
                            }
                        })
                    })
                    .collect();
                let rows = Tensor::from_vec(rows, (b, l), &self.device)?;
                Ok(table.forward(&rows)?)
            }
        }
    }

    /// Runs `ids` `(b, l)` after what `cache` holds; returns the logits `(b, l, vocab)`.
    fn step(
        &self,
        ids: &Tensor,
        encoder: &EncoderContext,
        cache: &mut SelfCache,
    ) -> Result<Tensor, TrocrError> {
        let (b, l) = ids.dims2()?;
        if b != encoder.len() {
            return Err(TrocrError::Input(format!(
                "{b} token rows but {} crops",
                encoder.len()
            )));
        }
        let past = cache.length;
        if past + l > self.config.max_position_embeddings {
            return Err(TrocrError::Input(format!(
                "{} tokens exceed the decoder's {} positions",
                past + l,
                self.config.max_position_embeddings
            )));
        }
        let mut tokens = self.embed_tokens.forward(ids)?;
        if let Some(scale) = self.embed_scale {
            tokens = (tokens * scale)?;
        }
        let mut xs = tokens.broadcast_add(&self.position_embeddings(ids, past)?)?;
        if let Some(norm) = &self.layernorm_embedding {
            xs = norm.forward(&xs)?;
        }
        // Causal: token i sees the cached tokens and tokens 0..=i of this input.
        let mask = if l > 1 {
            let values: Vec<f32> = (0..l)
                .flat_map(|i| {
                    (0..past + l).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(values, (l, past + l), &self.device)?)
        } else {
            None
        };
        for (i, layer) in self.layers.iter().enumerate() {
            let (k, v) = layer.self_attn.keys_values(&xs)?;
            let (k, v) = match &cache.keys_values[i] {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            let attended = layer.self_attn.attend(&xs, &k, &v, mask.as_ref())?;
            cache.keys_values[i] = Some((k, v));
            xs = layer.self_attn_layer_norm.forward(&(attended + &xs)?)?;
            let (ck, cv) = &encoder.keys_values[i];
            let attended = layer.encoder_attn.attend(&xs, ck, cv, None)?;
            xs = layer.encoder_attn_layer_norm.forward(&(attended + &xs)?)?;
            let hidden = self.config.activation.forward(&layer.fc1.forward(&xs)?)?;
            xs = layer
                .final_layer_norm
                .forward(&(layer.fc2.forward(&hidden)? + &xs)?)?;
        }
        cache.length += l;
        Ok(self.output_projection.forward(&xs)?)
    }

    /// The logits `(b, l, vocab)` of token ids `(b, l)` over `encoder`, causal, from an empty
    /// cache (HF's `VisionEncoderDecoderModel(pixel_values, decoder_input_ids).logits`).
    pub fn logits(&self, ids: &Tensor, encoder: &EncoderContext) -> Result<Tensor, TrocrError> {
        self.step(ids, encoder, &mut self.new_cache())
    }

    /// The most tokens a decode can generate after its start token.
    pub fn max_new_tokens(&self) -> usize {
        self.config.max_position_embeddings - 1
    }

    /// Greedy decoding of every crop of `encoder` at once, from `start`, until `eos` or
    /// `max_new_tokens` (at most [`Self::max_new_tokens`]), as HF's greedy `generate`: the
    /// most likely token each step (the first one on a tie). Rows that produced `eos` leave
    /// the batch.
    pub fn greedy(
        &self,
        encoder: &EncoderContext,
        start: u32,
        eos: u32,
        max_new_tokens: usize,
    ) -> Result<Vec<Generated>, TrocrError> {
        let n = encoder.len();
        let mut out: Vec<Generated> = (0..n)
            .map(|_| Generated {
                ids: vec![start],
                probs: Vec::new(),
            })
            .collect();
        if n == 0 {
            return Ok(out);
        }
        let steps = max_new_tokens.min(self.max_new_tokens());
        let mut active: Vec<usize> = (0..n).collect();
        let mut context = encoder.clone();
        let mut cache = self.new_cache();
        let mut input = Tensor::from_vec(vec![start; n], (n, 1), &self.device)?;
        for _ in 0..steps {
            let logits = self.step(&input, &context, &mut cache)?.i((.., 0, ..))?;
            let next: Vec<u32> = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
            // p(next) = exp(logit - max) / Σ exp(logit - max) = 1 / Σ exp(logit - max).
            let max = logits.max_keepdim(D::Minus1)?;
            let sums: Vec<f32> = logits
                .broadcast_sub(&max)?
                .exp()?
                .sum(D::Minus1)?
                .to_vec1()?;
            let mut kept = Vec::with_capacity(active.len());
            for (slot, &row) in active.iter().enumerate() {
                out[row].ids.push(next[slot]);
                out[row].probs.push(1.0 / sums[slot]);
                if next[slot] != eos {
                    kept.push(slot);
                }
            }
            if kept.is_empty() {
                break;
            }
            let fed: Vec<u32> = kept.iter().map(|&slot| next[slot]).collect();
            if kept.len() < active.len() {
                let index = Tensor::from_vec(
                    kept.iter().map(|&slot| slot as u32).collect::<Vec<_>>(),
                    kept.len(),
                    &self.device,
                )?;
                context = context.select(&index, kept.len())?;
                cache.select(&index)?;
                active = kept.iter().map(|&slot| active[slot]).collect();
            }
            input = Tensor::from_vec(fed, (active.len(), 1), &self.device)?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sinusoidal_table_is_hfs() {
        // dim 4: half 2, frequencies 1 and 1e-4; row `pad` is zero.
        let table = sinusoidal_table(4, 4, 1);
        assert_eq!(&table[4..8], &[0.0; 4]);
        let row = &table[8..12];
        assert!((row[0] - 2f32.sin()).abs() < 1e-6);
        assert!((row[1] - (2e-4f32).sin()).abs() < 1e-6);
        assert!((row[2] - 2f32.cos()).abs() < 1e-6);
        assert!((row[3] - (2e-4f32).cos()).abs() < 1e-6);
        assert_eq!(&table[0..4], &[0.0, 0.0, 1.0, 1.0]);
    }
}
