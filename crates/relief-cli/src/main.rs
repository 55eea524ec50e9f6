//! `relief`: prune neural networks with NNrelief from the command line.

mod cmd_demo;
mod cmd_prune_step;
mod util;

use clap::{Parser, Subcommand};

/// NNrelief pruning (Dekhovich et al., arXiv 2109.10795) on libtorch, CPU or CUDA.
#[derive(Debug, Parser)]
#[command(name = "relief", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train LeNet-300-100 on the bundled MNIST sample, prune it once with NNrelief, retrain,
    /// and print accuracy and compression.
    Demo(cmd_demo::DemoArgs),
    /// Run ONE NNrelief pruning call on given weights and batch; write `mask.*` and `after.*`
    /// tensors with the golden fixtures' naming.
    PruneStep(cmd_prune_step::PruneStepArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Demo(args) => cmd_demo::run(args),
        Command::PruneStep(args) => cmd_prune_step::run(args),
    };
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}
