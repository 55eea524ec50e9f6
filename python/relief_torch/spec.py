"""Reading relief model specs (docs/models.md) far enough to compare two of them.

:func:`canonical_spec` reduces a spec to the steps of the function it computes, with every
default filled in and the spellings that mean the same thing made equal (``global_avg_pool``
and ``adaptive_avg_pool``, a block's ``prefix`` and its explicit names, the ``shortcut`` of a
block that keeps its shape). What only affects pruning (``stem``, ``convention``, the names of
shortcut masks) and what is checked elsewhere (``in_channels``, ``in_features``) is left out.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

from .errors import ReliefTorchError, cut, shown

try:  # Python 3.11+
    import tomllib as _toml
except ModuleNotFoundError:  # pragma: no cover - older Pythons
    import tomli as _toml  # type: ignore[no-redef]


class SpecError(ReliefTorchError):
    """A spec is not TOML, or a field of it is missing or of the wrong type (the message names
    the field: ``layer[3].kernel``)."""


_MISSING = object()


def _kind_of(v: Any) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    return type(v).__name__


def _field(table: Dict[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
    if key not in table:
        if default is _MISSING:
            raise SpecError(f"`{where}{key}` is missing")
        return default
    return table[key]


def _int(table: Dict[str, Any], key: str, where: str, minimum: int = 0, default: Any = _MISSING) -> int:
    v = _field(table, key, where, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise SpecError(f"`{where}{key}` is {_kind_of(v)} {shown(v)}, expected an integer >= {minimum}")
    return v


def _str(table: Dict[str, Any], key: str, where: str, default: Any = _MISSING) -> Any:
    v = _field(table, key, where, default)
    if v is not None and not isinstance(v, str):
        raise SpecError(f"`{where}{key}` is {_kind_of(v)} {shown(v)}, expected a string")
    return v


def _bool(table: Dict[str, Any], key: str, where: str, default: bool) -> bool:
    v = _field(table, key, where, default)
    if not isinstance(v, bool):
        raise SpecError(f"`{where}{key}` is {_kind_of(v)} {shown(v)}, expected true or false")
    return v


def parse_spec(text: str) -> Dict[str, Any]:
    """Parses spec TOML into a dict; raises :class:`SpecError` (a ``ValueError``) when it is not
    TOML or its top-level fields are missing or malformed: ``input_shape`` (1 or 3 positive
    integers), ``num_classes`` (a positive integer), ``layer`` (an array of tables, each with a
    string ``kind``). The fields of each layer are checked by :func:`canonical_spec`."""
    if not isinstance(text, str):
        raise SpecError(f"expected the spec's TOML text, got {type(text).__name__}")
    try:
        spec = _toml.loads(text)
    except Exception as e:
        raise SpecError(f"not TOML: {cut(e)}") from e
    for key in ("input_shape", "num_classes", "layer"):
        if key not in spec:
            raise SpecError(f"no `{key}`")
    shape = spec["input_shape"]
    if not isinstance(shape, list) or len(shape) not in (1, 3):
        raise SpecError(f"`input_shape` is {_kind_of(shape)} {shown(shape)}, expected [features] or "
                        "[channels, height, width]")
    for i, d in enumerate(shape):
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise SpecError(f"`input_shape[{i}]` is {_kind_of(d)} {shown(d)}, expected an integer >= 1")
    _int(spec, "num_classes", "", 1)
    layers = spec["layer"]
    if not isinstance(layers, list):
        raise SpecError(f"`layer` is {_kind_of(layers)}, expected an array of tables ([[layer]])")
    for i, e in enumerate(layers):
        if not isinstance(e, dict):
            raise SpecError(f"`layer[{i}]` is {_kind_of(e)} {shown(e)}, expected a table")
        _str(e, "kind", f"layer[{i}].")
    return spec


def _block_names(e: Dict[str, Any], where: str) -> Dict[str, str]:
    p = _str(e, "prefix", where, None)
    d = ({"conv1": f"{p}.conv1", "bn1": f"{p}.bn1", "conv2": f"{p}.conv2", "bn2": f"{p}.bn2",
          "shortcut_conv": f"{p}.shortcut.0", "shortcut_bn": f"{p}.shortcut.1"} if p else {})
    return {k: _str(e, k, where, d.get(k)) for k in ("conv1", "bn1", "conv2", "bn2", "shortcut_conv", "shortcut_bn")}


def canonical_spec(spec: Dict[str, Any], num_classes: int) -> List[Tuple]:
    """The spec (as :func:`parse_spec` returns it) as a list of steps (tuples) that two specs of
    the same function share; a field it reads that is missing or of the wrong type raises
    :class:`SpecError` naming it."""
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
        w = f"layer[{i}]."
        if kind == "conv2d":
            k, st, p = _int(e, "kernel", w, 1), _int(e, "stride", w, 1, 1), _int(e, "padding", w, 0, 0)
            oc = _int(e, "out_channels", w, 1)
            out.append(("conv2d", _str(e, "name", w), oc, k, st, p, _bool(e, "bias", w, True)))
            if len(shape) == 3:
                shape = [oc, conv_out(shape[1], k, st, p), conv_out(shape[2], k, st, p)]
        elif kind == "linear":
            f = _field(e, "out_features", w, "classes" if i == last else _MISSING)
            if f == "classes":
                n = classes
            elif isinstance(f, bool) or not isinstance(f, int) or f < 1:
                raise SpecError(f"`{w}out_features` is {_kind_of(f)} {shown(f)}, expected an integer >= 1 or "
                                "\"classes\"")
            else:
                n = f
            out.append(("linear", _str(e, "name", w), n, _bool(e, "bias", w, True)))
            shape = [n]
        elif kind == "batch_norm":
            out.append(("batch_norm", _str(e, "name", w)))
        elif kind == "relu":
            out.append(("relu",))
        elif kind == "max_pool":
            k = _int(e, "kernel", w, 1)
            st = _int(e, "stride", w, 1, k)
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
            p = _field(e, "p", w)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p < 1:
                raise SpecError(f"`{w}p` is {_kind_of(p)} {shown(p)}, expected a number in [0, 1)")
            out.append(("dropout", float(p)))
        elif kind == "basic_block":
            planes, st = _int(e, "planes", w, 1), _int(e, "stride", w, 1, 1)
            names = _block_names(e, w)
            keeps = len(shape) == 3 and st == 1 and shape[0] == planes
            if keeps:
                short: Tuple = ("identity",)
            elif _str(e, "shortcut", w, None) == "b":
                short = ("b", names["shortcut_conv"], names["shortcut_bn"])
            else:
                short = ("a",)
            out.append(("basic_block", names["conv1"], names["bn1"], names["conv2"], names["bn2"], planes, st, short))
            if len(shape) == 3:
                shape = [planes, conv_out(shape[1], 3, st, 1), conv_out(shape[2], 3, st, 1)]
        else:
            out.append((str(kind),))
    return out
