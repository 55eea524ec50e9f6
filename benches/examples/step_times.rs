//! Same protocol as `scripts/bench_torch.py` (median of `--reps` timed runs after 3 warm-up
//! runs), for a paired comparison with PyTorch eager on a busy machine:
//! `cargo run --release -p relief-benches --example step_times -- MODEL [REPS]` prints
//! `model what batch ms` for one training step (`train::train_step`, tch Adam, and
//! `optim::masked_train_step`, resumable Adam; lr 1e-3, weight decay 5e-4, all-ones masks) and dense
//! eval inference at batch 1, 32, 256 (VGG-like 256 only with `RELIEF_BENCH_HEAVY`), plus the
//! pruned fixture's compacted model at the same batches.

use std::time::Instant;

use relief_benches::{batch, Fixture};
use relief_core::exec::{forward, ForwardOptions};
use relief_core::optim::{masked_train_step, MaskedOptimizer};
use relief_core::params::Bound;
use relief_core::train::{train_step, OptimizerSpec};
use relief_core::MaskSet;
use relief_models::{Arch, Model};

/// `(median, min)` in ms.
fn median_ms(mut f: impl FnMut(), reps: usize) -> (f64, f64) {
    for _ in 0..3 {
        f();
    }
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    (t[t.len() / 2], t[0])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = args.get(1).map(String::as_str).unwrap_or("lenet300-100");
    let reps: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(20);
    let what: &str = args.get(3).map(String::as_str).unwrap_or("all");
    let arch: Arch = name.parse().expect("zoo model name");
    let device = relief_benches::device();
    let spec = OptimizerSpec::Adam { lr: 1e-3, weight_decay: 5e-4 };
    let n = if matches!(arch, Arch::Lenet300_100 | Arch::Lenet5) { 120 } else { 128 };
    let (x, y) = batch(arch, n, 10, device, 5);
    if what == "all" || what == "train" {
        let model = Model::new(arch, 10, device, 1);
        let masks = MaskSet::ones(&model.graph, device);
        let (bound, params) = (model.bound(), model.params());
        let mut opt = spec.build(&model.vs).expect("optimizer");
        let ms = median_ms(
            || {
                let _ = train_step(&model.graph, &bound, &params, &masks, &mut opt, &x, &y);
            },
            reps,
        );
        println!("{name:14} train-step       b{n:<4} {:9.3} ms (min {:9.3})", ms.0, ms.1);
        let mut opt = MaskedOptimizer::new(spec, &params).expect("optimizer");
        let ms = median_ms(
            || {
                let _ = masked_train_step(&model.graph, &bound, &params, &masks, &mut opt, &x, &y);
            },
            reps,
        );
        println!("{name:14} train-step-resumable  b{n:<4} {:9.3} ms (min {:9.3})", ms.0, ms.1);
    }
    if what == "all" || what == "infer" {
        let fx = Fixture::new(name, device);
        let bound = fx.model.bound();
        let cbound = Bound::new(&fx.compact.graph, &fx.compact.tensors).expect("compacted");
        for b in fx.inference_batches() {
            let (xb, _) = batch(arch, b, 10, device, 4);
            let dense = median_ms(
                || {
                    let _ = tch::no_grad(|| {
                        forward(&fx.model.graph, &bound, None, &xb, ForwardOptions::EVAL, None)
                    });
                },
                reps,
            );
            let compact = median_ms(
                || {
                    let _ = tch::no_grad(|| {
                        forward(&fx.compact.graph, &cbound, None, &xb, ForwardOptions::EVAL, None)
                    });
                },
                reps,
            );
            let sparse = median_ms(
                || {
                    let _ = fx.sparse.forward(&xb);
                },
                reps,
            );
            println!(
                "{name:14} inference        b{b:<4} dense {:9.3} ms  compact {:9.3} ms ({:.2}x)  sparse {:9.3} ms  \
                 (min {:.3} / {:.3} / {:.3}, {:.2}x) [{}; FLOPs dense/compact {:.2}x]",
                dense.0,
                compact.0,
                dense.0 / compact.0,
                sparse.0,
                dense.1,
                compact.1,
                sparse.1,
                dense.1 / compact.1,
                fx.tag(),
                fx.flops_dense as f64 / fx.flops_compact as f64
            );
        }
    }
}
