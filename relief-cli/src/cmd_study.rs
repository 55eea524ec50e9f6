//! `relief study run | run-point | submit | status | report`: sweeps of ordinary relief runs
//! (see [`relief_experiment::study`] and docs/studies.md).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use relief_experiment::report::render_table;
use relief_experiment::study::directory::{self, StudyLock};
use relief_experiment::study::local::{self, parse_devices, LocalOptions, Slot};
use relief_experiment::study::points::{log_path, PointsFile};
use relief_experiment::study::slurm::{self, JobsFile, SubmitOptions};
use relief_experiment::study::spec::{SlurmDefaults, Study};
use relief_experiment::study::state::{point_state, PointState};

/// Arguments of `relief study`.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// What to do with the study.
    #[command(subcommand)]
    pub command: StudyCommand,
}

/// The study subcommands.
#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Run every point that is not done, N at a time on this machine, then aggregate. Rerun to
    /// resume: finished points are skipped, interrupted ones continue where they stopped.
    Run(RunArgs),
    /// Run ONE point of a prepared study directory (what each local child process and each
    /// Slurm array task runs).
    RunPoint(RunPointArgs),
    /// Submit the study to Slurm as job arrays plus an aggregation job.
    Submit(SubmitArgs),
    /// Every point's state (done, running, failed, interrupted, pending), joined with Slurm's
    /// view of its job when Slurm is present.
    Status(StatusArgs),
    /// Aggregate the points over seeds: mean ± std tables (Markdown, CSV, JSON), plots and
    /// report.html, in STUDY_DIR/report.
    Report(ReportArgs),
}

/// Arguments of `relief study run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The study file (TOML: name, base, [grid], [[point]], [slurm]; see docs/studies.md).
    pub study: PathBuf,
    /// Study directory. Default: `studies/<name>`. Rerunning with the same directory resumes.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Points at once: at least 1, at most 4 x the cores of this machine; more than the
    /// study's points are clamped to its points.
    #[arg(long, short, default_value_t = 1, value_name = "N")]
    pub jobs: usize,
    /// Devices the job slots use, round robin: `cpu`, or `cuda:0,cuda:1,...` (each point sees
    /// only its card, as `cuda`); a CUDA device this machine does not have is an error. On the
    /// CPU a point whose config leaves `threads = 0` gets cores / jobs threads.
    #[arg(long, default_value = "cpu", value_name = "LIST")]
    pub devices: String,
    /// Override one field of the base config of every point, e.g. `--set train.epochs=2` for a
    /// quick trial of the whole study (repeatable; as `relief run --set`). Points get other
    /// config hashes, so use another --out than the full study's.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<relief_experiment::config::Override>,
    /// Validate every point and list them; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// No live view (the final tables are still printed).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `relief study run-point`.
#[derive(Debug, Args)]
pub struct RunPointArgs {
    /// The study directory (made by `relief study run` or `submit`).
    pub dir: PathBuf,
    /// The point's index in points.json (Slurm: `$SLURM_ARRAY_TASK_ID`).
    pub index: usize,
    /// No progress on stderr (the run log records everything).
    #[arg(long, short)]
    pub quiet: bool,
}

/// Arguments of `relief study submit`.
#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The study file, or an existing study directory (with --retry-failed).
    pub study: PathBuf,
    /// Submit to Slurm (`sbatch`): one job array (task id = point index), one aggregation job.
    #[arg(long, required = true)]
    pub slurm: bool,
    /// Study directory (must be on storage the compute nodes share). Default: `studies/<name>`.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// `#SBATCH --partition`.
    #[arg(long)]
    pub partition: Option<String>,
    /// `#SBATCH --account`.
    #[arg(long)]
    pub account: Option<String>,
    /// `#SBATCH --gpus-per-task`.
    #[arg(long, value_name = "G")]
    pub gpus_per_task: Option<u32>,
    /// `#SBATCH --cpus-per-task` (also the threads of a point whose config leaves threads = 0).
    #[arg(long, value_name = "C")]
    pub cpus_per_task: Option<u32>,
    /// `#SBATCH --mem`, e.g. 16G.
    #[arg(long, value_name = "M")]
    pub mem: Option<String>,
    /// `#SBATCH --time`, e.g. 12:00:00.
    #[arg(long, value_name = "T")]
    pub time: Option<String>,
    /// At most K array tasks at once (`--array=...%K`).
    #[arg(long, value_name = "K")]
    pub max_parallel: Option<u32>,
    /// Resubmit only the points that are not done and not queued or running.
    #[arg(long)]
    pub retry_failed: bool,
    /// Override one field of the base config of every point (as `relief study run --set`).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<relief_experiment::config::Override>,
    /// Print the sbatch scripts; submit nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Arguments of `relief study status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The study directory.
    pub dir: PathBuf,
}

/// Arguments of `relief study report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The study directory.
    pub dir: PathBuf,
    /// Where the report goes. Default: STUDY_DIR/report.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Tables only; no plots.
    #[arg(long)]
    pub no_plots: bool,
}

/// Runs `relief study ...`. Errors quote user input cut to a readable length.
pub fn run(args: StudyArgs) -> Result<()> {
    match args.command {
        StudyCommand::Run(a) => run_local(a),
        StudyCommand::RunPoint(a) => relief_experiment::study::run_point::run_point(&a.dir, a.index, a.quiet),
        StudyCommand::Submit(a) => submit(a),
        StudyCommand::Status(a) => status(&a.dir),
        StudyCommand::Report(a) => report(&a.dir, a.out.as_deref(), !a.no_plots),
    }
    .map_err(relief_experiment::study::cut_error)
}

fn name_of(path: &Path) -> Result<String> {
    let text = relief_experiment::study::spec::read_study_file(path)?;
    Ok(relief_experiment::study::spec::StudyFile::parse(&text, &path.display().to_string())?.name)
}

/// Loads the study file (with `--set` overrides) and the directory it runs in.
fn load(
    study: &Path,
    out: Option<&Path>,
    set: &[relief_experiment::config::Override],
) -> Result<(Study, PathBuf)> {
    let dir = match out {
        Some(o) => o.to_path_buf(),
        None => directory::default_dir(&name_of(study)?),
    };
    Ok((Study::load(study, &dir, set)?, dir))
}

fn points_table(study: &Study) -> String {
    let rows: Vec<Vec<String>> = study
        .points
        .iter()
        .map(|p| {
            vec![
                p.entry.index.to_string(),
                p.entry.id.clone(),
                p.entry.group.clone(),
                p.entry.hash.clone(),
                p.entry.depends_on.map(|d| d.to_string()).unwrap_or_default(),
            ]
        })
        .collect();
    render_table(&["#", "point", "group", "config hash", "after"], &rows, &[true, false, false, false, true])
}

fn run_local(a: RunArgs) -> Result<()> {
    // Every argument, the study and the directory are checked before anything is created.
    let devices = parse_devices(&a.devices)?;
    local::check_jobs(a.jobs, usize::MAX)?;
    local::check_devices_exist(&devices)?;
    let (study, dir) = load(&a.study, a.out.as_deref(), &a.set)?;
    let opts = LocalOptions { jobs: a.jobs, devices, quiet: a.quiet, exe: None };
    let jobs = local::check_options(&study, &opts)?;
    let existing = directory::check(&study, &dir)?;
    if a.dry_run {
        println!(
            "study {}: {} points, all valid; would run in {}{}\n",
            study.file.name,
            study.points.len(),
            dir.display(),
            if existing { " (resuming)" } else { "" }
        );
        print!("{}", points_table(&study));
        return Ok(());
    }
    let cuda = opts.devices.iter().filter(|d| matches!(d, Slot::Cuda(_))).count();
    if cuda > 0 && jobs > cuda {
        eprintln!("relief: note: {jobs} jobs on {cuda} CUDA device(s): several points share a card");
    }
    std::fs::create_dir_all(&dir).map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", dir.display()))?;
    let _lock = StudyLock::take(&dir)?;
    let existed = directory::prepare(&study, &dir)?;
    println!("relief: study directory {}{}", dir.display(), if existed { " (resuming)" } else { "" });
    let outcome = local::run_local(&study, &dir, &opts)?;
    println!(
        "\nstudy {}: {} points done ({} before this run, {} now), {} failed, in {:.1} s",
        study.file.name,
        study.points.len() - outcome.failed.len(),
        outcome.skipped,
        outcome.finished,
        outcome.failed.len(),
        outcome.wall_time_s
    );
    let reported = report(&dir, None, true);
    if !outcome.failed.is_empty() {
        eprintln!("\n{}", local::failed_table(&outcome.failed));
        bail!(
            "{} of {} points failed; fix the cause and rerun `relief study run {}{}` to retry them",
            outcome.failed.len(),
            study.points.len(),
            a.study.display(),
            a.out.as_ref().map(|o| format!(" --out {}", o.display())).unwrap_or_default()
                + &a.set.iter().map(|o| format!(" --set {}={}", o.key, o.value)).collect::<String>()
        );
    }
    reported
}

fn submit(a: SubmitArgs) -> Result<()> {
    // Every argument, the study and the directory are checked before anything is created.
    let flags = SlurmDefaults {
        partition: a.partition,
        account: a.account,
        gpus_per_task: a.gpus_per_task,
        cpus_per_task: a.cpus_per_task,
        mem: a.mem,
        time: a.time,
        max_parallel: a.max_parallel,
        extra: Vec::new(),
    };
    let bad: Vec<String> = slurm::check_resources(&flags)
        .into_iter()
        .map(|(field, value, why)| format!("--{} {value}: {why}", field.replace('_', "-")))
        .collect();
    if !bad.is_empty() {
        bail!("{}", bad.join("\n"));
    }
    let (dir, index, defaults, to_prepare) = if a.study.is_dir() {
        if !directory::is_study(&a.study) {
            bail!(
                "{}: not a relief study directory (no {}); `relief study submit` takes a study file or \
                 a study directory made by `relief study run` or `submit`",
                a.study.display(),
                relief_experiment::study::points::POINTS_FILE
            );
        }
        if a.out.is_some() || !a.set.is_empty() {
            bail!(
                "{} is a study directory: it is submitted as it was made (no --out, no --set)",
                a.study.display()
            );
        }
        let (study, index) = directory::open(&a.study)?;
        (a.study.clone(), index, study.file.slurm.clone(), None)
    } else {
        let (study, dir) = load(&a.study, a.out.as_deref(), &a.set)?;
        directory::check(&study, &dir)?;
        let (index, slurm) = (study.points_file(), study.file.slurm.clone());
        (dir, index, slurm, Some(study))
    };
    let slurm = SlurmDefaults {
        partition: flags.partition.or(defaults.partition),
        account: flags.account.or(defaults.account),
        gpus_per_task: flags.gpus_per_task.or(defaults.gpus_per_task),
        cpus_per_task: flags.cpus_per_task.or(defaults.cpus_per_task),
        mem: flags.mem.or(defaults.mem),
        time: flags.time.or(defaults.time),
        max_parallel: flags.max_parallel.or(defaults.max_parallel),
        extra: defaults.extra,
    };
    let only = if a.retry_failed {
        let queued = queued_points(&dir, &index)?;
        let retry: Vec<usize> = index
            .points
            .iter()
            .filter(|p| point_state(&dir, p).state.needs_run() && !queued.contains(&p.index))
            .map(|p| p.index)
            .collect();
        if retry.is_empty() {
            println!(
                "relief: nothing to resubmit: every point of {} is done, queued or running",
                dir.display()
            );
            return Ok(());
        }
        println!("relief: resubmitting {} point(s) that are not done, queued or running", retry.len());
        Some(retry)
    } else {
        None
    };
    if let Some(study) = to_prepare.filter(|_| !a.dry_run) {
        std::fs::create_dir_all(&dir)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", dir.display()))?;
        directory::prepare(&study, &dir)?;
    }
    let sub = slurm::submit(&dir, &index, &SubmitOptions { slurm, dry_run: a.dry_run, only, exe: None })?;
    if let Some(sub) = sub {
        println!("relief: study directory {}", dir.display());
        if let Some(j) = &sub.array_job {
            println!("submitted array job {j} ({} points)", sub.points.len() - sub.matched.len());
        }
        if let Some(j) = &sub.matched_job {
            println!("submitted array job {j} ({} matched points, after the first array)", sub.matched.len());
        }
        println!("submitted report job {} (after the arrays)", sub.report_job);
        println!("follow with `relief study status {}`", dir.display());
    }
    Ok(())
}

/// Points whose latest Slurm task is still pending or running (a `jobs.json` that does not
/// read is an error: every point would look resubmittable).
fn queued_points(dir: &Path, index: &PointsFile) -> Result<Vec<usize>> {
    let jobs = JobsFile::read(dir)?;
    let tasks = jobs.latest_task_ids();
    let ids: Vec<String> = tasks
        .values()
        .map(|(j, _)| j.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let Some(states) = slurm::job_states(&ids) else { return Ok(Vec::new()) };
    Ok(index
        .points
        .iter()
        .filter(|p| {
            tasks.get(&p.index).and_then(|(_, t)| states.get(t)).is_some_and(|s| {
                matches!(
                    s.as_str(),
                    "PENDING" | "RUNNING" | "CONFIGURING" | "COMPLETING" | "REQUEUED" | "SUSPENDED"
                )
            })
        })
        .map(|p| p.index)
        .collect())
}

fn status(dir: &Path) -> Result<()> {
    let index = PointsFile::read(dir)?;
    let jobs = JobsFile::read(dir)?;
    let tasks = jobs.latest_task_ids();
    let job_ids: Vec<String> = tasks
        .values()
        .map(|(j, _)| j.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let slurm_states = if job_ids.is_empty() { None } else { slurm::job_states(&job_ids) };
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut rows = Vec::new();
    let mut unreadable = Vec::new();
    for p in &index.points {
        let info = point_state(dir, p);
        let (mut state, st) = (info.state, info.status);
        unreadable.extend(info.status_error);
        let (task, sstate) = match tasks.get(&p.index) {
            Some((_, t)) => (t.clone(), slurm_states.as_ref().and_then(|m| m.get(t).cloned())),
            None => (String::new(), None),
        };
        // A task Slurm ended badly is failed even if it died before recording it.
        if state == PointState::Interrupted
            && sstate.as_deref().is_some_and(|s| {
                matches!(s, "CANCELLED" | "FAILED" | "TIMEOUT" | "NODE_FAIL" | "OUT_OF_MEMORY" | "PREEMPTED")
            })
        {
            state = PointState::Failed;
        }
        *counts.entry(state.name()).or_default() += 1;
        let log = if task.is_empty() {
            log_path(dir, &p.id).display().to_string()
        } else {
            dir.join("slurm").join("logs").join(format!("{task}.log")).display().to_string()
        };
        rows.push(vec![
            p.index.to_string(),
            p.id.clone(),
            state.name().to_string(),
            task,
            sstate.unwrap_or_default(),
            st.and_then(|s| s.wall_time_s).map(|t| format!("{t:.1}")).unwrap_or_default(),
            log,
        ]);
    }
    println!("study {} in {}", index.study, dir.display());
    print!(
        "{}",
        render_table(
            &["#", "point", "state", "slurm task", "slurm state", "time s", "log"],
            &rows,
            &[true, false, false, false, false, true, false]
        )
    );
    println!("{}", counts.iter().map(|(k, v)| format!("{v} {k}")).collect::<Vec<_>>().join(", "));
    if !jobs.submissions.is_empty() && slurm_states.is_none() {
        println!("(Slurm is not reachable from here: scontrol failed or is not installed; states come from the run directories)");
    }
    if !unreadable.is_empty() {
        bail!(
            "{} status file{} of {} cannot be read (those points show as unknown; a rerun starts them \
             again):\n  {}",
            unreadable.len(),
            if unreadable.len() == 1 { "" } else { "s" },
            dir.display(),
            unreadable.join("\n  ")
        );
    }
    Ok(())
}

fn report(dir: &Path, out: Option<&Path>, plots: bool) -> Result<()> {
    relief_experiment::study::report::run(dir, out, plots).map(|_| ())
}
