#!/usr/bin/env bash
# Runs every test of the workspace (unit, integration, bench targets in test mode, doc tests)
# and closes with one summary line "N passed, N failed, N skipped".
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
echo "[test] cargo test --workspace --all-targets"
cargo test --workspace --all-targets 2>&1 | tee -a "$log" || status=1
echo "[test] cargo run --example custom_prune (the library API example, on the MNIST sample)"
example_out=$(mktemp -d)
if cargo run --example custom_prune -- "$example_out/run" 2>&1 | tee -a "$log" | tail -4 \
  && [[ -f "$example_out/run/pruned.safetensors" ]]; then
  echo "test result: ok. 1 passed; 0 failed; 0 ignored (example custom_prune)" | tee -a "$log"
else
  echo "example custom_prune FAILED" && echo "test result: FAILED. 0 passed; 1 failed; 0 ignored" >>"$log"
  status=1
fi
rm -rf "$example_out"
echo "[test] scripts/test_python.sh (relief_torch: the PyTorch round trip, with target/debug/relief)"
if RELIEF_BIN=target/debug/relief bash scripts/test_python.sh 2>&1 | tee -a "$log" | tail -3; then :; else status=1; fi
py=$(grep -Eo '^python: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped' "$log" | tail -1)
if [[ -n "$py" ]]; then
  read -r _ p _ f _ k _ <<<"$py"
  echo "test result: python. $p passed; $f failed; $k ignored; (scripts/test_python.sh)" >>"$log"
else
  echo "test result: FAILED. 0 passed; 1 failed; 0 ignored (python tests did not report)" >>"$log"
  status=1
fi
echo "[test] cargo test --workspace --doc"
cargo test --workspace --doc 2>&1 | tee -a "$log" || status=1
passed=$(grep -Eo '^test result: [A-Za-z]+\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed;' "$log" | awk '{s+=$1} END {print s+0}')
ignored=$(grep -Eo '[0-9]+ ignored;' "$log" | awk '{s+=$1} END {print s+0}')
echo
echo "test summary: $(grep -c '^test result:' "$log") test binaries"
echo "$passed passed, $failed failed, $ignored skipped"
if [[ $status -ne 0 || $failed -ne 0 ]]; then
  echo "[test] FAILED"
  exit 1
fi
