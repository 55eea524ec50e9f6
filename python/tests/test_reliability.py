"""Hostile but realistic inputs: every failure is one of relief_torch's own errors (never a raw
TypeError / KeyError / struct.error), its message names the file, field, tensor, row or argument
at fault and quotes user input at a readable length, input files stay byte for byte as they
were, writes are atomic, and the command line ends every failure with exactly one ``error:``
line and status 1, never a traceback.

Files are crafted here (small safetensors written directly), so nothing but the last test needs
the relief binary; that one (a real ``relief export --sparse`` file, edited) is skipped without
it. Run from the repository root: ``scripts/test_python.sh test_reliability`` (or any test name).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import types
import unittest
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional
from unittest import mock

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from test_roundtrip import NO_RELIEF, REPO, RELIEF, fake_checkpoint, relief  # noqa: E402

import relief_torch as rt  # noqa: E402
from relief_torch import CheckpointError, CompactedError, ExportError, ReliefTorchError  # noqa: E402
from relief_torch.__main__ import main as cli_main  # noqa: E402

KEEP = bool(os.environ.get("RELIEF_TORCH_KEEP"))
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


# --- tiny models and factories (the command-line tests import these) ----------------------------

class Tiny(nn.Module):
    """6 features -> 4 (ReLU) -> 3 classes."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))

    def forward(self, x):
        return self.body(x)


class MaskNamed(nn.Module):
    """A submodule named `mask`: its parameters are `mask.weight`, `mask.bias`."""

    def __init__(self):
        super().__init__()
        self.mask = nn.Linear(6, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(F.relu(self.mask(x)))


class ReservedDeeper(nn.Module):
    """`opt.0.weight` and `best.weight`; and a `mask` that is not the first component."""

    def __init__(self):
        super().__init__()
        self.opt = nn.Sequential(nn.Linear(6, 4))
        self.best = nn.Linear(4, 3)

    def forward(self, x):
        return self.best(F.relu(self.opt(x)))


class InnerMask(nn.Module):
    """`body.mask.weight`: `mask` is not the first component, so nothing is reserved."""

    def __init__(self):
        super().__init__()
        self.body = nn.Module()
        self.body.mask = nn.Linear(6, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(F.relu(self.body.mask(x)))


def tiny_factory() -> nn.Module:
    torch.manual_seed(0)
    return Tiny()


def raising_factory() -> nn.Module:
    raise RuntimeError("the factory failed on purpose: CUDA not available")


def exiting_factory() -> nn.Module:
    sys.exit(3)


def dict_factory():
    return {"not": "a module"}


def reserved_factory() -> nn.Module:
    return MaskNamed()


NOT_CALLABLE = 42


# --- helpers ------------------------------------------------------------------------------------

def snapshot(paths: Iterable[Path]) -> Dict[Path, Optional[bytes]]:
    return {Path(p): (Path(p).read_bytes() if Path(p).is_file() else None) for p in paths}


def header_of(path: Path) -> Dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n])


def rewrite_header(path: Path, header: Dict, out: Path) -> Path:
    """``path`` with its JSON header replaced (the data bytes kept) as ``out``."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    out.write_bytes(struct.pack("<Q", len(h)) + h + raw[8 + n:])
    return out


def csr(w: torch.Tensor):
    """relief's CSR encoding of a weight: values (f32), crow (int32), col (int16)."""
    m = w.reshape(w.shape[0], -1)
    nz = m != 0
    crow = torch.cat([torch.zeros(1, dtype=torch.long), nz.sum(1).cumsum(0)]).to(torch.int32)
    col = nz.nonzero()[:, 1].to(torch.int16)
    return m[nz].contiguous(), crow, col


def bitmask(w: torch.Tensor):
    """relief's bitmask encoding: values (f32) and the packed bits (uint8, LSB first)."""
    flat = w.reshape(-1)
    nz = flat != 0
    n = flat.numel()
    bits = F.pad(nz.long(), (0, -n % 8)).view(-1, 8)
    packed = (bits * (2 ** torch.arange(8))).sum(1).to(torch.uint8)
    return flat[nz].contiguous(), packed


TINY_GRAPH = {
    "arch": "tiny", "input_shape": [6], "num_classes": 3, "convention": "lenet",
    "layers": [
        {"name": "fc1", "op": {"Linear": {"inputs": 6, "outputs": 4}}, "bias": True, "batch_norm": None,
         "activation": "Relu", "role": "Plain", "input_hw": [1, 1]},
        {"name": "fc2", "op": {"Linear": {"inputs": 4, "outputs": 3}}, "bias": True, "batch_norm": None,
         "activation": "Identity", "role": "Plain", "input_hw": [1, 1]},
    ],
    "blocks": [],
    "nodes": [{"Layer": 0}, {"Layer": 1}],
}


def tiny_weights() -> Dict[str, torch.Tensor]:
    """The dense tensors of the tiny compacted model: fc1 sparse enough for CSR, fc2 for a
    bitmask (every row of fc1 keeps at least two columns)."""
    g = torch.Generator().manual_seed(0)
    fc1 = torch.randn(4, 6, generator=g)
    fc1[fc1.abs() < 0.6] = 0
    fc1[:, 0] = 1.5
    fc1[:, 5] = -0.5
    fc2 = torch.randn(3, 4, generator=g)
    fc2[0, 1] = fc2[2, 3] = 0
    return {"fc1.weight": fc1, "fc1.bias": torch.randn(4, generator=g), "fc2.weight": fc2,
            "fc2.bias": torch.randn(3, generator=g)}


def write_sparse(path: Path, *, edit_tensors=None, edit_entries=None, edit_meta=None) -> Path:
    """A sparse compacted file of the tiny model (fc1 as CSR, fc2 as bitmask), optionally
    edited before it is written."""
    w = tiny_weights()
    v1, crow, col = csr(w["fc1.weight"])
    v2, bits = bitmask(w["fc2.weight"])
    tensors = {"fc1.weight::values": v1, "fc1.weight::crow": crow, "fc1.weight::col": col,
               "fc2.weight::values": v2, "fc2.weight::bits": bits, "fc1.bias": w["fc1.bias"],
               "fc2.bias": w["fc2.bias"]}
    entries = {"fc1.weight": {"layout": "csr", "shape": [4, 6], "dtype": "f32"},
               "fc2.weight": {"layout": "bitmask", "shape": [3, 4], "dtype": "f32"}}
    if edit_tensors:
        edit_tensors(tensors)
    if edit_entries:
        edit_entries(entries)
    meta = {"format": "relief-compact", "version": "1", "graph": json.dumps(TINY_GRAPH),
            "sparse": json.dumps(entries)}
    if edit_meta:
        edit_meta(meta)
    rt.write_safetensors(path, tensors, meta)
    return path


def write_compact(path: Path, graph=None, meta_edit=None) -> Path:
    """A (dense) compacted file of the tiny model with ``graph`` (default: the tiny graph)."""
    meta = {"format": "relief-compact", "version": "1",
            "graph": graph if isinstance(graph, str) else json.dumps(TINY_GRAPH if graph is None else graph)}
    if meta_edit:
        meta_edit(meta)
    rt.write_safetensors(path, tiny_weights(), meta)
    return path


def tiny_graph(**edits) -> Dict:
    g = json.loads(json.dumps(TINY_GRAPH))
    for k, v in edits.items():
        g[k] = v
    return g


class _Case(unittest.TestCase):
    """A temporary directory per test, and the checks every test makes."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="relief-torch-reliability-"))

    def tearDown(self):
        if not KEEP:
            shutil.rmtree(self.tmp, ignore_errors=True)

    @contextlib.contextmanager
    def unchanged(self, *paths: Path):
        """The files (or their absence) are byte for byte the same afterwards."""
        before = snapshot(paths)
        yield
        after = snapshot(paths)
        for p in before:
            self.assertEqual(before[p], after[p], f"{p} was changed")

    def raises(self, cls, fn, *args, names=(), **kwargs) -> str:
        """``fn`` raises exactly relief_torch's ``cls`` (not a raw error), whose message holds
        every one of ``names``; returns the message."""
        with self.assertRaises(ReliefTorchError) as cm:
            fn(*args, **kwargs)
        self.assertIsInstance(cm.exception, cls, f"{type(cm.exception).__name__}: {cm.exception}")
        msg = str(cm.exception)
        for n in names:
            self.assertIn(n, msg)
        return msg

    def no_temporaries(self, d: Path):
        left = [p.name for p in d.rglob("*") if p.name.endswith(".tmp")]
        self.assertEqual(left, [], "temporary files left behind")


# --- 1. reserved names --------------------------------------------------------------------------

class TestReservedNames(_Case):
    def test_export_refuses_a_submodule_named_mask(self):
        out = self.tmp / "out"
        self.raises(ExportError, rt.export, MaskNamed(), (6,), out,
                          names=["`mask.weight`", "`mask.`", "masks", "Rename the submodule `mask`"])
        self.assertFalse(out.exists(), "nothing is written on an error")

    def test_export_refuses_opt_and_best_prefixes(self):
        msg = self.raises(ExportError, rt.export, ReservedDeeper(), (6,), self.tmp / "out",
                          names=["`opt.0.weight`", "optimizer state", "Rename the submodule `opt`", "`best.weight`"])
        self.assertFalse((self.tmp / "out").exists())
        self.assertIn("ReservedDeeper", msg)

    def test_reserved_word_below_the_first_component_is_fine(self):
        res = rt.export(InnerMask(), (6,), self.tmp / "out")
        self.assertIn("body.mask.weight", res.tensor_names)
        rep = rt.load_checkpoint(InnerMask(), res.weights_path)
        self.assertIn("body.mask.weight", rep.loaded)

    def test_load_checkpoint_refuses_a_module_with_reserved_names(self):
        torch.manual_seed(0)
        ck = fake_checkpoint(Tiny(), (6,), self.tmp / "ck.safetensors")
        module = MaskNamed()
        before = {k: v.clone() for k, v in module.state_dict().items()}
        with self.unchanged(ck):
            self.raises(CheckpointError, rt.load_checkpoint, module, ck,
                        names=[str(ck), "`mask.weight`", "Rename the submodule `mask`"])
        for k, v in module.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), k)

    def test_optimizer_state_and_best_weights_are_not_model_tensors(self):
        torch.manual_seed(0)
        src = Tiny()
        ck = fake_checkpoint(src, (6,), self.tmp / "plain.safetensors")
        tensors, meta = rt.read_safetensors(ck)
        # A relief checkpoint in training: Adam moments and the best weights so far, which differ.
        tensors["opt.body.0.weight.exp_avg"] = torch.full((4, 6), 7.0)
        tensors["opt.step"] = torch.tensor(12)
        tensors["best.body.0.weight"] = torch.full((4, 6), -9.0)
        tensors["best.body.0.bias"] = torch.full((4,), -9.0)
        mask = (torch.arange(24).view(4, 6) % 3 != 0).to(torch.uint8)
        tensors["mask.body.0.weight"] = mask
        full = self.tmp / "full.safetensors"
        rt.write_safetensors(full, tensors, meta)
        dst = Tiny()
        with self.unchanged(full):
            rep = rt.load_checkpoint(dst, full, masks="bake")
        self.assertEqual(rep.masks, ["body.0.weight"])
        self.assertTrue(torch.equal(dst.body[0].weight, src.body[0].weight * mask))
        self.assertTrue(torch.equal(dst.body[0].bias, src.body[0].bias))
        self.assertNotIn("best.body.0.weight", rep.loaded)


# --- 2a. truncated and corrupt safetensors files ------------------------------------------------

class TestCorruptFiles(_Case):
    def setUp(self):
        super().setUp()
        torch.manual_seed(0)
        self.good = fake_checkpoint(Tiny(), (6,), self.tmp / "good.safetensors")
        self.raw = self.good.read_bytes()
        (self.n,) = struct.unpack("<Q", self.raw[:8])

    def check_every_reader(self, data: bytes, name: str):
        """Each reader refuses the file with its own error type, naming it; the file stays."""
        path = self.tmp / name
        path.write_bytes(data)
        with self.unchanged(path):
            self.raises(ReliefTorchError, rt.read_safetensors, path, names=[str(path)])
            self.raises(CheckpointError, rt.load_checkpoint, Tiny(), path, names=[str(path)])
            self.raises(CompactedError, rt.load_compacted, path, names=[str(path)])

    def test_truncated_data(self):
        self.check_every_reader(self.raw[:-7], "truncated.safetensors")

    def test_truncated_header(self):
        self.check_every_reader(self.raw[:8 + self.n // 2], "cut-header.safetensors")

    def test_header_length_past_the_end(self):
        self.check_every_reader(struct.pack("<Q", len(self.raw) * 4) + self.raw[8:], "long-header.safetensors")

    def test_header_is_not_json(self):
        bad = bytearray(self.raw)
        bad[8] = ord("[")
        bad[9:14] = b"oops!"
        self.check_every_reader(bytes(bad), "not-json.safetensors")

    def test_data_offsets_out_of_range(self):
        h = header_of(self.good)
        name = next(k for k in h if k != "__metadata__")
        h[name]["data_offsets"][1] += 10_000
        path = rewrite_header(self.good, h, self.tmp / "offsets.safetensors")
        self.check_every_reader(path.read_bytes(), "offsets2.safetensors")

    def test_empty_and_tiny_files(self):
        self.check_every_reader(b"", "empty.safetensors")
        self.check_every_reader(b"\x01\x02\x03", "three-bytes.safetensors")

    def test_a_directory_and_a_non_path(self):
        self.raises(CheckpointError, rt.load_checkpoint, Tiny(), self.tmp, names=[str(self.tmp), "directory"])
        self.raises(CompactedError, rt.load_compacted, None, names=["path", "NoneType"])
        self.raises(CheckpointError, rt.load_checkpoint, Tiny(), 3.5, names=["path", "float"])
        self.raises(CheckpointError, rt.load_checkpoint, "not a module", self.good, names=["module", "str"])
        self.raises(CheckpointError, rt.load_checkpoint, Tiny(), self.good, masks="sometimes",
                    names=["masks", "'sometimes'"])


# --- 2b. sparse files -----------------------------------------------------------------------------

class TestSparseFiles(_Case):
    def load_error(self, *names: str, **edits) -> str:
        path = write_sparse(self.tmp / "edited.safetensors", **edits)
        with self.unchanged(path):
            return self.raises(CompactedError, rt.load_compacted, path, names=[str(path), *names])

    def test_the_crafted_file_loads_exactly(self):
        # The baseline the edits below start from: relief's layouts, read back exactly.
        m = rt.load_compacted(write_sparse(self.tmp / "ok.safetensors"))
        for k, v in tiny_weights().items():
            self.assertTrue(torch.equal(m.state_dict()[k], v), k)

    def test_repeated_column_in_a_row(self):
        def dup(t):
            col = t["fc1.weight::col"].clone()
            crow = t["fc1.weight::crow"]
            r = 2
            col[int(crow[r]) + 1] = col[int(crow[r])]  # row 2 names one column twice
            t["fc1.weight::col"] = col
        msg = self.load_error("`fc1.weight`", "row 2", "appears twice", "strictly increasing", edit_tensors=dup)
        self.assertNotIn("Traceback", msg)

    def test_unsorted_columns_in_a_row(self):
        def swap(t):
            col = t["fc1.weight::col"].clone()
            s = int(t["fc1.weight::crow"][1])
            col[s], col[s + 1] = col[s + 1].clone(), col[s].clone()  # row 1 out of order
            t["fc1.weight::col"] = col
        self.load_error("`fc1.weight`", "row 1", "strictly increasing", edit_tensors=swap)

    def test_column_out_of_range_names_the_row(self):
        def far(t):
            col = t["fc1.weight::col"].clone()
            col[-1] = 6
            t["fc1.weight::col"] = col
        self.load_error("`fc1.weight`", "row 3", "column index 6 lies outside 0..5", edit_tensors=far)

    def test_row_offsets_not_monotone(self):
        def bump(t):
            crow = t["fc1.weight::crow"].clone()
            crow[1], crow[2] = crow[2].clone(), crow[1].clone()
            t["fc1.weight::crow"] = crow
        self.load_error("`fc1.weight::crow`", "decreases at row 1", edit_tensors=bump)

    def test_last_offset_is_not_the_value_count(self):
        def short(t):
            t["fc1.weight::values"] = t["fc1.weight::values"][:-1].clone()
            t["fc1.weight::col"] = t["fc1.weight::col"][:-1].clone()
        self.load_error("`fc1.weight::crow` ends at", "the last row offset is the value count", edit_tensors=short)

    def test_index_tensor_of_the_wrong_dtype(self):
        def floats(t):
            t["fc1.weight::crow"] = t["fc1.weight::crow"].float()
        self.load_error("`fc1.weight::crow`", "torch.float32", "integers", edit_tensors=floats)

    def test_bitmask_of_the_wrong_length_or_count(self):
        def longer(t):
            t["fc2.weight::bits"] = torch.cat([t["fc2.weight::bits"], torch.zeros(1, dtype=torch.uint8)])
        self.load_error("`fc2.weight::bits`", "2 uint8 bytes", edit_tensors=longer)

        def one_more_bit(t):
            b = t["fc2.weight::bits"].clone()
            b[0] |= 2  # fc2[0, 1] was zero
            t["fc2.weight::bits"] = b
        self.load_error("`fc2.weight`", "set bits for", edit_tensors=one_more_bit)

    def test_shape_entries_of_the_wrong_type(self):
        for bad, expect in (("6", "a string"), (-6, "-6"), (2.5, "2.5"), (True, "a boolean"), (None, "null")):
            with self.subTest(bad=bad):
                def edit(e, bad=bad):
                    e["fc1.weight"]["shape"] = [4, bad]
                self.load_error("metadata `sparse`", "entry `fc1.weight`", "field `shape[1]`", expect,
                                "non-negative integer", edit_entries=edit)

    def test_shape_that_contradicts_the_graph(self):
        def edit(e):
            e["fc1.weight"]["shape"] = [4, 10 ** 12]  # would allocate terabytes
        self.load_error("field `shape`", "graph's tensor `fc1.weight` has shape [4, 6]", edit_entries=edit)

    def test_missing_unknown_and_mistyped_fields(self):
        cases = [
            (lambda e: e["fc1.weight"].pop("dtype"), "field `dtype` is missing"),
            (lambda e: e["fc2.weight"].update(order="C"), "unknown field `order`"),
            (lambda e: e["fc1.weight"].update(layout="coo"), "field `layout`"),
            (lambda e: e["fc1.weight"].update(dtype=32), "field `dtype` is an integer"),
            (lambda e: e["fc1.weight"].update(shape="4x6"), "field `shape` is a string"),
            (lambda e: e.update({"fc1.weight": [4, 6]}), "entry `fc1.weight`: is an array"),
        ]
        for edit, expect in cases:
            with self.subTest(expect=expect):
                self.load_error("metadata `sparse`", expect, edit_entries=edit)

    def test_sparse_metadata_not_json_or_not_an_object(self):
        self.load_error("metadata `sparse` is not JSON", edit_meta=lambda m: m.update(sparse="{fc1.weight: csr"))
        self.load_error("metadata `sparse` is an array", edit_meta=lambda m: m.update(sparse="[1, 2]"))

    def test_values_missing_or_stored_twice(self):
        self.load_error("`fc1.weight::values` is missing", edit_tensors=lambda t: t.pop("fc1.weight::values"))

        def twice(t):
            t["fc1.weight"] = torch.zeros(4, 6)
        self.load_error("stored both dense", edit_tensors=twice)

    def test_non_finite_values(self):
        def nan(t):
            v = t["fc1.weight::values"].clone()
            v[3] = float("nan")
            t["fc1.weight::values"] = v
        self.load_error("`fc1.weight` has 1 NaN and 0 inf entries of 24", edit_tensors=nan)

    def test_densify_on_its_own_raises_compacted_error(self):
        tensors, meta = rt.read_safetensors(write_sparse(self.tmp / "ok.safetensors"))
        meta["sparse"] = json.dumps({"fc1.weight": {"layout": "csr", "shape": [4, "6"], "dtype": "f32"}})
        self.raises(CompactedError, rt.sparse.densify, tensors, meta, names=["`shape[1]`"])


# --- 2c. compacted and checkpoint metadata ------------------------------------------------------

class TestCompactedMetadata(_Case):
    def load_error(self, path: Path, *names: str) -> str:
        with self.unchanged(path):
            return self.raises(CompactedError, rt.load_compacted, path, names=[str(path), *names])

    def test_the_crafted_file_loads(self):
        m = rt.load_compacted(write_compact(self.tmp / "ok.safetensors"))
        x = torch.randn(5, 6)
        w = tiny_weights()
        want = F.linear(F.relu(F.linear(x, w["fc1.weight"], w["fc1.bias"])), w["fc2.weight"], w["fc2.bias"])
        self.assertTrue(torch.allclose(m(x), want, atol=1e-6))

    def test_graph_fields_of_the_wrong_type(self):
        cases = [
            (("layers", 0, "op", "Linear", "inputs"), "6", "`layers[0].op.Linear.inputs`"),
            (("layers", 1, "bias"), "yes", "`layers[1].bias`"),
            (("layers", 0, "name"), "fc 1", "`layers[0].name`"),
            (("layers", 0, "activation"), "Gelu", "`layers[0].activation`"),
            (("nodes", 1), {"Layer": 5}, "`nodes[1].Layer` is 5, but the graph has 2 layers"),
            (("nodes", 0), {"Layer": -1}, "`nodes[0].Layer`"),
            (("input_shape",), [6, "x"], "`input_shape`"),
            (("num_classes",), 0, "`num_classes`"),
            (("layers",), {"fc1": 1}, "`layers` is an object"),
        ]
        for i, (where, value, expect) in enumerate(cases):
            with self.subTest(expect=expect):
                g = tiny_graph()
                obj = g
                for k in where[:-1]:
                    obj = obj[k]
                obj[where[-1]] = value
                self.load_error(write_compact(self.tmp / f"g{i}.safetensors", g), "metadata `graph`", expect)

    def test_graph_with_a_missing_field(self):
        g = tiny_graph()
        del g["nodes"]
        self.load_error(write_compact(self.tmp / "nonodes.safetensors", g), "field `nodes` is missing")
        g = tiny_graph()
        del g["layers"][1]["op"]["Linear"]["outputs"]
        self.load_error(write_compact(self.tmp / "noout.safetensors", g), "`layers[1].op.Linear.outputs` is missing")

    def test_graph_nodes_out_of_range_values(self):
        g = tiny_graph(nodes=[{"Layer": 0}, {"Dropout": {"p": 1.5}}, {"Layer": 1}])
        self.load_error(write_compact(self.tmp / "p.safetensors", g), "`nodes[1].Dropout.p`", "[0, 1)")
        g = tiny_graph(nodes=[{"Layer": 0}, {"MaxPool2d": {"kernel": 0, "stride": 0}}, {"Layer": 1}])
        self.load_error(write_compact(self.tmp / "pool.safetensors", g), "`nodes[1].MaxPool2d.kernel`")
        g = tiny_graph(nodes=[{"Layer": 0}, "Teleport", {"Layer": 1}])
        self.load_error(write_compact(self.tmp / "kind.safetensors", g), "`nodes[1]`", "'Teleport'")

    def test_graph_not_json_deeply_nested_or_not_an_object(self):
        self.load_error(write_compact(self.tmp / "a.safetensors", "{not json"), "metadata `graph` is not JSON")
        self.load_error(write_compact(self.tmp / "b.safetensors", "[" * 200_000), "metadata `graph` is not JSON")
        self.load_error(write_compact(self.tmp / "c.safetensors", "[1, 2]"), "`graph` is an array")

    def test_format_and_version(self):
        self.load_error(write_compact(self.tmp / "v.safetensors", meta_edit=lambda m: m.update(version="2")),
                        "metadata `version` is '2'")
        self.load_error(write_compact(self.tmp / "f.safetensors", meta_edit=lambda m: m.pop("format")),
                        "metadata `format` is None")
        self.load_error(write_compact(self.tmp / "n.safetensors", meta_edit=lambda m: m.pop("graph")),
                        "no `graph`")


class TestCheckpointMetadata(_Case):
    def edited(self, name: str, meta_edit=None, tensor_edit=None) -> Path:
        torch.manual_seed(0)
        ck = fake_checkpoint(Tiny(), (6,), self.tmp / "base.safetensors")
        tensors, meta = rt.read_safetensors(ck)
        if meta_edit:
            meta_edit(meta)
        if tensor_edit:
            tensor_edit(tensors)
        out = self.tmp / name
        rt.write_safetensors(out, tensors, meta)
        return out

    def load_error(self, path: Path, *names: str) -> str:
        module = Tiny()
        before = {k: v.clone() for k, v in module.state_dict().items()}
        with self.unchanged(path):
            msg = self.raises(CheckpointError, rt.load_checkpoint, module, path, names=[str(path), *names])
        for k, v in module.state_dict().items():
            self.assertTrue(torch.equal(v, before[k]), f"{k} changed: nothing is loaded on an error")
        return msg

    def test_num_classes_not_an_integer(self):
        for bad in ("ten", "-3", "1e1", " 3"):
            with self.subTest(bad=bad):
                path = self.edited("nc.safetensors", lambda m, bad=bad: m.update(num_classes=bad))
                self.load_error(path, "metadata `num_classes`", repr(bad), "positive integer")

    def test_model_spec_field_of_the_wrong_type(self):
        def edit(m):
            m["model_spec"] = m["model_spec"].replace("out_features = 4", 'out_features = "4"')
        self.load_error(self.edited("spec.safetensors", edit), "metadata `model_spec`", "`layer[0].out_features`",
                        "a string")

        def no_kernel(m):
            m["model_spec"] = m["model_spec"].replace('kind = "relu"', 'kind = "max_pool"')
        self.load_error(self.edited("pool.safetensors", no_kernel), "metadata `model_spec`", "`layer[1].kernel` is "
                        "missing")

    def test_model_spec_not_toml_or_without_fields(self):
        self.load_error(self.edited("toml.safetensors", lambda m: m.update(model_spec="layer = [[[")),
                        "metadata `model_spec`", "not TOML")
        self.load_error(self.edited("shape.safetensors",
                                    lambda m: m.update(model_spec=m["model_spec"].replace("input_shape = [6]",
                                                                                          'input_shape = "6"'))),
                        "metadata `model_spec`", "`input_shape` is a string")

    def test_non_finite_weights(self):
        def nan(t):
            t["body.2.weight"][0, 1] = float("nan")
            t["body.2.bias"][2] = float("inf")
        msg = self.load_error(self.edited("nan.safetensors", tensor_edit=nan), "`body.2.weight` has 1 NaN",
                              "`body.2.bias` has 0 NaN and 1 inf")
        self.assertIn("nothing was loaded", msg)


# --- 4. quote lengths -----------------------------------------------------------------------------

class TestQuoteLengths(_Case):
    def test_huge_graph_value_is_cut(self):
        g = tiny_graph()
        g["layers"][0]["name"] = "x-" * 100_000
        path = write_compact(self.tmp / "huge.safetensors", g)
        msg = self.raises(CompactedError, rt.load_compacted, path, names=[str(path), "`layers[0].name`",
                                                                          "(200002 characters)"])
        self.assertLess(len(msg), 1000)

    def test_huge_sparse_layout_is_cut(self):
        path = write_sparse(self.tmp / "layout.safetensors",
                            edit_entries=lambda e: e["fc1.weight"].update(layout="csr" * 50_000))
        msg = self.raises(CompactedError, rt.load_compacted, path, names=["field `layout`", "..."])
        self.assertLess(len(msg), 1000)

    def test_thousands_of_long_stray_names_are_listed_briefly(self):
        torch.manual_seed(0)
        ck = fake_checkpoint(Tiny(), (6,), self.tmp / "base.safetensors")
        tensors, meta = rt.read_safetensors(ck)
        for i in range(600):
            tensors[f"stray{i:04d}." + "n" * 1000] = torch.zeros(1)
        meta["arch"] = "A" * 100_000
        path = self.tmp / "stray.safetensors"
        rt.write_safetensors(path, tensors, meta)
        msg = self.raises(CheckpointError, rt.load_checkpoint, Tiny(), path, names=["not in the module", "and 580 more",
                                                                                     "(100000 characters)"])
        self.assertLess(len(msg), 8000)

    def test_huge_argument_values_are_cut(self):
        msg = self.raises(ExportError, rt.export, Tiny(), "6" * 10_000, self.tmp / "o", names=["input_shape"])
        self.assertLess(len(msg), 1000)
        msg = self.raises(ExportError, rt.export, Tiny(), (6,), self.tmp / "o", convention="v" * 10_000,
                          names=["convention", "..."])
        self.assertLess(len(msg), 1000)


# --- atomic writes --------------------------------------------------------------------------------

class TestAtomicWrites(_Case):
    def test_failed_write_keeps_the_old_file_and_names_the_target(self):
        path = self.tmp / "w.safetensors"
        rt.write_safetensors(path, {"a": torch.ones(3)}, {"k": "old"})
        calls: List[str] = []
        real_replace = os.replace

        def no_space(fd):
            calls.append("fsync")
            raise OSError(28, "No space left on device")

        with self.unchanged(path), mock.patch("os.fsync", side_effect=no_space), \
                mock.patch("os.replace", side_effect=lambda a, b: (calls.append("replace"), real_replace(a, b))):
            msg = self.raises(ReliefTorchError, rt.write_safetensors, path, {"a": torch.zeros(3)}, {"k": "new"},
                              names=[f"{path}: cannot write", "No space left on device"])
        self.assertNotIn(".tmp", msg)
        self.assertEqual(calls, ["fsync"], "the rename never happens before the data is on disk")
        self.no_temporaries(self.tmp)
        self.assertEqual(rt.read_safetensors(path)[1]["k"], "old")

    def test_write_fsyncs_then_renames(self):
        path = self.tmp / "w.safetensors"
        order: List[str] = []
        real_fsync, real_replace = os.fsync, os.replace
        with mock.patch("os.fsync", side_effect=lambda fd: (order.append("fsync"), real_fsync(fd))), \
                mock.patch("os.replace", side_effect=lambda a, b: (order.append(f"replace {Path(a).name}"),
                                                                   real_replace(a, b))):
            rt.write_safetensors(path, {"a": torch.ones(3)})
        self.assertEqual(order[0], "fsync")
        self.assertEqual(order[1], f"replace w.safetensors.{os.getpid()}.tmp")
        self.assertTrue(torch.equal(rt.read_safetensors(path)[0]["a"], torch.ones(3)))
        self.no_temporaries(self.tmp)

    def test_export_failing_on_its_second_file_leaves_nothing(self):
        ex = importlib.import_module("relief_torch.export")  # the module (the package's `export` is the function)
        real = ex.write_temp

        def spec_fails(path, chunks):
            if str(path).endswith("model.toml"):
                raise ReliefTorchError(f"{path}: cannot write: No space left on device")
            return real(path, chunks)

        new_dir = self.tmp / "new"
        with mock.patch.object(ex, "write_temp", side_effect=spec_fails):
            self.raises(ExportError, rt.export, Tiny(), (6,), new_dir, names=["model.toml", "No space left"])
        self.assertFalse(new_dir.exists(), "the directory export created is removed again")
        # Into an existing export: both old files stay as they were.
        old = rt.export(Tiny(), (6,), self.tmp / "old")
        files = [Path(old.spec_path), Path(old.weights_path)]
        with self.unchanged(*files), mock.patch.object(ex, "write_temp", side_effect=spec_fails):
            self.raises(ExportError, rt.export, Tiny(), (6,), self.tmp / "old", names=["No space left"])
        self.no_temporaries(self.tmp)

    def test_export_refuses_unwritable_outputs_before_any_work(self):
        f = self.tmp / "file"
        f.write_bytes(b"precious")
        with self.unchanged(f):
            self.raises(ExportError, rt.export, Tiny(), (6,), f, names=[str(f), "not a directory"])
            self.raises(ExportError, rt.export, Tiny(), (6,), f / "sub", names=["parent", "is not a directory"])
        self.raises(ExportError, rt.export, Tiny(), (6,), self.tmp / "no" / "such" / "dir",
                    names=["parent", "does not exist"])
        (self.tmp / "d" / "model.toml").mkdir(parents=True)
        self.raises(ExportError, rt.export, Tiny(), (6,), self.tmp / "d", names=["model.toml", "is a directory"])
        self.assertFalse((self.tmp / "no").exists())
        self.assertEqual(sorted(p.name for p in (self.tmp / "d").iterdir()), ["model.toml"])

    def test_permission_denied_is_named(self):
        # What an unwritable directory gives a non-root user (root's permission checks pass).
        st = importlib.import_module("relief_torch._safetensors")
        denied = PermissionError(13, "Permission denied")
        with mock.patch("os.mkdir", side_effect=denied):
            self.raises(ExportError, rt.export, Tiny(), (6,), self.tmp / "out",
                        names=[str(self.tmp / "out"), "cannot create the output directory: Permission denied"])
        self.assertFalse((self.tmp / "out").exists())
        (self.tmp / "ro").mkdir()
        with mock.patch.object(st, "open", create=True, side_effect=denied):
            self.raises(ExportError, rt.export, Tiny(), (6,), self.tmp / "ro",
                        names=[str(self.tmp / "ro" / "weights.safetensors"), "cannot write: Permission denied"])
        self.assertEqual(list((self.tmp / "ro").iterdir()), [])

    @unittest.skipIf(IS_ROOT, "running as root: permissions do not stop root from writing")
    def test_export_into_an_unwritable_directory(self):
        d = self.tmp / "ro"
        d.mkdir()
        d.chmod(0o500)
        try:
            self.raises(ExportError, rt.export, Tiny(), (6,), d / "out", names=["cannot create", "denied"])
            self.raises(ExportError, rt.export, Tiny(), (6,), d, names=["cannot write", "denied"])
        finally:
            d.chmod(0o700)


# --- 3. the command line --------------------------------------------------------------------------

def _env() -> Dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "python"), str(Path(__file__).parent)]))


def run_cli(args: List[str], cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "relief_torch", *args], capture_output=True, text=True,
                          env=_env(), timeout=180, cwd=cwd)


def run_cli_inprocess(args: List[str]) -> types.SimpleNamespace:
    """``main(args)`` with stdout and stderr captured: what ``python -m relief_torch`` prints, as
    long as nothing escapes ``main`` (which would be a traceback; the test then errors)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli_main(args)
    return types.SimpleNamespace(returncode=rc, stdout=out.getvalue(), stderr=err.getvalue())


class _CliCase(_Case):
    def assert_one_error(self, p, *names: str) -> str:
        self.assertEqual(p.returncode, 1, f"stdout: {p.stdout}\nstderr: {p.stderr}")
        self.assertNotIn("Traceback", p.stderr)
        errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
        self.assertEqual(len(errors), 1, p.stderr)
        for n in names:
            self.assertIn(n, p.stderr)
        return errors[0]


class TestCommandLineProcesses(_CliCase):
    """Real ``python -m relief_torch`` processes, one per way out of ``main`` (an argument
    argparse refuses, a factory that raises, an export that refuses its ``--out``), run side by
    side: each imports torch. The other failures run in-process below (the same ``main``)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = Path(tempfile.mkdtemp(prefix="relief-torch-cli-"))
        d = cls.dir
        (d / "existing-file").write_bytes(b"not a directory")
        cls.inputs = [d / "existing-file"]
        cls.before = snapshot(cls.inputs)
        shape = ["--input-shape", "6"]
        cases = {
            "raises": ["export", "--factory", "test_reliability:raising_factory", *shape, "--out", str(d / "o1")],
            "out_file": ["export", "--factory", "test_reliability:tiny_factory", *shape, "--out",
                         str(d / "existing-file")],
            "shape": ["export", "--factory", "test_reliability:tiny_factory", "--input-shape", "1,28,abc", "--out",
                      str(d / "o3")],
        }
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(cases)) as pool:
            futures = {k: pool.submit(run_cli, args) for k, args in cases.items()}
            cls.results = {k: f.result() for k, f in futures.items()}

    @classmethod
    def tearDownClass(cls):
        if not KEEP:
            shutil.rmtree(cls.dir, ignore_errors=True)

    def tearDown(self):
        super().tearDown()
        self.assertEqual(snapshot(self.inputs), self.before, "an input file was changed")
        self.assertEqual(sorted(p.name for p in self.dir.iterdir() if p.name.startswith("o")), [],
                         "a failed export wrote an output")
        self.no_temporaries(self.dir)

    def test_factory_that_raises(self):
        self.assert_one_error(self.results["raises"], "test_reliability:raising_factory", "RuntimeError",
                              "the factory failed on purpose: CUDA not available")

    def test_out_is_an_existing_file(self):
        self.assert_one_error(self.results["out_file"], str(self.dir / "existing-file"), "not a directory")

    def test_bad_input_shape(self):
        line = self.assert_one_error(self.results["shape"], "--input-shape", "'1,28,abc'")
        self.assertNotIn("usage:", self.results["shape"].stderr)
        self.assertIn("--help", line)


class TestCommandLineInProcess(_CliCase):
    """The other failures, through ``main`` in this process (fast; the same output)."""

    def cli(self, *args: str):
        return run_cli_inprocess(list(args))

    def export_args(self, factory: str, out: Optional[Path] = None, *extra: str) -> List[str]:
        return ["export", "--factory", factory, "--input-shape", "6", "--out", str(out or self.tmp / "out"), *extra]

    def tearDown(self):
        self.assertFalse((self.tmp / "out").exists(), "a failed export wrote its output")
        self.no_temporaries(self.tmp)
        super().tearDown()

    def test_factory_not_callable_or_missing(self):
        self.assert_one_error(self.cli(*self.export_args("test_reliability:NOT_CALLABLE")), "NOT_CALLABLE",
                              "int, not callable")
        self.assert_one_error(self.cli(*self.export_args("test_reliability:no_such_function")),
                              "has no `no_such_function`")
        self.assert_one_error(self.cli(*self.export_args("no_such_module_xyz:make")),
                              "cannot import `no_such_module_xyz`", "ModuleNotFoundError")
        self.assert_one_error(self.cli(*self.export_args("just_a_module_name")), "package.module:function")

    def test_factory_module_that_cannot_be_imported(self):
        (self.tmp / "broken_factory.py").write_text("def make(:\n    pass\n")
        sys.path.insert(0, str(self.tmp))
        try:
            self.assert_one_error(self.cli(*self.export_args("broken_factory:make")), "broken_factory:make",
                                  "cannot import `broken_factory`", "SyntaxError")
        finally:
            sys.path.remove(str(self.tmp))

    def test_out_in_a_missing_parent(self):
        out = self.tmp / "missing" / "out"
        self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory", out)),
                              str(self.tmp / "missing"), "does not exist")
        self.assertFalse((self.tmp / "missing").exists())

    def test_huge_factory_is_quoted_briefly(self):
        p = self.cli(*self.export_args("m" * 60_000 + ":f"))
        self.assert_one_error(p, "--factory", "mmmm... (60004 characters)")
        self.assertLess(len(p.stderr), 1000)

    def test_factory_returns_a_non_module_or_exits(self):
        self.assert_one_error(self.cli(*self.export_args("test_reliability:dict_factory")), "dict_factory",
                              "returned a dict, not a torch.nn.Module")
        self.assert_one_error(self.cli(*self.export_args("test_reliability:exiting_factory")), "exiting_factory",
                              "SystemExit")

    def test_factory_module_with_reserved_names(self):
        self.assert_one_error(self.cli(*self.export_args("test_reliability:reserved_factory")), "`mask.weight`",
                              "Rename the submodule `mask`")

    def test_out_under_a_regular_file(self):
        f = self.tmp / "file"
        f.write_bytes(b"x")
        with self.unchanged(f):
            self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory", f / "out")),
                                  "is not a directory")

    def test_bad_numbers_flags_and_missing_arguments(self):
        self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--num-classes", "ten"),
                              "--num-classes", "'ten'")
        self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--num-classes", "0"),
                              "positive integer")
        self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--num-classes", "7"),
                              "num_classes = 7, but the module outputs 3")
        self.assert_one_error(self.cli("export", "--factory", "test_reliability:tiny_factory", "--out", "x"),
                              "--input-shape")
        self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--frobnicate"),
                              "--frobnicate")
        self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--convention", "lstm"),
                              "--convention", "'lstm'")
        self.assert_one_error(self.cli("export", "--factory", "test_reliability:tiny_factory", "--input-shape",
                                       "0,28,28", "--out", "x"), "'0,28,28'")
        self.assert_one_error(self.cli("import"), "invalid choice: 'import'")
        self.assert_one_error(self.cli(), "required")
        self.assert_one_error(self.cli("export", "--factory", "test_reliability:tiny_factory", "--input-shape", "6",
                                       "--out", ""), "--out", "empty path")

    def test_bad_weights_files(self):
        torch.manual_seed(0)
        raw = fake_checkpoint(Tiny(), (6,), self.tmp / "w.safetensors").read_bytes()
        cut_file = self.tmp / "truncated.safetensors"
        cut_file.write_bytes(raw[: len(raw) // 2])
        with self.unchanged(cut_file):
            self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--weights",
                                           str(cut_file)), str(cut_file), "not a readable safetensors file")
        pt = self.tmp / "garbage.pt"
        pt.write_bytes(b"\x80\x04 not a pickle at all")
        lst = self.tmp / "list.pt"
        torch.save([torch.zeros(1)], lst)
        with self.unchanged(pt, lst):
            self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--weights", str(pt)),
                                  str(pt), "torch.load")
            self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--weights", str(lst)),
                                  str(lst), "expected a state_dict", "got list")
            self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--weights",
                                           str(self.tmp / "missing.pt")), "no such file")
            self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory"), "--weights",
                                           str(self.tmp)), "is a directory")

    def test_weights_that_are_the_output(self):
        exp = rt.export(tiny_factory(), (6,), self.tmp / "prev")
        with self.unchanged(Path(exp.weights_path), Path(exp.spec_path)):
            self.assert_one_error(self.cli(*self.export_args("test_reliability:tiny_factory", self.tmp / "prev",
                                                             "--weights", exp.weights_path)),
                                  "is the file export would write")

    def test_success_leaves_exactly_the_two_files(self):
        out = self.tmp / "fresh"
        p = self.cli(*self.export_args("test_reliability:tiny_factory", out))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stderr, "")
        self.assertEqual(sorted(x.name for x in out.iterdir()), ["model.toml", "weights.safetensors"])


# --- a real relief-made sparse file, edited ---------------------------------------------------------

@unittest.skipIf(RELIEF is None, NO_RELIEF)
class TestRealSparseFile(_Case):
    def test_relief_sparse_file_with_a_repeated_column(self):
        torch.manual_seed(0)
        module = nn.Sequential(nn.Linear(600, 16), nn.ReLU(), nn.Linear(16, 3))
        g = torch.Generator().manual_seed(1)
        masks = {"0.weight": (torch.rand(16, 600, generator=g) < 0.03).to(torch.uint8)}
        masks["0.weight"][:, :2] = 1  # every row keeps at least two columns
        masks.update({"0.bias": torch.ones(16, dtype=torch.uint8), "2.weight": torch.ones(3, 16, dtype=torch.uint8),
                      "2.bias": torch.ones(3, dtype=torch.uint8)})
        ck = fake_checkpoint(module, (600,), self.tmp / "ck.safetensors", masks)
        sparse = self.tmp / "sparse.safetensors"
        relief("export", "--sparse", "--compact", str(ck), "--out", str(sparse))
        tensors, meta = rt.read_safetensors(sparse)
        self.assertEqual(json.loads(meta["sparse"])["0.weight"]["layout"], "csr")
        good = rt.load_compacted(sparse)
        self.assertTrue(torch.equal(good.state_dict()["0.weight"], module[0].weight.detach() * masks["0.weight"]))
        col, crow = tensors["0.weight::col"].clone(), tensors["0.weight::crow"]
        col[int(crow[5]) + 1] = col[int(crow[5])]
        tensors["0.weight::col"] = col
        edited = self.tmp / "edited.safetensors"
        rt.write_safetensors(edited, tensors, meta)
        with self.unchanged(edited, sparse, ck):
            self.raises(CompactedError, rt.load_compacted, edited,
                        names=[str(edited), "`0.weight`", "row 5", "appears twice"])


if __name__ == "__main__":
    unittest.main()
