"""The PyTorch round trip against the relief binary: export -> relief run -> load_checkpoint /
load_compacted, checked against relief's own evaluation; and every bad input's error.

Run from the repository root: ``scripts/test_python.sh`` (or ``.venv/bin/python -m unittest
discover -s python/tests -t python/tests``). The relief binary comes from ``RELIEF_BIN``, else
``target/debug/relief``, else ``target/release/relief``; without one the tests that need it are
skipped (and say so). Data: the bundled MNIST sample (``data/mnist-sample``) and a CIFAR-shaped
dataset the tests write from it.

The strongest check relief offers from outside is its evaluation: ``relief eval --json`` reports
the accuracy on a dataset directory. Besides the real labels, every check writes a copy of the
test split whose labels are the PyTorch module's own predictions: relief's accuracy on it is
100 % exactly when relief's model predicts the same class as the PyTorch module for every one of
the test images.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))

import relief_torch as rt  # noqa: E402
from relief_torch import CheckpointError, CompactedError, ExportError  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
MNIST_DIR = REPO / "data" / "mnist-sample"
KEEP = bool(os.environ.get("RELIEF_TORCH_KEEP"))


def relief_binary() -> Optional[str]:
    env = os.environ.get("RELIEF_BIN")
    if env:
        p = Path(env)
        p = p if p.is_absolute() else REPO / p
        return str(p) if p.is_file() else None
    for rel in ("target/debug/relief", "target/release/relief"):
        p = REPO / rel
        if p.is_file():
            return str(p)
    return None


RELIEF = relief_binary()
NO_RELIEF = ("no relief binary: set RELIEF_BIN or build target/debug/relief (cargo build)"
             + (f" (RELIEF_BIN={os.environ['RELIEF_BIN']} does not exist)" if os.environ.get("RELIEF_BIN") else ""))
#: Skips a test class (each of its tests, with the reason) when there is no relief binary.
needs_relief = unittest.skipIf(RELIEF is None, NO_RELIEF)


def relief(*args: str, timeout: int = 300) -> str:
    """Runs relief; returns stdout, raises AssertionError with stderr on failure."""
    p = subprocess.run([RELIEF, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if p.returncode != 0:
        raise AssertionError(f"relief {' '.join(args)} failed ({p.returncode}):\n{p.stderr}\n{p.stdout}")
    return p.stdout


def relief_eval(path: Path, *extra: str) -> Dict:
    return json.loads(relief("eval", str(path), "--json", "--device", "cpu", *extra))


# --- data -------------------------------------------------------------------------------------

def read_idx(path: Path) -> torch.Tensor:
    raw = gzip.open(path, "rb").read()
    magic, n = struct.unpack(">II", raw[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        return torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).view(n, 1, rows, cols)
    assert magic == 2049, path
    return torch.frombuffer(bytearray(raw[8:]), dtype=torch.uint8).to(torch.long)


_MNIST: Dict[str, torch.Tensor] = {}


def mnist() -> Dict[str, torch.Tensor]:
    """The bundled sample as u8 images and labels (train 8004, test 1996)."""
    if not _MNIST:
        for split, prefix in (("train", "train"), ("test", "t10k")):
            _MNIST[f"{split}_x"] = read_idx(MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
            _MNIST[f"{split}_y"] = read_idx(MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
    return _MNIST


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_cifar(digits: torch.Tensor) -> torch.Tensor:
    """MNIST digits (N x 1 x 28 x 28 u8) as CIFAR-shaped colour images (N x 3 x 32 x 32 u8)."""
    d = F.pad(digits, (2, 2, 2, 2))
    return torch.cat([d, d // 2, 255 - d], dim=1).contiguous()


class Dataset:
    """One of the two datasets: ``kind`` mnist or cifar10, u8 images, labels, and how relief
    preprocesses them (MNIST: /255; CIFAR: /255 then ImageNet-normalised, torchvision's order)."""

    def __init__(self, kind: str, root: Path):
        self.kind = kind
        m = mnist()
        if kind == "mnist":
            self.train_x, self.train_y = m["train_x"], m["train_y"]
            self.test_x, self.test_y = m["test_x"], m["test_y"]
            self.dir = MNIST_DIR
        else:
            self.train_x, self.train_y = to_cifar(m["train_x"][:1000]), m["train_y"][:1000]
            self.test_x, self.test_y = to_cifar(m["test_x"][:500]), m["test_y"][:500]
            self.dir = root / "cifar10"
            self.write(self.dir, self.test_y)

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32).div(255)
        if self.kind == "mnist":
            return x
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        return x.sub(mean).div(std)

    def write(self, out: Path, test_labels: torch.Tensor) -> Path:
        """A copy of the dataset on disk whose test labels are ``test_labels``."""
        out.mkdir(parents=True, exist_ok=True)
        if self.kind == "mnist":
            for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
                if not (out / name).exists():
                    os.symlink(MNIST_DIR / name, out / name)
            labels = bytes(test_labels.to(torch.uint8).tolist())
            with gzip.open(out / "t10k-labels-idx1-ubyte.gz", "wb") as f:
                f.write(struct.pack(">II", 2049, len(labels)) + labels)
            return out

        def records(x: torch.Tensor, y: torch.Tensor) -> bytes:
            buf = bytearray()
            flat = x.reshape(x.shape[0], -1)
            for i in range(x.shape[0]):
                buf.append(int(y[i]))
                buf += bytes(flat[i].tolist())
            return bytes(buf)

        per = self.train_x.shape[0] // 5
        for b in range(5):
            (out / f"data_batch_{b + 1}.bin").write_bytes(
                records(self.train_x[b * per:(b + 1) * per], self.train_y[b * per:(b + 1) * per]))
        (out / "test_batch.bin").write_bytes(records(self.test_x, test_labels))
        return out


def pretrain(module: nn.Module, data: Dataset, examples: int = 3000, batch: int = 100, lr: float = 1e-2) -> None:
    """A short Adam training run, so that relief prunes a model that has learnt something; then
    the BatchNorm running statistics are recomputed over 1000 training images (a short run
    leaves them far from the batch statistics the weights were trained with)."""
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    examples = min(examples, data.train_x.shape[0])
    idx = torch.randperm(data.train_x.shape[0], generator=g)[:examples]
    for s in range(0, examples, batch):
        j = idx[s:s + batch]
        opt.zero_grad()
        F.cross_entropy(module(data.prep(data.train_x[j])), data.train_y[j]).backward()
        opt.step()
    bns = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    if bns:
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
        with torch.no_grad():
            for s in range(0, 1000, 250):
                module(data.prep(data.train_x[s:s + 250]))
        for m, mom in zip(bns, saved):
            m.momentum = mom
    module.eval()


def logits_of(module: nn.Module, data: Dataset) -> torch.Tensor:
    module.eval()
    with torch.no_grad():
        return torch.cat([module(data.prep(data.test_x[s:s + 500])) for s in range(0, data.test_x.shape[0], 500)])


def ambiguous(logits: torch.Tensor) -> int:
    """Test images whose top two logits are too close for float summation order to settle."""
    top = logits.topk(2, dim=1).values
    return int(((top[:, 0] - top[:, 1]) < 1e-4 * max(1.0, float(logits.abs().max()))).sum())


def max_rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / max(1.0, float(a.abs().max())))


# --- models defined here (not relief's zoo) ---------------------------------------------------

class LambdaLayer(nn.Module):
    """The authors' option-A shortcut wrapper (CIFAR ResNets)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class BasicBlock(nn.Module):
    """The authors' BasicBlock: option A pads with a LambdaLayer, option B projects."""

    def __init__(self, inputs: int, planes: int, stride: int = 1, option: str = "A"):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride == 1 and inputs == planes:
            self.shortcut = nn.Sequential()
        elif option == "A":
            pad = planes // 4
            self.shortcut = LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))
        else:
            self.shortcut = nn.Sequential(nn.Conv2d(inputs, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        return F.relu(out)


class SmallResNet(nn.Module):
    """A small CNN with BatchNorm and two residual blocks, the second downsampling with an
    option-B (1x1 conv + BatchNorm) shortcut; 1 x 28 x 28 (a stride-2 stem keeps it quick)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 8, 1, "B"))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, 2, "B"))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer2(self.layer1(out))
        return self.fc(torch.flatten(self.pool(out), 1))


class OwnNamesBlock(nn.Module):
    """A shape-keeping residual block named its own way (not conv1/bn1/...)."""

    def __init__(self, planes: int):
        super().__init__()
        self.c1 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.n1 = nn.BatchNorm2d(planes)
        self.act = nn.ReLU(inplace=True)
        self.c2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.n2 = nn.BatchNorm2d(planes)
        self.skip = nn.Identity()
        self.out = nn.ReLU()

    def forward(self, x):
        y = self.n2(self.c2(self.act(self.n1(self.c1(x)))))
        return self.out(self.skip(x) + y)


class ResNetA(nn.Module):
    """The authors' CIFAR-ResNet style on 1 x 28 x 28: a stem, an option-A (LambdaLayer)
    downsampling block, a block with its own names; exported with stem=True."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.layer1 = nn.Sequential(BasicBlock(8, 16, 2, "A"), OwnNamesBlock(16))
        self.linear = nn.Linear(16, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


class MLP(nn.Module):
    """A multilayer perceptron with dropout, on 1 x 28 x 28 images."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 32))
        self.out = nn.Linear(32, 10)

    def forward(self, x):
        return self.out(F.relu(self.net(x)))


class VGGLike(nn.Module):
    """A small VGG: conv-bn-relu blocks, max pooling, a dropout classifier; 3 x 32 x 32."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
            nn.MaxPool2d(2, 2),
        )
        self.classifier = nn.Sequential(nn.Linear(16 * 8 * 8, 32), nn.ReLU(inplace=True), nn.Dropout(0.3),
                                        nn.Linear(32, 10))

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.classifier(x)


def make_mlp() -> nn.Module:
    """Factory for the command-line test."""
    torch.manual_seed(0)
    return MLP()


def make_small_resnet() -> nn.Module:
    torch.manual_seed(0)
    return SmallResNet()


# --- the round trip -----------------------------------------------------------------------------

class _RoundTrip:
    """export -> relief run (pretrained = the exported weights) -> load_checkpoint and
    load_compacted, each compared with relief. Subclasses set the model."""

    model_cls: type = nn.Module
    input_shape: Tuple[int, ...] = (1, 28, 28)
    dataset = "mnist"
    stem: Optional[bool] = None
    semantics = "reference"

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix=f"relief-torch-{cls.__name__}-"))
        cls.data = Dataset(cls.dataset, cls.tmp)
        torch.manual_seed(0)
        cls.module = cls.model_cls()
        pretrain(cls.module, cls.data)
        cls.dense_logits = logits_of(cls.module, cls.data)
        cls.exported = rt.export(cls.module, cls.input_shape, cls.tmp / "export", stem=cls.stem)
        config = cls.tmp / "config.toml"
        config.write_text(f"""
name = "{cls.__name__}"
model = "{cls.exported.spec_path}"
pretrained = "{cls.exported.weights_path}"
seed = 3
device = "cpu"
threads = 1

[data]
dataset = "{"mnist" if cls.dataset == "mnist" else "cifar10"}"
dir = "{cls.data.dir}"
validation = 100
train_limit = 600
test_limit = 500
augment = false

[prune]
iterations = 2
batch_size = 200
semantics = "{cls.semantics}"
alpha_conv = 0.95
alpha_fc = 0.97

[retrain]
epochs = 1
batch_size = 60
milestones = []
""")
        cls.run_dir = cls.tmp / "run"
        relief("run", str(config), "--out", str(cls.run_dir), "--quiet", "--no-plots")
        cls.checkpoint = cls.run_dir / "iter-002.safetensors"
        cls.compacted_path = cls.tmp / "compact.safetensors"
        relief("export", "--compact", str(cls.checkpoint), "--out", str(cls.compacted_path))
        torch.manual_seed(1)  # a different initialisation: everything must come from the checkpoint
        cls.masked = cls.model_cls()
        cls.report = rt.load_checkpoint(cls.masked, cls.checkpoint, masks="prune")
        cls.masked_logits = logits_of(cls.masked, cls.data)
        cls.compacted = rt.load_compacted(cls.compacted_path)
        cls.compacted_logits = logits_of(cls.compacted, cls.data)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "tmp", None) is not None and not KEEP:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def labels_dir(self, name: str, logits: torch.Tensor) -> Path:
        return self.data.write(self.tmp / name, logits.argmax(1))

    def assert_relief_predicts(self, model_file: Path, logits: torch.Tensor, name: str, *extra: str):
        """relief's model in ``model_file`` predicts what ``logits`` predict, image by image."""
        preds = logits.argmax(1)
        self.assertGreaterEqual(len(preds.unique()), 3, "the model predicts (almost) one class: a weak check")
        d = self.labels_dir(name, logits)
        dataset = "mnist" if self.dataset == "mnist" else "cifar10"
        out = relief_eval(model_file, "--dataset", dataset, "--data", str(d), *extra)
        n = out["test_examples"]
        self.assertEqual(n, logits.shape[0])
        agree = round(out["test_accuracy"] * n / 100)
        self.assertGreaterEqual(agree, n - ambiguous(logits), f"relief and PyTorch disagree on {n - agree} of {n} "
                                                              "test images")

    def test_export_spec_is_accepted_and_dense_model_agrees(self):
        relief("models", "show", self.exported.spec_path)
        self.assertLess(self.exported.max_logit_difference, 1e-5)
        self.assert_relief_predicts(Path(self.exported.weights_path), self.dense_logits, "dense-labels")

    def test_checkpoint_pruned_something(self):
        self.assertGreater(self.report.total, 0)
        self.assertLess(self.report.kept, self.report.total, str(self.report))
        self.assertTrue(any(hasattr(m, "weight_mask") for m in self.masked.modules()), "prune reparametrisation")

    def test_masked_module_agrees_with_relief(self):
        self.assert_relief_predicts(self.checkpoint, self.masked_logits, "masked-labels")

    def test_masked_module_accuracy_equals_relief_eval(self):
        out = relief_eval(self.checkpoint, "--dataset", "mnist" if self.dataset == "mnist" else "cifar10",
                          "--data", str(self.data.dir))
        n = out["test_examples"]
        relief_correct = round(out["test_accuracy"] * n / 100)
        torch_correct = int((self.masked_logits.argmax(1) == self.data.test_y).sum())
        self.assertLessEqual(abs(relief_correct - torch_correct), ambiguous(self.masked_logits))

    def test_bake_equals_prune(self):
        torch.manual_seed(2)
        baked = self.model_cls()
        rep = rt.load_checkpoint(baked, self.checkpoint, masks="bake")
        self.assertEqual((rep.kept, rep.total), (self.report.kept, self.report.total))
        self.assertFalse(any(n.endswith("_orig") for n, _ in baked.named_parameters()))
        self.assertLessEqual(max_rel_diff(self.masked_logits, logits_of(baked, self.data)), 1e-6)

    def test_compacted_module_equals_masked_module(self):
        self.assertLessEqual(max_rel_diff(self.masked_logits, self.compacted_logits), 1e-5)
        tensors, meta = rt.read_safetensors(self.compacted_path)
        self.assertEqual(set(self.compacted.state_dict()), set(tensors))
        # The module has the compacted size relief reports (weights and biases of its layers).
        prunable = sum(p.numel() for m in self.compacted.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
                       for p in m.parameters())
        self.assertEqual(prunable, int(meta["compact_params"]))
        self.assertLessEqual(int(meta["compact_params"]), int(meta["dense_params"]))

    def test_compacted_module_agrees_with_relief(self):
        self.assert_relief_predicts(self.compacted_path, self.compacted_logits, "compact-labels")

    def test_compacted_module_scripts(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # deprecation notes and one about fx's own annotations
            scripted = torch.jit.script(self.compacted)
        x = self.data.prep(self.data.test_x[:64])
        with torch.no_grad():
            self.assertLessEqual(max_rel_diff(self.compacted(x), scripted(x)), 1e-6)
        buf = io.BytesIO()
        torch.jit.save(scripted, buf)
        buf.seek(0)
        with torch.no_grad():
            self.assertLessEqual(max_rel_diff(self.compacted(x), torch.jit.load(buf)(x)), 1e-6)

    def test_sparse_files_load_as_the_compacted_module(self):
        # `relief export --sparse`: the same model, smaller; float16 within its rounding.
        sparse, half = self.tmp / "sparse.safetensors", self.tmp / "half.safetensors"
        relief("export", "--sparse", "--compact", str(self.checkpoint), "--out", str(sparse))
        relief("export", "--sparse", "--dtype", "f16", "--compact", str(self.checkpoint), "--out", str(half))
        self.assertLess(sparse.stat().st_size, self.compacted_path.stat().st_size)
        self.assertLess(half.stat().st_size, sparse.stat().st_size)
        m = rt.load_compacted(sparse)
        self.assertEqual(m.state_dict().keys(), self.compacted.state_dict().keys())
        for k, v in self.compacted.state_dict().items():
            self.assertTrue(torch.equal(m.state_dict()[k], v), k)
        self.assertLessEqual(max_rel_diff(self.compacted_logits, logits_of(m, self.data)), 1e-6)
        h = rt.load_compacted(half)
        self.assertLessEqual(max_rel_diff(self.compacted_logits, logits_of(h, self.data)), 5e-2)
        # A weight as a torch sparse CSR matrix: the same matrix.
        name, w = next((k, v) for k, v in m.state_dict().items() if v.dim() >= 2)
        csr = rt.sparse.to_sparse_csr(w)
        self.assertTrue(torch.equal(csr.to_dense(), w.reshape(w.shape[0], -1)), name)

    def test_reload_into_pruned_module(self):
        # Loading again into the already pruned module replaces the masks and gives the same logits.
        rt.load_checkpoint(self.masked, self.checkpoint, masks="prune")
        self.assertLessEqual(max_rel_diff(self.masked_logits, logits_of(self.masked, self.data)), 1e-7)


@needs_relief
class TestSmallResNet(_RoundTrip, unittest.TestCase):
    model_cls = SmallResNet
    # The other semantics (the stem is marked by default, as ResNets need in `reference`).
    semantics = "paper"

    def test_stem_is_marked_by_default(self):
        self.assertIn("stem = true", self.exported.spec_toml)


@needs_relief
class TestResNetA(_RoundTrip, unittest.TestCase):
    model_cls = ResNetA
    stem = True

    def test_compacted_module_exports_to_onnx(self):
        # The residual model with channel gathers; the other models' layers are a subset.
        try:
            import onnx
            from onnx.reference import ReferenceEvaluator
        except Exception as e:  # onnx (and numpy) are optional
            self.skipTest(f"onnx is not installed ({e}); scripts/setup.sh installs it")
        try:
            import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
        except Exception as e:
            self.skipTest(f"onnxscript is not installed ({e}); torch.onnx.export needs it")
        x = self.data.prep(self.data.test_x[:6])
        path = self.tmp / "compact.onnx"
        self.assertTrue(any(type(m).__name__ == "ChannelGather" for m in self.compacted.modules()))
        quiet = logging.getLogger("torch.onnx")
        level = quiet.level
        quiet.setLevel(logging.ERROR)  # "torchvision is not installed" notes
        try:
            with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(self.compacted, (x,), str(path), input_names=["x"], output_names=["logits"],
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
        finally:
            quiet.setLevel(level)
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
        sess = ReferenceEvaluator(model)
        for n in (6, 3):
            xs = x[:n]
            got = torch.from_numpy(sess.run(None, {"x": xs.numpy()})[0])
            with torch.no_grad():
                self.assertLessEqual(max_rel_diff(self.compacted(xs), got), 1e-5)

    def test_spec_uses_option_a_and_own_names(self):
        text = self.exported.spec_toml
        self.assertIn('shortcut = "a"', text)
        self.assertIn('conv1 = "layer1.1.c1"', text)
        self.assertIn('mask = "layer1.1.skip"', text)
        self.assertIn("stem = true", text)

    def test_inert_stem_mask_is_not_applied(self):
        # reference semantics: the stem's mask is recorded but never applied (relief's forward).
        self.assertIn("conv1.weight", self.report.inert)
        self.assertFalse(hasattr(self.masked.conv1, "weight_mask"))


@needs_relief
class TestMLP(_RoundTrip, unittest.TestCase):
    model_cls = MLP

    def test_no_stem_without_blocks(self):
        self.assertNotIn("stem", self.exported.spec_toml.split("[[layer]]", 1)[1])

    def test_export_of_the_masked_module(self):
        # A module pruned by load_checkpoint exports the weights its forward uses (masked).
        exp = rt.export(self.masked, (1, 28, 28), self.tmp / "re-export")
        tensors, _ = rt.read_safetensors(exp.weights_path)
        mask = rt.read_safetensors(self.checkpoint)[0]["mask.net.1.weight"]
        self.assertTrue(bool((tensors["net.1.weight"][mask == 0] == 0).all()))
        self.assertLess(int((tensors["net.1.weight"] != 0).sum()), mask.numel())


@needs_relief
class TestVGGLike(_RoundTrip, unittest.TestCase):
    model_cls = VGGLike
    input_shape = (3, 32, 32)
    dataset = "cifar10"


# --- masks relief did not choose: random weight masks and a shortcut mask with zeros -----------

@needs_relief
class TestCraftedMasks(unittest.TestCase):
    """Random masks (and zeroed residual channels) on the option-A ResNet, in a checkpoint made
    here: relief evaluates and compacts it, and the PyTorch module loaded from it agrees."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="relief-torch-crafted-"))
        cls.data = Dataset("mnist", cls.tmp)

    @classmethod
    def tearDownClass(cls):
        if not KEEP:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_random_masks_and_shortcut_mask(self):
        torch.manual_seed(0)
        module = ResNetA()
        pretrain(module, self.data, examples=400)
        exp = rt.export(module, (1, 28, 28), self.tmp / "export")
        tensors, meta = rt.read_safetensors(exp.weights_path)
        g = torch.Generator().manual_seed(5)
        masks = {}
        for name, t in tensors.items():
            owner = name.rsplit(".", 1)[0]
            if name.endswith(("weight", "bias")) and not any(owner.endswith(s) for s in ("bn1", "bn2", "n1", "n2")):
                masks[name] = (torch.rand(t.shape, generator=g) < 0.7).to(torch.uint8)
        shortcut = torch.ones(16, dtype=torch.uint8)
        shortcut[[1, 4, 5, 11]] = 0
        masks["layer1.0.shortcut"] = shortcut
        masks["layer1.1.skip"] = torch.ones(16, dtype=torch.uint8)
        ck = {k: (v * masks[k] if k in masks else v) for k, v in tensors.items()}
        ck.update({f"mask.{k}": v for k, v in masks.items()})
        path = self.tmp / "crafted.safetensors"
        rt.write_safetensors(path, ck, meta)
        torch.manual_seed(3)
        masked = ResNetA()
        rep = rt.load_checkpoint(masked, path)
        self.assertEqual(rep.shortcut_masks, ["layer1.0.shortcut"])
        logits = logits_of(masked, self.data)
        # relief's own forward of the checkpoint predicts the same, image by image.
        d = self.data.write(self.tmp / "labels", logits.argmax(1))
        out = relief_eval(path, "--dataset", "mnist", "--data", str(d))
        n = out["test_examples"]
        self.assertGreaterEqual(round(out["test_accuracy"] * n / 100), n - ambiguous(logits))
        # and relief's compaction of it, rebuilt in PyTorch, computes the same logits.
        compact = self.tmp / "crafted-compact.safetensors"
        relief("export", "--compact", str(path), "--out", str(compact))
        self.assertLessEqual(max_rel_diff(logits, logits_of(rt.load_compacted(compact), self.data)), 1e-5)
        # a spec cannot hold the shortcut mask: exporting the masked module says so.
        with self.assertRaises(ExportError) as cm:
            rt.export(masked, (1, 28, 28), self.tmp / "re-export")
        self.assertIn("carries relief shortcut masks (on layer1.0.shortcut", str(cm.exception))
        # without the mask's hook the module computes something else: the mask mattered.
        masked.layer1[0].shortcut._relief_shortcut_hook.remove()
        self.assertGreater(max_rel_diff(logits, logits_of(masked, self.data)), 1e-3)


# --- the command line ---------------------------------------------------------------------------

class TestCommandLine(unittest.TestCase):
    def run_cli(self, *args: str) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "python"), str(Path(__file__).parent)]))
        return subprocess.run([sys.executable, "-W", "ignore", "-m", "relief_torch", *args], capture_output=True,
                              text=True, env=env, timeout=120, cwd=REPO)

    def test_export_with_weights_and_wrong_weights(self):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            torch.manual_seed(4)
            own = MLP()
            torch.save(own.state_dict(), tmp / "mlp.pt")
            p = self.run_cli("export", "--factory", "test_roundtrip:make_mlp", "--weights", str(tmp / "mlp.pt"),
                             "--input-shape", "1,28,28", "--num-classes", "10", "--out", str(tmp / "out"))
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("wrote", p.stdout)
            written, meta = rt.read_safetensors(tmp / "out" / "weights.safetensors")
            for k, v in own.state_dict().items():
                self.assertTrue(torch.equal(written[k], v), k)
            self.assertEqual(meta["model_spec"], (tmp / "out" / "model.toml").read_text())
            # The exported safetensors loads back through --weights too.
            p = self.run_cli("export", "--factory", "test_roundtrip:make_mlp", "--weights",
                             str(tmp / "out" / "weights.safetensors"), "--input-shape", "1,28,28", "--out",
                             str(tmp / "out2"))
            self.assertEqual(p.returncode, 0, p.stderr)
            # A state_dict of another architecture: a clear error, nothing written.
            torch.save(SmallResNet().state_dict(), tmp / "other.pt")
            p = self.run_cli("export", "--factory", "test_roundtrip:make_mlp", "--weights", str(tmp / "other.pt"),
                             "--input-shape", "1,28,28", "--out", str(tmp / "bad"))
            self.assertEqual(p.returncode, 1)
            self.assertIn("does not fit MLP", p.stderr)
            self.assertIn("missing from the file: `net.1.weight`", p.stderr)
            self.assertIn("not in the module: `conv1.weight`", p.stderr)
            self.assertFalse((tmp / "bad").exists())
            # Wrong class count and a bad factory.
            p = self.run_cli("export", "--factory", "test_roundtrip:make_mlp", "--input-shape", "1,28,28",
                             "--num-classes", "100", "--out", str(tmp / "bad"))
            self.assertEqual(p.returncode, 1)
            self.assertIn("num_classes = 100, but the module outputs 10", p.stderr)
            p = self.run_cli("export", "--factory", "test_roundtrip:nope", "--input-shape", "1,28,28",
                             "--out", str(tmp / "bad"))
            self.assertEqual(p.returncode, 1)
            self.assertIn("has no `nope`", p.stderr)


# --- errors -------------------------------------------------------------------------------------

def _line_of(text: str) -> int:
    """The line of this file holding ``text`` (for the source-location assertions)."""
    for i, line in enumerate(Path(__file__).read_text().splitlines(), 1):
        if text in line:
            return i
    raise AssertionError(text)


class WithLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(784, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        seq, _ = self.lstm(x)  # <- LSTM call
        return self.fc(seq)


class WithCat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3)
        self.b = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(8 * 26 * 26, 10)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], dim=1)  # <- cat call
        return self.fc(y.flatten(1))


class Chain(nn.Module):
    def __init__(self, *layers):
        super().__init__()
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return self.body(x)


class Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(10, 10)

    def forward(self, x):
        return self.fc(F.relu(self.fc(x)))


class BadNames(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleDict({"fc-1": nn.Linear(784, 10)})

    def forward(self, x):
        return self.layers["fc-1"](x.flatten(1))


class TestExportErrors(unittest.TestCase):
    def export_error(self, module: nn.Module, shape=(1, 28, 28)) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            with self.assertRaises(ExportError) as cm:
                rt.export(module, shape, tmp)
            self.assertEqual(os.listdir(tmp), [], "nothing is written on an error")
        return str(cm.exception)

    def test_lstm(self):
        msg = self.export_error(WithLSTM(), (784,))
        self.assertIn("fx node `lstm`", msg)
        self.assertIn("op call_module", msg)
        self.assertIn("torch.nn.modules.rnn.LSTM", msg)
        self.assertIn(f"test_roundtrip.py:{_line_of('# <- LSTM call')}", msg)
        self.assertIn("recurrent layers", msg)

    def test_cat(self):
        msg = self.export_error(WithCat())
        self.assertIn("op call_function", msg)
        self.assertIn("torch.cat", msg)
        self.assertIn(f"test_roundtrip.py:{_line_of('# <- cat call')}", msg)

    def test_unsupported_layers_say_why(self):
        cases = [
            (Chain(nn.Conv2d(1, 4, 3), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)),
             "only global average pooling"),
            (Chain(nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.Linear(32, 10)),
             "BatchNorm after a linear layer"),
            (Chain(nn.Flatten(), nn.Linear(784, 32), nn.GELU(), nn.Linear(32, 10)), "activations other than ReLU"),
            (Chain(nn.Conv2d(1, 4, 3, groups=1, dilation=2), nn.Flatten(), nn.Linear(4 * 24 * 24, 10)), "dilation"),
            (Chain(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)),
             "relu must directly follow a conv2d, linear or batch_norm; here it follows relu"),
            (Chain(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 13 * 13, 10)),
             "batch_norm must directly follow a conv2d"),
            (Chain(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, eps=1e-3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)),
             "eps = 0.001"),
            (Chain(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 10)), "output_size = 1"),
            (Chain(nn.Conv2d(1, 4, 3), nn.Dropout2d(0.1), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)), "channel dropout"),
            (Chain(nn.Flatten(), nn.Linear(784, 10), nn.LogSoftmax(1)), "ends with the logits"),
        ]
        for module, expected in cases:
            with self.subTest(expected=expected):
                msg = self.export_error(module)
                self.assertIn(expected, msg)
                self.assertIn("fx node `", msg)
                self.assertIn("test_roundtrip.py:", msg)

    def test_block_not_expressible(self):
        class ProjectionOnSameShape(BasicBlock):
            def __init__(self):
                super().__init__(4, 4, 1)
                self.shortcut = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4))

        net = Chain(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), ProjectionOnSameShape(),
                    nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
        self.assertIn("projection (1x1 conv) shortcut on a block that keeps its shape", self.export_error(net))

        class NoReluAfterAdd(BasicBlock):
            def forward(self, x):
                return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + self.shortcut(x)

        net = Chain(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), NoReluAfterAdd(4, 4),
                    nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
        self.assertIn("must be followed by ReLU", self.export_error(net))

        class BiasedBlock(BasicBlock):
            def __init__(self):
                super().__init__(4, 4, 1)
                self.conv2 = nn.Conv2d(4, 4, 3, 1, 1, bias=True)

        net = Chain(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(), BiasedBlock(),
                    nn.Flatten(), nn.Linear(4 * 28 * 28, 10))
        self.assertIn("3x3 with padding 1, no bias", self.export_error(net))

    def test_names_weight_sharing_and_shapes(self):
        self.assertIn("module path `layers.fc-1` cannot be a relief name", self.export_error(BadNames()))
        self.assertIn("called a second time", self.export_error(Shared(), (10,)))
        with self.assertRaises(ExportError) as cm:
            rt.export(MLP(), (1, 32, 32), tempfile.gettempdir())
        self.assertIn("does not run on an input of shape [N, 1, 32, 32]", str(cm.exception))
        with self.assertRaises(ExportError) as cm:
            rt.export(MLP(), (1, 28), tempfile.gettempdir())
        self.assertIn("input_shape must be", str(cm.exception))

    def test_unused_parameters(self):
        m = MLP()
        m.unused = nn.Linear(3, 3)
        msg = self.export_error(m)
        self.assertIn("`unused.weight`", msg)
        self.assertIn("does not use", msg)


# --- checkpoint errors (checkpoints written here, no relief binary needed) ----------------------

def fake_checkpoint(module: nn.Module, shape, path: Path, masks: Optional[Dict[str, torch.Tensor]] = None,
                    tmp: Optional[Path] = None) -> Path:
    """A relief-style checkpoint of ``module``: its exported weights, masks, metadata."""
    exp = rt.export(module, shape, tmp or path.parent / "fake-export")
    tensors, meta = rt.read_safetensors(exp.weights_path)
    for k, m in (masks or {}).items():
        tensors[f"mask.{k}"] = m
    meta["format"] = "relief-checkpoint/1"
    rt.write_safetensors(path, tensors, meta)
    return path


class TestCheckpointErrors(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="relief-torch-errors-"))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_unchanged(self, module: nn.Module, before: Dict[str, torch.Tensor]):
        after = module.state_dict()
        self.assertEqual(set(after), set(before))
        for k in before:
            self.assertTrue(torch.equal(after[k], before[k]), k)

    def test_checkpoint_of_another_model(self):
        torch.manual_seed(0)
        ck = fake_checkpoint(SmallResNet(), (1, 28, 28), self.tmp / "resnet.safetensors")
        mlp = MLP()
        before = {k: v.clone() for k, v in mlp.state_dict().items()}
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(mlp, ck)
        msg = str(cm.exception)
        self.assertIn("nothing was loaded", msg)
        self.assertIn("missing from the checkpoint: `net.1.weight`", msg)
        self.assertIn("not in the module: `bn1.bias`", msg)
        self.assert_unchanged(mlp, before)

    def test_mis_shaped_and_bad_masks(self):
        class WiderMLP(MLP):
            def __init__(self):
                super().__init__()
                self.net[1] = nn.Linear(784, 65)
                self.net[4] = nn.Linear(65, 32)

        ck = fake_checkpoint(MLP(), (1, 28, 28), self.tmp / "mlp.safetensors")
        wide = WiderMLP()
        before = {k: v.clone() for k, v in wide.state_dict().items()}
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(wide, ck)
        self.assertIn("shapes differ: `net.1.bias`: checkpoint [64], module [65]", str(cm.exception))
        self.assert_unchanged(wide, before)
        bad = {"net.1.weight": torch.full((64, 784), 2, dtype=torch.uint8)}
        ck = fake_checkpoint(MLP(), (1, 28, 28), self.tmp / "bad-mask.safetensors", bad)
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(MLP(), ck)
        self.assertIn("mask `net.1.weight` holds values other than 0 and 1", str(cm.exception))
        ck = fake_checkpoint(MLP(), (1, 28, 28), self.tmp / "odd-mask.safetensors",
                             {"nothere.weight": torch.ones(3, 3, dtype=torch.uint8)})
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(MLP(), ck)
        self.assertIn("mask `nothere.weight` [3, 3] matches no tensor", str(cm.exception))

    def test_same_names_and_shapes_but_another_forward(self):
        class NoRelu(MLP):
            def forward(self, x):
                return self.out(self.net(x))  # the ReLU before `out` is gone

        ck = fake_checkpoint(MLP(), (1, 28, 28), self.tmp / "mlp.safetensors")
        m = NoRelu()
        before = {k: v.clone() for k, v in m.state_dict().items()}
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(m, ck)
        self.assertIn("differs from the checkpoint's spec", str(cm.exception))
        self.assert_unchanged(m, before)
        rt.load_checkpoint(m, ck, check_spec=False)  # by names and shapes only, on request

    def test_shortcut_mask_without_a_module(self):
        class BareIdentity(BasicBlock):
            def __init__(self):
                super().__init__(8, 8, 1)
                del self.shortcut

            def forward(self, x):
                return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + x)

        class Net(SmallResNet):
            def __init__(self):
                super().__init__()
                self.layer1 = nn.Sequential(BareIdentity())

        m = torch.zeros(8, dtype=torch.uint8)
        m[0] = 1
        ck = fake_checkpoint(Net(), (1, 28, 28), self.tmp / "ck.safetensors", {"layer1.0.shortcut": m})
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(Net(), ck)
        self.assertIn("zeroes 7 of 8 residual channels, but the module has no submodule `layer1.0.shortcut`",
                      str(cm.exception))
        rt.load_checkpoint(Net(), fake_checkpoint(Net(), (1, 28, 28), self.tmp / "ones.safetensors",
                                                  {"layer1.0.shortcut": torch.ones(8, dtype=torch.uint8)}))

    def test_wrong_files(self):
        junk = self.tmp / "junk.safetensors"
        junk.write_bytes(b"not a safetensors file at all")
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(MLP(), junk)
        self.assertIn("not a readable safetensors file", str(cm.exception))
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(MLP(), self.tmp / "missing.safetensors")
        self.assertIn("no such file", str(cm.exception))
        ck = fake_checkpoint(MLP(), (1, 28, 28), self.tmp / "mlp.safetensors")
        with self.assertRaises(CompactedError) as cm:
            rt.load_compacted(ck)
        self.assertIn("this is a relief checkpoint", str(cm.exception))
        t, meta = rt.read_safetensors(ck)
        meta["format"] = "relief-compact"
        rt.write_safetensors(self.tmp / "fake-compact.safetensors", t, meta)
        with self.assertRaises(CheckpointError) as cm:
            rt.load_checkpoint(MLP(), self.tmp / "fake-compact.safetensors")
        self.assertIn("load_compacted", str(cm.exception))
        with self.assertRaises(CompactedError):
            rt.load_compacted(junk)
        with self.assertRaises(ValueError):
            rt.load_checkpoint(MLP(), ck, masks="sometimes")

    def test_exported_weights_load_back(self):
        torch.manual_seed(0)
        src = SmallResNet()
        with torch.no_grad():
            for mod in src.modules():
                if isinstance(mod, nn.BatchNorm2d):
                    mod.running_mean.uniform_(-1, 1)
                    mod.running_var.uniform_(0.5, 2)
        exp = rt.export(src, (1, 28, 28), self.tmp / "e")
        dst = SmallResNet()
        rep = rt.load_checkpoint(dst, exp.weights_path)
        self.assertEqual(rep.masks, [])
        for k, v in src.state_dict().items():
            self.assertTrue(torch.equal(dst.state_dict()[k], v), k)


class TestWithoutNumpy(unittest.TestCase):
    def test_round_trip_runs_without_numpy(self):
        code = f"""
import sys, warnings
sys.modules['numpy'] = None  # any import of numpy fails
warnings.filterwarnings('ignore')
sys.path[:0] = [{str(REPO / 'python')!r}, {str(Path(__file__).parent)!r}]
import torch, tempfile, relief_torch as rt
from test_roundtrip import SmallResNet
m = SmallResNet()
d = tempfile.mkdtemp()
e = rt.export(m, (1, 28, 28), d)
n = SmallResNet()
rt.load_checkpoint(n, e.weights_path, masks='prune')
x = torch.randn(2, 1, 28, 28)
m.eval(); n.eval()
assert torch.equal(m(x), n(x))
print('ok', 'numpy' in sys.modules and sys.modules['numpy'] is not None)
"""
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout.strip(), "ok False")


if __name__ == "__main__":
    unittest.main()
