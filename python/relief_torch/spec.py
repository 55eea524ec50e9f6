"""Reading relief model specs (docs/models.md) far enough to compare two of them.

:func:`canonical_spec` reduces a spec to the steps of the function it computes, with every
default filled in and the spellings that mean the same thing made equal (``global_avg_pool``
and ``adaptive_avg_pool``, a block's ``prefix`` and its explicit names, the ``shortcut`` of a
block that keeps its shape). What only affects pruning (``stem``, ``convention``, the names of
shortcut masks) and what is checked elsewhere (``in_channels``, ``in_features``) is left out.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - older Pythons
    import tomli as _toml  # type: ignore[no-redef]


def parse_spec(text: str) -> Dict[str, Any]:
    """Parses spec TOML into a dict (``ValueError`` when it is not TOML or lacks the top-level
    fields ``input_shape``, ``num_classes`` and ``layer``)."""
    try:
        spec = _toml.loads(text)
    except Exception as e:
        raise ValueError(f"not TOML: {e}") from e
    for key in ("input_shape", "num_classes", "layer"):
        if key not in spec:
            raise ValueError(f"no `{key}`")
    return spec


def _block_names(e: Dict[str, Any]) -> Dict[str, str]:
    p = e.get("prefix")
    d = ({"conv1": f"{p}.conv1", "bn1": f"{p}.bn1", "conv2": f"{p}.conv2", "bn2": f"{p}.bn2",
          "shortcut_conv": f"{p}.shortcut.0", "shortcut_bn": f"{p}.shortcut.1"} if p else {})
    return {k: e.get(k, d.get(k)) for k in ("conv1", "bn1", "conv2", "bn2", "shortcut_conv", "shortcut_bn")}


def canonical_spec(spec: Dict[str, Any], num_classes: int) -> List[Tuple]:
    """The spec as a list of steps (tuples) that two specs of the same function share."""
    layers = spec["layer"]
    classes = int(num_classes or spec["num_classes"])
    shape = list(spec["input_shape"])
    prunable = [i for i, e in enumerate(layers) if e.get("kind") in ("linear", "conv2d", "basic_block")]
    last = prunable[-1] if prunable else -1
    out: List[Tuple] = []

    def conv_out(s: int, k: int, st: int, p: int) -> int:
        return (s + 2 * p - k) // st + 1

    for i, e in enumerate(layers):
        kind = e.get("kind")
        if kind == "conv2d":
            k, st, p = int(e["kernel"]), int(e.get("stride", 1)), int(e.get("padding", 0))
            out.append(("conv2d", e["name"], int(e["out_channels"]), k, st, p, bool(e.get("bias", True))))
            if len(shape) == 3:
                shape = [int(e["out_channels"]), conv_out(shape[1], k, st, p), conv_out(shape[2], k, st, p)]
        elif kind == "linear":
            f = e.get("out_features", "classes" if i == last else None)
            n = classes if f == "classes" else int(f)
            out.append(("linear", e["name"], n, bool(e.get("bias", True))))
            shape = [n]
        elif kind == "batch_norm":
            out.append(("batch_norm", e["name"]))
        elif kind == "relu":
            out.append(("relu",))
        elif kind == "max_pool":
            k = int(e["kernel"])
            st = int(e.get("stride", k))
            out.append(("max_pool", k, st))
            if len(shape) == 3:
                shape = [shape[0], (shape[1] - k) // st + 1, (shape[2] - k) // st + 1]
        elif kind in ("global_avg_pool", "adaptive_avg_pool"):
            out.append(("global_avg_pool",))
            shape = shape[:1]
        elif kind == "flatten":
            if len(shape) != 1:
                out.append(("flatten",))
                n = 1
                for d in shape:
                    n *= d
                shape = [n]
        elif kind == "dropout":
            out.append(("dropout", float(e["p"])))
        elif kind == "basic_block":
            planes, st = int(e["planes"]), int(e.get("stride", 1))
            names = _block_names(e)
            keeps = len(shape) == 3 and st == 1 and shape[0] == planes
            if keeps:
                short: Tuple = ("identity",)
            elif e.get("shortcut") == "b":
                short = ("b", names["shortcut_conv"], names["shortcut_bn"])
            else:
                short = ("a",)
            out.append(("basic_block", names["conv1"], names["bn1"], names["conv2"], names["bn2"], planes, st, short))
            if len(shape) == 3:
                shape = [planes, conv_out(shape[1], 3, st, 1), conv_out(shape[2], 3, st, 1)]
        else:
            out.append((str(kind),))
    return out
