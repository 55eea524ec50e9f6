//! The cumulative-share threshold rule, vectorised over rows.
//!
//! For a row of importances `v_1..v_L` with sum `S`, sorted descending `s_0 >= .. >= s_{L-1}`
//! with running sums `c_t`, let `p = #{t : c_t < alpha * S}` — so `s_0..s_p` is the shortest
//! prefix reaching `alpha * S`.
//! - `Reference`: threshold `s_{min(p+1, L-1)}`; keep exactly the entries `> threshold`.
//! - `Paper`: threshold `s_min(p, L-1)`; keep the entries `>= threshold` that are non-zero.
//!
//! Shapes: `scores` is `rows x L` (`f32`); the result is a `rows x L` boolean keep-mask.

use tch::{Kind, Tensor};

use crate::semantics::Semantics;

/// Keeps, per row, the smallest set of entries whose importances reach `alpha` of the row total
/// (exact tie and edge rules per [`Semantics`], see the module docs).
pub fn select_by_cumulative_share(scores: &Tensor, alpha: f64, semantics: Semantics) -> Tensor {
    let len = scores.size()[1];
    let total = scores.sum_dim_intlist(1, true, Kind::Float);
    let (sorted, _) = scores.sort(1, true);
    let running = sorted.cumsum(1, Kind::Float);
    // alpha is rounded to f32 first, then multiplied as a tensor op, as the reference does.
    let target = total * Tensor::from(alpha as f32).to_device(scores.device());
    let p = running.lt_tensor(&target).sum_dim_intlist(1, true, Kind::Int64);
    match semantics {
        Semantics::Reference => {
            let pivot = (p + 1).clamp_max(len - 1);
            let threshold = sorted.gather(1, &pivot, false);
            scores.gt_tensor(&threshold)
        }
        Semantics::Paper => {
            let pivot = p.clamp_max(len - 1);
            let threshold = sorted.gather(1, &pivot, false);
            scores.ge_tensor(&threshold).logical_and(&scores.gt(0.0))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(row: &[f32], alpha: f64, s: Semantics) -> Vec<bool> {
        let t = Tensor::from_slice(row).view([1, -1]);
        let k = select_by_cumulative_share(&t, alpha, s).view([-1]);
        Vec::<bool>::try_from(&k).unwrap()
    }

    #[test]
    fn reference_keeps_shortest_prefix_and_drops_the_pivot() {
        // total 10, alpha 0.7 -> 7: 4 (c=4<7), 3 (c=7 not <7): p=1, pivot 2 -> threshold 2.
        assert_eq!(keep(&[3., 2., 4., 1.], 0.7, Semantics::Reference), [true, false, true, false]);
    }

    #[test]
    fn reference_drops_ties_with_the_threshold() {
        // sorted 4,3,3: total 10, alpha .5 -> 5: c=4<5 -> p=1, pivot 2 -> threshold 3.
        assert_eq!(keep(&[3., 4., 3.], 0.5, Semantics::Reference), [false, true, false]);
        assert_eq!(keep(&[3., 4., 3.], 0.5, Semantics::Paper), [true, true, true]);
    }

    #[test]
    fn reference_always_drops_the_least_entry() {
        assert_eq!(keep(&[5., 4., 3.], 1.0, Semantics::Reference), [true, true, false]);
        assert_eq!(keep(&[5., 4., 3.], 1.0, Semantics::Paper), [true, true, true]);
        // a single entry: the reference drops it, the paper keeps it
        assert_eq!(keep(&[2.], 0.9, Semantics::Reference), [false]);
        assert_eq!(keep(&[2.], 0.9, Semantics::Paper), [true]);
    }

    #[test]
    fn all_equal_and_all_zero() {
        assert_eq!(keep(&[1., 1., 1.], 0.5, Semantics::Reference), [false, false, false]);
        assert_eq!(keep(&[1., 1., 1.], 0.5, Semantics::Paper), [true, true, true]);
        assert_eq!(keep(&[0., 0., 0.], 0.9, Semantics::Reference), [false, false, false]);
        assert_eq!(keep(&[0., 0., 0.], 0.9, Semantics::Paper), [false, false, false]);
    }

    #[test]
    fn zero_entries_never_kept_with_alpha_one() {
        assert_eq!(keep(&[0., 3., 1.], 1.0, Semantics::Paper), [false, true, true]);
        assert_eq!(keep(&[0., 3., 1.], 1.0, Semantics::Reference), [false, true, true]);
    }

    #[test]
    fn rows_are_independent() {
        let t = Tensor::from_slice(&[3f32, 2., 4., 1., 1., 1., 1., 9.]).view([2, 4]);
        let k = select_by_cumulative_share(&t, 0.7, Semantics::Reference);
        let v = Vec::<bool>::try_from(&k.view([-1])).unwrap();
        assert_eq!(v, [true, false, true, false, false, false, false, true]);
    }
}
