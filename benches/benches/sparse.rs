//! Where CSR beats dense: one linear layer (the fully connected shapes of the zoo) at weight
//! densities 1-50 % and batch 1, 32, 256, and one 3x3 convolution through im2col + CSR.
//!
//! Names: `<device>/crossover/<layer>/{dense,csr}/b<batch>[/d<density %>]`. The dense time does
//! not depend on the density (no zero skipping), so it is measured once per shape and batch.
//! Throughput: dense FLOPs of the layer x batch, so elements/s compare directly.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use relief_benches::{configure, device, device_tag, quick, timed};
use relief_core::graph::Convention;
use relief_core::graph::{Activation, Layer, LayerOp, Node, PruneGraph, Role};
use relief_core::sparse::{SparseModel, SparsePolicy};
use tch::{Kind, Tensor};

/// A one-layer graph with a random weight of the given density.
fn one_layer(op: LayerOp, hw: (i64, i64), density: f64) -> (PruneGraph, relief_core::params::TensorMap) {
    let input_shape = if op.is_conv() { vec![op.inputs(), hw.0, hw.1] } else { vec![op.inputs()] };
    let layer = Layer {
        name: "l".into(),
        op,
        bias: true,
        batch_norm: None,
        activation: Activation::Identity,
        role: Role::Plain,
        input_hw: hw,
    };
    let mut nodes = vec![Node::Layer(0)];
    let classes = if op.is_conv() {
        nodes.push(Node::Flatten);
        let (h, w) = layer.output_hw();
        op.outputs() * h * w
    } else {
        op.outputs()
    };
    let graph = PruneGraph {
        arch: "crossover".into(),
        input_shape,
        num_classes: classes,
        convention: Convention::Lenet,
        layers: vec![layer],
        blocks: vec![],
        nodes,
    };
    tch::manual_seed(9);
    let shape = op.weight_shape();
    let keep = if op.is_conv() {
        // Whole kernels, as NNrelief masks convolutions.
        Tensor::rand([shape[0], shape[1], 1, 1], (Kind::Float, tch::Device::Cpu))
            .lt(density)
            .expand(shape.as_slice(), false)
    } else {
        Tensor::rand(shape.as_slice(), (Kind::Float, tch::Device::Cpu)).lt(density)
    };
    let w = Tensor::randn(shape.as_slice(), (Kind::Float, tch::Device::Cpu)) * keep.to_kind(Kind::Float);
    let mut map = relief_core::params::TensorMap::new();
    map.insert("l.weight".into(), w);
    map.insert("l.bias".into(), Tensor::randn([op.outputs()], (Kind::Float, tch::Device::Cpu)));
    (graph, map)
}

fn crossover(c: &mut Criterion) {
    let device = device();
    let (batches, densities): (Vec<i64>, Vec<f64>) = if quick() {
        (vec![1], vec![0.05])
    } else {
        (vec![1, 32, 256], vec![0.01, 0.02, 0.05, 0.1, 0.2, 0.5])
    };
    let linears = [(784, 300), (300, 100), (800, 500), (512, 512)];
    let mut group = c.benchmark_group(format!("{}/crossover", device_tag(device)));
    configure(&mut group);
    group.measurement_time(std::time::Duration::from_secs(if quick() { 1 } else { 2 }));
    let mut cases: Vec<(String, LayerOp, (i64, i64))> = linears
        .iter()
        .map(|&(i, o)| (format!("linear-{i}x{o}"), LayerOp::Linear { inputs: i, outputs: o }, (1, 1)))
        .collect();
    cases.push((
        "conv3x3-64x64-16x16".into(),
        LayerOp::Conv2d { inputs: 64, outputs: 64, kernel: 3, stride: 1, padding: 1 },
        (16, 16),
    ));
    for (label, op, hw) in cases {
        let conv_batches: Vec<i64> = if op.is_conv() {
            batches.iter().copied().filter(|&b| b <= 32).collect()
        } else {
            batches.clone()
        };
        for &b in &conv_batches {
            let mut shape = vec![b, op.inputs()];
            if op.is_conv() {
                shape.extend([hw.0, hw.1]);
            }
            let x = Tensor::randn(shape.as_slice(), (Kind::Float, device));
            let k2 = if let LayerOp::Conv2d { kernel, .. } = op { kernel * kernel } else { 1 };
            let positions = if op.is_conv() { hw.0 * hw.1 } else { 1 };
            let flops = (2 * op.inputs() * op.outputs() * k2 * positions) as u64 * b as u64;
            group.throughput(Throughput::Elements(flops));
            let (graph, map) = one_layer(op, hw, 1.0);
            let dense = SparseModel::new(&graph, &map, &SparsePolicy::Threshold { linear: 0.0, conv: 0.0 })
                .expect("dense");
            group.bench_function(BenchmarkId::new(format!("{label}/dense"), format!("b{b}")), |bench| {
                bench.iter_custom(|iters| timed(device, iters, || (), |_| dense.forward(&x)))
            });
            for &d in &densities {
                let (graph, map) = one_layer(op, hw, d);
                let all = SparsePolicy::Threshold { linear: 1.0, conv: 1.0 };
                let sparse = SparseModel::new(&graph, &map, &all).expect("csr");
                let pct = (d * 100.0).round() as i64;
                group.bench_function(
                    BenchmarkId::new(format!("{label}/csr"), format!("b{b}/d{pct}")),
                    |bench| bench.iter_custom(|iters| timed(device, iters, || (), |_| sparse.forward(&x))),
                );
            }
        }
    }
    group.finish();
}

criterion_group!(benches, crossover);
criterion_main!(benches);
