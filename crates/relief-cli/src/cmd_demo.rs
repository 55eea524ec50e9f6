//! `relief demo`: the smallest real end-to-end run on the bundled MNIST sample.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use relief_core::accounting::account;
use relief_core::train::{evaluate, train_step, OptimizerSpec};
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_data::Mnist;
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

use crate::util::parse_device;

/// Arguments of `relief demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory with the MNIST IDX files.
    #[arg(long, default_value = "data/mnist-sample")]
    data: PathBuf,
    /// Training epochs before pruning and again after it.
    #[arg(long, default_value_t = 2)]
    epochs: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Random seed (initialisation, shuffling, pruning batch).
    #[arg(long, default_value_t = 1)]
    seed: i64,
}

fn batches(x: &Tensor, y: &Tensor, size: i64, order: Option<&Tensor>) -> Vec<(Tensor, Tensor)> {
    let n = x.size()[0];
    let (x, y) = match order {
        Some(o) => (x.index_select(0, o), y.index_select(0, o)),
        None => (x.shallow_clone(), y.shallow_clone()),
    };
    (0..n).step_by(size as usize).map(|s| (x.narrow(0, s, size.min(n - s)), y.narrow(0, s, size.min(n - s)))).collect()
}

fn epoch(model: &Model, masks: &MaskSet, opt: &mut tch::nn::Optimizer, x: &Tensor, y: &Tensor) -> f64 {
    let bound = model.bound();
    let params = model.params();
    let order = Tensor::randperm(x.size()[0], (Kind::Int64, x.device()));
    let mut total = Tensor::zeros([], (Kind::Float, x.device()));
    let mut count = 0;
    for (bx, by) in batches(x, y, 120, Some(&order)) {
        total += train_step(&model.graph, &bound, &params, masks, opt, &bx, &by);
        count += 1;
    }
    total.double_value(&[]) / count as f64
}

fn accuracy(model: &Model, masks: &MaskSet, x: &Tensor, y: &Tensor) -> f64 {
    let (c, n) = evaluate(&model.graph, &model.bound(), masks, batches(x, y, 1000, None));
    100.0 * c as f64 / n as f64
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let device: Device = parse_device(&args.device)?;
    tch::manual_seed(args.seed);
    let start = Instant::now();
    let data = Mnist::load(&args.data).with_context(|| format!("loading MNIST from {}", args.data.display()))?;
    let prep = |t: &Tensor| (t.to_device(device).to_kind(Kind::Float) / 255.0).view([-1, 784]);
    let (xtr, ytr) = (prep(&data.train.images), data.train.labels.to_device(device));
    let (xte, yte) = (prep(&data.test.images), data.test.labels.to_device(device));
    println!(
        "relief demo: LeNet-300-100 on {} ({} train / {} test digits), device {:?}",
        args.data.display(),
        xtr.size()[0],
        xte.size()[0],
        device
    );
    let model = Model::new(Arch::Lenet300_100, 10, device, args.seed);
    let mut masks = MaskSet::ones(&model.graph, device);
    let spec = OptimizerSpec::Adam { lr: 1e-3, weight_decay: 5e-4 };
    let mut opt = spec.build(&model.vs)?;
    for e in 0..args.epochs {
        let loss = epoch(&model, &masks, &mut opt, &xtr, &ytr);
        println!("  train epoch {}: loss {loss:.4}", e + 1);
    }
    let acc_dense = accuracy(&model, &masks, &xte, &yte);
    println!("  dense test accuracy: {acc_dense:.2} %");

    let pick = Tensor::randperm(xtr.size()[0], (Kind::Int64, device)).narrow(0, 0, 1000);
    let batch = xtr.index_select(0, &pick);
    let cfg = PruneConfig { alpha_conv: 0.9, alpha_fc: 0.95, semantics: Semantics::Reference, chunk_size: 1000 };
    prune_step(&model.graph, &model.params(), &mut masks, &batch, &cfg)?;
    let acc_pruned = accuracy(&model, &masks, &xte, &yte);
    let mut opt = spec.build(&model.vs)?;
    for e in 0..args.epochs {
        let loss = epoch(&model, &masks, &mut opt, &xtr, &ytr);
        println!("  retrain epoch {}: loss {loss:.4}", e + 1);
    }
    let acc_retrained = accuracy(&model, &masks, &xte, &yte);
    let acc = account(&model.graph, &masks);
    println!();
    println!("  {:<28} {:>10}", "stage", "test acc %");
    println!("  {:<28} {:>10.2}", "dense", acc_dense);
    println!("  {:<28} {:>10.2}", "pruned (alpha_fc 0.95)", acc_pruned);
    println!("  {:<28} {:>10.2}", "pruned + retrained", acc_retrained);
    println!(
        "  parameters: {} -> {} ({:.1} % remaining, {:.2}x compression); FLOPs pruned {:.1} %",
        acc.params_total,
        acc.params_alive,
        acc.remaining_percent(),
        acc.compression(),
        acc.flops_pruned_percent()
    );
    println!("  wall time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
