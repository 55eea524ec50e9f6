//! Studies: sweeps over seeds, alphas, models and methods. A study file (TOML) expands into
//! points, each an ordinary relief config validated up front; points run as ordinary run
//! directories under one study directory, locally ([`local`]) or on Slurm ([`slurm`]), and are
//! aggregated into mean ± std tables over seeds ([`report`]). See `docs/studies.md`.

pub mod band_plot;
pub mod directory;
pub mod html;
pub mod local;
pub mod points;
pub mod report;
pub mod run_point;
pub mod slurm;
pub mod spec;
pub mod state;

pub use relief_core::runtime::message::{cut_long_lines, quote_cut as cut_quote, MAX_LINE as MAX_QUOTE};

/// `err` as one message (causes joined by `: `) with its long lines cut ([`cut_long_lines`]).
pub fn cut_error(err: anyhow::Error) -> anyhow::Error {
    anyhow::anyhow!(cut_long_lines(&format!("{err:#}")))
}
