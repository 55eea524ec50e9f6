//! Compaction: a masked model becomes a smaller *dense* model with its own [`PruneGraph`].
//!
//! NNrelief removes whole neurons and filters (and, for fully connected layers, single
//! connections). Masks alone save nothing at inference: a masked `out x in x k x k` convolution
//! costs as much as the dense one. [`compact`] physically removes every unit that provably does
//! not change the model's output, so the result computes **the same function in eval mode**
//! (up to float summation order) with fewer rows and columns.
//!
//! # Analysis
//!
//! The model *as executed* is used: each parameter multiplied by its mask (inert masks, the
//! authors' ResNet-stem quirk, are not applied, as in the real forward pass), BatchNorm with its
//! running statistics (`bn(z) = gamma (z - mean) / sqrt(var + 1e-5) + beta`). Every channel (or
//! feature) of every tensor of the program gets a state, computed forward:
//!
//! - `Live`: it may vary with the input;
//! - `Const(v)`: it equals `v` at every position for every input. A unit whose weight row
//!   reads no kept input (all its entries masked, or reading only zero channels) emits
//!   `act(bn(b))`, with `b` its (masked) bias plus folded constants; a unit whose BatchNorm has
//!   `gamma = 0` emits `act(beta)`. Max pooling, global pooling, flatten and dropout (eval)
//!   keep constants; a block output is `relu(branch + residual)` of the two states.
//!
//! A consumer treats its input columns as follows:
//! - `Const(0)`: dropped (contributes exactly nothing, also under zero padding);
//! - `Const(v != 0)` into a linear layer or an unpadded convolution: **folded** into the
//!   consumer's bias, `b'[o] = b[o] + v * sum_taps W[o, i, taps]` (exact: every output position
//!   of an unpadded convolution reads the full kernel), then dropped. A layer without a bias gets
//!   one when folding makes it non-zero;
//! - `Const(v != 0)` into a padded convolution (border positions read zeros, so the constant is
//!   not uniform there) or into a residual shortcut: **kept**, computed by its unit as before;
//! - `Live`: kept when a kept row has an unmasked entry in that column.
//!
//! Then, backward from the logits (all `num_classes` outputs are always kept), a unit is kept
//! when a consumer keeps its column. A flatten keeps a channel `c` (columns `c*H*W ..
//! (c+1)*H*W` of the next linear layer) when any of its features is kept. The graph input is
//! never sliced (the compacted model takes the same input). A layer left with no input column
//! keeps one (a constant one when possible), because libtorch has no zero-width layers; that
//! unit computes its true output, so this stays exact.
//!
//! # Residual blocks
//!
//! Inner channels (conv1 outputs = conv2 inputs) compact freely. A block-output channel is kept
//! when a consumer needs it (next conv1 column, next shortcut, pooled classifier column); a
//! kept channel keeps its conv2 filter even when that filter is entirely masked (the block
//! output width equals conv2's; such a row holds zeros and its BatchNorm constant). Identity and
//! option-A shortcuts become [`Shortcut::Gather`]: output channel `j` reads kept input
//! channel `index[j]` (spatially subsampled by 2 for option A), or nothing (`-1`) when the
//! shortcut mask is 0 there, the source channel is `Const(0)` or lies in option A's zero
//! padding. A gather that is the identity stays [`Shortcut::Identity`]. Option-B projections
//! are ordinary layers. The compacted graph's block inputs must be the union of what conv1 and
//! the shortcut read, so conv1 (and a projection) may keep all-zero columns.
//!
//! # Counts
//!
//! *Alive entries* of a model = non-zero entries of its weight and bias masks over every
//! prunable layer, stem included, an inert mask counting as all ones (the model as executed).
//! The compacted model carries its own masks (sliced from the original; a bias that received
//! folded constants is unmasked there): [`CompactReport::alive_after`] counts those, and
//! `alive_after = alive_before - alive_dropped + bias_added`. Every dropped alive entry
//! ([`CompactReport::alive_dropped`]) only multiplied a provably zero input, belonged to a unit
//! nobody reads, or was folded into a bias. For masks produced by `prune_step` (backward
//! pruning done) nothing alive is dropped, except the rows of an inert stem mask (units the
//! reference computes although nothing reads them), and every kept unit of a plain layer or a
//! block's first convolution is an alive unit (`accounting`'s `units_alive`); the tests assert
//! exactly this. [`CompactReport::params_after`] counts every entry of the compacted weights
//! and biases (zeros inside kept rows included: connection-level sparsity remains, see
//! `sparse`), so `params_after >= alive_after`.
//!
//! # File format
//!
//! [`save_compact`] writes one safetensors file: the tensors by PyTorch name plus metadata
//! `format = "relief-compact"`, `version = "1"`, `graph` (the [`PruneGraph`] as JSON), `arch` and
//! `num_classes`; [`load_compact`] reads it back.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::error::CoreError;
use crate::exec::BN_EPS;
use crate::graph::{Activation, LayerOp, Node, PruneGraph, Shortcut};
use crate::masks::MaskSet;
use crate::params::TensorMap;
use crate::tensor_io::kind_of;

/// Value of `format` in a compacted model's safetensors metadata.
pub const FORMAT: &str = "relief-compact";
/// Value of `version` in a compacted model's safetensors metadata.
pub const FORMAT_VERSION: &str = "1";

/// State of one channel (or feature) of a tensor of the program.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ch {
    Live,
    Const(f64),
}

impl Ch {
    fn is_zero(self) -> bool {
        self == Ch::Const(0.0)
    }
}

/// One layer's effective (masked) parameters on the host, for the analysis.
struct HostLayer {
    outputs: usize,
    inputs: usize,
    /// `outputs x inputs`: some tap of `(o, i)` is unmasked.
    alive: Vec<bool>,
    /// `outputs x inputs`: sum over taps of the masked weight.
    wsum: Vec<f64>,
    /// Masked bias (zeros without one).
    bias: Vec<f64>,
    /// gamma, beta, running mean, running var.
    bn: Option<[Vec<f64>; 4]>,
    /// Constants fold exactly into this layer (linear or unpadded convolution).
    can_fold: bool,
    activation: Activation,
}

/// What the analysis decided for one layer.
#[derive(Debug, Clone, Default)]
struct Plan {
    /// Per input: its state.
    input: Vec<Ch>,
    /// Per input: kept column candidate (live, or a constant that cannot be folded).
    cand: Vec<bool>,
    /// Per input: the constant folded into the bias (0 when not folded).
    fold_value: Vec<f64>,
    /// Per output: folded contribution to the bias.
    fold_add: Vec<f64>,
    /// Kept rows.
    rows: Vec<bool>,
    /// Kept columns.
    cols: Vec<bool>,
}

/// Per-layer counts of a compaction.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Module path.
    pub name: String,
    /// Output units before / after.
    pub outputs: (i64, i64),
    /// Input units (features or channels) before / after.
    pub inputs: (i64, i64),
    /// Inputs whose constant was folded into the bias.
    pub folded_inputs: i64,
    /// Weight + bias entries before / after.
    pub params: (i64, i64),
    /// Alive (unmasked) weight + bias entries before / after.
    pub alive: (i64, i64),
    /// Dense FLOPs per sample before / after (see `accounting`).
    pub flops: (i64, i64),
}

/// Counts of a whole compaction (see the module docs for the definitions).
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    /// Per layer, graph order.
    pub layers: Vec<LayerReport>,
    /// Every weight + bias entry of the original prunable layers.
    pub params_before: i64,
    /// Every weight + bias entry of the compacted prunable layers.
    pub params_after: i64,
    /// Alive entries of the original model as executed.
    pub alive_before: i64,
    /// Alive entries of the compacted model (non-zero entries of its masks).
    pub alive_after: i64,
    /// Alive original entries that the compaction removed (they provably did not matter).
    pub alive_dropped: i64,
    /// Bias entries that are alive only in the compacted model (folded constants).
    pub bias_added: i64,
    /// Dense FLOPs per sample of the original prunable layers.
    pub flops_before: i64,
    /// Dense FLOPs per sample of the compacted prunable layers.
    pub flops_after: i64,
}

/// A compacted model: graph, tensors (PyTorch names, the original device), masks and counts.
#[derive(Debug)]
pub struct Compacted {
    /// The smaller graph.
    pub graph: PruneGraph,
    /// Its weights, biases and BatchNorm tensors (masks already multiplied in).
    pub tensors: TensorMap,
    /// Masks of the compacted model (the original masks, sliced).
    pub masks: MaskSet,
    /// What was removed.
    pub report: CompactReport,
}

fn to_f64(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Double).flatten(0, -1))
        .expect("a numeric tensor converts to f64")
}

fn to_bool(t: &Tensor) -> Vec<bool> {
    Vec::<bool>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Bool).flatten(0, -1))
        .expect("a boolean tensor converts")
}

fn nnz(t: &Tensor) -> i64 {
    t.ne(0.0).sum(Kind::Int64).int64_value(&[])
}

fn index_of(keep: &[bool], device: Device) -> Tensor {
    let idx: Vec<i64> = keep.iter().enumerate().filter(|(_, &k)| k).map(|(i, _)| i as i64).collect();
    Tensor::from_slice(&idx).to_device(device)
}

/// libtorch rejects zero-width layers: when nothing is kept, keep one unit, preferably a
/// constant one (it reads nothing upstream). Keeping a unit is always exact: it computes its
/// true output and its consumers keep their (possibly zero) weights on it.
fn force_one(keep: &mut [bool], states: &[Ch]) {
    if keep.is_empty() || keep.iter().any(|&k| k) {
        return;
    }
    let i = states.iter().position(|s| matches!(s, Ch::Const(_))).unwrap_or(0);
    keep[i] = true;
}

fn positions(keep: &[bool]) -> Vec<i64> {
    let mut next = 0;
    keep.iter()
        .map(|&k| {
            if k {
                next += 1;
                next - 1
            } else {
                -1
            }
        })
        .collect()
}

struct Compactor<'a> {
    graph: &'a PruneGraph,
    params: &'a TensorMap,
    masks: &'a MaskSet,
    host: Vec<HostLayer>,
    plans: Vec<Plan>,
    /// Per block: states of the block input.
    block_in: Vec<Vec<Ch>>,
    /// Per block: states of the block output.
    block_out: Vec<Vec<Ch>>,
    /// Per block: the shortcut mask on the host (ones without one).
    short_mask: Vec<Vec<f64>>,
    /// Per block: the kept input channels.
    block_keep_in: Vec<Vec<bool>>,
}

impl<'a> Compactor<'a> {
    fn tensor(&self, name: &str) -> Result<Tensor, CoreError> {
        let t = self.params.get(name).ok_or_else(|| CoreError::MissingTensor(name.to_string()))?;
        Ok(t.detach())
    }

    /// The parameter as executed: multiplied by its mask unless that mask is inert.
    fn effective(&self, name: &str) -> Result<Tensor, CoreError> {
        let t = self.tensor(name)?;
        Ok(match self.masks.get(name) {
            Some(m) if !self.masks.is_inert(name) => {
                if m.size() != t.size() {
                    return Err(CoreError::ShapeMismatch {
                        name: format!("mask of {name}"),
                        expected: t.size(),
                        found: m.size(),
                    });
                }
                &t * m.to_device(t.device()).to_kind(t.kind())
            }
            _ => t,
        })
    }

    /// The mask as executed (ones when absent or inert).
    fn effective_mask(&self, name: &str, shape: &[i64], device: Device) -> Tensor {
        match self.masks.get(name) {
            Some(m) if !self.masks.is_inert(name) => m.to_device(device).ne(0.0).to_kind(Kind::Float),
            _ => Tensor::ones(shape, (Kind::Float, device)),
        }
    }

    fn new(graph: &'a PruneGraph, params: &'a TensorMap, masks: &'a MaskSet) -> Result<Self, CoreError> {
        graph.validate().map_err(CoreError::Invalid)?;
        let mut c = Self {
            graph,
            params,
            masks,
            host: Vec::new(),
            plans: vec![Plan::default(); graph.layers.len()],
            block_in: vec![Vec::new(); graph.blocks.len()],
            block_out: vec![Vec::new(); graph.blocks.len()],
            short_mask: Vec::new(),
            block_keep_in: vec![Vec::new(); graph.blocks.len()],
        };
        for layer in &graph.layers {
            let (outputs, inputs) = (layer.op.outputs(), layer.op.inputs());
            let shape = layer.op.weight_shape();
            let w = c.effective(&layer.weight_name())?;
            if w.size() != shape {
                return Err(CoreError::ShapeMismatch {
                    name: layer.weight_name(),
                    expected: shape,
                    found: w.size(),
                });
            }
            let m = c.effective_mask(&layer.weight_name(), &shape, Device::Cpu);
            let alive = to_bool(&m.view([outputs, inputs, -1]).amax([2i64].as_slice(), false).ne(0.0));
            let wsum = to_f64(&w.to_kind(Kind::Double).view([outputs, inputs, -1]).sum_dim_intlist(
                [2i64].as_slice(),
                false,
                Kind::Double,
            ));
            let bias = match layer.bias_name() {
                Some(b) => to_f64(&c.effective(&b)?),
                None => vec![0.0; outputs as usize],
            };
            let bn = match &layer.batch_norm {
                Some(bn) => {
                    let get = |s: &str| c.effective(&format!("{bn}.{s}")).map(|t| to_f64(&t));
                    Some([get("weight")?, get("bias")?, get("running_mean")?, get("running_var")?])
                }
                None => None,
            };
            let can_fold = match layer.op {
                LayerOp::Linear { .. } => true,
                LayerOp::Conv2d { padding, .. } => padding == 0,
            };
            c.host.push(HostLayer {
                outputs: outputs as usize,
                inputs: inputs as usize,
                alive,
                wsum,
                bias,
                bn,
                can_fold,
                activation: layer.activation,
            });
        }
        for block in &graph.blocks {
            let planes = graph.layers[block.conv2].op.outputs();
            let m = match &block.mask {
                Some(name) => {
                    let m = masks.get(name).ok_or_else(|| CoreError::MissingTensor(name.clone()))?;
                    to_f64(m)
                }
                None => vec![1.0; planes as usize],
            };
            if m.iter().any(|&v| v != 0.0 && v != 1.0) {
                return Err(CoreError::Invalid("shortcut masks must hold only 0 and 1".into()));
            }
            c.short_mask.push(m);
        }
        Ok(c)
    }

    /// Forward analysis of layer `l` on input states; returns the output states (activated,
    /// or pre-sum for block second convs and projections, whose activation is the identity).
    fn forward_layer(&mut self, l: usize, input: &[Ch]) -> Vec<Ch> {
        let h = &self.host[l];
        debug_assert_eq!(input.len(), h.inputs);
        let mut plan = Plan {
            input: input.to_vec(),
            cand: vec![false; h.inputs],
            fold_value: vec![0.0; h.inputs],
            fold_add: vec![0.0; h.outputs],
            ..Plan::default()
        };
        for (i, s) in input.iter().enumerate() {
            match *s {
                Ch::Live => plan.cand[i] = true,
                Ch::Const(0.0) => {}
                Ch::Const(v) if h.can_fold => plan.fold_value[i] = v,
                Ch::Const(_) => plan.cand[i] = true,
            }
        }
        let folded: Vec<usize> = (0..h.inputs).filter(|&i| plan.fold_value[i] != 0.0).collect();
        let mut out = Vec::with_capacity(h.outputs);
        for o in 0..h.outputs {
            let row = o * h.inputs;
            plan.fold_add[o] = folded.iter().map(|&i| h.wsum[row + i] * plan.fold_value[i]).sum();
            let reads = (0..h.inputs).any(|i| plan.cand[i] && h.alive[row + i]);
            let gamma_zero = h.bn.as_ref().is_some_and(|bn| bn[0][o] == 0.0);
            if reads && !gamma_zero {
                out.push(Ch::Live);
                continue;
            }
            let pre = h.bias[o] + plan.fold_add[o];
            let post = match &h.bn {
                Some([g, b, _, _]) if g[o] == 0.0 => b[o],
                Some([g, b, mean, var]) => g[o] * (pre - mean[o]) / (var[o] + BN_EPS).sqrt() + b[o],
                None => pre,
            };
            out.push(Ch::Const(match h.activation {
                Activation::Relu => post.max(0.0),
                Activation::Identity => post,
            }));
        }
        self.plans[l] = plan;
        out
    }

    fn forward(&mut self) -> Vec<Vec<Ch>> {
        let graph = self.graph;
        let shapes = graph.node_input_shapes();
        let mut states: Vec<Vec<Ch>> = Vec::with_capacity(graph.nodes.len() + 1);
        let mut s = vec![Ch::Live; graph.input_shape[0] as usize];
        for (k, node) in graph.nodes.iter().enumerate() {
            states.push(s.clone());
            s = match node {
                Node::Layer(l) => self.forward_layer(*l, &s),
                Node::MaxPool2d { .. } | Node::GlobalAvgPool | Node::Dropout { .. } => s,
                Node::Flatten => {
                    let per: i64 = shapes[k][1..].iter().product();
                    s.iter().flat_map(|&c| std::iter::repeat_n(c, per as usize)).collect()
                }
                Node::Block(b) => {
                    let block = &graph.blocks[*b];
                    let mid = self.forward_layer(block.conv1, &s);
                    let branch = self.forward_layer(block.conv2, &mid);
                    let m = self.short_mask[*b].clone();
                    let carried = |src: Option<usize>, j: usize| match src {
                        Some(c) if m[j] != 0.0 => s[c],
                        _ => Ch::Const(0.0),
                    };
                    let residual: Vec<Ch> = match block.shortcut {
                        Shortcut::Identity => (0..branch.len()).map(|j| carried(Some(j), j)).collect(),
                        Shortcut::PadA { pad } => (0..branch.len())
                            .map(|j| {
                                let c = j as i64 - pad;
                                carried((c >= 0 && c < s.len() as i64).then_some(c as usize), j)
                            })
                            .collect(),
                        Shortcut::Gather { ref index, .. } => index
                            .iter()
                            .enumerate()
                            .map(|(j, &c)| carried((c >= 0).then_some(c as usize), j))
                            .collect(),
                        Shortcut::Conv { layer } => self.forward_layer(layer, &s),
                    };
                    let out: Vec<Ch> = branch
                        .iter()
                        .zip(&residual)
                        .map(|(a, r)| match (*a, *r) {
                            (Ch::Const(a), Ch::Const(r)) => Ch::Const((a + r).max(0.0)),
                            _ => Ch::Live,
                        })
                        .collect();
                    self.block_in[*b] = s.clone();
                    self.block_out[*b] = out.clone();
                    out
                }
            };
        }
        states.push(s);
        states
    }

    /// Keeps rows `need` of layer `l`; returns (and records) the columns it reads.
    fn backward_layer(&mut self, l: usize, need: &[bool]) -> Vec<bool> {
        let h = &self.host[l];
        let plan = &mut self.plans[l];
        plan.rows = need.to_vec();
        let mut cols = vec![false; h.inputs];
        for (o, _) in need.iter().enumerate().filter(|(_, &k)| k) {
            let row = o * h.inputs;
            for (i, c) in cols.iter_mut().enumerate() {
                if plan.cand[i] && h.alive[row + i] {
                    *c = true;
                }
            }
        }
        force_one(&mut cols, &plan.input);
        plan.cols = cols.clone();
        cols
    }

    fn backward(&mut self, states: &[Vec<Ch>]) {
        let graph = self.graph;
        let shapes = graph.node_input_shapes();
        let mut need = vec![true; graph.num_classes as usize];
        let mut consumer: Option<usize> = None;
        for (k, node) in graph.nodes.iter().enumerate().rev() {
            need = match node {
                Node::Layer(l) => {
                    consumer = Some(*l);
                    self.backward_layer(*l, &need)
                }
                Node::MaxPool2d { .. } | Node::GlobalAvgPool | Node::Dropout { .. } => need,
                Node::Flatten => {
                    let per = shapes[k][1..].iter().product::<i64>() as usize;
                    let channels: Vec<bool> = need.chunks(per).map(|c| c.iter().any(|&x| x)).collect();
                    // The consumer reads whole channels.
                    if let Some(l) = consumer {
                        self.plans[l].cols =
                            channels.iter().flat_map(|&c| std::iter::repeat_n(c, per)).collect();
                    }
                    channels
                }
                Node::Block(b) => {
                    let block = &graph.blocks[*b];
                    let inner = self.backward_layer(block.conv2, &need);
                    let mut keep_in = self.backward_layer(block.conv1, &inner);
                    let input = self.block_in[*b].clone();
                    let m = self.short_mask[*b].clone();
                    let carry = |src: i64, j: usize, keep_in: &mut Vec<bool>| {
                        if src >= 0 && (src as usize) < input.len() && need[j] && m[j] != 0.0 {
                            let c = src as usize;
                            if !input[c].is_zero() {
                                keep_in[c] = true;
                            }
                        }
                    };
                    match block.shortcut {
                        Shortcut::Identity => (0..need.len()).for_each(|j| carry(j as i64, j, &mut keep_in)),
                        Shortcut::PadA { pad } => {
                            (0..need.len()).for_each(|j| carry(j as i64 - pad, j, &mut keep_in))
                        }
                        Shortcut::Gather { ref index, .. } => {
                            index.iter().enumerate().for_each(|(j, &c)| carry(c, j, &mut keep_in))
                        }
                        Shortcut::Conv { layer } => {
                            let cols = self.backward_layer(layer, &need);
                            keep_in.iter_mut().zip(cols).for_each(|(a, b)| *a |= b);
                        }
                    }
                    force_one(&mut keep_in, &input);
                    // conv1 and a projection read the whole kept block input.
                    self.plans[block.conv1].cols = keep_in.clone();
                    if let Shortcut::Conv { layer } = block.shortcut {
                        self.plans[layer].cols = keep_in.clone();
                    }
                    self.block_keep_in[*b] = keep_in.clone();
                    keep_in
                }
            };
        }
        // The graph input is never sliced: whatever reads it keeps every column.
        let all = vec![true; states[0].len()];
        match graph.nodes.first() {
            Some(Node::Layer(l)) => self.plans[*l].cols = all,
            Some(Node::Block(b)) => {
                let block = &graph.blocks[*b];
                self.plans[block.conv1].cols = all.clone();
                if let Shortcut::Conv { layer } = block.shortcut {
                    self.plans[layer].cols = all.clone();
                }
                self.block_keep_in[*b] = all;
            }
            _ => {}
        }
    }

    /// Slices every tensor and builds the compacted graph, masks and report.
    fn build(self) -> Result<Compacted, CoreError> {
        let graph = self.graph;
        let device = graph
            .layers
            .first()
            .and_then(|l| self.params.get(&l.weight_name()))
            .map(|t| t.device())
            .unwrap_or(Device::Cpu);
        let mut out_graph = graph.clone();
        let mut tensors = TensorMap::new();
        let mut mask_list: Vec<(String, Tensor)> = Vec::new();
        let mut layers = Vec::new();
        let (mut bias_added, mut alive_before, mut alive_after) = (0i64, 0i64, 0i64);
        for (l, layer) in graph.layers.iter().enumerate() {
            let plan = &self.plans[l];
            let rows = index_of(&plan.rows, device);
            let cols = index_of(&plan.cols, device);
            let (n_rows, n_cols) = (rows.size()[0], cols.size()[0]);
            let shape = layer.op.weight_shape();
            let w = self.effective(&layer.weight_name())?.to_device(device);
            let wm = self.effective_mask(&layer.weight_name(), &shape, device);
            let new_w = w.index_select(0, &rows).index_select(1, &cols);
            let new_wm = wm.index_select(0, &rows).index_select(1, &cols);
            // Fold the constants of the dropped columns only: a block input a projection could
            // fold may still be kept because conv1 reads it, and then it is computed, not folded.
            let h = &self.host[l];
            let folded: Vec<usize> =
                (0..h.inputs).filter(|&i| plan.fold_value[i] != 0.0 && !plan.cols[i]).collect();
            let fold: Vec<f64> = (0..h.outputs)
                .filter(|&o| plan.rows[o])
                .map(|o| folded.iter().map(|&i| h.wsum[o * h.inputs + i] * plan.fold_value[i]).sum())
                .collect();
            let fold = Tensor::from_slice(&fold).to_kind(Kind::Float).to_device(device);
            let (old_b, old_bm) = match layer.bias_name() {
                Some(b) => {
                    let bm = self.effective_mask(&b, &[layer.op.outputs()], device);
                    (self.effective(&b)?.to_device(device), bm)
                }
                None => (
                    Tensor::zeros([layer.op.outputs()], (Kind::Float, device)),
                    Tensor::zeros([layer.op.outputs()], (Kind::Float, device)),
                ),
            };
            let new_b = (old_b.index_select(0, &rows).to_kind(Kind::Double) + fold.to_kind(Kind::Double))
                .to_kind(Kind::Float);
            let kept_bm = old_bm.index_select(0, &rows);
            let new_bm = kept_bm.logical_or(&fold.ne(0.0)).to_kind(Kind::Float);
            let has_bias = layer.bias || nnz(&new_b) > 0;
            bias_added += nnz(&new_bm) - nnz(&kept_bm);
            let a_before = nnz(&wm) + nnz(&old_bm);
            let a_after = nnz(&new_wm) + if has_bias { nnz(&new_bm) } else { 0 };
            alive_before += a_before;
            alive_after += a_after;
            let new_layer = &mut out_graph.layers[l];
            new_layer.op = match layer.op {
                LayerOp::Linear { .. } => LayerOp::Linear { inputs: n_cols, outputs: n_rows },
                LayerOp::Conv2d { kernel, stride, padding, .. } => {
                    LayerOp::Conv2d { inputs: n_cols, outputs: n_rows, kernel, stride, padding }
                }
            };
            new_layer.bias = has_bias;
            tensors.insert(layer.weight_name(), new_w);
            mask_list.push((layer.weight_name(), new_wm));
            if has_bias {
                let name = format!("{}.bias", layer.name);
                tensors.insert(name.clone(), new_b);
                mask_list.push((name, new_bm));
            }
            if let Some(bn) = &layer.batch_norm {
                for s in ["weight", "bias", "running_mean", "running_var"] {
                    let name = format!("{bn}.{s}");
                    tensors.insert(
                        name.clone(),
                        self.effective(&name)?.to_device(device).index_select(0, &rows),
                    );
                }
                let nbt = format!("{bn}.num_batches_tracked");
                let t = match self.params.get(&nbt) {
                    Some(t) => t.detach().copy(),
                    None => Tensor::zeros([], (Kind::Int64, device)),
                };
                tensors.insert(nbt, t);
            }
            let k2 = match layer.op {
                LayerOp::Linear { .. } => 1,
                LayerOp::Conv2d { kernel, .. } => kernel * kernel,
            };
            let params_before =
                shape.iter().product::<i64>() + if layer.bias { layer.op.outputs() } else { 0 };
            let params_after = n_rows * n_cols * k2 + if has_bias { n_rows } else { 0 };
            let pos = layer.output_positions();
            layers.push(LayerReport {
                name: layer.name.clone(),
                outputs: (layer.op.outputs(), n_rows),
                inputs: (layer.op.inputs(), n_cols),
                folded_inputs: folded.len() as i64,
                params: (params_before, params_after),
                alive: (a_before, a_after),
                flops: (
                    pos * (2 * shape.iter().product::<i64>()
                        + if layer.bias { layer.op.outputs() } else { 0 }),
                    pos * (2 * n_rows * n_cols * k2 + if has_bias { n_rows } else { 0 }),
                ),
            });
        }
        for (b, block) in graph.blocks.iter().enumerate() {
            let keep_out = &self.plans[block.conv2].rows;
            let keep_in = &self.block_keep_in[b];
            let pos_in = positions(keep_in);
            let m = &self.short_mask[b];
            let map = |src: i64, j: usize| -> i64 {
                if m[j] == 0.0 || src < 0 || src as usize >= keep_in.len() {
                    return -1;
                }
                pos_in[src as usize]
            };
            let (stride, index): (i64, Vec<i64>) = match block.shortcut {
                Shortcut::Conv { .. } => continue,
                Shortcut::Identity => (1, (0..keep_out.len()).map(|j| map(j as i64, j)).collect()),
                Shortcut::PadA { pad } => (2, (0..keep_out.len()).map(|j| map(j as i64 - pad, j)).collect()),
                Shortcut::Gather { stride, ref index } => {
                    (stride, index.iter().enumerate().map(|(j, &c)| map(c, j)).collect())
                }
            };
            let index: Vec<i64> =
                index.into_iter().zip(keep_out).filter(|(_, &k)| k).map(|(i, _)| i).collect();
            let identity = stride == 1 && index.len() == pos_in.iter().filter(|&&p| p >= 0).count() && {
                index.iter().enumerate().all(|(j, &i)| i == j as i64)
            };
            out_graph.blocks[b].shortcut =
                if identity { Shortcut::Identity } else { Shortcut::Gather { stride, index } };
        }
        out_graph
            .validate()
            .map_err(|e| CoreError::Invalid(format!("compacted graph is inconsistent: {e}")))?;
        let mut masks = MaskSet::ones(&out_graph, device);
        for (name, m) in mask_list {
            masks.set(&name, m);
        }
        let report = CompactReport {
            params_before: layers.iter().map(|l| l.params.0).sum(),
            params_after: layers.iter().map(|l| l.params.1).sum(),
            alive_before,
            alive_after,
            alive_dropped: alive_before - (alive_after - bias_added),
            bias_added,
            flops_before: layers.iter().map(|l| l.flops.0).sum(),
            flops_after: layers.iter().map(|l| l.flops.1).sum(),
            layers,
        };
        Ok(Compacted { graph: out_graph, tensors, masks, report })
    }
}

/// Compacts a masked model: see the module docs. `params` holds every parameter and buffer of
/// `graph` by PyTorch name (masked or not: masks are multiplied in here, inert ones skipped);
/// `masks` its masks. The result lives on the parameters' device.
pub fn compact_with_report(
    graph: &PruneGraph,
    params: &TensorMap,
    masks: &MaskSet,
) -> Result<Compacted, CoreError> {
    tch::no_grad(|| {
        let mut c = Compactor::new(graph, params, masks)?;
        let states = c.forward();
        c.backward(&states);
        c.build()
    })
}

/// Compacts a masked model into a smaller dense one: `(graph, tensors)`; see
/// [`compact_with_report`].
pub fn compact(
    graph: &PruneGraph,
    params: &TensorMap,
    masks: &MaskSet,
) -> Result<(PruneGraph, TensorMap), CoreError> {
    let c = compact_with_report(graph, params, masks)?;
    Ok((c.graph, c.tensors))
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> CoreError {
    CoreError::Io { path: path.display().to_string(), message: e.to_string() }
}

/// The string metadata of a safetensors file (empty when it has none), read from the header
/// only.
pub fn read_safetensors_metadata(path: &Path) -> Result<BTreeMap<String, String>, CoreError> {
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).map_err(|e| io_err(path, format!("not a safetensors file ({e})")))?;
    let n = u64::from_le_bytes(len);
    if n > 100_000_000 {
        return Err(io_err(path, "not a safetensors file (header too large)"));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(|e| io_err(path, format!("truncated safetensors header ({e})")))?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| io_err(path, format!("bad safetensors header ({e})")))?;
    let mut out = BTreeMap::new();
    if let Some(meta) = v.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in meta {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.to_string());
            }
        }
    }
    Ok(out)
}

/// The metadata of a compacted model file: `extra`, then the format's own entries (format,
/// version, the graph as JSON, arch, classes), which take precedence.
fn compact_metadata(
    graph: &PruneGraph,
    extra: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, CoreError> {
    let mut meta = extra.clone();
    meta.insert("format".to_string(), FORMAT.to_string());
    meta.insert("version".to_string(), FORMAT_VERSION.to_string());
    meta.insert(
        "graph".to_string(),
        serde_json::to_string(graph).map_err(|e| CoreError::Invalid(format!("graph to JSON: {e}")))?,
    );
    meta.insert("arch".to_string(), graph.arch.clone());
    meta.insert("num_classes".to_string(), graph.num_classes.to_string());
    Ok(meta)
}

/// Writes a compacted model (see the module docs for the format) atomically.
pub fn save_compact(path: &Path, graph: &PruneGraph, tensors: &TensorMap) -> Result<(), CoreError> {
    save_compact_with(path, graph, tensors, &BTreeMap::new())
}

/// [`save_compact`] with extra metadata entries (provenance: source checkpoint, dataset, the
/// dense model's counts); the entries of the format itself take precedence.
pub fn save_compact_with(
    path: &Path,
    graph: &PruneGraph,
    tensors: &TensorMap,
    extra: &BTreeMap<String, String>,
) -> Result<(), CoreError> {
    let meta = compact_metadata(graph, extra)?;
    let list: Vec<(String, Tensor)> = tensors.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect();
    crate::tensor_io::write_safetensors(path, &list, &meta)
}

/// [`save_compact_with`], the tensors stored sparse ([`crate::sparse_file`]): the non-zero
/// entries of every weight with a CSR or bitmask index, values in `dtype`. [`load_compact`]
/// reads it back as dense float32 tensors.
pub fn save_sparse_with(
    path: &Path,
    graph: &PruneGraph,
    tensors: &TensorMap,
    extra: &BTreeMap<String, String>,
    dtype: crate::sparse_file::ValueDtype,
) -> Result<crate::sparse_file::SparseReport, CoreError> {
    let mut meta = compact_metadata(graph, extra)?;
    let cpu: TensorMap = tensors.iter().map(|(k, v)| (k.clone(), v.to_device(tch::Device::Cpu))).collect();
    let (list, layouts, report) = crate::sparse_file::encode(&cpu, dtype);
    meta.insert(crate::sparse_file::SPARSE_KEY.to_string(), layouts);
    crate::tensor_io::write_safetensors(path, &list, &meta)?;
    Ok(report)
}

/// Reads a compacted model written by [`save_compact`] (or [`save_sparse_with`]: its tensors
/// come back dense, float32): its graph and CPU tensors, checked against each other.
pub fn load_compact(path: &Path) -> Result<(PruneGraph, TensorMap), CoreError> {
    let bytes = std::fs::read(path).map_err(|e| io_err(path, e))?;
    let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
        io_err(path, format!("not a safetensors file ({})", crate::tensor_io::safetensors_error(&e)))
    })?;
    let info = meta.metadata().clone().unwrap_or_default();
    if info.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(io_err(
            path,
            format!("not a compacted relief model (metadata `format` is not `{FORMAT}`)"),
        ));
    }
    let graph: PruneGraph =
        serde_json::from_str(info.get("graph").ok_or_else(|| io_err(path, "metadata has no `graph`"))?)
            .map_err(|e| io_err(path, format!("bad graph JSON ({e})")))?;
    graph.validate().map_err(|e| io_err(path, format!("inconsistent graph: {e}")))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| io_err(path, crate::tensor_io::safetensors_error(&e)))?;
    let mut tensors = TensorMap::new();
    for (name, view) in st.tensors() {
        let kind = kind_of(view.dtype())
            .ok_or_else(|| io_err(path, format!("tensor `{name}`: unsupported dtype {:?}", view.dtype())))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        tensors.insert(name, Tensor::from_data_size(view.data(), &shape, kind));
    }
    if let Some(layouts) = info.get(crate::sparse_file::SPARSE_KEY) {
        tensors = crate::sparse_file::decode(tensors, layouts).map_err(|e| io_err(path, e))?;
    }
    crate::params::Bound::new(&graph, &tensors).map_err(|e| io_err(path, e))?;
    Ok((graph, tensors))
}
