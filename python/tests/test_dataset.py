"""relief_torch.save_dataset: any PyTorch data written in the layout of relief's ``tensors``
dataset, read back bit for bit; bad data refused with DatasetError naming the split and item,
nothing written."""

import os
import sys
import tempfile
import unittest
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import relief_torch as rt  # noqa: E402
from relief_torch import DatasetError  # noqa: E402
import json  # noqa: E402
from test_roundtrip import mnist, needs_relief, relief, relief_eval  # noqa: E402


def images(n=60, classes=6, seed=0, dtype=torch.uint8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 1, 6, 5), generator=g, dtype=torch.int64).to(dtype)
    y = torch.arange(n) % classes
    return x, y


def tree(d):
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, d)] = fh.read()
    return out


class SaveDataset(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = self.tmp.name

    def tearDown(self):
        self.tmp.cleanup()

    def test_tensors_to_one_file_read_back_exactly(self):
        x, y = images()
        tx, ty = images(12, seed=1)
        path = os.path.join(self.d, "d.safetensors")
        info = rt.save_dataset((x, y), path, test=(tx, ty), classes=[f"c{i}" for i in range(6)])
        self.assertEqual((info["train"], info["test"], info["shape"], info["num_classes"]), (60, 12, [1, 6, 5], 6))
        t, meta = rt.read_safetensors(path)
        self.assertEqual(sorted(t), ["test_x", "test_y", "train_x", "train_y"])
        self.assertTrue(torch.equal(t["train_x"], x) and torch.equal(t["test_x"], tx))
        self.assertEqual(t["train_y"].dtype, torch.int64)
        self.assertTrue(torch.equal(t["train_y"], y) and torch.equal(t["test_y"], ty))
        self.assertEqual(meta["format"], "relief-dataset/1")
        self.assertEqual(meta["classes"], '["c0", "c1", "c2", "c3", "c4", "c5"]')
        self.assertEqual(meta["num_classes"], "6")
        self.assertEqual([f for f in os.listdir(self.d)], ["d.safetensors"], "no temporary file left")

    def test_datasets_to_a_directory(self):
        x, y = images(dtype=torch.float32)
        x = x / 255.0
        train = torch.utils.data.TensorDataset(x, y)
        # A plain list of pairs with int labels and one-element tensor labels.
        test = [(x[i], int(y[i])) if i % 2 else (x[i], y[i].reshape(1)) for i in range(10)]
        out = os.path.join(self.d, "ds")
        rt.save_dataset({"train": train, "test": test}, out)
        self.assertEqual(sorted(os.listdir(out)), ["test.safetensors", "train.safetensors"])
        tr, _ = rt.read_safetensors(os.path.join(out, "train.safetensors"))
        te, _ = rt.read_safetensors(os.path.join(out, "test.safetensors"))
        self.assertEqual(tr["x"].dtype, torch.float32)
        self.assertTrue(torch.equal(tr["x"], x) and torch.equal(tr["y"], y))
        self.assertTrue(torch.equal(te["x"], x[:10]) and torch.equal(te["y"], y[:10]))

    def test_float64_features_become_float32(self):
        x = torch.randn(30, 7, dtype=torch.float64)
        y = torch.arange(30) % 3
        path = os.path.join(self.d, "f.safetensors")
        info = rt.save_dataset((x, y), path, test_fraction=0.2)
        t, _ = rt.read_safetensors(path)
        self.assertEqual(t["train_x"].dtype, torch.float32)
        self.assertEqual(info["shape"], [7])

    def test_test_fraction_is_stratified_seeded_and_partitions_the_data(self):
        x, y = images(100, classes=4)
        x[:, 0, 0, 0] = torch.arange(100, dtype=torch.uint8)  # an id per example
        p1, p2, p3 = (os.path.join(self.d, f"{i}.safetensors") for i in range(3))
        rt.save_dataset((x, y), p1, test_fraction=0.2, seed=5)
        rt.save_dataset((x, y), p2, test_fraction=0.2, seed=5)
        rt.save_dataset((x, y), p3, test_fraction=0.2, seed=6)
        a, _ = rt.read_safetensors(p1)
        b, _ = rt.read_safetensors(p2)
        c, _ = rt.read_safetensors(p3)
        self.assertTrue(torch.equal(a["test_x"], b["test_x"]), "same seed, same split")
        self.assertFalse(torch.equal(a["test_x"], c["test_x"]), "another seed, another split")
        for k in range(4):
            self.assertEqual(int((a["test_y"] == k).sum()), 5, "20 % of each class's 25")
        ids = torch.cat([a["train_x"][:, 0, 0, 0], a["test_x"][:, 0, 0, 0]]).sort().values
        self.assertTrue(torch.equal(ids, torch.arange(100, dtype=torch.uint8)), "a partition, in order")
        # examples keep their labels
        lab = torch.cat([a["train_y"], a["test_y"]])[torch.cat([a["train_x"][:, 0, 0, 0], a["test_x"][:, 0, 0, 0]]).argsort()]
        self.assertTrue(torch.equal(lab, y))

    def test_bad_data_is_refused_naming_split_and_item_and_nothing_is_written(self):
        x, y = images()
        path = os.path.join(self.d, "keep.safetensors")
        rt.save_dataset((x, y), path, test_fraction=0.5)
        adir = os.path.join(self.d, "adir.safetensors")
        os.makedirs(adir)
        before = tree(self.d)
        nan = x.float().clone()
        nan[7, 0, 0, 0] = float("nan")
        neg = y.clone()
        neg[3] = -1
        cases = [
            (lambda: rt.save_dataset((x, y[:-1]), path, test_fraction=0.2), ["train", "60 inputs", "[59]"]),
            (lambda: rt.save_dataset((x, neg), path, test_fraction=0.2), ["train", "label -1", "example 3"]),
            (lambda: rt.save_dataset((x, y.float()), path, test_fraction=0.2), ["train", "y is torch.float32"]),
            (lambda: rt.save_dataset((nan, y), path, test_fraction=0.2), ["train", "example 7", "NaN"]),
            (lambda: rt.save_dataset((x.to(torch.int32), y), path, test_fraction=0.2), ["x is torch.int32"]),
            (lambda: rt.save_dataset((x[:, 0], y), path, test_fraction=0.2), ["N x C x H x W"]),
            (lambda: rt.save_dataset((x, y), path), ["no test split", "test_fraction"]),
            (lambda: rt.save_dataset((x, y), path, test=(x, y), test_fraction=0.2), ["not both"]),
            (lambda: rt.save_dataset((x, y), path, test=(x[:, :, :5], y)), ["test inputs", "both splits"]),
            (lambda: rt.save_dataset([(x[0], 1), ("pixels", 2)], path, test_fraction=0.5), ["train item 1", "str"]),
            (lambda: rt.save_dataset([(x[0], 1), (x[1, :, :2], 2)], path, test_fraction=0.5),
             ["train item 1", "same shape"]),
            (lambda: rt.save_dataset([(x[0], 1.5)], path, test_fraction=0.5), ["train item 0", "label is 1.5"]),
            (lambda: rt.save_dataset([], path, test_fraction=0.5), ["train", "empty"]),
            (lambda: rt.save_dataset({"train": (x, y), "val": (x, y)}, path), ["mapping", "val"]),
            (lambda: rt.save_dataset((x, y), path, test_fraction=1.5), ["test_fraction = 1.5"]),
            (lambda: rt.save_dataset((x, y), path, test_fraction=0.2, classes=["a"]), ["1 class names"]),
            (lambda: rt.save_dataset((x, y), self.d + "/keep.safetensors/sub", test_fraction=0.2),
             ["not a directory"]),
            (lambda: rt.save_dataset((x, y), os.path.join(self.d, "no", "dir"), test_fraction=0.2),
             ["does not exist"]),
            (lambda: rt.save_dataset((x, y), adir, test_fraction=0.2), ["is a directory"]),
        ]
        for i, (call, words) in enumerate(cases):
            with self.subTest(case=i, words=words):
                with self.assertRaises(DatasetError) as cm:
                    call()
                for w in words:
                    self.assertIn(w, str(cm.exception))
                self.assertLess(len(str(cm.exception)), 400)
        after = tree(self.d)
        self.assertEqual(after, before, "a refused call changed or left a file")


@needs_relief
class EndToEnd(unittest.TestCase):
    """The acceptance path: a PyTorch dataset saved with save_dataset, pruned by `relief run`
    with `dataset = "tensors"`, the compacted export evaluated on the same test set."""

    def test_save_dataset_then_relief_run_and_eval(self):
        m = mnist()
        with tempfile.TemporaryDirectory() as d:
            train = torch.utils.data.TensorDataset(m["train_x"][:600], m["train_y"][:600])
            test = [(m["test_x"][i], int(m["test_y"][i])) for i in range(300)]
            data = os.path.join(d, "digits.safetensors")
            rt.save_dataset(train, data, test=test, classes=[str(i) for i in range(10)])
            cfg = os.path.join(d, "c.toml")
            with open(cfg, "w") as f:
                f.write(f'''model = "lenet300-100"
device = "cpu"
threads = 1
[data]
dataset = "tensors"
dir = {json.dumps(data)}
validation = 0
[train]
epochs = 2
batch_size = 60
milestones = []
select = "last"
[prune]
iterations = 1
batch_size = 200
[retrain]
epochs = 1
batch_size = 60
milestones = []
select = "last"
''')
            run = os.path.join(d, "run")
            relief("run", "-q", "--no-plots", cfg, "--out", run)
            with open(os.path.join(run, "metrics.json")) as f:
                last = json.load(f)[-1]
            self.assertEqual(last["iteration"], 1)
            self.assertGreater(last["acc_retrained"], 50.0, "LeNet-300-100 learns the saved digits")
            compact = os.path.join(d, "small.safetensors")
            relief("export", "--compact", os.path.join(run, "iter-001.safetensors"), "--out", compact)
            ev = relief_eval(Path(compact))
            self.assertEqual(ev["test_examples"], 300)
            self.assertAlmostEqual(ev["test_accuracy"], last["acc_retrained"], places=6)


if __name__ == "__main__":
    unittest.main()
