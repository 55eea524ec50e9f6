//! One full NNrelief pruning call per model (`reference` and `paper` semantics) next to one
//! no-grad eval forward pass over the same batch.
//!
//! Names: `<device>/<model>/{prune-reference,prune-paper,forward}/b<batch>`, on CUDA also
//! `forward-ieee` (the forward pass in IEEE float32, as the engine scores; libtorch's default
//! runs CUDA convolutions in TF32). Each call starts
//! from the same seeded dense model and all-ones masks (restored untimed before every run);
//! the whole batch is one chunk. Batch 1000 (VGG-like: 256 unless `RELIEF_BENCH_HEAVY` is set).
//! Throughput for all three is the dense forward FLOPs x batch, so elements/s compare directly
//! (issue targets: paper <= 1.5x one forward, reference <= 2.5x).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relief_benches::{
    batch, configure, device, device_tag, prune_batch, randomise_batch_norms, selected, timed, MODELS,
};
use relief_core::accounting::account;
use relief_core::exec::{forward, ForwardOptions};
use relief_core::precision::ExactFloat32;
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::Tensor;

fn prune(c: &mut Criterion) {
    let device = device();
    for name in MODELS.into_iter().filter(|m| selected(m)) {
        let arch: Arch = name.parse().expect("zoo name");
        let model = Model::new(arch, 10, device, 1);
        if !matches!(arch, Arch::Lenet300_100 | Arch::Lenet5) {
            randomise_batch_norms(&model, 2);
        }
        let params = model.params();
        let saved: Vec<(Tensor, Tensor)> =
            params.values().map(|p| (p.shallow_clone(), p.detach().copy())).collect();
        let restore = || {
            tch::no_grad(|| {
                for (p, s) in &saved {
                    p.shallow_clone().copy_(s);
                }
            })
        };
        let n = prune_batch(arch);
        let (x, _) = batch(arch, n, 10, device, 3);
        let flops = account(&model.graph, &MaskSet::ones(&model.graph, device)).flops_dense as u64 * n as u64;
        let mut group = c.benchmark_group(format!("{}/{}", device_tag(device), name));
        configure(&mut group);
        group.throughput(Throughput::Elements(flops));
        let bound = model.bound();
        let time_forward = |iters| {
            timed(
                device,
                iters,
                || (),
                |_| tch::no_grad(|| forward(&model.graph, &bound, None, &x, ForwardOptions::EVAL, None)),
            )
        };
        group.bench_function(BenchmarkId::new("forward", format!("b{n}")), |b| b.iter_custom(time_forward));
        if device.is_cuda() {
            // The engine scores in IEEE float32 (`relief_core::precision`); libtorch's default
            // forward above runs CUDA convolutions in TF32. This is the forward the pruning call
            // actually contains.
            group.bench_function(BenchmarkId::new("forward-ieee", format!("b{n}")), |b| {
                b.iter_custom(|iters| {
                    let _exact = ExactFloat32::new();
                    time_forward(iters)
                })
            });
        }
        for semantics in [Semantics::Reference, Semantics::Paper] {
            let cfg = PruneConfig { alpha_conv: 0.9, alpha_fc: 0.95, semantics, chunk_size: n };
            group.bench_function(BenchmarkId::new(format!("prune-{semantics}"), format!("b{n}")), |b| {
                b.iter_custom(|iters| {
                    timed(
                        device,
                        iters,
                        || {
                            restore();
                            MaskSet::ones(&model.graph, device)
                        },
                        |mut masks| prune_step(&model.graph, &params, &mut masks, &x, &cfg).expect("prune"),
                    )
                })
            });
        }
        group.finish();
        restore();
    }
}

criterion_group!(benches, prune);
criterion_main!(benches);
