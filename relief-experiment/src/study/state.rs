//! Where each point of a study stands, read from its run directory and its status file, so
//! the local executor, `relief study status` and `--retry-failed` agree on one answer:
//!
//! - `done`: the run directory holds the checkpoint of the config's last iteration;
//! - `running`: a process holds the run directory's lock (`run.lock`, flock);
//! - `failed`: the last attempt exited with an error, or was killed (its status file says
//!   running but nobody holds the lock);
//! - `pending`: never started;
//! - `unknown`: not done and not running, and its status file cannot be read (truncated or
//!   edited by hand): the error names the file, and a rerun starts the point again.

use std::path::Path;

use super::points::{AttemptState, PointEntry, PointStatus};
use crate::rundir::RunDir;

/// The state of one point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PointState {
    /// Every iteration completed.
    Done,
    /// A process works on it now.
    Running,
    /// The last attempt failed.
    Failed,
    /// The last attempt was killed (or its machine died) before it finished.
    Interrupted,
    /// Never started.
    Pending,
    /// Not done, not running, and its status file cannot be read.
    Unknown,
}

impl PointState {
    /// Lower-case name, as printed.
    pub fn name(self) -> &'static str {
        match self {
            PointState::Done => "done",
            PointState::Running => "running",
            PointState::Failed => "failed",
            PointState::Interrupted => "interrupted",
            PointState::Pending => "pending",
            PointState::Unknown => "unknown",
        }
    }

    /// Whether `--retry-failed` and a rerun start it again.
    pub fn needs_run(self) -> bool {
        matches!(
            self,
            PointState::Failed | PointState::Interrupted | PointState::Pending | PointState::Unknown
        )
    }
}

/// Whether the run directory's checkpoint of its last iteration exists.
pub fn run_complete(run_dir: &Path) -> bool {
    if !RunDir::is_run(run_dir) {
        return false;
    }
    let Ok(text) = std::fs::read_to_string(run_dir.join(crate::rundir::CONFIG_FILE)) else { return false };
    let Ok(config) = crate::config::Config::from_toml(&text, "") else { return false };
    run_dir.join(format!("iter-{:03}.safetensors", config.prune.iterations)).is_file()
}

/// Whether some process holds `run.lock` of the directory (probed without creating it).
pub fn lock_held(run_dir: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::io::AsRawFd;
        let Ok(file) = std::fs::OpenOptions::new().read(true).open(run_dir.join("run.lock")) else {
            return false;
        };
        // SAFETY: flock on a descriptor we own; an acquired lock is released when `file` drops.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        rc != 0
    }
    #[cfg(not(unix))]
    {
        let _ = run_dir;
        false
    }
}

/// Where a point stands: its state, its last status, and why that status could not be read.
#[derive(Debug, Clone)]
pub struct PointInfo {
    /// The state.
    pub state: PointState,
    /// `status/<id>.json`, when it exists and reads.
    pub status: Option<PointStatus>,
    /// The error reading `status/<id>.json` (it names the file), when it exists but does not
    /// read: every study command reports it.
    pub status_error: Option<String>,
}

impl PointInfo {
    /// The log of the point's last attempt, relative to the study directory: the Slurm task's
    /// (`slurm/logs/JOB_TASK.log`) when Slurm ran it, else `logs/<id>.log`.
    pub fn log(&self, id: &str) -> std::path::PathBuf {
        match self.status.as_ref().and_then(|s| s.slurm_job.as_deref()) {
            Some(task) => Path::new("slurm").join("logs").join(format!("{task}.log")),
            None => Path::new("logs").join(format!("{id}.log")),
        }
    }
}

/// The state of `point` in the study directory `dir`, with its last status (if any).
pub fn point_state(dir: &Path, point: &PointEntry) -> PointInfo {
    let run_dir = dir.join(&point.run_dir);
    let (status, status_error) = match PointStatus::read(dir, &point.id) {
        Ok(s) => (s, None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let state = if run_complete(&run_dir) {
        PointState::Done
    } else if lock_held(&run_dir) {
        PointState::Running
    } else if status_error.is_some() {
        PointState::Unknown
    } else {
        match status.as_ref().map(|s| s.state) {
            Some(AttemptState::Failed) => PointState::Failed,
            Some(AttemptState::Running) | Some(AttemptState::Done) => PointState::Interrupted,
            None if RunDir::is_run(&run_dir) => PointState::Interrupted,
            None => PointState::Pending,
        }
    };
    PointInfo { state, status, status_error }
}
