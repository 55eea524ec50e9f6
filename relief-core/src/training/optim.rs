//! A masked optimizer whose state can be saved and restored: PyTorch's `Adam` and `SGD`
//! (momentum) update rules over every trainable tensor of a model.
//!
//! `tch::nn::Optimizer` offers no state export, so an interrupted retraining could not resume
//! bit for bit. [`MaskedOptimizer`] keeps its state (`exp_avg`, `exp_avg_sq` and the step count
//! for Adam; the momentum buffer for SGD) per trainable tensor and updates every tensor in place,
//! as libtorch's own optimizers do; [`MaskedOptimizer::state`] exports it as flat `f32` tensors
//! over all trainable parameters, concatenated in name order, and
//! [`MaskedOptimizer::load_state`] restores it.
//!
//! Update rules (PyTorch's single-tensor `Adam` and `SGD`, `maximize = False`, no AMSGrad,
//! no dampening, no Nesterov), with `g` the (masked) gradient:
//!
//! - L2 weight decay is added to the gradient: `g = g + wd * p` (both optimizers).
//! - Adam: `t += 1; m = lerp(m, g, 1 - b1); v = b2 * v + (1 - b2) * g * g;`
//!   `p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)`, `b1 = 0.9, b2 = 0.999,
//!   eps = 1e-8`, state created as zeros on the first step.
//! - SGD: `buf = g` on the first step, then `buf = momentum * buf + g`; `p -= lr * buf`
//!   (`p -= lr * g` when `momentum = 0`).
//!
//! A parameter whose gradient is undefined after `backward` counts as a zero gradient (PyTorch
//! would skip it); every parameter of the zoo's models takes part in the forward pass.

use tch::{Kind, Tensor};

use crate::error::CoreError;
use crate::exec::{forward, ForwardOptions};
use crate::graph::PruneGraph;
use crate::masks::MaskSet;
use crate::params::{Bound, TensorMap};
use crate::train::OptimizerSpec;

/// Adam's `beta1`.
pub const ADAM_BETA1: f64 = 0.9;
/// Adam's `beta2`.
pub const ADAM_BETA2: f64 = 0.999;
/// Adam's `eps`.
pub const ADAM_EPS: f64 = 1e-8;

/// Adam or SGD over the trainable tensors of a model, with exportable state.
#[derive(Debug)]
pub struct MaskedOptimizer {
    spec: OptimizerSpec,
    lr: f64,
    names: Vec<String>,
    params: Vec<Tensor>,
    steps: i64,
    /// Adam: first moment; SGD: momentum buffer. One per parameter, created on the first step.
    buf1: Option<Vec<Tensor>>,
    /// Adam: second moment. One per parameter, created on the first step.
    buf2: Option<Vec<Tensor>>,
}

impl MaskedOptimizer {
    /// An optimizer over every tensor of `params` that requires a gradient (name order), at
    /// the spec's base learning rate.
    pub fn new(spec: OptimizerSpec, params: &TensorMap) -> Result<Self, CoreError> {
        let mut names = Vec::new();
        let mut tensors = Vec::new();
        for (name, t) in params {
            if t.requires_grad() {
                if t.kind() != Kind::Float {
                    return Err(CoreError::Invalid(format!(
                        "trainable tensor `{name}` is {:?}, not f32",
                        t.kind()
                    )));
                }
                names.push(name.clone());
                tensors.push(t.shallow_clone());
            }
        }
        if tensors.is_empty() {
            return Err(CoreError::Invalid("no trainable tensors".into()));
        }
        Ok(Self { spec, lr: spec.lr(), names, params: tensors, steps: 0, buf1: None, buf2: None })
    }

    /// The hyper-parameters.
    pub fn spec(&self) -> OptimizerSpec {
        self.spec
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Sets the learning rate of the next steps (the scheduler's job).
    pub fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    /// Steps taken so far.
    pub fn steps(&self) -> i64 {
        self.steps
    }

    /// Names of the optimised tensors, in state order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Zeroes every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
    }

    /// One update from the current gradients (mask them first).
    pub fn step(&mut self) {
        self.steps += 1;
        let t = self.steps as i32;
        let first = self.buf1.is_none();
        let zeros = |ps: &[Tensor]| ps.iter().map(|p| p.zeros_like()).collect::<Vec<_>>();
        tch::no_grad(|| match self.spec {
            OptimizerSpec::Adam { weight_decay, .. } => {
                let m_all = self.buf1.get_or_insert_with(|| zeros(&self.params));
                let v_all = self.buf2.get_or_insert_with(|| zeros(&self.params));
                let bc1 = 1.0 - ADAM_BETA1.powi(t);
                let bc2 = 1.0 - ADAM_BETA2.powi(t);
                let step_size = self.lr / bc1;
                for ((p, m), v) in self.params.iter().zip(m_all.iter_mut()).zip(v_all.iter_mut()) {
                    let g = grad_of(p);
                    let mut p = p.shallow_clone();
                    let g = if weight_decay != 0.0 { g + &p * weight_decay } else { g };
                    let _ = m.lerp_(&g, 1.0 - ADAM_BETA1);
                    let _ = v.g_mul_scalar_(ADAM_BETA2);
                    let _ = v.addcmul_(&(&g * (1.0 - ADAM_BETA2)), &g);
                    let denom = (v.sqrt() / bc2.sqrt()) + ADAM_EPS;
                    // PyTorch: p.addcdiv_(m, denom, value=-step_size) = p + (-step_size * m) / denom.
                    let _ = p.addcdiv_(&(&*m * (-step_size)), &denom);
                }
            }
            OptimizerSpec::Sgd { momentum, weight_decay, .. } => {
                for (i, p) in self.params.iter().enumerate() {
                    let g = grad_of(p);
                    let mut p = p.shallow_clone();
                    let g = if weight_decay != 0.0 { g + &p * weight_decay } else { g };
                    let d = if momentum != 0.0 {
                        let bufs = self.buf1.get_or_insert_with(Vec::new);
                        if first {
                            bufs.push(g.copy());
                        } else {
                            let _ = bufs[i].g_mul_scalar_(momentum);
                            let _ = bufs[i].g_add_(&g);
                        }
                        bufs[i].shallow_clone()
                    } else {
                        g
                    };
                    let _ = p.g_add_(&(d * (-self.lr)));
                }
            }
        });
    }

    /// The state as CPU tensors named `<prefix>step`, `<prefix>buf1`, `<prefix>buf2` (only
    /// those that exist yet; `step` is a 0-dim `i64`).
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = vec![(format!("{prefix}step"), Tensor::from(self.steps))];
        for (key, buf) in [("buf1", &self.buf1), ("buf2", &self.buf2)] {
            if let Some(b) = buf {
                let parts: Vec<Tensor> = b.iter().map(|t| t.reshape([-1])).collect();
                out.push((format!("{prefix}{key}"), Tensor::cat(&parts, 0).to_device(tch::Device::Cpu)));
            }
        }
        out
    }

    /// Restores [`MaskedOptimizer::state`] from `tensors` (moved to the parameters' device).
    pub fn load_state(&mut self, tensors: &[(String, Tensor)], prefix: &str) -> Result<(), CoreError> {
        let find = |key: &str| tensors.iter().find(|(k, _)| k == &format!("{prefix}{key}")).map(|(_, t)| t);
        let step = find("step").ok_or_else(|| CoreError::MissingTensor(format!("{prefix}step")))?;
        let total: i64 = self.params.iter().map(|p| p.numel() as i64).sum();
        let device = self.params[0].device();
        let load = |key: &str| -> Result<Option<Tensor>, CoreError> {
            match find(key) {
                None => Ok(None),
                Some(t) if t.size() == [total] => Ok(Some(t.to_kind(Kind::Float).to_device(device).copy())),
                Some(t) => Err(CoreError::ShapeMismatch {
                    name: format!("{prefix}{key}"),
                    expected: vec![total],
                    found: t.size(),
                }),
            }
        };
        let split = |flat: Option<Tensor>| {
            flat.map(|flat| {
                let mut offset = 0;
                self.params
                    .iter()
                    .map(|p| {
                        let n = p.numel() as i64;
                        let part = flat.narrow(0, offset, n).view_as(p).copy();
                        offset += n;
                        part
                    })
                    .collect::<Vec<_>>()
            })
        };
        let (buf1, buf2) = (split(load("buf1")?), split(load("buf2")?));
        self.steps = step.int64_value(&[]);
        self.buf1 = buf1;
        self.buf2 = buf2;
        Ok(())
    }
}

/// The gradient of `p`, zeros where `backward` left it undefined.
fn grad_of(p: &Tensor) -> Tensor {
    let g = p.grad();
    if g.defined() {
        g
    } else {
        p.zeros_like()
    }
}

/// One masked training step with a [`MaskedOptimizer`]: `loss = CE(f(x), y)`, backward,
/// gradients multiplied by the masks, update, weights multiplied by the masks. Returns the loss
/// and the number of correct predictions as 0-dim tensors on the device (no host sync).
#[allow(clippy::too_many_arguments)]
pub fn masked_train_step(
    graph: &PruneGraph,
    bound: &Bound,
    params: &TensorMap,
    masks: &MaskSet,
    opt: &mut MaskedOptimizer,
    x: &Tensor,
    y: &Tensor,
) -> (Tensor, Tensor) {
    masked_train_step_with(graph, bound, params, masks, opt, x, y, TrainPrecision::Default)
}

/// The arithmetic of a training step (`train.precision`). Pruning always scores in IEEE float32,
/// whatever the training precision ([`crate::precision::ExactFloat32`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainPrecision {
    /// libtorch's float32 defaults (on CUDA: TF32 convolutions, IEEE matrix products).
    #[default]
    Default,
    /// IEEE float32 for every convolution and matrix product.
    Fp32,
    /// TF32 tensor cores for convolutions and matrix products (CUDA; the CPU computes IEEE).
    Tf32,
    /// bfloat16 mixed precision: forward and loss under autocast (convolutions and linear
    /// layers in bfloat16, softmax, loss and BatchNorm statistics in float32), backward
    /// outside it; weights, masks, gradients and optimizer state stay float32, so masks stay
    /// exact.
    Bf16,
}

impl std::fmt::Display for TrainPrecision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TrainPrecision::Default => "default",
            TrainPrecision::Fp32 => "fp32",
            TrainPrecision::Tf32 => "tf32",
            TrainPrecision::Bf16 => "bf16",
        })
    }
}

/// [`masked_train_step`] in the given [`TrainPrecision`].
#[allow(clippy::too_many_arguments)]
pub fn masked_train_step_with(
    graph: &PruneGraph,
    bound: &Bound,
    params: &TensorMap,
    masks: &MaskSet,
    opt: &mut MaskedOptimizer,
    x: &Tensor,
    y: &Tensor,
    precision: TrainPrecision,
) -> (Tensor, Tensor) {
    use crate::precision::{AutocastBf16, CudaFloat32Math, Float32Math};
    let _math = match precision {
        TrainPrecision::Fp32 if x.device().is_cuda() => Some(CudaFloat32Math::new(Float32Math::Ieee)),
        TrainPrecision::Tf32 if x.device().is_cuda() => Some(CudaFloat32Math::new(Float32Math::Tf32)),
        _ => None,
    };
    let (logits, loss) = {
        let _autocast = (precision == TrainPrecision::Bf16).then(|| AutocastBf16::new(x.device()));
        let logits = forward(graph, bound, Some(masks), x, ForwardOptions::TRAIN, None);
        let loss = logits.cross_entropy_for_logits(y).to_kind(Kind::Float);
        (logits, loss)
    };
    let correct = tch::no_grad(|| logits.argmax(1, false).eq_tensor(y).sum(Kind::Int64));
    opt.zero_grad();
    loss.backward();
    masks.apply_to_grads(params);
    opt.step();
    masks.apply(params);
    (loss.detach(), correct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    /// Deterministic values without the global RNG (tests run in parallel threads).
    fn values(shape: &[i64], seed: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        ((Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.73 + seed).sin() * 1.5).view(shape)
    }

    fn setup(seed: i64) -> (tch::nn::VarStore, Tensor, Tensor) {
        let seed = seed as f64;
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let _ = root.var_copy("a", &values(&[5, 4], seed));
        let _ = root.var_copy("b", &values(&[5], seed + 0.5));
        let x = values(&[8, 4], 10.0);
        let t = values(&[8, 5], 20.0);
        (vs, x, t)
    }

    fn loss(vs: &tch::nn::VarStore, x: &Tensor, t: &Tensor) -> Tensor {
        let v = vs.variables();
        (x.linear(&v["a"], Some(&v["b"])) - t).square().mean(Kind::Float)
    }

    /// Our update against libtorch's own Adam / SGD for a few steps.
    fn compare(spec: OptimizerSpec) {
        let (vs_ref, x, t) = setup(3);
        let (vs_our, _, _) = setup(3);
        let mut reference = match spec {
            OptimizerSpec::Adam { lr, weight_decay } => {
                tch::nn::Adam { wd: weight_decay, ..Default::default() }.build(&vs_ref, lr)
            }
            OptimizerSpec::Sgd { lr, momentum, weight_decay } => {
                tch::nn::Sgd { momentum, wd: weight_decay, ..Default::default() }.build(&vs_ref, lr)
            }
        }
        .unwrap();
        let params: TensorMap = vs_our.variables().into_iter().collect();
        let mut ours = MaskedOptimizer::new(spec, &params).unwrap();
        for _ in 0..5 {
            reference.zero_grad();
            loss(&vs_ref, &x, &t).backward();
            reference.step();
            ours.zero_grad();
            loss(&vs_our, &x, &t).backward();
            ours.step();
        }
        for (name, r) in vs_ref.variables() {
            let o = &vs_our.variables()[&name];
            let diff = (r - o).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "{spec:?}: {name} differs by {diff}");
        }
    }

    #[test]
    fn matches_libtorch_adam_and_sgd() {
        compare(OptimizerSpec::Adam { lr: 1e-2, weight_decay: 5e-4 });
        compare(OptimizerSpec::Adam { lr: 1e-3, weight_decay: 0.0 });
        compare(OptimizerSpec::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 5e-4 });
        compare(OptimizerSpec::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0 });
    }

    #[test]
    fn state_round_trip_resumes_identically() {
        for spec in [
            OptimizerSpec::Adam { lr: 1e-2, weight_decay: 5e-4 },
            OptimizerSpec::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 1e-4 },
        ] {
            let (vs_a, x, t) = setup(5);
            let pa: TensorMap = vs_a.variables().into_iter().collect();
            let mut a = MaskedOptimizer::new(spec, &pa).unwrap();
            for _ in 0..3 {
                a.zero_grad();
                loss(&vs_a, &x, &t).backward();
                a.step();
            }
            // A second optimizer on a copy of the weights, restored from a's state.
            let (vs_b, _, _) = setup(6);
            tch::no_grad(|| {
                for (k, v) in vs_b.variables() {
                    v.shallow_clone().copy_(&vs_a.variables()[&k]);
                }
            });
            let pb: TensorMap = vs_b.variables().into_iter().collect();
            let mut b = MaskedOptimizer::new(spec, &pb).unwrap();
            b.load_state(&a.state("opt."), "opt.").unwrap();
            assert_eq!(b.steps(), 3);
            for (opt, vs) in [(&mut a, &vs_a), (&mut b, &vs_b)] {
                for _ in 0..2 {
                    opt.zero_grad();
                    loss(vs, &x, &t).backward();
                    opt.step();
                }
            }
            for (k, v) in vs_a.variables() {
                assert!(v.equal(&vs_b.variables()[&k]), "{spec:?}: {k} differs after resume");
            }
        }
    }
}
