#!/usr/bin/env bash
# Paired before/after of the pruning-call and training-step benches: the same criterion benches
# from two builds, alternated (old, new, old, new) so both see the same machine load.
#   git worktree add /tmp/wt-old <commit>; mkdir -p /tmp/wt-old/target
#   cp -a target/release /tmp/wt-old/target/        # keeps mtimes: only workspace crates rebuild
#   (cd /tmp/wt-old && ln -s "$PWD/.libtorch" . && LIBTORCH=$PWD/.libtorch cargo build --release -p relief-benches --benches)
#   cargo build --release -p relief-benches --benches
#   scripts/bench_pair.sh /tmp/wt-old/target/release/deps target/release/deps
set -u
cd "$(dirname "$0")/.."
export LD_LIBRARY_PATH=$PWD/.libtorch/lib RELIEF_THREADS=1
OLD=$(realpath "$1"); NEW=$(realpath "$2")
prune=$(basename "$(ls -t "$NEW"/prune-* | grep -v '\.d$' | head -1)")
train=$(basename "$(ls -t "$NEW"/train_step-* | grep -v '\.d$' | head -1)")
for round in 1 2; do
  for side in old new; do
    d=$OLD; [[ $side == new ]] && d=$NEW
    for b in "$prune|cpu/lenet5/prune-reference" "$prune|cpu/resnet20/prune-reference" \
             "$train|cpu/lenet5/train-step-resumable" "$train|cpu/resnet20/train-step-resumable"; do
      bin=${b%%|*}; filt=${b#*|}
      t=$(cd /tmp && "$d/$bin" --bench "$filt" --warm-up-time 1 --measurement-time 6 --noplot --discard-baseline 2>/dev/null | grep -m1 "time:" | sed 's/.*time: *//')
      echo "round $round $side $filt $t"
    done
  done
done
