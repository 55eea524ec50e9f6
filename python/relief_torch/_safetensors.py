"""Reading and writing safetensors files with torch alone.

Reading uses the ``safetensors`` package (``safe_open(..., framework="pt")``, which needs no
numpy). Writing is done here: ``safetensors.torch.save_file`` imports numpy to take the bytes
of a tensor, and relief_torch must work without numpy. The format is small and fixed
(https://github.com/huggingface/safetensors#format): an 8-byte little-endian header length, a
JSON header naming every tensor's dtype, shape and byte range (plus string metadata under
``__metadata__``), padded with spaces to a multiple of 8 bytes, then the raw little-endian
tensor bytes. Files are written to a temporary sibling and renamed over the target, so a reader
never sees a partial file.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
from typing import Dict, Mapping, Optional, Tuple

import torch

from .errors import ReliefTorchError

_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def write_safetensors(
    path: "os.PathLike[str] | str",
    tensors: Mapping[str, torch.Tensor],
    metadata: Optional[Mapping[str, str]] = None,
) -> None:
    """Writes ``tensors`` (CPU or not; copied to the CPU) and string ``metadata`` to ``path``
    in the safetensors format, atomically. Tensor names are written in sorted order."""
    if sys.byteorder != "little":
        raise ReliefTorchError("writing safetensors needs a little-endian machine")
    header: Dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ReliefTorchError(f"safetensors metadata must map str to str, got {k!r}: {type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if not isinstance(t, torch.Tensor):
            raise ReliefTorchError(f"`{name}` is a {type(t).__name__}, not a tensor")
        if t.dtype not in _DTYPES:
            raise ReliefTorchError(f"tensor `{name}`: dtype {t.dtype} cannot be written to safetensors")
        t = t.detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        blobs.append(ctypes.string_at(t.data_ptr(), nbytes) if nbytes else b"")
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for b in blobs:
                f.write(b)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def read_safetensors(path: "os.PathLike[str] | str") -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Reads every tensor (CPU) and the string metadata of a safetensors file; a missing file,
    a directory or a file that is not safetensors raises :class:`ReliefTorchError` naming it."""
    from safetensors import safe_open

    path = os.fspath(path)
    if os.path.isdir(path):
        raise ReliefTorchError(f"{path}: is a directory, not a safetensors file")
    if not os.path.isfile(path):
        raise ReliefTorchError(f"{path}: no such file")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError and OSError variants
        raise ReliefTorchError(f"{path}: not a readable safetensors file ({e})") from e
    return tensors, metadata


def read_metadata(path: "os.PathLike[str] | str") -> Dict[str, str]:
    """The string metadata of a safetensors file, from its header only."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError(f"header length {n}")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise ReliefTorchError(f"{path}: no such file") from None
    except (OSError, ValueError, struct.error) as e:
        raise ReliefTorchError(f"{path}: not a safetensors file ({e})") from e
    meta = header.get("__metadata__") or {}
    return {k: v for k, v in meta.items() if isinstance(v, str)}
