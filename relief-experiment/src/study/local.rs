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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::points::{log_path, PointStatus};
use super::spec::Study;
use super::state::{point_state, PointState};
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

/// Parses `--devices`: `cpu`, or `cuda:0,cuda:1,...` (also `cuda` = `cuda:0`).
pub fn parse_devices(s: &str) -> Result<Vec<Slot>> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim) {
        out.push(match part {
            "cpu" => Slot::Cpu,
            "cuda" => Slot::Cuda(0),
            other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
                Some(n) => Slot::Cuda(n),
                None => {
                    bail!("--devices {s}: `{part}` is not a device; expected cpu or cuda:N, comma-separated")
                }
            },
        });
    }
    if out.is_empty() {
        bail!("--devices: empty list");
    }
    Ok(out)
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
        Slot::Cuda(n) => cmd.env("CUDA_VISIBLE_DEVICES", n.to_string()),
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
        bail!("the study's devices do not fit --devices:\n  {}", problems.join("\n  "));
    }
    Ok(())
}

/// Runs every point of `study` (in the prepared directory `dir`) that is not done.
pub fn run_local(study: &Study, dir: &Path, opts: &LocalOptions) -> Result<LocalOutcome> {
    let t0 = Instant::now();
    if opts.jobs == 0 {
        bail!("--jobs 0: expected at least 1");
    }
    check_devices(study, &opts.devices)?;
    let exe = match &opts.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().context("the relief executable")?,
    };
    let dir = std::fs::canonicalize(dir).with_context(|| format!("{}: cannot resolve", dir.display()))?;
    let n = study.points.len();
    let cores = std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1);
    let threads = (cores / opts.jobs).max(1);
    let mut state: Vec<PointState> = Vec::with_capacity(n);
    for p in &study.points {
        state.push(point_state(&dir, &p.entry).0);
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
    let mut free: Vec<usize> = (0..opts.jobs).rev().collect();
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
            format!("eta {}", fmt_secs(mean * left as f64 / opts.jobs.min(left) as f64))
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
        opts.jobs,
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
                let why = PointStatus::read(&dir, &id)
                    .ok()
                    .flatten()
                    .and_then(|s| s.error)
                    .unwrap_or_else(|| format!("exited with {code}"));
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
