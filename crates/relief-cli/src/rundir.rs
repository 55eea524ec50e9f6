//! The run directory: everything one experiment writes, and what `--resume` reads back.
//!
//! ```text
//! RUN_DIR/
//!   config.resolved.toml   the whole config, defaults filled in (written before any work)
//!   relief.log             the log (tracing), appended by every session
//!   run.lock               held (flock) while a process works in the directory
//!   init.safetensors       the initial weights (rewinding)
//!   state.safetensors      the training phase in progress: weights, masks, optimizer state,
//!                          best weights so far, epochs done (rewritten after every epoch)
//!   iter-000.safetensors   the trained dense model (iteration 0), then one checkpoint per
//!   iter-001.safetensors   completed prune-retrain iteration: weights, masks, metrics
//!   metrics.csv, metrics.json, summary.txt
//!   plots/accuracy.{svg,png}, plots/layers.{svg,png}
//! ```

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

    /// Creates a new run directory at `path` (which must not exist or be empty) and locks it.
    pub fn create(path: &Path) -> Result<Self> {
        if path.exists() {
            // Empty, or holding only the lock of a process that died before writing its config.
            let empty = std::fs::read_dir(path)
                .with_context(|| format!("{}: cannot list", path.display()))?
                .flatten()
                .all(|e| e.file_name() == "run.lock");
            if !empty {
                bail!("{}: exists and is not a relief run directory (no {CONFIG_FILE})", path.display());
            }
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("{}: cannot create the run directory", path.display()))?;
        Self::lock(path)
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

    #[cfg(unix)]
    fn lock(path: &Path) -> Result<Self> {
        use std::os::unix::io::AsRawFd;
        let lock_path = path.join("run.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("{}: cannot create", lock_path.display()))?;
        // SAFETY: flock on a file descriptor we own; released when the process ends.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            bail!("{}: another relief process is working in this run directory", path.display());
        }
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
}
