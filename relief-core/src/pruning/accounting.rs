//! Parameter and FLOP accounting of a masked model.
//!
//! - *Authors' count*: entries of the masked weights and biases, excluding the ResNet stem (the
//!   authors' `*_total_params_mask` count; LeNet-300-100: 266,610; ResNet-20 (C=10): 267,914).
//! - *Full count*: every trainable parameter, BatchNorm gamma/beta included; a BatchNorm channel
//!   is alive when its unit is.
//! - FLOPs of one forward pass for one sample: a multiply-add is 2 FLOPs; a conv costs
//!   `P * (2 * nnz(W) + nnz(b))` for `P` output positions, a linear layer `2 * nnz(W) + nnz(b)`
//!   (pooling, BatchNorm and ReLU are not counted). The dense figure uses all entries.

use serde::Serialize;
use tch::Kind;

use crate::graph::{Convention, PruneGraph, Role};
use crate::masks::MaskSet;

/// Accounting of one layer.
#[derive(Debug, Clone, Serialize)]
pub struct LayerAccount {
    /// Module path.
    pub name: String,
    /// Weight + bias entries.
    pub params_total: i64,
    /// Unmasked weight + bias entries.
    pub params_alive: i64,
    /// Output units (neurons or filters).
    pub units_total: i64,
    /// Units with at least one unmasked weight.
    pub units_alive: i64,
    /// Dense FLOPs per sample.
    pub flops_dense: i64,
    /// FLOPs per sample with masked entries skipped.
    pub flops_alive: i64,
}

/// Accounting of a whole model.
#[derive(Debug, Clone, Serialize)]
pub struct Account {
    /// Per layer, graph order.
    pub layers: Vec<LayerAccount>,
    /// Authors' parameter count (see module docs): total.
    pub params_total: i64,
    /// Authors' parameter count: alive.
    pub params_alive: i64,
    /// Every trainable parameter (BatchNorm included): total.
    pub full_params_total: i64,
    /// Every trainable parameter: alive.
    pub full_params_alive: i64,
    /// Dense FLOPs per sample.
    pub flops_dense: i64,
    /// FLOPs per sample with masked entries skipped.
    pub flops_alive: i64,
}

impl Account {
    /// `total / alive` (the paper's compression rate).
    pub fn compression(&self) -> f64 {
        self.params_total as f64 / self.params_alive.max(1) as f64
    }
    /// Alive share of the authors' count, in percent.
    pub fn remaining_percent(&self) -> f64 {
        100.0 * self.params_alive as f64 / self.params_total.max(1) as f64
    }
    /// Share of FLOPs removed, in percent.
    pub fn flops_pruned_percent(&self) -> f64 {
        100.0 * (1.0 - self.flops_alive as f64 / self.flops_dense.max(1) as f64)
    }
}

fn count(t: &tch::Tensor) -> i64 {
    t.ne(0.0).sum(Kind::Int64).int64_value(&[])
}

/// Alive units, weight entries and bias entries of one layer.
struct Alive {
    units: i64,
    weights: i64,
    biases: i64,
}

/// Counts parameters, units and FLOPs of `graph` under `masks`.
pub fn account(graph: &PruneGraph, masks: &MaskSet) -> Account {
    account_with(graph, |layer| {
        let w = masks.get(&layer.weight_name()).expect("every layer has a weight mask");
        let dims: Vec<i64> = (1..w.dim() as i64).collect();
        let units = w.amax(dims.as_slice(), false).ne(0.0).sum(Kind::Int64).int64_value(&[]);
        let biases = match layer.bias_name() {
            Some(b) => count(masks.get(&b).expect("bias mask")),
            None => 0,
        };
        Alive { units, weights: count(w), biases }
    })
}

/// The dense model's [`Account`] from the graph's shapes alone: no tensor is allocated, so a
/// network too large to build can still be counted (and refused with its numbers). Products
/// saturate at `i64::MAX` instead of overflowing.
pub fn account_dense(graph: &PruneGraph) -> Account {
    account_with(graph, |layer| Alive {
        units: layer.op.outputs(),
        weights: numel(&layer.op.weight_shape()),
        biases: if layer.bias_name().is_some() { layer.op.outputs() } else { 0 },
    })
}

/// Entries of a tensor of `shape`, saturating.
pub fn numel(shape: &[i64]) -> i64 {
    shape.iter().fold(1i64, |a, &d| a.saturating_mul(d.max(0)))
}

fn account_with(graph: &PruneGraph, alive: impl Fn(&crate::graph::Layer) -> Alive) -> Account {
    let mut layers = Vec::new();
    let (mut pt, mut pa, mut ft, mut fa, mut fd, mut fl) = (0i64, 0i64, 0i64, 0i64, 0i64, 0i64);
    for layer in &graph.layers {
        let units_total = layer.op.outputs();
        let a = alive(layer);
        let w_total = numel(&layer.op.weight_shape());
        let b_total = if layer.bias_name().is_some() { units_total } else { 0 };
        let positions = layer.output_positions();
        let flops = |w: i64, b: i64| positions.saturating_mul(w.saturating_mul(2).saturating_add(b));
        let flops_dense = flops(w_total, b_total);
        let flops_alive = flops(a.weights, a.biases);
        let params_total = w_total.saturating_add(b_total);
        let params_alive = a.weights.saturating_add(a.biases);
        let authors = !(graph.convention == Convention::Resnet && layer.role == Role::Stem);
        if authors {
            pt = pt.saturating_add(params_total);
            pa = pa.saturating_add(params_alive);
        }
        let bn = if layer.batch_norm.is_some() { 2 } else { 0 };
        ft = ft.saturating_add(params_total).saturating_add(bn * units_total);
        fa = fa.saturating_add(params_alive).saturating_add(bn * a.units);
        fd = fd.saturating_add(flops_dense);
        fl = fl.saturating_add(flops_alive);
        layers.push(LayerAccount {
            name: layer.name.clone(),
            params_total,
            params_alive,
            units_total,
            units_alive: a.units,
            flops_dense,
            flops_alive,
        });
    }
    Account {
        layers,
        params_total: pt,
        params_alive: pa,
        full_params_total: ft,
        full_params_alive: fa,
        flops_dense: fd,
        flops_alive: fl,
    }
}
