//! NNrelief on a network of your own, through the library API (no command line):
//! the bundled MNIST sample, the model from a spec file (`examples/specs/small-resnet.toml`),
//! dense training, then 3 NNrelief iterations each followed by retraining with the masks fixed,
//! the table, and the pruned model saved as one checkpoint (weights, masks and the spec).
//!
//!   cargo run --release --example custom_prune [-- OUT_DIR]     (default runs/custom-prune)
//!
//! Rerunning resumes the run directory: finished iterations are not redone.

use std::path::{Path, PathBuf};

use anyhow::Result;
use relief_experiment::{report, run_plan, Checkpoint, Config, Plan, RunDir, RunOptions, Stages};

fn main() -> Result<()> {
    // This repository's files; in your project, your own spec and data directory.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize()?;
    let out = std::env::args().nth(1).map(PathBuf::from).unwrap_or_else(|| "runs/custom-prune".into());

    // The experiment: every field not set here keeps its documented default (docs/pipeline.md).
    let mut config = Config {
        name: Some("custom-prune".into()),
        model: repo.join("examples/specs/small-resnet.toml").display().to_string(),
        device: "auto".into(), // CUDA when there is one
        ..Config::default()
    };
    config.data.dir = Some(repo.join("data/mnist-sample"));
    config.data.train_limit = 2000;
    config.data.test_limit = 1000;
    config.train.epochs = 2;
    config.train.milestones = vec![];
    config.prune.iterations = 3;
    config.prune.alpha_conv = 0.9;
    config.prune.alpha_fc = 0.95;
    config.prune.batch_size = 500;
    config.retrain.epochs = 1;
    config.retrain.milestones = vec![];

    // One validated plan (the spec is read and shape-checked here), then the prune-retrain loop.
    let plan = Plan::new(config, Stages::All, "custom_prune")?;
    let summary = run_plan(&plan, &out, &RunOptions { plots: false, ..RunOptions::default() })?;
    println!("\n{}", report::text(std::slice::from_ref(&summary)));

    // The last iteration's model with its masks, rebuilt from the checkpoint alone (the spec
    // travels in its metadata), saved as `pruned.safetensors`: PyTorch names, `mask.*` tensors.
    let last = RunDir::open(&out)?.iteration_path(plan.last_iteration);
    let ck = Checkpoint::read(&last)?;
    let model = ck.model(&last, None, None, tch::Device::Cpu)?;
    let masks = ck.masks(&model, &last)?;
    let mut pruned = Checkpoint::new();
    pruned.put_model(&model, &masks);
    let path = out.join("pruned.safetensors");
    pruned.write(&path)?;
    let alive = summary.rows.last().map(|r| r.params_alive).unwrap_or_default();
    println!("saved {} ({} of {} parameters alive)", path.display(), alive, model.prunable_parameter_count());
    Ok(())
}
