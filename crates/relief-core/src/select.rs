//! The cumulative-share threshold rule, vectorised over rows.
//!
//! For a row of importances `v_1..v_L` with sum `S`, sorted descending `s_0 >= .. >= s_{L-1}`
//! with running sums `c_t`, let `p = #{t : c_t < alpha * S}` — so `s_0..s_p` is the shortest
//! prefix reaching `alpha * S`.
//! - `Reference`: threshold `s_{min(p+1, L-1)}`; keep exactly the entries `> threshold`.
//! - `Paper`: threshold `s_min(p, L-1)`; keep the entries `>= threshold` that are non-zero.
//!
//! Shapes: `scores` is `rows x L` (`f32`); the result is a `rows x L` boolean keep-mask.
//!
//! The running sums are those of libtorch's CPU `cumsum` (accumulated in `f64`, each rounded
//! to `f32`), the total is libtorch's row `sum`, so the selection matches the authors' code bit
//! for bit. On the CPU the rows are sorted by a radix sort on the host (libtorch's comparison
//! sort with index tracking dominated a LeNet-300-100 pruning call); on other devices the same
//! rule runs as tensor ops (sort, cumsum, gather).

use tch::{Device, Kind, Tensor};

use crate::semantics::Semantics;

/// Keeps, per row, the smallest set of entries whose importances reach `alpha` of the row total
/// (exact tie and edge rules per [`Semantics`], see the module docs).
pub fn select_by_cumulative_share(scores: &Tensor, alpha: f64, semantics: Semantics) -> Tensor {
    let total = scores.sum_dim_intlist(1, true, Kind::Float);
    // alpha is rounded to f32 first, then multiplied as a tensor op, as the reference does.
    let target = total * Tensor::from(alpha as f32).to_device(scores.device());
    if scores.device() == Device::Cpu && scores.kind() == Kind::Float {
        keep_host(scores, &target, semantics)
    } else {
        keep_tensor(scores, &target, semantics)
    }
}

/// The keep-mask with tensor ops on the scores' device (sort, cumsum, gather, compare).
fn keep_tensor(scores: &Tensor, target: &Tensor, semantics: Semantics) -> Tensor {
    let len = scores.size()[1];
    let (sorted, _) = scores.sort(1, true);
    let running = sorted.cumsum(1, Kind::Float);
    let p = running.lt_tensor(target).sum_dim_intlist(1, true, Kind::Int64);
    match semantics {
        Semantics::Reference => scores.gt_tensor(&sorted.gather(1, &(p + 1).clamp_max(len - 1), false)),
        Semantics::Paper => {
            let threshold = sorted.gather(1, &p.clamp_max(len - 1), false);
            scores.ge_tensor(&threshold).logical_and(&scores.gt(0.0))
        }
    }
}

/// Rows below this many entries in total are not worth splitting across threads.
const PARALLEL_MIN_ENTRIES: usize = 1 << 16;

/// The keep-mask computed on the host for CPU `f32` scores, rows split across libtorch's
/// intra-op thread count.
fn keep_host(scores: &Tensor, target: &Tensor, semantics: Semantics) -> Tensor {
    let (rows, len) = (scores.size()[0] as usize, scores.size()[1] as usize);
    let values = Vec::<f32>::try_from(scores.contiguous().view([-1])).expect("f32 scores");
    let targets = Vec::<f32>::try_from(target.contiguous().view([-1])).expect("f32 targets");
    let mut keep = vec![false; rows * len];
    let threads = if rows * len >= PARALLEL_MIN_ENTRIES { tch::get_num_threads().max(1) as usize } else { 1 };
    let per = rows.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let work = values.chunks(per * len).zip(targets.chunks(per)).zip(keep.chunks_mut(per * len));
        let mut handles = Vec::new();
        for ((v, t), k) in work {
            if threads == 1 {
                keep_rows(v, t, k, len, semantics);
            } else {
                handles.push(scope.spawn(move || keep_rows(v, t, k, len, semantics)));
            }
        }
        for h in handles {
            h.join().expect("selection worker");
        }
    });
    Tensor::from_slice(&keep).view([rows as i64, len as i64])
}

/// Selection on consecutive rows of length `len`: radix sort of the non-zero entries, running
/// sum in `f64` rounded to `f32` at each step (libtorch's CPU `cumsum`), pivot, compare.
fn keep_rows(values: &[f32], targets: &[f32], keep: &mut [bool], len: usize, semantics: Semantics) {
    let mut buf = Vec::with_capacity(len);
    for ((row, &goal), out) in values.chunks_exact(len).zip(targets).zip(keep.chunks_exact_mut(len)) {
        // Zeros (pruned entries) sit at the end of the descending order and add nothing.
        buf.clear();
        buf.extend(row.iter().copied().filter(|&v| v != 0.0));
        radsort::sort(&mut buf);
        let nonzero = buf.len();
        // Non-negative entries make the running sums non-decreasing: stop at the crossing.
        let monotone = buf.first().is_none_or(|&v| v >= 0.0);
        let mut acc = 0f64;
        let mut p = 0usize;
        for &v in buf.iter().rev() {
            acc += f64::from(v);
            if (acc as f32) < goal {
                p += 1;
            } else if monotone {
                break;
            }
        }
        // `p` counts only non-zero entries: past them every pivot is a zero, as it would be
        // with the zeros counted.
        let pivot = match semantics {
            Semantics::Reference => (p + 1).min(len - 1),
            Semantics::Paper => p.min(len - 1),
        };
        let threshold = if pivot < nonzero { buf[nonzero - 1 - pivot] } else { 0.0 };
        match semantics {
            Semantics::Reference => {
                out.iter_mut().zip(row).for_each(|(k, &v)| *k = v > threshold);
            }
            Semantics::Paper => {
                out.iter_mut().zip(row).for_each(|(k, &v)| *k = v >= threshold && v > 0.0);
            }
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

    /// The host path (radix sort) against the tensor path (libtorch sort + cumsum), bit for
    /// bit, on rows with many ties, zeros (also `-0`), wide dynamic range, negative and
    /// non-finite entries, with and without threads.
    #[test]
    fn host_selection_equals_tensor_selection() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let sparse = Tensor::rand([120, 785], opts) * Tensor::rand([120, 785], opts).gt(0.8);
        let cases = [
            Tensor::rand([128, 785], opts),
            sparse,
            (Tensor::rand([50, 37], opts) * 4.0).floor(),
            Tensor::randn([40, 301], opts).exp().pow_tensor_scalar(6.0),
            Tensor::randn([30, 20], opts),
            Tensor::zeros([3, 5], opts),
            Tensor::ones([4, 1], opts),
            Tensor::from_slice(&[1f32, f32::NAN, 2., 0., f32::INFINITY, 1., 3., 0.]).view([2, 4]),
            Tensor::from_slice(&[-0f32, 2., 0., 1., -0., -0., 0., 0.]).view([2, 4]),
        ];
        for threads in [1, 2] {
            tch::set_num_threads(threads);
            for scores in &cases {
                let total = scores.sum_dim_intlist(1, true, Kind::Float);
                for alpha in [0.0001, 0.5, 0.9, 0.95, 1.0] {
                    let target = &total * Tensor::from(alpha as f32);
                    for s in [Semantics::Reference, Semantics::Paper] {
                        let host = keep_host(scores, &target, s);
                        let tensor = keep_tensor(scores, &target, s);
                        let differ = host.logical_xor(&tensor).sum(Kind::Int64).int64_value(&[]);
                        assert_eq!(differ, 0, "{s} alpha {alpha} threads {threads}: {scores:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn rows_are_independent() {
        let t = Tensor::from_slice(&[3f32, 2., 4., 1., 1., 1., 1., 9.]).view([2, 4]);
        let k = select_by_cumulative_share(&t, 0.7, Semantics::Reference);
        let v = Vec::<bool>::try_from(&k.view([-1])).unwrap();
        assert_eq!(v, [true, false, true, false, false, false, false, true]);
    }
}
