#!/usr/bin/env python3
"""torchvision baseline for `cargo bench -p relief-benches --bench data`.

Measures images/s of the authors' CIFAR training input pipeline on synthetic CIFAR-shaped
uint8 data (50,000 x 32 x 32 x 3, like torchvision's CIFAR10.data): a shuffled DataLoader at
batch 128 whose dataset applies, per image, the PIL transforms
RandomCrop(32, padding=4) + RandomHorizontalFlip() + ToTensor() + Normalize(ImageNet mean/std),
with num_workers=4 and num_workers=0 (and plain ToTensor + Normalize, no augmentation, for
reference). Run with the project venv:

    .venv/bin/python scripts/bench_data_torch.py [--images 50000] [--epochs 1]

Needs torchvision (0.26.0 matches torch 2.11.0) and pillow:
    .venv/bin/python -m pip install --no-deps torchvision==0.26.0 pillow numpy
"""

import argparse
import os
import time

import numpy as np
import torch
import torchvision.transforms as transforms
from PIL import Image
from torch.utils.data import DataLoader, Dataset

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class SyntheticCifar(Dataset):
    """CIFAR-shaped uint8 images (N x 32 x 32 x 3) served as PIL images, as torchvision's
    CIFAR10 does (`Image.fromarray(img)` then the transform)."""

    def __init__(self, n, transform, seed=0):
        rng = np.random.default_rng(seed)
        self.data = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
        self.targets = rng.integers(0, 10, size=n).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        img = Image.fromarray(self.data[i])
        return self.transform(img), self.targets[i]


def measure(dataset, workers, epochs):
    loader = DataLoader(dataset, batch_size=128, shuffle=True, num_workers=workers,
                        persistent_workers=workers > 0)
    # warm-up: start the workers and touch the first batches
    it = iter(loader)
    for _ in range(3):
        next(it)
    del it
    images = 0
    start = time.perf_counter()
    for _ in range(epochs):
        for x, y in loader:
            images += x.shape[0]
    return images / (time.perf_counter() - start)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", type=int, nargs="*", default=[4, 0])
    args = p.parse_args()
    torch.manual_seed(0)
    augment = transforms.Compose([
        transforms.RandomCrop(32, padding=4),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    plain = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    import torchvision
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
          f"{args.images} images, batch 128")
    for name, tf in [("augment", augment), ("plain", plain)]:
        ds = SyntheticCifar(args.images, tf)
        for w in args.workers:
            rate = measure(ds, w, args.epochs)
            print(f"torchvision/cifar_{name}_batch128 num_workers={w}: {rate:,.0f} images/s")


if __name__ == "__main__":
    main()
