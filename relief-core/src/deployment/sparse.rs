//! Sparse inference: prunable layers stored as libtorch CSR matrices where that is faster.
//!
//! NNrelief leaves connection-level sparsity inside the rows it keeps (fully connected layers
//! lose single weights; convolutions lose whole `k x k` kernels). After `compact` has removed
//! whole units, what remains can be multiplied as a sparse matrix:
//!
//! - linear `W: out x in` as CSR: `y = (W x^T)^T + b` (`x: N x in`, `y: N x out`);
//! - convolution (optional) via im2col: `cols = im2col(x): N x (in k k) x L` with `L` output
//!   positions, `Y = W_csr (in k k -> out) * cols` laid out as `(in k k) x (N L)`, reshaped to
//!   `N x out x H' x W'`. The dense im2col copy costs `N * in * k^2 * L` floats, so this wins
//!   only at very low kernel density.
//!
//! Which layers become CSR is a [`SparsePolicy`]: a weight-density threshold per layer kind (the
//! density is non-zeros / entries of the layer's weight), or measuring dense against CSR for
//! each layer at a given batch size and keeping the faster one. On this project's 2-core CPU
//! (libtorch 2.11, MKL) CSR linear layers beat dense ones only below about
//! [`DEFAULT_LINEAR_DENSITY`] (see `docs/performance.md` for the measured crossover); dense
//! convolution (oneDNN) beat im2col + CSR at every kernel density NNrelief produces, so the
//! default policy keeps convolutions dense.
//!
//! Everything else (BatchNorm with running statistics, ReLU, pooling, residual sums and
//! gathers) is the executor's own eval-mode forward (`exec::forward_with`, this model supplying
//! the layers' linear maps); outputs equal the dense model's up to float summation order. Shortcut masks are not applied: build a [`SparseModel`] from a compacted
//! model (which has none left) or from a model without residual blocks.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::error::CoreError;
use crate::exec::{forward_with, linear_or_conv, ForwardOptions, LayerKernels};
use crate::graph::{LayerOp, PruneGraph};
use crate::params::{Bound, LayerTensors, TensorMap};

/// Linear layers at or below this weight density become CSR under [`SparsePolicy::default`]
/// (measured crossover on a 2-core CPU, batch 1-256; see `docs/performance.md`).
pub const DEFAULT_LINEAR_DENSITY: f64 = 0.05;

/// Which layers to store as CSR.
#[derive(Debug, Clone, PartialEq)]
pub enum SparsePolicy {
    /// CSR when the weight density (non-zeros / entries) is at most `linear` (fully connected)
    /// or `conv` (convolutions through im2col); `0.0` disables a kind, `1.0` forces it.
    Threshold {
        /// Density threshold for linear layers.
        linear: f64,
        /// Density threshold for convolutions.
        conv: f64,
    },
    /// Times dense against CSR for every layer on random inputs of batch `batch` (median of
    /// `reps` runs each) and keeps the faster.
    Measure {
        /// Batch size of the timing runs.
        batch: i64,
        /// Timed runs per variant.
        reps: usize,
    },
}

impl Default for SparsePolicy {
    fn default() -> Self {
        SparsePolicy::Threshold { linear: DEFAULT_LINEAR_DENSITY, conv: 0.0 }
    }
}

/// How one layer is computed.
#[derive(Debug)]
enum Op {
    Dense(Tensor),
    CsrLinear(Tensor),
    CsrConv(Tensor),
}

#[derive(Debug)]
struct SparseLayer {
    op: Op,
    /// Bias as a column `(out, 1)` for the transposed CSR product.
    bias_col: Option<Tensor>,
    density: f64,
}

/// A model ready for eval-mode inference with some layers as CSR matrices: the executor
/// (`exec::forward_with`) runs it, with this model as its [`LayerKernels`].
#[derive(Debug)]
pub struct SparseModel {
    graph: PruneGraph,
    /// Biases and BatchNorm for the executor; a CSR layer's weight slot holds its CSR matrix
    /// (the dense copy is not kept).
    bound: Bound,
    layers: Vec<SparseLayer>,
}

/// Per-layer choice made by [`SparseModel::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerChoice {
    /// Module path.
    pub name: String,
    /// Non-zeros / entries of the weight.
    pub density: f64,
    /// Whether the layer runs as CSR.
    pub sparse: bool,
}

fn csr(w2d: &Tensor) -> Tensor {
    w2d.contiguous().to_sparse_csr(None::<i64>)
}

fn linear_csr(w: &Tensor, bias_col: Option<&Tensor>, x: &Tensor) -> Tensor {
    let xt = x.tr().contiguous();
    let y = match bias_col {
        Some(b) => b.addmm(w, &xt),
        None => w.mm(&xt),
    };
    y.tr()
}

fn conv_csr(w: &Tensor, bias: Option<&Tensor>, op: &LayerOp, x: &Tensor) -> Tensor {
    let LayerOp::Conv2d { outputs, kernel, stride, padding, .. } = *op else { unreachable!("conv op") };
    let size = x.size();
    let (n, h, wd) = (size[0], size[2], size[3]);
    let ho = (h + 2 * padding - kernel) / stride + 1;
    let wo = (wd + 2 * padding - kernel) / stride + 1;
    let cols = x.im2col([kernel, kernel], [1, 1], [padding, padding], [stride, stride]);
    let rows = cols.size()[1];
    let cols = cols.transpose(0, 1).reshape([rows, -1]);
    let y = w.mm(&cols).view([outputs, n, ho, wo]).permute([1, 0, 2, 3]);
    match bias {
        Some(b) => y + b.view([1, -1, 1, 1]),
        None => y.contiguous(),
    }
}

fn median_secs(mut f: impl FnMut(), reps: usize) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2]
}

impl LayerKernels for SparseModel {
    fn linear_map(&self, layer: usize, op: &LayerOp, t: &LayerTensors, x: &Tensor) -> Tensor {
        match &self.layers[layer].op {
            Op::Dense(_) => linear_or_conv(op, t, x),
            sparse => run_op(sparse, op, t.bias.as_ref(), self.layers[layer].bias_col.as_ref(), x),
        }
    }
}

impl SparseModel {
    /// Builds the model from `graph` and its tensors (masks already applied, e.g. a compacted
    /// model); `policy` picks the CSR layers.
    pub fn new(graph: &PruneGraph, tensors: &TensorMap, policy: &SparsePolicy) -> Result<Self, CoreError> {
        let bound = Bound::new(graph, tensors)?;
        let mut layers = Vec::with_capacity(graph.layers.len());
        let mut kept = Vec::with_capacity(graph.layers.len());
        tch::no_grad(|| -> Result<(), CoreError> {
            for (layer, t) in graph.layers.iter().zip(bound.layers) {
                let w = t.weight.detach();
                let numel = w.numel().max(1) as f64;
                let density = w.ne(0.0).sum(Kind::Int64).int64_value(&[]) as f64 / numel;
                let outputs = layer.op.outputs();
                let w2d = w.reshape([outputs, -1]);
                let bias = t.bias.as_ref().map(|b| b.detach());
                let bias_col = bias.as_ref().map(|b| b.view([-1, 1]).contiguous());
                let sparse = match (policy, layer.op) {
                    (SparsePolicy::Threshold { linear, .. }, LayerOp::Linear { .. }) => density <= *linear,
                    (SparsePolicy::Threshold { conv, .. }, LayerOp::Conv2d { .. }) => density <= *conv,
                    (SparsePolicy::Measure { batch, reps }, op) => {
                        let mut shape = vec![*batch, op.inputs()];
                        if op.is_conv() {
                            shape.extend([layer.input_hw.0, layer.input_hw.1]);
                        }
                        let x = Tensor::randn(shape.as_slice(), (Kind::Float, w.device()));
                        let dense = Op::Dense(w.shallow_clone());
                        let sp = if op.is_conv() { Op::CsrConv(csr(&w2d)) } else { Op::CsrLinear(csr(&w2d)) };
                        let time = |o: &Op| {
                            median_secs(
                                || {
                                    let _ = run_op(o, &layer.op, bias.as_ref(), bias_col.as_ref(), &x);
                                },
                                *reps,
                            )
                        };
                        time(&sp) < time(&dense)
                    }
                };
                let op = match (sparse, layer.op.is_conv()) {
                    (false, _) => Op::Dense(w),
                    (true, false) => Op::CsrLinear(csr(&w2d)),
                    (true, true) => Op::CsrConv(csr(&w2d)),
                };
                let weight = match &op {
                    Op::Dense(w) | Op::CsrLinear(w) | Op::CsrConv(w) => w.shallow_clone(),
                };
                let bn = t.bn.map(|mut bn| {
                    for x in [&mut bn.weight, &mut bn.bias, &mut bn.running_mean, &mut bn.running_var] {
                        *x = x.detach();
                    }
                    bn
                });
                kept.push(LayerTensors { weight, bias, bn });
                layers.push(SparseLayer { op, bias_col, density });
            }
            Ok(())
        })?;
        Ok(Self { graph: graph.clone(), bound: Bound { layers: kept }, layers })
    }

    /// Which layers run as CSR, with their densities.
    pub fn choices(&self) -> Vec<LayerChoice> {
        self.graph
            .layers
            .iter()
            .zip(&self.layers)
            .map(|(l, s)| LayerChoice {
                name: l.name.clone(),
                density: s.density,
                sparse: !matches!(s.op, Op::Dense(_)),
            })
            .collect()
    }

    /// The graph this model runs.
    pub fn graph(&self) -> &PruneGraph {
        &self.graph
    }

    /// Logits `N x classes` for `x` (`N x input_shape`), eval mode, no grad.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        tch::no_grad(|| forward_with(&self.graph, &self.bound, None, x, ForwardOptions::EVAL, None, self))
    }

    /// Device of the weights.
    pub fn device(&self) -> Device {
        match self.layers.first().map(|l| &l.op) {
            Some(Op::Dense(w)) | Some(Op::CsrLinear(w)) | Some(Op::CsrConv(w)) => w.device(),
            None => Device::Cpu,
        }
    }
}

fn run_op(
    op: &Op,
    layer_op: &LayerOp,
    bias: Option<&Tensor>,
    bias_col: Option<&Tensor>,
    x: &Tensor,
) -> Tensor {
    match (op, *layer_op) {
        (Op::Dense(w), LayerOp::Linear { .. }) => x.linear(w, bias),
        (Op::Dense(w), LayerOp::Conv2d { stride, padding, .. }) => {
            x.conv2d(w, bias, [stride, stride], [padding, padding], [1, 1], 1)
        }
        (Op::CsrLinear(w), _) => linear_csr(w, bias_col, x),
        (Op::CsrConv(w), _) => conv_csr(w, bias, layer_op, x),
    }
}

/// Weight density of a dense tensor (non-zeros / entries), for reports.
pub fn density(t: &Tensor) -> f64 {
    t.ne(0.0).sum(Kind::Int64).int64_value(&[]) as f64 / t.numel().max(1) as f64
}
