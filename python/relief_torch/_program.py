"""relief's forward program in PyTorch: a small intermediate form (a list of :class:`Op`) and a
builder that turns it, with named tensors, into a plain ``torch.fx.GraphModule``.

The semantics are those of relief's executor (``relief-core``, ``pruning/exec.rs``):

- a prunable layer is ``act(bn(op(x)))``: a linear layer or a square 2-D convolution, an
  optional BatchNorm (eval: running statistics, eps 1e-5) and an optional ReLU;
- max pooling without padding; global average pooling as ``avg_pool2d`` over the whole map
  followed by a flatten; a channel-major flatten; dropout (identity in eval mode);
- a residual block ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`` whose shortcut is
  the identity, option A (``x[:, :, ::2, ::2]`` zero-padded by ``pad`` channels on each side),
  a 1x1 convolution + BatchNorm (option B), or, in compacted models, a channel gather
  (``out[:, j] = x[:, index[j], ::stride, ::stride]``, zeros where ``index[j] < 0``).

Used by :func:`relief_torch.load_compacted` (the compacted graph) and by
:func:`relief_torch.export` (to check that the spec it wrote computes what the module does).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn as nn

from .errors import ReliefTorchError, cut

#: BatchNorm epsilon of relief's executor (PyTorch's default).
BN_EPS = 1e-5
#: BatchNorm momentum of relief's training (PyTorch's default).
BN_MOMENTUM = 0.1
#: BatchNorm tensor suffixes in ``state_dict`` order.
BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass
class Layer:
    """A prunable layer: ``kind`` is ``"conv"`` or ``"linear"``; parameters
    ``<name>.weight`` (and ``<name>.bias``), BatchNorm tensors under ``bn``."""

    kind: str
    name: str
    inputs: int
    outputs: int
    kernel: int = 1
    stride: int = 1
    padding: int = 0
    bias: bool = True
    bn: Optional[str] = None
    relu: bool = False
    stem: bool = False

    def tensor_shapes(self) -> List[Tuple[str, Tuple[int, ...]]]:
        """Every parameter and buffer of the layer (BatchNorm included) with its shape."""
        if self.kind == "conv":
            w = (self.outputs, self.inputs, self.kernel, self.kernel)
        else:
            w = (self.outputs, self.inputs)
        out = [(f"{self.name}.weight", w)]
        if self.bias:
            out.append((f"{self.name}.bias", (self.outputs,)))
        if self.bn is not None:
            for s in BN_SUFFIXES:
                out.append((f"{self.bn}.{s}", () if s == "num_batches_tracked" else (self.outputs,)))
        return out


@dataclass
class Block:
    """A residual BasicBlock. ``shortcut`` is ``"identity"``, ``"pad_a"`` (with ``pad``),
    ``"conv"`` (with ``projection``) or ``"gather"`` (with ``stride`` and ``index``); ``mask``
    names the per-channel shortcut mask of identity and option-A shortcuts."""

    conv1: Layer
    conv2: Layer
    shortcut: str
    pad: int = 0
    projection: Optional[Layer] = None
    stride: int = 1
    index: Optional[List[int]] = None
    mask: Optional[str] = None
    #: Module path of the block (spec `prefix`), when known.
    prefix: Optional[str] = None

    def layers(self) -> List[Layer]:
        return [self.conv1, self.conv2] + ([self.projection] if self.projection is not None else [])


@dataclass
class Op:
    """One step of the forward program: ``kind`` is ``layer``, ``block``, ``max_pool``
    (``kernel``, ``stride``), ``gap`` (``spec_kind``: which spec entry to write), ``flatten``
    or ``dropout`` (``p``)."""

    kind: str
    layer: Optional[Layer] = None
    block: Optional[Block] = None
    kernel: int = 0
    stride: int = 0
    p: float = 0.0
    spec_kind: str = ""


@dataclass
class Program:
    """A whole network: per-sample input shape, class count and the ops in forward order."""

    input_shape: List[int]
    num_classes: int
    ops: List[Op] = field(default_factory=list)
    name: str = "model"

    def layers(self) -> List[Layer]:
        """Every prunable layer, in forward order (block members in block order)."""
        out: List[Layer] = []
        for op in self.ops:
            if op.kind == "layer":
                out.append(op.layer)
            elif op.kind == "block":
                out.extend(op.block.layers())
        return out

    def tensor_shapes(self) -> List[Tuple[str, Tuple[int, ...]]]:
        """Every parameter and buffer name with its shape."""
        return [t for layer in self.layers() for t in layer.tensor_shapes()]

    def shapes(self) -> List[List[int]]:
        """The per-sample shape entering each op, plus the output shape at the end; raises
        :class:`ReliefTorchError` where the program is inconsistent."""
        shape = list(self.input_shape)
        out = []

        def conv_out(s: int, k: int, st: int, p: int) -> int:
            return (s + 2 * p - k) // st + 1

        def run_layer(layer: Layer, shape: List[int]) -> List[int]:
            if layer.kernel < 1 or layer.stride < 1 or layer.padding < 0:
                raise ReliefTorchError(f"layer `{cut(layer.name)}`: kernel {layer.kernel}, stride {layer.stride}, "
                                       f"padding {layer.padding}: expected kernel and stride >= 1, padding >= 0")
            if layer.kind == "linear":
                if len(shape) != 1 or shape[0] != layer.inputs:
                    raise ReliefTorchError(f"layer `{cut(layer.name)}` expects {layer.inputs} features, gets {shape}")
                return [layer.outputs]
            if len(shape) != 3 or shape[0] != layer.inputs:
                raise ReliefTorchError(f"layer `{cut(layer.name)}` expects {layer.inputs} channels, gets {shape}")
            h = conv_out(shape[1], layer.kernel, layer.stride, layer.padding)
            w = conv_out(shape[2], layer.kernel, layer.stride, layer.padding)
            if h < 1 or w < 1:
                raise ReliefTorchError(f"layer `{cut(layer.name)}`: kernel {layer.kernel} does not fit {shape}")
            return [layer.outputs, h, w]

        for op in self.ops:
            out.append(list(shape))
            if op.kind == "layer":
                shape = run_layer(op.layer, shape)
            elif op.kind == "max_pool":
                if len(shape) != 3:
                    raise ReliefTorchError(f"max pooling on a non-image tensor of shape {shape}")
                if op.kernel < 1 or op.stride < 1 or op.kernel > min(shape[1], shape[2]):
                    raise ReliefTorchError(f"max pooling with kernel {op.kernel} and stride {op.stride} does not fit "
                                           f"{shape}")
                shape = [shape[0], (shape[1] - op.kernel) // op.stride + 1, (shape[2] - op.kernel) // op.stride + 1]
            elif op.kind == "gap":
                if len(shape) != 3:
                    raise ReliefTorchError(f"global average pooling on a non-image tensor of shape {shape}")
                shape = [shape[0]]
            elif op.kind == "flatten":
                n = 1
                for d in shape:
                    n *= d
                shape = [n]
            elif op.kind == "dropout":
                pass
            elif op.kind == "block":
                b = op.block
                x = list(shape)
                shape = run_layer(b.conv2, run_layer(b.conv1, x))
                if b.shortcut == "identity":
                    short = x
                elif b.shortcut == "pad_a":
                    short = [x[0] + 2 * b.pad, (x[1] + 1) // 2, (x[2] + 1) // 2]
                elif b.shortcut == "conv":
                    short = run_layer(b.projection, x)
                elif b.shortcut == "gather":
                    if b.stride < 1 or any(i >= x[0] for i in b.index):
                        raise ReliefTorchError(f"block of `{cut(b.conv1.name)}`: the gather reads beyond {x[0]} "
                                               "channels")
                    short = [len(b.index), -(-x[1] // b.stride), -(-x[2] // b.stride)]
                else:
                    raise ReliefTorchError(f"unknown shortcut {b.shortcut!r}")
                if short != shape:
                    raise ReliefTorchError(
                        f"block of `{cut(b.conv1.name)}`: the shortcut gives {short}, the branch {shape}"
                    )
            else:
                raise ReliefTorchError(f"unknown op {op.kind!r}")
        out.append(shape)
        if shape != [self.num_classes]:
            raise ReliefTorchError(f"the program ends with shape {shape}, expected [{self.num_classes}]")
        return out


class ChannelGather(nn.Module):
    """A compacted identity / option-A shortcut: ``out[:, j] = x[:, index[j], ::stride,
    ::stride]``, zeros where ``index[j] < 0`` (a channel the shortcut no longer carries)."""

    def __init__(self, stride: int, index: Sequence[int]):
        super().__init__()
        self.stride = int(stride)
        self.all_kept = all(i >= 0 for i in index)
        self.register_buffer("index", torch.tensor([max(int(i), 0) for i in index], dtype=torch.long), persistent=False)
        keep = torch.tensor([1.0 if i >= 0 else 0.0 for i in index], dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("keep", keep, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        y = torch.index_select(x, 1, self.index)
        if not self.all_kept:
            y = y * self.keep
        return y

    def extra_repr(self) -> str:
        return f"stride={self.stride}, channels={self.index.numel()}"


def _put(root: nn.Module, path: str, module: nn.Module) -> None:
    parts = path.split(".")
    owner = root
    for i, part in enumerate(parts[:-1]):
        child = owner._modules.get(part)
        if child is None:
            if hasattr(owner, part):
                raise ReliefTorchError(f"module path `{cut(path)}`: `{cut('.'.join(parts[: i + 1]))}` is not a "
                                       "module")
            child = nn.Module()
            owner.add_module(part, child)
        owner = child
    if parts[-1] in owner._modules or hasattr(owner, parts[-1]):
        raise ReliefTorchError(f"module path `{cut(path)}` is used twice")
    owner.add_module(parts[-1], module)


def _free_path(root: nn.Module, wanted: Optional[str], fallback: str) -> str:
    """``wanted`` when :func:`_put` can place a module there, else a fresh top-level name
    ``fallback`` (``fallback_1``, ...)."""
    if wanted:
        parts = wanted.split(".")
        owner: Optional[nn.Module] = root
        for part in parts[:-1]:
            child = owner._modules.get(part)
            if child is None:
                if hasattr(owner, part):
                    owner = None  # a parameter or attribute, not a module
                break
            owner = child
        else:
            if hasattr(owner, parts[-1]):
                owner = None
        if owner is not None:
            return wanted
    name, i = fallback, 0
    while hasattr(root, name):
        i += 1
        name = f"{fallback}_{i}"
    return name


def build_module(
    program: Program,
    tensors: Mapping[str, torch.Tensor],
    class_name: str = "ReliefModel",
    shortcut_masks: Optional[Mapping[str, torch.Tensor]] = None,
) -> fx.GraphModule:
    """Builds ``program`` as an ``fx.GraphModule`` in eval mode whose ``state_dict`` holds
    exactly the program's tensors under their names (``num_batches_tracked`` defaults to 0
    when absent). ``shortcut_masks`` (name -> ``(planes,)``) multiplies identity and option-A
    shortcuts; masks that are all ones are left out."""
    shapes = program.shapes()
    expected = dict(program.tensor_shapes())
    problems = []
    for name, shape in expected.items():
        if name not in tensors:
            if not name.endswith(".num_batches_tracked"):
                problems.append(f"missing `{cut(name)}` {list(shape)}")
        elif tuple(tensors[name].shape) != shape:
            problems.append(f"`{cut(name)}` has shape {list(tensors[name].shape)}, expected {list(shape)}")
    for name in tensors:
        if name not in expected:
            problems.append(f"unexpected `{cut(name)}` {list(tensors[name].shape)}")
    if problems:
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ReliefTorchError("the tensors do not match the graph: " + "; ".join(problems[:20]) + more)

    root = nn.Module()

    def add_layer(layer: Layer) -> None:
        if layer.kind == "conv":
            m: nn.Module = nn.Conv2d(
                layer.inputs, layer.outputs, layer.kernel, layer.stride, layer.padding, bias=layer.bias
            )
        else:
            m = nn.Linear(layer.inputs, layer.outputs, bias=layer.bias)
        _put(root, layer.name, m)
        if layer.bn is not None:
            _put(root, layer.bn, nn.BatchNorm2d(layer.outputs, eps=BN_EPS, momentum=BN_MOMENTUM))

    for layer in program.layers():
        add_layer(layer)
    state = root.state_dict()
    with torch.no_grad():
        for name, t in tensors.items():
            state[name].copy_(t)

    g = fx.Graph()
    h = g.placeholder("x")
    if len(program.input_shape) == 1:
        # relief feeds images to a vector model flattened (channel-major).
        h = g.call_function(torch.flatten, (h, 1))

    def run_layer(layer: Layer, x: fx.Node, relu: bool) -> fx.Node:
        y = g.call_module(layer.name, (x,))
        if layer.bn is not None:
            y = g.call_module(layer.bn, (y,))
        if relu:
            y = g.call_function(torch.relu, (y,))
        return y

    for i, op in enumerate(program.ops):
        if op.kind == "layer":
            h = run_layer(op.layer, h, op.layer.relu)
        elif op.kind == "max_pool":
            h = g.call_function(torch.max_pool2d, (h, [op.kernel, op.kernel], [op.stride, op.stride]))
        elif op.kind == "gap":
            _, hh, ww = shapes[i]
            h = g.call_function(torch.nn.functional.avg_pool2d, (h, [hh, ww], [hh, ww]))
            h = g.call_function(torch.flatten, (h, 1))
        elif op.kind == "flatten":
            h = g.call_function(torch.flatten, (h, 1))
        elif op.kind == "dropout":
            path = _free_path(root, None, f"relief_dropout{i}")
            _put(root, path, nn.Dropout(op.p))
            h = g.call_module(path, (h,))
        elif op.kind == "block":
            b = op.block
            x = h
            branch = run_layer(b.conv2, run_layer(b.conv1, x, True), False)
            if b.shortcut == "identity":
                r = x
            elif b.shortcut == "pad_a":
                r = g.call_function(
                    operator.getitem,
                    (x, (slice(None), slice(None), slice(None, None, 2), slice(None, None, 2))),
                )
                r = g.call_function(torch.constant_pad_nd, (r, [0, 0, 0, 0, b.pad, b.pad]))
            elif b.shortcut == "conv":
                r = run_layer(b.projection, x, False)
            else:
                path = _free_path(root, b.mask, f"relief_gather{i}")
                _put(root, path, ChannelGather(b.stride, b.index))
                r = g.call_module(path, (x,))
            m = (shortcut_masks or {}).get(b.mask) if b.mask else None
            if m is not None and not bool((m != 0).all()):
                path = _free_path(root, None, f"relief_shortcut_mask{i}")
                holder = nn.Module()
                holder.register_buffer("mask", m.detach().to(torch.float32).reshape(1, -1, 1, 1).clone(), persistent=False)
                _put(root, path, holder)
                r = g.call_function(torch.mul, (r, g.get_attr(f"{path}.mask")))
            h = g.call_function(torch.relu, (g.call_function(torch.add, (branch, r)),))
        else:
            raise ReliefTorchError(f"unknown op {op.kind!r}")
    g.output(h)
    gm = fx.GraphModule(root, g, class_name=class_name)
    # fx registers copied tensors as persistent buffers; keep the shortcut-mask holders out of
    # the state_dict.
    for name, mod in gm.named_modules():
        if name.startswith("relief_shortcut_mask") and "mask" in mod._buffers:
            t = mod._buffers.pop("mask")
            mod.register_buffer("mask", t, persistent=False)
    gm.eval()
    return gm

