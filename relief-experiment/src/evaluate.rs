//! Evaluating a saved model: a relief checkpoint (masks applied), a compacted or sparse model
//! from `relief export`, or a safetensors file of PyTorch names; its accounting and its test
//! accuracy. What `relief eval` prints, as a library call.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};
use relief_core::accounting::{account, Account};
use relief_core::compact;
use relief_core::params::{Bound, TensorMap};
use relief_core::{MaskSet, PruneGraph};
use relief_data::{DatasetKind, SplitKind};
use relief_models::Architecture;
use serde::Serialize;
use tch::Device;

use crate::checkpoint::Checkpoint;
use crate::pipeline::{accuracy, load_dataset, options_from_metadata, DataSpec};

/// The counts `relief export --compact` recorded: the dense model's and the compacted one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CompactCounts {
    /// Weight + bias entries of the prunable layers before compaction.
    pub dense_params: i64,
    /// ... and after.
    pub compact_params: i64,
    /// FLOPs per sample before compaction.
    pub dense_flops: i64,
    /// ... and after.
    pub compact_flops: i64,
}

/// A model loaded for evaluation: the graph, its parameters (masks applied) and masks.
pub struct LoadedModel {
    /// The structure (a compacted model's own).
    pub graph: PruneGraph,
    /// Parameters by PyTorch name, on the requested device, masks multiplied in.
    pub params: TensorMap,
    /// The masks (all ones for a compacted model).
    pub masks: MaskSet,
    /// The file's metadata.
    pub checkpoint: Checkpoint,
    /// Read from a compacted (or sparse) model file.
    pub compacted: bool,
    /// For a compacted model: the counts before and after compaction, when recorded.
    pub compaction: Option<CompactCounts>,
    /// Where the parameters live.
    pub device: Device,
}

impl LoadedModel {
    /// Loads `path` onto `device`. A compacted model carries its own architecture (`arch` and
    /// `classes` must then be `None`); otherwise they default to the checkpoint's metadata.
    pub fn load(
        path: &Path,
        arch: Option<Architecture>,
        classes: Option<i64>,
        device: Device,
    ) -> Result<Self> {
        let ck = Checkpoint::read(path)?;
        if ck.get("format") == Some(compact::FORMAT) {
            if arch.is_some() || classes.is_some() {
                bail!(
                    "{}: a compacted model carries its own architecture; drop --model/--num-classes",
                    path.display()
                );
            }
            let (graph, tensors) = compact::load_compact(path)?;
            let params: TensorMap = tensors.into_iter().map(|(k, v)| (k, v.to_device(device))).collect();
            let masks = MaskSet::ones(&graph, device);
            let number = |k: &str| ck.get(k).and_then(|v| v.parse::<i64>().ok());
            let compaction = match (
                number("dense_params"),
                number("compact_params"),
                number("dense_flops"),
                number("compact_flops"),
            ) {
                (Some(dense_params), Some(compact_params), Some(dense_flops), Some(compact_flops)) => {
                    Some(CompactCounts { dense_params, compact_params, dense_flops, compact_flops })
                }
                _ => None,
            };
            return Ok(Self { graph, params, masks, checkpoint: ck, compacted: true, compaction, device });
        }
        let model = ck.model(path, arch, classes, device)?;
        let masks = ck.masks(&model, path)?;
        let params = model.params();
        masks.apply(&params);
        Ok(Self {
            graph: model.graph.clone(),
            params,
            masks,
            checkpoint: ck,
            compacted: false,
            compaction: None,
            device,
        })
    }

    /// Parameters and FLOPs, alive and total.
    pub fn accounting(&self) -> Account {
        account(&self.graph, &self.masks)
    }

    /// Test accuracy (percent) and the number of test examples: on `dataset` in `dir`, by default
    /// the checkpoint's metadata (`dataset`, `data_dir`, else `data/<dataset>`); the first
    /// `test_limit` examples (0 = all), `batch_size` at a time.
    pub fn test_accuracy(
        &self,
        dataset: Option<&str>,
        dir: Option<&Path>,
        test_limit: i64,
        batch_size: i64,
        origin: &Path,
    ) -> Result<Option<(f64, i64)>> {
        let name = dataset.map(String::from).or_else(|| self.checkpoint.get("dataset").map(String::from));
        let Some(name) = name else {
            bail!("{}: no dataset in the metadata; pass --dataset (or --no-data)", origin.display())
        };
        let kind: DatasetKind = name.parse().map_err(|e| anyhow!("--dataset: {e}"))?;
        // The normalisation and class count recorded for this dataset (user datasets,
        // Fashion-MNIST), so that the test set is the one the model saw.
        let recorded =
            self.checkpoint.get("dataset").and_then(|d| d.parse::<DatasetKind>().ok()) == Some(kind);
        let options = if recorded {
            options_from_metadata(|k| self.checkpoint.get(k).map(String::from))
                .map_err(|e| anyhow!("{}: {e}", origin.display()))?
        } else {
            relief_data::UserOptions::default()
        };
        let dir = dir
            .map(Path::to_path_buf)
            .or_else(|| self.checkpoint.get("data_dir").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("data").join(kind.name()));
        let device = self.device;
        let data = load_dataset(&DataSpec {
            kind,
            dir: &dir,
            validation: None,
            seed: 0,
            train_limit: 1,
            test_limit,
            device,
            options,
        })?;
        let bound = Bound::new(&self.graph, &self.params)?;
        Ok(accuracy(&self.graph, &bound, &self.masks, &data, SplitKind::Test, batch_size)?
            .map(|a| (a, data.test.len())))
    }
}
