//! `Model`: an architecture's graph plus its named parameters in a `tch::nn::VarStore`.
//!
//! Parameter names are the authors' PyTorch `state_dict` keys, so PyTorch checkpoints exported
//! to safetensors load 1:1. Initialisation follows the authors: Kaiming-normal weights
//! (`std = sqrt(2 / fan_in)`), PyTorch's default bias init `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`,
//! BatchNorm `gamma = 1, beta = 0`, running mean 0 and variance 1 — seeded. That is relief's own
//! scheme ([`InitScheme::Relief`]); [`InitScheme::Pytorch`] draws the authors' exact tensors
//! ([`Model::build_with`], [`crate::init`]).

use std::collections::BTreeSet;
use std::path::Path;

use relief_core::exec::{forward, ForwardOptions};
use relief_core::graph::PruneGraph;
use relief_core::params::{Bound, TensorMap};
use relief_core::MaskSet;
use tch::nn::{Init, VarStore};
use tch::{Device, Kind, Tensor};

use crate::architecture::Architecture;
use crate::error::ModelError;
use crate::init::{init_vars_with, InitScheme};
use crate::spec::SpecError;
use crate::zoo::Arch;

/// A network (of the zoo or from a spec) with its parameters.
pub struct Model {
    /// The architecture.
    pub arch: Architecture,
    /// Its prunable structure.
    pub graph: PruneGraph,
    /// Parameters and BatchNorm buffers, by PyTorch name.
    pub vs: VarStore,
}

pub(crate) fn sub_path<'a>(vs: &'a VarStore, module: &str) -> tch::nn::Path<'a> {
    module.split('.').fold(vs.root(), |p, c| p.sub(c))
}

/// A fresh BatchNorm `bn` over `c` channels, as PyTorch's: weight 1, bias 0, running mean 0,
/// running variance 1, `num_batches_tracked` 0 (no random draw).
pub(crate) fn add_batch_norm(vs: &VarStore, bn: &str, c: i64) {
    let p = sub_path(vs, bn);
    let _ = p.var("weight", &[c], Init::Const(1.0));
    let _ = p.var("bias", &[c], Init::Const(0.0));
    let _ = p.zeros_no_train("running_mean", &[c]);
    let _ = p.ones_no_train("running_var", &[c]);
    let _ = p.add("num_batches_tracked", Tensor::zeros([], (Kind::Int64, vs.device())), false);
}

/// The parameters and BatchNorm buffers of `graph`, freshly initialised as the authors do
/// (see the module docs), seeded with `seed`: the same graph and seed give the same tensors,
/// whether the graph comes from the zoo or from a spec ([`crate::ModelSpec::graph`]). This is
/// [`InitScheme::Relief`]; [`init_vars_with`] chooses the scheme.
pub fn init_vars(graph: &PruneGraph, device: Device, seed: i64) -> VarStore {
    tch::manual_seed(seed);
    let vs = VarStore::new(device);
    for layer in &graph.layers {
        let p = sub_path(&vs, &layer.name);
        let shape = layer.op.weight_shape();
        let fan_in: i64 = shape[1..].iter().product();
        let std = (2.0 / fan_in as f64).sqrt();
        let _ = p.var("weight", &shape, Init::Randn { mean: 0.0, stdev: std });
        if layer.bias {
            let bound = 1.0 / (fan_in as f64).sqrt();
            let _ = p.var("bias", &[layer.op.outputs()], Init::Uniform { lo: -bound, up: bound });
        }
        if let Some(bn) = &layer.batch_norm {
            add_batch_norm(&vs, bn, layer.op.outputs());
        }
    }
    vs
}

impl Model {
    /// A freshly initialised model (seeded with `seed`) on `device`.
    pub fn new(arch: Arch, num_classes: i64, device: Device, seed: i64) -> Self {
        let graph = arch.graph(num_classes);
        let vs = init_vars(&graph, device, seed);
        Self { arch: arch.into(), graph, vs }
    }

    /// A freshly initialised model of any architecture (a spec is shape-checked first), with
    /// relief's own scheme ([`InitScheme::Relief`]).
    pub fn build(
        arch: &Architecture,
        num_classes: i64,
        device: Device,
        seed: i64,
    ) -> Result<Self, SpecError> {
        Self::build_with(arch, num_classes, device, seed, InitScheme::Relief)
    }

    /// [`Model::build`] with the initialisation scheme `scheme` ([`InitScheme::Pytorch`]: the
    /// authors' PyTorch tensors for `seed`, bit for bit, on any device).
    pub fn build_with(
        arch: &Architecture,
        num_classes: i64,
        device: Device,
        seed: i64,
        scheme: InitScheme,
    ) -> Result<Self, SpecError> {
        let graph = arch.graph(num_classes)?;
        let vs = init_vars_with(&graph, device, seed, scheme);
        Ok(Self { arch: arch.clone(), graph, vs })
    }

    /// Device of the parameters.
    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Every parameter and buffer by name (shallow clones: in-place edits reach the model).
    pub fn params(&self) -> TensorMap {
        self.vs.variables().into_iter().collect()
    }

    /// Parameters bound to the graph's layers, for the executor.
    pub fn bound(&self) -> Bound {
        Bound::new(&self.graph, &self.params()).expect("a model's own variables match its graph")
    }

    /// Logits for `x` (`N x input_shape`); `masks` supplies shortcut masks.
    pub fn forward(
        &self,
        bound: &Bound,
        x: &Tensor,
        masks: Option<&MaskSet>,
        opts: ForwardOptions,
    ) -> Tensor {
        forward(&self.graph, bound, masks, x, opts, None)
    }

    /// Number of weights and biases of the prunable layers (no BatchNorm).
    pub fn prunable_parameter_count(&self) -> i64 {
        self.graph
            .layers
            .iter()
            .map(|l| {
                let w: i64 = l.op.weight_shape().iter().product();
                w + if l.bias { l.op.outputs() } else { 0 }
            })
            .sum()
    }

    /// Copies `<prefix><name>` tensors into the model. Every parameter and buffer must be present
    /// with its exact shape (`num_batches_tracked` may be absent) and no other `<prefix>` tensor
    /// may exist; otherwise nothing is loaded and the error lists every problem.
    pub fn load_tensors(&mut self, tensors: &[(String, Tensor)], prefix: &str) -> Result<(), ModelError> {
        let vars = self.params();
        let mut missing = Vec::new();
        let mut mismatched = Vec::new();
        let mut extra = Vec::new();
        let mut found = BTreeSet::new();
        let mut plan = Vec::new();
        for (key, t) in tensors {
            let Some(name) = key.strip_prefix(prefix) else { continue };
            match vars.get(name) {
                None => extra.push(key.clone()),
                Some(v) if v.size() != t.size() => {
                    found.insert(name.to_string());
                    mismatched.push(format!("{key}: found {:?}, expected {:?}", t.size(), v.size()))
                }
                Some(v) => {
                    found.insert(name.to_string());
                    plan.push((v.shallow_clone(), t));
                }
            }
        }
        for name in vars.keys() {
            if !found.contains(name) && !name.ends_with("num_batches_tracked") {
                missing.push(format!("{prefix}{name}"));
            }
        }
        // Sorted, so that the lists read the same on every run (the file's order is arbitrary).
        for list in [&mut missing, &mut extra, &mut mismatched] {
            list.sort();
        }
        if !(missing.is_empty() && extra.is_empty() && mismatched.is_empty()) {
            return Err(ModelError::Checkpoint { arch: self.arch.to_string(), missing, extra, mismatched });
        }
        tch::no_grad(|| {
            for (mut v, t) in plan {
                v.copy_(&t.to_device(v.device()).to_kind(v.kind()));
            }
        });
        Ok(())
    }

    /// Loads a safetensors checkpoint (see [`Model::load_tensors`]).
    pub fn load_safetensors(&mut self, path: &Path, prefix: &str) -> Result<(), ModelError> {
        let tensors = Tensor::read_safetensors(path)
            .map_err(|e| ModelError::Read { path: path.display().to_string(), message: e.to_string() })?;
        self.load_tensors(&tensors, prefix)
    }

    /// Every parameter and buffer as `(<prefix><name>, CPU tensor)`, sorted by name.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.params()
            .into_iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.detach().to_device(Device::Cpu)))
            .collect()
    }
}
