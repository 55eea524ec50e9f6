#!/usr/bin/env python3
"""Image-folder loading, relief against torchvision, on the same files (docs/performance.md).

Writes the bundled MNIST sample (10,000 digits, 28x28 grey) as PNG files into
``DIR/train/<digit>/`` and ``DIR/test/<digit>/``, then times, alternating and paired:

- torchvision: ``ImageFolder`` + ``DataLoader(num_workers=cores, batch_size=256)`` with
  ``Grayscale(1)`` + ``ToTensor()`` + ``Normalize``, one pass over both splits (what a PyTorch
  user's first epoch pays for decoding; every later epoch pays it again);
- relief, first load: ``relief data verify imagefolder`` with no cache (parallel decode, then
  the cache is written);
- relief, cached load: the same command again (reads the cache).

Usage: .venv/bin/python scripts/bench_imagefolder.py [--relief target/release/relief] [--rounds 3]
Prints one table (images/s, median of the rounds) and writes it as JSON beside the data.
"""

import argparse
import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def read_idx(path: Path) -> torch.Tensor:
    raw = gzip.open(path, "rb").read()
    magic, n = struct.unpack(">II", raw[:8])
    if magic == 2051:
        rows, cols = struct.unpack(">II", raw[8:16])
        return torch.frombuffer(bytearray(raw[16:]), dtype=torch.uint8).view(n, rows, cols)
    return torch.frombuffer(bytearray(raw[8:]), dtype=torch.uint8).to(torch.long)


def write_folder(root: Path) -> int:
    from torchvision.io import write_png

    sample = REPO / "data" / "mnist-sample"
    n = 0
    for split, prefix in (("train", "train"), ("test", "t10k")):
        x = read_idx(sample / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(sample / f"{prefix}-labels-idx1-ubyte.gz")
        for i in range(x.shape[0]):
            d = root / split / str(int(y[i]))
            d.mkdir(parents=True, exist_ok=True)
            write_png(x[i].unsqueeze(0).contiguous(), str(d / f"{i:05d}.png"))
            n += 1
    return n


def torchvision_pass(root: Path, workers: int) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([transforms.Grayscale(1), transforms.ToTensor(), transforms.Normalize([0.1307], [0.3081])])
    t0 = time.perf_counter()
    for split in ("train", "test"):
        ds = datasets.ImageFolder(str(root / split), transform=tf)
        for _x, _y in torch.utils.data.DataLoader(ds, batch_size=256, num_workers=workers):
            pass
    return time.perf_counter() - t0


def relief_pass(relief: str, root: Path, fresh: bool) -> float:
    if fresh:
        for p in root.glob("relief-cache-*"):
            p.unlink()
    t0 = time.perf_counter()
    subprocess.run([relief, "data", "verify", "imagefolder", "--dir", str(root)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def relief_start(relief: str) -> float:
    """A process start that loads libtorch and reads no data, to subtract."""
    t0 = time.perf_counter()
    subprocess.run([relief, "data", "verify", "imagefolder", "--dir", "/nonexistent"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--relief", default=str(REPO / "target" / "release" / "relief"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", help="where to write the image folder (default: a temporary directory)")
    args = ap.parse_args()
    if not Path(args.relief).is_file():
        sys.exit(f"error: {args.relief} not found (cargo build --release -p relief-cli)")
    tmp = None if args.dir else tempfile.TemporaryDirectory()
    root = Path(args.dir or tmp.name) / "mnist-png"
    n = write_folder(root)
    workers = os.cpu_count() or 1
    times = {"torchvision ImageFolder + DataLoader": [], "relief first load (decode + cache)": [],
             "relief cached load": [], "relief process start (no data)": []}
    for _ in range(args.rounds):
        times["torchvision ImageFolder + DataLoader"].append(torchvision_pass(root, workers))
        times["relief first load (decode + cache)"].append(relief_pass(args.relief, root, fresh=True))
        times["relief cached load"].append(relief_pass(args.relief, root, fresh=False))
        times["relief process start (no data)"].append(relief_start(args.relief))
    rows = {k: {"median_s": statistics.median(v), "images_per_s": n / statistics.median(v), "runs_s": v}
            for k, v in times.items()}
    print(f"{n} PNG images (MNIST sample, 28x28 grey), {workers} cores, median of {args.rounds} rounds")
    print(f"{'loader':40} {'median s':>9} {'images/s':>10}")
    for k, r in rows.items():
        print(f"{k:40} {r['median_s']:9.2f} {r['images_per_s']:10.0f}")
    tv = rows["torchvision ImageFolder + DataLoader"]["median_s"]
    first = rows["relief first load (decode + cache)"]["median_s"]
    cached = rows["relief cached load"]["median_s"]
    start = rows["relief process start (no data)"]["median_s"]
    print(f"relief first load vs torchvision: {tv / first:.1f}x (without relief's process start: "
          f"{tv / max(first - start, 1e-9):.1f}x); cached vs first, process start subtracted: "
          f"{(first - start) / max(cached - start, 1e-9):.1f}x")
    out = root.parent / "bench_imagefolder.json"
    out.write_text(json.dumps({"images": n, "cores": workers, "rows": rows}, indent=2))
    if tmp:
        tmp.cleanup()


if __name__ == "__main__":
    main()
