#!/usr/bin/env python3
"""Compares the mask.* tensors (or every tensor with --all) of two safetensors files.

Usage: compare_masks.py A.safetensors B.safetensors [--all] [--label TEXT]

Prints one line per differing tensor and a final line
"<label>: N tensors compared, D differ, E of T entries differ". Exits 0 either way (it reports,
the caller decides); exits 2 if a file is unreadable or a tensor is missing or mis-shaped.
Needs only torch (no safetensors package): the header is read by hand.
"""
import argparse
import json
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "U8": torch.uint8, "I64": torch.int64,
          "BOOL": torch.bool, "I32": torch.int32, "F16": torch.float16, "BF16": torch.bfloat16}


def load(path):
    with open(path, "rb") as f:
        raw = f.read(8)
        size = os.fstat(f.fileno()).st_size
        if len(raw) < 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        n = struct.unpack("<Q", raw)[0]
        if n > size - 8:
            raise ValueError(f"{path}: not a safetensors file (header length {n} exceeds the file's {size} bytes)")
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        if not 0 <= a <= b <= len(data):
            raise ValueError(f"{path}: tensor {key}: data offsets {a}..{b} outside the {len(data)} data bytes")
        t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[meta["dtype"]]) if b > a else torch.empty(0)
        out[key] = t.reshape(meta["shape"])
    return out


def main():
    parser = argparse.ArgumentParser(description="Compares the mask.* tensors (or every tensor) of two safetensors files.")
    parser.add_argument("a", help="first safetensors file")
    parser.add_argument("b", help="second safetensors file")
    parser.add_argument("--all", action="store_true", help="compare every tensor, not only mask.*")
    parser.add_argument("--label", help="prefix of every printed line (default: the two paths)")
    args = parser.parse_args()
    label = args.label or f"{args.a} vs {args.b}"
    try:
        a, b = load(args.a), load(args.b)
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        print(f"{label}: cannot read: {e}", file=sys.stderr)
        sys.exit(2)
    keys = sorted(k for k in a if args.all or k.startswith("mask."))
    differ = entries = total = 0
    for k in keys:
        if k not in b or a[k].shape != b[k].shape:
            print(f"{label}: {k} missing or mis-shaped in {args.b}", file=sys.stderr)
            sys.exit(2)
        d = int((a[k].double() != b[k].double()).sum())
        total += a[k].numel()
        if d:
            differ += 1
            entries += d
            print(f"{label}: {k}: {d} of {a[k].numel()} entries differ")
    print(f"{label}: {len(keys)} tensors compared, {differ} differ, {entries} of {total} entries differ")


if __name__ == "__main__":
    main()
