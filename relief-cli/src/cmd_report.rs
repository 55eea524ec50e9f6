//! `relief report`: tables and plots from one or several run directories.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use relief_experiment::checkpoint::write_atomic;
use relief_experiment::plots;
use relief_experiment::report::{self, RunSummary};

/// Arguments of `relief report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run directories; several runs (e.g. NNrelief and magnitude) are compared in one table
    /// and on the same charts. A study directory (with `points.json`) gets the study report
    /// instead: mean ± std over seeds per group, written to `STUDY_DIR/report` by default.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub runs: Vec<PathBuf>,
    /// Where `summary.txt` and the plots go. Default: `RUN_DIR/plots` for one run,
    /// `runs/report-<date>-<time>/` for several.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print the tables only; draw no plots.
    #[arg(long)]
    pub no_plots: bool,
}

/// Runs `relief report`.
pub fn run(args: ReportArgs) -> Result<()> {
    // A study directory (it has `points.json`): the study report, aggregated over seeds.
    if let Some(study) =
        args.runs.iter().find(|d| d.join(relief_experiment::study::points::POINTS_FILE).is_file())
    {
        if args.runs.len() > 1 {
            bail!(
                "{} is a study directory: report it on its own (`relief report {}`), not with other runs",
                study.display(),
                study.display()
            );
        }
        relief_experiment::study::report::run(study, args.out.as_deref(), !args.no_plots)?;
        return Ok(());
    }
    let runs: Vec<RunSummary> = args.runs.iter().map(|d| RunSummary::load(d)).collect::<Result<_>>()?;
    let text = report::text(&runs);
    print!("{text}");
    let out = args.out.clone().unwrap_or_else(|| {
        if runs.len() == 1 {
            runs[0].dir.join("plots")
        } else {
            PathBuf::from("runs").join(format!("report-{}", chrono::Local::now().format("%Y%m%d-%H%M%S")))
        }
    });
    std::fs::create_dir_all(&out)?;
    write_atomic(&out.join("summary.txt"), text.as_bytes())?;
    if !args.no_plots {
        let files = plots::write_all(&out, &runs)?;
        println!();
        for f in files {
            println!("wrote {}", f.display());
        }
    }
    println!("wrote {}", out.join("summary.txt").display());
    Ok(())
}
