//! Importance scores from batch statistics and weights.
//!
//! - Fully connected (`W: out x in`, `m_j = mean_n |h[n, j]|`): `I[i, j] = |W[i, j]| m_j`, bias
//!   entry `|b_i|`. Row length `in + 1` with a bias.
//! - Convolution (`W: K x C x k x k`, `m = mean_n |x_pad[n]|`, `C x Hp x Wp`): the map
//!   `M[k, c, p] = sum_taps m[c, p*s + tap] |W[k, c, tap]|` over output positions `p`, computed
//!   as ONE grouped convolution of `m` with `|W|` (groups = C, `C*K` output channels), then
//!   aggregated over positions: L1 (`sum_p`) or L2 (`sqrt(sum_p M^2)`). Bias entry `|b_k| P`
//!   (L1) or `|b_k| sqrt(P)` (L2) for `P` output positions.
//!
//! Both give `rows x L` with the bias (if any) as the last column.

use tch::{Kind, Tensor};

use crate::graph::LayerOp;

/// How a convolution's per-position importances are reduced to one number per kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionNorm {
    /// Sum over output positions (the authors' LeNet code).
    L1,
    /// Euclidean norm over output positions (the authors' VGG and ResNet code).
    L2,
}

/// Importances of a fully connected layer: `out x (in [+1])`, detached (scores are statistics,
/// never differentiated).
pub fn linear_importance(weight: &Tensor, bias: Option<&Tensor>, mean_abs_input: &Tensor) -> Tensor {
    let (weight, m) = (weight.detach(), mean_abs_input.detach().view([1, -1]));
    match bias {
        Some(b) => {
            // Written in place into the `out x (in + 1)` result: no temporaries, no concatenation.
            let (rows, inputs) = (weight.size()[0], weight.size()[1]);
            let imp = Tensor::empty([rows, inputs + 1], (weight.kind(), weight.device()));
            let mut w_part = weight.abs_out(&imp.narrow(1, 0, inputs));
            w_part *= &m;
            let _ = b.detach().abs_out(&imp.select(1, inputs));
            imp
        }
        None => weight.abs() * m,
    }
}

/// Importances of a convolution: `K x (C [+1])`; `mean_abs_input` is `C x H x W` (unpadded).
pub fn conv_importance(
    op: &LayerOp,
    weight: &Tensor,
    bias: Option<&Tensor>,
    mean_abs_input: &Tensor,
    norm: PositionNorm,
) -> Tensor {
    let LayerOp::Conv2d { inputs, outputs, kernel, stride, padding } = *op else {
        panic!("conv_importance called on a linear layer");
    };
    // |W| as C groups of K single-channel filters: (C*K, 1, k, k), group c = |W[:, c]|.
    let w = weight.abs().transpose(0, 1).reshape([inputs * outputs, 1, kernel, kernel]);
    let map = mean_abs_input.unsqueeze(0).conv2d(
        &w,
        None::<Tensor>,
        [stride, stride],
        [padding, padding],
        [1, 1],
        inputs,
    );
    let positions = map.size()[2] * map.size()[3];
    let map = map.view([inputs, outputs, positions]);
    let per_kernel = match norm {
        PositionNorm::L1 => map.sum_dim_intlist(2, false, Kind::Float),
        PositionNorm::L2 => map.norm_scalaropt_dim(2, [2i64].as_slice(), false),
    }
    .transpose(0, 1);
    match bias {
        Some(b) => {
            let scale = match norm {
                PositionNorm::L1 => positions as f64,
                PositionNorm::L2 => (positions as f64).sqrt(),
            };
            Tensor::cat(&[per_kernel, (b.abs() * scale).view([-1, 1])], 1)
        }
        None => per_kernel.contiguous(),
    }
}
