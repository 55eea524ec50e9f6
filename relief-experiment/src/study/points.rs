//! The study directory's index: `points.json` (point id -> resolved config hash -> run
//! directory), the one file every study command reads to find the points.
//!
//! ```text
//! STUDY_DIR/
//!   study.resolved.toml     the study file with its base inlined (written before any work)
//!   points.json             [`PointsFile`]: every point, in run order
//!   runs/<point-id>/        ordinary run directories (`relief eval/report/export` work on them)
//!   logs/<point-id>.log     stdout + stderr of the point's process (local executor)
//!   status/<point-id>.json  [`PointStatus`]: the last attempt's state, exit code, times, host
//!   slurm/                  sbatch scripts, job ids, one log per array task (Slurm backend)
//!   report/                 `relief study report`: summary.md/.csv/.json, iterations.csv,
//!                           accuracy.svg, report.html
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;

/// `points.json`'s file name.
pub const POINTS_FILE: &str = "points.json";
/// `study.resolved.toml`'s file name.
pub const STUDY_FILE: &str = "study.resolved.toml";

/// One point of a study: an ordinary relief config and where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointEntry {
    /// Position in run order (the Slurm array index).
    pub index: usize,
    /// Stable, readable id built from the varied values, e.g. `model=lenet5,alpha_fc=0.95,seed=1`.
    pub id: String,
    /// The id without the seed: points that differ only in `seed` share a group and are
    /// aggregated together (mean ± std).
    pub group: String,
    /// [`crate::config::Config::hash`] of the point's resolved config.
    pub hash: String,
    /// The run directory, relative to the study directory (`runs/<id>`).
    pub run_dir: PathBuf,
    /// The varied values (dotted config key -> value as TOML text), e.g. `prune.alpha_fc -> 0.95`.
    pub values: BTreeMap<String, String>,
    /// The seed of the point.
    pub seed: u64,
    /// The point that must finish first (a magnitude point matched to its NNrelief point).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<usize>,
}

/// `points.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointsFile {
    /// The study's name.
    pub study: String,
    /// Every point, in run order.
    pub points: Vec<PointEntry>,
}

impl PointsFile {
    /// Reads `DIR/points.json` and checks that it is an index a study could have written
    /// ([`PointsFile::check`]); errors name the file (and the point).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join(POINTS_FILE);
        if !path.is_file() {
            bail!("{}: not a relief study directory (no {POINTS_FILE})", dir.display());
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let file: Self = serde_json::from_str(&text)
            .map_err(|e| anyhow!(super::cut_long_lines(&format!("{}: unreadable: {e}", path.display()))))?;
        file.check().map_err(|e| {
            anyhow!(super::cut_long_lines(&format!(
                "{}: {e} (not an index relief writes: was it changed by hand?)",
                path.display()
            )))
        })?;
        Ok(file)
    }

    /// Checks what every study command relies on: indices are positions, ids are unique file
    /// names (`[A-Za-z0-9._+=,-]`, not `.` or `..`), each run directory is `runs/<id>`, and a
    /// dependency names another point.
    pub fn check(&self) -> Result<()> {
        if self.points.is_empty() {
            bail!("lists no points");
        }
        let mut ids = std::collections::BTreeSet::new();
        for (i, p) in self.points.iter().enumerate() {
            let id = super::cut_quote(&p.id, super::MAX_QUOTE);
            if p.index != i {
                bail!("point {id} has index {} at position {i}", p.index);
            }
            if p.id.is_empty()
                || p.id == "."
                || p.id == ".."
                || !p.id.chars().all(|c| c.is_ascii_alphanumeric() || "._+=,-".contains(c))
            {
                bail!("point {i}: id {id:?} is not a point id (letters, digits and ._+=,- only)");
            }
            if !ids.insert(p.id.as_str()) {
                bail!("point {id} is listed twice");
            }
            if p.run_dir != Path::new("runs").join(&p.id) {
                bail!(
                    "point {id}: run_dir {:?} is not runs/{id}",
                    super::cut_quote(&p.run_dir.display().to_string(), super::MAX_QUOTE)
                );
            }
            if let Some(j) = p.depends_on {
                if j >= self.points.len() || j == i {
                    bail!("point {id}: depends_on = {j} is not another point (0-{})", self.points.len() - 1);
                }
            }
        }
        Ok(())
    }

    /// Writes `DIR/points.json` atomically.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        write_atomic(&dir.join(POINTS_FILE), format!("{text}\n").as_bytes())
    }
}

/// The state of a point's last attempt, as `status/<id>.json` records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttemptState {
    /// A process is (or was, if it was killed) working on the point.
    Running,
    /// Finished: every iteration's checkpoint exists.
    Done,
    /// The process exited with an error.
    Failed,
}

/// `status/<id>.json`: the last attempt at a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointStatus {
    /// The attempt's state.
    pub state: AttemptState,
    /// Exit code (failed or done attempts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The error message of a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Host name and process id of the attempt.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Slurm job and array task, when run by Slurm (`JOBID_TASK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slurm_job: Option<String>,
    /// Start time (RFC 3339).
    pub started: String,
    /// End time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// Start, in milliseconds since the Unix epoch (orders attempts across processes).
    #[serde(default)]
    pub started_ms: u64,
    /// End, in milliseconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
    /// Seconds the attempt took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wall_time_s: Option<f64>,
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `status/<id>.json` of a point.
pub fn status_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("status").join(format!("{id}.json"))
}

/// `logs/<id>.log` of a point.
pub fn log_path(dir: &Path, id: &str) -> PathBuf {
    dir.join("logs").join(format!("{id}.log"))
}

impl PointStatus {
    /// Reads a point's status (`None` when the point never started); an error names the file
    /// (a truncated or edited status is an error, never taken as "no status").
    pub fn read(dir: &Path, id: &str) -> Result<Option<Self>> {
        let path = status_path(dir, id);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Ok(m) if m.is_dir() => bail!("{}: is a directory, not a status file", path.display()),
            _ => {}
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        let status = serde_json::from_str(&text)
            .map_err(|e| anyhow!(super::cut_long_lines(&format!("{}: unreadable: {e}", path.display()))))?;
        Ok(Some(status))
    }

    /// Writes it atomically.
    pub fn write(&self, dir: &Path, id: &str) -> Result<()> {
        let path = status_path(dir, id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("{}: cannot create", parent.display()))?;
        }
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        write_atomic(&path, format!("{text}\n").as_bytes())
    }
}
