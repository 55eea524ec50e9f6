//! One masked training step (forward, cross-entropy, backward, gradient masking, Adam step,
//! weight masking) per model at batch 120 (MNIST models) / 128 (CIFAR models).
//!
//! Names: `<device>/<model>/<step>/b<batch>` with `<step>`:
//! - `train-step`: `relief_core::train::train_step` with `tch::nn::Adam`;
//! - `train-step-resumable`: `relief_core::optim::masked_train_step` with the resumable
//!   `MaskedOptimizer` (exportable state, in-place per-tensor updates) that the pipeline uses.
//!
//! Adam lr 1e-3, weight decay 5e-4; all-ones masks (a mask's values do not change the cost).
//! Throughput: 3 x forward FLOPs x batch (forward + backward, the usual estimate).
//! Compare with `scripts/bench_torch.py` (PyTorch eager, same steps).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relief_benches::{batch, configure, device, device_tag, selected, timed, train_batch, MODELS};
use relief_core::accounting::account;
use relief_core::optim::{masked_train_step, MaskedOptimizer};
use relief_core::train::{train_step, OptimizerSpec};
use relief_core::MaskSet;
use relief_models::{Arch, Model};

fn train(c: &mut Criterion) {
    let device = device();
    let spec = OptimizerSpec::Adam { lr: 1e-3, weight_decay: 5e-4 };
    for name in MODELS.into_iter().filter(|m| selected(m)) {
        let arch: Arch = name.parse().expect("zoo name");
        let n = train_batch(arch);
        let (x, y) = batch(arch, n, 10, device, 5);
        let mut group = c.benchmark_group(format!("{}/{}", device_tag(device), name));
        configure(&mut group);
        {
            let model = Model::new(arch, 10, device, 1);
            let masks = MaskSet::ones(&model.graph, device);
            let flops = account(&model.graph, &masks).flops_dense as u64 * n as u64 * 3;
            group.throughput(Throughput::Elements(flops));
            let (bound, params) = (model.bound(), model.params());
            let mut opt = spec.build(&model.vs).expect("optimizer");
            group.bench_function(BenchmarkId::new("train-step", format!("b{n}")), |b| {
                b.iter_custom(|iters| {
                    timed(
                        device,
                        iters,
                        || (),
                        |_| train_step(&model.graph, &bound, &params, &masks, &mut opt, &x, &y),
                    )
                })
            });
        }
        {
            let model = Model::new(arch, 10, device, 1);
            let masks = MaskSet::ones(&model.graph, device);
            let (bound, params) = (model.bound(), model.params());
            let mut opt = MaskedOptimizer::new(spec, &params).expect("optimizer");
            group.bench_function(BenchmarkId::new("train-step-resumable", format!("b{n}")), |b| {
                b.iter_custom(|iters| {
                    timed(
                        device,
                        iters,
                        || (),
                        |_| masked_train_step(&model.graph, &bound, &params, &masks, &mut opt, &x, &y),
                    )
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, train);
criterion_main!(benches);
