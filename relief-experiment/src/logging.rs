//! The run log (`tracing` to a file in the run directory) and the panic hook that points at it.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use tracing_subscriber::EnvFilter;

/// Sends `tracing` events to `path` (appending; `info` level, or `RELIEF_LOG` as an
/// `EnvFilter` directive). A second call in the same process keeps the first log.
pub fn init_file_log(path: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("{}: cannot open the log file", path.display()))?;
    let filter = EnvFilter::try_from_env("RELIEF_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(Mutex::new(file))
        .with_ansi(false)
        .with_target(false)
        .with_env_filter(filter)
        .try_init();
    Ok(())
}

/// On a panic: log it with a backtrace, and tell the user where the log is and that completed
/// checkpoints in `run_dir` are intact and resumable.
pub fn install_panic_hook(log: PathBuf, run_dir: PathBuf) {
    std::panic::set_hook(Box::new(move |info| {
        let backtrace = std::backtrace::Backtrace::force_capture();
        tracing::error!("panic: {info}\n{backtrace}");
        eprintln!(
            "\nrelief: internal error: {info}\n  details and backtrace: {}\n  checkpoints in {} are intact; \
             continue with `relief prune --resume {}`",
            log.display(),
            run_dir.display(),
            run_dir.display()
        );
    }));
}
