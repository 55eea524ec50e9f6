"""Command line: ``python -m relief_torch export --factory pkg.module:function ...``.

``export`` imports the factory (a callable returning the ``nn.Module``; the current directory
is on the import path), optionally loads a ``state_dict`` (``.safetensors``, or ``.pt`` /
``.pth`` through ``torch.load(weights_only=True)``) strictly, and writes ``DIR/model.toml`` and
``DIR/weights.safetensors`` (see :func:`relief_torch.export`). Errors print one message and
exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import List, Optional

import torch
import torch.nn as nn

from . import export
from ._safetensors import read_safetensors
from .errors import ReliefTorchError


def _factory(spec: str) -> nn.Module:
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise ReliefTorchError(f"--factory {spec!r}: expected `package.module:function`")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(mod_name)
    except Exception as e:
        raise ReliefTorchError(f"--factory {spec!r}: cannot import `{mod_name}` ({type(e).__name__}: {e})") from e
    fn = mod
    for part in fn_name.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ReliefTorchError(f"--factory {spec!r}: `{mod_name}` has no `{fn_name}`")
    module = fn()
    if not isinstance(module, nn.Module):
        raise ReliefTorchError(f"--factory {spec!r} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def load_weights(module: nn.Module, path: str) -> None:
    """Loads a state_dict file into ``module`` strictly, listing every mismatch."""
    if path.endswith(".safetensors"):
        state, _ = read_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ReliefTorchError(f"{path}: cannot read it with torch.load(weights_only=True) "
                                   f"({type(e).__name__}: {e})") from e
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ReliefTorchError(f"{path}: expected a state_dict (a dict of tensors), got {type(state).__name__}")
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"`{k}`: file {list(state[k].shape)}, module {list(own[k].shape)}"
              for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append("missing from the file: " + ", ".join(f"`{k}`" for k in missing))
    if unexpected:
        problems.append("not in the module: " + ", ".join(f"`{k}`" for k in unexpected))
    if shapes:
        problems.append("shapes differ: " + "; ".join(shapes))
    if problems:
        raise ReliefTorchError(f"{path} does not fit {type(module).__name__} (a state_dict of another "
                               "architecture?):\n  - " + "\n  - ".join(problems))
    module.load_state_dict(state, strict=True)


def _shape(text: str) -> List[int]:
    try:
        dims = [int(d) for d in text.replace("x", ",").split(",") if d.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sizes like 1,28,28") from None
    if len(dims) not in (1, 3) or any(d < 1 for d in dims):
        raise argparse.ArgumentTypeError(f"{text!r}: expected [features] or channels,height,width")
    return dims


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relief_torch", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write DIR/model.toml and DIR/weights.safetensors for a PyTorch module")
    ex.add_argument("--factory", required=True, help="`package.module:function` returning the nn.Module")
    ex.add_argument("--weights", help="state_dict to load first: .safetensors, or .pt/.pth (torch.load weights_only)")
    ex.add_argument("--input-shape", required=True, type=_shape, help="per-sample input shape, e.g. 1,28,28 or 784")
    ex.add_argument("--num-classes", type=int, help="checked against the module's output width")
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--name", help="the spec's `name` (default: the module's class name)")
    ex.add_argument("--stem", action=argparse.BooleanOptionalAction, default=None,
                    help="mark the first convolution as the ResNet stem (default: when the module has residual blocks)")
    ex.add_argument("--convention", choices=["lenet", "vgg", "resnet"], help="relief's reference convention")
    args = parser.parse_args(argv)
    try:
        module = _factory(args.factory)
        if args.weights:
            load_weights(module, args.weights)
        res = export(module, args.input_shape, args.out, args.num_classes, name=args.name, stem=args.stem,
                     convention=args.convention)
    except ReliefTorchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {res.spec_path} and {res.weights_path} ({len(res.tensor_names)} tensors; the spec reproduces "
          f"the module's logits to {res.max_logit_difference:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
