//! Layers the language models share.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

/// Up to this many input rows, [`Dense`] multiplies on the CPU as `(W · xᵀ)ᵀ`.
const FEW_ROWS: usize = 256;

/// A linear layer for decoding: with few input rows (a decode step feeds one token per
/// sequence) candle's CPU multiply of `x · Wᵀ` through the transposed view of `W` runs about
/// 3x slower than `(W · xᵀ)ᵀ`, which reads `W` in its stored order (10 vs 25 ms for 8 rows
/// by OPT-2.7b's 2560 × 10240 feed-forward on this build machine).
pub(crate) struct Dense {
    pub(crate) weight: Tensor,
    pub(crate) bias: Option<Tensor>,
}

impl Dense {
    pub(crate) fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dims = xs.dims().to_vec();
        let inputs = *dims.last().expect("an input with a feature axis");
        let rows = xs.elem_count() / inputs;
        let flat = xs.reshape((rows, inputs))?;
        let ys = if rows <= FEW_ROWS && xs.device().is_cpu() {
            self.weight.matmul(&flat.t()?)?.t()?
        } else {
            flat.matmul(&self.weight.t()?)?
        };
        let ys = match &self.bias {
            Some(bias) => ys.broadcast_add(bias)?,
            None => ys.contiguous()?,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("an output axis") = self.weight.dim(0)?;
        ys.reshape(out_dims)
    }
}

/// A [`Dense`] layer of `vb`'s `weight` (and `bias` when `bias`).
pub(crate) fn linear(vb: VarBuilder<'_>, input: usize, output: usize, bias: bool) -> Result<Dense> {
    let layer = if bias {
        candle_nn::linear(input, output, vb)?
    } else {
        candle_nn::linear_no_bias(input, output, vb)?
    };
    Ok(Dense {
        weight: layer.weight().clone(),
        bias: layer.bias().cloned(),
    })
}
