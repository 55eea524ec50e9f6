//! The local executor: points run as child processes (`relief study run-point DIR INDEX`, the
//! same code path as a Slurm array task), `jobs` at a time, each given one device of the list
//! round robin (CUDA through `CUDA_VISIBLE_DEVICES`, so a config's `cuda`/`auto` device is the
//! assigned card and its hash stays the same) and, on the CPU, its share of the cores
//! (`RELIEF_THREADS = cores / jobs` unless the config sets `threads`).
//!
//! Idempotent and resumable: finished points are skipped, interrupted ones resume from their
//! run directory. A failed point does not stop the others; a point that depends on a failed
//! one (a matched magnitude point) is not started. Children die with the executor
//! (`PR_SET_PDEATHSIG`), so a killed study leaves no orphan holding a run directory.
//!
//! The live view: on a terminal, one bar for the study (done / running / failed / pending,
//! ETA) and one per running point (its completed iterations, read from its run directory);
//! otherwise one line per state change.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::points::{log_path, PointStatus};
use super::spec::Study;
use super::state::{point_state, PointState};
use super::{cut_quote, MAX_QUOTE};
use crate::progress::{Mode, Progress};
use crate::report::render_table;

/// Where a job slot runs its points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The CPU (no CUDA device visible to the point).
    Cpu,
    /// CUDA device N (the only one visible to the point).
    Cuda(usize),
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Slot::Cpu => f.write_str("cpu"),
            Slot::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Parses `--devices`: `cpu`, or `cuda:0,cuda:1,...` (also `cuda` = `cuda:0`). Whether the
/// CUDA devices exist is [`check_devices_exist`]'s question.
pub fn parse_devices(s: &str) -> Result<Vec<Slot>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        out.push(match part {
            "cpu" => Slot::Cpu,
            "cuda" => Slot::Cuda(0),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Slot::Cuda(n),
                None => {
                    bail!(
                        "--devices {}: `{}` is not a device; expected cpu or cuda:N, comma-separated",
                        cut_quote(s, MAX_QUOTE),
                        cut_quote(part, MAX_QUOTE)
                    )
                }
            },
        });
    }
    if out.is_empty() {
        bail!("--devices: empty list");
    }
    Ok(out)
}

/// `--jobs` may be at most this many times the available cores.
pub const MAX_JOBS_PER_CORE: usize = 4;

/// The largest `--jobs`: [`MAX_JOBS_PER_CORE`] x the available cores.
pub fn max_jobs() -> usize {
    MAX_JOBS_PER_CORE * std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1)
}

/// Checks `--jobs` and returns the job slots a study of `points` points uses: at least 1, at
/// most [`max_jobs`] (refused above), and never more than the points (clamped: more slots
/// would idle).
pub fn check_jobs(jobs: usize, points: usize) -> Result<usize> {
    let max = max_jobs();
    if jobs == 0 {
        bail!("--jobs 0: expected at least 1");
    }
    if jobs > max {
        bail!(
            "--jobs {jobs}: at most {max} ({MAX_JOBS_PER_CORE} x the {} cores of this machine)",
            max / MAX_JOBS_PER_CORE
        );
    }
    Ok(jobs.min(points.max(1)))
}

/// Checks that every CUDA device of `devices` exists, given the number of CUDA devices this
/// process sees (`tch::Cuda::device_count()` for [`check_devices_exist`]).
pub fn check_device_count(devices: &[Slot], count: usize) -> Result<()> {
    let missing: Vec<String> = devices
        .iter()
        .filter(|d| matches!(d, Slot::Cuda(n) if *n >= count))
        .map(|d| d.to_string())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !missing.is_empty() {
        let have = match count {
            0 => "this machine has no CUDA device (libtorch sees 0)".to_string(),
            1 => "this machine has 1 CUDA device, cuda:0".to_string(),
            n => format!("this machine has {n} CUDA devices, cuda:0 to cuda:{}", n - 1),
        };
        bail!("--devices {}: no such device; {have}", missing.join(","));
    }
    Ok(())
}

/// Checks that every CUDA device of `devices` exists on this machine (asks libtorch only when
/// a CUDA device is listed).
pub fn check_devices_exist(devices: &[Slot]) -> Result<()> {
    if devices.iter().all(|d| *d == Slot::Cpu) {
        return Ok(());
    }
    check_device_count(devices, usize::try_from(tch::Cuda::device_count()).unwrap_or(0))
}

/// Every check of [`run_local`]'s options against the study, before anything is created:
/// `--jobs` ([`check_jobs`]), the devices' existence ([`check_devices_exist`]) and whether the
/// points' devices fit them. Returns the job slots to use.
pub fn check_options(study: &Study, opts: &LocalOptions) -> Result<usize> {
    let jobs = check_jobs(opts.jobs, study.points.len())?;
    if opts.devices.is_empty() {
        bail!("--devices: empty list");
    }
    check_devices_exist(&opts.devices)?;
    check_devices(study, &opts.devices)?;
    Ok(jobs)
}

/// How the local executor runs a study.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Points at once.
    pub jobs: usize,
    /// Devices, assigned round robin to the job slots.
    pub devices: Vec<Slot>,
    /// No live view (the summary is still printed).
    pub quiet: bool,
    /// The `relief` binary the points run with (default: this executable).
    pub exe: Option<PathBuf>,
}

/// What a local study run ended with.
#[derive(Debug, Clone)]
pub struct LocalOutcome {
    /// Points that were done before this run started.
    pub skipped: usize,
    /// Points this run finished.
    pub finished: usize,
    /// `(point id, log path, error)` of the points that failed (or could not start).
    pub failed: Vec<(String, PathBuf, String)>,
    /// Wall time of this run.
    pub wall_time_s: f64,
}

struct Running {
    index: usize,
    slot: usize,
    child: Child,
    started: Instant,
    /// The point's own bar (iterations completed, read from its run directory).
    bar: crate::progress::Bar,
}

/// Iterations whose checkpoints exist in a run directory (the longest prefix 0, 1, ...).
fn iterations_done(run_dir: &Path) -> u64 {
    (0..).take_while(|i| run_dir.join(format!("iter-{i:03}.safetensors")).is_file()).count() as u64
}

fn spawn(
    exe: &Path,
    dir: &Path,
    index: usize,
    id: &str,
    slot: Slot,
    threads: Option<usize>,
) -> Result<Child> {
    let log = log_path(dir, id);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("{}: cannot open the point's log", log.display()))?;
    let mut cmd = Command::new(exe);
    cmd.arg("study").arg("run-point").arg(dir).arg(index.to_string()).arg("--quiet");
    cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file);
    match slot {
        Slot::Cpu => cmd.env("CUDA_VISIBLE_DEVICES", ""),
        Slot::Cuda(n) => cmd.env("CUDA_VISIBLE_DEVICES", visible_device(n)),
    };
    if let Some(t) = threads {
        cmd.env(super::run_point::THREADS_ENV, t.to_string());
    }
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    cmd.spawn().with_context(|| format!("cannot start {}", exe.display()))
}

/// What `CUDA_VISIBLE_DEVICES` names device `n` as seen by this process: the `n`-th entry of
/// our own `CUDA_VISIBLE_DEVICES` when it is set (so `cuda:N` is the device
/// `tch::Cuda::device_count()` counted), else `n`.
fn visible_device(n: usize) -> String {
    std::env::var("CUDA_VISIBLE_DEVICES")
        .ok()
        .and_then(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).nth(n).map(str::to_string))
        .unwrap_or_else(|| n.to_string())
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Checks that the points' devices fit the slots (`cuda:N` in a config cannot be re-pinned).
fn check_devices(study: &Study, devices: &[Slot]) -> Result<()> {
    let cpu_only = devices.iter().all(|d| *d == Slot::Cpu);
    let mut problems = Vec::new();
    for p in &study.points {
        let d = p.config.device.as_str();
        if d.starts_with("cuda:") {
            problems.push(format!(
                "point {}: device = {d:?} cannot be re-pinned; use \"cuda\" or \"auto\"",
                p.entry.id
            ));
        } else if d == "cuda" && cpu_only {
            problems
                .push(format!("point {}: device = \"cuda\" but --devices lists only the CPU", p.entry.id));
        } else if d == "cpu" && !cpu_only {
            problems.push(format!("point {}: device = \"cpu\" but --devices lists CUDA devices", p.entry.id));
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(super::spec::MAX_LISTED);
        if n > problems.len() {
            problems.push(format!("... and {} more", n - problems.len()));
        }
        bail!("the study's devices do not fit --devices:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// Runs every point of `study` (in the prepared directory `dir`) that is not done.
pub fn run_local(study: &Study, dir: &Path, opts: &LocalOptions) -> Result<LocalOutcome> {
    let t0 = Instant::now();
    let jobs = check_options(study, opts)?;
    let exe = match &opts.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().context("the relief executable")?,
    };
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}: cannot resolve", dir.display()))?;
    let n = study.points.len();
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let threads = (cores / jobs).max(1);
    let mut state: Vec<PointState> = Vec::with_capacity(n);
    for p in &study.points {
        let info = point_state(&dir, &p.entry);
        if let (PointState::Unknown, Some(e)) = (info.state, &info.status_error) {
            eprintln!(
                "relief: warning: {}; the outcome of point {}'s last attempt is unknown, so it runs again",
                super::cut_long_lines(e),
                p.entry.id
            );
        }
        state.push(info.state);
    }
    if let Some(i) = state.iter().position(|s| *s == PointState::Running) {
        bail!(
            "point {} is running in another process (its run directory is locked); wait for it or stop it \
             (`relief study status {}`)",
            study.points[i].entry.id,
            dir.display()
        );
    }
    let skipped = state.iter().filter(|s| **s == PointState::Done).count();
    let mut todo: Vec<usize> = (0..n).filter(|&i| state[i].needs_run()).collect();
    for &i in &todo {
        state[i] = PointState::Pending;
    }
    let progress = Progress::new(Mode::detect(opts.quiet));
    let bar = progress.bar(n as u64, "points", "points");
    bar.set_position(skipped as u64);
    let mut running: Vec<Running> = Vec::new();
    let mut free: Vec<usize> = (0..jobs).rev().collect();
    let mut failed = Vec::new();
    let mut finished = 0usize;
    let mut durations: Vec<f64> = Vec::new();
    let mut last_poll = Instant::now();
    let counts = |state: &[PointState]| -> BTreeMap<PointState, usize> {
        let mut m = BTreeMap::new();
        for s in state {
            *m.entry(*s).or_insert(0) += 1;
        }
        m
    };
    let view = |state: &[PointState], durations: &[f64]| -> String {
        let c = counts(state);
        let get = |s| c.get(&s).copied().unwrap_or(0);
        let left = get(PointState::Pending) + get(PointState::Running);
        let eta = if durations.is_empty() || left == 0 {
            "eta ?".to_string()
        } else {
            let mean = durations.iter().sum::<f64>() / durations.len() as f64;
            format!("eta {}", fmt_secs(mean * left as f64 / jobs.min(left) as f64))
        };
        format!(
            "{} done, {} running, {} failed, {} pending, {eta}",
            get(PointState::Done),
            get(PointState::Running),
            get(PointState::Failed),
            get(PointState::Pending)
        )
    };
    progress.line(&format!(
        "study {}: {n} points, {skipped} already done, {} to run, {} at a time on {} ({})",
        study.file.name,
        todo.len(),
        jobs,
        opts.devices.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","),
        dir.display()
    ));
    loop {
        // Start what can start.
        let mut k = 0;
        while k < todo.len() && !free.is_empty() {
            let i = todo[k];
            let entry = &study.points[i].entry;
            let dep = entry.depends_on.map(|j| state[j]);
            match dep {
                Some(PointState::Done) | None => {}
                Some(PointState::Failed) => {
                    todo.remove(k);
                    state[i] = PointState::Failed;
                    let why = format!(
                        "not started: point {} (its NNrelief budget) failed",
                        study.points[entry.depends_on.unwrap()].entry.id
                    );
                    progress.line(&format!("[{}] {}: {why}", view(&state, &durations), entry.id));
                    failed.push((entry.id.clone(), log_path(&dir, &entry.id), why));
                    continue;
                }
                Some(_) => {
                    k += 1;
                    continue;
                }
            }
            todo.remove(k);
            let slot = free.pop().expect("non-empty");
            let device = opts.devices[slot % opts.devices.len()];
            let t =
                if study.points[i].config.threads == 0 && device == Slot::Cpu { Some(threads) } else { None };
            match spawn(&exe, &dir, i, &entry.id, device, t) {
                Ok(child) => {
                    state[i] = PointState::Running;
                    let iters = study.points[i].config.prune.iterations as u64 + 1;
                    let pbar = progress.bar(iters, &entry.id, "iters");
                    pbar.set_message(format!("on {device}"));
                    progress.line(&format!(
                        "[{}] started {} on {device} (log {})",
                        view(&state, &durations),
                        entry.id,
                        log_path(&dir, &entry.id).display()
                    ));
                    running.push(Running { index: i, slot, child, started: Instant::now(), bar: pbar });
                }
                Err(e) => {
                    free.push(slot);
                    state[i] = PointState::Failed;
                    failed.push((entry.id.clone(), log_path(&dir, &entry.id), format!("{e:#}")));
                }
            }
        }
        if running.is_empty() {
            if todo.is_empty() {
                break;
            }
            // Only points waiting on points that will never finish here.
            for i in std::mem::take(&mut todo) {
                state[i] = PointState::Failed;
                let id = &study.points[i].entry.id;
                failed.push((
                    id.clone(),
                    log_path(&dir, id),
                    "not started: its dependency did not finish".into(),
                ));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        if progress.mode() == Mode::Bars && last_poll.elapsed() > Duration::from_secs(1) {
            last_poll = Instant::now();
            for job in &running {
                job.bar.set_position(iterations_done(&dir.join(&study.points[job.index].entry.run_dir)));
            }
        }
        let mut r = 0;
        while r < running.len() {
            let exited = running[r].child.try_wait().context("waiting for a point's process")?;
            let Some(code) = exited else {
                r += 1;
                continue;
            };
            let job = running.remove(r);
            job.bar.finish();
            free.push(job.slot);
            let id = study.points[job.index].entry.id.clone();
            let secs = job.started.elapsed().as_secs_f64();
            if code.success() {
                state[job.index] = PointState::Done;
                finished += 1;
                durations.push(secs);
                bar.inc(1);
                progress.line(&format!("[{}] done {id} ({})", view(&state, &durations), fmt_secs(secs)));
            } else {
                state[job.index] = PointState::Failed;
                let why = match PointStatus::read(&dir, &id) {
                    Ok(s) => s.and_then(|s| s.error).unwrap_or_else(|| format!("exited with {code}")),
                    Err(e) => format!("exited with {code}; and {e:#}"),
                };
                progress.line(&format!(
                    "[{}] FAILED {id} after {} (log {})",
                    view(&state, &durations),
                    fmt_secs(secs),
                    log_path(&dir, &id).display()
                ));
                failed.push((id.clone(), log_path(&dir, &id), why));
            }
        }
        bar.set_message(view(&state, &durations));
    }
    bar.finish();
    Ok(LocalOutcome { skipped, finished, failed, wall_time_s: t0.elapsed().as_secs_f64() })
}

/// The table of failed points (id, log, first line of the error).
pub fn failed_table(failed: &[(String, PathBuf, String)]) -> String {
    let rows: Vec<Vec<String>> = failed
        .iter()
        .map(|(id, log, why)| {
            let first = why.lines().next().unwrap_or("").to_string();
            vec![id.clone(), log.display().to_string(), first]
        })
        .collect();
    render_table(&["failed point", "log", "error"], &rows, &[false, false, false])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_are_bounded_and_clamped_to_the_points() {
        assert!(check_jobs(0, 3).unwrap_err().to_string().contains("--jobs 0"));
        let max = max_jobs();
        assert_eq!(check_jobs(max, 3).unwrap(), 3.min(max));
        assert_eq!(check_jobs(2, 5).unwrap(), 2);
        for absurd in [max + 1, 1_000_000_000_000, usize::MAX] {
            let e = check_jobs(absurd, 3).unwrap_err().to_string();
            assert!(e.contains(&format!("--jobs {absurd}")) && e.contains("cores"), "{e}");
        }
    }

    #[test]
    fn missing_cuda_devices_are_named_with_the_count() {
        let d = parse_devices("cuda:0,cuda:2,cuda:2").unwrap();
        let e = check_device_count(&d, 0).unwrap_err().to_string();
        assert!(e.contains("cuda:0,cuda:2") && e.contains("no CUDA device"), "{e}");
        let e = check_device_count(&d, 2).unwrap_err().to_string();
        assert!(e.starts_with("--devices cuda:2:") && e.contains("2 CUDA devices, cuda:0 to cuda:1"), "{e}");
        assert!(check_device_count(&d, 3).is_ok());
        assert!(check_device_count(&[Slot::Cpu], 0).is_ok());
        let long = "x".repeat(100_000);
        assert!(parse_devices(&long).unwrap_err().to_string().len() < 1000);
    }
}
