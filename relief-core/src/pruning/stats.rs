//! What one pass over the pruning batch accumulates per layer, streamed chunk by chunk.
//!
//! Per selected layer `l` (sums over the samples seen; divide by `n` for means):
//! - `input_abs`: `sum_n |x[n]|`, shape `in` (fc) or `C x H x W` (conv, unpadded);
//! - `output`: `sum_{n, positions} y[n, u]` of the activated output, shape `out` — zero means
//!   the unit is dead on the batch (ReLU outputs are non-negative);
//! - for the second conv of a residual block, `branch_abs` / `residual_abs`:
//!   `sum_n |bn2(conv2(.))[n]|` and `sum_n |shortcut[n]|`, `C x H x W` each.
//!
//! Memory is that of the statistics, independent of the batch size.

use tch::{Kind, Tensor};

use crate::exec::Probe;
use crate::graph::{NonNegative, PruneGraph, Role};

/// Accumulated statistics of one layer.
#[derive(Debug, Default)]
pub struct LayerStats {
    /// `sum_n |input|`.
    pub input_abs: Option<Tensor>,
    /// `sum` of the activated output per unit.
    pub output: Option<Tensor>,
    /// `sum_n |bn2(conv2)|` (block second convs).
    pub branch_abs: Option<Tensor>,
    /// `sum_n |residual|` (block second convs).
    pub residual_abs: Option<Tensor>,
}

/// A [`Probe`] that accumulates [`LayerStats`] for the selected layers.
#[derive(Debug)]
pub struct StatsCollector {
    want: Vec<bool>,
    block_conv2: Vec<usize>,
    nonneg: NonNegative,
    /// Statistics per layer (empty for unselected layers).
    pub layers: Vec<LayerStats>,
    /// Samples seen.
    pub samples: i64,
}

fn accumulate(slot: &mut Option<Tensor>, add: Tensor) {
    match slot {
        Some(acc) => {
            let _ = acc.f_add_(&add).expect("statistics keep their shape across chunks");
        }
        None => *slot = Some(add),
    }
}

impl StatsCollector {
    /// Collects statistics for the layers where `want[l]` is true.
    pub fn new(graph: &PruneGraph, want: Vec<bool>) -> Self {
        let block_conv2 = graph.blocks.iter().map(|b| b.conv2).collect();
        let layers = graph.layers.iter().map(|_| LayerStats::default()).collect();
        Self { want, block_conv2, nonneg: graph.nonnegative_tensors(), layers, samples: 0 }
    }

    /// Whether layer `l` is collected.
    pub fn wants(&self, l: usize) -> bool {
        self.want[l]
    }

    /// Mean over samples of an accumulated sum.
    pub fn mean(&self, sum: &Tensor) -> Tensor {
        sum / (self.samples as f64)
    }
}

impl Probe for StatsCollector {
    fn layer_input(&mut self, layer: usize, x: &Tensor) {
        if self.want[layer] {
            accumulate(&mut self.layers[layer].input_abs, sum_abs(x, self.nonneg.layer_inputs[layer]));
        }
    }

    fn layer_output(&mut self, layer: usize, y: &Tensor) {
        if self.want[layer] {
            let dims: Vec<i64> = (0..y.dim() as i64).filter(|&d| d != 1).collect();
            accumulate(
                &mut self.layers[layer].output,
                y.sum_dim_intlist(dims.as_slice(), false, Kind::Float),
            );
        }
    }

    fn block(&mut self, block: usize, mut branch: Tensor, residual: &Tensor) {
        let l = self.block_conv2[block];
        if self.want[l] {
            let residual_abs = sum_abs(residual, self.nonneg.residuals[block]);
            let s = &mut self.layers[l];
            // The branch is ours: |.| in place instead of a full-size temporary.
            let _ = branch.abs_();
            accumulate(&mut s.branch_abs, branch.sum_dim_intlist(0, false, Kind::Float));
            accumulate(&mut s.residual_abs, residual_abs);
        }
    }
}

/// `sum_n |x[n]|`; `nonnegative` (known from the graph) skips the `|.|`, an identity there.
fn sum_abs(x: &Tensor, nonnegative: bool) -> Tensor {
    if nonnegative {
        x.sum_dim_intlist(0, false, Kind::Float)
    } else {
        x.abs().sum_dim_intlist(0, false, Kind::Float)
    }
}

/// True when a layer's role makes it part of the residual structure.
pub fn in_block(role: Role) -> bool {
    matches!(role, Role::BlockConv1(_) | Role::BlockConv2(_) | Role::Shortcut(_))
}
