//! Times one NNrelief pruning call against one no-grad forward pass over the same batch.
//!
//! `cargo run --release -p relief-models --example prune_timing -- resnet20 1000 [chunk] [only]`
//! where `only` is `forward`, `paper` or `reference` to run just that (for peak-memory
//! measurements with `/usr/bin/time -v`).
//! (criterion benches with the same measurement live in `benches/`).

use std::time::Instant;

use relief_core::exec::ForwardOptions;
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

fn main() {
    relief_core::host_memory::retain_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    let arch: Arch = args.get(1).map(String::as_str).unwrap_or("lenet5").parse().expect("model name");
    let n: i64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let chunk: i64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(250);
    let only = args.get(4).cloned().unwrap_or_default();
    let mut shape = vec![n];
    shape.extend(arch.input_shape());
    tch::manual_seed(0);
    let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).abs();
    let model = Model::new(arch, 10, Device::Cpu, 0);
    let bound = model.bound();
    let _ = tch::no_grad(|| model.forward(&bound, &x.narrow(0, 0, 2), None, ForwardOptions::EVAL));
    let mut fwd = f64::NAN;
    if only.is_empty() || only == "forward" {
        let t = Instant::now();
        let _ = tch::no_grad(|| model.forward(&bound, &x, None, ForwardOptions::EVAL));
        fwd = t.elapsed().as_secs_f64();
        println!("{arch}: forward at batch {n}: {fwd:.3} s");
    }
    for semantics in [Semantics::Paper, Semantics::Reference] {
        if !(only.is_empty() || only == semantics.to_string()) {
            continue;
        }
        let model = Model::new(arch, 10, Device::Cpu, 0);
        let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
        let cfg = PruneConfig { alpha_conv: 0.95, alpha_fc: 0.95, semantics, chunk_size: chunk };
        let t = Instant::now();
        prune_step(&model.graph, &model.params(), &mut masks, &x, &cfg).expect("prune");
        let p = t.elapsed().as_secs_f64();
        println!("  prune_step {semantics}: {p:.3} s = {:.2}x forward", p / fwd);
    }
}
