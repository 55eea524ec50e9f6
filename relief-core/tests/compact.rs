//! Compaction: for every model family the compacted model computes the masked model's logits
//! (eval mode) and carries exactly the alive parameters (see `relief_core::compact` docs).

use std::path::Path;
use std::sync::Mutex;

use relief_core::accounting::account;
use relief_core::compact::{compact_with_report, load_compact, save_compact, Compacted};
use relief_core::exec::{forward, ForwardOptions};
use relief_core::graph::{Role, Shortcut};
use relief_core::params::Bound;
use relief_core::sparse::{SparseModel, SparsePolicy};
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

/// Seeded BatchNorm statistics like the golden fixtures' recipe (so some channels are dead or
/// tiny and the engine removes filters for several reasons).
fn randomise_batch_norms(model: &Model, seed: i64) {
    tch::manual_seed(seed);
    let params = model.params();
    tch::no_grad(|| {
        for layer in &model.graph.layers {
            let Some(bn) = &layer.batch_norm else { continue };
            let c = layer.op.outputs();
            let get = |s: &str| params[&format!("{bn}.{s}")].shallow_clone();
            get("weight").copy_(&(Tensor::rand([c], (Kind::Float, Device::Cpu)) + 0.5));
            get("bias").copy_(&(Tensor::randn([c], (Kind::Float, Device::Cpu)) * 0.25));
            get("running_mean").copy_(&(Tensor::randn([c], (Kind::Float, Device::Cpu)) * 0.25));
            get("running_var").copy_(&(Tensor::rand([c], (Kind::Float, Device::Cpu)) * 2.0 + 0.5));
            let dead = (c / 16).max(1);
            let _ = get("bias").narrow(0, 0, dead).fill_(-30.0);
        }
    });
}

fn mnist(n: i64, test: bool, flat: bool) -> Tensor {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-sample");
    let data = relief_data::Mnist::load(&dir).expect("bundled MNIST sample");
    let split = if test { data.test } else { data.train };
    let x = split.images.narrow(0, 0, n).to_kind(Kind::Float) / 255.0;
    if flat {
        x.view([n, 784])
    } else {
        x.view([n, 1, 28, 28])
    }
}

struct Case {
    model: Model,
    masks: MaskSet,
    eval_x: Tensor,
}

/// libtorch's generator is global and tests run on several threads: seeded set-up holds this.
static SEEDED: Mutex<()> = Mutex::new(());

/// A seeded model pruned by the engine `iterations` times on `batch`.
fn pruned(
    arch: &str,
    classes: i64,
    semantics: Semantics,
    iterations: usize,
    prune_n: i64,
    eval_n: i64,
) -> Case {
    let guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let arch: Arch = arch.parse().unwrap();
    let model = Model::new(arch, classes, Device::Cpu, 7);
    let (batch, eval_x) = match arch {
        Arch::Lenet300_100 => (mnist(prune_n, false, true), mnist(eval_n, true, true)),
        Arch::Lenet5 => (mnist(prune_n, false, false), mnist(eval_n, true, false)),
        _ => {
            randomise_batch_norms(&model, 11);
            let mut shape = vec![prune_n];
            shape.extend(arch.input_shape());
            let batch = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
            shape[0] = eval_n;
            (batch, Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)))
        }
    };
    drop(guard);
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let cfg = PruneConfig { alpha_conv: 0.9, alpha_fc: 0.95, semantics, chunk_size: 256 };
    for _ in 0..iterations {
        prune_step(&model.graph, &model.params(), &mut masks, &batch, &cfg).unwrap();
    }
    Case { model, masks, eval_x }
}

fn masked_logits(case: &Case) -> Tensor {
    tch::no_grad(|| {
        forward(
            &case.model.graph,
            &case.model.bound(),
            Some(&case.masks),
            &case.eval_x,
            ForwardOptions::EVAL,
            None,
        )
    })
}

fn compact_logits(c: &Compacted, x: &Tensor) -> Tensor {
    let bound = Bound::new(&c.graph, &c.tensors).unwrap();
    tch::no_grad(|| forward(&c.graph, &bound, None, x, ForwardOptions::EVAL, None))
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// Alive entries as executed: non-zero mask entries of every weight and bias (an inert mask
/// counts as all ones).
fn alive_as_executed(case: &Case) -> i64 {
    let mut n = 0;
    for layer in &case.model.graph.layers {
        let mut names = vec![layer.weight_name()];
        names.extend(layer.bias_name());
        for name in names {
            let m = case.masks.get(&name).unwrap();
            n += if case.masks.is_inert(&name) {
                m.numel() as i64
            } else {
                m.ne(0.0).sum(Kind::Int64).int64_value(&[])
            };
        }
    }
    n
}

/// Alive entries of the rows an inert mask masks entirely: unused units the masked model still
/// computes (the reference's ResNet stem), which compaction removes.
fn inert_masked_rows(case: &Case) -> i64 {
    let mut n = 0;
    for layer in &case.model.graph.layers {
        let name = layer.weight_name();
        if case.masks.is_inert(&name) {
            let m = case.masks.get(&name).unwrap();
            let out = m.size()[0];
            let dead = m.reshape([out, -1]).amax([1i64].as_slice(), false).eq(0.0).sum(Kind::Int64);
            n += dead.int64_value(&[]) * (m.numel() as i64 / out);
        }
    }
    n
}

/// The full check of one case; returns the compacted model. `engine` marks masks produced by
/// `prune_step` (backward pruning done).
fn check(name: &str, case: &Case, engine: bool) -> Compacted {
    let before = masked_logits(case);
    let c = compact_with_report(&case.model.graph, &case.model.params(), &case.masks).unwrap();
    let after = compact_logits(&c, &case.eval_x);
    assert_eq!(after.size(), before.size());
    let diff = max_abs(&(&after - &before));
    let scale = max_abs(&before);
    let r = &c.report;
    eprintln!(
        "{name}: params {} -> {} (alive {} -> {}, dropped {}, bias added {}), flops {} -> {} ({:.2}x), \
         max |logit| {scale:.3e}, max |diff| {diff:.3e}",
        r.params_before,
        r.params_after,
        r.alive_before,
        r.alive_after,
        r.alive_dropped,
        r.bias_added,
        r.flops_before,
        r.flops_after,
        r.flops_before as f64 / r.flops_after as f64
    );
    for l in &r.layers {
        eprintln!(
            "  {:<24} out {:>4} -> {:>4}  in {:>5} -> {:>5}  folded {}",
            l.name, l.outputs.0, l.outputs.1, l.inputs.0, l.inputs.1, l.folded_inputs
        );
    }
    // Equal outputs: 1e-5 absolute, relative to the logits' scale when they exceed 1.
    assert!(diff <= 1e-5 * scale.max(1.0), "{name}: compacted logits differ by {diff:e} (scale {scale:e})");
    // Counts: the compacted masks carry every alive entry as executed, minus the dropped ones.
    assert_eq!(r.alive_before, alive_as_executed(case), "{name}: alive count before");
    assert_eq!(r.alive_after, r.alive_before - r.alive_dropped + r.bias_added, "{name}: count identity");
    let acc = account(&c.graph, &c.masks);
    assert_eq!(
        acc.full_params_alive - bn_alive(&c),
        r.alive_after,
        "{name}: accounting of the compacted model"
    );
    assert_eq!(
        acc.layers.iter().map(|l| l.params_total).sum::<i64>(),
        r.params_after,
        "{name}: params after"
    );
    // Masks that went through backward pruning: nothing alive is dropped (except the rows of an
    // inert stem mask, unused yet computed), and every kept unit of a plain hidden layer or a
    // block's first conv is an alive unit of the masked model.
    let acc_before = account(&case.model.graph, &case.masks);
    for (l, layer) in case.model.graph.layers.iter().enumerate() {
        let plain = matches!(layer.role, Role::Plain | Role::BlockConv1(_));
        if engine && plain && l != case.model.graph.output_layer() {
            assert_eq!(
                r.layers[l].outputs.1, acc_before.layers[l].units_alive,
                "{name}: {} keeps {} units, {} alive",
                layer.name, r.layers[l].outputs.1, acc_before.layers[l].units_alive
            );
        }
    }
    if engine {
        assert_eq!(r.alive_dropped, inert_masked_rows(case), "{name}: compaction dropped alive entries");
    }
    // Idempotent: compacting again removes nothing.
    let again = compact_with_report(&c.graph, &c.tensors, &c.masks).unwrap();
    assert_eq!(again.graph, c.graph, "{name}: compaction is not idempotent");
    // Serialisation round trip.
    let dir = tempfile_dir();
    let path = dir.join(format!("{name}.safetensors"));
    save_compact(&path, &c.graph, &c.tensors).unwrap();
    let (g2, t2) = load_compact(&path).unwrap();
    assert_eq!(g2, c.graph);
    let bound = Bound::new(&g2, &t2).unwrap();
    let reloaded = tch::no_grad(|| forward(&g2, &bound, None, &case.eval_x, ForwardOptions::EVAL, None));
    assert_eq!(max_abs(&(&reloaded - &after)), 0.0, "{name}: reloaded model differs");
    std::fs::remove_file(&path).ok();
    // Sparse inference on the compacted model (every fully connected layer as CSR).
    let sparse =
        SparseModel::new(&c.graph, &c.tensors, &SparsePolicy::Threshold { linear: 1.0, conv: 0.0 }).unwrap();
    let y = sparse.forward(&case.eval_x);
    let d = max_abs(&(&y - &after));
    assert!(d <= 1e-5 * scale.max(1.0), "{name}: sparse logits differ by {d:e}");
    c
}

/// BatchNorm gamma/beta counted by `account` as alive (2 per alive unit with BN).
fn bn_alive(c: &Compacted) -> i64 {
    let acc = account(&c.graph, &c.masks);
    c.graph
        .layers
        .iter()
        .zip(&acc.layers)
        .map(|(l, a)| if l.batch_norm.is_some() { 2 * a.units_alive } else { 0 })
        .sum()
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("relief-compact-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn lenet300_100_compacts_exactly() {
    let case = pruned("lenet300-100", 10, Semantics::Reference, 2, 1000, 256);
    let c = check("lenet300-100", &case, true);
    assert!(c.report.params_after < c.report.params_before);
}

#[test]
fn lenet5_compacts_exactly() {
    let case = pruned("lenet5", 10, Semantics::Reference, 2, 500, 128);
    check("lenet5", &case, true);
}

#[test]
fn lenet5_paper_compacts_exactly() {
    let case = pruned("lenet5", 10, Semantics::Paper, 2, 500, 128);
    check("lenet5-paper", &case, true);
}

#[test]
fn vgg_like_compacts_exactly() {
    let case = pruned("vgg-like", 10, Semantics::Reference, 2, 32, 16);
    let c = check("vgg-like", &case, true);
    assert!(c.report.flops_after < c.report.flops_before);
}

#[test]
fn vgg11_paper_compacts_exactly() {
    let case = pruned("vgg11", 100, Semantics::Paper, 2, 32, 16);
    check("vgg11-paper", &case, true);
}

#[test]
fn resnet20_compacts_exactly() {
    let case = pruned("resnet20", 10, Semantics::Reference, 2, 32, 16);
    let c = check("resnet20", &case, true);
    assert!(c.graph.blocks.iter().any(|b| matches!(b.shortcut, Shortcut::Gather { .. })));
}

#[test]
fn resnet20_paper_compacts_exactly() {
    let case = pruned("resnet20", 10, Semantics::Paper, 2, 32, 16);
    check("resnet20-paper", &case, true);
}

#[test]
fn resnet18_tiny_compacts_exactly() {
    let case = pruned("resnet18-tiny", 200, Semantics::Reference, 1, 8, 4);
    check("resnet18-tiny", &case, true);
}

#[test]
fn dense_model_compacts_to_itself() {
    let model = Model::new("lenet5".parse().unwrap(), 10, Device::Cpu, 3);
    let masks = MaskSet::ones(&model.graph, Device::Cpu);
    let c = compact_with_report(&model.graph, &model.params(), &masks).unwrap();
    assert_eq!(c.graph, model.graph);
    assert_eq!(c.report.params_after, c.report.params_before);
}

/// Hand-made masks that backward pruning never produces: units whose weights are masked but whose
/// bias is alive (constant outputs folded into the next layer), zero shortcut masks, masked
/// conv2 filters with non-zero BatchNorm constants in a residual stream.
fn hand_masked(arch: &str, seed: i64) -> Case {
    let guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let arch_v: Arch = arch.parse().unwrap();
    let model = Model::new(arch_v, 10, Device::Cpu, seed);
    if model.graph.layers.iter().any(|l| l.batch_norm.is_some()) {
        randomise_batch_norms(&model, seed + 1);
    }
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let n_layers = model.graph.layers.len();
    for (l, layer) in model.graph.layers.iter().enumerate() {
        if l == n_layers - 1 {
            continue;
        }
        let out = layer.op.outputs();
        let w = masks.get(&layer.weight_name()).unwrap().copy();
        // A quarter of the rows lose every weight (bias kept); a few more lose the bias too.
        let _ = w.narrow(0, 0, out / 4).fill_(0.0);
        // Random connections.
        let keep = Tensor::rand(w.size().as_slice(), (Kind::Float, Device::Cpu)).gt(0.3).to_kind(Kind::Float);
        masks.set(&layer.weight_name(), w * keep);
        if let Some(b) = layer.bias_name() {
            let m = masks.get(&b).unwrap().copy();
            let _ = m.narrow(0, out / 4, (out / 16).max(1)).fill_(0.0);
            masks.set(&b, m);
        }
    }
    for block in &model.graph.blocks {
        if let Some(name) = &block.mask {
            let m = Tensor::rand([model.graph.layers[block.conv2].op.outputs()], (Kind::Float, Device::Cpu))
                .gt(0.3)
                .to_kind(Kind::Float);
            masks.set(name, m);
        }
    }
    masks.apply(&model.params());
    let mut shape = vec![16];
    shape.extend(arch_v.input_shape());
    let eval_x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).abs();
    drop(guard);
    Case { model, masks, eval_x }
}

#[test]
fn lenet300_100_folds_constant_neurons() {
    let case = hand_masked("lenet300-100", 21);
    let c = check("lenet300-100-hand", &case, false);
    assert!(c.report.layers[1].folded_inputs > 0, "no constant neuron was folded");
    assert!(c.report.layers[0].outputs.1 < 300);
}

#[test]
fn lenet5_folds_constant_filters_through_pooling() {
    let case = hand_masked("lenet5", 22);
    let c = check("lenet5-hand", &case, false);
    assert!(c.report.layers[1].folded_inputs > 0, "no constant filter was folded into the unpadded conv");
    assert!(c.report.layers[2].folded_inputs > 0, "no constant channel was folded through the flatten");
}

#[test]
fn vgg11_keeps_constants_before_padded_convs() {
    let case = hand_masked("vgg11", 23);
    check("vgg11-hand", &case, false);
}

#[test]
fn resnet20_gathers_shortcuts_and_constant_streams() {
    let case = hand_masked("resnet20", 24);
    let c = check("resnet20-hand", &case, false);
    assert!(c
        .graph
        .blocks
        .iter()
        .any(|b| matches!(&b.shortcut, Shortcut::Gather { index, .. } if index.iter().any(|&i| i < 0))));
}

#[test]
fn resnet18_tiny_projection_shortcuts_fold() {
    let case = hand_masked("resnet18-tiny", 25);
    check("resnet18-tiny-hand", &case, false);
}

/// Layers that lose every unit (e.g. a block's conv1 whose filters all emit exactly 0) keep one
/// unit, as libtorch has no zero-width layers: the compacted model still runs and matches.
#[test]
fn zero_width_layers_still_run() {
    let guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new("resnet20".parse().unwrap(), 10, Device::Cpu, 31);
    randomise_batch_norms(&model, 32);
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let params = model.params();
    tch::no_grad(|| {
        for s in ["weight", "bias"] {
            let _ = params[&format!("layer1.0.bn1.{s}")].shallow_clone().fill_(0.0);
        }
    });
    let w = masks.get("layer1.0.conv1.weight").unwrap().zeros_like();
    masks.set("layer1.0.conv1.weight", w);
    masks.apply(&params);
    let eval_x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    drop(guard);
    let case = Case { model, masks, eval_x };
    let c = check("resnet20-zero-width", &case, false);
    // One (constant) unit stays: libtorch has no zero-width convolutions.
    assert_eq!(c.report.layers[1].outputs.1, 1, "layer1.0.conv1 should keep a single filter");

    let guard = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new("lenet300-100".parse().unwrap(), 10, Device::Cpu, 33);
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    masks.set("classifier.2.weight", masks.get("classifier.2.weight").unwrap().zeros_like());
    masks.set("classifier.2.bias", masks.get("classifier.2.bias").unwrap().zeros_like());
    masks.apply(&model.params());
    let eval_x = Tensor::rand([4, 784], (Kind::Float, Device::Cpu));
    drop(guard);
    let case = Case { model, masks, eval_x };
    let c = check("lenet300-100-constant", &case, false);
    assert!(c.report.layers[0].outputs.1 <= 1);
    assert_eq!(c.report.layers[1].outputs.1, 1);
}
