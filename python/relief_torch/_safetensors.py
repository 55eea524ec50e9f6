"""Reading and writing safetensors files with torch alone.

Reading uses the ``safetensors`` package (``safe_open(..., framework="pt")``, which needs no
numpy). Writing is done here: ``safetensors.torch.save_file`` imports numpy to take the bytes
of a tensor, and relief_torch must work without numpy. The format is small and fixed
(https://github.com/huggingface/safetensors#format): an 8-byte little-endian header length, a
JSON header naming every tensor's dtype, shape and byte range (plus string metadata under
``__metadata__``), padded with spaces to a multiple of 8 bytes, then the raw little-endian
tensor bytes. Files are written to a temporary sibling, flushed to disk and renamed over the
target (:func:`write_atomic`), so a reader never sees a partial file.
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import sys
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from .errors import ReliefTorchError, cut, shown

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


def as_path(value: Any, what: str, error: type = ReliefTorchError) -> str:
    """``os.fspath(value)``, or ``error`` naming ``what`` when ``value`` is not a path."""
    try:
        return os.fspath(value)
    except TypeError:
        raise error(f"{what} must be a str or os.PathLike, got {type(value).__name__} {shown(value)}") from None


def encode_safetensors(
    tensors: Mapping[str, torch.Tensor],
    metadata: Optional[Mapping[str, str]] = None,
) -> List[bytes]:
    """The bytes of a safetensors file holding ``tensors`` (copied to the CPU, names in sorted
    order) and string ``metadata``, as a list of chunks (header first)."""
    if sys.byteorder != "little":
        raise ReliefTorchError("writing safetensors needs a little-endian machine")
    header: Dict[str, object] = {}
    if metadata:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise ReliefTorchError(f"safetensors metadata must map str to str, got {shown(k)}: "
                                       f"{type(v).__name__}")
        header["__metadata__"] = dict(metadata)
    for name in tensors:
        if not isinstance(name, str):
            raise ReliefTorchError(f"tensor names must be strings, got {shown(name)} ({type(name).__name__})")
    blobs = []
    offset = 0
    for name in sorted(tensors):
        t = tensors[name]
        if name == "__metadata__":
            raise ReliefTorchError("a tensor cannot be named `__metadata__` (the safetensors header's metadata key)")
        if not isinstance(t, torch.Tensor):
            raise ReliefTorchError(f"`{cut(name)}` is a {type(t).__name__}, not a tensor")
        if t.dtype not in _DTYPES:
            raise ReliefTorchError(f"tensor `{cut(name)}`: dtype {t.dtype} cannot be written to safetensors")
        t = t.detach().to("cpu").contiguous()
        nbytes = t.numel() * t.element_size()
        blobs.append(ctypes.string_at(t.data_ptr(), nbytes) if nbytes else b"")
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return [struct.pack("<Q", len(raw)), raw, *blobs]


def _cannot_write(path: str, e: OSError) -> ReliefTorchError:
    return ReliefTorchError(f"{path}: cannot write: {e.strerror or e}")


def write_temp(path: "os.PathLike[str] | str", chunks: Iterable[bytes]) -> str:
    """Writes ``chunks`` to a temporary sibling of ``path`` (``NAME.<pid>.tmp``), flushed to
    disk (``fsync``); returns its path. On failure the sibling is removed and the error names
    ``path``. :func:`commit` renames it over ``path``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ReliefTorchError(f"{path}: cannot write: is a directory")
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        _remove_quietly(tmp)
        raise _cannot_write(path, e) from e
    except BaseException:
        _remove_quietly(tmp)
        raise
    return tmp


def commit(tmp: str, path: "os.PathLike[str] | str") -> None:
    """Renames the finished temporary file ``tmp`` over ``path`` and flushes the directory (the
    rename itself) to disk; on failure ``tmp`` is removed and ``path`` is as it was."""
    path = os.fspath(path)
    try:
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        raise _cannot_write(path, e) from e
    _fsync_dir(os.path.dirname(path) or ".")


def write_atomic(path: "os.PathLike[str] | str", chunks: Iterable[bytes]) -> None:
    """Writes ``chunks`` to ``path`` atomically: temporary sibling, ``fsync``, rename, ``fsync``
    of the directory. A reader, or a process killed at any instant, sees the old file or the new
    one, never a partial one; a failure leaves ``path`` untouched, no temporary file behind, and
    raises :class:`ReliefTorchError` naming ``path``."""
    commit(write_temp(path, chunks), path)


def _remove_quietly(p: str) -> None:
    try:
        os.remove(p)
    except OSError:
        pass


def _fsync_dir(d: str) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return  # not every platform opens directories
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_safetensors(
    path: "os.PathLike[str] | str",
    tensors: Mapping[str, torch.Tensor],
    metadata: Optional[Mapping[str, str]] = None,
) -> None:
    """Writes ``tensors`` (CPU or not; copied to the CPU) and string ``metadata`` to ``path``
    in the safetensors format, atomically (:func:`write_atomic`). Tensor names are written in
    sorted order."""
    write_atomic(path, encode_safetensors(tensors, metadata))


def read_safetensors(path: "os.PathLike[str] | str") -> Tuple[Dict[str, torch.Tensor], Dict[str, str]]:
    """Reads every tensor (CPU) and the string metadata of a safetensors file; a missing file,
    a directory or a file that is not safetensors (truncated, a header that is not JSON, data
    offsets outside the file...) raises :class:`ReliefTorchError` naming it."""
    from safetensors import safe_open

    path = os.fspath(path)
    _check_regular(path)
    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own SafetensorError and OSError variants
        raise ReliefTorchError(f"{path}: not a readable safetensors file ({cut(e)})") from e
    return tensors, metadata


def _check_regular(path: str) -> None:
    if os.path.isdir(path):
        raise ReliefTorchError(f"{path}: is a directory, not a safetensors file")
    if not os.path.exists(path):
        raise ReliefTorchError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ReliefTorchError(f"{path}: not a regular file")


def read_metadata(path: "os.PathLike[str] | str") -> Dict[str, str]:
    """The string metadata of a safetensors file, from its header only."""
    path = os.fspath(path)
    _check_regular(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) != 8:
                raise ValueError(f"{len(head)} bytes, no header length")
            (n,) = struct.unpack("<Q", head)
            if n > 100_000_000:
                raise ValueError(f"header length {n}")
            raw = f.read(n)
            if len(raw) != n:
                raise ValueError(f"the header is cut off ({len(raw)} of {n} bytes)")
            header = json.loads(raw)
    except (OSError, ValueError, struct.error) as e:
        raise ReliefTorchError(f"{path}: not a safetensors file ({cut(e)})") from e
    if not isinstance(header, dict):
        raise ReliefTorchError(f"{path}: not a safetensors file (the header is a JSON {type(header).__name__}, "
                               "not an object)")
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ReliefTorchError(f"{path}: header field `__metadata__` is a JSON {type(meta).__name__}, not an object")
    return {k: v for k, v in meta.items() if isinstance(v, str)}
