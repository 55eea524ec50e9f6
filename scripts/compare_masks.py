#!/usr/bin/env python3
"""Compares the mask.* tensors (or every tensor with --all) of two safetensors files.

Usage: compare_masks.py A.safetensors B.safetensors [--all] [--label TEXT]

Prints one line per differing tensor and a final line
"<label>: N tensors compared, D differ, E of T entries differ". Exits 0 either way (it reports,
the caller decides); exits 2 if a file is unreadable or a tensor is missing or mis-shaped.
Needs only torch (no safetensors package): the header is read by hand.
"""
import json
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F64": torch.float64, "U8": torch.uint8, "I64": torch.int64,
          "BOOL": torch.bool, "I32": torch.int32, "F16": torch.float16, "BF16": torch.bfloat16}


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for key, meta in header.items():
        if key == "__metadata__":
            continue
        a, b = meta["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=DTYPES[meta["dtype"]]) if b > a else torch.empty(0)
        out[key] = t.reshape(meta["shape"])
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    every = "--all" in sys.argv
    label = sys.argv[sys.argv.index("--label") + 1] if "--label" in sys.argv else f"{args[0]} vs {args[1]}"
    if "--label" in sys.argv:
        args = [a for a in args if a != label]
    try:
        a, b = load(args[0]), load(args[1])
    except (OSError, ValueError, KeyError) as e:
        print(f"{label}: cannot read: {e}", file=sys.stderr)
        sys.exit(2)
    keys = sorted(k for k in a if every or k.startswith("mask."))
    differ = entries = total = 0
    for k in keys:
        if k not in b or a[k].shape != b[k].shape:
            print(f"{label}: {k} missing or mis-shaped in {args[1]}", file=sys.stderr)
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
