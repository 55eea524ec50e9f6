//! Per-iteration metrics of a run: one [`IterationMetrics`] row per prune-retrain iteration
//! (iteration 0 = the dense, trained model), written as `metrics.csv` and `metrics.json`.

use std::path::Path;

use anyhow::{Context, Result};
use relief_core::accounting::Account;
use serde::{Deserialize, Serialize};

use crate::checkpoint::write_atomic;

/// One layer's state after an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerMetrics {
    /// Module path, e.g. `classifier.0`.
    pub name: String,
    /// Output units (neurons or filters) with at least one unmasked weight.
    pub units_alive: i64,
    /// Output units of the dense layer.
    pub units_total: i64,
    /// Unmasked weight + bias entries.
    pub params_alive: i64,
    /// Weight + bias entries of the dense layer.
    pub params_total: i64,
}

impl LayerMetrics {
    /// Share of the layer's parameters that remain, in percent.
    pub fn remaining_percent(&self) -> f64 {
        100.0 * self.params_alive as f64 / self.params_total.max(1) as f64
    }
}

/// One row of `metrics.csv` / `metrics.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationMetrics {
    /// 0 = the dense trained model, then one per prune-retrain iteration.
    pub iteration: usize,
    /// Test accuracy (%) right after pruning, before retraining (iteration 0: the dense model).
    pub acc_pruned: f64,
    /// Test accuracy (%) of the weights kept after retraining (iteration 0: after training).
    pub acc_retrained: f64,
    /// Validation accuracy (%) of the kept weights, when there is a validation split.
    pub val_acc: Option<f64>,
    /// Epoch (1-based) whose weights were kept; 0 when the phase had no epochs.
    pub selected_epoch: usize,
    /// Remaining parameters (the authors' count: masked weights and biases).
    pub params_alive: i64,
    /// Parameters of the dense model (same count).
    pub params_total: i64,
    /// Compression rate `params_total / params_alive`.
    pub compression: f64,
    /// Remaining parameters in percent.
    pub remaining_percent: f64,
    /// FLOPs of one forward pass for one sample, masked entries skipped.
    pub flops: i64,
    /// FLOPs of the dense model.
    pub flops_dense: i64,
    /// Share of FLOPs removed, in percent.
    pub flops_pruned_percent: f64,
    /// Per layer, graph order.
    pub layers: Vec<LayerMetrics>,
    /// Wall time of the iteration in seconds (pruning, retraining, evaluation; summed over
    /// resumed sessions).
    pub wall_time_s: f64,
}

impl IterationMetrics {
    /// A row from accuracies and an accounting of the masks.
    pub fn new(
        iteration: usize,
        acc_pruned: f64,
        acc_retrained: f64,
        val_acc: Option<f64>,
        account: &Account,
    ) -> Self {
        Self {
            iteration,
            acc_pruned,
            acc_retrained,
            val_acc,
            selected_epoch: 0,
            params_alive: account.params_alive,
            params_total: account.params_total,
            compression: account.compression(),
            remaining_percent: account.remaining_percent(),
            flops: account.flops_alive,
            flops_dense: account.flops_dense,
            flops_pruned_percent: account.flops_pruned_percent(),
            layers: account
                .layers
                .iter()
                .map(|l| LayerMetrics {
                    name: l.name.clone(),
                    units_alive: l.units_alive,
                    units_total: l.units_total,
                    params_alive: l.params_alive,
                    params_total: l.params_total,
                })
                .collect(),
            wall_time_s: 0.0,
        }
    }

    /// Alive units per layer joined with `-`, e.g. `784-291-88-10` style (`300-100-10`).
    pub fn architecture(&self) -> String {
        self.layers.iter().map(|l| l.units_alive.to_string()).collect::<Vec<_>>().join("-")
    }

    /// The same row with the fields that legitimately differ between two identical runs
    /// (wall time) cleared, for comparisons.
    pub fn without_timing(&self) -> Self {
        Self { wall_time_s: 0.0, ..self.clone() }
    }
}

/// The CSV header for rows of a model with `layers` (one `units.<layer>` column per layer).
fn csv_header(layers: &[LayerMetrics]) -> String {
    let mut cols: Vec<String> = [
        "iteration",
        "acc_pruned",
        "acc_retrained",
        "val_acc",
        "selected_epoch",
        "params_alive",
        "params_total",
        "compression",
        "remaining_percent",
        "flops",
        "flops_dense",
        "flops_pruned_percent",
        "wall_time_s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    cols.extend(layers.iter().map(|l| format!("units.{}", l.name)));
    cols.join(",")
}

/// Renders rows as CSV (numbers with full precision; empty cell for a missing value).
pub fn to_csv(rows: &[IterationMetrics]) -> String {
    let mut out = String::new();
    let Some(first) = rows.first() else { return out };
    out.push_str(&csv_header(&first.layers));
    out.push('\n');
    for r in rows {
        let mut cells = vec![
            r.iteration.to_string(),
            format!("{:.2}", r.acc_pruned),
            format!("{:.2}", r.acc_retrained),
            r.val_acc.map(|v| format!("{v:.2}")).unwrap_or_default(),
            r.selected_epoch.to_string(),
            r.params_alive.to_string(),
            r.params_total.to_string(),
            format!("{:.4}", r.compression),
            format!("{:.4}", r.remaining_percent),
            r.flops.to_string(),
            r.flops_dense.to_string(),
            format!("{:.4}", r.flops_pruned_percent),
            format!("{:.2}", r.wall_time_s),
        ];
        cells.extend(r.layers.iter().map(|l| l.units_alive.to_string()));
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// Writes `metrics.csv` and `metrics.json` into `dir` (atomically).
pub fn write(dir: &Path, rows: &[IterationMetrics]) -> Result<()> {
    write_atomic(&dir.join("metrics.csv"), to_csv(rows).as_bytes())?;
    let json = serde_json::to_string_pretty(rows).expect("metrics serialise");
    write_atomic(&dir.join("metrics.json"), json.as_bytes())
}

/// Reads `metrics.json` of a run directory.
pub fn read(dir: &Path) -> Result<Vec<IterationMetrics>> {
    let path = dir.join("metrics.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a relief metrics file", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> IterationMetrics {
        IterationMetrics {
            iteration: i,
            acc_pruned: 97.0,
            acc_retrained: 98.125,
            val_acc: if i == 0 { None } else { Some(97.5) },
            selected_epoch: 3,
            params_alive: 1000,
            params_total: 4000,
            compression: 4.0,
            remaining_percent: 25.0,
            flops: 2000,
            flops_dense: 8000,
            flops_pruned_percent: 75.0,
            layers: vec![LayerMetrics {
                name: "classifier.0".into(),
                units_alive: 200,
                units_total: 300,
                params_alive: 900,
                params_total: 3000,
            }],
            wall_time_s: 1.5,
        }
    }

    #[test]
    fn csv_has_one_column_per_layer_and_one_row_per_iteration() {
        let csv = to_csv(&[row(0), row(1)]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].ends_with("units.classifier.0"));
        assert_eq!(lines[1].split(',').nth(3), Some(""));
        assert_eq!(lines[2].split(',').nth(3), Some("97.50"));
        assert_eq!(lines[1].split(',').count(), lines[0].split(',').count());
    }

    #[test]
    fn json_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &[row(0), row(1)]).unwrap();
        assert_eq!(read(dir.path()).unwrap(), vec![row(0), row(1)]);
        assert!((row(1).layers[0].remaining_percent() - 30.0).abs() < 1e-9);
        assert_eq!(row(0).architecture(), "200");
    }
}
