//! Running an experiment into a run directory: what `relief train`, `prune`, `run` and `demo`
//! share. Low-level arguments (config file, `--set`, flags) become a [`Plan`]; the run
//! directory is locked (created if new), then resumed, taken over or given the resolved config
//! (see `open_run_dir`), then the pipeline runs and the summary and plots are produced.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use crate::config::{Config, Override};
use crate::logging;
use crate::pipeline::Pipeline;
use crate::plan::{Plan, Stages};
use crate::plots;
use crate::progress::{Mode, Progress};
use crate::report::{self, RunSummary};
use crate::rundir::RunDir;

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A TOML file (plus overrides).
    File(PathBuf),
    /// TOML text, plus overrides.
    Text {
        /// The TOML.
        text: String,
        /// Names the text in errors.
        origin: String,
        /// The experiment name when the TOML sets none.
        name: String,
    },
    /// The resolved config of an existing run directory (resume).
    Resume(PathBuf),
}

/// Everything the experiment commands pass down.
#[derive(Debug, Clone)]
pub struct Request {
    /// The config.
    pub source: Source,
    /// `--set` overrides (and overrides from dedicated flags), in order.
    pub overrides: Vec<Override>,
    /// `--out`: the run directory (default: a fresh one under `runs/`).
    pub out: Option<PathBuf>,
    /// Which stages run.
    pub stages: Stages,
    /// `--quiet`.
    pub quiet: bool,
    /// `--dry-run`: validate and print the resolved config, run nothing.
    pub dry_run: bool,
    /// Skip the plots at the end.
    pub no_plots: bool,
}

fn load(req: &Request) -> Result<(Config, String)> {
    Ok(match &req.source {
        Source::File(path) => (Config::load(path, &req.overrides)?, path.display().to_string()),
        Source::Text { text, origin, name } => {
            let mut c = Config::from_toml_with(text, origin, &req.overrides)?;
            if c.name.is_none() {
                c.name = Some(name.clone());
            }
            (c, origin.clone())
        }
        Source::Resume(dir) => {
            if !req.overrides.is_empty() {
                bail!("--resume continues a run with its own config; --set cannot change it");
            }
            let path = dir.join(crate::rundir::CONFIG_FILE);
            if !path.is_file() {
                // A process that has just created the directory holds its lock before it writes
                // the config: say so rather than "not a run directory".
                if let Some(pid) = RunDir::holder(dir).filter(|&p| p != std::process::id()) {
                    bail!(
                        "{}: in use by another relief process (pid {pid}), which has not written its \
                         config yet; wait for it, then resume",
                        dir.display()
                    );
                }
                bail!("{}: not a relief run directory (no {})", dir.display(), crate::rundir::CONFIG_FILE);
            }
            let text = std::fs::read_to_string(&path)?;
            (Config::from_toml(&text, &path.display().to_string())?, path.display().to_string())
        }
    })
}

/// How [`open_run_dir`] found the directory.
enum Opened {
    /// New (or the leftover of a start killed before it wrote its config).
    Fresh,
    /// A run made with the same config: continue it.
    Resumed,
    /// A run under another config in which no iteration completed: taken over (the message).
    TakenOver(String),
}

/// Opens `dir` for `plan`. The lock is taken first (so a second process gets "in use by another
/// relief process (pid N)"), then: a run made with the same config is resumed; one made with
/// another config is taken over when nothing was saved in it (no `iter-*.safetensors`, no
/// `state.safetensors`: the previous start failed before its first epoch was saved), refused
/// otherwise (listing the differences); a new directory gets the config.
fn open_run_dir(dir: &Path, plan: &Plan) -> Result<(RunDir, Opened)> {
    let run = RunDir::acquire(dir)?;
    let spec = crate::plan::spec_toml(&plan.arch);
    if !RunDir::is_run(dir) {
        run.write_model_spec(spec.as_deref())?;
        run.write_config(&plan.config)?;
        return Ok((run, Opened::Fresh));
    }
    let old = run.read_config()?;
    let old_spec = run.read_model_spec()?;
    let old_hash = crate::plan::run_hash(&old, old_spec.as_deref());
    if old_hash == plan.hash {
        return Ok((run, Opened::Resumed));
    }
    if run.has_progress() {
        let mut diff = old.diff(&plan.config);
        let copy = dir.join(crate::rundir::MODEL_SPEC_FILE);
        if old_spec != spec {
            diff.push(format!(
                "the model spec {:?} differs from the run's copy ({})",
                plan.config.model,
                copy.display()
            ));
        }
        // `relief prune --resume` reads the spec from its path too, so after an edited spec the
        // way back is the run's copy, not a resume.
        let advice = if old_spec != spec && diff.len() == 1 {
            format!(
                "restore the spec from the run's copy (cp {} {}) to continue the run, or start a new \
                 run directory with --out",
                copy.display(),
                plan.config.model
            )
        } else if old_spec != spec {
            format!(
                "use another --out, or restore the spec from the run's copy ({}) and run `relief prune \
                 --resume {}` to continue it as it was",
                copy.display(),
                dir.display()
            )
        } else {
            format!(
                "use another --out, or `relief prune --resume {}` to continue it as it was",
                dir.display()
            )
        };
        bail!(
            "{}: holds a run with a different config; {advice}. Differences (run -> now):\n  {}",
            dir.display(),
            diff.join("\n  ")
        );
    }
    run.write_model_spec(spec.as_deref())?;
    run.take_over(&plan.config)?;
    let note = format!(
        "{}: no iteration completed under the previous config (hash {old_hash}); starting over with \
         this config (hash {})",
        dir.display(),
        plan.hash
    );
    eprintln!("relief: {note}");
    Ok((run, Opened::TakenOver(note)))
}

/// Runs the request; prints the run directory first and the summary table last (stdout).
pub fn execute(req: Request) -> Result<()> {
    let (config, origin) = load(&req)?;
    let stages = if matches!(req.source, Source::Resume(_)) { Stages::All } else { req.stages };
    let plan = Plan::new(config, stages, &origin)?;
    if req.dry_run {
        println!("# {}\n# config hash {}\n{}", plan.describe(), plan.hash, plan.config.to_toml());
        return Ok(());
    }
    let dir = match (&req.source, &req.out) {
        (Source::Resume(d), _) => d.clone(),
        (_, Some(o)) => o.clone(),
        (_, None) => RunDir::fresh_path(&plan.name),
    };
    let options = RunOptions { progress: Mode::detect(req.quiet), plots: !req.no_plots, panic_hook: true };
    let summary = run_plan(&plan, &dir, &options)?;
    let text = report::text(std::slice::from_ref(&summary));
    println!("\n{text}");
    println!("results: {} (metrics.csv, metrics.json, plots/, iter-*.safetensors)", summary.dir.display());
    Ok(())
}

/// How [`run_plan`] reports and what it writes besides the checkpoints and metrics.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    /// Progress output (bars on a terminal, lines, or nothing).
    pub progress: Mode,
    /// Write the plots into `plots/` at the end.
    pub plots: bool,
    /// Install a panic hook that points at the run's log (the CLI does; a library caller may
    /// have its own).
    pub panic_hook: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { progress: Mode::Plain, plots: true, panic_hook: false }
    }
}

/// Runs (or resumes) `plan` into the run directory `dir`: the directory is locked, resumed when
/// it holds a run of the same plan, taken over when a failed start left nothing saved, refused
/// when it holds another run's progress; then every iteration runs (`relief.log` in the
/// directory gets the `tracing` events unless the process already has a subscriber), and
/// `summary.txt` (and plots) are written. Returns the run's summary: its metrics rows, one per
/// iteration, and the config (render it with [`report::text`]).
pub fn run_plan(plan: &Plan, dir: &Path, options: &RunOptions) -> Result<RunSummary> {
    let (run, opened) = open_run_dir(dir, plan)?;
    let resumed = matches!(opened, Opened::Resumed);
    println!("relief: run directory {}", run.path().display());
    logging::init_file_log(&run.log_path())?;
    if let Opened::TakenOver(note) = &opened {
        tracing::warn!("{note}");
    }
    if options.panic_hook {
        logging::install_panic_hook(run.log_path(), run.path().to_path_buf());
    }
    if plan.config.threads > 0 {
        tch::set_num_threads(plan.config.threads as i32);
    }
    let progress = Progress::new(options.progress);
    tracing::info!(
        "relief {} session start: {}",
        env!("CARGO_PKG_VERSION"),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    progress.line(&format!("{}{}", if resumed { "resuming: " } else { "" }, plan.describe()));
    let result = Pipeline::new(plan, &run, &progress).and_then(|p| p.execute());
    let rows = match result {
        Ok(rows) => rows,
        Err(err) => {
            tracing::error!("{err:#}");
            return Err(err.context(format!(
                "run directory {} (log: {})",
                run.path().display(),
                run.log_path().display()
            )));
        }
    };
    let summary = RunSummary { dir: run.path().to_path_buf(), config: plan.config.clone(), rows };
    let text = report::text(std::slice::from_ref(&summary));
    crate::checkpoint::write_atomic(&run.path().join("summary.txt"), text.as_bytes())?;
    if options.plots && !summary.rows.is_empty() {
        match plots::write_all(&run.plots_dir(), std::slice::from_ref(&summary)) {
            Ok(files) => tracing::info!(
                "plots: {}",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
            Err(err) => progress.warn(&format!("plots not written: {err:#}")),
        }
    }
    tracing::info!("session end");
    Ok(summary)
}
