#!/usr/bin/env bash
# Local study executor, measured: the same study run with --jobs 1 and --jobs N (default 2),
# one after the other in this script (paired, same machine state), then the speed-up and the
# per-point overhead of the executor (wall time of the --jobs 1 run minus the time the points
# spent inside `relief run`'s code, per point: process start, libtorch initialisation,
# validation, bookkeeping).
#
#   scripts/bench_study.sh [STUDY.toml] [--jobs N] [--set KEY=VALUE ...]
#   scripts/bench_study.sh configs/studies/sample-lenets.toml --set train.epochs=4 --set retrain.epochs=2
#
# Needs a release build (cargo build --release -p relief-cli). Prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
study=configs/studies/sample-lenets.toml
if [[ $# -gt 0 && $1 != --* ]]; then study=$1; shift; fi
jobs=2
sets=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --jobs) jobs=$2; shift 2 ;;
    --set) sets+=(--set "$2"); shift 2 ;;
    *) echo "bench_study.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
bin=target/release/relief
[[ -x $bin ]] || { echo "bench_study.sh: build first: cargo build --release -p relief-cli" >&2; exit 2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
run() { # run OUT JOBS -> prints wall seconds
  local s e
  s=$(date +%s.%N)
  "$bin" study run "$study" --out "$tmp/$1" --jobs "$2" --quiet "${sets[@]}" > "$tmp/$1.out" 2>&1 \
    || { cat "$tmp/$1.out" >&2; exit 1; }
  e=$(date +%s.%N)
  python3 -c "print(f'{$e - $s:.2f}')"
}
echo "study $study ${sets[*]:-}; $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
w1=$(run j1 1)
wn=$(run jn "$jobs")
python3 - "$tmp" "$w1" "$wn" "$jobs" <<'PY'
import glob, json, os, sys
tmp, w1, wn, jobs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
inside = [json.load(open(f))["wall_time_s"] for f in glob.glob(os.path.join(tmp, "j1/status/*.json"))]
n = len(inside)
print(f"{'points':>28} {n}")
print(f"{'--jobs 1 wall (s)':>28} {w1:.1f}")
print(f"{f'--jobs {jobs} wall (s)':>28} {wn:.1f}")
print(f"{'ratio':>28} {wn / w1:.3f}  (target <= 0.6 at --jobs 2)")
print(f"{'time inside the points (s)':>28} {sum(inside):.1f}")
print(f"{'overhead per point (s)':>28} {(w1 - sum(inside)) / n:.2f}  (process start + libtorch init + validation + bookkeeping)")
PY
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
