"""Reading relief's sparse model files (``relief export --compact CK --sparse [--dtype f16]``).

A sparse file is a compacted model whose weights are stored as their non-zero entries in
row-major order of the ``rows x cols`` view (``rows`` = first dimension) plus an index, as
recorded per tensor in the metadata entry ``sparse`` (JSON ``{name: {"layout", "shape",
"dtype"}}``, exactly these three fields: ``layout`` one of ``csr``, ``bitmask``, ``dense``;
``shape`` a list of non-negative integers; ``dtype`` ``f32`` or ``f16``, the stored values'):

- ``csr``: ``<name>::values``, ``<name>::crow`` (int32, ``rows + 1`` offsets from 0 to the
  value count, never decreasing), ``<name>::col`` (int16 or int32 columns, strictly increasing
  within each row);
- ``bitmask``: ``<name>::values`` and ``<name>::bits`` (uint8; bit ``i % 8``, least significant
  first, of byte ``i // 8`` set when flat entry ``i`` is non-zero);
- ``dense``: the tensor itself in another dtype (float16).

:func:`densify` rebuilds float32 tensors (the compacted model exactly for ``f32``), checking
every field and index first: anything malformed raises
:class:`~relief_torch.errors.CompactedError` naming the tensor, the field and, for CSR indices,
the row. :func:`to_sparse_csr` gives a weight as ``torch.sparse_csr_tensor`` of its
``rows x cols`` view.
"""

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch

from .errors import CompactedError, cut, shown

SPARSE_KEY = "sparse"

_FIELDS = ("layout", "shape", "dtype")
_LAYOUTS = ("csr", "bitmask", "dense")
_VALUE_DTYPES = {"f32": torch.float32, "f16": torch.float16}
#: Integer dtypes an index tensor (``crow``, ``col``) may have (relief writes int32 offsets and
#: int16 / int32 columns).
_INDEX_DTYPES = (torch.int16, torch.int32, torch.int64)


def json_type(v: Any) -> str:
    """The JSON type of a parsed value, for messages (``a string``, ``an integer``...)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _bad(name: str, msg: str) -> CompactedError:
    return CompactedError(f"sparse tensor `{cut(name)}`: {msg}")


def _field(name: str, field: str, msg: str) -> CompactedError:
    return CompactedError(f"metadata `{SPARSE_KEY}`, entry `{cut(name)}`: field `{field}` {msg}")


def _entry(name: str, entry: Any) -> Tuple[str, List[int], str]:
    """``(layout, shape, dtype)`` of one entry of the ``sparse`` metadata, every field checked."""
    if not isinstance(entry, dict):
        raise CompactedError(f"metadata `{SPARSE_KEY}`, entry `{cut(name)}`: is {json_type(entry)} "
                             f"({shown(entry)}), expected an object with fields {', '.join(_FIELDS)}")
    missing = [f for f in _FIELDS if f not in entry]
    if missing:
        raise CompactedError(f"metadata `{SPARSE_KEY}`, entry `{cut(name)}`: field `{missing[0]}` is missing "
                             f"(an entry has {', '.join(_FIELDS)})")
    unknown = [k for k in entry if k not in _FIELDS]
    if unknown:
        raise CompactedError(f"metadata `{SPARSE_KEY}`, entry `{cut(name)}`: unknown field `{cut(unknown[0])}` "
                             f"(an entry has {', '.join(_FIELDS)})")
    layout = entry["layout"]
    if not isinstance(layout, str) or layout not in _LAYOUTS:
        raise _field(name, "layout", f"is {json_type(layout)} {shown(layout)}, expected one of "
                                     + ", ".join(f'"{x}"' for x in _LAYOUTS))
    raw = entry["shape"]
    if not isinstance(raw, list):
        raise _field(name, "shape", f"is {json_type(raw)} {shown(raw)}, expected an array of non-negative integers")
    shape = []
    for i, d in enumerate(raw):
        if isinstance(d, bool) or not isinstance(d, int) or d < 0:
            raise _field(name, f"shape[{i}]", f"is {json_type(d)} {shown(d)}, expected a non-negative integer")
        shape.append(d)
    if layout != "dense" and len(shape) < 2:
        raise _field(name, "shape", f"is {shown(shape)}: a {layout} tensor has at least 2 dimensions")
    dtype = entry["dtype"]
    if not isinstance(dtype, str) or dtype not in _VALUE_DTYPES:
        raise _field(name, "dtype", f"is {json_type(dtype)} {shown(dtype)}, expected \"f32\" or \"f16\"")
    return layout, shape, dtype


def _take(stored: Dict[str, torch.Tensor], name: str, part: str) -> torch.Tensor:
    key = f"{name}::{part}"
    if key not in stored:
        raise _bad(name, f"`{cut(key)}` is missing")
    return stored.pop(key)


def _values(stored: Dict[str, torch.Tensor], name: str, dtype: str) -> torch.Tensor:
    values = _take(stored, name, "values")
    if values.dim() != 1 or values.dtype != _VALUE_DTYPES[dtype]:
        raise _bad(name, f"`{cut(name)}::values` is {values.dtype} of shape {list(values.shape)}: expected a 1-D "
                         f"{_VALUE_DTYPES[dtype]} tensor (the entry's dtype is \"{dtype}\")")
    return values


def _index(stored: Dict[str, torch.Tensor], name: str, part: str, length: int) -> torch.Tensor:
    t = _take(stored, name, part)
    if t.dtype not in _INDEX_DTYPES:
        raise _bad(name, f"`{cut(name)}::{part}` is {t.dtype}: index tensors are integers (int16, int32 or int64)")
    if t.dim() != 1 or t.numel() != length:
        raise _bad(name, f"`{cut(name)}::{part}` has shape {list(t.shape)}, expected [{length}]")
    return t.long()


def _csr_flat_index(stored: Dict[str, torch.Tensor], name: str, rows: int, cols: int, nnz: int) -> torch.Tensor:
    """The flat (row-major) positions of a CSR tensor's values, every index checked."""
    crow = _index(stored, name, "crow", rows + 1)
    col = _index(stored, name, "col", nnz)
    if int(crow[0]) != 0:
        raise _bad(name, f"`{cut(name)}::crow` starts at {int(crow[0])}: row offsets start at 0")
    counts = crow[1:] - crow[:-1]
    if rows and bool((counts < 0).any()):
        r = int((counts < 0).nonzero()[0])
        raise _bad(name, f"`{cut(name)}::crow` decreases at row {r} ({int(crow[r])} then {int(crow[r + 1])}): row "
                         "offsets never decrease")
    if int(crow[-1]) != nnz:
        raise _bad(name, f"`{cut(name)}::crow` ends at {int(crow[-1])}, but `{cut(name)}::values` holds {nnz} "
                         "values: the last row offset is the value count")
    row = torch.repeat_interleave(torch.arange(rows), counts)
    outside = (col < 0) | (col >= cols)
    if bool(outside.any()):
        i = int(outside.nonzero()[0])
        raise _bad(name, f"row {int(row[i])}: column index {int(col[i])} lies outside 0..{cols - 1}")
    if nnz > 1:
        same_row = row[1:] == row[:-1]
        not_increasing = same_row & (col[1:] <= col[:-1])
        if bool(not_increasing.any()):
            i = int(not_increasing.nonzero()[0])
            a, b = int(col[i]), int(col[i + 1])
            what = f"column {a} appears twice" if a == b else f"column {b} follows column {a}"
            raise _bad(name, f"row {int(row[i])}: {what}; the column indices of a row are strictly increasing "
                             "(each column once, in order)")
    return row * cols + col


def _bitmask_flat_index(stored: Dict[str, torch.Tensor], name: str, numel: int, nnz: int) -> torch.Tensor:
    packed = _take(stored, name, "bits")
    nbytes = (numel + 7) // 8
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != nbytes:
        raise _bad(name, f"`{cut(name)}::bits` is {packed.dtype} of shape {list(packed.shape)}: the bitmask of "
                         f"{numel} entries is {nbytes} uint8 bytes")
    shifts = torch.arange(8)
    bits = ((packed.long().unsqueeze(1) >> shifts) & 1).reshape(-1)[:numel].bool()
    if int(bits.sum()) != nnz:
        raise _bad(name, f"the bitmask has {int(bits.sum())} set bits for {nnz} values")
    return bits.nonzero().reshape(-1)


def _zeros(name: str, numel: int) -> torch.Tensor:
    try:
        return torch.zeros(numel)
    except (RuntimeError, MemoryError, OverflowError) as e:
        raise _bad(name, f"cannot allocate its {numel} entries ({type(e).__name__}: {cut(e)})") from e


def densify(
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, str],
    expected: Optional[Mapping[str, Sequence[int]]] = None,
) -> Dict[str, torch.Tensor]:
    """The tensors of a sparse file as dense float32 tensors (other files pass unchanged).

    ``expected`` (name -> shape, e.g. the compacted graph's tensors) is checked against every
    entry before anything is allocated. Raises :class:`CompactedError` for a malformed entry
    (a missing or unknown field, a field of the wrong type, a negative dimension), an index
    tensor of the wrong dtype or length, row offsets that do not rise from 0 to the value count,
    column indices out of range or not strictly increasing within a row, a bitmask of the wrong
    length or bit count, or a stored tensor that belongs to no entry."""
    if SPARSE_KEY not in meta:
        return dict(tensors)
    try:
        entries = json.loads(meta[SPARSE_KEY])
    except (ValueError, RecursionError) as e:
        raise CompactedError(f"metadata `{SPARSE_KEY}` is not JSON ({cut(e)})") from e
    if not isinstance(entries, dict):
        raise CompactedError(f"metadata `{SPARSE_KEY}` is {json_type(entries)}, expected an object "
                             "{name: {layout, shape, dtype}}")
    stored = dict(tensors)
    checked = {name: _entry(name, entry) for name, entry in entries.items()}
    for name, (layout, shape, _) in checked.items():
        if expected is not None:
            if name not in expected:
                raise _bad(name, "is not a tensor of the model's graph")
            if list(expected[name]) != shape:
                raise _field(name, "shape", f"is {shape}, but the graph's tensor `{cut(name)}` has shape "
                                            f"{list(expected[name])}")
        if layout != "dense" and name in stored:
            raise _bad(name, f"stored both dense (`{cut(name)}`) and as {layout}")
    out: Dict[str, torch.Tensor] = {}
    for name, (layout, shape, dtype) in checked.items():
        numel = 1
        for d in shape:
            numel *= d
        if layout == "dense":
            if name not in stored:
                raise _bad(name, f"`{cut(name)}` is missing")
            t = stored.pop(name)
            if list(t.shape) != shape:
                raise _bad(name, f"has shape {list(t.shape)}, the metadata says {shape}")
            if t.dtype != _VALUE_DTYPES[dtype]:
                raise _bad(name, f"is {t.dtype}, the metadata says \"{dtype}\"")
            out[name] = t.float()
            continue
        values = _values(stored, name, dtype)
        nnz = values.numel()
        rows = shape[0]
        cols = numel // rows if rows else 0
        if layout == "csr":
            flat = _csr_flat_index(stored, name, rows, cols, nnz)
        else:
            flat = _bitmask_flat_index(stored, name, numel, nnz)
        dense = _zeros(name, numel)
        dense[flat] = values.float()
        out[name] = dense.reshape(shape)
    stray = [k for k in stored if "::" in k]
    if stray:
        raise CompactedError(f"tensor `{cut(stray[0])}` belongs to no entry of metadata `{SPARSE_KEY}`")
    out.update(stored)
    return out


def to_sparse_csr(weight: torch.Tensor) -> torch.Tensor:
    """A (dense, e.g. densified) weight as ``torch.sparse_csr_tensor`` of its ``rows x cols``
    view: what a sparse matrix product needs (``torch.sparse.mm(w, x.T)``)."""
    return weight.reshape(weight.shape[0], -1).to_sparse_csr()
