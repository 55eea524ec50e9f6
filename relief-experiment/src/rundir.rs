//! The run directory: everything one experiment writes, and what `--resume` reads back.
//!
//! ```text
//! RUN_DIR/
//!   config.resolved.toml   the whole config, defaults filled in (written before any work)
//!   relief.log             the log (tracing), appended by every session
//!   run.lock               held (flock) while a process works in the directory; holds the pid
//!                          of the process that last took it
//!   init.safetensors       the initial weights (rewinding)
//!   state.safetensors      the training phase in progress: weights, masks, optimizer state,
//!                          best weights so far, epochs done (rewritten after every epoch)
//!   iter-000.safetensors   the trained dense model (iteration 0), then one checkpoint per
//!   iter-001.safetensors   completed prune-retrain iteration: weights, masks, metrics
//!   metrics.csv, metrics.json, summary.txt
//!   plots/accuracy.{svg,png}, plots/layers.{svg,png}
//! ```
//!
//! Starting or continuing a run takes the lock first ([`RunDir::acquire`]: create the directory,
//! create and `flock` `run.lock`, write the pid into it) and only then looks at or writes the
//! config, so two processes starting on the same directory never see each other's half-made
//! directory: the second is told the directory is in use by the first (with its pid) and does
//! not wait. A directory holding nothing but `run.lock` and temporary files (`*.tmp`), as a
//! process killed while creating it leaves, is taken as new.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::checkpoint::write_atomic;
use crate::config::Config;

/// A run directory.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    _lock: Option<File>,
}

/// The resolved config's file name.
pub const CONFIG_FILE: &str = "config.resolved.toml";

/// A spec model's copy of its spec, as the run started (`model = "*.toml"` runs only).
pub const MODEL_SPEC_FILE: &str = "model.toml";

/// The lock file's name.
pub const LOCK_FILE: &str = "run.lock";

impl RunDir {
    /// `runs/<local time>-<name>`, unique (a numeric suffix is added if needed).
    pub fn fresh_path(name: &str) -> PathBuf {
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' })
            .collect();
        let base = PathBuf::from("runs").join(format!("{stamp}-{clean}"));
        let mut path = base.clone();
        let mut n = 2;
        while path.exists() {
            path = PathBuf::from(format!("{}-{n}", base.display()));
            n += 1;
        }
        path
    }

    /// Whether `path` holds a relief run (a resolved config).
    pub fn is_run(path: &Path) -> bool {
        path.join(CONFIG_FILE).is_file()
    }

    /// Whether `name` is left by a process that was creating the directory (the lock, or a
    /// temporary file of an atomic write).
    fn is_leftover(name: &std::ffi::OsStr) -> bool {
        name == LOCK_FILE || name.to_string_lossy().ends_with(".tmp")
    }

    /// Takes `path` for a run: creates it when it does not exist, refuses an existing directory
    /// that is neither a run directory nor the leftover of one being created (only `run.lock`
    /// and `*.tmp`), then locks it (refused when another process holds it) and removes the
    /// temporary files a killed process left. The caller then reads or writes the config.
    pub fn acquire(path: &Path) -> Result<Self> {
        if path.exists() && !path.is_dir() {
            bail!("{}: exists and is not a directory", path.display());
        }
        if path.is_dir() && !Self::is_run(path) {
            let names: Vec<std::ffi::OsString> = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list", path.display()))?
                .flatten()
                .map(|e| e.file_name())
                .collect();
            let foreign: Vec<String> = names
                .iter()
                .filter(|n| !Self::is_leftover(n))
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            // A process creating the run may have renamed its config in place meanwhile (and
            // then written its log): that is a run, not somebody else's directory.
            if !foreign.is_empty() && !names.iter().any(|n| n == CONFIG_FILE) {
                bail!(
                    "{}: exists and is not a relief run directory (no {CONFIG_FILE}; it holds {}); \
                     use another --out",
                    path.display(),
                    foreign.join(", ")
                );
            }
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("{}: cannot create the run directory", path.display()))?;
        let run = Self::lock(path)?;
        run.clean_temp()?;
        Ok(run)
    }

    /// Creates a new run directory at `path` (which must not exist, or hold only what
    /// [`RunDir::acquire`] accepts, and no run) and locks it.
    pub fn create(path: &Path) -> Result<Self> {
        if Self::is_run(path) {
            bail!("{}: already holds a run ({CONFIG_FILE})", path.display());
        }
        Self::acquire(path)
    }

    /// Opens an existing run directory and locks it.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            bail!("{}: no such run directory", path.display());
        }
        if !Self::is_run(path) {
            bail!("{}: not a relief run directory (no {CONFIG_FILE})", path.display());
        }
        Self::lock(path)
    }

    /// The pid recorded in `path/run.lock` when that process is still alive: the process that
    /// (most likely) holds the directory. Reads only; takes no lock.
    pub fn holder(path: &Path) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(path.join(LOCK_FILE)).ok()?.trim().parse().ok()?;
        #[cfg(unix)]
        {
            // SAFETY: signal 0 only checks that the process exists.
            let alive = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
            alive.then_some(pid)
        }
        #[cfg(not(unix))]
        Some(pid)
    }

    /// The "in use" error for `path`, with the holder's pid from `run.lock` (it writes it
    /// right after locking: a moment is allowed for that).
    fn in_use(path: &Path) -> anyhow::Error {
        let read =
            || std::fs::read_to_string(path.join(LOCK_FILE)).ok().and_then(|t| t.trim().parse::<u32>().ok());
        let mut pid = read();
        for _ in 0..20 {
            if pid.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            pid = read();
        }
        let pid = pid.map(|p| format!("pid {p}")).unwrap_or_else(|| "pid not recorded".to_string());
        anyhow!(
            "{}: in use by another relief process ({pid}); wait for it to finish (or stop it), \
             or use another --out",
            path.display()
        )
    }

    #[cfg(unix)]
    fn lock(path: &Path) -> Result<Self> {
        use std::io::Write;
        use std::os::unix::io::AsRawFd;
        let lock_path = path.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("{}: cannot create", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own; released when the process ends.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Self::in_use(path));
            }
            bail!("{}: cannot lock: {err}", lock_path.display());
        }
        // Record who holds it, for the message another process gets.
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("{}: cannot write", lock_path.display()))?;
        Ok(Self { root: path.to_path_buf(), _lock: Some(file) })
    }

    #[cfg(not(unix))]
    fn lock(path: &Path) -> Result<Self> {
        Ok(Self { root: path.to_path_buf(), _lock: None })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `config.resolved.toml`.
    pub fn config_path(&self) -> PathBuf {
        self.root.join(CONFIG_FILE)
    }

    /// `relief.log`.
    pub fn log_path(&self) -> PathBuf {
        self.root.join("relief.log")
    }

    /// `init.safetensors`.
    pub fn init_path(&self) -> PathBuf {
        self.root.join("init.safetensors")
    }

    /// `state.safetensors`.
    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.safetensors")
    }

    /// `iter-NNN.safetensors`.
    pub fn iteration_path(&self, iteration: usize) -> PathBuf {
        self.root.join(format!("iter-{iteration:03}.safetensors"))
    }

    /// `plots/`.
    pub fn plots_dir(&self) -> PathBuf {
        self.root.join("plots")
    }

    /// Writes `config.resolved.toml` (a comment header, then the resolved TOML).
    pub fn write_config(&self, cfg: &Config) -> Result<()> {
        let text = format!(
            "# Resolved configuration of this run (every field, defaults filled in); config hash {}.\n\
             # Written by relief {}. `relief prune --resume {}` continues the run with it.\n\n{}",
            cfg.hash(),
            env!("CARGO_PKG_VERSION"),
            self.root.display(),
            cfg.to_toml()
        );
        write_atomic(&self.config_path(), text.as_bytes())
    }

    /// Writes `model.toml` (a spec model's spec) or removes it (a zoo model).
    pub fn write_model_spec(&self, spec_toml: Option<&str>) -> Result<()> {
        let path = self.root.join(MODEL_SPEC_FILE);
        match spec_toml {
            Some(text) => write_atomic(&path, text.as_bytes()),
            None if path.exists() => {
                std::fs::remove_file(&path).with_context(|| format!("{}: cannot remove", path.display()))
            }
            None => Ok(()),
        }
    }

    /// Reads `model.toml`, if the run has one.
    pub fn read_model_spec(&self) -> Result<Option<String>> {
        let path = self.root.join(MODEL_SPEC_FILE);
        if !path.exists() {
            return Ok(None);
        }
        std::fs::read_to_string(&path).map(Some).with_context(|| format!("{}: cannot read", path.display()))
    }

    /// Reads `config.resolved.toml`.
    pub fn read_config(&self) -> Result<Config> {
        let path = self.config_path();
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
        Config::from_toml(&text, &path.display().to_string())
    }

    /// Iterations `0..=k` whose checkpoints all exist (the longest such prefix).
    pub fn completed(&self) -> Vec<usize> {
        (0..).take_while(|&i| self.iteration_path(i).is_file()).collect()
    }

    /// Whether any work was saved here: an `iter-*.safetensors` (any iteration, not only the
    /// completed prefix) or a `state.safetensors` (a training phase in progress).
    pub fn has_progress(&self) -> bool {
        self.state_path().exists()
            || std::fs::read_dir(&self.root).into_iter().flatten().flatten().any(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.starts_with("iter-") && n.ends_with(".safetensors")
            })
    }

    /// Replaces the config of a run in which nothing was saved yet ([`RunDir::has_progress`]
    /// is false): removes what the previous config left that the pipeline would reuse (its
    /// `init.safetensors`), then writes `cfg`.
    pub fn take_over(&self, cfg: &Config) -> Result<()> {
        if self.has_progress() {
            bail!("{}: holds saved iterations; it cannot be taken over", self.root.display());
        }
        let init = self.init_path();
        if init.exists() {
            std::fs::remove_file(&init).with_context(|| format!("{}: cannot remove", init.display()))?;
        }
        self.write_config(cfg)
    }

    /// Removes temporary files left by a killed process.
    pub fn clean_temp(&self) -> Result<()> {
        for dir in [self.root.clone(), self.plots_dir()] {
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().ends_with(".tmp") {
                    std::fs::remove_file(e.path()).map_err(|err| anyhow!("{}: {err}", e.path().display()))?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_lock_and_list() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let run = RunDir::create(&dir).unwrap();
        run.write_config(&Config::default()).unwrap();
        assert!(RunDir::is_run(&dir));
        assert_eq!(run.read_config().unwrap(), Config::default());
        assert!(RunDir::open(&dir).is_err(), "locked by `run`");
        std::fs::write(run.iteration_path(0), b"x").unwrap();
        std::fs::write(run.iteration_path(1), b"x").unwrap();
        std::fs::write(run.iteration_path(3), b"x").unwrap();
        std::fs::write(dir.join("state.safetensors.123.tmp"), b"x").unwrap();
        assert_eq!(run.completed(), vec![0, 1]);
        run.clean_temp().unwrap();
        assert!(!dir.join("state.safetensors.123.tmp").exists());
        drop(run);
        assert!(RunDir::open(&dir).is_ok());
        assert!(RunDir::create(&dir).is_err(), "non-empty");
        assert!(RunDir::open(&tmp.path().join("nope")).is_err());
    }

    #[test]
    fn a_locked_directory_names_the_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let run = RunDir::acquire(&dir).unwrap();
        let pid = std::process::id();
        assert_eq!(std::fs::read_to_string(dir.join(LOCK_FILE)).unwrap().trim(), pid.to_string());
        assert_eq!(RunDir::holder(&dir), Some(pid));
        // flock conflicts between two open files even in one process.
        let msg = format!("{:#}", RunDir::acquire(&dir).unwrap_err());
        assert!(msg.contains(&format!("in use by another relief process (pid {pid})")), "{msg}");
        assert!(!msg.contains("not a relief run directory"), "{msg}");
        drop(run);
        RunDir::acquire(&dir).unwrap();
    }

    #[test]
    fn leftovers_of_a_killed_start_are_accepted_and_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join(LOCK_FILE), b"999999\n").unwrap();
        std::fs::write(dir.join("config.resolved.toml.4242.tmp"), b"half a con").unwrap();
        let run = RunDir::acquire(&dir).unwrap();
        assert!(!dir.join("config.resolved.toml.4242.tmp").exists());
        run.write_config(&Config::default()).unwrap();
        assert!(RunDir::is_run(&dir));
        drop(run);
        // Anything else makes it somebody else's directory.
        let other = tmp.path().join("o");
        std::fs::create_dir(&other).unwrap();
        std::fs::write(other.join("notes.txt"), b"mine").unwrap();
        let msg = format!("{:#}", RunDir::acquire(&other).unwrap_err());
        assert!(msg.contains("not a relief run directory") && msg.contains("notes.txt"), "{msg}");
        assert!(!other.join(LOCK_FILE).exists(), "nothing written into a foreign directory");
        std::fs::write(tmp.path().join("f"), b"").unwrap();
        assert!(RunDir::acquire(&tmp.path().join("f")).is_err());
    }

    #[test]
    fn take_over_only_without_progress() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("r");
        let run = RunDir::acquire(&dir).unwrap();
        run.write_config(&Config::default()).unwrap();
        std::fs::write(run.init_path(), b"old init").unwrap();
        assert!(!run.has_progress());
        let mut other = Config::default();
        other.seed += 1;
        run.take_over(&other).unwrap();
        assert_eq!(run.read_config().unwrap(), other);
        assert!(!run.init_path().exists(), "the previous config's init is not reused");
        std::fs::write(run.iteration_path(2), b"x").unwrap();
        assert!(run.has_progress(), "any iteration file counts");
        assert!(run.take_over(&Config::default()).is_err());
        std::fs::remove_file(run.iteration_path(2)).unwrap();
        std::fs::write(run.state_path(), b"x").unwrap();
        assert!(run.has_progress());
    }
}
