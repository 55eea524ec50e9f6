//! `relief train`, `relief prune` and `relief run`: experiments from a TOML config into a run
//! directory (see [`relief_experiment::experiment`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use relief_experiment::config::Override;
use relief_experiment::experiment::{execute, Request, Source};
use relief_experiment::plan::Stages;

/// Flags shared by the experiment commands.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Override one config field, e.g. `--set prune.alpha_fc=0.97` or
    /// `--set retrain.milestones=[20,40]` (repeatable; the value is parsed as TOML, else taken
    /// as a string; an unknown key is an error naming it).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<Override>,
    /// Run directory. Default: a fresh `runs/<date>-<time>-<name>/`. An existing run directory
    /// made with the same config is resumed after its last completed epoch.
    #[arg(long, value_name = "RUN_DIR")]
    pub out: Option<PathBuf>,
    /// Show no progress bars or status lines on stderr (the run log still records everything;
    /// the run directory and the summary table are still printed on stdout).
    #[arg(long, short)]
    pub quiet: bool,
    /// Validate the config and print it resolved (every default filled in); run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not draw the plots at the end of the run.
    #[arg(long)]
    pub no_plots: bool,
}

impl CommonArgs {
    fn request(&self, source: Source, stages: Stages, extra: Vec<Override>) -> Request {
        let mut overrides = self.set.clone();
        overrides.extend(extra);
        Request {
            source,
            overrides,
            out: self.out.clone(),
            stages,
            quiet: self.quiet,
            dry_run: self.dry_run,
            no_plots: self.no_plots,
        }
    }
}

/// Arguments of `relief train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Experiment config (TOML); its `[train]` section drives training.
    pub config: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// Arguments of `relief prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Experiment config (TOML); `[prune]` and `[retrain]` drive the iterations.
    #[arg(required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// The trained model to prune (sets the config's `pretrained`): a relief checkpoint such as
    /// `RUN_DIR/iter-000.safetensors`, or safetensors with PyTorch parameter names.
    #[arg(long, value_name = "CHECKPOINT", conflicts_with = "resume")]
    pub pretrained: Option<PathBuf>,
    /// Initial weights for `prune.rewind` (sets the config's `init`; default:
    /// `init.safetensors` beside the pretrained checkpoint).
    #[arg(long, value_name = "CHECKPOINT", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
    /// Continue the run in RUN_DIR after its last completed epoch, with its own config.
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["config", "out", "set"])]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

/// Arguments of `relief run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Experiment config (TOML): train (unless `pretrained` is set), then prune.
    pub config: PathBuf,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub common: CommonArgs,
}

fn path_override(key: &str, p: &std::path::Path) -> Override {
    Override { key: key.into(), value: toml::Value::String(p.display().to_string()) }
}

/// Runs `relief train`.
pub fn train(args: TrainArgs) -> Result<()> {
    execute(args.common.request(Source::File(args.config), Stages::Train, vec![]))
}

/// Runs `relief prune`.
pub fn prune(args: PruneArgs) -> Result<()> {
    if let Some(dir) = args.resume {
        return execute(args.common.request(Source::Resume(dir), Stages::All, vec![]));
    }
    let mut extra = Vec::new();
    if let Some(p) = &args.pretrained {
        extra.push(path_override("pretrained", p));
    }
    if let Some(p) = &args.init {
        extra.push(path_override("init", p));
    }
    let config = args.config.expect("clap requires CONFIG without --resume");
    execute(args.common.request(Source::File(config), Stages::Prune, extra))
}

/// Runs `relief run`.
pub fn run(args: RunArgs) -> Result<()> {
    execute(args.common.request(Source::File(args.config), Stages::All, vec![]))
}
