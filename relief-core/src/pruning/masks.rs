//! `MaskSet`: the 0/1 masks of every prunable tensor, keyed by the tensor's name.
//!
//! Masks have the full shape of their tensor (`out x in x k x k` for conv weights, so magnitude
//! pruning can remove single taps) and live as `f32` on the model's device, ready to multiply.
//! Residual blocks also carry per-channel shortcut masks (`layer1.0.shortcut`, shape
//! `(planes,)`) that the executor multiplies into the shortcut branch.
//!
//! A mask may be *inert*: recorded and reported but never multiplied into its weights. This
//! exists only to reproduce the authors' ResNet stem quirk in `reference` semantics.

use std::collections::{BTreeMap, BTreeSet};

use tch::{Device, Kind, Tensor};

use crate::error::CoreError;
use crate::graph::PruneGraph;
use crate::params::TensorMap;

/// The masks of one model.
#[derive(Debug)]
pub struct MaskSet {
    masks: BTreeMap<String, Tensor>,
    inert: BTreeSet<String>,
}

impl Clone for MaskSet {
    fn clone(&self) -> Self {
        Self {
            masks: self.masks.iter().map(|(k, v)| (k.clone(), v.copy())).collect(),
            inert: self.inert.clone(),
        }
    }
}

impl MaskSet {
    /// All-ones masks for every maskable tensor of `graph`.
    pub fn ones(graph: &PruneGraph, device: Device) -> Self {
        let masks = graph
            .mask_shapes()
            .into_iter()
            .map(|(name, shape)| (name, Tensor::ones(shape.as_slice(), (Kind::Float, device))))
            .collect();
        Self { masks, inert: BTreeSet::new() }
    }

    /// The mask of `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.masks.get(name)
    }

    /// Replaces the mask of `name` (converted to `f32`).
    pub fn set(&mut self, name: &str, mask: Tensor) {
        self.masks.insert(name.to_string(), mask.to_kind(Kind::Float));
    }

    /// Iterates `(name, mask)` in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.masks.iter()
    }

    /// Marks `name` as inert (never applied to its tensor).
    pub fn set_inert(&mut self, name: &str, inert: bool) {
        if inert {
            self.inert.insert(name.to_string());
        } else {
            self.inert.remove(name);
        }
    }

    /// Whether `name` is inert.
    pub fn is_inert(&self, name: &str) -> bool {
        self.inert.contains(name)
    }

    /// Multiplies every parameter by its mask in place (inert masks and shortcut masks are
    /// skipped: shortcut masks act in the forward pass).
    pub fn apply(&self, params: &TensorMap) {
        tch::no_grad(|| {
            for (name, mask) in &self.masks {
                if self.inert.contains(name) {
                    continue;
                }
                if let Some(p) = params.get(name) {
                    let mut p = p.shallow_clone();
                    let _ = p.f_mul_(mask).expect("mask shape checked at construction");
                }
            }
        });
    }

    /// Multiplies gradients by the masks, so masked weights get no update from the loss.
    pub fn apply_to_grads(&self, params: &TensorMap) {
        tch::no_grad(|| {
            for (name, mask) in &self.masks {
                if self.inert.contains(name) {
                    continue;
                }
                if let Some(p) = params.get(name) {
                    let mut g = p.grad();
                    if g.defined() {
                        let _ = g.f_mul_(mask);
                    }
                }
            }
        });
    }

    /// Moves every mask to `device`.
    pub fn to_device(&mut self, device: Device) {
        for m in self.masks.values_mut() {
            *m = m.to_device(device);
        }
    }

    /// `(kept, total)` entries of one mask.
    pub fn kept(&self, name: &str) -> Option<(i64, i64)> {
        self.masks.get(name).map(|m| (m.sum(Kind::Float).double_value(&[]) as i64, m.numel() as i64))
    }

    /// Masks as `uint8` tensors named `<prefix><name>`, conv masks collapsed to
    /// `out x in x 1 x 1` when `kernel_level` (the fixtures' layout).
    pub fn export(&self, prefix: &str, kernel_level: bool) -> Vec<(String, Tensor)> {
        self.masks
            .iter()
            .map(|(k, v)| {
                let v = if kernel_level && v.dim() == 4 {
                    v.amax([2, 3].as_slice(), true)
                } else {
                    v.shallow_clone()
                };
                (format!("{prefix}{k}"), v.to_kind(Kind::Uint8).to_device(Device::Cpu))
            })
            .collect()
    }

    /// Loads masks named `<prefix><name>` from `tensors` over all-ones defaults for `graph`.
    /// Conv masks stored as `out x in x 1 x 1` are broadcast to the kernel. Every mask of the
    /// graph must be present; unknown `prefix` entries are an error.
    pub fn import(
        graph: &PruneGraph,
        tensors: &[(String, Tensor)],
        prefix: &str,
        device: Device,
    ) -> Result<Self, CoreError> {
        let mut set = Self::ones(graph, device);
        let mut found = BTreeSet::new();
        for (key, t) in tensors {
            let Some(name) = key.strip_prefix(prefix) else { continue };
            if !set.masks.contains_key(name) {
                // BatchNorm gamma/beta masks (paper semantics) are optional extras.
                let shape = graph.tensor_shapes().into_iter().find(|(n, _)| n == name).map(|(_, s)| s);
                match shape {
                    Some(s) if name.ends_with(".weight") || name.ends_with(".bias") => {
                        set.masks.insert(name.to_string(), Tensor::ones(s.as_slice(), (Kind::Float, device)));
                        found.insert(name.to_string());
                    }
                    _ => return Err(CoreError::Invalid(format!("mask `{key}` matches no maskable tensor"))),
                }
            }
            let slot = set.masks.get_mut(name).expect("inserted above");
            let want = slot.size();
            let t = t.to_kind(Kind::Float).to_device(device);
            let full = if t.size() == want {
                t
            } else if want.len() == 4 && t.size() == [want[0], want[1], 1, 1] {
                t.expand(want.as_slice(), false).contiguous()
            } else {
                return Err(CoreError::ShapeMismatch { name: key.clone(), expected: want, found: t.size() });
            };
            // A mask is 0 or 1; anything else (0.5, 2, NaN) is a corrupt file, not "keep".
            let bad = full.ne(0.0).logical_and(&full.ne(1.0));
            if bad.any().int64_value(&[]) != 0 {
                let v = full.masked_select(&bad).double_value(&[0]);
                return Err(CoreError::Invalid(format!(
                    "mask `{key}` holds values other than 0 and 1 (e.g. {v}); masks must be 0 or 1"
                )));
            }
            *slot = full.ne(0.0).to_kind(Kind::Float);
            found.insert(name.to_string());
        }
        if let Some(missing) = set.masks.keys().find(|k| !found.contains(*k)) {
            return Err(CoreError::MissingTensor(format!("{prefix}{missing}")));
        }
        Ok(set)
    }
}
