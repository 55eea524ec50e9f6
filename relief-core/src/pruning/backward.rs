//! Backward pruning: removes units that no longer feed anything, from the output to the input.
//!
//! Walking the forward program in reverse with the set `U` of unused features of the tensor at
//! that point (initially none of the logits):
//! - a layer masks the rows (weights, bias) of its outputs in `U` and marks their BatchNorm
//!   channels for zeroing; its new `U` is the set of inputs whose column (fc) or kernels (conv)
//!   are masked in every row;
//! - a flatten maps channel `c` to columns `c*H*W..(c+1)*H*W`: `c` is unused when all are;
//! - global pooling maps channel `c` to feature `c`; max pooling and dropout keep `U`;
//! - a residual block with output set `U` masks conv2's rows and the shortcut at `U` (shortcut
//!   mask entry, or the projection conv's rows), then conv1's rows unused by conv2; a block
//!   input channel is unused when conv1 no longer reads it **and** the shortcut no longer
//!   carries it (identity: mask `c`; option A: mask `c + pad`; option B: projection column `c`).
//!
//! Nothing is pruned forward (a unit that lost all inputs but still feeds others stays).

use tch::{Kind, Tensor};

use crate::graph::{Node, PruneGraph, Role, Shortcut};
use crate::masks::MaskSet;

/// Accumulates, per layer, the output channels whose BatchNorm is to be zeroed.
#[derive(Debug)]
pub struct BnZeroing {
    /// Per layer, `(out,)` boolean (only meaningful for layers with BatchNorm).
    pub channels: Vec<Option<Tensor>>,
}

impl BnZeroing {
    /// Nothing marked.
    pub fn new(graph: &PruneGraph) -> Self {
        Self { channels: graph.layers.iter().map(|_| None).collect() }
    }

    /// Marks `rows` of layer `l`.
    pub fn mark(&mut self, l: usize, rows: &Tensor) {
        let slot = &mut self.channels[l];
        *slot = Some(match slot.take() {
            Some(prev) => prev.logical_or(rows),
            None => rows.shallow_clone(),
        });
    }
}

/// Rows (output units) of layer `l` as a `(out,)` boolean: true where the weight mask row is
/// entirely zero.
pub fn rows_removed(graph: &PruneGraph, masks: &MaskSet, l: usize) -> Tensor {
    let layer = &graph.layers[l];
    let w = masks.get(&layer.weight_name()).expect("weight mask");
    let dims: Vec<i64> = (1..w.dim() as i64).collect();
    let mut removed = w.amax(dims.as_slice(), false).eq(0.0);
    if let Some(b) = layer.bias_name() {
        removed = removed.logical_and(&masks.get(&b).expect("bias mask").eq(0.0));
    }
    removed
}

/// Masks the output rows `rows` (`(out,)` boolean) of layer `l`: weight rows and bias.
pub fn mask_rows(graph: &PruneGraph, masks: &mut MaskSet, l: usize, rows: &Tensor) {
    let layer = &graph.layers[l];
    let keep = rows.logical_not().to_kind(Kind::Float);
    let w = masks.get(&layer.weight_name()).expect("weight mask");
    let mut shape = vec![-1i64];
    shape.resize(w.dim(), 1);
    let new = w * keep.view(shape.as_slice());
    masks.set(&layer.weight_name(), new);
    if let Some(b) = layer.bias_name() {
        let new = masks.get(&b).expect("bias mask") * &keep;
        masks.set(&b, new);
    }
}

/// Inputs of layer `l` no row reads any more: `(in,)` boolean.
pub fn inputs_unused(graph: &PruneGraph, masks: &MaskSet, l: usize) -> Tensor {
    let w = masks.get(&graph.layers[l].weight_name()).expect("weight mask");
    let dims: Vec<i64> = (0..w.dim() as i64).filter(|&d| d != 1).collect();
    w.amax(dims.as_slice(), false).eq(0.0)
}

/// Input channels (`(inputs,)` boolean) a [`Shortcut::Gather`] no longer carries: `c` is unused
/// unless some output `j` with `live[j]` has `index[j] == c`.
fn gather_unused(index: &[i64], live: &Tensor, inputs: i64) -> Tensor {
    let device = live.device();
    let live = Vec::<bool>::try_from(live.to_device(tch::Device::Cpu)).expect("boolean mask");
    let mut unused = vec![true; inputs as usize];
    for (j, &c) in index.iter().enumerate() {
        if c >= 0 && live[j] {
            unused[c as usize] = false;
        }
    }
    Tensor::from_slice(&unused).to_device(device)
}

/// Runs backward pruning over `masks`, marking BatchNorm channels of removed units in
/// `zeroing` (except the ResNet stem's when `skip_stem_bn`, as the reference does).
pub fn backward_prune(graph: &PruneGraph, masks: &mut MaskSet, zeroing: &mut BnZeroing, skip_stem_bn: bool) {
    let shapes = graph.node_input_shapes();
    let device = masks.get(&graph.layers[0].weight_name()).expect("weight mask").device();
    let mut unused = Tensor::zeros([graph.num_classes], (Kind::Bool, device));
    let prune_layer = |masks: &mut MaskSet, zeroing: &mut BnZeroing, l: usize, rows: &Tensor| {
        mask_rows(graph, masks, l, rows);
        let layer = &graph.layers[l];
        if layer.batch_norm.is_some() && !(skip_stem_bn && layer.role == Role::Stem) {
            zeroing.mark(l, rows);
        }
    };
    for (k, node) in graph.nodes.iter().enumerate().rev() {
        unused = match node {
            Node::Layer(l) => {
                prune_layer(masks, zeroing, *l, &unused);
                inputs_unused(graph, masks, *l)
            }
            Node::Flatten => {
                let channels = shapes[k].first().copied().unwrap_or(1);
                unused.view([channels, -1]).all_dim(1, false)
            }
            Node::GlobalAvgPool | Node::MaxPool2d { .. } | Node::Dropout { .. } => unused,
            Node::Block(b) => {
                let block = &graph.blocks[*b];
                prune_layer(masks, zeroing, block.conv2, &unused);
                let shortcut_unused = match block.shortcut {
                    Shortcut::Conv { layer } => {
                        prune_layer(masks, zeroing, layer, &unused);
                        inputs_unused(graph, masks, layer)
                    }
                    Shortcut::Identity | Shortcut::PadA { .. } => {
                        let name =
                            block.mask.as_ref().expect("identity/option-A blocks carry a shortcut mask");
                        let m = masks.get(name).expect("shortcut mask")
                            * unused.logical_not().to_kind(Kind::Float);
                        masks.set(name, m.shallow_clone());
                        let dead = m.eq(0.0);
                        match block.shortcut {
                            Shortcut::PadA { pad } => dead.narrow(0, pad, shapes[k][0]),
                            _ => dead,
                        }
                    }
                    Shortcut::Gather { ref index, .. } => {
                        // Input channel `c` is still carried when some live output reads it.
                        let mut live = unused.logical_not();
                        if let Some(name) = &block.mask {
                            let m = masks.get(name).expect("shortcut mask") * live.to_kind(Kind::Float);
                            masks.set(name, m.shallow_clone());
                            live = m.ne(0.0);
                        }
                        gather_unused(index, &live, shapes[k][0])
                    }
                };
                let inner = inputs_unused(graph, masks, block.conv2);
                prune_layer(masks, zeroing, block.conv1, &inner);
                inputs_unused(graph, masks, block.conv1).logical_and(&shortcut_unused)
            }
        };
    }
}
