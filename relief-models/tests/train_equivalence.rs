//! relief's trainer is PyTorch's: LeNet-5 and ResNet-20, pruned once by the engine
//! (`relief_core::prune_step`, reference semantics, then `MaskSet::apply`, as the pipeline's
//! pruning call), are retrained for 20 steps from the same weights on the same batches by the
//! pipeline's step ([`masked_train_step`] with a [`MaskedOptimizer`] from the config's
//! `OptimizerSpec`: Adam lr 1e-3, SGD lr 0.1 momentum 0.9, weight decay 5e-4, the paper
//! presets') and by PyTorch (the architectures written below in Python with relief's parameter
//! names, loaded from relief's post-pruning state).
//!
//! Both sides do what `masked_train_step` does: a train-mode forward (BatchNorm on batch
//! statistics, running statistics updated with momentum 0.1; no dropout in either model; the
//! residual of a ResNet block multiplied by its shortcut mask), mean cross-entropy, backward,
//! `grad *= mask` for every weight/bias mask, the optimizer step, `param *= mask`. Inert masks
//! (the ResNet stem's in reference semantics) are applied by neither side.
//!
//! Checked, per model and optimizer:
//!
//! 1. Against PyTorch with the update written in PyTorch in relief's order of float32
//!    operations (`ReliefOrder` below, a transcription of `MaskedOptimizer::step`): every loss
//!    within 1e-5 relative and every final parameter and BatchNorm buffer within 1e-4
//!    (max |relief - torch| / max |torch| per tensor). Measured: bit for bit equal.
//! 2. That order of operations is `torch.optim.Adam(weight_decay=...)` /
//!    `torch.optim.SGD(momentum=0.9, weight_decay=...)`: at every step of that run, both
//!    updates are computed in float64 from the same parameters, masked gradients and state, and
//!    must agree within 1e-10 (max |difference| / max |torch.optim update|; measured <= 2e-13).
//!    A misplaced epsilon, a missing bias correction, decoupled weight decay or dampening
//!    would be off by 1e-5 or (far) more.
//! 3. Against `torch.optim` itself end to end, in float32. LeNet-5: every loss within 1e-5,
//!    every final tensor within 1e-4 (measured 2e-7 and 3e-7). ResNet-20: the losses of the
//!    first 3 steps within 1e-5; the rest is printed, not asserted. The two updates differ only
//!    by float32 rounding (`g + wd * p`, `m * -step_size` and `buf * -lr` rounded before the
//!    add: tch exposes no `alpha` / `value` argument; `v * b2 + ((1 - b2) * g) * g`), and
//!    ResNet-20 on this data amplifies a 1-ulp difference several-fold per step: after 20
//!    steps PyTorch disagrees with itself about as much as relief disagrees with it. Measured
//!    (max relative loss difference, worst final tensor): PyTorch's fused CPU Adam vs its
//!    single-tensor Adam 4.6e-4 / 4.6e-2, single-tensor Adam on 2 threads vs 1 5.1e-4 /
//!    2.9e-2, relief vs single-tensor Adam 3.1e-4 / 3.5e-2; single-tensor SGD on 2 threads vs
//!    1 1.4e-2 / 0.55, relief vs single-tensor SGD 2.3e-2 / 0.54; the worst tensors are
//!    BatchNorm biases, whose gradients cancel to small values.
//!
//! Data: seeded N(0, 1) images (LeNet-5 1x28x28, ResNet-20 3x32x32) and uniform labels, 32 per
//! batch, a fixed sequence of 20 batches; the pruning batch is another 64 images. Both sides
//! run on one CPU thread. Weights, masks and batches go to PyTorch, and its losses and final
//! states come back, as safetensors files in a temporary directory.
//!
//! PyTorch runs in the project venv (`.venv/bin/python`, made by `scripts/setup.sh`, the torch
//! whose libtorch relief links); `RELIEF_PYTHON` names another interpreter with that torch.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use relief_core::optim::{masked_train_step, MaskedOptimizer};
use relief_core::train::OptimizerSpec;
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

/// libtorch's generator is global: one test at a time draws from it.
static SEEDED: Mutex<()> = Mutex::new(());

const STEPS: i64 = 20;
const BATCH: i64 = 32;
const PRUNE_BATCH: i64 = 64;
const CLASSES: i64 = 10;
const LOSS_RTOL: f64 = 1e-5;
const WEIGHT_RTOL: f64 = 1e-4;
/// Per-step update, float64: max |relief's order - torch.optim| / max |torch.optim update|.
const UPDATE_RTOL: f64 = 1e-10;
/// ResNet-20 against torch.optim: the steps whose losses must agree to `LOSS_RTOL`.
const RESNET_TORCH_STEPS: usize = 3;

/// Written from the architectures (docs of `relief_models::zoo`) and from the executor's
/// forward program (`relief_core::exec`); the training loop mirrors `masked_train_step`.
const PYTORCH_TRAINER: &str = r#"
import math, sys
import torch
from torch import nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

torch.set_num_threads(1)
directory, arch, optimizer, lr, momentum, weight_decay = sys.argv[1:]
lr, momentum, weight_decay = float(lr), float(momentum), float(weight_decay)


class LeNet5(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.feature_extractor = nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
                                               nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.feature_extractor(x), 1))


class Block(nn.Module):
    """BasicBlock, option-A shortcut; `mask` (set after loading) scales the residual."""
    def __init__(self, inputs, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - inputs) // 2 if stride != 1 or inputs != planes else None
        self.mask = None

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        res = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        if self.mask is not None:
            res = res * self.mask.view(-1, 1, 1)
        return F.relu(out + res)


class ResNet(nn.Module):
    def __init__(self, blocks, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        inputs = 16
        for stage, planes in enumerate([16, 32, 64]):
            seq = []
            for b in range(blocks):
                seq.append(Block(inputs, planes, 2 if stage > 0 and b == 0 else 1))
                inputs = planes
            setattr(self, "layer%d" % (stage + 1), nn.Sequential(*seq))
        self.linear = nn.Linear(inputs, classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size(3)).flatten(1)
        return self.linear(out)


class ReliefOrder:
    """relief's MaskedOptimizer (relief-core/src/training/optim.rs), op for op."""

    def __init__(self, params):
        self.params, self.t, self.buf1, self.buf2 = list(params), 0, None, None

    @torch.no_grad()
    def step(self):
        self.t += 1
        first = self.buf1 is None
        if optimizer == "adam":
            if first:
                self.buf1 = [torch.zeros_like(p) for p in self.params]
                self.buf2 = [torch.zeros_like(p) for p in self.params]
            bc1, bc2 = 1 - 0.9 ** self.t, 1 - 0.999 ** self.t
            step_size = lr / bc1
            for p, m, v in zip(self.params, self.buf1, self.buf2):
                g = p.grad + p * weight_decay if weight_decay != 0 else p.grad
                m.lerp_(g, 1 - 0.9)
                v.mul_(0.999)
                v.addcmul_(g * (1 - 0.999), g)
                p.addcdiv_(m * -step_size, v.sqrt() / math.sqrt(bc2) + 1e-8)
        else:
            if first:
                self.buf1 = []
            for i, p in enumerate(self.params):
                g = p.grad + p * weight_decay if weight_decay != 0 else p.grad
                if first:
                    self.buf1.append(g.clone())
                else:
                    self.buf1[i].mul_(momentum)
                    self.buf1[i].add_(g)
                p.add_(self.buf1[i] * -lr)


def torch_optimizer(params):
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=False)
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=False)


init = load_file(directory + "/init.safetensors")
data = load_file(directory + "/data.safetensors")


def train(order):
    """20 masked steps with torch.optim (`order` False) or relief's update order (True). With
    relief's order, every step's update is also computed in float64 by torch.optim and by
    relief's order from the same parameters, gradients and (float64) state; returns the largest
    max |difference| / max |torch.optim update| over steps and tensors."""
    masks = load_file(directory + "/masks.safetensors")
    model = LeNet5(10) if arch == "lenet5" else ResNet(3, 10)
    model.load_state_dict(init, strict=True)
    for name, module in model.named_modules():
        if isinstance(module, Block):
            module.mask = masks.pop(name + ".shortcut", None)
    params = dict(model.named_parameters())
    unknown = set(masks) - set(params)
    assert not unknown, "masks of no parameter: %s" % sorted(unknown)
    opt = ReliefOrder(params.values()) if order else torch_optimizer(params.values())
    if order:
        shadow_torch = [p.detach().double().requires_grad_() for p in params.values()]
        shadow_order = [p.detach().double().requires_grad_() for p in params.values()]
        opt_torch, opt_order = torch_optimizer(shadow_torch), ReliefOrder(shadow_order)
    update_rel = 0.0
    model.train()
    losses = []
    for x, y in zip(data["x"], data["y"]):
        for p in params.values():
            p.grad = None
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].grad.mul_(m)
            if order:
                for p, a, b in zip(params.values(), shadow_torch, shadow_order):
                    a.copy_(p)
                    b.copy_(p)
                    a.grad = p.grad.double()
                    b.grad = p.grad.double()
                opt_torch.step()
                opt_order.step()
                for p, a, b in zip(params.values(), shadow_torch, shadow_order):
                    scale = (a - p.double()).abs().max().item()
                    diff = (a - b).abs().max().item()
                    update_rel = max(update_rel, diff / scale if scale > 0 else diff)
        opt.step()
        with torch.no_grad():
            for name, m in masks.items():
                params[name].mul_(m)
        losses.append(loss.item())
    return losses, model.state_dict(), update_rel


out = {}
for tag, order in [("torch", False), ("order", True)]:
    losses, state, update_rel = train(order)
    out[tag + ".loss"] = torch.tensor(losses, dtype=torch.float64)
    out.update({tag + ".state." + k: v.detach().contiguous() for k, v in state.items()})
    if order:
        out["update_rel"] = torch.tensor([update_rel], dtype=torch.float64)
save_file(out, directory + "/torch.safetensors")
"#;

fn python() -> PathBuf {
    common::venv_python("trains the models")
}

fn write(path: &Path, tensors: &[(String, Tensor)]) {
    Tensor::write_safetensors(tensors, path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Relief's run and its weight/bias masks (those applied), with the set-up written to `dir`
/// for the PyTorch side.
fn train_relief(arch: Arch, spec: OptimizerSpec, dir: &Path) -> (Run, BTreeMap<String, Tensor>) {
    let (model, prune_x, xs, ys) = {
        let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
        let model = Model::new(arch, CLASSES, Device::Cpu, 3);
        tch::manual_seed(17);
        let input = arch.input_shape();
        let shape = |lead: &[i64]| [lead, input.as_slice()].concat();
        let prune_x = Tensor::randn(shape(&[PRUNE_BATCH]).as_slice(), (Kind::Float, Device::Cpu));
        let xs = Tensor::randn(shape(&[STEPS, BATCH]).as_slice(), (Kind::Float, Device::Cpu));
        let ys = Tensor::randint(CLASSES, [STEPS, BATCH], (Kind::Int64, Device::Cpu));
        (model, prune_x, xs, ys)
    };
    let params = model.params();
    let bound = model.bound();
    // The pipeline's pruning call: the engine on a batch, then the masks applied.
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let cfg = PruneConfig { semantics: Semantics::Reference, ..PruneConfig::default() };
    prune_step(&model.graph, &params, &mut masks, &prune_x, &cfg).unwrap();
    masks.apply(&params);
    let (kept, total) =
        masks.iter().filter(|(n, _)| params.contains_key(*n)).fold((0, 0), |(k, t), (n, _)| {
            let (a, b) = masks.kept(n).unwrap();
            (k + a, t + b)
        });
    assert!(kept < total, "{arch}: the pruning call removed nothing");
    let active: Vec<(String, Tensor)> = masks
        .iter()
        .filter(|(n, _)| !masks.is_inert(n))
        .map(|(n, m)| (n.clone(), m.shallow_clone()))
        .collect();
    if arch != Arch::Lenet5 {
        assert!(active.iter().any(|(n, _)| n.ends_with(".shortcut")), "{arch}: no shortcut masks");
    }
    write(&dir.join("init.safetensors"), &model.state(""));
    write(&dir.join("masks.safetensors"), &active);
    write(
        &dir.join("data.safetensors"),
        &[("x".into(), xs.shallow_clone()), ("y".into(), ys.shallow_clone())],
    );

    let mut opt = MaskedOptimizer::new(spec, &params).unwrap();
    let mut losses = Vec::new();
    for s in 0..STEPS {
        let (loss, _) =
            masked_train_step(&model.graph, &bound, &params, &masks, &mut opt, &xs.get(s), &ys.get(s));
        losses.push(loss.double_value(&[]));
    }
    let applied = active.into_iter().filter(|(n, _)| params.contains_key(n)).collect();
    (Run { losses, state: model.state("").into_iter().collect() }, applied)
}

/// A trajectory: the loss of every step and the final state.
struct Run {
    losses: Vec<f64>,
    state: BTreeMap<String, Tensor>,
}

/// PyTorch's two runs (torch.optim, relief's update order) and the float64 update comparison.
fn train_torch(arch: Arch, spec: OptimizerSpec, dir: &Path) -> (Run, Run, f64) {
    let (optimizer, lr, momentum, weight_decay) = match spec {
        OptimizerSpec::Adam { lr, weight_decay } => ("adam", lr, 0.0, weight_decay),
        OptimizerSpec::Sgd { lr, momentum, weight_decay } => ("sgd", lr, momentum, weight_decay),
    };
    let output = Command::new(python())
        .arg("-c")
        .arg(PYTORCH_TRAINER)
        .arg(dir)
        .arg(arch.to_string())
        .args([optimizer.to_string(), lr.to_string(), momentum.to_string(), weight_decay.to_string()])
        .output()
        .expect("the venv's python runs");
    assert!(output.status.success(), "PyTorch side failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let tensors: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("torch.safetensors")).unwrap().into_iter().collect();
    let run = |tag: &str| Run {
        losses: Vec::<f64>::try_from(&tensors[&format!("{tag}.loss")]).unwrap(),
        state: tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(&format!("{tag}.state.")).map(|n| (n.to_string(), t.copy())))
            .collect(),
    };
    (run("torch"), run("order"), tensors["update_rel"].double_value(&[0]))
}

/// The largest relative loss difference over the steps and the largest relative difference
/// of a final tensor (with its name), relief against `theirs`.
fn compare(case: &str, ours: &Run, theirs: &Run) -> (f64, (f64, String)) {
    assert_eq!(ours.losses.len(), STEPS as usize);
    assert_eq!(theirs.losses.len(), STEPS as usize, "{case}: PyTorch losses");
    let mut worst_loss = 0f64;
    for (s, (a, b)) in ours.losses.iter().zip(&theirs.losses).enumerate() {
        assert!(a.is_finite() && b.is_finite(), "{case}: step {s} loss {a} (relief) / {b} (torch)");
        worst_loss = worst_loss.max((a - b).abs() / b.abs());
    }
    let names: Vec<&String> = ours.state.keys().collect();
    assert_eq!(names, theirs.state.keys().collect::<Vec<_>>(), "{case}: state names");
    let mut worst = (0f64, String::new());
    for (name, a) in &ours.state {
        if name.ends_with("num_batches_tracked") {
            continue; // relief does not count batches (momentum is fixed, nothing reads it)
        }
        let b = &theirs.state[name];
        assert_eq!(a.size(), b.size(), "{case}: {name} shape");
        let scale = b.abs().max().double_value(&[]);
        let diff = (a - b).abs().max().double_value(&[]);
        let rel = if scale > 0.0 { diff / scale } else { diff };
        if rel >= worst.0 {
            worst = (rel, name.clone());
        }
    }
    (worst_loss, worst)
}

fn assert_close(case: &str, against: &str, ours: &Run, theirs: &Run) {
    for (s, (a, b)) in ours.losses.iter().zip(&theirs.losses).enumerate() {
        let rel = (a - b).abs() / b.abs();
        assert!(rel <= LOSS_RTOL, "{case}: step {s} loss {a} (relief) vs {b} ({against}), rel {rel:.3e}");
    }
    let (_, (rel, name)) = compare(case, ours, theirs);
    assert!(rel <= WEIGHT_RTOL, "{case}: final {name} differs from {against}'s by {rel:.3e} (relative)");
}

fn check(arch: Arch, spec: OptimizerSpec) {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().unwrap();
    let (ours, masks) = train_relief(arch, spec, dir.path());
    let (torch, order, update_rel) = train_torch(arch, spec, dir.path());
    let case = format!("{arch} {spec:?}");

    // Pruned weights stay zero.
    for (name, m) in &masks {
        let off = (&ours.state[name] * (m.ones_like() - m)).abs().max().double_value(&[]);
        assert_eq!(off, 0.0, "{case}: pruned entries of {name} are not zero");
    }
    // The whole loop (forward, BatchNorm, shortcut masks, loss, backward, gradient and weight
    // masks, the update as relief orders its float32 operations) is PyTorch's.
    assert_close(&case, "PyTorch in relief's update order", &ours, &order);
    // Relief's update order is torch.optim's update rule: every step's update, in float64.
    assert!(update_rel <= UPDATE_RTOL, "{case}: update rule differs from torch.optim by {update_rel:.3e}");
    // torch.optim itself, end to end.
    let (loss_rel, (weight_rel, weight_name)) = compare(&case, &ours, &torch);
    let (order_loss, (order_weight, _)) = compare(&case, &ours, &order);
    let leading = ours
        .losses
        .iter()
        .zip(&torch.losses)
        .take_while(|(a, b)| (*a - *b).abs() / b.abs() <= LOSS_RTOL)
        .count();
    eprintln!(
        "{case}: loss {:.4} -> {:.4}; vs torch.optim: loss {loss_rel:.2e} ({leading} leading steps within \
         {LOSS_RTOL:e}), weights {weight_rel:.2e} \
         ({weight_name}); vs relief's order in PyTorch: loss {order_loss:.2e}, weights {order_weight:.2e}; \
         update rule (f64) {update_rel:.2e}",
        ours.losses[0],
        ours.losses[STEPS as usize - 1]
    );
    if arch == Arch::Lenet5 {
        assert_close(&case, "torch.optim", &ours, &torch);
    } else {
        // ResNet-20 amplifies float32 rounding exponentially (see the module docs): the first
        // steps still agree to the tolerance.
        for (s, (a, b)) in ours.losses.iter().zip(&torch.losses).enumerate().take(RESNET_TORCH_STEPS) {
            let rel = (a - b).abs() / b.abs();
            assert!(
                rel <= LOSS_RTOL,
                "{case}: step {s} loss {a} (relief) vs {b} (torch.optim), rel {rel:.3e}"
            );
        }
    }
}
const ADAM: OptimizerSpec = OptimizerSpec::Adam { lr: 1e-3, weight_decay: 5e-4 };
const SGD: OptimizerSpec = OptimizerSpec::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 };

#[test]
fn lenet5_adam_matches_pytorch() {
    check(Arch::Lenet5, ADAM);
}

#[test]
fn lenet5_sgd_matches_pytorch() {
    check(Arch::Lenet5, SGD);
}

#[test]
fn resnet20_adam_matches_pytorch() {
    check(Arch::Resnet(3), ADAM);
}

#[test]
fn resnet20_sgd_matches_pytorch() {
    check(Arch::Resnet(3), SGD);
}
