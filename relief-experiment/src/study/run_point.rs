//! One point of a study, in this process: what the local executor's child processes and every
//! Slurm array task run (`relief study run-point DIR INDEX`). The point's config comes from
//! re-expanding `study.resolved.toml` and must hash as `points.json` says; it then runs through
//! exactly the code of `relief run` ([`crate::experiment::execute`]) into `runs/<id>/`, which
//! resumes an interrupted point after its last completed epoch. The attempt is recorded in
//! `status/<id>.json` (running, then done or failed with the error).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use super::points::{unix_ms, AttemptState, PointEntry, PointStatus, PointsFile};
use super::spec::{Point, Study};
use super::state::run_complete;
use crate::experiment::{execute, Request, Source};
use crate::plan::Stages;

/// Environment variable the local executor sets: CPU threads of a point whose config leaves
/// `threads = 0` (its share of the cores).
pub const THREADS_ENV: &str = "RELIEF_THREADS";

/// The machine's host name.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn now() -> String {
    chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// The Slurm job and array task of this process, `JOBID_TASK`, when Slurm started it.
fn slurm_job() -> Option<String> {
    let job = std::env::var("SLURM_ARRAY_JOB_ID").or_else(|_| std::env::var("SLURM_JOB_ID")).ok()?;
    Some(match std::env::var("SLURM_ARRAY_TASK_ID") {
        Ok(task) => format!("{job}_{task}"),
        Err(_) => job,
    })
}

/// Threads for a point whose config sets none: `RELIEF_THREADS`, else Slurm's CPUs per task.
fn threads_from_env() -> Option<i32> {
    [THREADS_ENV, "SLURM_CPUS_PER_TASK"]
        .iter()
        .find_map(|k| std::env::var(k).ok().and_then(|v| v.trim().parse::<i32>().ok()))
        .filter(|&n| n > 0)
}

/// Finds point `index` of the study directory, with the directory checked
/// ([`super::directory::open`]: `points.json` and `study.resolved.toml` agree).
pub fn resolve_point(dir: &Path, index: usize) -> Result<(Study, PointsFile, Point)> {
    let n = PointsFile::read(dir)?.points.len();
    if index >= n {
        bail!(
            "{}: no point {index}: the study has {n} point{}, 0-{}",
            dir.display(),
            if n == 1 { "" } else { "s" },
            n - 1
        );
    }
    let (study, index_file) = super::directory::open(dir)?;
    let Some(entry) = index_file.points.get(index) else {
        bail!("{}: no point {index} (points.json changed while it was read)", dir.display());
    };
    let Some(point) = study.points.iter().find(|p| p.entry.id == entry.id) else {
        bail!("{}: point {} of points.json is not in study.resolved.toml", dir.display(), entry.id);
    };
    let point = point.clone();
    Ok((study, index_file, point))
}

fn dependency_done(dir: &Path, index: &PointsFile, entry: &PointEntry) -> Result<()> {
    if let Some(j) = entry.depends_on {
        let dep = &index.points[j];
        if !run_complete(&dir.join(&dep.run_dir)) {
            bail!(
                "point {} needs point {} to finish first (its NNrelief budget), and that point has not \
                 completed (see `relief study status {}`)",
                entry.id,
                dep.id,
                dir.display()
            );
        }
    }
    Ok(())
}

/// Runs point `index` of the study in `dir` (resuming it if interrupted).
pub fn run_point(dir: &Path, index: usize, quiet: bool) -> Result<()> {
    let (_, index_file, point) = resolve_point(dir, index)?;
    let id = point.entry.id.clone();
    let started = Instant::now();
    let mut status = PointStatus {
        state: AttemptState::Running,
        exit_code: None,
        error: None,
        host: host_name(),
        pid: std::process::id(),
        slurm_job: slurm_job(),
        started: now(),
        finished: None,
        started_ms: unix_ms(),
        finished_ms: None,
        wall_time_s: None,
    };
    status.write(dir, &id)?;
    let result = dependency_done(dir, &index_file, &point.entry).and_then(|()| {
        if point.config.threads == 0 {
            if let Some(n) = threads_from_env() {
                tch::set_num_threads(n);
            }
        }
        execute(Request {
            source: Source::Text {
                text: point.config.to_toml(),
                origin: format!("{} point {id}", dir.display()),
                name: id.clone(),
            },
            overrides: Vec::new(),
            out: Some(dir.join(&point.entry.run_dir)),
            stages: Stages::All,
            quiet,
            dry_run: false,
            no_plots: false,
        })
    });
    status.finished = Some(now());
    status.finished_ms = Some(unix_ms());
    status.wall_time_s = Some(started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => {
            status.state = AttemptState::Done;
            status.exit_code = Some(0);
        }
        Err(e) => {
            status.state = AttemptState::Failed;
            status.exit_code = Some(1);
            status.error = Some(format!("{e:#}"));
        }
    }
    status.write(dir, &id)?;
    result
}
