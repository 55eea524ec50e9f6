"""Compacted relief models (``relief export --compact``) as plain PyTorch modules.

A compacted file is one safetensors file: the smaller model's tensors by PyTorch name (masks
already multiplied in) and metadata ``format = "relief-compact"``, ``version = "1"`` and
``graph``, the compacted ``PruneGraph`` as JSON (``relief-core``, ``deployment/compact.rs``).
:func:`load_compacted` rebuilds that graph as a ``torch.fx.GraphModule`` whose ``state_dict``
holds exactly the file's tensors under the same names; it computes what relief's compacted
model computes, and it scripts (``torch.jit.script``) and exports to ONNX.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx

from ._program import Block, Layer, Op, Program, build_module
from ._safetensors import as_path, read_safetensors
from .sparse import densify, json_type
from .errors import CompactedError, ReliefTorchError, cut, shown

#: The ``format`` metadata of a compacted model.
FORMAT = "relief-compact"
#: The ``version`` metadata this reader understands.
FORMAT_VERSION = "1"

_MISSING = object()


_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


class _GraphError(CompactedError):
    """A field of the graph JSON is missing or malformed (the message names its path)."""


def _fail(where: str, msg: str) -> _GraphError:
    return _GraphError(f"field `{where}` {msg}")


def _get(obj: Dict[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
    if key not in obj:
        if default is not _MISSING:
            return default
        raise _GraphError(f"field `{where}.{key}` is missing" if where else f"field `{key}` is missing")
    return obj[key]


def _obj(v: Any, where: str) -> Dict[str, Any]:
    if not isinstance(v, dict):
        raise _fail(where, f"is {json_type(v)} ({shown(v)}), expected an object")
    return v


def _list(v: Any, where: str) -> List[Any]:
    if not isinstance(v, list):
        raise _fail(where, f"is {json_type(v)} ({shown(v)}), expected an array")
    return v


def _int(v: Any, where: str, minimum: Optional[int] = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or (minimum is not None and v < minimum):
        want = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise _fail(where, f"is {json_type(v)} {shown(v)}, expected {want}")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise _fail(where, f"is {json_type(v)} {shown(v)}, expected true or false")
    return v


def _name(v: Any, where: str) -> str:
    if not isinstance(v, str) or not _NAME.match(v):
        raise _fail(where, f"is {json_type(v)} {shown(v)}, expected a module path (dot-separated parts of "
                           "letters, digits and `_`)")
    return v


def _ref(v: Any, where: str, items: Sequence[Any], what: str) -> int:
    i = _int(v, where, 0)
    if i >= len(items):
        raise _fail(where, f"is {i}, but the graph has {len(items)} {what}")
    return i


def _variant(v: Any, where: str, known: Sequence[str]) -> Tuple[str, Any]:
    """A serde externally tagged enum value: ``"Unit"`` or ``{"Variant": payload}``, with the
    variant one of ``known``."""
    if isinstance(v, str):
        kind, payload = v, None
    elif isinstance(v, dict) and len(v) == 1:
        (kind, payload), = v.items()
    else:
        raise _fail(where, f"is {json_type(v)} ({shown(v)}), expected one of {', '.join(known)} "
                           "(a string, or an object with one key)")
    if kind not in known:
        raise _fail(where, f"names {shown(kind)}, expected one of {', '.join(known)}")
    return kind, payload


def program_from_graph(graph: Any) -> Program:
    """relief's ``PruneGraph`` JSON as a :class:`~relief_torch._program.Program`; every field
    the program reads is checked (type and range), and a malformed one raises
    :class:`CompactedError` naming its path (``layers[2].op.Conv2d.kernel``)."""
    graph = _obj(graph, "graph")
    layers: List[Layer] = []
    for i, l in enumerate(_list(_get(graph, "layers", ""), "layers")):
        w = f"layers[{i}]"
        l = _obj(l, w)
        name = _name(_get(l, "name", w), f"{w}.name")
        kind, op = _variant(_get(l, "op", w), f"{w}.op", ("Conv2d", "Linear"))
        o = f"{w}.op.{kind}"
        op = _obj(op, o)
        inputs = _int(_get(op, "inputs", o), f"{o}.inputs", 1)
        outputs = _int(_get(op, "outputs", o), f"{o}.outputs", 1)
        bias = _bool(_get(l, "bias", w), f"{w}.bias")
        if kind == "Conv2d":
            layer = Layer("conv", name, inputs, outputs, _int(_get(op, "kernel", o), f"{o}.kernel", 1),
                          _int(_get(op, "stride", o), f"{o}.stride", 1),
                          _int(_get(op, "padding", o), f"{o}.padding", 0), bias)
        else:
            layer = Layer("linear", name, inputs, outputs, bias=bias)
        bn = _get(l, "batch_norm", w, None)
        layer.bn = None if bn is None else _name(bn, f"{w}.batch_norm")
        act, _ = _variant(_get(l, "activation", w), f"{w}.activation", ("Relu", "Identity"))
        layer.relu = act == "Relu"
        role, _ = _variant(_get(l, "role", w, "Plain"), f"{w}.role",
                           ("Plain", "Stem", "BlockConv1", "BlockConv2", "Shortcut"))
        layer.stem = role == "Stem"
        layers.append(layer)
    blocks: List[Block] = []
    for b, blk in enumerate(_list(_get(graph, "blocks", "", []), "blocks")):
        w = f"blocks[{b}]"
        blk = _obj(blk, w)
        c1 = layers[_ref(_get(blk, "conv1", w), f"{w}.conv1", layers, "layers")]
        c2 = layers[_ref(_get(blk, "conv2", w), f"{w}.conv2", layers, "layers")]
        mask = _get(blk, "mask", w, None)
        mask = None if mask is None else _name(mask, f"{w}.mask")
        kind, payload = _variant(_get(blk, "shortcut", w), f"{w}.shortcut", ("Identity", "PadA", "Conv", "Gather"))
        o = f"{w}.shortcut.{kind}"
        if kind == "Identity":
            block = Block(c1, c2, "identity", mask=mask)
        elif kind == "PadA":
            block = Block(c1, c2, "pad_a", pad=_int(_get(_obj(payload, o), "pad", o), f"{o}.pad", 0), mask=mask)
        elif kind == "Conv":
            proj = layers[_ref(_get(_obj(payload, o), "layer", o), f"{o}.layer", layers, "layers")]
            block = Block(c1, c2, "conv", projection=proj, mask=mask)
        else:
            payload = _obj(payload, o)
            index = [_int(j, f"{o}.index[{k}]") for k, j in enumerate(_list(_get(payload, "index", o), f"{o}.index"))]
            block = Block(c1, c2, "gather", stride=_int(_get(payload, "stride", o), f"{o}.stride", 1), index=index,
                          mask=mask)
        blocks.append(block)
    ops: List[Op] = []
    for n, node in enumerate(_list(_get(graph, "nodes", ""), "nodes")):
        w = f"nodes[{n}]"
        kind, payload = _variant(node, w, ("Layer", "MaxPool2d", "GlobalAvgPool", "Flatten", "Dropout", "Block"))
        o = f"{w}.{kind}"
        if kind == "Layer":
            ops.append(Op("layer", layer=layers[_ref(payload, o, layers, "layers")]))
        elif kind == "MaxPool2d":
            payload = _obj(payload, o)
            ops.append(Op("max_pool", kernel=_int(_get(payload, "kernel", o), f"{o}.kernel", 1),
                          stride=_int(_get(payload, "stride", o), f"{o}.stride", 1)))
        elif kind == "GlobalAvgPool":
            ops.append(Op("gap", spec_kind="global_avg_pool"))
        elif kind == "Flatten":
            ops.append(Op("flatten"))
        elif kind == "Dropout":
            p = _get(_obj(payload, o), "p", o)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise _fail(f"{o}.p", f"is {json_type(p)} {shown(p)}, expected a number in [0, 1)")
            ops.append(Op("dropout", p=float(p)))
        else:
            ops.append(Op("block", block=blocks[_ref(payload, o, blocks, "blocks")]))
    shape = _list(_get(graph, "input_shape", ""), "input_shape")
    if len(shape) not in (1, 3):
        raise _fail("input_shape", f"is {shown(shape)}, expected [features] or [channels, height, width]")
    input_shape = [_int(d, f"input_shape[{k}]", 1) for k, d in enumerate(shape)]
    arch = _get(graph, "arch", "", "model")
    if not isinstance(arch, str):
        raise _fail("arch", f"is {json_type(arch)} {shown(arch)}, expected a string")
    program = Program(input_shape, _int(_get(graph, "num_classes", ""), "num_classes", 1), ops, name=arch)
    used = [layer.name for layer in program.layers()]
    if sorted(used) != sorted(layer.name for layer in layers):
        raise CompactedError("the graph's program does not use every layer exactly once")
    return program


def load_compacted(path: "os.PathLike[str] | str") -> fx.GraphModule:
    """Builds a compacted relief model (``relief export --compact CK --out FILE``, also stored
    sparse with ``--sparse [--dtype f16]``, see :mod:`relief_torch.sparse`) as a plain PyTorch
    module in eval mode (float32).

    The result is a ``torch.fx.GraphModule`` (``print(m.code)`` shows its forward) made of
    ``nn.Conv2d``, ``nn.Linear``, ``nn.BatchNorm2d``, pooling, ``nn.Dropout`` and, for compacted
    identity / option-A shortcuts, :class:`~relief_torch._program.ChannelGather` modules; its
    ``state_dict`` has exactly the file's tensor names. It takes ``N x input_shape`` inputs
    (``m.relief_input_shape``; vector models also take images and flatten them, as relief
    does) and works with ``torch.jit.script`` and ``torch.onnx.export``. Raises
    :class:`CompactedError` for a file that is not a compacted relief model (a relief checkpoint
    is refused with a pointer to :func:`relief_torch.load_checkpoint`), whose metadata is
    malformed (the field is named: ``layers[2].op.Conv2d.kernel``, a ``sparse`` entry's
    ``shape``...), whose sparse indices are inconsistent (see :func:`relief_torch.sparse.densify`),
    whose tensors hold NaN or infinite values, or whose tensors do not match its graph."""
    path = as_path(path, "load_compacted: path", CompactedError)
    try:
        tensors, meta = read_safetensors(path)
    except ReliefTorchError as e:
        raise CompactedError(str(e)) from e
    fmt = meta.get("format")
    if fmt != FORMAT:
        if fmt == "relief-checkpoint/1" or any(k.startswith("mask.") for k in tensors):
            raise CompactedError(f"{path}: this is a relief checkpoint (masked dense model), not a compacted "
                                 "model; load it into your module with relief_torch.load_checkpoint, or compact it "
                                 "first with `relief export --compact CK --out FILE`")
        raise CompactedError(f"{path}: not a compacted relief model (metadata `format` is "
                             f"{shown(fmt)}, expected {FORMAT!r}; made by `relief export --compact`)")
    if meta.get("version") != FORMAT_VERSION:
        raise CompactedError(f"{path}: metadata `version` is {shown(meta.get('version'))}; this reader understands "
                             f"compacted format version {FORMAT_VERSION!r}")
    if "graph" not in meta:
        raise CompactedError(f"{path}: the metadata has no `graph`")
    try:
        graph = json.loads(meta["graph"])
    except (ValueError, RecursionError) as e:
        raise CompactedError(f"{path}: metadata `graph` is not JSON ({cut(e)})") from e
    try:
        program = program_from_graph(graph)
        program.shapes()
    except ReliefTorchError as e:
        raise CompactedError(f"{path}: metadata `graph`: {e}") from e
    try:
        # The graph's shapes bound every sparse tensor before anything is allocated.
        tensors = densify(tensors, meta, dict(program.tensor_shapes()))
    except ReliefTorchError as e:
        raise CompactedError(f"{path}: {e}") from e
    for name, t in tensors.items():
        if t.is_floating_point():
            nan, inf = int(torch.isnan(t).sum()), int(torch.isinf(t).sum())
            if nan or inf:
                raise CompactedError(f"{path}: tensor `{cut(name)}` has {nan} NaN and {inf} inf entries of "
                                     f"{t.numel()}")
    try:
        module = build_module(program, tensors, class_name="ReliefCompacted")
    except ReliefTorchError as e:
        raise CompactedError(f"{path}: {e}") from e
    except (RuntimeError, TypeError, ValueError, KeyError, IndexError, MemoryError) as e:
        # What the checks above let through (they are meant to catch everything) still names the file.
        raise CompactedError(f"{path}: cannot build the model of its graph ({type(e).__name__}: {cut(e)})") from e
    module.relief_input_shape = list(program.input_shape)
    module.relief_metadata = {k: v for k, v in meta.items() if k != "graph"}
    return module
