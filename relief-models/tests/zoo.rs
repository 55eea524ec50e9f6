//! The model zoo: parameter counts equal the authors', every graph runs, checkpoints are checked.

use relief_core::accounting::account;
use relief_core::exec::ForwardOptions;
use relief_core::MaskSet;
use relief_models::{Arch, Model, ModelError, ARCH_NAMES};
use tch::{Device, Kind, Tensor};

/// libtorch's generator is global and tests run on several threads: every test here that
/// draws from it (model initialisation included) holds this, so seeded draws are reproducible.
static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn seeded() -> std::sync::MutexGuard<'static, ()> {
    SEEDED.lock().unwrap_or_else(|e| e.into_inner())
}

fn authors_count(name: &str, classes: i64) -> i64 {
    let arch: Arch = name.parse().unwrap();
    let graph = arch.graph(classes);
    account(&graph, &MaskSet::ones(&graph, Device::Cpu)).params_total
}

#[test]
fn parameter_counts_equal_the_authors() {
    assert_eq!(authors_count("lenet300-100", 10), 266_610);
    assert_eq!(authors_count("lenet5", 10), 431_080);
    // ResNet-20: block convolutions + linear, the stem excluded as the authors count.
    assert_eq!(authors_count("resnet20", 10), 267_914);
    assert_eq!(authors_count("vgg-like", 10), 14_982_474);
    // VGG-11 on CIFAR-100, as the vgg11-c100 fixture's reference summary counts it.
    assert_eq!(authors_count("vgg11", 100), 9_797_092);
}

#[test]
fn full_counts_include_batch_norm_and_stem() {
    let graph = Arch::Resnet(3).graph(10);
    let acc = account(&graph, &MaskSet::ones(&graph, Device::Cpu));
    // + 432 stem weights; BatchNorm channels: stem 16, layer1 6 x 16, layer2 6 x 32,
    // layer3 6 x 64 = 688, each with gamma and beta.
    assert_eq!(acc.full_params_total, 267_914 + 432 + 2 * 688);
}

#[test]
fn every_architecture_runs_and_outputs_its_classes() {
    let _seeded = seeded();
    for name in ARCH_NAMES.iter().chain(["vgg19-tiny"].iter()) {
        let arch: Arch = name.parse().unwrap();
        let classes = if name.contains("tiny") { 200 } else { 10 };
        let model = Model::new(arch, classes, Device::Cpu, 0);
        let mut shape = vec![2];
        shape.extend(arch.input_shape());
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        let y = tch::no_grad(|| model.forward(&model.bound(), &x, None, ForwardOptions::EVAL));
        assert_eq!(y.size(), [2, classes], "{name}");
        assert_eq!(arch.to_string(), *name);
    }
}

#[test]
fn initialisation_is_seeded_kaiming_normal() {
    let _seeded = seeded();
    let a = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 7);
    let b = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 7);
    let c = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 8);
    let w = |m: &Model| m.params()["classifier.0.weight"].shallow_clone();
    assert!(w(&a).equal(&w(&b)));
    assert!(!w(&a).equal(&w(&c)));
    // std of kaiming normal with fan_in 784 is sqrt(2/784) = 0.0505
    let std = w(&a).std(true).double_value(&[]);
    assert!((std - (2.0f64 / 784.0).sqrt()).abs() < 0.002, "std {std}");
}

#[test]
fn checkpoints_with_missing_extra_or_misshaped_tensors_are_rejected() {
    let _seeded = seeded();
    let source = Model::new(Arch::Lenet5, 10, Device::Cpu, 1);
    let mut tensors = source.state("");
    tensors.retain(|(k, _)| k != "classifier.2.bias");
    tensors.push(("classifier.9.weight".into(), Tensor::zeros([3], (Kind::Float, Device::Cpu))));
    for (k, t) in tensors.iter_mut() {
        if k == "feature_extractor.0.weight" {
            *t = Tensor::zeros([20, 1, 3, 3], (Kind::Float, Device::Cpu));
        }
    }
    let mut target = Model::new(Arch::Lenet5, 10, Device::Cpu, 2);
    let before = target.params()["classifier.0.weight"].copy();
    let err = target.load_tensors(&tensors, "").unwrap_err();
    let ModelError::Checkpoint { missing, extra, mismatched, .. } = &err else { panic!("{err}") };
    assert_eq!(missing, &["classifier.2.bias"]);
    assert_eq!(extra, &["classifier.9.weight"]);
    assert_eq!(mismatched.len(), 1);
    assert!(mismatched[0].contains("feature_extractor.0.weight"));
    let msg = err.to_string();
    assert!(msg.contains("missing") && msg.contains("unexpected") && msg.contains("wrong shape"), "{msg}");
    // nothing was loaded
    assert!(target.params()["classifier.0.weight"].equal(&before));
}

#[test]
fn checkpoints_round_trip_by_pytorch_names() {
    let _seeded = seeded();
    let source = Model::new(Arch::Resnet(3), 10, Device::Cpu, 3);
    let names: Vec<String> = source.state("").into_iter().map(|(k, _)| k).collect();
    assert!(names.contains(&"layer2.0.conv1.weight".to_string()));
    assert!(names.contains(&"layer3.2.bn2.running_var".to_string()));
    assert!(names.contains(&"bn1.num_batches_tracked".to_string()));
    let mut target = Model::new(Arch::Resnet(3), 10, Device::Cpu, 4);
    target.load_tensors(&source.state("before."), "before.").unwrap();
    for (k, v) in source.params() {
        assert!(target.params()[&k].equal(&v), "{k}");
    }
}

/// A probe that checks the graph's non-negativity claims on a real forward pass.
struct SignCheck {
    claims: relief_core::graph::NonNegative,
    checked: usize,
}

impl SignCheck {
    fn check(&mut self, claimed: bool, t: &Tensor, what: String) {
        if claimed {
            let min = t.min().double_value(&[]);
            assert!(min >= 0.0, "{what} claimed non-negative, has {min}");
            self.checked += 1;
        }
    }
}

impl relief_core::exec::Probe for SignCheck {
    fn layer_input(&mut self, layer: usize, x: &Tensor) {
        self.check(self.claims.layer_inputs[layer], x, format!("input of layer {layer}"));
    }
    fn layer_output(&mut self, _: usize, _: &Tensor) {}
    fn block(&mut self, block: usize, _: Tensor, residual: &Tensor) {
        self.check(self.claims.residuals[block], residual, format!("residual of block {block}"));
    }
}

#[test]
fn nonnegative_claims_hold_on_real_forward_passes() {
    let _seeded = seeded();
    for name in ["lenet300-100", "lenet5", "vgg-like", "resnet20", "resnet18-tiny"] {
        let arch: Arch = name.parse().unwrap();
        let model = Model::new(arch, 10, Device::Cpu, 0);
        let claims = model.graph.nonnegative_tensors();
        // The model input is signed: never claimed.
        assert!(!claims.layer_inputs[0], "{name}");
        let expected = claims.layer_inputs.iter().chain(&claims.residuals).filter(|&&c| c).count();
        assert!(expected > 0, "{name}: no tensor claimed non-negative");
        let mut shape = vec![3];
        shape.extend(arch.input_shape());
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
        let masks = MaskSet::ones(&model.graph, Device::Cpu);
        let mut probe = SignCheck { claims, checked: 0 };
        let _ = tch::no_grad(|| {
            relief_core::exec::forward(
                &model.graph,
                &model.bound(),
                Some(&masks),
                &x,
                ForwardOptions::EVAL,
                Some(&mut probe),
            )
        });
        assert_eq!(probe.checked, expected, "{name}: every claimed tensor was seen");
    }
}
