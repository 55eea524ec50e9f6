"""Reading relief's sparse model files (``relief export --compact CK --sparse [--dtype f16]``).

A sparse file is a compacted model whose weights are stored as their non-zero entries in
row-major order of the ``rows x cols`` view (``rows`` = first dimension) plus an index, as
recorded per tensor in the metadata entry ``sparse`` (JSON ``{name: {"layout", "shape",
"dtype"}}``):

- ``csr``: ``<name>::values``, ``<name>::crow`` (int32, ``rows + 1`` offsets), ``<name>::col``
  (int16 or int32 columns);
- ``bitmask``: ``<name>::values`` and ``<name>::bits`` (uint8; bit ``i % 8``, least significant
  first, of byte ``i // 8`` set when flat entry ``i`` is non-zero);
- ``dense``: the tensor itself in another dtype (float16).

:func:`densify` rebuilds float32 tensors (the compacted model exactly for ``f32``);
:func:`to_sparse_csr` gives a weight as ``torch.sparse_csr_tensor`` of its ``rows x cols`` view.
"""

import json
from typing import Dict

import torch

from .errors import ReliefTorchError

SPARSE_KEY = "sparse"


def _take(stored: Dict[str, torch.Tensor], name: str, part: str) -> torch.Tensor:
    key = f"{name}::{part}"
    if key not in stored:
        raise ReliefTorchError(f"sparse tensor `{name}`: `{key}` is missing")
    return stored.pop(key)


def _csr_parts(stored, name, entry):
    shape = entry["shape"]
    rows = shape[0]
    numel = 1
    for d in shape:
        numel *= d
    cols = numel // rows if rows else 0
    values = _take(stored, name, "values").float()
    crow = _take(stored, name, "crow").long()
    col = _take(stored, name, "col").long()
    nnz = values.numel()
    if crow.shape != (rows + 1,) or col.shape != (nnz,):
        raise ReliefTorchError(f"sparse tensor `{name}`: crow {tuple(crow.shape)}, col {tuple(col.shape)}: "
                               f"expected ({rows + 1},) and ({nnz},)")
    if int(crow[0]) != 0 or int(crow[-1]) != nnz or bool((crow[1:] < crow[:-1]).any()):
        raise ReliefTorchError(f"sparse tensor `{name}`: row offsets are not monotone from 0 to the value count")
    if nnz and (int(col.min()) < 0 or int(col.max()) >= cols):
        raise ReliefTorchError(f"sparse tensor `{name}`: a column index lies outside 0..{cols}")
    return rows, cols, values, crow, col


def densify(tensors: Dict[str, torch.Tensor], meta: Dict[str, str]) -> Dict[str, torch.Tensor]:
    """The tensors of a sparse file as dense float32 tensors (other files pass unchanged)."""
    if SPARSE_KEY not in meta:
        return tensors
    try:
        entries = json.loads(meta[SPARSE_KEY])
    except ValueError as e:
        raise ReliefTorchError(f"metadata `{SPARSE_KEY}` is not JSON ({e})") from e
    stored = dict(tensors)
    out: Dict[str, torch.Tensor] = {}
    for name, entry in entries.items():
        layout, shape = entry.get("layout"), list(entry.get("shape", []))
        numel = 1
        for d in shape:
            numel *= d
        if layout == "dense":
            if name not in stored:
                raise ReliefTorchError(f"sparse tensor `{name}`: missing")
            out[name] = stored.pop(name).float().reshape(shape)
        elif layout == "csr":
            rows, cols, values, crow, col = _csr_parts(stored, name, entry)
            row = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])
            dense = torch.zeros(numel)
            dense[row * cols + col] = values
            out[name] = dense.reshape(shape)
        elif layout == "bitmask":
            values = _take(stored, name, "values").float()
            packed = _take(stored, name, "bits")
            if packed.dtype != torch.uint8 or packed.numel() != (numel + 7) // 8:
                raise ReliefTorchError(f"sparse tensor `{name}`: bits must be {(numel + 7) // 8} uint8 bytes")
            shifts = torch.arange(8)
            bits = ((packed.long().unsqueeze(1) >> shifts) & 1).reshape(-1)[:numel].bool()
            if int(bits.sum()) != values.numel():
                raise ReliefTorchError(f"sparse tensor `{name}`: the bitmask has {int(bits.sum())} set bits for "
                                       f"{values.numel()} values")
            dense = torch.zeros(numel)
            dense[bits] = values
            out[name] = dense.reshape(shape)
        else:
            raise ReliefTorchError(f"sparse tensor `{name}`: unknown layout {layout!r}")
    stray = [k for k in stored if "::" in k]
    if stray:
        raise ReliefTorchError(f"tensor `{stray[0]}` belongs to no entry of metadata `{SPARSE_KEY}`")
    out.update(stored)
    return out


def to_sparse_csr(weight: torch.Tensor) -> torch.Tensor:
    """A (dense, e.g. densified) weight as ``torch.sparse_csr_tensor`` of its ``rows x cols``
    view: what a sparse matrix product needs (``torch.sparse.mm(w, x.T)``)."""
    return weight.reshape(weight.shape[0], -1).to_sparse_csr()
