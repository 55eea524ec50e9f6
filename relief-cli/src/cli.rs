//! The `relief` command line: argument types (clap derive) and dispatch.

use clap::{Parser, Subcommand};

use crate::{
    cmd_data, cmd_demo, cmd_eval, cmd_experiment, cmd_export, cmd_models, cmd_prune_step, cmd_report,
    cmd_study,
};

const AFTER_HELP: &str = "\
Experiments are TOML configs (see configs/ and docs/pipeline.md). A typical session:
  relief run configs/demo.toml                       train, then prune; prints the run directory
  relief run configs/demo.toml --set prune.method=magnitude --set name=magnitude
  relief report runs/<nnrelief-run> runs/<magnitude-run>
  relief eval runs/<run>/iter-005.safetensors
  relief prune --resume runs/<run>                   continue an interrupted run
  relief study run configs/studies/sample-lenets.toml --jobs 2   a sweep, mean ± std over seeds
  relief study submit STUDY.toml --slurm --partition gpu --gpus-per-task 1   the same on Slurm";

/// NNrelief pruning (Dekhovich et al., arXiv 2109.10795) on libtorch, CPU or CUDA.
#[derive(Debug, Parser)]
#[command(name = "relief", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the demo: configs/demo.toml (LeNet-300-100 on the bundled MNIST sample, a few
    /// NNrelief iterations with retraining) into a run directory; prints the summary table.
    Demo(cmd_demo::DemoArgs),
    /// Train a model from scratch (iteration 0 of a config) into a run directory.
    Train(cmd_experiment::TrainArgs),
    /// Prune a trained model iteratively (NNrelief or magnitude): score, mask, optionally
    /// rewind to init, retrain, evaluate, N times. Or continue a run with --resume.
    Prune(cmd_experiment::PruneArgs),
    /// Run a whole experiment from a config: train (unless `pretrained` is given), then prune.
    Run(cmd_experiment::RunArgs),
    /// Evaluate a checkpoint: test accuracy, parameters, FLOPs, alive units per layer.
    Eval(cmd_eval::EvalArgs),
    /// Tables and plots from one or several run directories (e.g. NNrelief vs magnitude).
    Report(cmd_report::ReportArgs),
    /// Run ONE NNrelief pruning call on given weights and batch; write `mask.*` and `after.*`
    /// tensors with the golden fixtures' naming.
    PruneStep(cmd_prune_step::PruneStepArgs),
    /// Export a masked checkpoint as a smaller dense model (`--compact`): dead neurons, filters
    /// and channels physically removed, same outputs; one safetensors file with the graph.
    Export(cmd_export::ExportArgs),
    /// Datasets: `fetch` the official archives (verified, resumable) into a directory, or
    /// `verify` that a directory loads (split sizes, image shape, class histogram).
    Data(cmd_data::DataArgs),
    /// Studies: sweeps over seeds, alphas, models and methods (a study file's grid), run
    /// locally on several devices (`run`) or on Slurm (`submit`), aggregated into mean ± std
    /// tables and plots (`report`); see docs/studies.md.
    Study(cmd_study::StudyArgs),
    /// Models: `list` the built-in ones, `show` one (zoo name or TOML spec file) layer by layer
    /// (shapes, parameters, FLOPs), `show NAME --toml` its spec; see docs/models.md.
    Models(cmd_models::ModelsArgs),
}

/// Runs one parsed command line.
pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Demo(args) => cmd_demo::run(args),
        Command::Train(args) => cmd_experiment::train(args),
        Command::Prune(args) => cmd_experiment::prune(args),
        Command::Run(args) => cmd_experiment::run(args),
        Command::Eval(args) => cmd_eval::run(args),
        Command::Report(args) => cmd_report::run(args),
        Command::PruneStep(args) => cmd_prune_step::run(args),
        Command::Export(args) => cmd_export::run(args),
        Command::Data(args) => cmd_data::run(args),
        Command::Study(args) => cmd_study::run(args),
        Command::Models(args) => cmd_models::run(args),
    }
}

/// Parses the process arguments, runs the command, and returns the exit code (errors are
/// printed as `error: ...` with their causes).
pub fn main() -> i32 {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => 0,
        Err(err) => {
            eprintln!("error: {err:#}");
            1
        }
    }
}
