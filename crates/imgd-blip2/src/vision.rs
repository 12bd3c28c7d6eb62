//! The vision tower: a ViT with pre-norm layers, one fused `qkv` projection whose key has no
//! bias, and a final LayerNorm over every token (transformers' `Blip2VisionModel`).

use candle_core::{D, Module, Result, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, LayerNorm, Linear, VarBuilder};

use crate::config::{Activation, VisionConfig};

/// Self-attention with one `qkv` projection. Checkpoints store its bias either as one
/// `qkv.bias` (what transformers writes) or as `q_bias` and `v_bias` (the released ones); the
/// key's third is zero either way.
struct Attention {
    qkv: Linear,
    projection: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(vb: VarBuilder<'_>, c: &VisionConfig) -> Result<Self> {
        let d = c.hidden_size;
        let weight = vb.get((3 * d, d), "qkv.weight")?;
        let bias = if !c.qkv_bias {
            None
        } else if vb.contains_tensor("qkv.bias") {
            Some(vb.get(3 * d, "qkv.bias")?)
        } else {
            let q = vb.get(d, "q_bias")?;
            let v = vb.get(d, "v_bias")?;
            Some(Tensor::cat(&[&q, &q.zeros_like()?, &v], 0)?)
        };
        let heads = c.num_attention_heads;
        Ok(Attention {
            qkv: Linear::new(weight, bias),
            projection: candle_nn::linear(d, d, vb.pp("projection"))?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, t, d) = xs.dims3()?;
        let qkv = self
            .qkv
            .forward(xs)?
            .reshape((b, t, 3, self.heads, d / self.heads))?
            .permute((2, 0, 3, 1, 4))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let weights = (q.matmul(&k.t()?)? * self.scale)?;
        let weights = candle_nn::ops::softmax_last_dim(&weights)?;
        let out = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        self.projection.forward(&out)
    }
}

struct Layer {
    norm1: LayerNorm,
    attention: Attention,
    norm2: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Layer {
    fn new(vb: VarBuilder<'_>, c: &VisionConfig, activation: Activation) -> Result<Self> {
        let d = c.hidden_size;
        Ok(Layer {
            norm1: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm1"))?,
            attention: Attention::new(vb.pp("self_attn"), c)?,
            norm2: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("layer_norm2"))?,
            fc1: candle_nn::linear(d, c.intermediate_size, vb.pp("mlp.fc1"))?,
            fc2: candle_nn::linear(c.intermediate_size, d, vb.pp("mlp.fc2"))?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (self.attention.forward(&self.norm1.forward(xs)?)? + xs)?;
        let hidden = self
            .activation
            .apply(&self.fc1.forward(&self.norm2.forward(&xs)?)?)?;
        self.fc2.forward(&hidden)? + xs
    }
}

/// The vision tower: `(n, 3, S, S)` pixels → `(n, 1 + (S/P)², hidden)` features.
pub struct VisionTower {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    layers: Vec<Layer>,
    post_layernorm: LayerNorm,
}

impl VisionTower {
    /// Builds it from `vb` (the checkpoint's `vision_model`).
    pub fn new(vb: VarBuilder<'_>, c: &VisionConfig) -> crate::Result<Self> {
        let activation = Activation::parse(&c.hidden_act)?;
        let d = c.hidden_size;
        let patches = (c.image_size / c.patch_size).pow(2);
        let embeddings = vb.pp("embeddings");
        let patch_embedding = candle_nn::conv2d(
            3,
            d,
            c.patch_size,
            Conv2dConfig {
                stride: c.patch_size,
                ..Default::default()
            },
            embeddings.pp("patch_embedding"),
        )?;
        let layers = (0..c.num_hidden_layers)
            .map(|i| Layer::new(vb.pp(format!("encoder.layers.{i}")), c, activation))
            .collect::<Result<_>>()?;
        Ok(VisionTower {
            patch_embedding,
            class_embedding: embeddings.get((1, 1, d), "class_embedding")?,
            position_embedding: embeddings.get((1, patches + 1, d), "position_embedding")?,
            layers,
            post_layernorm: candle_nn::layer_norm(d, c.layer_norm_eps, vb.pp("post_layernorm"))?,
        })
    }

    /// The features of every token after the final LayerNorm (what the Q-Former attends to).
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let b = pixels.dim(0)?;
        let patches = self
            .patch_embedding
            .forward(pixels)?
            .flatten_from(2)?
            .transpose(1, 2)?;
        let class =
            self.class_embedding
                .broadcast_as((b, 1, self.class_embedding.dim(D::Minus1)?))?;
        let mut xs =
            Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        self.post_layernorm.forward(&xs)
    }
}
