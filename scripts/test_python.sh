#!/usr/bin/env bash
# Runs relief_torch's tests (python/tests, unittest) with the project venv's python from the
# repository root and ends with one line: `python: N passed, N failed, N skipped`.
# Exits non-zero when a test fails (or errors). Arguments select tests by name, e.g.
#   scripts/test_python.sh TestMLP test_lstm
# The round-trip tests need the relief binary: RELIEF_BIN, else target/debug/relief, else
# target/release/relief (without one they are skipped, with that reason). PYTHON overrides the
# interpreter (default .venv/bin/python; scripts/setup.sh creates it). RELIEF_TORCH_KEEP=1
# keeps the tests' temporary directories.
set -uo pipefail
cd "$(dirname "$0")/.."

PY="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PY" ]]; then
  echo "test_python: $PY not found; run scripts/setup.sh first (or set PYTHON)" >&2
  echo "python: 0 passed, 1 failed, 0 skipped"
  exit 1
fi
export PYTHONDONTWRITEBYTECODE=1

"$PY" - "$@" <<'RUNNER'
import sys
import unittest
import warnings

warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
loader = unittest.TestLoader()
if len(sys.argv) > 1:
    loader.testNamePatterns = [f"*{p}*" for p in sys.argv[1:]]
suite = loader.discover("python/tests", pattern="test_*.py", top_level_dir="python/tests")
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout).run(suite)
failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
skipped = len(result.skipped)
passed = result.testsRun - len(result.failures) - len(result.errors) - skipped - len(result.expectedFailures) \
    - len(result.unexpectedSuccesses)
if result.testsRun == 0:
    failed += 1
    print("no tests ran", file=sys.stderr)
print(f"python: {passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed else 0)
RUNNER
