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
from typing import Any, Dict, List, Tuple

import torch.fx as fx

from ._program import Block, Layer, Op, Program, build_module
from ._safetensors import read_safetensors
from .sparse import densify
from .errors import CompactedError, ReliefTorchError

#: The ``format`` metadata of a compacted model.
FORMAT = "relief-compact"
#: The ``version`` metadata this reader understands.
FORMAT_VERSION = "1"


def _variant(v: Any, where: str) -> Tuple[str, Any]:
    """A serde externally tagged enum value: ``"Unit"`` or ``{"Variant": payload}``."""
    if isinstance(v, str):
        return v, None
    if isinstance(v, dict) and len(v) == 1:
        (k, payload), = v.items()
        return k, payload
    raise CompactedError(f"{where}: unexpected value {v!r}")


def program_from_graph(graph: Dict[str, Any]) -> Program:
    """relief's ``PruneGraph`` JSON as a :class:`~relief_torch._program.Program`."""
    try:
        layers: List[Layer] = []
        for i, l in enumerate(graph["layers"]):
            kind, op = _variant(l["op"], f"layer {i}")
            if kind == "Conv2d":
                layer = Layer("conv", l["name"], int(op["inputs"]), int(op["outputs"]), int(op["kernel"]),
                              int(op["stride"]), int(op["padding"]), bool(l["bias"]))
            elif kind == "Linear":
                layer = Layer("linear", l["name"], int(op["inputs"]), int(op["outputs"]), bias=bool(l["bias"]))
            else:
                raise CompactedError(f"layer {i} `{l.get('name')}`: unknown operator {kind!r}")
            layer.bn = l.get("batch_norm")
            act, _ = _variant(l["activation"], f"layer {i} activation")
            if act not in ("Relu", "Identity"):
                raise CompactedError(f"layer {i} `{l['name']}`: unknown activation {act!r}")
            layer.relu = act == "Relu"
            role, _ = _variant(l.get("role", "Plain"), f"layer {i} role")
            layer.stem = role == "Stem"
            layers.append(layer)
        blocks: List[Block] = []
        for b, blk in enumerate(graph.get("blocks", [])):
            kind, payload = _variant(blk["shortcut"], f"block {b} shortcut")
            c1, c2 = layers[int(blk["conv1"])], layers[int(blk["conv2"])]
            mask = blk.get("mask")
            if kind == "Identity":
                block = Block(c1, c2, "identity", mask=mask)
            elif kind == "PadA":
                block = Block(c1, c2, "pad_a", pad=int(payload["pad"]), mask=mask)
            elif kind == "Conv":
                block = Block(c1, c2, "conv", projection=layers[int(payload["layer"])], mask=mask)
            elif kind == "Gather":
                block = Block(c1, c2, "gather", stride=int(payload["stride"]),
                              index=[int(i) for i in payload["index"]], mask=mask)
            else:
                raise CompactedError(f"block {b}: unknown shortcut {kind!r}")
            blocks.append(block)
        ops: List[Op] = []
        for n, node in enumerate(graph["nodes"]):
            kind, payload = _variant(node, f"node {n}")
            if kind == "Layer":
                ops.append(Op("layer", layer=layers[int(payload)]))
            elif kind == "MaxPool2d":
                ops.append(Op("max_pool", kernel=int(payload["kernel"]), stride=int(payload["stride"])))
            elif kind == "GlobalAvgPool":
                ops.append(Op("gap", spec_kind="global_avg_pool"))
            elif kind == "Flatten":
                ops.append(Op("flatten"))
            elif kind == "Dropout":
                ops.append(Op("dropout", p=float(payload["p"])))
            elif kind == "Block":
                ops.append(Op("block", block=blocks[int(payload)]))
            else:
                raise CompactedError(f"node {n}: unknown kind {kind!r}")
        program = Program([int(d) for d in graph["input_shape"]], int(graph["num_classes"]), ops,
                          name=str(graph.get("arch", "model")))
    except CompactedError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise CompactedError(f"the graph JSON is not a relief PruneGraph ({type(e).__name__}: {e})") from e
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
    is refused with a pointer to :func:`relief_torch.load_checkpoint`) or whose tensors do not
    match its graph."""
    try:
        tensors, meta = read_safetensors(path)
    except ReliefTorchError as e:
        raise CompactedError(str(e)) from e
    fmt = meta.get("format")
    if fmt != FORMAT:
        if fmt == "relief-checkpoint/1" or any(k.startswith("mask.") for k in tensors):
            raise CompactedError(f"{os.fspath(path)}: this is a relief checkpoint (masked dense model), not a compacted "
                                 "model; load it into your module with relief_torch.load_checkpoint, or compact it "
                                 "first with `relief export --compact CK --out FILE`")
        raise CompactedError(f"{os.fspath(path)}: not a compacted relief model (metadata `format` is "
                             f"{fmt!r}, expected {FORMAT!r}; made by `relief export --compact`)")
    if meta.get("version") != FORMAT_VERSION:
        raise CompactedError(f"{os.fspath(path)}: compacted format version {meta.get('version')!r}; this reader "
                             f"understands version {FORMAT_VERSION}")
    if "graph" not in meta:
        raise CompactedError(f"{os.fspath(path)}: the metadata has no `graph`")
    try:
        graph = json.loads(meta["graph"])
    except ValueError as e:
        raise CompactedError(f"{os.fspath(path)}: the `graph` metadata is not JSON ({e})") from e
    try:
        tensors = densify(tensors, meta)
    except ReliefTorchError as e:
        raise CompactedError(f"{os.fspath(path)}: {e}") from e
    try:
        program = program_from_graph(graph)
        program.shapes()
        module = build_module(program, tensors, class_name="ReliefCompacted")
    except CompactedError as e:
        raise CompactedError(f"{os.fspath(path)}: {e}") from e
    except ReliefTorchError as e:
        raise CompactedError(f"{os.fspath(path)}: {e}") from e
    module.relief_input_shape = list(program.input_shape)
    module.relief_metadata = {k: v for k, v in meta.items() if k != "graph"}
    return module
