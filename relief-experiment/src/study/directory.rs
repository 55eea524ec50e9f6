//! Creating (or reopening) a study directory: `study.resolved.toml` and `points.json` are
//! written before any point runs; a directory made by an earlier version of the same study is
//! reused when every point it already has keeps its config (new points may be added), and
//! refused otherwise, naming the points whose config changed.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::points::{PointsFile, POINTS_FILE, STUDY_FILE};
use super::spec::Study;
use crate::checkpoint::write_atomic;

/// The default study directory: `studies/<name>`.
pub fn default_dir(name: &str) -> PathBuf {
    PathBuf::from("studies").join(name)
}

/// Whether `dir` holds a study (`points.json`).
pub fn is_study(dir: &Path) -> bool {
    dir.join(POINTS_FILE).is_file()
}

/// Checks, without writing anything, that `study` may use `dir`: it does not exist, is
/// empty (or holds only `study.lock`), or holds an earlier version of the same study (every
/// point it has keeps its config). Returns whether the directory already holds the study.
pub fn check(study: &Study, dir: &Path) -> Result<bool> {
    if dir.exists() && !dir.is_dir() {
        bail!("{}: exists and is not a directory", dir.display());
    }
    let existed = is_study(dir);
    if existed {
        let old = PointsFile::read(dir)?;
        let new = study.points_file();
        let changed: Vec<String> = old
            .points
            .iter()
            .filter_map(|o| match new.points.iter().find(|n| n.id == o.id) {
                Some(n) if n.hash == o.hash => None,
                Some(_) => Some(format!("{} (its config changed)", o.id)),
                None => Some(format!("{} (no longer in the study)", o.id)),
            })
            .collect();
        if !changed.is_empty() {
            bail!(
                "{}: holds a study whose points differ from this study file; use another --out, or \
                 restore the study file. Points:\n  {}",
                dir.display(),
                changed.join("\n  ")
            );
        }
    } else if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.any(|e| e.map_or(true, |e| e.file_name() != "study.lock")))
            .unwrap_or(true)
    {
        bail!(
            "{}: exists and is not a relief study directory (no {POINTS_FILE}); nothing was written \
             into it: use a new or empty --out",
            dir.display()
        );
    }
    Ok(existed)
}

/// Writes the study's files into `dir` (creating it), after checking an existing study there
/// ([`check`]). Returns whether the directory already held this study.
pub fn prepare(study: &Study, dir: &Path) -> Result<bool> {
    let existed = check(study, dir)?;
    for sub in ["runs", "logs", "status"] {
        let p = dir.join(sub);
        std::fs::create_dir_all(&p).with_context(|| format!("{}: cannot create", p.display()))?;
    }
    let text = format!(
        "# Resolved study (base config inlined, paths absolute against workdir); written by relief {}.\n\
         # Its points are listed in {POINTS_FILE}; each runs in runs/<point-id>/.\n\n{}",
        env!("CARGO_PKG_VERSION"),
        study.file.to_toml()
    );
    write_atomic(&dir.join(STUDY_FILE), text.as_bytes())?;
    study.points_file().write(dir)?;
    Ok(existed)
}

/// Opens a prepared study directory: its `points.json` and the points re-expanded from its
/// `study.resolved.toml`, which must agree (every point of the index has the config hash the
/// resolved study gives it); errors name the directory, the file and the points.
pub fn open(dir: &Path) -> Result<(Study, PointsFile)> {
    let index = PointsFile::read(dir)?;
    let study = Study::open(dir)?;
    let mut problems = Vec::new();
    for e in &index.points {
        match study.points.iter().find(|p| p.entry.id == e.id) {
            None => problems.push(format!("point {} of {POINTS_FILE} is not in {STUDY_FILE}", e.id)),
            Some(p) if p.entry.hash != e.hash => problems.push(format!(
                "point {} has config hash {} in {POINTS_FILE} but {} from {STUDY_FILE}",
                e.id, e.hash, p.entry.hash
            )),
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(super::spec::MAX_LISTED);
        if n > problems.len() {
            problems.push(format!("... and {} more", n - problems.len()));
        }
        bail!(
            "{}: the study directory was changed by hand or moved ({POINTS_FILE} and {STUDY_FILE} \
             disagree):\n  {}",
            dir.display(),
            problems.join("\n  ")
        );
    }
    Ok((study, index))
}

/// The study directory's lock (`study.lock`, flock): one local executor at a time.
#[derive(Debug)]
pub struct StudyLock(#[allow(dead_code)] File);

impl StudyLock {
    /// Takes the lock or says which process holds it.
    pub fn take(dir: &Path) -> Result<Self> {
        let path = dir.join("study.lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("{}: cannot create", path.display()))?;
        #[cfg(unix)]
        {
            use std::io::{Read, Seek, Write};
            use std::os::unix::io::AsRawFd;
            // SAFETY: flock on a descriptor we own; released when the process ends.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                bail!(
                    "{}: in use by another `relief study run` (pid {})",
                    dir.display(),
                    pid.trim().parse::<u32>().map(|p| p.to_string()).unwrap_or_else(|_| "unknown".into())
                );
            }
            file.set_len(0)?;
            file.rewind()?;
            write!(file, "{}", std::process::id())?;
            file.flush()?;
        }
        Ok(Self(file))
    }
}
