//! The magnitude-pruning baseline, through the same [`MaskSet`].
//!
//! Keeps the largest `|w|` among the still-unmasked weights: per layer to a given keep fraction,
//! per layer to an exact count of weights (e.g. the counts an NNrelief run kept, for a comparison
//! at equal budget), or globally over all prunable weights to one target fraction. Biases and
//! shortcut masks are left alone.

use tch::{Kind, Tensor};

use crate::error::CoreError;
use crate::graph::PruneGraph;
use crate::masks::MaskSet;
use crate::params::TensorMap;

/// How much to keep.
#[derive(Debug, Clone, PartialEq)]
pub enum MagnitudeTarget {
    /// Keep fraction per layer, graph order (of each layer's weight count).
    PerLayer(Vec<f64>),
    /// Keep fraction of all prunable weights, ranked together.
    Global(f64),
    /// Exact number of weights to keep per layer, graph order. Each count must lie between 0
    /// and the layer's still-unmasked weights (masks only shrink). Ties in `|w|` are broken
    /// deterministically: the lower flat (row-major) index is kept first.
    PerLayerCount(Vec<i64>),
    /// Exact number of weights to keep over all layers, ranked together by `|w|` (ties to the
    /// earlier layer, then the lower flat index): global magnitude at another run's total.
    GlobalCount(i64),
}

fn weight<'a>(params: &'a TensorMap, name: &str) -> Result<&'a Tensor, CoreError> {
    params.get(name).ok_or_else(|| CoreError::MissingTensor(name.to_string()))
}

/// Keeps the `k` largest entries of `scores` (flattened), as a 0/1 `f32` tensor.
fn top_k_mask(scores: &Tensor, k: i64) -> Tensor {
    let flat = scores.flatten(0, -1);
    let mut mask = Tensor::zeros_like(&flat);
    if k > 0 {
        let (_, idx) = flat.topk(k.min(flat.numel() as i64), 0, true, false);
        let _ = mask.index_fill_(0, &idx, 1.0);
    }
    mask.view_as(scores)
}

/// Keeps exactly `k` of the entries where `mask` is set: the largest `scores`, ties to the lower
/// flat index (stable sort); entries where `mask` is 0 are never kept. A 0/1 `f32` tensor.
pub(crate) fn exact_count_mask(scores: &Tensor, mask: &Tensor, k: i64) -> Tensor {
    // Floating scores keep their precision (random scores are float64, so that ties are rare).
    let flat = scores.flatten(0, -1);
    let flat = if flat.is_floating_point() { flat } else { flat.to_kind(Kind::Float) };
    let alive = mask.flatten(0, -1).gt(0.0);
    // Masked entries rank below every live one (|w| >= 0).
    let ranked = flat.where_self(&alive, &Tensor::full_like(&flat, -1.0));
    let mut keep = Tensor::zeros_like(&flat);
    if k > 0 {
        let (_, order) = ranked.sort_stable(true, 0, true);
        let _ = keep.index_fill_(0, &order.narrow(0, 0, k), 1.0);
    }
    keep.view_as(scores).to_kind(Kind::Float)
}

/// Updates the weight masks of `masks` by magnitude (monotone: masked weights stay masked).
pub fn magnitude_prune(
    graph: &PruneGraph,
    params: &TensorMap,
    masks: &mut MaskSet,
    target: &MagnitudeTarget,
) -> Result<(), CoreError> {
    tch::no_grad(|| {
        let scored: Vec<(String, Tensor)> = graph
            .layers
            .iter()
            .map(|l| {
                let name = l.weight_name();
                let w = weight(params, &name)?;
                let m = masks.get(&name).ok_or_else(|| CoreError::MissingTensor(format!("mask {name}")))?;
                Ok((name, w.abs() * m))
            })
            .collect::<Result<_, CoreError>>()?;
        match target {
            MagnitudeTarget::PerLayer(fractions) => {
                if fractions.len() != scored.len() {
                    return Err(CoreError::Invalid(format!(
                        "{} keep fractions for {} layers",
                        fractions.len(),
                        scored.len()
                    )));
                }
                for ((name, s), f) in scored.iter().zip(fractions) {
                    check_fraction(*f)?;
                    let k = (f * s.numel() as f64).round() as i64;
                    let new = top_k_mask(s, k) * masks.get(name).expect("checked");
                    masks.set(name, new);
                }
            }
            MagnitudeTarget::PerLayerCount(counts) => {
                if counts.len() != scored.len() {
                    return Err(CoreError::Invalid(format!(
                        "{} keep counts for {} layers",
                        counts.len(),
                        scored.len()
                    )));
                }
                for ((name, s), &k) in scored.iter().zip(counts) {
                    let old = masks.get(name).expect("checked");
                    let alive = old.gt(0.0).sum(Kind::Int64).int64_value(&[]);
                    if !(0..=alive).contains(&k) {
                        return Err(CoreError::Invalid(format!(
                            "{name}: cannot keep {k} weights, {alive} of {} are still unmasked (expected \
                             0..={alive}; masks only shrink)",
                            s.numel()
                        )));
                    }
                }
                for ((name, s), &k) in scored.iter().zip(counts) {
                    let old = masks.get(name).expect("checked");
                    let new = exact_count_mask(s, old, k) * old;
                    masks.set(name, new.to_kind(Kind::Float));
                }
            }
            MagnitudeTarget::GlobalCount(k) => {
                let alive: Vec<Tensor> =
                    scored.iter().map(|(name, _)| masks.get(name).expect("checked").flatten(0, -1)).collect();
                let all_alive = Tensor::cat(&alive, 0);
                let n_alive = all_alive.gt(0.0).sum(Kind::Int64).int64_value(&[]);
                if !(0..=n_alive).contains(k) {
                    return Err(CoreError::Invalid(format!(
                        "cannot keep {k} weights over all layers, {n_alive} are still unmasked (expected \
                         0..={n_alive}; masks only shrink)"
                    )));
                }
                let all = Tensor::cat(&scored.iter().map(|(_, s)| s.flatten(0, -1)).collect::<Vec<_>>(), 0);
                let keep = exact_count_mask(&all, &all_alive, *k);
                split_global(&keep, &scored, masks);
            }
            MagnitudeTarget::Global(f) => {
                check_fraction(*f)?;
                let all = Tensor::cat(&scored.iter().map(|(_, s)| s.flatten(0, -1)).collect::<Vec<_>>(), 0);
                let k = (f * all.numel() as f64).round() as i64;
                let keep = top_k_mask(&all, k);
                split_global(&keep, &scored, masks);
            }
        }
        masks.apply(params);
        Ok(())
    })
}

/// Applies `keep` (0/1 over all layers' weights, concatenated in graph order) to each layer's
/// mask.
fn split_global(keep: &Tensor, scored: &[(String, Tensor)], masks: &mut MaskSet) {
    let mut offset = 0;
    for (name, s) in scored {
        let n = s.numel() as i64;
        let part = keep.narrow(0, offset, n).view_as(s);
        offset += n;
        let new = part * masks.get(name).expect("checked");
        masks.set(name, new.to_kind(Kind::Float));
    }
}

fn check_fraction(f: f64) -> Result<(), CoreError> {
    if (0.0..=1.0).contains(&f) {
        Ok(())
    } else {
        Err(CoreError::Invalid(format!("keep fraction {f} outside [0, 1]")))
    }
}
