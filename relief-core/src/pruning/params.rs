//! Named parameter tensors bound to the layers of a [`PruneGraph`].
//!
//! A model's parameters live wherever its owner keeps them (a `tch::nn::VarStore`, a loaded
//! checkpoint); [`Bound`] holds shallow clones (shared storage) resolved once per layer, so the
//! executor and the engine touch tensors without name look-ups in hot loops, and in-place edits
//! (masking, BatchNorm zeroing) are seen by the owner.

use std::collections::BTreeMap;

use tch::Tensor;

use crate::error::CoreError;
use crate::graph::PruneGraph;

/// Named tensors by PyTorch `state_dict` key.
pub type TensorMap = BTreeMap<String, Tensor>;

/// The four BatchNorm tensors of a layer, `(C,)` each.
#[derive(Debug)]
pub struct BatchNormTensors {
    /// gamma.
    pub weight: Tensor,
    /// beta.
    pub bias: Tensor,
    /// Running mean used in eval mode.
    pub running_mean: Tensor,
    /// Running variance used in eval mode.
    pub running_var: Tensor,
}

/// The tensors of one prunable layer.
#[derive(Debug)]
pub struct LayerTensors {
    /// `out x in` or `out x in x k x k`.
    pub weight: Tensor,
    /// `(out,)`.
    pub bias: Option<Tensor>,
    /// BatchNorm after the layer.
    pub bn: Option<BatchNormTensors>,
}

/// Parameters of every layer of a graph, in layer order (shallow clones: shared storage).
#[derive(Debug)]
pub struct Bound {
    /// Per layer, same order as [`PruneGraph::layers`].
    pub layers: Vec<LayerTensors>,
}

fn fetch(map: &TensorMap, name: &str, shape: &[i64]) -> Result<Tensor, CoreError> {
    let t = map.get(name).ok_or_else(|| CoreError::MissingTensor(name.to_string()))?;
    if t.size() != shape {
        return Err(CoreError::ShapeMismatch {
            name: name.to_string(),
            expected: shape.to_vec(),
            found: t.size(),
        });
    }
    Ok(t.shallow_clone())
}

impl Bound {
    /// Resolves every parameter of `graph` in `map`, checking shapes.
    pub fn new(graph: &PruneGraph, map: &TensorMap) -> Result<Self, CoreError> {
        let mut layers = Vec::with_capacity(graph.layers.len());
        for layer in &graph.layers {
            let out = layer.op.outputs();
            let weight = fetch(map, &layer.weight_name(), &layer.op.weight_shape())?;
            let bias = match layer.bias_name() {
                Some(b) => Some(fetch(map, &b, &[out])?),
                None => None,
            };
            let bn = match &layer.batch_norm {
                Some(bn) => Some(BatchNormTensors {
                    weight: fetch(map, &format!("{bn}.weight"), &[out])?,
                    bias: fetch(map, &format!("{bn}.bias"), &[out])?,
                    running_mean: fetch(map, &format!("{bn}.running_mean"), &[out])?,
                    running_var: fetch(map, &format!("{bn}.running_var"), &[out])?,
                }),
                None => None,
            };
            layers.push(LayerTensors { weight, bias, bn });
        }
        Ok(Self { layers })
    }
}
