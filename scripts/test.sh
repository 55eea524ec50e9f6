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
