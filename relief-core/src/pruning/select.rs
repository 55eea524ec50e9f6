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
//! for bit. On the CPU each row's threshold is found on the host by an exact radix selection
//! (libtorch's comparison sort with index tracking dominated a LeNet-300-100 pruning call), the
//! rows split across libtorch's own intra-op threads ([`crate::parallel`]); on other devices the
//! same rule runs as tensor ops (sort, cumsum, gather).
//!
//! [`keep_masks`] gives the same decisions as the `f32` weight and bias masks a
//! [`crate::MaskSet`] stores (`rows x inputs` and `rows`), with whole rows forced out (dead
//! units), so the engine needs no boolean passes over large layers.

use tch::{Device, Kind, Tensor};

use crate::parallel::parallel_for;
use crate::semantics::Semantics;

/// Keeps, per row, the smallest set of entries whose importances reach `alpha` of the row total
/// (exact tie and edge rules per [`Semantics`], see the module docs).
pub fn select_by_cumulative_share(scores: &Tensor, alpha: f64, semantics: Semantics) -> Tensor {
    let target = target_of(scores, alpha);
    if on_host(scores) {
        let scores = scores.contiguous();
        let values = host_slice(&scores);
        let len = scores.size()[1] as usize;
        let mut keep = vec![false; values.len()];
        let out = RowWriter::new(&mut keep);
        for_each_row_threshold(values, len, &target, semantics, |r, row, t| {
            // SAFETY: each row index is visited once, so row ranges written are disjoint.
            keep_row(row, t, semantics, unsafe { out.range(r * len, len) }, |k| k);
        });
        Tensor::from_slice(&keep).view(scores.size().as_slice())
    } else {
        keep_tensor(scores, &target, semantics)
    }
}

/// The decisions of [`select_by_cumulative_share`] as `f32` masks (1 = keep): the first
/// `inputs` columns as `rows x inputs` weight keep-mask and, when `scores` has one more column
/// (the bias), that column as a `rows` bias keep-mask; rows where `drop_rows` (`rows`,
/// boolean) is true are all zero.
pub fn keep_masks(
    scores: &Tensor,
    alpha: f64,
    semantics: Semantics,
    inputs: i64,
    drop_rows: Option<&Tensor>,
) -> (Tensor, Option<Tensor>) {
    let (rows, len) = (scores.size()[0], scores.size()[1]);
    let has_bias = len > inputs;
    if !on_host(scores) {
        let mut keep = select_by_cumulative_share(scores, alpha, semantics);
        if let Some(d) = drop_rows {
            keep = keep.logical_and(&d.logical_not().view([-1, 1]));
        }
        let w = keep.narrow(1, 0, inputs).to_kind(Kind::Float);
        return (w, has_bias.then(|| keep.select(1, inputs).to_kind(Kind::Float)));
    }
    let target = target_of(scores, alpha);
    let scores = scores.contiguous();
    let values = host_slice(&scores);
    let (len, inputs_u) = (len as usize, inputs as usize);
    let drop = drop_rows
        .map(|d| Vec::<bool>::try_from(d.to_kind(Kind::Bool).contiguous().view([-1])).expect("boolean rows"));
    let mut w = Tensor::empty([rows, inputs], (Kind::Float, Device::Cpu));
    let mut b = has_bias.then(|| Tensor::empty([rows], (Kind::Float, Device::Cpu)));
    {
        let w_out = RowWriter::new(host_slice_mut(&mut w));
        let b_out = b.as_mut().map(|b| RowWriter::new(host_slice_mut(b)));
        for_each_row_threshold(values, len, &target, semantics, |r, row, t| {
            // SAFETY: each row index is visited once, so the ranges written are disjoint.
            let w_row = unsafe { w_out.range(r * inputs_u, inputs_u) };
            let dropped = drop.as_ref().is_some_and(|d| d[r]);
            if dropped {
                w_row.fill(0.0);
            } else {
                keep_row(&row[..inputs_u], t, semantics, w_row, f32::from);
            }
            if let Some(b_out) = &b_out {
                let v = row[inputs_u];
                // SAFETY: as above, entry `r` is this row's alone.
                let b_entry = unsafe { b_out.range(r, 1) };
                b_entry[0] = f32::from(!dropped && keeps(v, t, semantics));
            }
        });
    }
    (w, b)
}

/// The elements of a contiguous CPU `f32` tensor, borrowed in place (no copy).
fn host_slice(t: &Tensor) -> &[f32] {
    assert!(on_host(t) && t.is_contiguous(), "host_slice needs a contiguous CPU f32 tensor");
    let n = t.numel();
    if n == 0 {
        return &[];
    }
    // SAFETY: a contiguous CPU f32 tensor holds `n` initialised f32 values at `data_ptr`, kept
    // alive by `t` for the borrow; this module only reads tensors it does not write meanwhile.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, n) }
}

/// The elements of a contiguous CPU `f32` tensor this module just allocated, for writing.
fn host_slice_mut(t: &mut Tensor) -> &mut [f32] {
    assert!(on_host(t) && t.is_contiguous(), "host_slice_mut needs a contiguous CPU f32 tensor");
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: as in `host_slice`; the tensor is freshly allocated here, so no other handle
    // reads or writes its storage while the slice is borrowed (exclusively, through `&mut`).
    // Entries may be uninitialised (`Tensor::empty`), but every f32 bit pattern is valid and
    // each entry is written before the tensor is used.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) }
}

/// `alpha` of each row's total (`rows x 1`); alpha is rounded to f32 first, then multiplied as
/// a tensor op, as the reference does.
fn target_of(scores: &Tensor, alpha: f64) -> Tensor {
    let total = scores.sum_dim_intlist(1, true, Kind::Float);
    total * Tensor::from(alpha as f32).to_device(scores.device())
}

fn on_host(scores: &Tensor) -> bool {
    scores.device() == Device::Cpu && scores.kind() == Kind::Float
}

/// Whether an entry of importance `v` is kept against its row's `threshold`.
fn keeps(v: f32, threshold: f32, semantics: Semantics) -> bool {
    match semantics {
        Semantics::Reference => v > threshold,
        Semantics::Paper => v >= threshold && v > 0.0,
    }
}

/// Writes the keep decision of every entry of `row` against `threshold` into `out`.
fn keep_row<T>(row: &[f32], threshold: f32, semantics: Semantics, out: &mut [T], from: impl Fn(bool) -> T) {
    out.iter_mut().zip(row).for_each(|(k, &v)| *k = from(keeps(v, threshold, semantics)));
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

/// Entries of score rows handled per task of the parallel row loop (at least one row).
const ENTRIES_PER_TASK: usize = 1 << 14;

/// Computes every row's threshold on the host from CPU `f32` scores (`values`, rows of `len`,
/// goals `target`, `rows x 1`) and calls `visit(r, row, threshold)` once per row, rows split
/// across libtorch's intra-op threads ([`crate::parallel`]).
fn for_each_row_threshold(
    values: &[f32],
    len: usize,
    target: &Tensor,
    semantics: Semantics,
    visit: impl Fn(usize, &[f32], f32) + Sync,
) {
    let target = target.contiguous();
    let goals = host_slice(&target);
    let rows = goals.len();
    parallel_for(rows, (ENTRIES_PER_TASK / len.max(1)).max(1), |begin, end| {
        let mut scratch = Scratch::default();
        for r in begin..end {
            let (row, goal) = (&values[r * len..(r + 1) * len], goals[r]);
            let t = match radix_threshold(row, goal, semantics, &mut scratch) {
                Some(t) => t,
                None => sorted_threshold(row, goal, semantics, &mut scratch.buf),
            };
            visit(r, row, t);
        }
    });
}

/// One output slice that the tasks of a parallel row loop write in disjoint ranges.
struct RowWriter<T> {
    ptr: *mut T,
    len: usize,
}

// SAFETY: a `RowWriter` only hands out disjoint ranges (the callers' contract, see `range`),
// so sharing it between threads is sharing disjoint `&mut [T]`, which is `Send` for `T: Send`.
unsafe impl<T: Send> Sync for RowWriter<T> {}

impl<T> RowWriter<T> {
    fn new(out: &mut [T]) -> RowWriter<T> {
        RowWriter { ptr: out.as_mut_ptr(), len: out.len() }
    }

    /// Entries `start..start + n`.
    ///
    /// # Safety
    /// No two live ranges may overlap, and the slice given to [`RowWriter::new`] must outlive
    /// every range and not be used otherwise meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn range(&self, start: usize, n: usize) -> &mut [T] {
        assert!(start + n <= self.len, "row range out of bounds");
        // SAFETY: in bounds (checked); exclusive per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), n) }
    }
}

/// Index of the threshold entry in the descending order (zeros included) from `p`.
fn pivot_index(p: usize, len: usize, semantics: Semantics) -> usize {
    match semantics {
        Semantics::Reference => (p + 1).min(len - 1),
        Semantics::Paper => p.min(len - 1),
    }
}

/// The general rule on one row: radix sort of the non-zero entries, running sum in `f64`
/// rounded to `f32` at each step (libtorch's CPU `cumsum`), pivot.
fn sorted_threshold(row: &[f32], goal: f32, semantics: Semantics, buf: &mut Vec<f32>) -> f32 {
    // Zeros (pruned entries) sit at the end of the descending order and add nothing.
    buf.clear();
    buf.extend(row.iter().copied().filter(|&v| v != 0.0));
    radsort::sort(buf);
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
    // `p` counts only non-zero entries: past them every pivot is a zero, as it would be with
    // the zeros counted.
    let pivot = pivot_index(p, row.len(), semantics);
    if pivot < nonzero {
        buf[nonzero - 1 - pivot]
    } else {
        0.0
    }
}

/// The significand of a non-negative finite `f32`'s bits as an integer (implicit bit included
/// for normal numbers): the value is `mantissa(k) * ulp(exponent)`.
fn mantissa(k: u32) -> u32 {
    (k & 0x7f_ffff) | (u32::from(k >> 23 != 0) << 23)
}

/// `2^(max(e, 1) - 150)`: the unit of [`mantissa`] for biased exponent `e`.
fn ulp(e: u32) -> f64 {
    f64::powi(2.0, e.max(1) as i32 - 150)
}

/// A bucket tally packs the entry count (bits from `COUNT_SHIFT` up) and the exact sum of the
/// entries' mantissas (below it) in one word, so a histogram pass updates one array.
const COUNT_SHIFT: u32 = 40;

/// Rows this long could overflow a tally's mantissa sum (`len * 2^24 < 2^COUNT_SHIFT`); they are
/// sorted instead.
const MAX_RADIX_LEN: usize = 1 << (COUNT_SHIFT - 24);

/// The tally increment of an entry's bits: one entry and its mantissa (nothing for a zero).
fn tally_of(k: u32) -> u64 {
    (u64::from(k != 0) << COUNT_SHIFT) | u64::from(mantissa(k))
}

fn count_of(tally: u64) -> usize {
    (tally >> COUNT_SHIFT) as usize
}

fn mantissa_sum_of(tally: u64) -> u64 {
    tally & ((1 << COUNT_SHIFT) - 1)
}

/// Adds a whole bucket (its tally, `unit` the ulp of its entries) to the running `sum` and the
/// count `above` when the running sum stays below `goal` with it; false, adding nothing, when
/// the bucket holds the crossing.
fn add_whole_bucket(tally: u64, unit: f64, goal: f32, sum: &mut f64, above: &mut usize) -> bool {
    let bucket = mantissa_sum_of(tally) as f64 * unit;
    if ((*sum + bucket) as f32) < goal {
        *sum += bucket;
        *above += count_of(tally);
        true
    } else {
        false
    }
}

/// Reusable buffers of [`radix_threshold`].
#[derive(Default)]
struct Scratch {
    first: Vec<u64>,
    keys: Vec<u32>,
    buf: Vec<f32>,
}

/// Width of the first radix digit: the exponent and the top 3 mantissa bits, so that the
/// crossing bucket is usually small enough to sort right away.
const FIRST_DIGIT_BITS: u32 = 11;

/// Shift of the first digit in a non-negative `f32`'s bits.
const FIRST_DIGIT_SHIFT: u32 = 31 - FIRST_DIGIT_BITS;

/// The radix digits after the first, most significant first: (shift, width).
const MANTISSA_DIGITS: [(u32, u32); 3] = [(12, 8), (4, 8), (0, 4)];

/// Below this many candidates the crossing bucket is sorted instead of split further.
const SORT_BELOW: usize = 48;

/// The same threshold as [`sorted_threshold`] without sorting the row, or `None` when this
/// shortcut does not apply (a negative, infinite or NaN entry, too wide a dynamic range, a row
/// of `MAX_RADIX_LEN` entries or more, or one short enough to sort outright).
///
/// MSD radix selection on the bit patterns (ordered like the values for non-negative floats):
/// per digit, the count and the exact sum of each bucket; whole buckets above the crossing add
/// their sums at once, and only the bucket holding the crossing is refined, down to a few
/// entries that are sorted and walked one by one. Every digit is tallied in one branch-free
/// pass over the row (no gathering of bucket members, whose branches mispredict); the first
/// digit (exponent and 3 mantissa bits) usually leaves few enough entries to sort, so a row
/// typically costs two passes and a short sort. This equals libtorch's sequential `f64`
/// running sums only when every partial sum up to the crossing is exact in `f64`, which holds
/// when `e_top - e_low + bits(len) <= 29` for the largest exponent `e_top` and the smallest
/// exponent `e_low` summed (a partial sum is then an integer multiple of the smallest entry's
/// ulp below `2^53` of them); otherwise the caller sorts.
fn radix_threshold(row: &[f32], goal: f32, semantics: Semantics, scratch: &mut Scratch) -> Option<f32> {
    let len = row.len();
    if len <= SORT_BELOW || len >= MAX_RADIX_LEN {
        return None;
    }
    // Pass 1: the tallies of the first digit (exponent and top mantissa bits), the largest
    // key, the zeros, and whether any entry is negative (other than -0), infinite or NaN.
    // Bitwise, not short-circuit: no branches in this loop.
    let tally = &mut scratch.first;
    tally.clear();
    tally.resize(1 << FIRST_DIGIT_BITS, 0);
    let (mut bad, mut zeros, mut top) = (false, 0usize, 0u32);
    for &v in row {
        let k = v.to_bits();
        let a = k & 0x7fff_ffff;
        bad |= (a >= 0x7f80_0000) | ((k != a) & (a != 0));
        zeros += usize::from(a == 0);
        top = top.max(a);
        tally[(a >> FIRST_DIGIT_SHIFT) as usize] += tally_of(a);
    }
    if bad {
        return None;
    }
    let nonzero = len - zeros;
    let len_bits = usize::BITS - len.leading_zeros();
    let top_exponent = top >> 23;
    let exact = |exponent: u32| top_exponent.saturating_sub(exponent.max(1)) + len_bits <= 29;
    // Entries ranked above the candidates, and their (exact) sum: whole buckets, from the top.
    let (mut above, mut sum) = (0usize, 0f64);
    let mut first = None;
    for d in (0..=(top >> FIRST_DIGIT_SHIFT) as usize).rev().filter(|&d| tally[d] != 0) {
        let e = (d >> (FIRST_DIGIT_BITS - 8)) as u32;
        if !exact(e) {
            return None;
        }
        if !add_whole_bucket(tally[d], ulp(e), goal, &mut sum, &mut above) {
            first = Some(d);
            break;
        }
    }
    let Some(first) = first else {
        // Every running sum stays below the goal: p = nonzero.
        return Some(match pivot_index(nonzero, len, semantics) {
            pivot if pivot < nonzero => {
                // No zeros, pivot clamped to the last entry: the smallest one.
                row.iter().copied().fold(f32::INFINITY, f32::min)
            }
            _ => 0.0,
        });
    };
    let exponent = (first >> (FIRST_DIGIT_BITS - 8)) as u32;
    // Refine the crossing bucket one digit at a time. The bucket is the entries whose key
    // shifted right by `prefix_shift` equals `prefix` (no negatives here; zeros tally nothing);
    // each level is one branch-free pass over the row, cheaper than gathering the bucket.
    let (mut prefix, mut prefix_shift) = (first as u32, FIRST_DIGIT_SHIFT);
    let mut in_bucket = count_of(tally[first]);
    for &(shift, width) in &MANTISSA_DIGITS {
        if in_bucket <= SORT_BELOW {
            break;
        }
        let mask = (1usize << width) - 1;
        let mut tally = [0u64; 256];
        for &v in row {
            let k = v.to_bits();
            // All ones on a hit, zero otherwise: a mask, not a branch that would mispredict.
            let hit = u64::from(k >> prefix_shift == prefix).wrapping_neg();
            tally[(k >> shift) as usize & mask] += tally_of(k) & hit;
        }
        let mut chosen = None;
        for d in (0..=mask).rev().filter(|&d| tally[d] != 0) {
            if !add_whole_bucket(tally[d], ulp(exponent), goal, &mut sum, &mut above) {
                chosen = Some(d);
                break;
            }
        }
        // The bucket holds the crossing and its digit buckets add up to it exactly, so one of
        // them holds it; should that ever fail, the caller sorts.
        let d = chosen?;
        (prefix, prefix_shift) = ((prefix << width) | d as u32, shift);
        in_bucket = count_of(tally[d]);
    }
    // Gather the few candidates left. Branch-free compaction: every key is written, only
    // those in the bucket are kept.
    let keys = &mut scratch.keys;
    keys.clear();
    keys.resize(len + 1, 0);
    let mut kept = 0;
    for &v in row {
        let k = v.to_bits();
        keys[kept] = k;
        kept += usize::from((k >> prefix_shift == prefix) & (k != 0));
    }
    keys.truncate(kept);
    // Walk them in descending order.
    keys.sort_unstable_by(|a, b| b.cmp(a));
    let mut p = above;
    for &k in keys.iter() {
        sum += f64::from(f32::from_bits(k));
        if (sum as f32) < goal {
            p += 1;
        } else {
            break;
        }
    }
    let pivot = pivot_index(p, len, semantics);
    if pivot >= nonzero {
        return Some(0.0);
    }
    if let Some(&k) = keys.get(pivot - above) {
        return Some(f32::from_bits(k));
    }
    // The entry right below every candidate: the largest key under the smallest candidate
    // (buckets split by key prefix, so every other entry is above or below all candidates).
    // Zeros and `-0` (above every positive key) never win the max, which is branch-free.
    let floor = keys.last().copied().unwrap_or(0);
    Some(f32::from_bits(
        row.iter().map(|v| v.to_bits()).map(|k| if k < floor { k } else { 0 }).max().unwrap_or(0),
    ))
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
    /// non-finite entries.
    #[test]
    fn host_selection_equals_tensor_selection() {
        tch::manual_seed(7);
        let opts = (Kind::Float, Device::Cpu);
        let sparse = Tensor::rand([120, 785], opts) * Tensor::rand([120, 785], opts).gt(0.8);
        // Long rows (past the sort-outright length) with `-0` entries, and with one negative
        // or NaN entry each (the radix shortcut must decline those).
        let signed_zeros = Tensor::rand([20, 100], opts)
            .where_self(&Tensor::rand([20, 100], opts).gt(0.5), &Tensor::from(-0f32));
        let one_bad = |v: f32| {
            let t = Tensor::rand([6, 100], opts);
            let _ = t.narrow(1, 7, 1).fill_(f64::from(v));
            t
        };
        let cases = [
            signed_zeros,
            one_bad(-0.5),
            one_bad(f32::NAN),
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
        for scores in &cases {
            let total = scores.sum_dim_intlist(1, true, Kind::Float);
            for alpha in [0.0001, 0.5, 0.9, 0.95, 1.0] {
                let target = &total * Tensor::from(alpha as f32);
                for s in [Semantics::Reference, Semantics::Paper] {
                    let host = select_by_cumulative_share(scores, alpha, s);
                    let tensor = keep_tensor(scores, &target, s);
                    let differ = host.logical_xor(&tensor).sum(Kind::Int64).int64_value(&[]);
                    assert_eq!(differ, 0, "{s} alpha {alpha}: {scores:?}");
                }
            }
        }
    }

    /// The radix shortcut against the full sort on rows built to reach every branch: deep
    /// buckets of equal values, crossings at a bucket's last entry, no crossing at all, zeros.
    #[test]
    fn radix_shortcut_equals_full_sort() {
        tch::manual_seed(11);
        let opts = (Kind::Float, Device::Cpu);
        let rows: Vec<Tensor> = vec![
            Tensor::rand([200, 785], opts),
            Tensor::randn([200, 301], opts).abs() * Tensor::rand([200, 301], opts),
            (Tensor::rand([200, 500], opts) * 3.0).ceil(),
            (Tensor::rand([200, 300], opts) * 40.0).floor() / 7.0,
            Tensor::rand([200, 120], opts) * Tensor::rand([200, 120], opts).gt(0.5),
            Tensor::ones([3, 100], opts),
            Tensor::randn([50, 64], opts).exp(),
            // all-zero rows, and subnormal entries (exponent field 0)
            Tensor::zeros([2, 60], opts),
            Tensor::rand([4, 90], opts) * 1e-39,
            // subnormals mixed with zeros: the crossing bucket's prefix is that of zero
            Tensor::rand([6, 90], opts) * 1e-43 * Tensor::rand([6, 90], opts).gt(0.4),
        ];
        let (mut shortcut, mut total) = (0, 0);
        let mut scratch = Scratch::default();
        for t in &rows {
            let len = t.size()[1] as usize;
            let values = Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap();
            let sums = Vec::<f32>::try_from(t.sum_dim_intlist(1, false, Kind::Float)).unwrap();
            for (row, &sum) in values.chunks_exact(len).zip(&sums) {
                for alpha in [0.3f32, 0.9, 0.95, 0.999, 1.0] {
                    let goal = sum * alpha;
                    for s in [Semantics::Reference, Semantics::Paper] {
                        let full = sorted_threshold(row, goal, s, &mut Vec::new());
                        total += 1;
                        if let Some(fast) = radix_threshold(row, goal, s, &mut scratch) {
                            shortcut += 1;
                            assert_eq!(fast.to_bits(), full.to_bits(), "{s} alpha {alpha}: {row:?}");
                        }
                    }
                }
            }
        }
        // The shortcut must carry nearly all rows, or the speed-up is gone.
        assert!(shortcut * 100 >= total * 95, "shortcut taken on {shortcut} of {total} rows");
    }

    /// `keep_masks` (host, `f32`) equals the boolean selection converted the slow way; enough
    /// rows that the row loop is split into several parallel tasks.
    #[test]
    fn keep_masks_equal_the_boolean_selection() {
        tch::manual_seed(5);
        let opts = (Kind::Float, Device::Cpu);
        let scores = Tensor::rand([1000, 51], opts) * Tensor::rand([1000, 51], opts).gt(0.2);
        let drop = Tensor::rand([1000], opts).gt(0.7);
        for s in [Semantics::Reference, Semantics::Paper] {
            for (inputs, d) in [(50, Some(&drop)), (50, None), (51, Some(&drop))] {
                let keep = select_by_cumulative_share(&scores, 0.9, s);
                let keep = match d {
                    Some(d) => keep.logical_and(&d.logical_not().view([-1, 1])),
                    None => keep,
                };
                let (w, b) = keep_masks(&scores, 0.9, s, inputs, d);
                assert!(w.equal(&keep.narrow(1, 0, inputs).to_kind(Kind::Float)), "{s} weights");
                match b {
                    Some(b) => assert!(b.equal(&keep.select(1, 50).to_kind(Kind::Float)), "{s} bias"),
                    None => assert_eq!(inputs, 51),
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
