//! Sparse inference: CSR linear layers and im2col + CSR convolutions give the dense model's
//! logits (eval mode) within 1e-5 (relative to the logits' scale when it exceeds 1).

use relief_core::compact::compact_with_report;
use relief_core::exec::{forward, ForwardOptions};
use relief_core::params::Bound;
use relief_core::sparse::{SparseModel, SparsePolicy};
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

fn check(arch: &str, policy: SparsePolicy, compacted: bool) -> SparseModel {
    let a: Arch = arch.parse().unwrap();
    let model = Model::new(a, 10, Device::Cpu, 41);
    let mut shape = vec![16];
    shape.extend(a.input_shape());
    let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).abs();
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let cfg = PruneConfig { alpha_conv: 0.8, alpha_fc: 0.9, semantics: Semantics::Paper, chunk_size: 16 };
    prune_step(&model.graph, &model.params(), &mut masks, &x, &cfg).unwrap();
    let expected =
        tch::no_grad(|| forward(&model.graph, &model.bound(), Some(&masks), &x, ForwardOptions::EVAL, None));
    let (graph, tensors) = if compacted {
        let c = compact_with_report(&model.graph, &model.params(), &masks).unwrap();
        (c.graph, c.tensors)
    } else {
        (model.graph.clone(), model.params())
    };
    Bound::new(&graph, &tensors).unwrap();
    let sparse = SparseModel::new(&graph, &tensors, &policy).unwrap();
    let got = sparse.forward(&x);
    let diff = (&got - &expected).abs().max().double_value(&[]);
    let scale = expected.abs().max().double_value(&[]).max(1.0);
    assert!(diff <= 1e-5 * scale, "{arch}: sparse logits differ by {diff:e} (scale {scale:e})");
    sparse
}

#[test]
fn every_layer_as_csr_matches() {
    let all = SparsePolicy::Threshold { linear: 1.0, conv: 1.0 };
    for arch in ["lenet300-100", "lenet5", "resnet20"] {
        let s = check(arch, all.clone(), true);
        assert!(s.choices().iter().all(|c| c.sparse));
    }
    // The masked (uncompacted) model works too; chain models only, since `SparseModel` takes
    // no shortcut masks (a compacted model has none left).
    check("lenet5", all, false);
}

#[test]
fn default_policy_keeps_convolutions_dense() {
    let s = check("lenet5", SparsePolicy::default(), true);
    for c in s.choices() {
        if c.name.starts_with("feature_extractor") {
            assert!(!c.sparse, "{} should stay dense", c.name);
        }
    }
}

#[test]
fn measured_policy_matches() {
    check("lenet300-100", SparsePolicy::Measure { batch: 8, reps: 3 }, true);
}
