//! Inference latency of dense, masked, compacted and sparse variants of LeNet-300-100, LeNet-5,
//! VGG-like and ResNet-20 at batch 1, 32 and 256 (eval mode, no grad).
//!
//! Names: `<device>/<model>/<variant>/b<batch>/s<kept %>`. Variants:
//! - `dense`: the unpruned structure, no masks (same kernels as `masked`);
//! - `masked`: the pruned model as the authors run it: zeroed weights, shortcut masks applied;
//! - `compact`: `relief_core::compact` output, a smaller dense model;
//! - `sparse`: the compacted model with every linear layer as CSR (convolutions dense).
//!
//! Throughput is each variant's analytic FLOPs x batch (see `relief_benches::Fixture`), so
//! criterion's elements/s read as FLOP/s of the work that variant does.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relief_benches::{batch, configure, device, device_tag, selected, timed, Fixture, MODELS};
use relief_core::exec::{forward, ForwardOptions};
use relief_core::params::Bound;

fn inference(c: &mut Criterion) {
    let device = device();
    for name in MODELS.into_iter().filter(|m| selected(m)) {
        let fx = Fixture::new(name, device);
        let bound = fx.model.bound();
        let cbound = Bound::new(&fx.compact.graph, &fx.compact.tensors).expect("compacted model");
        let graph = &fx.model.graph;
        let cgraph = &fx.compact.graph;
        let mut group = c.benchmark_group(format!("{}/{}", device_tag(device), fx.name));
        configure(&mut group);
        for b in fx.inference_batches() {
            let (x, _) = batch(fx.arch, b, 10, device, 4);
            let id = |variant: &str| BenchmarkId::new(variant, format!("b{b}/{}", fx.tag()));
            let n = b as u64;
            group.throughput(Throughput::Elements(fx.flops_dense as u64 * n));
            group.bench_function(id("dense"), |bench| {
                bench.iter_custom(|iters| {
                    timed(
                        device,
                        iters,
                        || (),
                        |_| tch::no_grad(|| forward(graph, &bound, None, &x, ForwardOptions::EVAL, None)),
                    )
                })
            });
            group.bench_function(id("masked"), |bench| {
                bench.iter_custom(|iters| {
                    timed(
                        device,
                        iters,
                        || (),
                        |_| {
                            tch::no_grad(|| {
                                forward(graph, &bound, Some(&fx.masks), &x, ForwardOptions::EVAL, None)
                            })
                        },
                    )
                })
            });
            group.throughput(Throughput::Elements(fx.flops_compact as u64 * n));
            group.bench_function(id("compact"), |bench| {
                bench.iter_custom(|iters| {
                    timed(
                        device,
                        iters,
                        || (),
                        |_| tch::no_grad(|| forward(cgraph, &cbound, None, &x, ForwardOptions::EVAL, None)),
                    )
                })
            });
            group.throughput(Throughput::Elements(fx.flops_sparse as u64 * n));
            group.bench_function(id("sparse"), |bench| {
                bench.iter_custom(|iters| timed(device, iters, || (), |_| fx.sparse.forward(&x)))
            });
        }
        group.finish();
        eprintln!(
            "{}: {} % kept, FLOPs/sample dense {} alive {} compact {} sparse {} (dense/compact {:.2}x)",
            fx.name,
            fx.kept_percent,
            fx.flops_dense,
            fx.flops_alive,
            fx.flops_compact,
            fx.flops_sparse,
            fx.flops_dense as f64 / fx.flops_compact as f64
        );
    }
}

criterion_group!(benches, inference);
criterion_main!(benches);
