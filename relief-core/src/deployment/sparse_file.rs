//! Sparse storage of a compacted model: a pruned model as small on disk as it is in parameters.
//!
//! Compaction removes dead units, but the rows it keeps still hold their pruned (zero)
//! connections. Stored sparse, each weight tensor `W` (`out x ...`, viewed as the `rows x cols`
//! matrix `out x prod(rest)`) keeps only its non-zero entries, in row-major order, as
//! `<name>::values` (float32, or float16 with `--dtype f16`) plus the cheaper of two indices:
//!
//! - `csr`: `<name>::crow` (int32, `rows + 1` offsets: row `r` holds values
//!   `crow[r] .. crow[r + 1]`) and `<name>::col` (their column, int16 when `cols <= 32767`, else
//!   int32): `4 (rows + 1) + {2|4} nnz` bytes, the better choice below about 1/16 density;
//! - `bitmask`: `<name>::bits` (uint8, `ceil(rows cols / 8)` bytes, bit `i % 8` (least
//!   significant first) of byte `i / 8` set when flat entry `i` is non-zero).
//!
//! A tensor for which neither saves space is stored dense. Other tensors (biases, BatchNorm)
//! are stored dense, in float16 too with `--dtype f16`. The metadata entry `sparse` (JSON)
//! records, per encoded tensor, its layout, shape and value dtype; [`decode`] rebuilds the dense
//! float32 tensors, so a reader ([`crate::compact::load_compact`]) sees an ordinary compacted
//! model. Reading checks every index (offsets monotone, columns in range, counts equal) and
//! names the tensor at fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::CoreError;
use crate::params::TensorMap;

/// Metadata key of the per-tensor layouts.
pub const SPARSE_KEY: &str = "sparse";

/// Stored value precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueDtype {
    /// IEEE float32: the compacted model's values exactly.
    F32,
    /// IEEE float16: half the bytes, values rounded to 11 significant bits.
    F16,
}

impl std::str::FromStr for ValueDtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(ValueDtype::F32),
            "f16" => Ok(ValueDtype::F16),
            other => Err(format!("unknown dtype `{other}`; expected f32 or f16")),
        }
    }
}

impl ValueDtype {
    fn kind(self) -> Kind {
        match self {
            ValueDtype::F32 => Kind::Float,
            ValueDtype::F16 => Kind::Half,
        }
    }
}

/// How one tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Compressed sparse rows.
    Csr,
    /// A bit per entry.
    Bitmask,
    /// All entries (recorded only when the dtype changed).
    Dense,
}

/// The record of one encoded tensor in the `sparse` metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its layout.
    pub layout: Layout,
    /// Its dense shape.
    pub shape: Vec<i64>,
    /// Its stored value precision.
    pub dtype: ValueDtype,
}

/// Byte counts of an encoding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SparseReport {
    /// Bytes of stored values (non-zero entries of sparse tensors, all entries of dense ones).
    pub value_bytes: u64,
    /// Bytes of the indices (offsets, columns, bitmasks).
    pub index_bytes: u64,
    /// Bytes the same tensors take dense in float32.
    pub dense_bytes: u64,
    /// Non-zero entries of the weights stored sparse.
    pub nonzeros: u64,
    /// Tensors stored as CSR / as bitmask.
    pub csr: usize,
    /// Tensors stored as bitmask.
    pub bitmask: usize,
}

fn bytes(t: &Tensor) -> u64 {
    (t.numel() * t.kind().elt_size_in_bytes()) as u64
}

const POW2: [i64; 8] = [1, 2, 4, 8, 16, 32, 64, 128];

/// Encodes `tensors` (CPU): see the module docs. Returns the stored tensors, the `sparse`
/// metadata value and the byte counts.
pub fn encode(tensors: &TensorMap, dtype: ValueDtype) -> (Vec<(String, Tensor)>, String, SparseReport) {
    let mut out = Vec::new();
    let mut entries = BTreeMap::new();
    let mut report = SparseReport::default();
    for (name, t) in tensors {
        if !t.is_floating_point() {
            out.push((name.clone(), t.shallow_clone()));
            continue;
        }
        report.dense_bytes += (t.numel() * 4) as u64;
        let shape = t.size();
        let vsize = dtype.kind().elt_size_in_bytes() as u64;
        let dense_cost = t.numel() as u64 * vsize;
        let sparse = (shape.len() >= 2 && t.numel() > 0).then(|| {
            let rows = shape[0];
            let cols = t.numel() as i64 / rows;
            let nz = t.reshape([rows, cols]).ne(0.0);
            let nnz = nz.sum(Kind::Int64).int64_value(&[]) as u64;
            let colw: u64 = if cols <= i16::MAX as i64 { 2 } else { 4 };
            let csr = 4 * (rows as u64 + 1) + colw * nnz;
            let bitmask = (t.numel() as u64).div_ceil(8);
            (rows, cols, nz, nnz, csr, bitmask)
        });
        match sparse {
            Some((rows, cols, nz, nnz, csr, bitmask)) if nnz * vsize + csr.min(bitmask) < dense_cost => {
                let values = t.reshape([rows, cols]).masked_select(&nz).to_kind(dtype.kind());
                report.value_bytes += bytes(&values);
                report.nonzeros += nnz;
                out.push((format!("{name}::values"), values));
                let layout = if csr <= bitmask {
                    let counts = nz.sum_dim_intlist(1, false, Kind::Int64);
                    let crow = Tensor::cat(
                        &[Tensor::zeros([1], (Kind::Int64, t.device())), counts.cumsum(0, Kind::Int64)],
                        0,
                    )
                    .to_kind(Kind::Int);
                    let col_kind = if cols <= i16::MAX as i64 { Kind::Int16 } else { Kind::Int };
                    let col = nz.nonzero().select(1, 1).to_kind(col_kind).contiguous();
                    report.index_bytes += bytes(&crow) + bytes(&col);
                    report.csr += 1;
                    out.push((format!("{name}::crow"), crow));
                    out.push((format!("{name}::col"), col));
                    Layout::Csr
                } else {
                    let n = t.numel() as i64;
                    let padded = (n + 7) / 8 * 8;
                    let bits = nz
                        .reshape([-1])
                        .to_kind(Kind::Int64)
                        .constant_pad_nd([0, padded - n])
                        .reshape([-1, 8]);
                    let pow = Tensor::from_slice(&POW2).to_device(t.device());
                    let packed = (bits * pow).sum_dim_intlist(1, false, Kind::Int64).to_kind(Kind::Uint8);
                    report.index_bytes += bytes(&packed);
                    report.bitmask += 1;
                    out.push((format!("{name}::bits"), packed));
                    Layout::Bitmask
                };
                entries.insert(name.clone(), Entry { layout, shape, dtype });
            }
            _ => {
                let stored = t.to_kind(dtype.kind());
                report.value_bytes += bytes(&stored);
                out.push((name.clone(), stored));
                if dtype != ValueDtype::F32 {
                    entries.insert(name.clone(), Entry { layout: Layout::Dense, shape, dtype });
                }
            }
        }
    }
    let meta = serde_json::to_string(&entries).expect("layouts serialise");
    (out, meta, report)
}

fn bad(name: &str, msg: impl std::fmt::Display) -> CoreError {
    CoreError::Invalid(format!("sparse tensor `{name}`: {msg}"))
}

/// An index tensor as int64, refusing floating-point or boolean storage (a float index would
/// be truncated silently).
fn integer(t: Tensor, name: &str, part: &str) -> Result<Tensor, CoreError> {
    match t.kind() {
        Kind::Int16 | Kind::Int | Kind::Int64 => Ok(t.to_kind(Kind::Int64)),
        k => Err(bad(name, format!("`{name}::{part}` is {k:?}: expected int16, int32 or int64 indices"))),
    }
}

fn take(stored: &mut TensorMap, name: &str, part: &str) -> Result<Tensor, CoreError> {
    stored.remove(&format!("{name}::{part}")).ok_or_else(|| bad(name, format!("`{name}::{part}` is missing")))
}

/// Rebuilds dense float32 tensors from [`encode`]'s output (`meta` = the `sparse` metadata).
pub fn decode(mut stored: TensorMap, meta: &str) -> Result<TensorMap, CoreError> {
    let entries: BTreeMap<String, Entry> = serde_json::from_str(meta)
        .map_err(|e| CoreError::Invalid(format!("metadata `{SPARSE_KEY}`: {e}")))?;
    let mut out = TensorMap::new();
    for (name, e) in &entries {
        // Entries, refusing a shape whose float32 bytes overflow (an edited file must not abort
        // the process in the allocator).
        let numel = e.shape.iter().try_fold(1i64, |a, &d| if d < 0 { None } else { a.checked_mul(d) });
        let numel = match numel {
            Some(n) if n <= i64::MAX / 8 && (e.layout == Layout::Dense || e.shape.len() >= 2) => n,
            _ => return Err(bad(name, format!("invalid shape {:?}", e.shape))),
        };
        let dense = match e.layout {
            Layout::Dense => {
                let t = stored.remove(name).ok_or_else(|| bad(name, "missing"))?;
                if t.size() != e.shape {
                    return Err(bad(name, format!("shape {:?}, the metadata says {:?}", t.size(), e.shape)));
                }
                t
            }
            Layout::Csr | Layout::Bitmask => {
                let values = take(&mut stored, name, "values")?;
                if values.dim() != 1 || !values.is_floating_point() {
                    return Err(bad(name, "values must be a 1-D float tensor"));
                }
                let nnz = values.size()[0];
                let (rows, cols) = (e.shape[0], if e.shape[0] > 0 { numel / e.shape[0] } else { 0 });
                let flat_index = if e.layout == Layout::Csr {
                    let crow = integer(take(&mut stored, name, "crow")?, name, "crow")?;
                    let col = integer(take(&mut stored, name, "col")?, name, "col")?;
                    if crow.size() != [rows + 1] || col.size() != [nnz] {
                        return Err(bad(
                            name,
                            format!(
                                "crow has {:?} entries, col {:?}: expected [{}] and [{nnz}]",
                                crow.size(),
                                col.size(),
                                rows + 1
                            ),
                        ));
                    }
                    let counts = crow.diff(1, 0, None::<Tensor>, None::<Tensor>);
                    let first = crow.int64_value(&[0]);
                    let last = crow.int64_value(&[rows]);
                    if first != 0 || last != nnz || counts.lt(0).any().int64_value(&[]) != 0 {
                        return Err(bad(name, "row offsets are not monotone from 0 to the value count"));
                    }
                    if nnz > 0 && (col.min().int64_value(&[]) < 0 || col.max().int64_value(&[]) >= cols) {
                        return Err(bad(name, format!("a column index lies outside 0..{cols}")));
                    }
                    let row = Tensor::arange(rows, (Kind::Int64, values.device()))
                        .repeat_interleave_self_tensor(&counts, 0, Some(nnz));
                    // Within a row the columns must strictly increase: a repeated index would
                    // silently drop a value (index_put_ keeps one), an unsorted one is not ours.
                    if nnz > 1 {
                        let same_row = row.narrow(0, 1, nnz - 1).eq_tensor(&row.narrow(0, 0, nnz - 1));
                        let not_after = col.narrow(0, 1, nnz - 1).le_tensor(&col.narrow(0, 0, nnz - 1));
                        let wrong = same_row.logical_and(&not_after).nonzero();
                        if wrong.size()[0] > 0 {
                            let i = wrong.int64_value(&[0, 0]) + 1;
                            return Err(bad(
                                name,
                                format!(
                                    "row {}: column {} follows column {}; the columns of a row must be \
                                     strictly increasing (no repeats)",
                                    row.int64_value(&[i]),
                                    col.int64_value(&[i]),
                                    col.int64_value(&[i - 1])
                                ),
                            ));
                        }
                    }
                    row * cols + col
                } else {
                    let packed = take(&mut stored, name, "bits")?;
                    if packed.kind() != Kind::Uint8 || packed.size() != [(numel + 7) / 8] {
                        return Err(bad(name, format!("bits must be {} uint8 bytes", (numel + 7) / 8)));
                    }
                    let pow = Tensor::from_slice(&POW2);
                    let bits = packed
                        .to_kind(Kind::Int64)
                        .unsqueeze(1)
                        .floor_divide(&pow)
                        .remainder(2)
                        .reshape([-1])
                        .narrow(0, 0, numel);
                    let index = bits.nonzero().reshape([-1]);
                    if index.size()[0] != nnz {
                        return Err(bad(
                            name,
                            format!("the bitmask has {} set bits for {nnz} values", index.size()[0]),
                        ));
                    }
                    index
                };
                Tensor::f_zeros([numel], (Kind::Float, values.device()))
                    .map_err(|err| bad(name, format!("cannot allocate shape {:?}: {err}", e.shape)))?
                    .index_put_(&[Some(flat_index)], &values.to_kind(Kind::Float), false)
                    .reshape(e.shape.as_slice())
            }
        };
        out.insert(name.clone(), dense.to_kind(Kind::Float));
    }
    if let Some(stray) = stored.keys().find(|k| k.contains("::")) {
        return Err(CoreError::Invalid(format!(
            "tensor `{stray}` belongs to no entry of metadata `{SPARSE_KEY}`"
        )));
    }
    out.extend(stored);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pruned(shape: &[i64], density: f64, seed: i64) -> Tensor {
        tch::manual_seed(seed);
        let w = Tensor::randn(shape, (Kind::Float, tch::Device::Cpu));
        &w * Tensor::rand(shape, (Kind::Float, tch::Device::Cpu)).lt(density).to_kind(Kind::Float)
    }

    #[test]
    fn round_trips_every_layout_exactly_and_picks_the_cheapest() {
        let mut m = TensorMap::new();
        m.insert("sparse.weight".into(), pruned(&[64, 300], 0.03, 1)); // CSR
        m.insert("half.weight".into(), pruned(&[20, 50, 3, 3], 0.4, 2)); // bitmask
        m.insert("full.weight".into(), pruned(&[10, 20], 1.0, 3)); // dense
        m.insert("wide.weight".into(), pruned(&[2, 40000], 0.01, 4)); // CSR, int32 columns
        m.insert("empty.weight".into(), Tensor::zeros([3, 4], (Kind::Float, tch::Device::Cpu)));
        m.insert("fc.bias".into(), Tensor::randn([64], (Kind::Float, tch::Device::Cpu)));
        m.insert("bn.num_batches_tracked".into(), Tensor::from(5i64));
        let (stored, meta, r) = encode(&m, ValueDtype::F32);
        let entries: BTreeMap<String, Entry> = serde_json::from_str(&meta).unwrap();
        assert_eq!(entries["sparse.weight"].layout, Layout::Csr);
        assert_eq!(entries["half.weight"].layout, Layout::Bitmask);
        assert_eq!(entries["wide.weight"].layout, Layout::Csr);
        assert!(!entries.contains_key("full.weight") && !entries.contains_key("fc.bias"));
        let kinds: BTreeMap<String, Kind> = stored.iter().map(|(k, t)| (k.clone(), t.kind())).collect();
        assert_eq!(kinds["sparse.weight::col"], Kind::Int16);
        assert_eq!(kinds["wide.weight::col"], Kind::Int);
        // Independent count of the non-zeros stored.
        let nnz: i64 = ["sparse.weight", "half.weight", "wide.weight", "empty.weight"]
            .iter()
            .map(|n| m[*n].ne(0.0).sum(Kind::Int64).int64_value(&[]))
            .sum();
        assert_eq!(r.nonzeros as i64, nnz);
        let back = decode(stored.into_iter().collect(), &meta).unwrap();
        assert_eq!(back.len(), m.len());
        for (k, t) in &m {
            assert!(back[k].equal(t), "{k}");
        }
    }

    #[test]
    fn f16_rounds_values_only() {
        let mut m = TensorMap::new();
        m.insert("a.weight".into(), pruned(&[32, 100], 0.05, 5));
        m.insert("a.bias".into(), Tensor::randn([32], (Kind::Float, tch::Device::Cpu)));
        let (stored, meta, r) = encode(&m, ValueDtype::F16);
        assert_eq!(r.value_bytes, 2 * (r.nonzeros + 32));
        let back = decode(stored.into_iter().collect(), &meta).unwrap();
        for (k, t) in &m {
            let expect = t.to_kind(Kind::Half).to_kind(Kind::Float);
            assert!(back[k].equal(&expect), "{k}: exactly the float16 rounding");
            assert_eq!(back[k].kind(), Kind::Float);
        }
    }

    #[test]
    fn corrupt_indices_are_refused_naming_the_tensor() {
        let mut m = TensorMap::new();
        m.insert("fc.weight".into(), pruned(&[16, 400], 0.02, 6));
        let (stored, meta, _) = encode(&m, ValueDtype::F32);
        let mut broken: TensorMap = stored.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        let col = broken["fc.weight::col"].copy();
        let _ = col.narrow(0, 0, 1).fill_(i16::MAX as i64);
        broken.insert("fc.weight::col".into(), col);
        let e = decode(broken, &meta).unwrap_err().to_string();
        assert!(e.contains("fc.weight") && e.contains("column"), "{e}");
        // A repeated column within a row (one value would overwrite the other) and an unsorted row.
        let crow = stored.iter().find(|(k, _)| k == "fc.weight::crow").unwrap().1.to_kind(Kind::Int64);
        let r = (0..16)
            .find(|&r| crow.int64_value(&[r + 1]) - crow.int64_value(&[r]) >= 2)
            .expect("a row with 2");
        let at = crow.int64_value(&[r]);
        for (second, what) in [(None, "repeats"), (Some(-1i64), "unsorted")] {
            let mut m: TensorMap = stored.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
            let col = m["fc.weight::col"].copy();
            let first = col.int64_value(&[at]);
            let v = match second {
                None => first,
                Some(_) => first.saturating_sub(1).max(0),
            };
            let _ = col.narrow(0, at + 1, 1).fill_(v);
            m.insert("fc.weight::col".into(), col);
            let e = decode(m, &meta).unwrap_err().to_string();
            assert!(
                e.contains("fc.weight") && e.contains(&format!("row {r}")) && e.contains("strictly"),
                "{what}: {e}"
            );
        }
        // Float indices and an overflowing shape are refused, not truncated or aborted on.
        let mut m: TensorMap = stored.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        let col = m["fc.weight::col"].to_kind(Kind::Float);
        m.insert("fc.weight::col".into(), col);
        let e = decode(m, &meta).unwrap_err().to_string();
        assert!(e.contains("fc.weight::col") && e.contains("expected int16"), "{e}");
        let huge = meta.replace("[16,400]", "[4611686018427387904,4]");
        assert_ne!(huge, meta, "{meta}");
        let m: TensorMap = stored.iter().map(|(k, t)| (k.clone(), t.copy())).collect();
        let e = decode(m, &huge).unwrap_err().to_string();
        assert!(e.contains("invalid shape"), "{e}");
        let mut missing: TensorMap = stored.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
        missing.remove("fc.weight::crow");
        let e = decode(missing, &meta).unwrap_err().to_string();
        assert!(e.contains("fc.weight::crow") && e.contains("missing"), "{e}");
    }
}
