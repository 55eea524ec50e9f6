//! `relief study report`: aggregates a study's points over seeds.
//!
//! Points of one `group` differ only in their seed. Per group and per iteration, over the
//! points that have reached that iteration, it computes the mean, the sample standard deviation
//! (n − 1 denominator; undefined, shown as `–` and written as `null`/empty, for n = 1) and n of
//! the test accuracy before retraining (`acc_pruned`) and after it (`acc_retrained`), the
//! compression rate, the remaining parameters (%), the FLOPs pruned (%) and the units alive per
//! layer ([`IterationStats`]).
//!
//! The summary ([`GroupReport`]) is paper-style, one row per group, over the group's *complete*
//! points (those whose metrics reach their config's `prune.iterations`): dense accuracy
//! (iteration 0, after training), final accuracy (last iteration, after retraining), the delta
//! final − dense (computed per seed, then aggregated), remaining %, compression rate and FLOPs
//! pruned % at the last iteration. Points without metrics are listed as missing, points that
//! have not reached their last iteration as incomplete; neither is an error. Each says where
//! the point stands ([`super::state`]): a failed point with its error and the log of its last
//! attempt (both from `status/<id>.json`), a running or interrupted one as such; a status file
//! that cannot be read is named in the point's reason and in [`StudyReport::warnings`].
//!
//! Files written into the report directory (default `STUDY_DIR/report`), atomically:
//! `summary.md`, `summary.csv`, `summary.json` (everything, numbers as numbers, per-iteration
//! aggregates included), `iterations.csv`, `accuracy.svg` (unless plots are off) and
//! `report.html` (self-contained).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::points::{status_path, PointEntry, PointsFile};
use super::state::{point_state, PointState};
use crate::checkpoint::write_atomic;
use crate::metrics::IterationMetrics;
use crate::report::RunSummary;
use crate::rundir::RunDir;

/// The report directory's name inside the study directory (the default output).
pub const REPORT_DIR: &str = "report";

/// Mean, sample standard deviation and count of some values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Stat {
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 denominator); `None` for n = 1.
    pub std: Option<f64>,
    /// Number of values.
    pub n: usize,
}

impl Stat {
    /// The statistics of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std =
            (n > 1).then(|| (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt());
        Some(Self { mean, std, n })
    }

    /// `92.00 ± 2.00`, or `92.00 ± –` when the deviation is undefined.
    pub fn format(&self, decimals: usize) -> String {
        let std = self.std.map(|s| format!("{s:.decimals$}")).unwrap_or_else(|| "–".into());
        format!("{:.decimals$} ± {std}", self.mean)
    }

    /// Like [`Stat::format`] with the mean's sign always shown (`+1.00 ± 0.50`).
    pub fn format_signed(&self, decimals: usize) -> String {
        let std = self.std.map(|s| format!("{s:.decimals$}")).unwrap_or_else(|| "–".into());
        format!("{:+.decimals$} ± {std}", self.mean)
    }
}

/// `mean ± std` of an optional statistic, `–` when there is none.
pub fn format_stat(stat: &Option<Stat>, decimals: usize) -> String {
    stat.map(|s| s.format(decimals)).unwrap_or_else(|| "–".into())
}

/// Units alive in one layer, over the points of one iteration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LayerUnits {
    /// Module path, e.g. `classifier.0`.
    pub name: String,
    /// Output units of the dense layer.
    pub units_total: i64,
    /// Units with at least one unmasked weight.
    pub units_alive: Stat,
}

/// One iteration of one group, aggregated over the points that reached it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IterationStats {
    /// 0 = the dense trained model.
    pub iteration: usize,
    /// Points aggregated.
    pub n: usize,
    /// Their seeds.
    pub seeds: Vec<u64>,
    /// Test accuracy (%) right after pruning, before retraining.
    pub acc_pruned: Stat,
    /// Test accuracy (%) after retraining.
    pub acc_retrained: Stat,
    /// Compression rate (dense / remaining parameters).
    pub compression: Stat,
    /// Remaining parameters (%).
    pub remaining_percent: Stat,
    /// FLOPs pruned (%).
    pub flops_pruned_percent: Stat,
    /// Units alive per layer, graph order.
    pub layers: Vec<LayerUnits>,
}

/// One group of points (same config but the seed): its summary row and its iterations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupReport {
    /// The group id, e.g. `model=lenet5,method=nnrelief`.
    pub group: String,
    /// The group's varied values (dotted key -> value; strings without their quotes).
    pub values: BTreeMap<String, String>,
    /// Every point of the group, in run order.
    pub points: Vec<String>,
    /// The complete points (their metrics reach the last iteration), in run order.
    pub complete: Vec<String>,
    /// Seeds of the complete points.
    pub seeds: Vec<u64>,
    /// `prune.iterations` of the group's configs (`None` when no point has started).
    pub iterations: Option<usize>,
    /// Complete points: the n of the summary row.
    pub n: usize,
    /// Test accuracy (%) of the dense model (iteration 0, after training).
    pub dense_acc: Option<Stat>,
    /// Test accuracy (%) after the last iteration's retraining.
    pub final_acc: Option<Stat>,
    /// Final − dense accuracy (percentage points), per seed, aggregated.
    pub delta: Option<Stat>,
    /// Remaining parameters (%) at the last iteration.
    pub remaining_percent: Option<Stat>,
    /// Compression rate at the last iteration.
    pub compression: Option<Stat>,
    /// FLOPs pruned (%) at the last iteration.
    pub flops_pruned_percent: Option<Stat>,
    /// Every iteration any point of the group reached, aggregated over those points.
    pub per_iteration: Vec<IterationStats>,
}

/// A point that is missing from the aggregates, or only partly in them.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointIssue {
    /// The point id.
    pub id: String,
    /// Its group.
    pub group: String,
    /// Its run directory, relative to the study directory.
    pub run_dir: PathBuf,
    /// The last iteration in its metrics (`None`: no metrics).
    pub iterations_done: Option<usize>,
    /// The iterations its config asks for (`None`: not started).
    pub iterations: Option<usize>,
    /// Why, in words (a failed point: its error's first line and its log).
    pub reason: String,
    /// Where the point stands: `pending`, `running`, `failed`, `interrupted`, `unknown` (its
    /// status file does not read) or `done`.
    pub state: String,
    /// The error of a failed point's last attempt (from its status file), or why its status
    /// file does not read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The log of the point's last attempt, relative to the study directory (when it ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<PathBuf>,
}

/// The aggregated study: what [`report`] computes and writes.
#[derive(Debug, Clone, Serialize)]
pub struct StudyReport {
    /// The study's name.
    pub study: String,
    /// Number of points in `points.json`.
    pub points_total: usize,
    /// The dotted keys that distinguish groups (the seed excluded), sorted.
    pub varied_keys: Vec<String>,
    /// One entry per group, in run order of their first points.
    pub groups: Vec<GroupReport>,
    /// Points with no metrics yet (not started, or no iteration finished).
    pub missing: Vec<PointIssue>,
    /// Points whose metrics stop before their last iteration.
    pub incomplete: Vec<PointIssue>,
    /// Problems with the study directory that do not stop the report (a status file that
    /// cannot be read), each naming its file.
    pub warnings: Vec<String>,
    /// The summary as a Markdown table (with notes), as written to `summary.md`.
    #[serde(skip)]
    pub summary_markdown: String,
    /// The report directory.
    #[serde(skip)]
    pub out: PathBuf,
    /// Files written, in writing order.
    #[serde(skip)]
    pub files: Vec<PathBuf>,
}

impl StudyReport {
    /// Column headers of the varied values: the last component of each dotted key, or the whole
    /// key where two keys share a last component.
    pub fn value_headers(&self) -> Vec<String> {
        let short = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
        self.varied_keys
            .iter()
            .map(|k| {
                let s = short(k);
                if self.varied_keys.iter().filter(|o| short(o) == s).count() > 1 {
                    k.clone()
                } else {
                    s
                }
            })
            .collect()
    }

    /// The summary table: header and one row of text cells per group.
    pub fn summary_rows(&self) -> (Vec<String>, Vec<Vec<String>>) {
        let mut header = vec!["group".to_string()];
        header.extend(self.value_headers());
        header.extend(
            [
                "n",
                "iters",
                "dense acc %",
                "final acc %",
                "delta (pp)",
                "remaining %",
                "CR (x)",
                "FLOPs pruned %",
            ]
            .map(String::from),
        );
        let rows = self
            .groups
            .iter()
            .map(|g| {
                let mut row = vec![g.group.clone()];
                row.extend(self.varied_keys.iter().map(|k| g.values.get(k).cloned().unwrap_or_default()));
                row.push(g.n.to_string());
                row.push(g.iterations.map(|i| i.to_string()).unwrap_or_else(|| "–".into()));
                row.push(format_stat(&g.dense_acc, 2));
                row.push(format_stat(&g.final_acc, 2));
                row.push(g.delta.map(|s| s.format_signed(2)).unwrap_or_else(|| "–".into()));
                row.push(format_stat(&g.remaining_percent, 2));
                row.push(format_stat(&g.compression, 2));
                row.push(format_stat(&g.flops_pruned_percent, 2));
                row
            })
            .collect();
        (header, rows)
    }
}

/// The value of a varied key as display text: TOML strings lose their quotes.
fn display_value(text: &str) -> String {
    match toml::from_str::<toml::Table>(&format!("v = {text}")) {
        Ok(t) => match t.get("v") {
            Some(toml::Value::String(s)) => s.clone(),
            _ => text.to_string(),
        },
        Err(_) => text.to_string(),
    }
}

/// A point with its metrics loaded.
struct Loaded<'a> {
    entry: &'a PointEntry,
    iterations: usize,
    rows: Vec<IterationMetrics>,
}

impl Loaded<'_> {
    fn row(&self, iteration: usize) -> Option<&IterationMetrics> {
        self.rows.iter().find(|r| r.iteration == iteration)
    }

    fn complete(&self) -> bool {
        self.row(0).is_some() && self.row(self.iterations).is_some()
    }
}

fn stat_of<'a>(rows: &[&'a IterationMetrics], f: impl Fn(&'a IterationMetrics) -> f64) -> Stat {
    let values: Vec<f64> = rows.iter().map(|r| f(r)).collect();
    Stat::of(&values).unwrap_or(Stat { mean: f64::NAN, std: None, n: 0 })
}

fn iteration_stats(points: &[&Loaded<'_>]) -> Vec<IterationStats> {
    let iterations: BTreeSet<usize> =
        points.iter().flat_map(|p| p.rows.iter().map(|r| r.iteration)).collect();
    iterations
        .into_iter()
        .map(|it| {
            let (seeds, rows): (Vec<u64>, Vec<&IterationMetrics>) =
                points.iter().filter_map(|p| Some((p.entry.seed, p.row(it)?))).unzip();
            let mut names: Vec<(String, i64)> = Vec::new();
            for r in &rows {
                for l in &r.layers {
                    if !names.iter().any(|(n, _)| *n == l.name) {
                        names.push((l.name.clone(), l.units_total));
                    }
                }
            }
            let layers = names
                .into_iter()
                .filter_map(|(name, units_total)| {
                    let alive: Vec<f64> = rows
                        .iter()
                        .filter_map(|r| r.layers.iter().find(|l| l.name == name))
                        .map(|l| l.units_alive as f64)
                        .collect();
                    Some(LayerUnits { name, units_total, units_alive: Stat::of(&alive)? })
                })
                .collect();
            IterationStats {
                iteration: it,
                n: rows.len(),
                seeds,
                acc_pruned: stat_of(&rows, |r| r.acc_pruned),
                acc_retrained: stat_of(&rows, |r| r.acc_retrained),
                compression: stat_of(&rows, |r| r.compression),
                remaining_percent: stat_of(&rows, |r| r.remaining_percent),
                flops_pruned_percent: stat_of(&rows, |r| r.flops_pruned_percent),
                layers,
            }
        })
        .collect()
}

/// Reads `points.json` and every point's metrics and aggregates them; writes nothing.
pub fn aggregate(study_dir: &Path) -> Result<StudyReport> {
    let index = PointsFile::read(study_dir)?;
    let mut loaded: Vec<Loaded<'_>> = Vec::new();
    let mut missing = Vec::new();
    let mut incomplete = Vec::new();
    let mut warnings = Vec::new();
    for entry in &index.points {
        let dir = study_dir.join(&entry.run_dir);
        let info = point_state(study_dir, entry);
        if let Some(e) = &info.status_error {
            warnings.push(format!("point {}: {}", entry.id, super::cut_long_lines(e)));
        }
        let issue = |iterations_done, iterations, reason: &str| {
            let error = match info.state {
                PointState::Unknown => info.status_error.clone(),
                PointState::Failed => Some(
                    info.status
                        .as_ref()
                        .and_then(|s| s.error.clone())
                        .unwrap_or_else(|| "no error recorded (the process was killed)".into()),
                ),
                _ => None,
            }
            .map(|e| super::cut_quote(&e, 4000));
            let log = info.status.as_ref().map(|_| info.log(&entry.id));
            let first = super::cut_quote(error.as_deref().and_then(|e| e.lines().next()).unwrap_or(""), 500);
            let log_text =
                log.as_ref().map(|l| format!("; log {}", study_dir.join(l).display())).unwrap_or_default();
            let reason = match info.state {
                PointState::Failed => format!("failed: {first}; {reason}{log_text}"),
                PointState::Unknown => format!(
                    "state unknown: {} does not read; {reason}",
                    status_path(Path::new(""), &entry.id).display()
                ),
                PointState::Running => format!("running; {reason}{log_text}"),
                // Interrupted as recorded by its status file (without one, the run directory
                // alone says nothing about how its last attempt ended).
                PointState::Interrupted if info.status.is_some() => {
                    format!("interrupted; {reason}{log_text}")
                }
                PointState::Interrupted | PointState::Pending | PointState::Done => reason.to_string(),
            };
            PointIssue {
                id: entry.id.clone(),
                group: entry.group.clone(),
                run_dir: entry.run_dir.clone(),
                iterations_done,
                iterations,
                reason,
                state: info.state.name().to_string(),
                error,
                log,
            }
        };
        if !RunDir::is_run(&dir) {
            missing.push(issue(None, None, "not started (no run directory)"));
            continue;
        }
        if !dir.join("metrics.json").is_file() {
            let path = dir.join(crate::rundir::CONFIG_FILE);
            let text =
                std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
            let config = crate::config::Config::from_toml(&text, &path.display().to_string())?;
            let iterations = Some(config.prune.iterations);
            missing.push(issue(None, iterations, "no iteration finished yet (no metrics.json)"));
            continue;
        }
        let run = RunSummary::load(&dir).with_context(|| format!("study point {}", entry.id))?;
        let point = Loaded { entry, iterations: run.config.prune.iterations, rows: run.rows };
        if point.rows.is_empty() {
            missing.push(issue(
                None,
                Some(point.iterations),
                "no iteration finished yet (empty metrics.json)",
            ));
            continue;
        }
        if !point.complete() {
            let done = point.rows.iter().map(|r| r.iteration).max();
            let reason = match done {
                Some(d) => format!("iteration {d} of {} done", point.iterations),
                None => "no iterations".into(),
            };
            incomplete.push(issue(done, Some(point.iterations), &reason));
        }
        loaded.push(point);
    }

    // Group ids in run order of their first points.
    let mut group_ids: Vec<&str> = Vec::new();
    for p in &index.points {
        if !group_ids.contains(&p.group.as_str()) {
            group_ids.push(&p.group);
        }
    }
    // Keys that vary within a group (the seed) are not group columns.
    let mut within: BTreeSet<&str> = BTreeSet::new();
    let mut all_keys: BTreeSet<&str> = BTreeSet::new();
    for p in &index.points {
        all_keys.extend(p.values.keys().map(String::as_str));
        for q in index.points.iter().filter(|q| q.group == p.group) {
            for k in p.values.keys().chain(q.values.keys()) {
                if p.values.get(k) != q.values.get(k) {
                    within.insert(k);
                }
            }
        }
    }
    // Keys with one value over the whole study (a grid key with a single value) are no columns.
    let constant = |k: &str| {
        let mut vals = index.points.iter().map(|p| p.values.get(k));
        let first = vals.next().flatten();
        vals.all(|v| v == first)
    };
    let varied_keys: Vec<String> = all_keys
        .iter()
        .filter(|k| !within.contains(*k) && **k != "seed" && !constant(k))
        .map(|k| k.to_string())
        .collect();

    let groups = group_ids
        .iter()
        .map(|&gid| {
            let entries: Vec<&PointEntry> = index.points.iter().filter(|p| p.group == gid).collect();
            let values = entries
                .first()
                .map(|e| {
                    varied_keys
                        .iter()
                        .filter_map(|k| Some((k.clone(), display_value(e.values.get(k)?))))
                        .collect()
                })
                .unwrap_or_default();
            let points: Vec<&Loaded<'_>> = loaded.iter().filter(|l| l.entry.group == gid).collect();
            let complete: Vec<&Loaded<'_>> = points.iter().copied().filter(|l| l.complete()).collect();
            let finals: Vec<(&IterationMetrics, &IterationMetrics)> =
                complete.iter().filter_map(|l| Some((l.row(0)?, l.row(l.iterations)?))).collect();
            let over = |f: &dyn Fn(&IterationMetrics, &IterationMetrics) -> f64| -> Option<Stat> {
                Stat::of(&finals.iter().map(|(d, last)| f(d, last)).collect::<Vec<_>>())
            };
            GroupReport {
                group: gid.to_string(),
                values,
                points: entries.iter().map(|e| e.id.clone()).collect(),
                complete: complete.iter().map(|l| l.entry.id.clone()).collect(),
                seeds: complete.iter().map(|l| l.entry.seed).collect(),
                iterations: points.iter().map(|l| l.iterations).max(),
                n: complete.len(),
                dense_acc: over(&|d, _| d.acc_retrained),
                final_acc: over(&|_, l| l.acc_retrained),
                delta: over(&|d, l| l.acc_retrained - d.acc_retrained),
                remaining_percent: over(&|_, l| l.remaining_percent),
                compression: over(&|_, l| l.compression),
                flops_pruned_percent: over(&|_, l| l.flops_pruned_percent),
                per_iteration: iteration_stats(&points),
            }
        })
        .collect();

    let mut report = StudyReport {
        study: index.study.clone(),
        points_total: index.points.len(),
        varied_keys,
        groups,
        missing,
        incomplete,
        warnings,
        summary_markdown: String::new(),
        out: study_dir.join(REPORT_DIR),
        files: Vec::new(),
    };
    report.summary_markdown = markdown(&report);
    Ok(report)
}

/// Escapes a Markdown table cell.
fn md_cell(s: &str) -> String {
    s.replace('\\', "\\\\").replace('|', "\\|").replace('\n', " ")
}

/// `summary.md`: a title, the summary table (columns padded, so it reads in a terminal too), a
/// legend line and the missing/incomplete points.
fn markdown(r: &StudyReport) -> String {
    let (header, rows) = r.summary_rows();
    let header: Vec<String> = header.iter().map(|h| md_cell(h)).collect();
    let rows: Vec<Vec<String>> = rows.iter().map(|row| row.iter().map(|c| md_cell(c)).collect()).collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    // Text columns: the group and the varied values; numbers are right-aligned.
    let text_cols = 1 + r.varied_keys.len();
    let line = |cells: &[String]| -> String {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < text_cols {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        format!("| {} |\n", parts.join(" | "))
    };
    let mut out = format!("# Study `{}`: summary\n\n", r.study.replace('`', "'"));
    out.push_str(&line(&header));
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, &w)| if i < text_cols { "-".repeat(w + 2) } else { format!("{}:", "-".repeat(w + 1)) })
        .collect();
    out.push_str(&format!("|{}|\n", rule.join("|")));
    for row in &rows {
        out.push_str(&line(row));
    }
    out.push_str(
        "\nmean ± sample std (n − 1) over the complete points (seeds) of each group; – = undefined \
         (n = 1) or no data. Accuracy: test set, after retraining; delta = final − dense per seed.\n",
    );
    let complete = r.groups.iter().map(|g| g.n).sum::<usize>();
    let _ = writeln!(
        out,
        "\n{} points: {complete} complete, {} incomplete, {} missing.",
        r.points_total,
        r.incomplete.len(),
        r.missing.len()
    );
    for (title, list) in [("Incomplete", &r.incomplete), ("Missing", &r.missing)] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title} points:\n");
        for p in list {
            let _ = writeln!(out, "- `{}`: {}", p.id.replace('`', "'"), md_cell(&p.reason));
        }
    }
    out
}

/// A CSV cell, quoted when it needs to be (RFC 4180).
pub(crate) fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        String::new()
    }
}

fn stat_cells(s: &Option<Stat>) -> [String; 2] {
    match s {
        Some(s) => [num(s.mean), s.std.map(num).unwrap_or_default()],
        None => [String::new(), String::new()],
    }
}

/// `summary.csv`: one row per group; numbers at full precision, empty cells where undefined.
pub fn summary_csv(r: &StudyReport) -> String {
    let mut header: Vec<String> = vec!["group".into()];
    header.extend(r.varied_keys.iter().cloned());
    header.extend(["n".into(), "iterations".into()]);
    for m in ["dense_acc", "final_acc", "delta", "remaining_percent", "compression", "flops_pruned_percent"] {
        header.push(format!("{m}_mean"));
        header.push(format!("{m}_std"));
    }
    let mut out = header.iter().map(|h| csv_cell(h)).collect::<Vec<_>>().join(",");
    out.push('\n');
    for g in &r.groups {
        let mut cells = vec![g.group.clone()];
        cells.extend(r.varied_keys.iter().map(|k| g.values.get(k).cloned().unwrap_or_default()));
        cells.push(g.n.to_string());
        cells.push(g.iterations.map(|i| i.to_string()).unwrap_or_default());
        for s in [
            &g.dense_acc,
            &g.final_acc,
            &g.delta,
            &g.remaining_percent,
            &g.compression,
            &g.flops_pruned_percent,
        ] {
            cells.extend(stat_cells(s));
        }
        out.push_str(&cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
        out.push('\n');
    }
    out
}

/// `iterations.csv`: one row per group and iteration, with the mean and std of each metric, the
/// number of points aggregated (`n`, the same for every metric of a row) and, per layer (union
/// of the layer names of all groups, empty where a group's model lacks it), the units alive.
pub fn iterations_csv(r: &StudyReport) -> String {
    let mut layer_names: Vec<String> = Vec::new();
    for g in &r.groups {
        for it in &g.per_iteration {
            for l in &it.layers {
                if !layer_names.contains(&l.name) {
                    layer_names.push(l.name.clone());
                }
            }
        }
    }
    let mut header: Vec<String> = vec!["group".into(), "iteration".into(), "n".into()];
    for m in ["acc_pruned", "acc_retrained", "compression", "remaining_percent", "flops_pruned_percent"] {
        header.push(format!("{m}_mean"));
        header.push(format!("{m}_std"));
    }
    for l in &layer_names {
        header.push(format!("units.{l}_mean"));
        header.push(format!("units.{l}_std"));
    }
    let mut out = header.iter().map(|h| csv_cell(h)).collect::<Vec<_>>().join(",");
    out.push('\n');
    for g in &r.groups {
        for it in &g.per_iteration {
            let mut cells = vec![g.group.clone(), it.iteration.to_string(), it.n.to_string()];
            for s in [
                it.acc_pruned,
                it.acc_retrained,
                it.compression,
                it.remaining_percent,
                it.flops_pruned_percent,
            ] {
                cells.extend(stat_cells(&Some(s)));
            }
            for name in &layer_names {
                let s = it.layers.iter().find(|l| &l.name == name).map(|l| l.units_alive);
                cells.extend(stat_cells(&s));
            }
            out.push_str(&cells.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
    }
    out
}

/// `summary.json`: the whole [`StudyReport`] (numbers as numbers, `null` where undefined).
pub fn summary_json(r: &StudyReport) -> String {
    let mut text = serde_json::to_string_pretty(r).expect("a study report serialises");
    text.push('\n');
    text
}

/// Aggregates the study in `study_dir` and writes the report files into `out` (default
/// `STUDY_DIR/report`): `summary.md`, `summary.csv`, `summary.json`, `iterations.csv`,
/// `accuracy.svg` (only when `plots`) and `report.html`. Prints nothing; the returned report
/// holds the Markdown summary and the files written.
pub fn report(study_dir: &Path, out: Option<&Path>, plots: bool) -> Result<StudyReport> {
    let mut r = aggregate(study_dir)?;
    r.out = out.map(Path::to_path_buf).unwrap_or_else(|| study_dir.join(REPORT_DIR));
    std::fs::create_dir_all(&r.out).with_context(|| format!("{}: cannot create", r.out.display()))?;
    let mut files = Vec::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = r.out.join(name);
        write_atomic(&path, bytes).with_context(|| format!("{}: cannot write", path.display()))?;
        files.push(path);
        Ok(())
    };
    put("summary.md", r.summary_markdown.as_bytes())?;
    put("summary.csv", summary_csv(&r).as_bytes())?;
    put("summary.json", summary_json(&r).as_bytes())?;
    put("iterations.csv", iterations_csv(&r).as_bytes())?;
    let svg = if plots { super::band_plot::accuracy_svg(&r)? } else { None };
    if let Some(svg) = &svg {
        put("accuracy.svg", svg.as_bytes())?;
    }
    put("report.html", super::html::render(&r, svg.as_deref(), plots).as_bytes())?;
    r.files = files;
    Ok(r)
}

/// [`report`], then prints the summary table and the files written (what `relief report
/// STUDY_DIR` and `relief study report` do).
pub fn run(study_dir: &Path, out: Option<&Path>, plots: bool) -> Result<StudyReport> {
    let r = report(study_dir, out, plots)?;
    for w in &r.warnings {
        eprintln!("relief: warning: {w}");
    }
    print!("{}", r.summary_markdown);
    println!();
    for f in &r.files {
        println!("wrote {}", f.display());
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_use_the_sample_deviation() {
        let s = Stat::of(&[90.0, 92.0, 94.0]).unwrap();
        assert_eq!((s.mean, s.std, s.n), (92.0, Some(2.0), 3));
        assert_eq!(s.format(2), "92.00 ± 2.00");
        let one = Stat::of(&[1.5]).unwrap();
        assert_eq!((one.std, one.format(1)), (None, "1.5 ± –".to_string()));
        assert_eq!(Stat::of(&[-1.0, 0.0]).unwrap().format_signed(1), "-0.5 ± 0.7");
        assert!(Stat::of(&[]).is_none());
    }

    #[test]
    fn cells_and_values() {
        assert_eq!(csv_cell("model=a,method=b"), "\"model=a,method=b\"");
        assert_eq!(csv_cell("say \"x\""), "\"say \"\"x\"\"\"");
        assert_eq!(csv_cell("plain"), "plain");
        assert_eq!(md_cell("a|b"), "a\\|b");
        assert_eq!(display_value("\"lenet5\""), "lenet5");
        assert_eq!(display_value("0.95"), "0.95");
        assert_eq!(display_value("not toml ["), "not toml [");
    }
}
