//! The executor: runs the forward program of a [`PruneGraph`] on bound parameters.
//!
//! One function serves training, evaluation and the traced scoring pass. A [`Probe`] sees,
//! per prunable layer, the tensor that feeds it and its activated output, and per residual
//! block the normalised branch output and the residual that is added to it — everything the
//! importance statistics need, in one pass, without keeping activations alive.
//!
//! Layer: `y = act(bn(op(x)))`, `bn(z) = gamma (z - mean) / sqrt(var + 1e-5) + beta` (running
//! statistics in eval mode). Block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + m * s(x))`.

use tch::Tensor;

use crate::graph::{Activation, LayerOp, Node, PruneGraph, Shortcut};
use crate::masks::MaskSet;
use crate::params::{Bound, LayerTensors};

/// BatchNorm epsilon (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// BatchNorm momentum (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;

/// How to run a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct ForwardOptions {
    /// Training mode: BatchNorm uses batch statistics (and updates running ones), dropout on.
    pub train: bool,
    /// Multiply each block's shortcut by its shortcut mask (the model's real forward). The
    /// reference scores ResNet convolutions with this off.
    pub shortcut_masks: bool,
}

impl ForwardOptions {
    /// Evaluation with shortcut masks applied.
    pub const EVAL: Self = Self { train: false, shortcut_masks: true };
    /// Training with shortcut masks applied.
    pub const TRAIN: Self = Self { train: true, shortcut_masks: true };
}

/// Observer of a forward pass (all tensors are valid only during the call).
pub trait Probe {
    /// `x` feeds prunable layer `layer` (`N x in` or `N x C x H x W`).
    fn layer_input(&mut self, layer: usize, x: &Tensor);
    /// The activated output of `layer` (for a block's second conv and option-B shortcut
    /// conv: the block output after the sum and ReLU).
    fn layer_output(&mut self, layer: usize, y: &Tensor);
    /// Residual block `block`: `branch` = bn2(conv2(.)) and `residual` = what is added to it.
    /// The forward is done with `branch` and hands it over: a probe may overwrite it in place.
    fn block(&mut self, block: usize, branch: Tensor, residual: &Tensor);
}

/// Computes the linear map of a prunable layer (`x W^T + b` or the convolution, before
/// BatchNorm). The executor uses [`DenseKernels`]; sparse inference (`crate::sparse`)
/// substitutes CSR products for some layers and reuses everything else.
pub trait LayerKernels {
    /// `op(x)` for prunable layer `layer`, whose bound tensors are `t`.
    fn linear_map(&self, layer: usize, op: &LayerOp, t: &LayerTensors, x: &Tensor) -> Tensor;
}

/// libtorch's dense `linear` and `conv2d`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DenseKernels;

impl LayerKernels for DenseKernels {
    fn linear_map(&self, _: usize, op: &LayerOp, t: &LayerTensors, x: &Tensor) -> Tensor {
        linear_or_conv(op, t, x)
    }
}

/// The dense linear map of `op` with weight and bias from `t`.
pub fn linear_or_conv(op: &LayerOp, t: &LayerTensors, x: &Tensor) -> Tensor {
    match *op {
        LayerOp::Linear { .. } => x.linear(&t.weight, t.bias.as_ref()),
        LayerOp::Conv2d { stride, padding, .. } => {
            x.conv2d(&t.weight, t.bias.as_ref(), [stride, stride], [padding, padding], [1, 1], 1)
        }
    }
}

fn batch_norm(t: &LayerTensors, z: Tensor, train: bool) -> Tensor {
    match &t.bn {
        Some(bn) => Tensor::batch_norm(
            &z,
            Some(&bn.weight),
            Some(&bn.bias),
            Some(&bn.running_mean),
            Some(&bn.running_var),
            train,
            BN_MOMENTUM,
            BN_EPS,
            false,
        ),
        None => z,
    }
}

/// The [`Shortcut::Gather`] branch: `out[:, j] = x[:, index[j], ::stride, ::stride]`, zeros
/// where `index[j] < 0`.
pub fn gather_channels(x: &Tensor, stride: i64, index: &[i64]) -> Tensor {
    let sub =
        if stride > 1 { x.slice(2, 0, None, stride).slice(3, 0, None, stride) } else { x.shallow_clone() };
    let device = x.device();
    if index.iter().all(|&i| i >= 0) {
        return sub.index_select(1, &Tensor::from_slice(index).to_device(device));
    }
    let (src, dst): (Vec<i64>, Vec<i64>) =
        index.iter().enumerate().filter(|(_, &i)| i >= 0).map(|(j, &i)| (i, j as i64)).unzip();
    let size = sub.size();
    let out = Tensor::zeros([size[0], index.len() as i64, size[2], size[3]], (sub.kind(), device));
    if src.is_empty() {
        return out;
    }
    let picked = sub.index_select(1, &Tensor::from_slice(&src).to_device(device));
    out.index_copy(1, &Tensor::from_slice(&dst).to_device(device), &picked)
}

struct Exec<'a> {
    graph: &'a PruneGraph,
    params: &'a Bound,
    masks: Option<&'a MaskSet>,
    opts: ForwardOptions,
    kernels: &'a dyn LayerKernels,
}

impl Exec<'_> {
    /// op + bn (no activation).
    fn pre_activation(&self, i: usize, x: &Tensor, probe: &mut Option<&mut dyn Probe>) -> Tensor {
        if let Some(p) = probe.as_deref_mut() {
            p.layer_input(i, x);
        }
        let t = &self.params.layers[i];
        batch_norm(t, self.kernels.linear_map(i, &self.graph.layers[i].op, t, x), self.opts.train)
    }

    fn layer(&self, i: usize, x: &Tensor, probe: &mut Option<&mut dyn Probe>) -> Tensor {
        let z = self.pre_activation(i, x, probe);
        let y = match self.graph.layers[i].activation {
            Activation::Relu => z.relu(),
            Activation::Identity => z,
        };
        if let Some(p) = probe.as_deref_mut() {
            p.layer_output(i, &y);
        }
        y
    }

    fn block(&self, b: usize, x: &Tensor, probe: &mut Option<&mut dyn Probe>) -> Tensor {
        let block = &self.graph.blocks[b];
        let h = self.layer(block.conv1, x, probe);
        let branch = self.pre_activation(block.conv2, &h, probe);
        let mut residual = match block.shortcut {
            Shortcut::Identity => x.shallow_clone(),
            Shortcut::PadA { pad } => {
                let sub = x.slice(2, 0, None, 2).slice(3, 0, None, 2);
                sub.constant_pad_nd([0, 0, 0, 0, pad, pad])
            }
            Shortcut::Conv { layer } => self.pre_activation(layer, x, probe),
            Shortcut::Gather { stride, ref index } => gather_channels(x, stride, index),
        };
        if self.opts.shortcut_masks {
            if let Some(m) = block.mask.as_ref().and_then(|n| self.masks.and_then(|ms| ms.get(n))) {
                // Out of place on purpose: `*=` is an in-place `mul_` in tch and the identity
                // residual shares storage with the block input (needed by autograd).
                #[allow(clippy::assign_op_pattern)]
                {
                    residual = residual * m.view([-1, 1, 1]);
                }
            }
        }
        let y = (&branch + &residual).relu();
        if let Some(p) = probe.as_deref_mut() {
            p.block(b, branch, &residual);
            p.layer_output(block.conv2, &y);
            if let Shortcut::Conv { layer } = block.shortcut {
                p.layer_output(layer, &y);
            }
        }
        y
    }
}

/// Runs the forward program of `graph` on `x` and returns the logits `N x classes`.
///
/// `masks` supplies the shortcut masks (weights are expected to be masked already).
pub fn forward(
    graph: &PruneGraph,
    params: &Bound,
    masks: Option<&MaskSet>,
    x: &Tensor,
    opts: ForwardOptions,
    probe: Option<&mut dyn Probe>,
) -> Tensor {
    forward_with(graph, params, masks, x, opts, probe, &DenseKernels)
}

/// [`forward`] with the layers' linear maps computed by `kernels`.
pub fn forward_with(
    graph: &PruneGraph,
    params: &Bound,
    masks: Option<&MaskSet>,
    x: &Tensor,
    opts: ForwardOptions,
    mut probe: Option<&mut dyn Probe>,
    kernels: &dyn LayerKernels,
) -> Tensor {
    let ex = Exec { graph, params, masks, opts, kernels };
    let mut h = x.shallow_clone();
    for node in &graph.nodes {
        h = match node {
            Node::Layer(i) => ex.layer(*i, &h, &mut probe),
            Node::MaxPool2d { kernel, stride } => {
                h.max_pool2d([*kernel, *kernel], [*stride, *stride], [0, 0], [1, 1], false)
            }
            Node::GlobalAvgPool => {
                // avg_pool2d over the whole map, as the authors' `F.avg_pool2d(out, out.size(3))`.
                let (hh, ww) = (h.size()[2], h.size()[3]);
                h.avg_pool2d([hh, ww], [hh, ww], [0, 0], false, true, None).flatten(1, -1)
            }
            Node::Flatten => h.flatten(1, -1),
            Node::Dropout { p } => h.dropout(*p, opts.train),
            Node::Block(b) => ex.block(*b, &h, &mut probe),
        };
    }
    h
}
