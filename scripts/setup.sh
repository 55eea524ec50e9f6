#!/usr/bin/env bash
# Provision libtorch for relief, idempotently and offline except for PyPI.
#
# Creates a project-local venv (.venv) with torch==2.11.0 (the exact version tch 0.24.0 expects;
# the PyPI wheel is CUDA 13 enabled and also runs on CPU) and links .libtorch -> its torch/
# directory, which .cargo/config.toml hands to tch. Afterwards plain `cargo build|test|bench`
# work. Skipped when the user brings their own libtorch (LIBTORCH=... or LIBTORCH_USE_PYTORCH=1).
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="2.11.0"
PYTHON="${PYTHON:-python3}"
say() { printf '[setup] %s\n' "$*"; }

if [[ -n "${LIBTORCH_USE_PYTORCH:-}" || -n "${LIBTORCH:-}" ]]; then
  say "LIBTORCH or LIBTORCH_USE_PYTORCH is set: using your libtorch, nothing to provision."
  exit 0
fi

if [[ ! -x .venv/bin/python ]]; then
  say "creating the project venv in .venv ($($PYTHON --version))"
  "$PYTHON" -m venv .venv
fi

have_torch() {
  .venv/bin/python - <<PY 2>/dev/null
import torch, sys
sys.exit(0 if torch.__version__.split('+')[0] == "$TORCH_VERSION" else 1)
PY
}

if have_torch; then
  say "torch $TORCH_VERSION already installed in .venv"
else
  say "installing torch==$TORCH_VERSION from PyPI into .venv (about 4.6 GB, a minute or two)"
  .venv/bin/python -m pip install --disable-pip-version-check -q "torch==$TORCH_VERSION"
fi

# relief_torch (python/, docs/pytorch.md) reads and writes safetensors with torch alone plus the
# `safetensors` package (no numpy). onnx + onnxscript are optional: only its ONNX export test
# uses them (they bring numpy); RELIEF_SETUP_ONNX=0 skips them.
if .venv/bin/python -c 'import safetensors' 2>/dev/null; then
  say "safetensors already installed in .venv"
else
  say "installing safetensors from PyPI into .venv (for relief_torch)"
  .venv/bin/python -m pip install --disable-pip-version-check -q safetensors
fi
if [[ "${RELIEF_SETUP_ONNX:-1}" != "0" ]]; then
  if .venv/bin/python -c 'import onnx, onnxscript' 2>/dev/null; then
    say "onnx and onnxscript already installed in .venv"
  else
    say "installing onnx and onnxscript from PyPI into .venv (optional: relief_torch's ONNX test)"
    .venv/bin/python -m pip install --disable-pip-version-check -q onnx onnxscript \
      || say "warning: onnx/onnxscript could not be installed; relief_torch's ONNX test will be skipped"
  fi
fi

# torchvision (the build for torch 2.11.0): networks nobody here wrote, and ImageFolder for the
# data benchmarks (scripts/bench_imagefolder.py). Optional: RELIEF_SETUP_TORCHVISION=0 skips it.
if [[ "${RELIEF_SETUP_TORCHVISION:-1}" != "0" ]]; then
  if .venv/bin/python -c 'import torchvision' 2>/dev/null; then
    say "torchvision already installed in .venv"
  else
    say "installing torchvision==0.26.0 from PyPI into .venv (optional: benchmarks, torchvision networks)"
    .venv/bin/python -m pip install --disable-pip-version-check -q "torchvision==0.26.0" \
      || say "warning: torchvision could not be installed; what needs it says skipped"
  fi
fi

torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
if [[ "$(readlink .libtorch 2>/dev/null || true)" != "$torch_dir" ]]; then
  ln -sfn "$torch_dir" .libtorch
  say "linked .libtorch -> $torch_dir"
else
  say ".libtorch -> $torch_dir"
fi
for f in lib/libtorch_cpu.so include/torch; do
  [[ -e ".libtorch/$f" ]] || { say "error: .libtorch/$f is missing; is the torch wheel complete?"; exit 1; }
done
say "libtorch ready ($(.venv/bin/python -c 'import warnings; warnings.filterwarnings("ignore"); import torch; print(torch.__version__)'))"
