//! `train.precision`: a bfloat16 mixed-precision training step (autocast) against the float32
//! step on the same model, masks and batch (CPU; on CUDA the same code path runs):
//! - the losses agree to bfloat16 accuracy but are not identical (autocast really ran);
//! - weights, masks and the optimizer stay float32, and pruned weights stay exactly zero;
//! - autocast ends with the step (an op after it computes in float32 again);
//! - `fp32` and `tf32` on the CPU compute what the default does, bit for bit.

use relief_core::optim::{masked_train_step_with, MaskedOptimizer, TrainPrecision};
use relief_core::train::OptimizerSpec;
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

/// The seeded initialisation uses libtorch's global generator: one model at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A LeNet-5 pruned once, a batch, and one training step in `precision`: (loss, model, masks).
fn one_step(precision: TrainPrecision) -> (f64, Model, MaskSet) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let model = Model::new(Arch::Lenet5, 10, Device::Cpu, 7);
    // Deterministic data without the global generator.
    let x = (Tensor::arange(64 * 784, (Kind::Float, Device::Cpu)) * 0.37).sin().abs().view([64, 1, 28, 28]);
    let y = Tensor::arange(64, (Kind::Int64, Device::Cpu)).remainder(10);
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let cfg = PruneConfig { alpha_conv: 0.8, alpha_fc: 0.9, semantics: Semantics::Reference, chunk_size: 64 };
    let params = model.params();
    prune_step(&model.graph, &params, &mut masks, &x, &cfg).unwrap();
    masks.apply(&params);
    let bound = model.bound();
    let spec = OptimizerSpec::Adam { lr: 1e-3, weight_decay: 5e-4 };
    let mut opt = MaskedOptimizer::new(spec, &params).unwrap();
    let (loss, _) =
        masked_train_step_with(&model.graph, &bound, &params, &masks, &mut opt, &x, &y, precision);
    assert_eq!(loss.kind(), Kind::Float);
    (loss.double_value(&[]), model, masks)
}

#[test]
fn bf16_autocast_trains_with_float32_master_weights_and_exact_masks() {
    let (fp32, reference, _) = one_step(TrainPrecision::Default);
    let (bf16, model, masks) = one_step(TrainPrecision::Bf16);
    // Held from here on: the initial weights below are drawn again from the global generator.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rel = (bf16 - fp32).abs() / fp32.abs();
    assert!(rel > 0.0, "the bf16 step computed exactly the float32 loss: autocast did not run");
    assert!(rel < 2e-2, "bf16 loss {bf16} vs float32 {fp32}: {rel:e} relative");
    let mut pruned = 0;
    for (name, w) in model.params() {
        assert_eq!(w.kind(), Kind::Float, "{name} stays float32");
        if let Some(m) = masks.get(&name) {
            let dead = m.eq(0.0);
            pruned += dead.sum(Kind::Int64).int64_value(&[]);
            let leaked = w.masked_select(&dead).abs().max().double_value(&[]);
            assert!(leaked == 0.0, "{name}: a pruned weight moved to {leaked}");
        }
        // The step moved the weights in the float32 step's direction (Adam's first step is
        // about lr * sign(grad) per entry, so compare the updates, not the weights).
        let w0 = Model::new(Arch::Lenet5, 10, Device::Cpu, 7).params()[&name].copy();
        let (d16, d32) = (&w - &w0, &reference.params()[&name] - &w0);
        let norm = d16.norm().double_value(&[]) * d32.norm().double_value(&[]);
        if norm > 0.0 && w.dim() > 1 {
            let cos = (&d16 * &d32).sum(Kind::Double).double_value(&[]) / norm;
            assert!(cos > 0.9, "{name}: the bf16 update points elsewhere (cosine {cos:.3})");
        }
    }
    assert!(pruned > 0, "the pruning call removed nothing");
    // Autocast is off again: a matrix product after the step is float32.
    let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
    assert_eq!(a.matmul(&a).kind(), Kind::Float);
    assert_eq!(a.linear::<Tensor>(&a, None).kind(), Kind::Float);
}

#[test]
fn fp32_and_tf32_are_the_default_step_on_the_cpu() {
    let (d, a, _) = one_step(TrainPrecision::Default);
    for p in [TrainPrecision::Fp32, TrainPrecision::Tf32] {
        let (l, b, _) = one_step(p);
        assert_eq!(l, d, "{p}");
        for (k, v) in a.params() {
            assert!(v.equal(&b.params()[&k]), "{p}: {k}");
        }
    }
}
