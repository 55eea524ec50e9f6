"""Any PyTorch data as a relief dataset: ``data.dataset = "tensors"``.

:func:`save_dataset` writes a training and a test split as safetensors, in the layout relief's
``tensors`` loader reads (docs/data.md, "Your own data"):

- ``path`` ending in ``.safetensors``: one file holding ``train_x``, ``train_y``, ``test_x``,
  ``test_y``;
- any other ``path``: a directory with ``train.safetensors`` and ``test.safetensors``, each
  holding ``x`` and ``y``.

``x`` is ``N x C x H x W`` (images) or ``N x F`` (feature vectors, for MLP specs). uint8 ``x``
is kept as bytes (relief scales it by 1/255 and normalises it with ``data.mean``/``data.std``,
by default computed over the training split); floating ``x`` is stored as float32 and taken as
given. ``y`` is stored as int64 class indices. Class names, when given, go into the file's
metadata (``classes``, a JSON list) and relief shows them.

Every file is written atomically (temporary sibling, fsync, rename): a failure leaves no partial
file and an existing one unchanged.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from ._safetensors import _remove_quietly, commit, encode_safetensors, write_temp
from .errors import ReliefTorchError, cut

FORMAT = "relief-dataset/1"

Tensors = Tuple[torch.Tensor, torch.Tensor]


class DatasetError(ReliefTorchError):
    """A dataset that relief cannot take: what is wrong, naming the split and the item."""


def _label(value: Any, where: str) -> int:
    if isinstance(value, bool):
        raise DatasetError(f"{where}: the label is a bool; expected an integer class index")
    if isinstance(value, int):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() \
            and value.dtype != torch.bool:
        return int(value.item())
    raise DatasetError(f"{where}: the label is {cut(repr(value), 80)}; expected an integer class index "
                       "(an int or a one-element integer tensor)")


def _from_dataset(ds: Any, split: str, batch: int = 4096) -> Tensors:
    """Stacks a map-style dataset of ``(tensor, label)`` pairs (anything with ``__len__`` and
    ``__getitem__``; an iterable works too)."""
    xs: List[torch.Tensor] = []
    ys: List[int] = []
    chunks: List[torch.Tensor] = []
    shape: Optional[Tuple[int, ...]] = None
    dtype: Optional[torch.dtype] = None
    items = (ds[i] for i in range(len(ds))) if hasattr(ds, "__len__") and hasattr(ds, "__getitem__") else iter(ds)
    for i, item in enumerate(items):
        where = f"{split} item {i}"
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DatasetError(f"{where}: expected a (tensor, label) pair, got {type(item).__name__}")
        x, y = item[0], item[1]
        if not isinstance(x, torch.Tensor):
            raise DatasetError(f"{where}: the input is a {type(x).__name__}; expected a torch.Tensor "
                               "(add transforms.PILToTensor() or ToTensor() to the dataset)")
        if shape is None:
            shape, dtype = tuple(x.shape), x.dtype
        elif tuple(x.shape) != shape or x.dtype != dtype:
            raise DatasetError(f"{where}: shape {list(x.shape)} {x.dtype}, but item 0 is {list(shape)} {dtype}; "
                               "every input must have the same shape and dtype (resize them first)")
        xs.append(x.detach().to("cpu"))
        ys.append(_label(y, where))
        if len(xs) == batch:
            chunks.append(torch.stack(xs))
            xs = []
    if xs:
        chunks.append(torch.stack(xs))
    if not chunks:
        raise DatasetError(f"{split}: the dataset is empty")
    return torch.cat(chunks), torch.tensor(ys, dtype=torch.int64)


def _as_tensors(value: Any, split: str) -> Tensors:
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(t, torch.Tensor) for t in value):
        return value[0].detach().to("cpu"), value[1].detach().to("cpu")
    if isinstance(value, torch.Tensor):
        raise DatasetError(f"{split}: a single tensor; expected (x, y) tensors or a dataset of (tensor, label) pairs")
    return _from_dataset(value, split)


def _checked(x: torch.Tensor, y: torch.Tensor, split: str) -> Tensors:
    if x.dim() not in (2, 4):
        raise DatasetError(f"{split}: x has shape {list(x.shape)}; expected N x C x H x W images or N x F features")
    if x.shape[0] == 0:
        raise DatasetError(f"{split}: no examples")
    if any(d == 0 for d in x.shape[1:]):
        raise DatasetError(f"{split}: x has shape {list(x.shape)}; every dimension must be positive")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise DatasetError(f"{split}: {x.shape[0]} inputs but y has shape {list(y.shape)}; expected [{x.shape[0]}]")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise DatasetError(f"{split}: y is {y.dtype}; expected integer class indices")
    y = y.to(torch.int64)
    if bool((y < 0).any()):
        i = int((y < 0).nonzero()[0, 0])
        raise DatasetError(f"{split}: label {int(y[i])} at example {i} is negative; expected class indices from 0")
    if x.dtype == torch.uint8:
        return x.contiguous(), y.contiguous()
    if x.is_floating_point():
        x = x.to(torch.float32)
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            i = int(bad.reshape(x.shape[0], -1).any(1).nonzero()[0, 0])
            raise DatasetError(f"{split}: example {i} holds NaN or infinite values ({int(bad.sum())} in all)")
        return x.contiguous(), y.contiguous()
    raise DatasetError(f"{split}: x is {x.dtype}; expected uint8 (image bytes) or a floating type (taken as given)")


def _split(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int) -> Tuple[Tensors, Tensors]:
    """A stratified split: ``fraction`` of each class (at least one example of every class with
    two or more) goes to the test set, chosen with ``seed``."""
    if not (0.0 < fraction < 1.0):
        raise DatasetError(f"test_fraction = {fraction}: expected a share in (0, 1)")
    g = torch.Generator().manual_seed(seed)
    test_idx: List[torch.Tensor] = []
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().reshape(-1)
        idx = idx[torch.randperm(idx.numel(), generator=g)]
        k = int(round(fraction * idx.numel()))
        if idx.numel() >= 2:
            k = min(max(k, 1), idx.numel() - 1)
        else:
            k = 0
        test_idx.append(idx[:k])
    test = torch.sort(torch.cat(test_idx)).values
    mask = torch.ones(y.shape[0], dtype=torch.bool)
    mask[test] = False
    if test.numel() == 0:
        raise DatasetError(f"test_fraction = {fraction} leaves no test example; give more data or a larger share")
    return (x[mask], y[mask]), (x[test], y[test])


def save_dataset(
    data: Any,
    path: Union[str, "os.PathLike[str]"],
    *,
    test: Any = None,
    test_fraction: Optional[float] = None,
    seed: int = 0,
    classes: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Writes a relief ``tensors`` dataset (see the module docs) and returns a summary.

    ``data`` is the training split, or a mapping with ``"train"`` and ``"test"``; each split is
    ``(x, y)`` tensors or any dataset of ``(tensor, label)`` pairs (a ``torch.utils.data.Dataset``,
    a list). The test split comes from ``test``, from the mapping, or is carved from ``data``
    with ``test_fraction`` (stratified per class, ``seed`` picks the examples).

    Example::

        train = torchvision.datasets.FashionMNIST(root, train=True, transform=PILToTensor())
        test = torchvision.datasets.FashionMNIST(root, train=False, transform=PILToTensor())
        relief_torch.save_dataset(train, "fashion.safetensors", test=test, classes=train.classes)

    then ``[data] dataset = "tensors"`` and ``dir = "fashion.safetensors"`` in a relief config.
    """
    if isinstance(data, Mapping):
        unknown = sorted(set(data) - {"train", "test"})
        if unknown or "train" not in data:
            raise DatasetError(f"a mapping must hold \"train\" (and \"test\"); got keys {sorted(data)}")
        if test is not None and "test" in data:
            raise DatasetError("the test split is given twice (in the mapping and as test=)")
        test = data.get("test", test)
        data = data["train"]
    if test is not None and test_fraction is not None:
        raise DatasetError("give either test= or test_fraction=, not both")
    x, y = _checked(*_as_tensors(data, "train"), "train")
    if test is not None:
        tx, ty = _checked(*_as_tensors(test, "test"), "test")
    elif test_fraction is not None:
        (x, y), (tx, ty) = _split(x, y, float(test_fraction), seed)
    else:
        raise DatasetError("no test split: pass test=..., a {\"train\": ..., \"test\": ...} mapping, or "
                           "test_fraction=0.2 to carve one from the data")
    if tuple(tx.shape[1:]) != tuple(x.shape[1:]) or tx.dtype != x.dtype:
        raise DatasetError(f"test inputs are {list(tx.shape[1:])} {tx.dtype}, training inputs "
                           f"{list(x.shape[1:])} {x.dtype}; both splits must match")
    num_classes = int(max(int(y.max()), int(ty.max()))) + 1
    meta = {"format": FORMAT, "num_classes": str(num_classes)}
    if classes is not None:
        names = [str(c) for c in classes]
        if len(names) < num_classes:
            raise DatasetError(f"{len(names)} class names for labels up to {num_classes - 1}")
        meta["classes"] = json.dumps(names)
        num_classes = len(names)
        meta["num_classes"] = str(num_classes)
    path = os.fspath(path)
    if not path:
        raise DatasetError("path is empty")
    created = False
    if path.endswith(".safetensors"):
        if os.path.isdir(path):
            raise DatasetError(f"{path}: is a directory; a .safetensors path names one file")
        files = {path: {"train_x": x, "train_y": y, "test_x": tx, "test_y": ty}}
    else:
        if os.path.exists(path) and not os.path.isdir(path):
            raise DatasetError(f"{path}: exists and is not a directory (end the path in .safetensors for one file)")
        parent = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(parent):
            what = "is not a directory" if os.path.exists(parent) else "does not exist"
            raise DatasetError(f"{path}: its parent {parent} {what}")
        created = not os.path.exists(path)
        os.makedirs(path, exist_ok=True)
        files = {os.path.join(path, "train.safetensors"): {"x": x, "y": y},
                 os.path.join(path, "test.safetensors"): {"x": tx, "y": ty}}
    # Both files are written to temporary siblings first and renamed only when all are on disk.
    temps: List[Tuple[str, str]] = []
    try:
        for file, tensors in files.items():
            temps.append((write_temp(file, encode_safetensors(tensors, meta)), file))
        for tmp, file in temps:
            commit(tmp, file)
    except BaseException:
        for tmp, _ in temps:
            _remove_quietly(tmp)
        if created:
            try:
                os.rmdir(path)
            except OSError:
                pass
        raise
    return {
        "path": path,
        "train": int(x.shape[0]),
        "test": int(tx.shape[0]),
        "shape": list(x.shape[1:]),
        "dtype": str(x.dtype).replace("torch.", ""),
        "num_classes": num_classes,
    }
