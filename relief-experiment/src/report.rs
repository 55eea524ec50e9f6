//! Tables of one or several runs: the per-iteration table of a run, and a comparison in the
//! style of the paper's tables (dense accuracy, pruned accuracy, remaining parameters,
//! compression rate, FLOPs pruned), plus the plots (see [`crate::plots`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use relief_models::Architecture;

use crate::config::{Config, MagnitudeScope, Method};
use crate::metrics::{self, IterationMetrics};
use crate::rundir::RunDir;

/// A finished (or partly finished) run: its config and metrics rows.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The run directory.
    pub dir: PathBuf,
    /// Its resolved config.
    pub config: Config,
    /// One row per completed iteration.
    pub rows: Vec<IterationMetrics>,
}

/// Thousands separators: `266610` -> `266,610`.
pub fn thousands(n: i64) -> String {
    let digits: Vec<char> = n.unsigned_abs().to_string().chars().rev().collect();
    let groups: Vec<String> = digits.chunks(3).map(|c| c.iter().rev().collect()).collect();
    let body = groups.into_iter().rev().collect::<Vec<_>>().join(",");
    if n < 0 {
        format!("-{body}")
    } else {
        body
    }
}

/// A text table: a header row and data rows; `right[i]` right-aligns column `i`.
pub fn render_table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if right.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}", w = widths[i])
                } else {
                    format!("{c:<w$}", w = widths[i])
                }
            })
            .collect();
        format!("  {}", parts.join("  ").trim_end())
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    out.push_str(&format!("  {}\n", "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))));
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

impl RunSummary {
    /// Reads `config.resolved.toml` and `metrics.json` of a run directory.
    pub fn load(dir: &Path) -> Result<Self> {
        if !RunDir::is_run(dir) {
            bail!("{}: not a relief run directory (no config.resolved.toml)", dir.display());
        }
        let path = dir.join(crate::rundir::CONFIG_FILE);
        let text = std::fs::read_to_string(&path)?;
        let config = Config::from_toml(&text, &path.display().to_string())?;
        if !dir.join("metrics.json").is_file() {
            bail!("{}: no metrics.json yet (no iteration finished)", dir.display());
        }
        let rows = metrics::read(dir)?;
        Ok(Self { dir: dir.to_path_buf(), config, rows })
    }

    /// The run's architecture: its `model.toml` copy for a spec model, else the config's zoo name.
    pub fn architecture(&self) -> Option<Architecture> {
        match std::fs::read_to_string(self.dir.join(crate::rundir::MODEL_SPEC_FILE)) {
            Ok(text) => relief_models::ModelSpec::parse(&text).ok().map(Architecture::from),
            Err(_) => Architecture::resolve(&self.config.model, self.config.num_classes).ok(),
        }
    }

    /// The model's name in tables: the zoo name, or a spec model's `name`.
    pub fn model_label(&self) -> String {
        self.architecture().map(|a| a.name()).unwrap_or_else(|| self.config.model.clone())
    }

    /// The run's label (config `name`, else the directory name).
    pub fn name(&self) -> String {
        self.config.name.clone().unwrap_or_else(|| {
            self.dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
        })
    }

    /// `None` when every configured iteration finished, else `incomplete: 2 of 5 iterations`.
    pub fn incomplete(&self) -> Option<String> {
        let done = self.rows.last().map(|r| r.iteration).unwrap_or(0);
        // The planned count of the last session (its log line says `N iteration(s) of ...`; 0 for
        // `relief train`), else the config's.
        let planned = std::fs::read_to_string(self.dir.join("relief.log")).ok().and_then(|log| {
            log.lines().rev().find_map(|l| {
                let head = l.split(" iteration(s) of ").next().filter(|h| h.len() < l.len())?;
                head.rsplit(' ').next()?.parse::<usize>().ok()
            })
        });
        let total = planned.unwrap_or(self.config.prune.iterations);
        (done < total).then(|| format!("incomplete: {done} of {total} iterations"))
    }

    /// `NNrelief (alpha_conv 0.9, alpha_fc 0.95)` or `magnitude (global, keep 0.5)`.
    pub fn method_label(&self) -> String {
        let p = &self.config.prune;
        match p.method {
            Method::Nnrelief => {
                let classes = self.config.num_classes.unwrap_or(10);
                let has_conv = self
                    .architecture()
                    .and_then(|a| a.graph(classes).ok())
                    .map(|g| g.layers.iter().any(|l| l.op.is_conv()))
                    .unwrap_or(true);
                if has_conv {
                    format!("NNrelief (alpha_conv {}, alpha_fc {})", p.alpha_conv, p.alpha_fc)
                } else {
                    format!("NNrelief (alpha_fc {})", p.alpha_fc)
                }
            }
            Method::Magnitude if p.magnitude_match.is_some() => {
                let run = p.magnitude_match.as_ref().expect("checked");
                let name = run.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                format!("magnitude (NNrelief budget of {name})")
            }
            Method::Magnitude => {
                let scope = match p.magnitude_scope {
                    MagnitudeScope::Global => "global",
                    MagnitudeScope::Layer => "per layer",
                };
                format!("magnitude ({scope}, keep {})", p.magnitude_keep)
            }
        }
    }

    /// The per-iteration table.
    pub fn iteration_table(&self) -> String {
        let header = [
            "iter",
            "acc pruned %",
            "acc retrained %",
            "val acc %",
            "epoch",
            "params",
            "remaining %",
            "CR",
            "FLOPs pruned %",
            "units per layer",
            "time s",
        ];
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.iteration.to_string(),
                    format!("{:.2}", r.acc_pruned),
                    format!("{:.2}", r.acc_retrained),
                    r.val_acc.map(|v| format!("{v:.2}")).unwrap_or_else(|| "-".into()),
                    r.selected_epoch.to_string(),
                    thousands(r.params_alive),
                    format!("{:.2}", r.remaining_percent),
                    format!("{:.2}x", r.compression),
                    format!("{:.2}", r.flops_pruned_percent),
                    r.architecture(),
                    format!("{:.1}", r.wall_time_s),
                ]
            })
            .collect();
        let right = [true, true, true, true, true, true, true, true, true, false, true];
        let incomplete = self.incomplete().map(|s| format!(", {s}")).unwrap_or_default();
        format!(
            "{}: {} on {}, {} ({}{incomplete})\n{}",
            self.name(),
            self.model_label(),
            self.config.data.dataset.kind(),
            self.method_label(),
            self.dir.display(),
            render_table(&header, &rows, &right)
        )
    }
}

/// The paper-style comparison: one line per run, its dense model against its last iteration.
pub fn comparison_table(runs: &[RunSummary]) -> String {
    let header = [
        "run",
        "model",
        "dataset",
        "method",
        "iters",
        "acc dense %",
        "acc pruned %",
        "delta",
        "params remaining",
        "CR",
        "FLOPs pruned %",
    ];
    // Two runs of one name are told apart by their directories.
    let label = |run: &RunSummary| {
        let name = run.name();
        if runs.iter().filter(|r| r.name() == name).count() > 1 {
            format!("{name} ({})", run.dir.display())
        } else {
            name
        }
    };
    let rows: Vec<Vec<String>> = runs
        .iter()
        .filter_map(|run| {
            let (first, last) = (run.rows.first()?, run.rows.last()?);
            Some(vec![
                label(run),
                run.model_label(),
                run.config.data.dataset.kind().to_string(),
                run.method_label(),
                run.incomplete().unwrap_or_else(|| last.iteration.to_string()),
                format!("{:.2}", first.acc_retrained),
                format!("{:.2}", last.acc_retrained),
                format!("{:+.2}", last.acc_retrained - first.acc_retrained),
                format!("{} ({:.2} %)", thousands(last.params_alive), last.remaining_percent),
                format!("{:.2}x", last.compression),
                format!("{:.2}", last.flops_pruned_percent),
            ])
        })
        .collect();
    let right = [false, false, false, false, true, true, true, true, true, true, true];
    render_table(&header, &rows, &right)
}

/// Tables of `runs` (each run's iterations, then the comparison), as printed by
/// `relief report` and at the end of a run.
pub fn text(runs: &[RunSummary]) -> String {
    let mut out = String::new();
    for r in runs {
        out.push_str(&r.iteration_table());
        out.push('\n');
    }
    out.push_str("summary (accuracy on the test set; CR = compression rate of weights + biases)\n");
    out.push_str(&comparison_table(runs));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_tables_format() {
        assert_eq!(thousands(266610), "266,610");
        assert_eq!(thousands(100), "100");
        assert_eq!(thousands(-1234), "-1,234");
        let t = render_table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]], &[false, true]);
        assert_eq!(t, "  a    bb\n  -------\n  xyz   1\n");
    }
}
