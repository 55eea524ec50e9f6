//! `relief demo`: the real pruning demo, `configs/demo.toml` (LeNet-300-100 on the bundled
//! MNIST sample, a few NNrelief iterations with retraining) run into a run directory.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::cmd_experiment::CommonArgs;
use relief_experiment::config::Override;
use relief_experiment::experiment::{execute, Request, Source};
use relief_experiment::plan::Stages;

/// The demo config, built into the binary for when `configs/demo.toml` is not at hand.
pub const DEMO_TOML: &str = include_str!("../../configs/demo.toml");

/// Arguments of `relief demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The demo config. Default: `configs/demo.toml`, or the copy built into the binary when
    /// that file does not exist in the current directory.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let default = Path::new("configs/demo.toml");
    let mut extra: Vec<Override> = Vec::new();
    let source = match args.config {
        Some(p) => Source::File(p),
        None if default.is_file() => Source::File(default.to_path_buf()),
        None => {
            // Away from the repository root: use the built-in config and the sample the binary
            // was built next to, when it still exists.
            // Canonical, so the resolved config stores no `..` hop through the crate's folder.
            let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-sample");
            let sample = sample.canonicalize().unwrap_or(sample);
            if !Path::new("data/mnist-sample").is_dir() && sample.is_dir() {
                extra.push(Override {
                    key: "data.dir".into(),
                    value: toml::Value::String(sample.display().to_string()),
                });
            }
            Source::Text {
                text: DEMO_TOML.to_string(),
                origin: "demo.toml (built into relief)".into(),
                name: "demo".into(),
            }
        }
    };
    let mut overrides = extra;
    overrides.extend(args.common.set.clone());
    execute(Request {
        source,
        overrides,
        out: args.common.out.clone(),
        stages: Stages::All,
        quiet: args.common.quiet,
        dry_run: args.common.dry_run,
        no_plots: args.common.no_plots,
    })
}
