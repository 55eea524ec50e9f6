//! Masked training and evaluation.
//!
//! A training step is `loss = CE(f(x), y)`, backward, gradients multiplied by the masks, an
//! optimizer step, then the weights multiplied by the masks again (so weight decay and momentum
//! cannot revive a pruned weight) — the fixed-mask retraining of the paper. Evaluation runs
//! under no-grad in eval mode; correct counts stay on the device until the end.

use tch::nn::{Optimizer, OptimizerConfig};
use tch::{Kind, Tensor};

use crate::exec::{forward, ForwardOptions};
use crate::graph::PruneGraph;
use crate::masks::MaskSet;
use crate::params::{Bound, TensorMap};

/// Optimizer choice with its hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptimizerSpec {
    /// Adam (PyTorch semantics: weight decay as L2 added to the gradient).
    Adam {
        /// Learning rate.
        lr: f64,
        /// L2 weight decay.
        weight_decay: f64,
    },
    /// SGD with momentum.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum.
        momentum: f64,
        /// L2 weight decay.
        weight_decay: f64,
    },
}

impl OptimizerSpec {
    /// Builds the optimizer over `vs`'s trainable variables.
    pub fn build(&self, vs: &tch::nn::VarStore) -> Result<Optimizer, tch::TchError> {
        match *self {
            OptimizerSpec::Adam { lr, weight_decay } => {
                tch::nn::Adam { wd: weight_decay, ..Default::default() }.build(vs, lr)
            }
            OptimizerSpec::Sgd { lr, momentum, weight_decay } => {
                tch::nn::Sgd { momentum, wd: weight_decay, ..Default::default() }.build(vs, lr)
            }
        }
    }
    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            OptimizerSpec::Adam { lr, .. } | OptimizerSpec::Sgd { lr, .. } => lr,
        }
    }
}

/// Learning rate at `epoch` of a multi-step schedule: `lr * gamma^(#milestones <= epoch)`.
pub fn multistep_lr(base: f64, milestones: &[usize], gamma: f64, epoch: usize) -> f64 {
    base * gamma.powi(milestones.iter().filter(|&&m| m <= epoch).count() as i32)
}

/// One masked training step; returns the loss as a 0-dim tensor on the device (no host sync).
pub fn train_step(
    graph: &PruneGraph,
    bound: &Bound,
    params: &TensorMap,
    masks: &MaskSet,
    opt: &mut Optimizer,
    x: &Tensor,
    y: &Tensor,
) -> Tensor {
    let logits = forward(graph, bound, Some(masks), x, ForwardOptions::TRAIN, None);
    let loss = logits.cross_entropy_for_logits(y);
    opt.zero_grad();
    loss.backward();
    masks.apply_to_grads(params);
    opt.step();
    masks.apply(params);
    loss.detach()
}

/// Correct predictions and samples over `batches`, in eval mode.
pub fn evaluate<I>(graph: &PruneGraph, bound: &Bound, masks: &MaskSet, batches: I) -> (i64, i64)
where
    I: IntoIterator<Item = (Tensor, Tensor)>,
{
    tch::no_grad(|| {
        let mut correct: Option<Tensor> = None;
        let mut seen = 0;
        for (x, y) in batches {
            let logits = forward(graph, bound, Some(masks), &x, ForwardOptions::EVAL, None);
            let c = logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64);
            correct = Some(match correct {
                Some(acc) => acc + c,
                None => c,
            });
            seen += y.size()[0];
        }
        (correct.map(|c| c.int64_value(&[])).unwrap_or(0), seen)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistep_schedule() {
        assert_eq!(multistep_lr(0.1, &[80, 120], 0.1, 0), 0.1);
        assert!((multistep_lr(0.1, &[80, 120], 0.1, 80) - 0.01).abs() < 1e-12);
        assert!((multistep_lr(0.1, &[80, 120], 0.1, 130) - 0.001).abs() < 1e-12);
    }
}
