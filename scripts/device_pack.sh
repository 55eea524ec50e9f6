#!/usr/bin/env bash
# Packs what scripts/device_check.sh needs into .device/ (ignored by git): stripped, xz-compressed
# release `relief`, the fixture and precision test binaries, the prune bench, and the golden
# fixtures that fit the device tool's 64 MiB transfer limit together (all but vgg-like; pack that
# one alone with RELIEF_PACK_FIXTURES=vgg-like). Run it here, then carry `.device` to a CUDA
# machine and run scripts/device_check.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
fixtures=${RELIEF_FIXTURES:-../shared/fixtures/nnrelief}
for f in ${RELIEF_PACK_FIXTURES:-lenet300-100 lenet5 resnet20 vgg11-c100}; do
  [[ -f $fixtures/$f.safetensors && -f $fixtures/$f.json ]] || {
    echo "device_pack: fixture $f not found in $fixtures (set RELIEF_FIXTURES to the fixtures' directory)" >&2
    exit 2
  }
done
rm -rf .device && mkdir -p .device/bin .device/fixtures
exe() { # target-name cargo-args... -> path of that target's executable
  local name=$1
  shift
  cargo "$@" --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])' "$name"
}
pack() { # source name
  strip -o ".device/bin/$2" "$1"
  xz -T0 -6 -f ".device/bin/$2"
}
cargo build --release -p relief-cli
pack target/release/relief relief
pack "$(exe fixtures test --no-run -p relief-cli --test fixtures)" fixtures
pack "$(exe precision test --no-run -p relief-core --test precision)" precision
pack "$(exe prune bench --no-run -p relief-benches --bench prune)" prune
for f in ${RELIEF_PACK_FIXTURES:-lenet300-100 lenet5 resnet20 vgg11-c100}; do
  cp "$fixtures/$f.json" .device/fixtures/
  xz -T0 -6 -c "$fixtures/$f.safetensors" >".device/fixtures/$f.safetensors.xz"
done
du -sh .device
