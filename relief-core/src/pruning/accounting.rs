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

/// Counts parameters, units and FLOPs of `graph` under `masks`.
pub fn account(graph: &PruneGraph, masks: &MaskSet) -> Account {
    let mut layers = Vec::new();
    let (mut pt, mut pa, mut ft, mut fa, mut fd, mut fl) = (0, 0, 0, 0, 0, 0);
    for layer in &graph.layers {
        let w = masks.get(&layer.weight_name()).expect("every layer has a weight mask");
        let units_total = layer.op.outputs();
        let dims: Vec<i64> = (1..w.dim() as i64).collect();
        let alive_rows = w.amax(dims.as_slice(), false).ne(0.0);
        let units_alive = alive_rows.sum(Kind::Int64).int64_value(&[]);
        let w_total = w.numel() as i64;
        let w_alive = count(w);
        let (b_total, b_alive) = match layer.bias_name() {
            Some(b) => (units_total, count(masks.get(&b).expect("bias mask"))),
            None => (0, 0),
        };
        let positions = layer.output_positions();
        let flops_dense = positions * (2 * w_total + b_total);
        let flops_alive = positions * (2 * w_alive + b_alive);
        let params_total = w_total + b_total;
        let params_alive = w_alive + b_alive;
        let authors = !(graph.convention == Convention::Resnet && layer.role == Role::Stem);
        if authors {
            pt += params_total;
            pa += params_alive;
        }
        let bn = if layer.batch_norm.is_some() { 2 } else { 0 };
        ft += params_total + bn * units_total;
        fa += params_alive + bn * units_alive;
        fd += flops_dense;
        fl += flops_alive;
        layers.push(LayerAccount {
            name: layer.name.clone(),
            params_total,
            params_alive,
            units_total,
            units_alive,
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
