//! BLIP's text decoder (`BlipTextLMHeadModel`: BERT layers with causal self-attention and
//! cross-attention to the image, then the LM head), for batched greedy decoding from cached
//! image embeddings.
//!
//! The weights and the arithmetic are those of `candle-transformers`' `blip_text` (and HF's
//! `BlipTextLMHeadModel`); what differs is the caching. candle's decoder takes one sequence at
//! a time and recomputes the cross-attention keys and values of every image token at every
//! step, which is most of a step's work (577 image tokens × 12 layers for BLIP-base). Here the
//! image's keys and values are computed once per batch of images ([`ImageContext`]) and reused
//! by every step of the caption and of every question, and a batch of images decodes together
//! (same prompt, so no padding: a finished row is fed `[PAD]`, as HF's `generate` does).

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};

use crate::CaptionError;
use crate::config::TextConfig;

/// Layer-norm epsilon of BLIP's text model.
const LAYER_NORM_EPS: f64 = 1e-12;

fn gelu(xs: &Tensor) -> candle_core::Result<Tensor> {
    // HF's "gelu": the exact, erf-based GELU.
    xs.gelu_erf()
}

#[derive(Debug)]
struct Attention {
    query: Linear,
    key: Linear,
    value: Linear,
    dense: Linear,
    norm: LayerNorm,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn new(
        hidden: usize,
        kv_in: usize,
        heads: usize,
        vb: VarBuilder<'_>,
    ) -> candle_core::Result<Self> {
        let attn = vb.pp("self");
        Ok(Attention {
            query: candle_nn::linear(hidden, hidden, attn.pp("query"))?,
            key: candle_nn::linear(kv_in, hidden, attn.pp("key"))?,
            value: candle_nn::linear(kv_in, hidden, attn.pp("value"))?,
            dense: candle_nn::linear(hidden, hidden, vb.pp("output").pp("dense"))?,
            norm: candle_nn::layer_norm(hidden, LAYER_NORM_EPS, vb.pp("output").pp("LayerNorm"))?,
            heads,
            head_dim: hidden / heads,
        })
    }

    /// `(b, l, width)` → `(b, heads, l, head_dim)`.
    fn split(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let (b, l, _) = xs.dims3()?;
        xs.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// The keys and values of `xs` (`(b, s, kv_in)`), split into heads.
    fn keys_values(&self, xs: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split(&self.key.forward(xs)?)?,
            self.split(&self.value.forward(xs)?)?,
        ))
    }

    /// Attention of `xs` over `keys`/`values` with an additive `mask`, then the output
    /// projection, the residual and the layer norm.
    fn attend(
        &self,
        xs: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, l, hidden) = xs.dims3()?;
        let q = self.split(&self.query.forward(xs)?)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut scores = (q.matmul(&keys.t()?)? * scale)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let out = probs
            .matmul(values)?
            .transpose(1, 2)?
            .reshape((b, l, hidden))?;
        self.norm.forward(&(self.dense.forward(&out)? + xs)?)
    }
}

#[derive(Debug)]
struct Layer {
    self_attention: Attention,
    cross_attention: Attention,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// BLIP's text decoder with its LM head.
#[derive(Debug)]
pub struct TextDecoder {
    word_embeddings: Embedding,
    position_embeddings: Embedding,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    head_dense: Linear,
    head_norm: LayerNorm,
    head: Linear,
    max_positions: usize,
    device: Device,
}

/// The cross-attention keys and values of a batch of images, per layer: computed once, read by
/// every decoding step of the caption and the questions.
#[derive(Debug)]
pub struct ImageContext {
    keys_values: Vec<(Tensor, Tensor)>,
    images: usize,
}

impl ImageContext {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.images
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.images == 0
    }
}

/// The self-attention cache of one decode: keys and values per layer.
struct SelfCache {
    keys_values: Vec<Option<(Tensor, Tensor)>>,
    length: usize,
}

impl TextDecoder {
    /// Builds the decoder from `vb` at `text_decoder` of a `BlipForConditionalGeneration`
    /// checkpoint (`bert.*` and `cls.*`); `encoder_width` is the vision tower's width.
    pub fn new(
        config: &TextConfig,
        encoder_width: usize,
        vb: VarBuilder<'_>,
    ) -> Result<Self, CaptionError> {
        let hidden = config.hidden_size;
        let bert = vb.pp("bert");
        let emb = bert.pp("embeddings");
        let word_embeddings =
            candle_nn::embedding(config.vocab_size, hidden, emb.pp("word_embeddings"))?;
        let position_embeddings = candle_nn::embedding(
            config.max_position_embeddings,
            hidden,
            emb.pp("position_embeddings"),
        )?;
        let embeddings_norm = candle_nn::layer_norm(hidden, LAYER_NORM_EPS, emb.pp("LayerNorm"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| {
                let vb = bert.pp("encoder").pp("layer").pp(i);
                let heads = config.num_attention_heads;
                Ok(Layer {
                    self_attention: Attention::new(hidden, hidden, heads, vb.pp("attention"))?,
                    cross_attention: Attention::new(
                        hidden,
                        encoder_width,
                        heads,
                        vb.pp("crossattention"),
                    )?,
                    intermediate: candle_nn::linear(
                        hidden,
                        config.intermediate_size,
                        vb.pp("intermediate").pp("dense"),
                    )?,
                    output: candle_nn::linear(
                        config.intermediate_size,
                        hidden,
                        vb.pp("output").pp("dense"),
                    )?,
                    output_norm: candle_nn::layer_norm(
                        hidden,
                        LAYER_NORM_EPS,
                        vb.pp("output").pp("LayerNorm"),
                    )?,
                })
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let predictions = vb.pp("cls").pp("predictions");
        let head_dense =
            candle_nn::linear(hidden, hidden, predictions.pp("transform").pp("dense"))?;
        let head_norm = candle_nn::layer_norm(
            hidden,
            LAYER_NORM_EPS,
            predictions.pp("transform").pp("LayerNorm"),
        )?;
        let head = Linear::new(
            predictions.get((config.vocab_size, hidden), "decoder.weight")?,
            Some(predictions.get(config.vocab_size, "bias")?),
        );
        Ok(TextDecoder {
            word_embeddings,
            position_embeddings,
            embeddings_norm,
            layers,
            head_dense,
            head_norm,
            head,
            max_positions: config.max_position_embeddings,
            device: vb.device().clone(),
        })
    }

    /// The cross-attention keys and values of image embeddings `(n, tokens, width)`.
    pub fn image_context(&self, image_embeds: &Tensor) -> Result<ImageContext, CaptionError> {
        let keys_values = self
            .layers
            .iter()
            .map(|layer| layer.cross_attention.keys_values(image_embeds))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(ImageContext {
            keys_values,
            images: image_embeds.dim(0)?,
        })
    }

    fn new_cache(&self) -> SelfCache {
        SelfCache {
            keys_values: vec![None; self.layers.len()],
            length: 0,
        }
    }

    /// Runs `input_ids` `(b, l)` after what `cache` holds; returns the logits `(b, l, vocab)`.
    fn step(
        &self,
        input_ids: &Tensor,
        images: &ImageContext,
        cache: &mut SelfCache,
    ) -> Result<Tensor, CaptionError> {
        let (b, l) = input_ids.dims2()?;
        if b != images.len() {
            return Err(CaptionError::Input(format!(
                "{b} token rows but {} images",
                images.len()
            )));
        }
        let past = cache.length;
        if past + l > self.max_positions {
            return Err(CaptionError::Input(format!(
                "{} tokens exceed the decoder's {} positions",
                past + l,
                self.max_positions
            )));
        }
        let positions = Tensor::arange(past as u32, (past + l) as u32, &self.device)?;
        let embedded = self
            .word_embeddings
            .forward(input_ids)?
            .broadcast_add(&self.position_embeddings.forward(&positions)?)?;
        let mut xs = self.embeddings_norm.forward(&embedded)?;
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
            let attn = &layer.self_attention;
            let (k, v) = attn.keys_values(&xs)?;
            let (k, v) = match &cache.keys_values[i] {
                Some((pk, pv)) => (Tensor::cat(&[pk, &k], 2)?, Tensor::cat(&[pv, &v], 2)?),
                None => (k, v),
            };
            xs = attn.attend(&xs, &k, &v, mask.as_ref())?;
            cache.keys_values[i] = Some((k, v));
            let (ck, cv) = &images.keys_values[i];
            xs = layer.cross_attention.attend(&xs, ck, cv, None)?;
            let hidden = gelu(&layer.intermediate.forward(&xs)?)?;
            xs = layer
                .output_norm
                .forward(&(layer.output.forward(&hidden)? + &xs)?)?;
        }
        cache.length += l;
        let transformed = self
            .head_norm
            .forward(&gelu(&self.head_dense.forward(&xs)?)?)?;
        Ok(self.head.forward(&transformed)?)
    }

    /// The logits `(b, l, vocab)` of token ids `(b, l)` over `images`, causal, from an empty
    /// cache.
    pub fn logits(
        &self,
        input_ids: &Tensor,
        images: &ImageContext,
    ) -> Result<Tensor, CaptionError> {
        self.step(input_ids, images, &mut self.new_cache())
    }

    /// Greedy decoding of `prompt` for every image of `images` at once: per image, the
    /// prompt then the generated ids up to and including `sep` (HF's `generate` output
    /// without the padding after `[SEP]`), at most `steps` generated.
    pub fn greedy(
        &self,
        images: &ImageContext,
        prompt: &[u32],
        steps: usize,
        sep: u32,
        pad: u32,
    ) -> Result<Vec<Vec<u32>>, CaptionError> {
        let n = images.len();
        let mut sequences = vec![prompt.to_vec(); n];
        let mut done = vec![false; n];
        let mut cache = self.new_cache();
        let mut input = Tensor::new(prompt, &self.device)?
            .unsqueeze(0)?
            .repeat((n, 1))?;
        for _ in 0..steps {
            let logits = self.step(&input, images, &mut cache)?;
            let last = logits.i((.., logits.dim(1)? - 1, ..))?;
            let next: Vec<u32> = last.argmax(D::Minus1)?.to_dtype(DType::U32)?.to_vec1()?;
            let mut fed = Vec::with_capacity(n);
            for (i, &token) in next.iter().enumerate() {
                if done[i] {
                    fed.push(pad);
                } else {
                    sequences[i].push(token);
                    done[i] = token == sep;
                    fed.push(token);
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            input = Tensor::new(fed, &self.device)?.unsqueeze(1)?;
        }
        Ok(sequences)
    }
}
