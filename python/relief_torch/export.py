"""PyTorch module -> relief model spec (``model.toml``) + weights (``weights.safetensors``).

The module is traced with ``torch.fx`` (in eval mode, on a batch of the given input shape) and
its graph is read as relief's forward program: a chain of prunable layers (convolution or
linear, optionally BatchNorm and ReLU), pooling, flatten and dropout, with residual additions
recognised as relief's ``basic_block``. Parameter names are the module's own ``state_dict``
names, so the weights (and later relief's checkpoints) load back 1:1. Anything the spec format
cannot express raises :class:`~relief_torch.errors.ExportError` naming the fx node, its op and
target, and the source line; nothing is approximated. Before writing, the spec is rebuilt in
PyTorch and run against the module on random inputs: the files are only written when both
give the same logits.
"""

from __future__ import annotations

import dataclasses
import json
import math
import operator
import os
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from ._program import BN_EPS, BN_MOMENTUM, Block, Layer, Op, Program, build_module
from ._safetensors import as_path, commit, encode_safetensors, write_temp
from .checkpoint import RESERVED_PREFIXES, reserved_reason
from .errors import ExportError, ReliefTorchError, cut, names, oneline, shown

_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")
_TORCH_DIR = os.path.dirname(torch.__file__)

# Parameter lists of the functional forms we read (the fx node keeps args and kwargs as
# written; these bind them by position).
_SIGNATURES: Dict[str, List[Tuple[str, Any]]] = {
    "max_pool2d": [("input", None), ("kernel_size", None), ("stride", None), ("padding", 0), ("dilation", 1),
                   ("ceil_mode", False), ("return_indices", False)],
    "avg_pool2d": [("input", None), ("kernel_size", None), ("stride", None), ("padding", 0), ("ceil_mode", False),
                   ("count_include_pad", True), ("divisor_override", None)],
    "adaptive_avg_pool2d": [("input", None), ("output_size", None)],
    "dropout": [("input", None), ("p", 0.5), ("training", True), ("inplace", False)],
    "pad": [("input", None), ("pad", None), ("mode", "constant"), ("value", None)],
    "relu": [("input", None), ("inplace", False)],
    "flatten": [("input", None), ("start_dim", 0), ("end_dim", -1)],
    "mean": [("input", None), ("dim", None), ("keepdim", False), ("dtype", None)],
    "add": [("input", None), ("other", None), ("alpha", 1)],
}


def _functions() -> Dict[Any, str]:
    table = [
        ("relu", [F.relu, torch.relu, getattr(torch, "relu_", None), getattr(F, "relu_", None)]),
        ("max_pool", [F.max_pool2d, torch.max_pool2d]),
        ("avg_pool", [F.avg_pool2d, getattr(torch, "avg_pool2d", None)]),
        ("adaptive_avg_pool", [F.adaptive_avg_pool2d, getattr(torch, "adaptive_avg_pool2d", None)]),
        ("flatten", [torch.flatten]),
        ("reshape", [torch.reshape]),
        ("dropout", [F.dropout, getattr(torch, "dropout", None)]),
        ("add", [operator.add, operator.iadd, torch.add]),
        ("getitem", [operator.getitem]),
        ("pad", [F.pad, torch.constant_pad_nd]),
        ("mean", [torch.mean]),
    ]
    return {f: kind for kind, fs in table for f in fs if f is not None}


_FUNCTIONS = _functions()
_METHODS = {"relu": "relu", "relu_": "relu", "flatten": "flatten", "view": "reshape", "reshape": "reshape",
            "add": "add", "add_": "add", "__add__": "add", "__iadd__": "add", "mean": "mean",
            "contiguous": "identity"}

_WHY = "see docs/models.md, 'Why other layers are not supported'"


@dataclasses.dataclass
class ExportResult:
    """What :func:`export` wrote."""

    #: The output directory.
    out_dir: str
    #: ``<out_dir>/model.toml``: the relief model spec.
    spec_path: str
    #: ``<out_dir>/weights.safetensors``: the module's tensors by ``state_dict`` name.
    weights_path: str
    #: The spec's TOML text.
    spec_toml: str
    #: The tensor names written, in ``state_dict`` order.
    tensor_names: List[str]
    #: The largest logit difference between the module and the spec rebuilt in PyTorch.
    max_logit_difference: float


class _Shape:
    """What the recorder keeps of a tensor value: its shape and dtype."""

    __slots__ = ("shape", "dtype")

    def __init__(self, t: torch.Tensor):
        self.shape = tuple(t.shape)
        self.dtype = t.dtype


class _Recorder(fx.Interpreter):
    """Runs the traced graph and keeps every node's value (tensors as shapes only)."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm)
        self.values: Dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        v = super().run_node(n)
        self.values[n] = _Shape(v) if isinstance(v, torch.Tensor) else v
        return v


def _location(node: fx.Node) -> str:
    """The innermost user source line of a node (outside torch), or its module."""
    trace = node.stack_trace or ""
    frames = re.findall(r'File "([^"]+)", line (\d+), in (\S+)\n(?:    (.*))?', trace)
    user = [f for f in frames if not os.path.abspath(f[0]).startswith(_TORCH_DIR)]
    if user:
        file, line, fn, code = user[-1]
        return f"{file}:{line} in {fn}: {code.strip()}" if code else f"{file}:{line} in {fn}"
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, cls = list(stack.values())[-1]
        return f"inside module `{path}` ({getattr(cls, '__name__', cls)})"
    return "(no source location recorded)"


class _Tracer(fx.Tracer):
    def __init__(self) -> None:
        super().__init__()
        self.record_stack_traces = True


class _Exporter:
    """Reads a traced module as relief's forward program."""

    def __init__(self, module: nn.Module, input_shape: Sequence[int], stem: bool):
        self.module = module
        self.input_shape = [int(d) for d in input_shape]
        self.stem = stem
        self.modules = dict(module.named_modules())
        tracer = _Tracer()
        try:
            graph = tracer.trace(module)
        except Exception as e:
            raise ExportError(
                f"torch.fx cannot trace {type(module).__name__}: {type(e).__name__}: {oneline(e, 500)}. "
                "relief_torch reads "
                "the module's forward through torch.fx symbolic tracing (no data-dependent control flow)"
            ) from e
        self.gm = fx.GraphModule(module, graph)
        self.gm.graph.eliminate_dead_code()
        self.gm.recompile()
        self.graph = self.gm.graph
        rec = _Recorder(self.gm)
        try:
            seeded = torch.Generator().manual_seed(0)
            example = torch.randn(2, *self.input_shape, generator=seeded).to(_device(module))
            with torch.no_grad():
                rec.run(example)
        except Exception as e:
            raise ExportError(
                f"{type(module).__name__} does not run on an input of shape [N, {', '.join(map(str, self.input_shape))}]: "
                f"{type(e).__name__}: {cut(str(e).splitlines()[0], 500) if str(e) else ''}"
            ) from e
        self.values = rec.values
        self.used_modules: Dict[str, fx.Node] = {}
        self.ops: List[Op] = []
        # The last prunable layer while it can still take a BatchNorm / ReLU.
        self.open: Optional[Layer] = None
        self.open_stage = ""
        self.prev = "the input"
        # Per-sample spec shape; the torch tensor may carry trailing 1 x 1 after global pooling.
        self.shape = list(self.input_shape)
        self.squeeze_pending: Optional[fx.Node] = None
        # Nodes read into the program (what is left over is an error).
        self.seen: set = set()

    # -- helpers -------------------------------------------------------------------------
    def fail(self, node: fx.Node, message: str) -> ExportError:
        return ExportError(f"{self.describe(node)}: {message}")

    def describe(self, node: fx.Node) -> str:
        if node.op == "call_module":
            m = self.modules.get(node.target)
            target = f"{cut(node.target)} ({type(m).__module__}.{type(m).__qualname__})"
        elif node.op == "call_function":
            target = _function_name(node.target)
        elif node.op == "call_method":
            target = f"Tensor.{cut(node.target)}"
        else:
            target = str(node.target)
        return f"fx node `{cut(node.name)}` (op {node.op}, target {target}) at {cut(_location(node), 500)}"

    def is_tensor(self, n: Any) -> bool:
        return isinstance(n, fx.Node) and isinstance(self.values.get(n), _Shape)

    def is_meta(self, n: fx.Node) -> bool:
        """Whether a node only asks about a tensor (its size, shape, dtype...), computing no tensor."""

        def meta(v: Any) -> bool:
            if isinstance(v, (list, tuple)):
                return all(meta(x) for x in v)
            return isinstance(v, (int, float, bool, str, torch.dtype, torch.device, torch.Size)) or v is None

        return n in self.values and not isinstance(self.values[n], _Shape) and meta(self.values[n])

    def tensor_users(self, n: fx.Node) -> List[fx.Node]:
        """The users of a node that compute with it (not the ones that only read its size)."""
        return [u for u in n.users if u.op == "output" or not self.is_meta(u)]

    def tshape(self, n: fx.Node) -> Tuple[int, ...]:
        return self.values[n].shape

    def value(self, a: Any) -> Any:
        if isinstance(a, fx.Node):
            v = self.values.get(a)
            return v.shape if isinstance(v, _Shape) else v
        if isinstance(a, (list, tuple)):
            return type(a)(self.value(x) for x in a)
        return a

    def bind(self, node: fx.Node, sig: str) -> Dict[str, Any]:
        params = _SIGNATURES[sig]
        out = {name: default for name, default in params}
        for (name, _), a in zip(params, node.args):
            out[name] = a
        for k, v in node.kwargs.items():
            out[k] = v
        return out

    def kind(self, node: fx.Node) -> str:
        if node.op == "call_module":
            m = self.modules[node.target]
            for cls, k in ((nn.Conv2d, "conv"), (nn.Linear, "linear"), (nn.BatchNorm2d, "bn"),
                           (nn.ReLU, "relu"), (nn.MaxPool2d, "max_pool"), (nn.AvgPool2d, "avg_pool"),
                           (nn.AdaptiveAvgPool2d, "adaptive_avg_pool"), (nn.Flatten, "flatten"),
                           (nn.Identity, "identity")):
                if type(m) is cls:
                    return k
            if type(m) is nn.Dropout:
                return "dropout"
            return "unsupported"
        if node.op == "call_function":
            try:
                return _FUNCTIONS.get(node.target, "unsupported")
            except TypeError:  # unhashable target
                return "unsupported"
        if node.op == "call_method":
            return _METHODS.get(node.target, "unsupported")
        return node.op

    def tensor_inputs(self, node: fx.Node) -> List[fx.Node]:
        found: List[fx.Node] = []

        def visit(a: Any) -> None:
            if isinstance(a, fx.Node):
                if self.is_tensor(a) or a.op == "get_attr":
                    found.append(a)
            elif isinstance(a, (list, tuple)):
                for x in a:
                    visit(x)
            elif isinstance(a, dict):
                for x in a.values():
                    visit(x)

        visit(node.args)
        visit(node.kwargs)
        return found

    def unsupported(self, node: fx.Node) -> ExportError:
        if node.op == "call_module":
            m = self.modules[node.target]
            hints = {
                nn.BatchNorm1d: "BatchNorm after a linear layer: the engine has BatchNorm after convolutions only",
                nn.Dropout2d: "channel dropout: relief's dropout drops single entries (nn.Dropout)",
                nn.LSTM: "recurrent layers: no pruning rule in the engine",
                nn.GRU: "recurrent layers: no pruning rule in the engine",
                nn.RNN: "recurrent layers: no pruning rule in the engine",
                nn.Conv1d: "1-D convolutions: no pruning rule in the engine",
                nn.Conv3d: "3-D convolutions: no pruning rule in the engine",
                nn.ConvTranspose2d: "transposed convolutions: no pruning rule in the engine",
                nn.LayerNorm: "layer norm: no pruning rule in the engine",
                nn.GroupNorm: "group norm: no pruning rule in the engine",
                nn.Embedding: "embeddings: no pruning rule in the engine",
                nn.MultiheadAttention: "attention: no pruning rule in the engine",
            }
            why = next((h for cls, h in hints.items() if isinstance(m, cls)), None)
            if why is None and isinstance(m, (nn.Softmax, nn.LogSoftmax)):
                why = "a relief model ends with the logits (its loss applies the softmax)"
            if why is None and isinstance(m, (nn.Sigmoid, nn.Tanh, nn.GELU, nn.LeakyReLU, nn.ELU, nn.SiLU,
                                              nn.ReLU6, nn.PReLU, nn.Hardswish)):
                why = ("activations other than ReLU: the engine's statistics, dead-unit rule and compaction "
                       "assume ReLU (or none)")
            return self.fail(node, f"{type(m).__name__} is not supported by relief's model spec"
                             + (f" ({why}; {_WHY})" if why else f"; supported: Conv2d, Linear, BatchNorm2d, ReLU, "
                                f"MaxPool2d, global AvgPool2d / AdaptiveAvgPool2d(1), Flatten, Dropout, BasicBlocks"))
        softmax = ((node.op == "call_function" and node.target in (F.softmax, F.log_softmax, torch.softmax,
                                                                   torch.log_softmax))
                   or (node.op == "call_method" and node.target in ("softmax", "log_softmax")))
        if softmax:
            return self.fail(node, "a relief model ends with the logits (its loss applies the softmax); return the "
                             "last layer's output instead")
        if node.op == "call_function" and node.target is torch.cat:
            return self.fail(node, "torch.cat (concatenating branches) is not supported: relief's only multi-branch "
                             f"structure is the residual basic_block ({_WHY})")
        return self.fail(node, "this operation is not supported by relief's model spec (supported: Conv2d, Linear, "
                         "BatchNorm2d, ReLU, MaxPool2d, global average pooling, flatten/view(N, -1), Dropout, "
                         f"residual BasicBlocks; {_WHY})")

    def close(self, what: str) -> None:
        self.open = None
        self.open_stage = ""
        self.prev = what

    def claim(self, node: fx.Node) -> None:
        if node.target in self.used_modules:
            first = self.used_modules[node.target]
            raise self.fail(node, f"module `{cut(node.target)}` is called a second time (first by fx node "
                            f"`{cut(first.name)}`): a relief spec has one layer per module (no weight sharing)")
        self.used_modules[node.target] = node

    def check_name(self, node: fx.Node, name: str) -> None:
        if not _NAME.match(name):
            raise self.fail(node, f"module path `{cut(name)}` cannot be a relief name: relief names are dot-separated "
                            "parts of letters, digits and `_` (like PyTorch's `features.0`), so that a state_dict "
                            "loads 1:1; rename the module (e.g. the nn.ModuleDict key)")

    # -- layers ----------------------------------------------------------------------------
    def conv_layer(self, node: fx.Node) -> Layer:
        m: nn.Conv2d = self.modules[node.target]
        self.check_name(node, node.target)
        k = m.kernel_size
        if k[0] != k[1]:
            raise self.fail(node, f"kernel {tuple(k)} is not square: relief supports square kernels only")
        if m.stride[0] != m.stride[1]:
            raise self.fail(node, f"stride {tuple(m.stride)} is not square: relief supports square strides only")
        if tuple(m.dilation) != (1, 1):
            raise self.fail(node, f"dilation {tuple(m.dilation)} is not supported (relief's convolutions are undilated)")
        if m.groups != 1:
            raise self.fail(node, f"groups = {m.groups} is not supported (relief's convolutions are dense)")
        if m.padding_mode != "zeros":
            raise self.fail(node, f"padding_mode = {m.padding_mode!r} is not supported (relief pads with zeros)")
        pad = m.padding
        if isinstance(pad, str):
            if pad == "valid":
                pad = (0, 0)
            elif pad == "same" and m.stride[0] == 1 and k[0] % 2 == 1:
                pad = (k[0] // 2, k[0] // 2)
            else:
                raise self.fail(node, f"padding = {pad!r} with kernel {k[0]} and stride {m.stride[0]} cannot be "
                                "written as one symmetric padding")
        if pad[0] != pad[1]:
            raise self.fail(node, f"padding {tuple(pad)} is not square: relief supports square padding only")
        return Layer("conv", node.target, m.in_channels, m.out_channels, k[0], m.stride[0], pad[0],
                     m.bias is not None)

    def check_bn(self, node: fx.Node) -> str:
        if self.kind(node) != "bn":
            m = self.modules.get(node.target) if node.op == "call_module" else None
            if isinstance(m, nn.BatchNorm1d):
                raise self.unsupported(node)
            raise self.fail(node, "expected a BatchNorm2d here")
        m: nn.BatchNorm2d = self.modules[node.target]
        self.check_name(node, node.target)
        self.claim(node)
        if abs(m.eps - BN_EPS) > 1e-12:
            raise self.fail(node, f"BatchNorm eps = {m.eps}: relief's BatchNorm uses eps = {BN_EPS}")
        if not m.affine:
            raise self.fail(node, "BatchNorm with affine=False: relief's BatchNorm has a weight and a bias")
        if not m.track_running_stats or m.running_mean is None:
            raise self.fail(node, "BatchNorm without running statistics (track_running_stats=False) is not supported")
        if m.momentum is None or abs(m.momentum - BN_MOMENTUM) > 1e-12:
            warnings.warn(f"{node.target}: BatchNorm momentum {m.momentum}; relief's retraining uses {BN_MOMENTUM} "
                          "(the exported model computes the same logits)", stacklevel=3)
        return node.target

    def image(self, node: fx.Node, what: str) -> None:
        if len(self.shape) != 3:
            raise self.fail(node, f"{what} expects a C x H x W input, gets per-sample shape {self.shape}")

    # -- the walk --------------------------------------------------------------------------
    def run(self) -> List[Op]:
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise ExportError(
                f"{type(self.module).__name__}.forward takes {len(placeholders)} inputs "
                f"({', '.join(p.name for p in placeholders)}); relief models take one input tensor")
        cur = placeholders[0]
        while True:
            users = self.tensor_users(cur)
            if not users:
                raise self.fail(cur, "its value is not used by the output")
            if len(users) == 1:
                u = users[0]
                if u.op == "output":
                    if u.args[0] is not cur:
                        raise self.fail(u, "the forward must return the logits tensor alone (not a tuple, list "
                                        "or dict)")
                    break
                cur = self.step(u, cur)
            else:
                cur = self.block(cur, users)
        if self.squeeze_pending is not None:
            raise self.fail(self.squeeze_pending, "the output is N x C x 1 x 1: flatten it (relief's model ends "
                            "with N x classes)")
        leftover = [n for n in self.graph.nodes if n.op in ("call_module", "call_function", "call_method")
                    and self.is_tensor(n) and n not in self.seen]
        if leftover:
            raise self.fail(leftover[0], "this tensor is computed but not part of the chain from the input to the "
                            "output that relief can express")
        return self.ops

    def step(self, node: fx.Node, cur: fx.Node) -> fx.Node:
        self.seen.add(node)
        ins = self.tensor_inputs(node)
        kind = self.kind(node)
        if kind == "add":
            raise self.fail(node, "an addition that is not a residual basic_block: relief's residual block is "
                            "relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), and the input of the block must "
                            "feed both paths")
        if kind == "unsupported" or kind not in (
                "conv", "linear", "bn", "relu", "max_pool", "avg_pool", "adaptive_avg_pool", "flatten", "reshape",
                "dropout", "identity", "mean"):
            raise self.unsupported(node)
        if any(i is not cur for i in ins):
            other = next(i for i in ins if i is not cur)
            raise self.fail(node, f"it reads a second tensor (`{other.name}`) besides the chain's value; relief "
                            "layers have one input")
        out = self.tshape(node)
        if self.squeeze_pending is not None and kind not in ("flatten", "reshape", "dropout", "identity"):
            raise self.fail(node, "after global pooling to N x C x 1 x 1 a flatten (or view(N, -1)) must follow: "
                            "relief's global_avg_pool / adaptive_avg_pool already gives N x C")
        if kind == "conv":
            self.image(node, "a convolution")
            self.claim(node)
            layer = self.conv_layer(node)
            if self.stem and not self.ops:
                layer.stem = True
            self.ops.append(Op("layer", layer=layer))
            self.open, self.open_stage = layer, "op"
            self.prev = "conv2d"
            self.shape = list(out[1:])
        elif kind == "linear":
            m: nn.Linear = self.modules[node.target]
            self.check_name(node, node.target)
            if len(self.shape) != 1 or len(out) != 2:
                raise self.fail(node, f"a linear layer on a per-sample shape {self.shape}: relief applies linear "
                                "layers to vectors; flatten first (x.flatten(1) or x.view(x.size(0), -1))")
            self.claim(node)
            layer = Layer("linear", node.target, m.in_features, m.out_features, bias=m.bias is not None)
            self.ops.append(Op("layer", layer=layer))
            self.open, self.open_stage = layer, "op"
            self.prev = "linear"
            self.shape = [m.out_features]
        elif kind == "bn":
            name = self.check_bn(node)
            if self.open is None or self.open_stage != "op" or self.open.kind != "conv":
                why = ("a linear layer: the engine has BatchNorm after convolutions only"
                       if self.open is not None and self.open.kind == "linear" and self.open_stage == "op"
                       else self.prev)
                raise self.fail(node, f"batch_norm must directly follow a conv2d (conv2d, batch_norm, relu); here it "
                                f"follows {why}")
            self.open.bn = name
            self.open_stage = "bn"
            self.prev = "batch_norm"
        elif kind == "relu":
            if self.open is None or self.open_stage == "relu":
                raise self.fail(node, f"relu must directly follow a conv2d, linear or batch_norm; here it follows "
                                f"{self.prev}" + (" (a basic_block already ends with its ReLU)"
                                                  if self.prev == "basic_block" else ""))
            self.open.relu = True
            self.open_stage = "relu"
            self.prev = "relu"
        elif kind == "max_pool":
            self.image(node, "max pooling")
            if node.op == "call_module":
                m = self.modules[node.target]
                a = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation,
                         ceil_mode=m.ceil_mode, return_indices=m.return_indices)
            else:
                a = {k: self.value(v) for k, v in self.bind(node, "max_pool2d").items() if k != "input"}
            kernel = _square(a["kernel_size"])
            stride = _square(a["stride"]) if a["stride"] not in (None, [], ()) else kernel
            if kernel is None or stride is None:
                raise self.fail(node, f"kernel {a['kernel_size']} / stride {a['stride']}: relief supports square "
                                "pooling windows only")
            if _square(a["padding"]) != 0 or _square(a["dilation"]) != 1 or a["return_indices"]:
                raise self.fail(node, "max pooling with padding, dilation or return_indices is not supported "
                                "(relief: no padding)")
            if a["ceil_mode"] and tuple(out[2:]) != ((self.shape[1] - kernel) // stride + 1,
                                                   (self.shape[2] - kernel) // stride + 1):
                raise self.fail(node, "ceil_mode=True changes the output size here; relief pools with floor")
            self.ops.append(Op("max_pool", kernel=kernel, stride=stride))
            self.close("max_pool")
            self.shape = list(out[1:])
        elif kind in ("avg_pool", "adaptive_avg_pool", "mean"):
            self.image(node, "global average pooling")
            h, w = self.shape[1], self.shape[2]
            spec_kind = "global_avg_pool"
            if kind == "avg_pool":
                if node.op == "call_module":
                    m = self.modules[node.target]
                    a = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                             divisor_override=m.divisor_override)
                else:
                    a = {k: self.value(v) for k, v in self.bind(node, "avg_pool2d").items() if k != "input"}
                ks = a["kernel_size"]
                ks = (ks, ks) if isinstance(ks, int) else tuple(ks)
                if ks != (h, w) or _square(a["padding"]) != 0 or a.get("divisor_override") is not None:
                    raise self.fail(node, f"average pooling with a {ks} window over a {h} x {w} map: relief supports "
                                    "only global average pooling (the window covers the whole map; e.g. "
                                    f"F.avg_pool2d(x, x.size(3)) or nn.AdaptiveAvgPool2d(1)) ({_WHY})")
            elif kind == "adaptive_avg_pool":
                spec_kind = "adaptive_avg_pool"
                size = (self.modules[node.target].output_size if node.op == "call_module"
                        else self.value(self.bind(node, "adaptive_avg_pool2d")["output_size"]))
                size = (size, size) if isinstance(size, int) else tuple(size)
                if size != (1, 1):
                    raise self.fail(node, f"adaptive average pooling to {size}: relief supports output_size = 1 only "
                                    f"({_WHY})")
            else:
                a = self.bind(node, "mean")
                dims = self.value(a["dim"])
                dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
                if sorted(d % 4 for d in dims) != [2, 3] or a["dtype"] is not None:
                    raise self.fail(node, f"mean over dims {dims}: only the spatial mean over (2, 3) (global average "
                                    "pooling) is supported")
            if len(out) == 4 and tuple(out[2:]) == (1, 1):
                self.squeeze_pending = node
            elif len(out) != 2:
                raise self.fail(node, f"global average pooling gives shape {list(out)}, expected N x C (x 1 x 1)")
            self.ops.append(Op("gap", spec_kind=spec_kind))
            self.close(spec_kind)
            self.shape = [self.shape[0]]
        elif kind in ("flatten", "reshape"):
            n_in = self.tshape(cur)
            total = math.prod(n_in[1:])
            if tuple(out) != (n_in[0], total):
                raise self.fail(node, f"reshapes {list(n_in)} to {list(out)}: relief supports only flattening to "
                                "N x features (x.flatten(1), nn.Flatten(), x.view(x.size(0), -1))")
            if kind == "reshape":
                dims = list(node.args[1:])
                if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
                    dims = list(dims[0])
                if "shape" in node.kwargs:
                    dims = list(node.kwargs["shape"])
                if dims and isinstance(dims[0], int) and dims[0] != -1:
                    raise self.fail(node, f"the reshape hard-codes the batch size {dims[0]}; use x.size(0) or -1")
            if self.squeeze_pending is not None:
                self.squeeze_pending = None
            elif len(self.shape) == 1:
                pass
            else:
                self.ops.append(Op("flatten"))
                self.shape = [total]
                self.close("flatten")
        elif kind == "dropout":
            if node.op == "call_module":
                p = self.modules[node.target].p
            else:
                a = self.bind(node, "dropout")
                if self.value(a["training"]):
                    raise self.fail(node, "F.dropout with training=True is active in eval mode; relief's dropout is "
                                    "the identity in eval mode (pass training=self.training)")
                p = float(self.value(a["p"]))
            if not 0.0 <= p < 1.0:
                raise self.fail(node, f"dropout p = {p}: relief needs 0 <= p < 1")
            self.ops.append(Op("dropout", p=float(p)))
            self.close("dropout")
        elif kind == "identity":
            pass
        return node

    # -- residual blocks ---------------------------------------------------------------------
    def follow(self, start: fx.Node, x: fx.Node) -> Tuple[List[fx.Node], fx.Node]:
        seq: List[fx.Node] = []
        n = start
        while True:
            if n.op == "output":
                raise self.fail(x, "its value feeds several paths that do not meet in a residual addition")
            k = self.kind(n)
            if k == "add" and len(self.tensor_inputs(n)) == 2:
                return seq, n
            if k == "unsupported":
                raise self.unsupported(n)
            seq.append(n)
            users = self.tensor_users(n)
            if len(users) != 1:
                raise self.fail(n, f"inside a residual branch its value feeds {len(users)} nodes; relief's "
                                "basic_block branches are chains")
            n = users[0]

    def block(self, x: fx.Node, users: List[fx.Node]) -> fx.Node:
        if self.squeeze_pending is not None:
            raise self.fail(x, "residual block after global pooling")
        pattern = ("relief's basic_block is relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with the shortcut "
                   "the identity, option A (x[:, :, ::2, ::2] zero-padded on the channel dimension, as the authors' "
                   "LambdaLayer) or option B (1x1 conv + BatchNorm)")
        if len(users) != 2:
            raise self.fail(x, f"its value feeds {len(users)} nodes ({', '.join(u.name for u in users)}); {pattern}")
        paths = [self.follow(u, x) for u in users]
        adds = {a for _, a in paths}
        if len(adds) != 1:
            raise self.fail(x, f"the two paths from it end in different additions "
                            f"({', '.join(a.name for a in adds)}); {pattern}")
        add = paths[0][1]
        self.seen.add(add)
        if self.kind(add) == "add" and self.value(self.bind(add, "add")["alpha"]) != 1:
            raise self.fail(add, "torch.add with alpha != 1 is not a residual sum")

        def strip(seq: List[fx.Node]) -> List[fx.Node]:
            return [n for n in seq if self.kind(n) != "identity"]

        branch_i = [i for i, (seq, _) in enumerate(paths) if [self.kind(n) for n in strip(seq)] ==
                    ["conv", "bn", "relu", "conv", "bn"]]
        if not branch_i:
            desc = " and ".join("[" + ", ".join(f"{n.name}: {self.kind(n)}" for n in seq) + "]" for seq, _ in paths)
            raise self.fail(add, f"this residual addition does not close a basic_block: the two paths from "
                            f"`{x.name}` are {desc}; {pattern}")
        bi = branch_i[0]
        branch = strip(paths[bi][0])
        short_all = paths[1 - bi][0]
        short = strip(short_all)
        short_kinds = [self.kind(n) for n in short]
        for n in paths[0][0] + paths[1][0]:
            self.seen.add(n)
        self.image(x, "a basic_block")
        in_ch = self.shape[0]
        c1, b1, r1, c2, b2 = branch
        for c in (c1, c2):
            self.claim(c)
        conv1, conv2 = self.conv_layer(c1), self.conv_layer(c2)
        conv1.bn, conv1.relu = self.check_bn(b1), True
        conv2.bn = self.check_bn(b2)
        planes, stride = conv1.outputs, conv1.stride
        for c, layer, want_stride in ((c1, conv1, stride), (c2, conv2, 1)):
            if layer.kernel != 3 or layer.padding != 1 or layer.bias or layer.stride != want_stride:
                raise self.fail(c, f"a basic_block convolution must be 3x3 with padding 1, no bias and stride "
                                f"{'the block stride' if layer is conv1 else 1}; got kernel {layer.kernel}, padding "
                                f"{layer.padding}, bias {layer.bias}, stride {layer.stride}")
        if conv2.outputs != planes:
            raise self.fail(c2, f"conv2 has {conv2.outputs} filters, conv1 {planes}: a basic_block has `planes` of both")
        changes = stride != 1 or in_ch != planes
        block_path = _block_path(add)
        blk = Block(conv1, conv2, "identity", prefix=block_path)
        if short_kinds == []:
            if changes:
                raise self.fail(add, "identity shortcut on a block that changes the shape")
            blk.mask = self.identity_mask_name(short_all, block_path)
        elif short_kinds == ["conv", "bn"]:
            sc, sb = short
            self.claim(sc)
            proj = self.conv_layer(sc)
            proj.bn = self.check_bn(sb)
            if not changes:
                raise self.fail(sc, "a projection (1x1 conv) shortcut on a block that keeps its shape: relief's "
                                "basic_block uses the identity there, so the spec cannot express it")
            if proj.kernel != 1 or proj.padding != 0 or proj.bias or proj.stride != stride or proj.outputs != planes:
                raise self.fail(sc, f"an option-B shortcut must be a 1x1 convolution with the block's stride "
                                f"({stride}), no padding and no bias, with {planes} filters")
            blk.shortcut, blk.projection = "conv", proj
        elif short_kinds == ["getitem", "pad"]:
            gi, pd = short
            idx = self.value(gi.args[1])
            sub = (slice(None), slice(None), slice(None, None, 2), slice(None, None, 2))
            norm = tuple(slice(None if s.start in (None, 0) else s.start, s.stop, s.step) if isinstance(s, slice) else s
                         for s in idx) if isinstance(idx, tuple) else idx
            if norm != sub:
                raise self.fail(gi, f"an option-A shortcut subsamples with x[:, :, ::2, ::2]; got {idx}")
            a = self.bind(pd, "pad") if pd.op == "call_function" and pd.target is F.pad else \
                {"pad": pd.args[1] if len(pd.args) > 1 else pd.kwargs.get("pad"), "mode": "constant",
                 "value": pd.args[2] if len(pd.args) > 2 else pd.kwargs.get("value", 0)}
            pads = list(self.value(a["pad"]))
            grow = planes - in_ch
            if (a["mode"] != "constant" or self.value(a["value"]) not in (None, 0, 0.0)
                    or pads != [0, 0, 0, 0, grow // 2, grow // 2] or grow % 2 or grow < 0):
                raise self.fail(pd, f"an option-A shortcut zero-pads (planes - inputs) / 2 = {grow / 2:g} channels on "
                                f"each side: F.pad(x, (0, 0, 0, 0, {grow // 2}, {grow // 2})); got pad {pads}, mode "
                                f"{a['mode']!r}, value {self.value(a['value'])}")
            if stride != 2:
                raise self.fail(c1, f"an option-A shortcut needs a block stride of 2, got {stride}")
            blk.shortcut, blk.pad = "pad_a", grow // 2
            blk.mask = _innermost(gi, block_path) or self.identity_mask_name([], block_path)
        else:
            desc = ", ".join(f"{n.name}: {k}" for n, k in zip(short, short_kinds))
            raise self.fail(add, f"the shortcut path [{desc}] is not one relief's basic_block has; {pattern}")
        users = self.tensor_users(add)
        if len(users) != 1 or self.kind(users[0]) != "relu":
            raise self.fail(add, "a residual addition must be followed by ReLU alone (relief's basic_block ends "
                            "with relu(branch + shortcut))")
        relu = users[0]
        self.seen.add(relu)
        self.ops.append(Op("block", block=blk))
        self.close("basic_block")
        self.shape = list(self.tshape(relu)[1:])
        return relu

    def identity_mask_name(self, short: List[fx.Node], block_path: Optional[str]) -> str:
        """The shortcut-mask name of an identity shortcut: the path of the module that computes
        it (nn.Identity, an empty nn.Sequential child of the block), else `<block>.shortcut`."""
        for n in short:
            if n.op == "call_module":
                return n.target
        if block_path:
            block = self.modules.get(block_path)
            empties = [name for name, m in (block.named_children() if block is not None else [])
                       if isinstance(m, nn.Sequential) and len(m) == 0]
            if len(empties) == 1:
                return f"{block_path}.{empties[0]}"
            return f"{block_path}.shortcut"
        return "shortcut"


def _function_name(fn: Any) -> str:
    """``torch.cat``, ``torch.nn.functional.relu``, ``operator.add``: the public name of a function."""
    name = getattr(fn, "__name__", None)
    for prefix, namespace in (("torch", torch), ("torch.nn.functional", F), ("operator", operator)):
        if name and getattr(namespace, name, None) is fn:
            return f"{prefix}.{name}"
    mod = getattr(fn, "__module__", None)
    qual = getattr(fn, "__qualname__", name or repr(fn))
    return f"{mod}.{qual}" if mod else qual


def _block_path(add: fx.Node) -> Optional[str]:
    stack = add.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    return path or None


def _innermost(node: fx.Node, block_path: Optional[str]) -> Optional[str]:
    """The module path a shortcut node runs in, when it is a module below the block."""
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return None
    path = list(stack.values())[-1][0]
    if block_path and path.startswith(block_path + "."):
        return path
    return None


def _square(v: Any) -> Optional[int]:
    if isinstance(v, int):
        return v
    if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
        return int(v[0])
    if isinstance(v, (list, tuple)) and len(v) == 1:
        return int(v[0])
    return None


def trace_program(module: nn.Module, input_shape: Sequence[int], stem: bool = False) -> Program:
    """Reads ``module`` as relief's forward program (see the module docs); raises
    :class:`ExportError` for anything the spec format cannot express."""
    if not isinstance(module, nn.Module):
        raise ExportError(f"expected a torch.nn.Module, got {type(module).__name__}")
    shape = _input_shape(input_shape)
    was_training = module.training
    module.eval()
    try:
        ex = _Exporter(module, shape, stem)
        ops = ex.run()
    finally:
        module.train(was_training)
    if stem and not (ops and ops[0].kind == "layer" and ops[0].layer.kind == "conv"):
        raise ExportError("stem=True marks the first layer as the ResNet stem, but the first layer is not a convolution")
    if not ops:
        raise ExportError(f"{type(module).__name__} has no layers relief can express")
    final = ex.shape
    if len(final) != 1:
        raise ExportError(f"the module's output has per-sample shape {final}; relief models end with N x classes")
    return Program(shape, final[0], ops, name=type(module).__name__)


def _input_shape(input_shape: Any) -> List[int]:
    """``input_shape`` as a list of 1 or 3 positive ints (an :class:`ExportError` naming the
    argument otherwise: a string, floats, a bool, a zero or negative size)."""
    bad = ExportError(f"input_shape must be [features] or [channels, height, width] (positive integers), got "
                      f"{shown(input_shape)}")
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise bad
    shape = []
    for d in input_shape:
        if isinstance(d, bool):
            raise bad
        try:
            shape.append(operator.index(d))
        except TypeError:
            raise bad from None
    if len(shape) not in (1, 3) or any(d < 1 for d in shape):
        raise bad
    return shape


def _toml_str(s: str) -> str:
    return json.dumps(s)


def spec_entries(program: Program) -> List[Dict[str, Any]]:
    """The spec's ``[[layer]]`` tables (as dicts) for ``program``."""
    entries: List[Dict[str, Any]] = []
    last = max(i for i, op in enumerate(program.ops) if op.kind in ("layer", "block"))
    uses_b = any(op.kind == "block" and op.block.shortcut == "conv" for op in program.ops)
    for i, op in enumerate(program.ops):
        if op.kind == "layer":
            L = op.layer
            if L.kind == "conv":
                e: Dict[str, Any] = {"kind": "conv2d", "name": L.name, "in_channels": L.inputs,
                                     "out_channels": L.outputs, "kernel": L.kernel, "stride": L.stride,
                                     "padding": L.padding, "bias": L.bias}
                if L.stem:
                    e["stem"] = True
                entries.append(e)
            else:
                out: Any = "classes" if i == last and L.outputs == program.num_classes else L.outputs
                entries.append({"kind": "linear", "name": L.name, "in_features": L.inputs, "out_features": out,
                                "bias": L.bias})
            if L.bn is not None:
                entries.append({"kind": "batch_norm", "name": L.bn})
            if L.relu:
                entries.append({"kind": "relu"})
        elif op.kind == "max_pool":
            entries.append({"kind": "max_pool", "kernel": op.kernel, "stride": op.stride})
        elif op.kind == "gap":
            e = {"kind": op.spec_kind}
            if op.spec_kind == "adaptive_avg_pool":
                e["output_size"] = 1
            entries.append(e)
        elif op.kind == "flatten":
            entries.append({"kind": "flatten"})
        elif op.kind == "dropout":
            entries.append({"kind": "dropout", "p": float(op.p)})
        elif op.kind == "block":
            b = op.block
            e = {"kind": "basic_block"}
            names = {"conv1": b.conv1.name, "bn1": b.conv1.bn, "conv2": b.conv2.name, "bn2": b.conv2.bn}
            if b.shortcut == "conv":
                names["shortcut_conv"] = b.projection.name
                names["shortcut_bn"] = b.projection.bn
            else:
                names["mask"] = b.mask
            p = b.prefix if b.prefix and _NAME.match(b.prefix) else None
            if p is None:
                common = os.path.commonprefix([b.conv1.name + ".", b.conv2.name + "."])
                p = common.rsplit(".", 1)[0] if "." in common else None
                if p is not None and not _NAME.match(p):
                    p = None
            defaults = _prefix_names(p) if p else {}
            if p:
                e["prefix"] = p
            e["planes"] = b.conv1.outputs
            e["stride"] = b.conv1.stride
            e["shortcut"] = {"conv": "b", "pad_a": "a"}.get(b.shortcut, "b" if uses_b else "a")
            for k, v in names.items():
                if defaults.get(k) != v:
                    e[k] = v
            entries.append(e)
    return entries


def _prefix_names(p: str) -> Dict[str, str]:
    return {"conv1": f"{p}.conv1", "bn1": f"{p}.bn1", "conv2": f"{p}.conv2", "bn2": f"{p}.bn2",
            "shortcut_conv": f"{p}.shortcut.0", "shortcut_bn": f"{p}.shortcut.1", "mask": f"{p}.shortcut"}


def spec_toml(program: Program, name: str, convention: Optional[str] = None, source: str = "") -> str:
    """The relief model spec of ``program`` as TOML text (docs/models.md)."""
    lines = [f"# relief model spec exported from PyTorch by relief_torch{(' (' + source + ')') if source else ''}.",
             "# Parameter names are the module's state_dict names; see docs/pytorch.md and docs/models.md.", "",
             f"name = {_toml_str(name)}",
             f"input_shape = [{', '.join(str(d) for d in program.input_shape)}]",
             f"num_classes = {program.num_classes}"]
    if convention is not None:
        if convention not in ("lenet", "vgg", "resnet"):
            raise ExportError(f"convention must be lenet, vgg or resnet, got {convention!r}")
        lines.append(f"convention = {_toml_str(convention)}")
    for e in spec_entries(program):
        lines += ["", "[[layer]]"]
        for k, v in e.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, str):
                lines.append(f"{k} = {_toml_str(v)}")
            elif isinstance(v, float):
                lines.append(f"{k} = {v!r}")
            else:
                lines.append(f"{k} = {int(v)}")
    return "\n".join(lines) + "\n"


def program_tensors(module: nn.Module, program: Program, what: str = "the module") -> Dict[str, torch.Tensor]:
    """The module's state_dict tensors the program names (checked: every one present with its
    shape, float32 floats, nothing left over)."""
    state = module.state_dict()
    expected = program.tensor_shapes()
    problems = []
    out: Dict[str, torch.Tensor] = {}
    for name, shape in expected:
        t = state.get(name)
        if t is None and f"{name}_orig" in state and f"{name}_mask" in state:
            # torch.nn.utils.prune reparametrisation: the weight as the forward uses it.
            t = state[f"{name}_orig"] * state[f"{name}_mask"]
        if t is None:
            problems.append(f"`{cut(name)}` is missing from {what}'s state_dict")
        elif tuple(t.shape) != shape:
            problems.append(f"`{cut(name)}` has shape {list(t.shape)}, the spec expects {list(shape)}")
        elif t.is_floating_point() and t.dtype != torch.float32:
            problems.append(f"`{cut(name)}` is {t.dtype}: relief works in float32 (call module.float() first)")
        else:
            out[name] = t.detach().to("cpu").contiguous()
    wanted = {n for n, _ in expected}
    extra = [k for k in state if k not in wanted
             and not (k.endswith(("_orig", "_mask")) and k[:-5] in wanted)]
    if extra:
        problems.append("state_dict entries the traced forward does not use (relief's model would not have them): "
                        + names(extra))
    if problems:
        raise ExportError("; ".join(problems))
    return out


def _device(module: nn.Module) -> torch.device:
    return next((t.device for t in module.parameters()), torch.device("cpu"))


def compare(module: nn.Module, rebuilt: nn.Module, input_shape: Sequence[int], batch: int = 4) -> float:
    """Largest |logit difference| between two modules (eval mode) on seeded N(0, 1) inputs,
    relative to the logits' scale (at least 1)."""
    x = torch.randn(batch, *input_shape, generator=torch.Generator().manual_seed(1))
    was = module.training
    module.eval()
    try:
        with torch.no_grad():
            a, b = module(x.to(_device(module))).cpu(), rebuilt(x)
    finally:
        module.train(was)
    return float((a - b).abs().max() / max(1.0, float(a.abs().max())))


def export(
    module: nn.Module,
    input_shape: Sequence[int],
    out_dir: "os.PathLike[str] | str",
    num_classes: Optional[int] = None,
    *,
    name: Optional[str] = None,
    stem: Optional[bool] = None,
    convention: Optional[str] = None,
) -> ExportResult:
    """Exports ``module`` as a relief model: ``<out_dir>/model.toml`` (the spec) and
    ``<out_dir>/weights.safetensors`` (its tensors by ``state_dict`` name, BatchNorm buffers and
    ``num_batches_tracked`` included, with the spec in the metadata as relief checkpoints carry
    it).

    ``input_shape`` is the per-sample shape (``(1, 28, 28)``, ``(784,)``); ``num_classes`` is
    checked against the module's output width when given. ``stem=True`` marks the first
    convolution as a ResNet stem (in relief's ``reference`` semantics its mask is never applied,
    as in the authors' ResNets; relief refuses a ResNet-style spec without one there); the
    default ``None`` marks it when the module has residual blocks and starts with a convolution.
    ``convention`` (``lenet``, ``vgg``, ``resnet``) is written when given, else relief infers it.
    Raises :class:`ExportError` for anything the spec cannot express, naming the fx node and the
    source line; the files are written only after the spec, rebuilt in PyTorch, reproduced the
    module's logits. A parameter or buffer whose name starts with ``mask.``, ``opt.`` or
    ``best.`` (a submodule named ``mask``, ``opt`` or ``best``) is refused: relief's checkpoints
    reserve those prefixes. ``out_dir`` is created when missing (its parent must exist; an
    existing file there is refused before any work); both files are written atomically
    (temporary sibling, ``fsync``, rename), so a failure leaves no partial file and no new
    directory behind."""
    if not isinstance(module, nn.Module):
        raise ExportError(f"export: the argument `module` must be a torch.nn.Module, got {type(module).__name__}")
    out_dir = as_path(out_dir, "export: the argument `out_dir`", ExportError)
    if num_classes is not None:
        try:
            if isinstance(num_classes, bool):
                raise TypeError
            num_classes = operator.index(num_classes)
        except TypeError:
            raise ExportError(f"export: the argument `num_classes` must be a positive integer, got "
                              f"{shown(num_classes)}") from None
        if num_classes < 1:
            raise ExportError(f"export: the argument `num_classes` must be a positive integer, got {num_classes}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ExportError(f"export: the argument `name` must be a non-empty string, got {shown(name)}")
    if stem not in (None, True, False):
        raise ExportError(f"export: the argument `stem` must be True, False or None, got {shown(stem)}")
    if convention is not None and convention not in ("lenet", "vgg", "resnet"):
        raise ExportError(f"export: the argument `convention` must be lenet, vgg or resnet, got {shown(convention)}")
    reserved = [k for k in module.state_dict() if k.startswith(RESERVED_PREFIXES)]
    if reserved:
        others = f" (also {names(reserved[1:])})" if len(reserved) > 1 else ""
        raise ExportError(f"{type(module).__name__}: the state_dict entry `{cut(reserved[0])}`{others} "
                          f"{reserved_reason(reserved[0])}")
    _check_out_dir(out_dir)
    hooked = [n for n, m in module.named_modules() if getattr(m, "_relief_shortcut_hook", None) is not None]
    if hooked:
        raise ExportError(f"the module carries relief shortcut masks (on {', '.join(hooked)}, from load_checkpoint), "
                          "which a model spec cannot hold; export a fresh module, or use the compacted model")
    program = trace_program(module, input_shape, stem=bool(stem))
    if stem is None:
        first = program.ops[0]
        if first.kind == "layer" and first.layer.kind == "conv" and any(op.kind == "block" for op in program.ops):
            first.layer.stem = True
    if num_classes is not None and num_classes != program.num_classes:
        raise ExportError(f"num_classes = {num_classes}, but the module outputs {program.num_classes} values per sample")
    program.name = name or type(module).__name__
    tensors = program_tensors(module, program)
    try:
        rebuilt = build_module(program, tensors)
    except ReliefTorchError as e:
        raise ExportError(f"the traced program is inconsistent: {e}") from e
    try:
        diff = compare(module, rebuilt, program.input_shape)
    except Exception as e:
        raise ExportError(f"{type(module).__name__} fails on a batch of 4 inputs of shape {program.input_shape} "
                          f"({type(e).__name__}: {oneline(e, 500)})") from e
    if not diff <= 1e-4:
        raise ExportError(f"the spec rebuilt in PyTorch does not reproduce {type(module).__name__}'s logits (max "
                          f"relative difference {diff:.3g}); the module computes something the exporter did not "
                          "read (please report this)")
    text = spec_toml(program, program.name, convention, source=f"{type(module).__module__}.{type(module).__qualname__}")
    spec_path = os.path.join(out_dir, "model.toml")
    weights_path = os.path.join(out_dir, "weights.safetensors")
    order = [n for n, _ in program.tensor_shapes()]
    meta = {"arch": program.name, "num_classes": str(program.num_classes), "model_spec": text,
            "exported_by": "relief_torch"}
    try:
        chunks = encode_safetensors(tensors, meta)
    except ReliefTorchError as e:
        raise ExportError(str(e)) from e
    _write_files(out_dir, [(weights_path, chunks), (spec_path, [text.encode("utf-8")])])
    return ExportResult(out_dir, spec_path, weights_path, text, order, diff)


#: The files :func:`export` writes into its output directory.
OUTPUT_FILES = ("model.toml", "weights.safetensors")


def _check_out_dir(out_dir: str) -> None:
    """Refuses an output directory export could not write, before any work: an existing file
    that is not a directory, a missing or non-directory parent, a file name of its output that
    is a directory."""
    if os.path.exists(out_dir) or os.path.islink(out_dir):
        if not os.path.isdir(out_dir):
            raise ExportError(f"{out_dir}: exists and is not a directory; the output directory receives "
                              f"{' and '.join(OUTPUT_FILES)} (give a new or existing directory)")
        for f in OUTPUT_FILES:
            target = os.path.join(out_dir, f)
            if os.path.isdir(target):
                raise ExportError(f"{target}: is a directory; export writes the file {f} there (remove or rename it)")
        return
    parent = os.path.dirname(os.path.abspath(out_dir))
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise ExportError(f"{out_dir}: cannot create the output directory: its parent {parent} {what} (export creates "
                          "the output directory itself, not its parents)")


def _write_files(out_dir: str, files: List[Tuple[str, List[bytes]]]) -> None:
    """Writes every file atomically (each to a temporary sibling, flushed to disk, then all
    renamed), creating ``out_dir`` first when needed; on a failure no temporary file is left,
    a directory this call created is removed again, and the error names the file."""
    created = False
    if not os.path.isdir(out_dir):
        try:
            os.mkdir(out_dir)
        except OSError as e:
            raise ExportError(f"{out_dir}: cannot create the output directory: {e.strerror or e}") from e
        created = True
    temps: List[Tuple[str, str]] = []
    done = False
    try:
        for path, chunks in files:
            temps.append((write_temp(path, chunks), path))
        for tmp, path in temps:
            commit(tmp, path)
        done = True
    except ReliefTorchError as e:
        raise ExportError(str(e)) from e
    finally:
        if not done:
            for tmp, _ in temps:
                try:
                    os.remove(tmp)
                except OSError:
                    pass
            if created:
                try:
                    os.rmdir(out_dir)
                except OSError:
                    pass
