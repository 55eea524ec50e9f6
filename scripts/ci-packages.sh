#!/usr/bin/env bash
# ci-packages.sh - Debian packages the CI needs beyond the toolchain: headless Chromium for the
# HTML report tests, Fashion-MNIST (/usr/share/datasets/fashion-mnist) for the user-data tests
# (Slurm comes from scripts/slurm.sh install). Idempotent; run as root.
#
# `apt-get update` runs only when the machine has no package lists yet (a fresh Debian image
# has none; scripts/slurm.sh install, run before, has fetched them), or once more when an
# install fails on stale lists. Checks afterwards that Chromium renders a page headless.
set -euo pipefail

PKGS=(chromium dataset-fashion-mnist)
say() { printf '[ci-packages %(%H:%M:%S)T] %s\n' -1 "$*"; }

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if (( ${#missing[@]} > 0 )); then
  t0=$SECONDS
  export DEBIAN_FRONTEND=noninteractive
  if ! compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; then
    say "apt-get update (no package lists yet)"
    timeout 300 apt-get update -qq
  fi
  say "installing ${missing[*]}"
  if ! timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}"; then
    say "apt-get install failed; apt-get update and one retry"
    timeout 300 apt-get update -qq
    timeout 900 apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
  say "installed ${missing[*]} in $(( SECONDS - t0 )) s"
else
  say "already installed: ${PKGS[*]}"
fi

# smoke test: as root Chromium needs --no-sandbox; Chromium >= 132 runs the new headless
# mode for plain --headless (the old one is the separate chromium-headless-shell package)
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
printf '<!doctype html><title>ci</title><h1 id="x">relief ci</h1>\n' >"$dir/page.html"
flags=(--headless --no-sandbox --disable-gpu --no-first-run --user-data-dir="$dir/profile")
timeout 120 chromium "${flags[@]}" --dump-dom "file://$dir/page.html" 2>"$dir/err1" | grep -q 'relief ci' ||
  { cat "$dir/err1" >&2; say "ERROR: chromium --dump-dom failed"; exit 1; }
timeout 120 chromium "${flags[@]}" --screenshot="$dir/shot.png" --window-size=1200,900 "file://$dir/page.html" 2>"$dir/err2" >/dev/null ||
  { cat "$dir/err2" >&2; say "ERROR: chromium --screenshot failed"; exit 1; }
[[ $(head -c 8 "$dir/shot.png" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
  { say "ERROR: chromium wrote no PNG"; exit 1; }
say "$(chromium --version 2>/dev/null) renders headless (--dump-dom, --screenshot)"

# Fashion-MNIST: the four IDX files the tests read
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [[ -s /usr/share/datasets/fashion-mnist/$f.gz ]] ||
    { say "ERROR: /usr/share/datasets/fashion-mnist/$f.gz missing"; exit 1; }
done
say "Fashion-MNIST in /usr/share/datasets/fashion-mnist"
