#!/usr/bin/env bash
# CUDA checks, run on a CUDA machine from the repository root with .device/ made by
# scripts/device_pack.sh (no Rust toolchain needed there, only Python 3 with torch 2.11.0, whose
# libtorch the binaries load). Every step is bounded and logged; one failing step does not stop
# the others. The log goes to $OUT/device-check.log (or target/device-check.log) and a summary is
# printed last. RELIEF_CHECK_DEVICE=cpu runs the same steps on the CPU (to try the script);
# RELIEF_CHECK_STEPS picks steps (default: "precision fixtures paper pipeline bench"). Fixture
# steps cover the fixtures packed into .device/fixtures.
set -uo pipefail
cd "$(dirname "$0")/.."
dev=${RELIEF_CHECK_DEVICE:-cuda}
out=${OUT:-target}
log="$out/device-check.log"
: >"$log"
work=$(mktemp -d)
summary=()
steps=" ${RELIEF_CHECK_STEPS:-precision fixtures paper pipeline bench} "
wants() { [[ $steps == *" $1 "* ]]; }
say() { echo "$*" | tee -a "$log"; }
step() { # name timeout command...
  local name=$1 limit=$2
  shift 2
  say "== $name"
  local t0=$SECONDS from
  from=$(($(wc -l <"$log") + 1))
  if declare -F "$1" >/dev/null; then
    timeout "$limit" bash -c "$*" >>"$log" 2>&1
  else
    timeout "$limit" "$@" >>"$log" 2>&1
  fi
  local rc=$?
  summary+=("$(printf '%-36s rc=%-3s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
  tail -n +"$from" "$log" | tail -n 30 | sed 's/^/   /'
  return $rc
}

torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
say "torch lib: $torch_lib"
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee -a "$log"
nvidia-smi -L 2>/dev/null | tee -a "$log"

# Unpack binaries and fixtures (xz, or Python's lzma where xz is missing).
unxz() { if command -v xz >/dev/null; then xz -dc "$1"; else python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' "$1"; fi; }
mkdir -p "$work/bin" "$work/fixtures"
for f in .device/bin/*.xz; do unxz "$f" >"$work/bin/$(basename "$f" .xz)"; done
chmod +x "$work/bin/"*
cp .device/fixtures/*.json "$work/fixtures/"
for f in .device/fixtures/*.safetensors.xz; do unxz "$f" >"$work/fixtures/$(basename "$f" .xz)"; done
bin=$work/bin
fixtures=$work/fixtures
export RELIEF_BIN=$bin/relief RELIEF_FIXTURES=$fixtures bin fixtures work dev
step "relief --version (cuda linked)" 30 "$bin/relief" --version

# 1. libtorch's TF32 default and the engine's IEEE guard.
wants precision && step "precision guard (test, cuda)" 120 "$bin/precision" --include-ignored --test-threads=1 --nocapture

# 2. Golden fixtures, reference semantics, on CUDA (and on this machine's CPU).
skips=()
for f in lenet300-100 lenet5 vgg-like vgg11-c100 resnet20; do
  [[ -f $fixtures/$f.safetensors ]] || skips+=(--skip "${f//-/_}")
done
wants fixtures && step "golden fixtures (test, cpu+cuda)" 300 "$bin/fixtures" --include-ignored "${skips[@]}" --test-threads=1 --nocapture

# 3. Paper semantics: CUDA masks against the CPU's on the same fixtures.
paper() {
  local rc=0
  for f in $(cd "$fixtures" && ls *.safetensors | sed 's/\.safetensors$//'); do
    local m c a
    m=$(python3 -c "import json; print(json.load(open('$fixtures/$f.json'))['model'])")
    case "$m" in LeNet300_100 | lenet300_100 | lenet300-100) m=lenet300-100 ;; *) m=$(echo "$m" | tr 'A-Z' 'a-z') ;; esac
    c=$(python3 -c "import json; print(json.load(open('$fixtures/$f.json'))['num_classes'])")
    a=$(python3 -c "import json; d=json.load(open('$fixtures/$f.json')); print(d.get('alpha_conv') or 0.9, d['alpha_fc'])")
    for d in cpu "$dev"; do
      "$bin/relief" prune-step --model "$m" --num-classes "$c" --weights "$fixtures/$f.safetensors" \
        --weights-prefix before. --batch "$fixtures/$f.safetensors" --alpha-conv "${a% *}" \
        --alpha-fc "${a#* }" --semantics paper --device "$d" --out "$work/$f.paper.$d.safetensors" || rc=1
    done
    python3 scripts/compare_masks.py "$work/$f.paper.cpu.safetensors" "$work/$f.paper.$dev.safetensors" \
      --all --label "$f paper cpu vs $dev" || rc=1
  done
  return $rc
}
export -f paper
wants paper && step "paper semantics (cpu vs cuda)" 240 paper

# 4. The whole pipeline on CUDA: train, prune, retrain (masked Adam), evaluate; then every
#    pruned weight of every checkpoint must be exactly zero.
pipeline() {
  "$bin/relief" run configs/demo.toml --out "$work/run" --set device="$dev" --set train.epochs=4 \
    --set train.milestones=[3] --set retrain.epochs=3 --set retrain.milestones=[2] \
    --set prune.iterations=3 || return 1
  cat "$work/run/summary.txt"
  python3 - "$work/run" <<'PY'
import glob, sys
sys.path.insert(0, "scripts")
from compare_masks import load
bad = 0
for path in sorted(glob.glob(sys.argv[1] + "/iter-*.safetensors")):
    t = load(path)
    for k in (k for k in t if k.startswith("mask.")):
        w = t[k[len("mask."):]]
        alive = int((t[k] != 0).sum())
        leaked = int(((t[k] == 0) & (w != 0)).sum())
        bad += leaked
        print(f"{path.split('/')[-1]} {k}: {alive}/{t[k].numel()} kept, {leaked} pruned weights non-zero")
sys.exit(1 if bad else 0)
PY
}
export -f pipeline
wants pipeline && step "pipeline run (train+prune+retrain)" 240 pipeline

# 5. Timings: one pruning call next to one forward pass, batch 1000 (VGG-like too).
wants bench && step "bench prune (criterion)" 200 env RELIEF_BENCH_HEAVY=1 "$bin/prune" --bench --noplot

say ""
say "== summary ($dev)"
for s in "${summary[@]}"; do say "$s"; done
grep -E "differ|identical|relative error|time: |^(cpu|cuda)/" "$log" | grep -v "^   " | tail -n 60
