//! OPT, the decoder-only language model of `Salesforce/blip2-opt-*` (transformers'
//! `OPTForCausalLM`), with a key/value cache whose rows can be copied (one image's prefix
//! shared by several prompts) and dropped (rows that ended).

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::{LayerNorm, VarBuilder};

use crate::config::{Activation, OptConfig};
use crate::generation::Decoding;
use crate::layers::{Dense, linear};
use imgd_candle::ModelError;

/// What the attention adds where a key must not be seen.
const MASKED: f32 = -1e9;

struct Layer {
    q: Dense,
    k: Dense,
    v: Dense,
    out: Dense,
    attention_norm: LayerNorm,
    fc1: Dense,
    fc2: Dense,
    final_norm: LayerNorm,
}

impl Layer {
    fn new(vb: VarBuilder<'_>, c: &OptConfig) -> Result<Self> {
        let (d, bias) = (c.hidden_size, c.enable_bias);
        let attention = vb.pp("self_attn");
        Ok(Layer {
            q: linear(attention.pp("q_proj"), d, d, bias)?,
            k: linear(attention.pp("k_proj"), d, d, bias)?,
            v: linear(attention.pp("v_proj"), d, d, bias)?,
            out: linear(attention.pp("out_proj"), d, d, bias)?,
            attention_norm: candle_nn::layer_norm(d, 1e-5, vb.pp("self_attn_layer_norm"))?,
            fc1: linear(vb.pp("fc1"), d, c.ffn_dim, bias)?,
            fc2: linear(vb.pp("fc2"), c.ffn_dim, d, bias)?,
            final_norm: candle_nn::layer_norm(d, 1e-5, vb.pp("final_layer_norm"))?,
        })
    }
}

/// The keys and values every layer has seen, per row, and which of those positions are real
/// tokens (padding is never attended to).
#[derive(Clone)]
pub struct KvCache {
    /// Per layer: keys and values, `(rows, heads, seen, head_dim)`.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// Per row: 1 where the position holds a token, 0 for padding.
    real: Vec<Vec<u8>>,
}

impl KvCache {
    /// An empty cache for `rows` rows of a model of `layers` layers.
    pub fn new(layers: usize, rows: usize) -> Self {
        KvCache {
            layers: vec![None; layers],
            real: vec![Vec::new(); rows],
        }
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.real.len()
    }

    /// Positions seen (the same for every row; padding included).
    pub fn seen(&self) -> usize {
        self.real.first().map_or(0, Vec::len)
    }

    /// A cache of the rows `rows` names, in that order (a row may appear several times).
    pub fn select(&self, rows: &[usize]) -> Result<Self> {
        let Some(Some((k, _))) = self.layers.first() else {
            return Ok(KvCache {
                layers: self.layers.clone(),
                real: rows.iter().map(|&r| self.real[r].clone()).collect(),
            });
        };
        let index = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            k.device(),
        )?;
        let layers = self
            .layers
            .iter()
            .map(|layer| {
                layer
                    .as_ref()
                    .map(|(k, v)| Ok((k.index_select(&index, 0)?, v.index_select(&index, 0)?)))
                    .transpose()
            })
            .collect::<Result<_>>()?;
        Ok(KvCache {
            layers,
            real: rows.iter().map(|&r| self.real[r].clone()).collect(),
        })
    }
}

/// OPT with its output head.
pub struct Opt {
    embed_tokens: Tensor,
    embed_positions: Tensor,
    project_in: Option<Dense>,
    project_out: Option<Dense>,
    layers: Vec<Layer>,
    final_norm: Option<LayerNorm>,
    lm_head: Dense,
    activation: Activation,
    heads: usize,
    config: OptConfig,
}

impl Opt {
    /// Builds it from `vb` (the checkpoint's `language_model`).
    pub fn new(vb: VarBuilder<'_>, c: &OptConfig) -> crate::Result<Self> {
        if !c.do_layer_norm_before {
            // Only OPT-350m is post-norm, and no BLIP-2 checkpoint uses it.
            return Err(ModelError::Config(
                "post-norm OPT (`do_layer_norm_before = false`) is not supported".into(),
            ));
        }
        let decoder = vb.pp("model.decoder");
        let (d, e) = (c.hidden_size, c.embed_dim());
        let embed_tokens = decoder.get((c.vocab_size, e), "embed_tokens.weight")?;
        let lm_head = if !c.tie_word_embeddings || vb.contains_tensor("lm_head.weight") {
            vb.get((c.vocab_size, e), "lm_head.weight")?
        } else {
            embed_tokens.clone()
        };
        let projection = |name: &str, i: usize, o: usize| {
            (e != d)
                .then(|| linear(decoder.pp(name), i, o, false))
                .transpose()
        };
        Ok(Opt {
            embed_positions: decoder
                .get((c.max_position_embeddings + 2, d), "embed_positions.weight")?,
            project_in: projection("project_in", e, d)?,
            project_out: projection("project_out", d, e)?,
            layers: (0..c.num_hidden_layers)
                .map(|i| Layer::new(decoder.pp(format!("layers.{i}")), c))
                .collect::<Result<_>>()?,
            final_norm: (!c.remove_final_layer_norm)
                .then(|| candle_nn::layer_norm(d, 1e-5, decoder.pp("final_layer_norm")))
                .transpose()?,
            embed_tokens,
            lm_head: Dense {
                weight: lm_head,
                bias: None,
            },
            activation: Activation::parse(&c.activation_function)?,
            heads: c.num_attention_heads,
            config: c.clone(),
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &OptConfig {
        &self.config
    }

    /// Layers (the cache holds one entry per layer).
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// The input embeddings of `ids` (`(rows, t)` u32) → `(rows, t, embed_dim)`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor> {
        let (rows, t) = ids.dims2()?;
        self.embed_tokens
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((rows, t, ()))
    }

    /// Runs `embeds` (`(rows, t, embed_dim)`) after what `cache` holds, `real` saying per row
    /// which of the `t` positions are tokens (0: padding). Extends the cache; returns the last
    /// hidden states, `(rows, t, embed_dim)`.
    pub fn forward(
        &self,
        embeds: &Tensor,
        real: &[Vec<u8>],
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (rows, t, _) = embeds.dims3()?;
        let device = embeds.device();
        let past = cache.seen();
        // A token's position counts the real tokens before it (transformers' cumulative sum
        // of the mask, minus one); its row in the table is 2 further on (OPT's offset), and
        // padding takes row 1, as there.
        let mut positions = Vec::with_capacity(rows * t);
        for (row, new) in real.iter().enumerate() {
            let mut before = cache.real[row].iter().filter(|&&r| r == 1).count() as u32;
            for &bit in new {
                positions.push(if bit == 1 { before + 2 } else { 1 });
                before += u32::from(bit);
            }
            cache.real[row].extend_from_slice(new);
        }
        let positions = Tensor::from_vec(positions, rows * t, device)?;
        let mut xs = embeds.clone();
        if let Some(project) = &self.project_in {
            xs = project.forward(&xs)?;
        }
        let position_embeds =
            self.embed_positions
                .index_select(&positions, 0)?
                .reshape((rows, t, ()))?;
        xs = (xs + position_embeds)?;
        let mask = attention_mask(&cache.real, past, t, device)?.to_dtype(xs.dtype())?;
        for (layer, kv) in self.layers.iter().zip(cache.layers.iter_mut()) {
            xs = self.layer_forward(layer, &xs, &mask, kv)?;
        }
        if let Some(norm) = &self.final_norm {
            xs = norm.forward(&xs)?;
        }
        if let Some(project) = &self.project_out {
            xs = project.forward(&xs)?;
        }
        Ok(xs)
    }

    /// The next-token logits of the last position of `hidden` (`(rows, t, embed_dim)`) →
    /// `(rows, vocab)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let t = hidden.dim(1)?;
        self.lm_head
            .forward(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?)
    }

    fn layer_forward(
        &self,
        layer: &Layer,
        xs: &Tensor,
        mask: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let h = (self.attention(layer, &layer.attention_norm.forward(xs)?, mask, kv)? + xs)?;
        let f = layer.fc1.forward(&layer.final_norm.forward(&h)?)?;
        layer.fc2.forward(&self.activation.apply(&f)?)? + h
    }

    fn attention(
        &self,
        layer: &Layer,
        xs: &Tensor,
        mask: &Tensor,
        kv: &mut Option<(Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (rows, t, d) = xs.dims3()?;
        let head_dim = d / self.heads;
        let split = |x: Tensor| -> Result<Tensor> {
            x.reshape((rows, t, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((layer.q.forward(xs)? * (head_dim as f64).powf(-0.5))?)?;
        let mut k = split(layer.k.forward(xs)?)?;
        let mut v = split(layer.v.forward(xs)?)?;
        if let Some((past_k, past_v)) = kv.as_ref() {
            k = Tensor::cat(&[past_k, &k], 2)?;
            v = Tensor::cat(&[past_v, &v], 2)?;
        }
        *kv = Some((k.clone(), v.clone()));
        let weights = q.matmul(&k.t()?)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&weights)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((rows, t, d))?;
        layer.out.forward(&out)
    }
}

/// Rows being decoded by [`Opt`]: its cache of what each row has read and written.
pub struct OptRows<'a> {
    /// The model.
    pub opt: &'a Opt,
    /// What the rows have seen.
    pub cache: KvCache,
}

impl Decoding for OptRows<'_> {
    fn select(&mut self, rows: &[usize]) -> Result<()> {
        self.cache = self.cache.select(rows)?;
        Ok(())
    }

    fn step(&mut self, tokens: Vec<u32>) -> Result<Tensor> {
        let rows = tokens.len();
        let ids = Tensor::from_vec(tokens, (rows, 1), self.opt.embed_tokens.device())?;
        let hidden = self.opt.forward(
            &self.opt.embed(&ids)?,
            &vec![vec![1u8]; rows],
            &mut self.cache,
        )?;
        self.opt.logits(&hidden)
    }
}

/// `(rows, 1, t, past + t)`: 0 where query `i` may see key `j` (a real token at or before it),
/// a large negative number elsewhere.
fn attention_mask(real: &[Vec<u8>], past: usize, t: usize, device: &Device) -> Result<Tensor> {
    let keys = past + t;
    let mut mask = Vec::with_capacity(real.len() * t * keys);
    for row in real {
        for i in 0..t {
            for (j, &bit) in row.iter().enumerate() {
                let visible = bit == 1 && j <= past + i;
                mask.push(if visible { 0.0 } else { MASKED });
            }
        }
    }
    Tensor::from_vec(mask, (real.len(), 1, t, keys), device)
}
