#!/usr/bin/env python3
"""Markdown tables from criterion's saved estimates (target/criterion/**/new/*.json).

Usage: python3 benches/tables.py [TARGET_DIR] [--filter SUBSTRING]
Prints one row per benchmark: full id, median time (with criterion's 95% interval of the
median) and throughput (elements/s = FLOP/s of the analytic FLOPs the bench declares).
"""

import json
import os
import sys


def fmt_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("us", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    flt = None
    if "--filter" in sys.argv:
        flt = sys.argv[sys.argv.index("--filter") + 1]
        args = [a for a in args if a != flt]
    root = os.path.join(args[0] if args else "target", "criterion")
    rows = []
    for dirpath, _, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        bench = json.load(open(os.path.join(dirpath, "benchmark.json")))
        est = json.load(open(os.path.join(dirpath, "estimates.json")))
        fid = bench["full_id"]
        if flt and flt not in fid:
            continue
        med = est["median"]
        thr = bench.get("throughput") or {}
        elems = thr.get("Elements")
        gflops = f"{elems / med['point_estimate']:.2f}" if elems else ""
        rows.append((fid, med["point_estimate"], med["confidence_interval"], gflops))
    rows.sort()
    print("| benchmark | median | 95% CI of median | GFLOP/s |")
    print("| --- | --- | --- | --- |")
    for fid, m, ci, g in rows:
        print(f"| `{fid}` | {fmt_time(m)} | {fmt_time(ci['lower_bound'])} .. {fmt_time(ci['upper_bound'])} | {g} |")


if __name__ == "__main__":
    main()
