//! The Slurm backend: a study becomes job arrays whose task ids are point indices, each task
//! running `relief study run-point DIR $SLURM_ARRAY_TASK_ID` (the local executor's code path),
//! plus an aggregation job that runs `relief study report DIR` once the arrays have ended.
//!
//! ```text
//! STUDY_DIR/slurm/
//!   submit-N.sbatch          the array script of submission N (points without dependencies)
//!   submit-N-matched.sbatch  the array of points that wait for another (`--dependency=afterany`)
//!   report-N.sbatch          the aggregation job (`--dependency=afterany:... --kill-on-invalid-dep=yes`)
//!   jobs.json                every submission: job ids and the points each array holds
//!   logs/%A_%a.log           one log per array task; logs/report-%j.log
//! ```
//!
//! Nothing is half-submitted: if a later `sbatch` of one submission fails, the jobs submitted
//! before it are cancelled, and `jobs.json` is written only for a complete submission.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::points::PointsFile;
use super::spec::SlurmDefaults;
use crate::checkpoint::write_atomic;

/// Options of one submission (flags over the study's `[slurm]` table).
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    /// Resources and limits.
    pub slurm: SlurmDefaults,
    /// Print the scripts, submit nothing.
    pub dry_run: bool,
    /// Submit only these point indices (`--retry-failed`); `None` = every point.
    pub only: Option<Vec<usize>>,
    /// The `relief` binary the tasks run (default: this executable).
    pub exe: Option<PathBuf>,
}

/// One submission, as `jobs.json` records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// 1-based submission number.
    pub number: usize,
    /// RFC 3339 time of submission.
    pub submitted: String,
    /// Array job id of the points without dependencies (if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array_job: Option<String>,
    /// Array job id of the points that wait for another point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched_job: Option<String>,
    /// The aggregation job.
    pub report_job: String,
    /// Point indices submitted.
    pub points: Vec<usize>,
    /// Those of them in the matched (dependent) array.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matched: Vec<usize>,
}

/// `slurm/jobs.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobsFile {
    /// Every submission, oldest first.
    pub submissions: Vec<Submission>,
}

impl JobsFile {
    /// Reads `DIR/slurm/jobs.json` (empty when absent).
    pub fn read(dir: &Path) -> Result<Self> {
        let path = dir.join("slurm").join("jobs.json");
        if !path.is_file() {
            return Ok(Self::default());
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{}: unreadable", path.display()))
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("serialisable");
        write_atomic(&dir.join("slurm").join("jobs.json"), format!("{text}\n").as_bytes())
    }

    /// For every point index, the Slurm job id of its latest submission (`ARRAYJOB_INDEX`).
    pub fn latest_task_ids(&self) -> BTreeMap<usize, (String, String)> {
        let mut out = BTreeMap::new();
        for s in &self.submissions {
            for &i in &s.points {
                let job = if s.matched.contains(&i) { s.matched_job.clone() } else { s.array_job.clone() };
                if let Some(job) = job {
                    out.insert(i, (job.clone(), format!("{job}_{i}")));
                }
            }
        }
        out
    }
}

/// Whether `t` is a Slurm time limit: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`,
/// `UNLIMITED` or `INFINITE`.
fn is_time(t: &str) -> bool {
    if t == "UNLIMITED" || t == "INFINITE" {
        return true;
    }
    let digits = |p: &str| !p.is_empty() && p.len() <= 9 && p.chars().all(|c| c.is_ascii_digit());
    let rest = match t.split_once('-') {
        Some((days, rest)) if digits(days) => rest,
        Some(_) => return false,
        None => t,
    };
    let parts: Vec<&str> = rest.split(':').collect();
    parts.len() <= 3 && parts.iter().all(|p| digits(p))
}

/// The problems of Slurm resource values, as `(field, value, why)`; `field` is the `[slurm]`
/// key (`--field` with `-` for `_` on the command line). A value is refused unless it has the
/// form Slurm takes: none can break or extend the `#SBATCH` lines (no line breaks or other
/// control characters), and counts are at least 1.
pub fn check_resources(s: &SlurmDefaults) -> Vec<(&'static str, String, String)> {
    use super::{cut_quote, MAX_QUOTE};
    let mut out = Vec::new();
    let quoted = |v: &str| format!("{:?}", cut_quote(v, MAX_QUOTE));
    let control = |v: &str| v.chars().any(char::is_control);
    for (field, value) in [("partition", &s.partition), ("account", &s.account)] {
        if let Some(v) = value {
            if v.is_empty() || !v.chars().all(|c| c.is_ascii_alphanumeric() || "_-.,".contains(c)) {
                out.push((field, quoted(v), "expected a Slurm name (letters, digits, _ - . ,)".into()));
            }
        }
    }
    if let Some(m) = &s.mem {
        // Digits, then an optional unit K, M, G or T (optionally followed by B).
        let size = m.strip_suffix(['B', 'b']).filter(|s| s.ends_with(char::is_alphabetic)).unwrap_or(m);
        let num = size.strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']).unwrap_or(size);
        if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit()) {
            out.push(("mem", quoted(m), "expected a size such as 16G, 4000M or 4000 (MB)".into()));
        }
    }
    if let Some(t) = &s.time {
        if !is_time(t) {
            out.push((
                "time",
                quoted(t),
                "expected a time limit: minutes, H:M:S, D-H, D-H:M:S or UNLIMITED".into(),
            ));
        }
    }
    for (field, value) in [
        ("gpus_per_task", s.gpus_per_task),
        ("cpus_per_task", s.cpus_per_task),
        ("max_parallel", s.max_parallel),
    ] {
        if value == Some(0) {
            out.push((field, "0".into(), "expected at least 1 (leave it out for Slurm's default)".into()));
        }
    }
    for e in &s.extra {
        if !e.starts_with('-') || control(e) || e.trim().len() < 2 {
            out.push((
                "extra",
                quoted(e),
                "expected one sbatch option per entry, e.g. \"--qos=normal\" (no line breaks)".into(),
            ));
        }
    }
    out
}

/// Compresses sorted indices into Slurm's array syntax: `0-3,5,7-8`.
pub fn array_spec(indices: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < indices.len() {
        let start = indices[i];
        let mut end = start;
        while i + 1 < indices.len() && indices[i + 1] == end + 1 {
            i += 1;
            end = indices[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn resource_lines(s: &SlurmDefaults) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |flag: &str, v: Option<String>| {
        if let Some(v) = v {
            out.push(format!("#SBATCH --{flag}={v}"));
        }
    };
    push("partition", s.partition.clone());
    push("account", s.account.clone());
    push("gpus-per-task", s.gpus_per_task.map(|g| g.to_string()));
    push("cpus-per-task", s.cpus_per_task.map(|c| c.to_string()));
    push("mem", s.mem.clone());
    push("time", s.time.clone());
    for e in &s.extra {
        out.push(format!("#SBATCH {e}"));
    }
    out
}

/// The array script for `indices` of the study in `dir` (absolute).
pub fn array_script(name: &str, dir: &Path, exe: &Path, indices: &[usize], s: &SlurmDefaults) -> String {
    let mut spec = array_spec(indices);
    if let Some(k) = s.max_parallel {
        spec.push_str(&format!("%{k}"));
    }
    let logs = dir.join("slurm").join("logs");
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# relief study {name}: one array task per point (task id = point index in points.json)."),
        format!("#SBATCH --job-name=relief-{name}"),
        format!("#SBATCH --array={spec}"),
        format!("#SBATCH --output={}/%A_%a.log", logs.display()),
        format!("#SBATCH --chdir={}", dir.display()),
    ];
    lines.extend(resource_lines(s));
    lines.push("set -euo pipefail".into());
    lines.push(format!(
        "exec {} study run-point {} \"$SLURM_ARRAY_TASK_ID\" --quiet",
        sh_quote(&exe.display().to_string()),
        sh_quote(&dir.display().to_string())
    ));
    lines.join("\n") + "\n"
}

/// The aggregation job's script.
pub fn report_script(name: &str, dir: &Path, exe: &Path, s: &SlurmDefaults) -> String {
    let logs = dir.join("slurm").join("logs");
    let mut lines = vec![
        "#!/bin/bash".to_string(),
        format!("# relief study {name}: aggregate the points into report/ once the arrays have ended."),
        format!("#SBATCH --job-name=relief-{name}-report"),
        format!("#SBATCH --output={}/report-%j.log", logs.display()),
        format!("#SBATCH --chdir={}", dir.display()),
    ];
    let light = SlurmDefaults { gpus_per_task: None, cpus_per_task: Some(1), ..s.clone() };
    lines.extend(resource_lines(&light));
    lines.push("set -euo pipefail".into());
    lines.push(format!(
        "exec {} study report {}",
        sh_quote(&exe.display().to_string()),
        sh_quote(&dir.display().to_string())
    ));
    lines.join("\n") + "\n"
}

/// Runs `sbatch --parsable [extra] SCRIPT` and returns the job id.
fn sbatch(script: &Path, extra: &[String]) -> Result<String> {
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(extra)
        .arg(script)
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow!(
                "sbatch not found on PATH: is Slurm installed on this machine? (`--dry-run` prints the scripts \
                 without submitting)"
            ),
            _ => anyhow!("cannot run sbatch: {e}"),
        })?;
    if !out.status.success() {
        bail!(
            "sbatch {} failed ({}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // `--parsable` prints `jobid` or `jobid;cluster`.
    let id = text.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("sbatch {}: unexpected output {:?}", script.display(), text.trim());
    }
    Ok(id)
}

fn scancel(jobs: &[String]) {
    if !jobs.is_empty() {
        let _ = Command::new("scancel").args(jobs).output();
    }
}

/// Submits the points of `index` (the study in directory `dir`, prepared unless `dry_run`);
/// returns the submission (`None` with `dry_run`, after printing the scripts).
pub fn submit(dir: &Path, index: &PointsFile, opts: &SubmitOptions) -> Result<Option<Submission>> {
    let dir = if dir.is_absolute() { dir.to_path_buf() } else { std::env::current_dir()?.join(dir) };
    let exe = match &opts.exe {
        Some(e) => e.clone(),
        None => std::env::current_exe().context("the relief executable")?,
    };
    let chosen: Vec<usize> = match &opts.only {
        Some(v) => v.clone(),
        None => (0..index.points.len()).collect(),
    };
    if chosen.is_empty() {
        bail!("nothing to submit: every point of {} is done or running", dir.display());
    }
    let (matched, plain): (Vec<usize>, Vec<usize>) =
        chosen.iter().partition(|&&i| index.points[i].depends_on.is_some_and(|j| chosen.contains(&j)));
    let jobs = if opts.dry_run { JobsFile::default() } else { JobsFile::read(&dir)? };
    let number = jobs.submissions.len() + 1;
    let slurm_dir = dir.join("slurm");
    let name = &index.study;
    let mut scripts: Vec<(PathBuf, String)> = Vec::new();
    if !plain.is_empty() {
        scripts.push((
            slurm_dir.join(format!("submit-{number}.sbatch")),
            array_script(name, &dir, &exe, &plain, &opts.slurm),
        ));
    }
    if !matched.is_empty() {
        scripts.push((
            slurm_dir.join(format!("submit-{number}-matched.sbatch")),
            array_script(name, &dir, &exe, &matched, &opts.slurm),
        ));
    }
    let report =
        (slurm_dir.join(format!("report-{number}.sbatch")), report_script(name, &dir, &exe, &opts.slurm));
    if opts.dry_run {
        for (path, text) in scripts.iter().chain(std::iter::once(&report)) {
            println!("# {} (not written: --dry-run)\n{text}", path.display());
        }
        if !matched.is_empty() && !plain.is_empty() {
            println!("# the matched array is submitted with --dependency=afterany:<first array>");
        }
        println!(
            "# the report job is submitted with --dependency=afterany:<arrays> --kill-on-invalid-dep=yes"
        );
        return Ok(None);
    }
    std::fs::create_dir_all(slurm_dir.join("logs"))
        .with_context(|| format!("{}: cannot create", slurm_dir.display()))?;
    for (path, text) in scripts.iter().chain(std::iter::once(&report)) {
        write_atomic(path, text.as_bytes())?;
    }
    let mut submitted: Vec<String> = Vec::new();
    let result = (|| -> Result<Submission> {
        let mut array_job = None;
        let mut matched_job = None;
        let mut k = 0;
        if !plain.is_empty() {
            let id = sbatch(&scripts[k].0, &[])?;
            submitted.push(id.clone());
            array_job = Some(id);
            k += 1;
        }
        if !matched.is_empty() {
            let extra = match &array_job {
                Some(j) => vec![format!("--dependency=afterany:{j}"), "--kill-on-invalid-dep=yes".into()],
                None => vec![],
            };
            let id = sbatch(&scripts[k].0, &extra)?;
            submitted.push(id.clone());
            matched_job = Some(id);
        }
        let deps = submitted.join(":");
        let report_job = sbatch(
            &report.0,
            &[format!("--dependency=afterany:{deps}"), "--kill-on-invalid-dep=yes".into()],
        )?;
        submitted.push(report_job.clone());
        Ok(Submission {
            number,
            submitted: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            array_job,
            matched_job,
            report_job,
            points: chosen.clone(),
            matched: matched.clone(),
        })
    })();
    match result {
        Ok(sub) => {
            let mut jobs = jobs;
            jobs.submissions.push(sub.clone());
            jobs.write(&dir)?;
            Ok(Some(sub))
        }
        Err(e) => {
            scancel(&submitted);
            Err(e.context(if submitted.is_empty() {
                "nothing was submitted".to_string()
            } else {
                format!(
                    "cancelled the jobs already submitted ({}); nothing is left queued",
                    submitted.join(", ")
                )
            }))
        }
    }
}

/// Slurm's view of jobs: `ARRAYJOB_TASK` (or `JOB`) -> state (`PENDING`, `RUNNING`,
/// `COMPLETED`, `FAILED`, `CANCELLED`, ...), from `scontrol -o show job` (which also knows
/// recently ended jobs). `None` when Slurm is not reachable.
pub fn job_states(jobs: &[String]) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for job in jobs {
        let o = Command::new("scontrol").args(["-o", "show", "job", job]).output().ok()?;
        if !o.status.success() {
            // Unknown (purged) job ids are not an error.
            continue;
        }
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let fields: BTreeMap<&str, &str> =
                line.split_whitespace().filter_map(|kv| kv.split_once('=')).collect();
            let Some(state) = fields.get("JobState") else { continue };
            let key = match (fields.get("ArrayJobId"), fields.get("ArrayTaskId")) {
                (Some(a), Some(t)) => {
                    // A pending array shows as one record with `ArrayTaskId=0-5%2`.
                    for idx in expand_tasks(t) {
                        out.insert(format!("{a}_{idx}"), state.to_string());
                    }
                    continue;
                }
                _ => fields.get("JobId").map(|s| s.to_string()).unwrap_or_default(),
            };
            out.insert(key, state.to_string());
        }
    }
    Some(out)
}

/// Expands `0-3,5%2` into the task ids.
fn expand_tasks(spec: &str) -> Vec<String> {
    let spec = spec.split('%').next().unwrap_or("");
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<usize>(), b.parse::<usize>()) {
                    out.extend((a..=b).map(|i| i.to_string()));
                }
            }
            None if !part.is_empty() => out.push(part.to_string()),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_specs_compress_runs() {
        assert_eq!(array_spec(&[0, 1, 2, 3]), "0-3");
        assert_eq!(array_spec(&[0, 2, 3, 5, 7, 8]), "0,2-3,5,7-8");
        assert_eq!(array_spec(&[4]), "4");
        assert_eq!(expand_tasks("0-2,5%2"), vec!["0", "1", "2", "5"]);
    }

    #[test]
    fn scripts_hold_the_resources_and_the_run_point_call() {
        let s = SlurmDefaults {
            partition: Some("gpu".into()),
            gpus_per_task: Some(1),
            max_parallel: Some(2),
            ..Default::default()
        };
        let text = array_script("st", Path::new("/s/d"), Path::new("/bin/relief"), &[0, 1, 2], &s);
        assert!(text.contains("#SBATCH --array=0-2%2\n"), "{text}");
        assert!(text.contains("#SBATCH --partition=gpu\n") && text.contains("#SBATCH --gpus-per-task=1\n"));
        assert!(text.contains("#SBATCH --output=/s/d/slurm/logs/%A_%a.log\n"));
        assert!(text.ends_with("exec /bin/relief study run-point /s/d \"$SLURM_ARRAY_TASK_ID\" --quiet\n"));
        let r = report_script("st", Path::new("/s/d"), Path::new("/bin/relief"), &s);
        assert!(!r.contains("gpus-per-task") && r.contains("study report /s/d"), "{r}");
        assert_eq!(sh_quote("a b"), "'a b'");
    }

    #[test]
    fn resources_are_checked_for_their_slurm_form() {
        for t in ["30", "30:00", "12:00:00", "2-0", "2-12:00", "1-00:00:00", "UNLIMITED"] {
            assert!(is_time(t), "{t}");
        }
        for t in ["", "1h", "1:2:3:4", "-1", "x-1", "1-", "12:00\n#SBATCH --x"] {
            assert!(!is_time(t), "{t}");
        }
        let ok = SlurmDefaults {
            partition: Some("gpu".into()),
            mem: Some("16G".into()),
            time: Some("1-00:00:00".into()),
            extra: vec!["--qos=normal".into()],
            ..Default::default()
        };
        assert!(check_resources(&ok).is_empty());
        for mem in ["4000", "16G", "16GB", "512m"] {
            assert!(
                check_resources(&SlurmDefaults { mem: Some(mem.into()), ..Default::default() }).is_empty()
            );
        }
        for mem in ["", "G", "16 G", "16GG", "1.5G", "16B"] {
            assert!(
                !check_resources(&SlurmDefaults { mem: Some(mem.into()), ..Default::default() }).is_empty()
            );
        }
        let bad = SlurmDefaults {
            partition: Some("gpu\n#SBATCH --evil".into()),
            mem: Some("lots".into()),
            time: Some("soon".into()),
            max_parallel: Some(0),
            extra: vec!["qos=normal".into()],
            ..Default::default()
        };
        let fields: Vec<&str> = check_resources(&bad).iter().map(|p| p.0).collect();
        assert_eq!(fields, ["partition", "mem", "time", "max_parallel", "extra"]);
    }
}
