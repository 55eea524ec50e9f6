//! Baselines at an equal budget: the same number of weights kept per layer as another run
//! (usually NNrelief's), chosen by another score, so that a study separates the effect of
//! NNrelief's score from the effect of its selection rule.
//!
//! - [`random_scores`]: uniform scores from a seeded counter-based generator (SplitMix64 of
//!   `(seed, layer, flat index)`): the same on every device and thread count, independent of
//!   libtorch's RNG state, float64 so that ties are negligible.
//! - [`activation_scores`]: NNrelief's own connection importance, `|W| · mean|x|` for a linear
//!   layer (`out x in`) and, for a convolution, the importance of each kernel slice `W[k, c]`
//!   (the grouped-convolution form of [`crate::score::conv_importance`], aggregated over output
//!   positions as the layer's convention does) given to every entry of that slice, so that a
//!   plain per-layer top-k ([`keep_counts`]) keeps whole slices first (ties to the lower flat
//!   index; the last slice may be cut).
//!
//! [`keep_counts`] then keeps exactly `counts[l]` of the still-unmasked weights of layer `l` with
//! the highest score. Biases and shortcut masks are left alone, as by magnitude pruning.

use tch::{Device, Kind, Tensor};

use crate::engine::scoring_statistics;
use crate::error::CoreError;
use crate::graph::{Convention, LayerOp, PruneGraph};
use crate::magnitude::exact_count_mask;
use crate::masks::MaskSet;
use crate::params::TensorMap;
use crate::score::{conv_importance, linear_importance, PositionNorm};
use crate::semantics::Semantics;

/// SplitMix64: a 64-bit mixing function (Steele, Lea, Flood 2014), the counter-based generator.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform `[0, 1)` scores of every layer's weight shape, from `seed`, float64 on `device`.
/// Entry `i` of layer `l` is `splitmix64(splitmix64(seed ^ l') ^ i) >> 11` scaled by `2^-53`,
/// where `l' = (l + 1) * 0x9E3779B97F4A7C15`: the same on every device and thread count.
pub fn random_scores(graph: &PruneGraph, seed: u64, device: Device) -> Vec<(String, Tensor)> {
    graph
        .layers
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let stream = splitmix64(seed ^ ((l as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
            let shape = layer.op.weight_shape();
            let n: i64 = shape.iter().product();
            let values: Vec<f64> = (0..n as u64)
                .map(|i| (splitmix64(stream ^ i) >> 11) as f64 * (1.0 / (1u64 << 53) as f64))
                .collect();
            (layer.weight_name(), Tensor::from_slice(&values).view(shape.as_slice()).to_device(device))
        })
        .collect()
}

/// NNrelief's connection importances of every layer, weight-shaped (see the module docs), on
/// the pre-pruning statistics of `batch` (the first scoring pass of `semantics`).
pub fn activation_scores(
    graph: &PruneGraph,
    params: &TensorMap,
    masks: &MaskSet,
    batch: &Tensor,
    semantics: Semantics,
    chunk_size: i64,
) -> Result<Vec<(String, Tensor)>, CoreError> {
    let stats = scoring_statistics(graph, params, masks, batch, semantics, chunk_size)?;
    tch::no_grad(|| {
        graph
            .layers
            .iter()
            .enumerate()
            .map(|(l, layer)| {
                let name = layer.weight_name();
                let w = params.get(&name).ok_or_else(|| CoreError::MissingTensor(name.clone()))?;
                let w = match masks.get(&name) {
                    Some(m) => w * m,
                    None => w.shallow_clone(),
                };
                let sum = stats.layers[l].input_abs.as_ref().ok_or_else(|| {
                    CoreError::Invalid(format!("{name}: no input statistics were collected"))
                })?;
                let mean = stats.mean(sum);
                let score = match layer.op {
                    LayerOp::Linear { .. } => linear_importance(&w, None, &mean),
                    LayerOp::Conv2d { kernel, .. } => {
                        let norm = match graph.convention {
                            Convention::Lenet => PositionNorm::L1,
                            Convention::Vgg | Convention::Resnet => PositionNorm::L2,
                        };
                        let slices = conv_importance(&layer.op, &w, None, &mean, norm);
                        let (k, c) = (slices.size()[0], slices.size()[1]);
                        slices.view([k, c, 1, 1]).expand([k, c, kernel, kernel], false).contiguous()
                    }
                };
                Ok((name, score))
            })
            .collect()
    })
}

/// Keeps exactly `counts[l]` of the still-unmasked weights of layer `l`, those with the highest
/// `scores` (ties to the lower flat index), and zeroes the rest in `params`. Counts must lie
/// between 0 and the layer's unmasked weights (masks only shrink).
pub fn keep_counts(
    graph: &PruneGraph,
    params: &TensorMap,
    masks: &mut MaskSet,
    scores: &[(String, Tensor)],
    counts: &[i64],
) -> Result<(), CoreError> {
    if counts.len() != graph.layers.len() || scores.len() != graph.layers.len() {
        return Err(CoreError::Invalid(format!(
            "{} keep counts and {} score tensors for {} layers",
            counts.len(),
            scores.len(),
            graph.layers.len()
        )));
    }
    tch::no_grad(|| {
        let mut new = Vec::with_capacity(counts.len());
        for ((name, score), &k) in scores.iter().zip(counts) {
            let old = masks.get(name).ok_or_else(|| CoreError::MissingTensor(format!("mask {name}")))?;
            if score.size() != old.size() {
                return Err(CoreError::Invalid(format!(
                    "{name}: scores of shape {:?} for a weight of shape {:?}",
                    score.size(),
                    old.size()
                )));
            }
            let alive = old.gt(0.0).sum(Kind::Int64).int64_value(&[]);
            if !(0..=alive).contains(&k) {
                return Err(CoreError::Invalid(format!(
                    "{name}: cannot keep {k} weights, {alive} of {} are still unmasked (expected 0..={alive}; \
                     masks only shrink)",
                    old.numel()
                )));
            }
            new.push((name.clone(), exact_count_mask(&score.to_device(old.device()), old, k) * old));
        }
        for (name, m) in new {
            masks.set(&name, m.to_kind(Kind::Float));
        }
        masks.apply(params);
        Ok(())
    })
}
