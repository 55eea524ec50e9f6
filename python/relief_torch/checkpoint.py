"""relief checkpoints -> the PyTorch module they were made from.

A relief checkpoint (``RUN_DIR/iter-NNN.safetensors``; ``relief-experiment``,
``checkpoint.rs``) is one safetensors file: every parameter and buffer by its PyTorch name,
every mask as ``mask.<name>`` (``u8``, the tensor's full shape; per-channel shortcut masks of
residual blocks as ``mask.<block>.shortcut``, shape ``(planes,)``), the optimizer state
(``opt.*``) and best-so-far weights (``best.*``), and string metadata: ``arch``,
``num_classes``, ``model_spec`` (the spec's TOML for a spec model) and ``inert_masks`` (masks
relief records but never applies: the ResNet stem in ``reference`` semantics).

:func:`load_checkpoint` checks everything first and changes nothing unless all of it fits.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.fx
import torch.nn as nn
import torch.nn.utils.prune as prune

from ._safetensors import as_path, read_safetensors
from .errors import NAMES_LIMIT, CheckpointError, ExportError, ReliefTorchError, cut, names, shown
from .spec import canonical_spec, parse_spec

MASK_PREFIX = "mask."
#: Tensor-name prefixes of a relief checkpoint that are not model state: masks, the optimizer
#: state and the best-so-far weights (``relief-experiment``, ``checkpoint.rs``).
RESERVED_PREFIXES = ("mask.", "opt.", "best.")
_RESERVED_WHAT = {"mask.": "the pruning masks", "opt.": "the optimizer state", "best.": "the best-so-far weights"}


def reserved_reason(name: str) -> str:
    """Why a parameter or buffer named ``name`` (starting with a reserved prefix) cannot be a
    relief tensor, and what to do about it."""
    prefix = next(p for p in RESERVED_PREFIXES if name.startswith(p))
    return (f"begins with `{prefix}`, which relief's checkpoints reserve for {_RESERVED_WHAT[prefix]} "
            f"(`{prefix}<name>`; also `{'`, `'.join(p for p in RESERVED_PREFIXES if p != prefix)}`): relief would "
            f"read it as such, not as a tensor of the model. Rename the submodule `{prefix[:-1]}` (e.g. "
            f"`self.{prefix[:-1]}_ = ...`, or another name) so that no parameter or buffer name starts with "
            f"{', '.join(f'`{p}`' for p in RESERVED_PREFIXES)}")


@dataclasses.dataclass
class LoadReport:
    """What :func:`load_checkpoint` did."""

    #: Parameters and buffers copied, by name.
    loaded: List[str]
    #: Weight and bias masks installed (``prune``) or multiplied in (``bake``).
    masks: List[str]
    #: Shortcut masks with zero channels, applied by a forward hook on the shortcut module.
    shortcut_masks: List[str]
    #: Masks relief never applies (``inert_masks``), left out.
    inert: List[str]
    #: Entries kept / total over the installed weight and bias masks.
    kept: int
    total: int

    def __str__(self) -> str:
        pct = 100.0 * self.kept / self.total if self.total else 100.0
        return (f"loaded {len(self.loaded)} tensors, {len(self.masks)} masks ({self.kept}/{self.total} entries kept, "
                f"{pct:.2f} %), {len(self.shortcut_masks)} shortcut masks, {len(self.inert)} inert masks skipped")


def _owner(module: nn.Module, name: str) -> Tuple[Optional[nn.Module], str]:
    path, _, leaf = name.rpartition(".")
    try:
        return (module.get_submodule(path) if path else module), leaf
    except AttributeError:
        return None, leaf


def _logical_state(module: nn.Module) -> Dict[str, Tuple[torch.Tensor, bool]]:
    """``name -> (tensor, pruned)``: the module's state_dict with ``torch.nn.utils.prune``
    reparametrisations (``w_orig`` + ``w_mask``) folded back to ``w``."""
    sd = module.state_dict(keep_vars=True)
    out: Dict[str, Tuple[torch.Tensor, bool]] = {}
    for k, v in sd.items():
        if k.endswith("_mask") and k[: -len("_mask")] + "_orig" in sd:
            continue
        if k.endswith("_orig") and k[: -len("_orig")] + "_mask" in sd:
            out[k[: -len("_orig")]] = (v, True)
        else:
            out[k] = (v, False)
    return out


def _shortcut_hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
    if isinstance(output, torch.fx.Proxy):
        # Tracing (export, or the spec check of a later load_checkpoint) reads the module's own
        # structure; the mask is relief's, not part of it.
        return output
    return output * module.relief_shortcut_mask.view(1, -1, 1, 1).to(output.dtype)


def load_checkpoint(
    module: nn.Module,
    path: "os.PathLike[str] | str",
    masks: str = "prune",
    *,
    check_spec: bool = True,
) -> LoadReport:
    """Loads a relief checkpoint into ``module`` (the PyTorch model it was made from, e.g. by
    :func:`relief_torch.export`): weights and buffers by name, then the masks.

    ``masks="prune"`` installs each weight / bias mask with
    ``torch.nn.utils.prune.custom_from_mask`` (``<name>_orig`` + ``<name>_mask``; masked weights
    stay zero while training); ``masks="bake"`` multiplies them into the tensors and leaves
    plain parameters. Masks relief never applies (``inert_masks``: the ResNet stem in
    ``reference`` semantics) are skipped. A residual block's shortcut mask with zero channels is
    applied by a forward hook on the module at the mask's path (an empty ``nn.Sequential``,
    ``nn.Identity`` or option-A ``LambdaLayer`` named ``shortcut``, as the authors' ResNets
    have); a mask of all ones needs nothing.

    Before changing anything every name and shape is checked: checkpoint tensors the module
    lacks, module tensors the checkpoint lacks (``num_batches_tracked`` may be absent), shapes
    that differ, NaN or infinite weights, masks without a tensor or hook point, mask values other
    than 0 and 1, malformed metadata (``num_classes``, ``model_spec``: the field is named) are
    listed in one :class:`CheckpointError`. With ``check_spec`` (default) and a ``model_spec`` in
    the metadata the module is also traced and compared with the checkpoint's spec layer by layer,
    so a different network with the same names and shapes is refused too. A module with a
    parameter or buffer whose name starts with a prefix relief reserves (``mask.``, ``opt.``,
    ``best.``: a submodule named ``mask``, ``opt`` or ``best``) is refused before the file is read:
    its tensors could not be told from the checkpoint's masks, optimizer state or best weights.
    The module is left in its training mode; returns a :class:`LoadReport`."""
    if masks not in ("prune", "bake"):
        raise CheckpointError(f"load_checkpoint: the argument `masks` must be 'prune' or 'bake', got {shown(masks)}")
    if not isinstance(module, nn.Module):
        raise CheckpointError(f"load_checkpoint: the argument `module` must be a torch.nn.Module, got "
                              f"{type(module).__name__}")
    path = as_path(path, "load_checkpoint: the argument `path`", CheckpointError)
    target = _logical_state(module)
    reserved = [k for k in target if k.startswith(RESERVED_PREFIXES)]
    if reserved:
        raise CheckpointError(f"{path}: cannot load into {type(module).__name__}: its state_dict entry "
                              f"`{cut(reserved[0])}` {reserved_reason(reserved[0])}")
    try:
        tensors, meta = read_safetensors(path)
    except ReliefTorchError as e:
        raise CheckpointError(str(e)) from e
    if meta.get("format") == "relief-compact":
        raise CheckpointError(f"{path}: this is a compacted model (relief export --compact): its layers are smaller "
                              "than the module's; build it with relief_torch.load_compacted instead")
    state = {k: v for k, v in tensors.items() if not k.startswith(RESERVED_PREFIXES)}
    mask_tensors = {k[len(MASK_PREFIX):]: v for k, v in tensors.items() if k.startswith(MASK_PREFIX)}
    inert = {n for n in meta.get("inert_masks", "").split(",") if n}
    arch = cut(meta.get("arch", "?"))

    problems: List[str] = []
    classes: Optional[int] = None
    if "num_classes" in meta:
        text = meta["num_classes"]
        if not (text.isascii() and text.isdigit() and int(text) >= 1):
            problems.append(f"metadata `num_classes` is {shown(text)}, expected a positive integer")
        else:
            classes = int(text)
    missing = [k for k in target if k not in state and not k.endswith(".num_batches_tracked")]
    unexpected = [k for k in state if k not in target]
    misshaped = [f"`{cut(k)}`: checkpoint {list(state[k].shape)}, module {list(target[k][0].shape)}"
                 for k in state if k in target and tuple(state[k].shape) != tuple(target[k][0].shape)]
    if missing:
        problems.append("missing from the checkpoint: " + names(missing))
    if unexpected:
        problems.append("not in the module: " + names(unexpected))
    if misshaped:
        problems.append("shapes differ: " + "; ".join(misshaped[:NAMES_LIMIT])
                        + (f"; and {len(misshaped) - NAMES_LIMIT} more" if len(misshaped) > NAMES_LIMIT else ""))
    for k, v in state.items():
        if k in target and v.is_floating_point():
            nan, inf = int(torch.isnan(v).sum()), int(torch.isinf(v).sum())
            if nan or inf:
                problems.append(f"tensor `{cut(k)}` has {nan} NaN and {inf} inf entries of {v.numel()}")

    weight_masks: Dict[str, torch.Tensor] = {}
    shortcut_masks: Dict[str, torch.Tensor] = {}
    kept = total = 0
    for name, m in sorted(mask_tensors.items()):
        if m.is_complex() or (m.numel() and not bool(((m == 0) | (m == 1)).all())):
            problems.append(f"mask `{cut(name)}` holds values other than 0 and 1")
            continue
        if name in target:
            shape = tuple(target[name][0].shape)
            if tuple(m.shape) != shape:
                if len(shape) == 4 and tuple(m.shape) == shape[:2] + (1, 1):
                    m = m.expand(shape)  # a kernel-level conv mask (`out x in x 1 x 1`)
                else:
                    problems.append(f"mask `{cut(name)}` has shape {list(m.shape)}, the tensor {list(shape)}")
                    continue
            if name in inert:
                continue
            owner, leaf = _owner(module, name)
            if owner is None or not isinstance(getattr(owner, leaf, None), torch.Tensor):
                problems.append(f"mask `{cut(name)}`: no parameter `{cut(name)}` to mask")
                continue
            weight_masks[name] = m
            kept += int((m != 0).sum())
            total += m.numel()
        else:
            owner, leaf = _owner(module, name)
            hook_point = getattr(owner, leaf, None) if owner is not None else None
            if m.dim() != 1:
                problems.append(f"mask `{cut(name)}` {list(m.shape)} matches no tensor of the module")
            elif bool((m != 0).all()):
                continue  # an all-ones shortcut mask changes nothing
            elif not isinstance(hook_point, nn.Module):
                problems.append(
                    f"shortcut mask `{cut(name)}` zeroes {int((m == 0).sum())} of {m.numel()} residual channels, but "
                    f"the module has no submodule `{cut(name)}` to apply it to: give the block its shortcut as a "
                    "module at that path (e.g. `self.shortcut = nn.Sequential()` for an identity shortcut), or use the "
                    "compacted model (relief_torch.load_compacted)")
            else:
                shortcut_masks[name] = m

    if not problems and check_spec and "model_spec" in meta:
        problems.extend(_spec_problems(module, meta["model_spec"], classes))
    if problems:
        if len(problems) > NAMES_LIMIT:
            problems = problems[:NAMES_LIMIT] + [f"and {len(problems) - NAMES_LIMIT} more problems"]
        raise CheckpointError(f"{path}: the checkpoint (arch `{arch}`) does not fit {type(module).__name__}; nothing "
                              "was loaded:\n  - " + "\n  - ".join(problems))

    # Everything fits: now change the module.
    loaded = []
    with torch.no_grad():
        for name, value in state.items():
            t, pruned = target[name]
            if pruned:
                owner, leaf = _owner(module, name)
                prune.remove(owner, leaf)
                t = getattr(owner, leaf)
            t.copy_(value.to(t.dtype))
            loaded.append(name)
        for name, m in weight_masks.items():
            owner, leaf = _owner(module, name)
            if prune.is_pruned(owner) and hasattr(owner, leaf + "_orig"):
                prune.remove(owner, leaf)
            p = getattr(owner, leaf)
            mm = m.to(device=p.device, dtype=p.dtype)
            if masks == "bake":
                p.mul_(mm)
            else:
                prune.custom_from_mask(owner, leaf, mm)
        for name, m in shortcut_masks.items():
            hp = module.get_submodule(name)
            old = getattr(hp, "_relief_shortcut_hook", None)
            if old is not None:
                old.remove()
            device = next((t.device for t in module.parameters()), torch.device("cpu"))
            hp.register_buffer("relief_shortcut_mask", m.to(device=device, dtype=torch.float32), persistent=False)
            hp._relief_shortcut_hook = hp.register_forward_hook(_shortcut_hook)
    return LoadReport(loaded, sorted(weight_masks), sorted(shortcut_masks), sorted(inert & set(mask_tensors)), kept,
                      total)


def _spec_problems(module: nn.Module, text: str, meta_classes: Optional[int]) -> List[str]:
    """Differences between the module, traced, and the checkpoint's spec (metadata
    ``model_spec``; ``meta_classes`` from metadata ``num_classes``)."""
    from .export import spec_entries, trace_program

    try:
        spec = parse_spec(text)
        classes = meta_classes if meta_classes is not None else spec["num_classes"]
        theirs = canonical_spec(spec, classes)
    except ValueError as e:
        return [f"metadata `model_spec` is not a readable spec ({cut(e, 400)})"]
    try:
        program = trace_program(module, spec["input_shape"])
    except ExportError as e:
        return [f"the module cannot be traced to compare it with the checkpoint's spec ({cut(e, 1000)}); pass "
                "check_spec=False to load by names and shapes only"]
    mine_spec = {"input_shape": program.input_shape, "num_classes": program.num_classes,
                 "layer": spec_entries(program)}
    mine = canonical_spec(mine_spec, program.num_classes)
    if classes != program.num_classes:
        return [f"the checkpoint has {classes} classes, the module outputs {program.num_classes}"]
    if list(spec["input_shape"]) != program.input_shape:
        return [f"input shapes differ: checkpoint {spec['input_shape']}, module {program.input_shape}"]
    for i in range(max(len(theirs), len(mine))):
        a = theirs[i] if i < len(theirs) else None
        b = mine[i] if i < len(mine) else None
        if a != b:
            return [f"the module's forward differs from the checkpoint's spec at step {i}: checkpoint "
                    f"{_show(a)}, module {_show(b)} (pass check_spec=False to load by names and shapes only)"]
    return []


def _show(step: Optional[tuple]) -> str:
    if step is None:
        return "(nothing)"
    kind, *rest = step
    return f"{kind}({', '.join(cut(x) for x in rest)})" if rest else cut(kind)
