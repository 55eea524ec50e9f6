#!/usr/bin/env python3
"""PyTorch eager baseline for relief's benches (run with /work/main/.venv/bin/python).

Times, on the CPU with torch.set_num_threads(2) by default:
  * one training step: forward, cross-entropy, backward, Adam step (lr 1e-3, weight decay 5e-4,
    PyTorch's defaults otherwise) at batch 120 (MNIST-shaped models) / 128 (CIFAR-shaped),
    model in train mode (BatchNorm batch statistics, dropout on);
  * dense inference: model.eval(), torch.no_grad(), batch 1, 32 and 256;
for LeNet-300-100, LeNet-5 (Caffe variant), VGG-like and ResNet-20 (option-A shortcuts), defined
here the way the authors' models.py (adekhovich/NNrelief) defines them, with the same
state_dict names relief uses. Inputs are N(0,1), labels uniform; weights are PyTorch's default
init (the cost does not depend on the values).

Statistic: median (and minimum) over --reps timed runs after --warmup untimed runs (fewer for
VGG-like, see --heavy-reps). Prints one line per measurement: `model  what  batch  ms` and
optionally writes JSON (--json FILE). Example:
  .venv/bin/python scripts/bench_torch.py --threads 2
"""

import argparse
import json
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class LeNet300_100(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.classifier = nn.Sequential(
            nn.Linear(784, 300), nn.ReLU(inplace=True),
            nn.Linear(300, 100), nn.ReLU(inplace=True),
            nn.Linear(100, num_classes))

    def forward(self, x):
        return self.classifier(x.view(x.size(0), -1))


class LeNet5_Caffe(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.feature_extractor = nn.Sequential(
            nn.Conv2d(1, 20, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(20, 50, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(
            nn.Linear(800, 500), nn.ReLU(inplace=True),
            nn.Linear(500, num_classes))

    def forward(self, x):
        x = self.feature_extractor(x)
        return self.classifier(x.view(x.size(0), -1))


VGG_LIKE = [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M', 512, 512, 512, 'M']


class VGG(nn.Module):
    """The authors' VGG('vgg-like'): conv3x3 (bias) + BN + ReLU, max-pool 2; classifier
    Dropout, 512-512, ReLU, 512-C."""

    def __init__(self, cfg=VGG_LIKE, num_classes=10):
        super().__init__()
        layers, c = [], 3
        for v in cfg:
            if v == 'M':
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Linear(512, 512), nn.ReLU(inplace=True), nn.Linear(512, num_classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.view(x.size(0), -1))


class LambdaLayer(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return self.f(x)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            pad = planes // 4
            self.shortcut = LambdaLayer(
                lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, pad), "constant", 0))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    def __init__(self, num_blocks=(3, 3, 3), num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._make_layer(16, num_blocks[0], 1)
        self.layer2 = self._make_layer(32, num_blocks[1], 2)
        self.layer3 = self._make_layer(64, num_blocks[2], 2)
        self.linear = nn.Linear(64, num_classes)

    def _make_layer(self, planes, n, stride):
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3])
        return self.linear(out.view(out.size(0), -1))


MODELS = {
    "lenet300-100": (LeNet300_100, (784,), 120),
    "lenet5": (LeNet5_Caffe, (1, 28, 28), 120),
    "vgg-like": (VGG, (3, 32, 32), 128),
    "resnet20": (ResNet, (3, 32, 32), 128),
}


def median_ms(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), times


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--batches", default="1,32,256", help="inference batch sizes")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--heavy-reps", type=int, default=5, help="timed runs for VGG-like")
    ap.add_argument("--skip", default="", help="comma list of model:what to skip, e.g. vgg-like:infer256")
    ap.add_argument("--what", choices=["all", "train", "infer"], default="all")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    skip = set(s for s in args.skip.split(",") if s)
    results = []
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name in args.models.split(","):
        cls, shape, train_batch = MODELS[name]
        reps = args.heavy_reps if name == "vgg-like" else args.reps
        model = cls()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
        x = torch.randn(train_batch, *shape)
        y = torch.randint(0, 10, (train_batch,))

        def step():
            model.train()
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()

        if f"{name}:train" not in skip and args.what in ("all", "train"):
            ms, all_ms = median_ms(step, args.warmup, reps)
            results.append({"model": name, "what": "train-step", "batch": train_batch, "ms": ms, "runs": all_ms})
            print(f"{name:14s} train-step  b{train_batch:<4d} {ms:9.3f} ms (min {min(all_ms):9.3f})")
        model.eval()
        for b in [int(v) for v in args.batches.split(",")]:
            if f"{name}:infer{b}" in skip or args.what == "train":
                continue
            xb = torch.randn(b, *shape)

            def infer():
                with torch.no_grad():
                    model(xb)

            ms, all_ms = median_ms(infer, args.warmup, reps)
            results.append({"model": name, "what": "inference", "batch": b, "ms": ms, "runs": all_ms})
            print(f"{name:14s} inference   b{b:<4d} {ms:9.3f} ms (min {min(all_ms):9.3f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"torch": torch.__version__, "threads": args.threads, "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
