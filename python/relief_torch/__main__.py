"""Command line: ``python -m relief_torch export --factory pkg.module:function ...``.

``export`` imports the factory (a callable returning the ``nn.Module``; the current directory
is on the import path), optionally loads a ``state_dict`` (``.safetensors``, or ``.pt`` /
``.pth`` through ``torch.load(weights_only=True)``) strictly, and writes ``DIR/model.toml`` and
``DIR/weights.safetensors`` (see :func:`relief_torch.export`), atomically. Every failure (a bad
argument, a factory that cannot be imported or raises, weights that do not fit, an ``--out``
that cannot be written...) prints exactly one ``error: ...`` message on stderr, never a Python
traceback, and exits with status 1 (``RELIEF_TORCH_TRACEBACK=1`` shows the traceback of an
unexpected failure, for a bug report).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any, List, NoReturn, Optional

import torch
import torch.nn as nn

from . import export
from ._safetensors import read_safetensors
from .errors import NAMES_LIMIT, ReliefTorchError, cut, names, oneline, shown


def _factory(spec: str) -> nn.Module:
    where = f"--factory {shown(spec)}"
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise ReliefTorchError(f"{where}: expected `package.module:function`")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except (Exception, SystemExit) as e:
        raise ReliefTorchError(f"{where}: cannot import `{cut(mod_name)}` ({type(e).__name__}: "
                               f"{oneline(e)})") from e
    fn: Any = mod
    for part in fn_name.split("."):
        try:
            fn = getattr(fn, part)
        except Exception:
            raise ReliefTorchError(f"{where}: `{cut(mod_name)}` has no `{cut(fn_name)}`") from None
    if not callable(fn):
        raise ReliefTorchError(f"{where}: `{cut(fn_name)}` is a {type(fn).__name__}, not callable (expected a "
                               "function or class returning the torch.nn.Module)")
    try:
        module = fn()
    except (Exception, SystemExit) as e:
        raise ReliefTorchError(f"{where}: calling `{cut(fn_name)}()` raised {type(e).__name__}: "
                               f"{oneline(e)}") from e
    if not isinstance(module, nn.Module):
        raise ReliefTorchError(f"{where}: `{cut(fn_name)}()` returned a {type(module).__name__}, not a "
                               "torch.nn.Module")
    return module


def load_weights(module: nn.Module, path: str) -> None:
    """Loads a state_dict file into ``module`` strictly, listing every mismatch."""
    if os.path.isdir(path):
        raise ReliefTorchError(f"{path}: is a directory, not a state_dict file")
    if not os.path.exists(path):
        raise ReliefTorchError(f"{path}: no such file")
    if path.endswith(".safetensors"):
        state, _ = read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ReliefTorchError(f"{path}: cannot read it with torch.load(weights_only=True) "
                                   f"({type(e).__name__}: {oneline(e)})") from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                  for k, v in state.items()):
            raise ReliefTorchError(f"{path}: expected a state_dict (a dict of names to tensors), got "
                                   f"{type(state).__name__}")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"`{cut(k)}`: file {list(state[k].shape)}, module {list(own[k].shape)}"
              for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append("missing from the file: " + names(missing))
    if unexpected:
        problems.append("not in the module: " + names(unexpected))
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes[:NAMES_LIMIT])
                        + (f"; and {len(shapes) - NAMES_LIMIT} more" if len(shapes) > NAMES_LIMIT else ""))
    if problems:
        raise ReliefTorchError(f"{path} does not fit {type(module).__name__} (a state_dict of another "
                               "architecture?):\n  - " + "\n  - ".join(problems))
    try:
        module.load_state_dict(state, strict=True)
    except Exception as e:
        raise ReliefTorchError(f"{path}: cannot load it into {type(module).__name__} ({type(e).__name__}: "
                               f"{oneline(e, 500)})") from e


def _shape(text: str) -> List[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)}: expected sizes like 1,28,28 or 784") from None
    if len(dims) not in (1, 3) or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"{shown(text)}: expected [features] or channels,height,width (positive "
                                         "integers, e.g. 1,28,28 or 784)")
    return dims


def _classes(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown(text)}: expected a positive integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{shown(text)}: expected a positive integer")
    return n


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors keep the command's promise: one ``error: ...`` line on
    stderr and exit status 1 (argparse's own prints the usage and exits with 2)."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{cut(message, 500)} (see `{self.prog} --help`)")


class _UsageError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m relief_torch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ex = sub.add_parser("export", help="write DIR/model.toml and DIR/weights.safetensors for a PyTorch module")
    ex.add_argument("--factory", required=True, help="`package.module:function` returning the nn.Module")
    ex.add_argument("--weights", help="state_dict to load first: .safetensors, or .pt/.pth (torch.load weights_only)")
    ex.add_argument("--input-shape", required=True, type=_shape, help="per-sample input shape, e.g. 1,28,28 or 784")
    ex.add_argument("--num-classes", type=_classes, help="checked against the module's output width")
    ex.add_argument("--out", required=True, help="output directory (created if missing; its parent must exist)")
    ex.add_argument("--name", help="the spec's `name` (default: the module's class name)")
    ex.add_argument("--stem", action=argparse.BooleanOptionalAction, default=None,
                    help="mark the first convolution as the ResNet stem (default: when the module has residual blocks)")
    ex.add_argument("--convention", choices=["lenet", "vgg", "resnet"], help="relief's reference convention")
    return parser


def _check_out(out: str, weights: Optional[str]) -> None:
    """What the command line refuses about ``--out`` before importing anything (``export``
    itself checks the directory again)."""
    if not out:
        raise ReliefTorchError("--out: expected a directory, got an empty path")
    if weights and os.path.isfile(weights):
        for f in ("model.toml", "weights.safetensors"):
            target = os.path.join(out, f)
            if os.path.exists(target) and os.path.samefile(target, weights):
                raise ReliefTorchError(f"--weights {weights} is the file export would write ({target}); give another "
                                       "--out")


def _run(argv: Optional[List[str]]) -> int:
    args = _parser().parse_args(argv)
    _check_out(args.out, args.weights)
    module = _factory(args.factory)
    if args.weights:
        load_weights(module, args.weights)
    res = export(module, args.input_shape, args.out, args.num_classes, name=args.name, stem=args.stem,
                 convention=args.convention)
    print(f"wrote {res.spec_path} and {res.weights_path} ({len(res.tensor_names)} tensors; the spec reproduces "
          f"the module's logits to {res.max_logit_difference:.1e})")
    return 0


def _fail(message: str) -> int:
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    return 1


def main(argv: Optional[List[str]] = None) -> int:
    """Runs the command line; returns the exit status (0, or 1 after one ``error:`` message)."""
    try:
        return _run(argv)
    except _UsageError as e:
        return _fail(str(e))
    except ReliefTorchError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("interrupted")
    except SystemExit as e:  # argparse's --help (0), or a library that exits
        if e.code in (0, None):
            return 0
        return _fail(f"exited with status {shown(e.code)}")
    except Exception as e:  # a bug: still one line, no traceback (unless asked for)
        if os.environ.get("RELIEF_TORCH_TRACEBACK"):
            raise
        return _fail(f"unexpected {type(e).__name__}: {oneline(e, 500)} (please report this; set "
                     "RELIEF_TORCH_TRACEBACK=1 for the traceback)")


if __name__ == "__main__":
    sys.exit(main())
