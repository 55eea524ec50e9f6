//! The iterative prune-retrain pipeline of one run directory:
//!
//! ```text
//! iteration 0: train from scratch (or load `pretrained`) -> evaluate -> iter-000
//! iteration i: prune (NNrelief, magnitude, or magnitude matched to an NNrelief run's per-layer
//!              counts at its iteration i) -> evaluate -> [rewind to init] -> retrain with
//!              fixed masks, keeping the selected epoch's weights -> evaluate -> iter-i
//! ```
//!
//! Resumable at epoch granularity: after every epoch the training phase in progress is saved
//! to `state.safetensors` (weights, masks, optimizer state, best weights so far, epochs done),
//! after every iteration a checkpoint `iter-NNN.safetensors` with the metrics row. The random
//! state is implicit: every epoch reseeds libtorch (dropout) and the batcher (shuffling,
//! augmentation) from (seed, iteration, epoch), the scheduler's learning rate is a function of
//! the epoch, so a resumed run computes exactly what the uninterrupted run would have (same
//! device and thread count). Every file is written atomically; killing the process loses at
//! most the epoch in progress.

use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use relief_core::accounting::account;
use relief_core::engine::conform_batch;
use relief_core::exec::{forward, ForwardOptions};
use relief_core::magnitude::{magnitude_prune, MagnitudeTarget};
use relief_core::optim::{masked_train_step_with, MaskedOptimizer};
use relief_core::params::{Bound, TensorMap};
use relief_core::train::multistep_lr;
use relief_core::{prune_step, MaskSet, PruneGraph};
use relief_data::{BatchConfig, Dataset, DatasetKind, SplitKind, ValSize};
use relief_models::Model;
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{Checkpoint, BEST_PREFIX, OPT_PREFIX};
use crate::config::{MagnitudeScope, Selection, TrainConfig};
use crate::metrics::{self, IterationMetrics};
use crate::plan::{Plan, PruneMethod};
use crate::progress::{Mode, Progress};
use crate::rundir::RunDir;

/// Mixes `parts` into `seed` (SplitMix64), for per-(iteration, epoch) seeds.
pub fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    let mut z = seed ^ 0x5851_f42d_4c95_7f2d;
    for &p in parts {
        z = z.wrapping_add(0x9e37_79b9_7f4a_7c15).wrapping_add(p);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    z
}

/// Where and how to load a dataset.
#[derive(Debug, Clone)]
pub struct DataSpec<'a> {
    /// The dataset.
    pub kind: DatasetKind,
    /// Its directory.
    pub dir: &'a Path,
    /// Validation carve, if any.
    pub validation: Option<ValSize>,
    /// Seed of the carve.
    pub seed: u64,
    /// Keep the first N training examples (0 = all).
    pub train_limit: i64,
    /// Keep the first N test examples (0 = all).
    pub test_limit: i64,
    /// Device of the tensors.
    pub device: Device,
    /// Normalisation and class count of user datasets (ignored by the built-in kinds).
    pub options: relief_data::UserOptions,
}

/// Loads a dataset, carves the validation split, applies the limits, moves it to the device.
pub fn load_dataset(spec: &DataSpec<'_>) -> Result<Dataset> {
    let mut data = Dataset::load_with(spec.kind, spec.dir, &spec.options)
        .with_context(|| format!("loading {} from {}", spec.kind, spec.dir.display()))?;
    if let Some(v) = spec.validation {
        data = data.with_validation(v, spec.seed as u32).context("data.validation")?;
    }
    let limit = |split: &relief_data::Split, n: i64| -> Result<Option<relief_data::Split>> {
        if n > 0 && n < split.len() {
            Ok(Some(split.select(&Tensor::arange(n, (Kind::Int64, Device::Cpu)))?))
        } else {
            Ok(None)
        }
    };
    if let Some(s) = limit(&data.train, spec.train_limit)? {
        data.train = s;
    }
    if let Some(s) = limit(&data.test, spec.test_limit)? {
        data.test = s;
    }
    Ok(data.to_device(spec.device)?)
}

/// Checkpoint metadata describing a dataset whose shape, classes or normalisation come from the
/// data (Fashion-MNIST, `idx`, `tensors`), so that `relief eval` rebuilds the same test set:
/// `data_shape` (`1x28x28`, or `784` for feature vectors), `data_classes`, and `data_mean` /
/// `data_std` (comma-separated, one per channel) when normalised, and for image folders
/// `data_channels`, `data_image_size` (`HxW`) and `data_class_names` (a JSON list). Empty for
/// the other kinds.
pub fn data_metadata(data: &Dataset) -> Vec<(&'static str, String)> {
    if !data.kind.is_user() && data.normalization.is_none() {
        return Vec::new();
    }
    let join = |v: &[f64]| v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(",");
    let shape = data.example_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let mut out = vec![("data_shape", shape), ("data_classes", data.classes.to_string())];
    if let Some(n) = &data.normalization {
        out.push(("data_mean", join(&n.mean)));
        out.push(("data_std", join(&n.std)));
    }
    if let Some(split) = data.test_carve {
        out.push((
            "data_test_split",
            match split {
                ValSize::Fraction(f) => format!("{f:?}"),
                ValSize::Count(n) => n.to_string(),
            },
        ));
        out.push(("data_split_seed", data.split_seed.to_string()));
    }
    if data.kind == DatasetKind::ImageFolder {
        let [c, h, w] = data.image_shape();
        out.push(("data_channels", c.to_string()));
        out.push(("data_image_size", format!("{h}x{w}")));
        out.push(("data_class_names", serde_json::to_string(&data.class_names).unwrap_or_default()));
    }
    out
}

/// The metadata keys [`data_metadata`] writes (copied into exported files).
pub const DATA_METADATA_KEYS: [&str; 9] = [
    "data_test_split",
    "data_split_seed",
    "data_shape",
    "data_classes",
    "data_mean",
    "data_std",
    "data_channels",
    "data_image_size",
    "data_class_names",
];

/// The [`relief_data::UserOptions`] recorded by [`data_metadata`] in `get`'s metadata; an
/// unreadable value is an error naming the key.
pub fn options_from_metadata(get: impl Fn(&str) -> Option<String>) -> Result<relief_data::UserOptions> {
    let list = |key: &str| -> Result<Option<Vec<f64>>> {
        get(key)
            .map(|v| {
                v.split(',')
                    .map(|x| x.trim().parse::<f64>())
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| anyhow!("metadata `{key}` = {v:?}: {e}"))
            })
            .transpose()
    };
    let num_classes = get("data_classes")
        .map(|v| v.parse::<i64>().map_err(|e| anyhow!("metadata `data_classes` = {v:?}: {e}")))
        .transpose()?;
    let channels = get("data_channels")
        .map(|v| v.parse::<i64>().map_err(|e| anyhow!("metadata `data_channels` = {v:?}: {e}")))
        .transpose()?;
    let image_size = get("data_image_size")
        .map(|v| {
            let hw: Vec<i64> = v.split('x').filter_map(|x| x.trim().parse().ok()).collect();
            match hw[..] {
                [h, w] => Ok([h, w]),
                _ => Err(anyhow!("metadata `data_image_size` = {v:?}: expected HxW")),
            }
        })
        .transpose()?;
    let test_split = get("data_test_split")
        .map(|v| {
            v.parse::<i64>()
                .map(ValSize::Count)
                .or_else(|_| v.parse::<f64>().map(ValSize::Fraction))
                .map_err(|e| anyhow!("metadata `data_test_split` = {v:?}: {e}"))
        })
        .transpose()?;
    let split_seed = get("data_split_seed")
        .map(|v| v.parse::<u32>().map_err(|e| anyhow!("metadata `data_split_seed` = {v:?}: {e}")))
        .transpose()?
        .unwrap_or(0);
    Ok(relief_data::UserOptions {
        mean: list("data_mean")?,
        std: list("data_std")?,
        num_classes,
        channels,
        image_size,
        test_split,
        split_seed,
    })
}

/// Accuracy (%) of the masked model on split `which` (`None` when the split does not exist).
pub fn accuracy(
    graph: &PruneGraph,
    bound: &Bound,
    masks: &MaskSet,
    data: &Dataset,
    which: SplitKind,
    batch_size: i64,
) -> Result<Option<f64>> {
    let Some(split) = data.split(which) else { return Ok(None) };
    if split.is_empty() {
        return Ok(None);
    }
    let batcher = data.batcher(which, BatchConfig::new(batch_size), false)?;
    tch::no_grad(|| {
        let mut correct = Tensor::zeros([], (Kind::Int64, split.labels.device()));
        for batch in batcher.epoch(0)? {
            let (x, y) = batch?;
            let x = conform_batch(graph, &x)?;
            let logits = forward(graph, bound, Some(masks), &x, ForwardOptions::EVAL, None);
            correct += logits.argmax(1, false).eq_tensor(&y).sum(Kind::Int64);
        }
        Ok(Some(100.0 * correct.int64_value(&[]) as f64 / split.len() as f64))
    })
}

/// The best epoch of a training phase so far.
struct Best {
    acc: f64,
    epoch: usize,
    state: Vec<(String, Tensor)>,
}

/// Where a training phase starts.
struct PhaseStart {
    epoch: usize,
    opt: MaskedOptimizer,
    best: Option<Best>,
    acc_before: f64,
    elapsed: f64,
}

/// What a training phase ended with.
struct PhaseEnd {
    selected_epoch: usize,
    elapsed: f64,
}

/// One run of the pipeline over a run directory.
pub struct Pipeline<'a> {
    plan: &'a Plan,
    run: &'a RunDir,
    progress: &'a Progress,
    data: Dataset,
    model: Model,
    params: TensorMap,
    bound: Bound,
    masks: MaskSet,
    rows: Vec<IterationMetrics>,
    init: Option<Checkpoint>,
}

impl<'a> Pipeline<'a> {
    /// Loads the data and builds the model for `plan` in `run`.
    pub fn new(plan: &'a Plan, run: &'a RunDir, progress: &'a Progress) -> Result<Self> {
        let c = &plan.config;
        let t = Instant::now();
        let data = load_dataset(&DataSpec {
            kind: plan.dataset,
            dir: &plan.data_dir,
            validation: plan.validation,
            seed: c.seed,
            train_limit: c.data.train_limit,
            test_limit: c.data.test_limit,
            device: plan.device,
            options: c.user_options(),
        })?;
        if let PruneMethod::Nnrelief(_) = plan.method {
            if plan.last_iteration > 0 && c.prune.batch_size > data.train.len() {
                bail!(
                    "prune.batch_size = {} exceeds the {} training examples (after data.validation and \
                     data.train_limit)",
                    c.prune.batch_size,
                    data.train.len()
                );
            }
        }
        progress.line(&format!(
            "data: {} train / {} validation / {} test examples from {} ({:.1} s)",
            data.train.len(),
            data.val.as_ref().map(|v| v.len()).unwrap_or(0),
            data.test.len(),
            plan.data_dir.display(),
            t.elapsed().as_secs_f64()
        ));
        let model =
            Model::build_with(&plan.arch, plan.num_classes, plan.device, c.seed as i64, c.init_scheme)
                .map_err(|e| anyhow!("model = {:?}: {e}", c.model))?;
        let params = model.params();
        let bound = model.bound();
        let masks = MaskSet::ones(&model.graph, plan.device);
        Ok(Self { plan, run, progress, data, model, params, bound, masks, rows: Vec::new(), init: None })
    }

    fn test_acc(&self) -> Result<f64> {
        let bs = self.plan.config.data.eval_batch_size;
        Ok(accuracy(&self.model.graph, &self.bound, &self.masks, &self.data, SplitKind::Test, bs)?
            .unwrap_or(f64::NAN))
    }

    fn val_acc(&self) -> Result<Option<f64>> {
        let bs = self.plan.config.data.eval_batch_size;
        accuracy(&self.model.graph, &self.bound, &self.masks, &self.data, SplitKind::Val, bs)
    }

    fn meta_base(&self, ck: &mut Checkpoint) {
        let c = &self.plan.config;
        ck.set("config_hash", &self.plan.hash);
        ck.set("method", c.prune.method);
        ck.set("semantics", c.prune.semantics);
        ck.set("dataset", self.plan.dataset.name());
        ck.set("data_dir", self.plan.data_dir.display());
        for (key, value) in data_metadata(&self.data) {
            ck.set(key, value);
        }
        ck.set("name", &self.plan.name);
    }

    /// Writes `init.safetensors` when the run has none: `init` if given, else the fresh model.
    fn ensure_init(&mut self) -> Result<()> {
        let path = self.run.init_path();
        if path.is_file() {
            return Ok(());
        }
        let ck = match (&self.plan.init, &self.plan.pretrained) {
            (Some(init), _) => {
                let src = Checkpoint::read(init)?;
                let mut probe = Model::build(&self.plan.arch, self.plan.num_classes, Device::Cpu, 0)?;
                src.load_into(&mut probe, init).context("init")?;
                let mut ck = Checkpoint::new();
                ck.put_model(&probe, &MaskSet::ones(&probe.graph, Device::Cpu));
                ck
            }
            (None, Some(_)) => return Ok(()),
            (None, None) => {
                let mut ck = Checkpoint::new();
                ck.put_model(&self.model, &self.masks);
                ck
            }
        };
        let mut ck = ck;
        ck.tensors.retain(|(k, _)| !k.starts_with(crate::checkpoint::MASK_PREFIX));
        self.meta_base(&mut ck);
        ck.set("kind", "init");
        ck.write(&path)
    }

    /// Runs (or continues) every iteration up to the plan's last; returns the metrics rows.
    pub fn execute(mut self) -> Result<Vec<IterationMetrics>> {
        self.run.clean_temp()?;
        self.ensure_init()?;
        let done = self.run.completed();
        for &i in &done {
            let path = self.run.iteration_path(i);
            let ck = Checkpoint::read(&path)?;
            if ck.get("config_hash") != Some(self.plan.hash.as_str()) {
                bail!(
                    "{}: made under a different config (hash {}, this run {})",
                    path.display(),
                    ck.get("config_hash").unwrap_or("none"),
                    self.plan.hash
                );
            }
            let row: IterationMetrics = serde_json::from_str(ck.get("metrics").unwrap_or("null"))
                .map_err(|e| anyhow!("{}: metadata `metrics` unreadable: {e}", path.display()))?;
            self.rows.push(row);
            if Some(&i) == done.last() {
                ck.load_into(&mut self.model, &path)?;
                self.masks = ck.masks(&self.model, &path)?;
            }
        }
        if let Some(&last) = done.last() {
            self.progress.line(&format!(
                "resuming after iteration {last} ({})",
                self.run.iteration_path(last).display()
            ));
        }
        let first = done.len();
        let total = self.plan.last_iteration + 1;
        let bar = self.progress.bar(total as u64, "iterations", "iters");
        bar.set_position(first.min(total) as u64);
        for it in first..total {
            bar.set_prefix(format!("iteration {it}/{}", self.plan.last_iteration));
            let row = if it == 0 { self.iteration_zero()? } else { self.iteration(it)? };
            self.commit(it, row)?;
            bar.inc(1);
        }
        bar.finish();
        Ok(self.rows)
    }

    fn iteration_zero(&mut self) -> Result<IterationMetrics> {
        if let Some(pre) = self.plan.pretrained.clone() {
            let t = Instant::now();
            let ck = Checkpoint::read(&pre)?;
            ck.load_into(&mut self.model, &pre).context("pretrained")?;
            if ck.has_masks() {
                self.masks = ck.masks(&self.model, &pre)?;
            }
            self.masks.apply(&self.params);
            let acc = self.test_acc()?;
            let mut row =
                IterationMetrics::new(0, acc, acc, self.val_acc()?, &account(&self.model.graph, &self.masks));
            row.wall_time_s = t.elapsed().as_secs_f64();
            self.progress.line(&format!("iteration 0: loaded {} (test acc {acc:.2} %)", pre.display()));
            return Ok(row);
        }
        let phase = self.plan.config.train.clone();
        let start = match self.load_state(0, &phase)? {
            Some(s) => s,
            None => PhaseStart {
                epoch: 0,
                opt: MaskedOptimizer::new(phase.optimizer_spec(), &self.params)?,
                best: None,
                acc_before: f64::NAN,
                elapsed: 0.0,
            },
        };
        let end = self.train_phase(0, &phase, start, "train")?;
        let acc = self.test_acc()?;
        let mut row =
            IterationMetrics::new(0, acc, acc, self.val_acc()?, &account(&self.model.graph, &self.masks));
        row.selected_epoch = end.selected_epoch;
        row.wall_time_s = end.elapsed;
        Ok(row)
    }

    fn iteration(&mut self, it: usize) -> Result<IterationMetrics> {
        let phase = self.plan.config.retrain.clone();
        let start = match self.load_state(it, &phase)? {
            Some(s) => s,
            None => {
                let t = Instant::now();
                self.prune(it)?;
                let acc_before = self.test_acc()?;
                let a = account(&self.model.graph, &self.masks);
                self.progress.line(&format!(
                    "iteration {it}: pruned to {} of {} parameters ({:.2} %, {:.2}x), FLOPs pruned {:.2} %, \
                     test acc before retraining {acc_before:.2} %",
                    a.params_alive,
                    a.params_total,
                    a.remaining_percent(),
                    a.compression(),
                    a.flops_pruned_percent()
                ));
                if self.plan.config.prune.rewind {
                    self.rewind()?;
                }
                PhaseStart {
                    epoch: 0,
                    opt: MaskedOptimizer::new(phase.optimizer_spec(), &self.params)?,
                    best: None,
                    acc_before,
                    elapsed: t.elapsed().as_secs_f64(),
                }
            }
        };
        let acc_before = start.acc_before;
        let end = self.train_phase(it, &phase, start, "retrain")?;
        let acc = self.test_acc()?;
        let mut row = IterationMetrics::new(
            it,
            acc_before,
            acc,
            self.val_acc()?,
            &account(&self.model.graph, &self.masks),
        );
        row.selected_epoch = end.selected_epoch;
        row.wall_time_s = end.elapsed;
        Ok(row)
    }

    /// The weight counts per layer (graph order) that the matched NNrelief run in `run` kept at
    /// iteration `it`, from the weight masks of its `iter-<it>.safetensors`.
    fn matched_counts(&self, run: &Path, it: usize) -> Result<Vec<i64>> {
        let path = run.join(format!("iter-{it:03}.safetensors"));
        if !path.is_file() {
            bail!(
                "{}: no such file; the matched NNrelief run has not completed iteration {it} \
                 (prune.magnitude_match = {:?})",
                path.display(),
                run.display().to_string()
            );
        }
        let ck = Checkpoint::read(&path)?;
        if !ck.has_masks() {
            bail!("{}: no masks in the checkpoint (prune.magnitude_match)", path.display());
        }
        let masks = ck.masks(&self.model, &path).context("prune.magnitude_match")?;
        self.model
            .graph
            .layers
            .iter()
            .map(|l| {
                let name = l.weight_name();
                masks
                    .kept(&name)
                    .map(|(k, _)| k)
                    .ok_or_else(|| anyhow!("{}: no mask for {name}", path.display()))
            })
            .collect()
    }

    /// One pruning call (iteration `it`): NNrelief on the pruning batch, or magnitude.
    fn prune(&mut self, it: usize) -> Result<()> {
        match &self.plan.method {
            PruneMethod::Nnrelief(cfg) => {
                let (x, _) = self
                    .data
                    .pruning_examples(self.plan.config.prune.batch_size, self.plan.config.seed as u32)?;
                prune_step(&self.model.graph, &self.params, &mut self.masks, &x, cfg)?;
            }
            PruneMethod::Magnitude { scope, keep } => {
                let per_layer: Vec<(f64, f64)> = self
                    .model
                    .graph
                    .layers
                    .iter()
                    .map(|l| {
                        let (kept, total) = self.masks.kept(&l.weight_name()).expect("weight mask");
                        (kept as f64, total as f64)
                    })
                    .collect();
                let target = match scope {
                    MagnitudeScope::Global => {
                        let kept: f64 = per_layer.iter().map(|p| p.0).sum();
                        let total: f64 = per_layer.iter().map(|p| p.1).sum();
                        MagnitudeTarget::Global(keep * kept / total)
                    }
                    MagnitudeScope::Layer => {
                        MagnitudeTarget::PerLayer(per_layer.iter().map(|(k, t)| keep * k / t).collect())
                    }
                };
                magnitude_prune(&self.model.graph, &self.params, &mut self.masks, &target)?;
            }
            PruneMethod::MagnitudeMatch { run } => {
                let counts = self.matched_counts(run, it)?;
                let target = MagnitudeTarget::PerLayerCount(counts);
                magnitude_prune(&self.model.graph, &self.params, &mut self.masks, &target)
                    .with_context(|| format!("prune.magnitude_match: iteration {it} of {}", run.display()))?;
            }
        }
        self.masks.apply(&self.params);
        Ok(())
    }

    /// Rewinds every parameter and buffer to the initial weights, then re-applies the masks.
    fn rewind(&mut self) -> Result<()> {
        if self.init.is_none() {
            self.init = Some(Checkpoint::read(&self.run.init_path())?);
        }
        let init = self.init.as_ref().expect("loaded");
        init.load_into(&mut self.model, &self.run.init_path())?;
        self.masks.apply(&self.params);
        Ok(())
    }

    /// The saved training phase of iteration `it`, if `state.safetensors` holds one.
    fn load_state(&mut self, it: usize, phase: &TrainConfig) -> Result<Option<PhaseStart>> {
        let path = self.run.state_path();
        if !path.is_file() {
            return Ok(None);
        }
        let ck = Checkpoint::read(&path)?;
        if ck.get("config_hash") != Some(self.plan.hash.as_str()) {
            bail!("{}: made under a different config; remove it to restart the iteration", path.display());
        }
        let state_it: usize = ck.parse("iteration", &path)?;
        if state_it != it {
            std::fs::remove_file(&path)
                .with_context(|| format!("{}: cannot remove stale state", path.display()))?;
            return Ok(None);
        }
        ck.load_into(&mut self.model, &path)?;
        self.masks = ck.masks(&self.model, &path)?;
        let mut opt = MaskedOptimizer::new(phase.optimizer_spec(), &self.params)?;
        opt.load_state(&ck.tensors, OPT_PREFIX)
            .with_context(|| format!("{}: optimizer state", path.display()))?;
        let best_state = ck.with_prefix(BEST_PREFIX);
        let best = if best_state.is_empty() {
            None
        } else {
            Some(Best {
                acc: ck.parse("best_acc", &path)?,
                epoch: ck.parse("best_epoch", &path)?,
                state: best_state.into_iter().map(|(k, t)| (k, t.to_device(self.plan.device))).collect(),
            })
        };
        let epoch: usize = ck.parse("epochs_done", &path)?;
        self.progress.line(&format!("resuming iteration {it} after epoch {epoch} ({})", path.display()));
        Ok(Some(PhaseStart {
            epoch,
            opt,
            best,
            acc_before: ck.parse("acc_before", &path)?,
            elapsed: ck.parse("elapsed_s", &path)?,
        }))
    }

    fn save_state(&self, it: usize, epochs_done: usize, st: &PhaseStart) -> Result<()> {
        let mut ck = Checkpoint::new();
        ck.put_model(&self.model, &self.masks);
        ck.extend(st.opt.state(OPT_PREFIX));
        if let Some(b) = &st.best {
            ck.extend(b.state.iter().map(|(k, t)| (format!("{BEST_PREFIX}{k}"), t.shallow_clone())));
            ck.set("best_acc", b.acc);
            ck.set("best_epoch", b.epoch);
        }
        self.meta_base(&mut ck);
        ck.set("kind", "state");
        ck.set("iteration", it);
        ck.set("epochs_done", epochs_done);
        ck.set("acc_before", st.acc_before);
        ck.set("elapsed_s", st.elapsed);
        ck.write(&self.run.state_path())
    }

    /// Trains with fixed masks from `st.epoch` to `phase.epochs`, saving state after every
    /// epoch; leaves the selected epoch's weights in the model.
    fn train_phase(
        &mut self,
        it: usize,
        phase: &TrainConfig,
        mut st: PhaseStart,
        label: &str,
    ) -> Result<PhaseEnd> {
        let c = &self.plan.config;
        let batch_cfg = BatchConfig {
            batch_size: phase.batch_size,
            shuffle: c.data.shuffle,
            drop_last: false,
            seed: derive_seed(c.seed, &[1, it as u64]),
        };
        let batcher = self.data.batcher(SplitKind::Train, batch_cfg, c.data.augment)?;
        let n_train = self.data.train.len();
        let epochs = phase.epochs;
        let tag = if it == 0 { "train".to_string() } else { format!("iter {it} {label}") };
        let epoch_bar = self.progress.bar(epochs as u64, &tag, "epochs");
        epoch_bar.set_position(st.epoch as u64);
        for e in st.epoch..epochs {
            let t = Instant::now();
            let lr = multistep_lr(phase.lr, &phase.milestones, phase.gamma, e);
            st.opt.set_lr(lr);
            tch::manual_seed(derive_seed(c.seed, &[2, it as u64, e as u64]) as i64);
            let batch_bar =
                self.progress.bar(batcher.len() as u64, &format!("epoch {}/{epochs}", e + 1), "batches");
            let device = self.plan.device;
            let mut loss_sum = Tensor::zeros([], (Kind::Float, device));
            let mut correct = Tensor::zeros([], (Kind::Int64, device));
            let mut seen = 0i64;
            for (b, batch) in batcher.epoch(e as u64)?.enumerate() {
                let (x, y) = batch?;
                let x = conform_batch(&self.model.graph, &x)?;
                let n = y.size()[0];
                let (loss, ok) = masked_train_step_with(
                    &self.model.graph,
                    &self.bound,
                    &self.params,
                    &self.masks,
                    &mut st.opt,
                    &x,
                    &y,
                    phase.precision,
                );
                if b % 50 == 0 && !loss.double_value(&[]).is_finite() {
                    bail!(
                        "{tag}, epoch {}: the loss is not finite (lr {lr}); lower the learning rate",
                        e + 1
                    );
                }
                loss_sum += loss * n as f64;
                correct += ok;
                batch_bar.inc(1);
                seen += n;
                if b % 10 == 0 && self.progress.mode() == Mode::Bars {
                    batch_bar.set_message(format!(
                        "loss {:.4}, train acc {:.2} %",
                        loss_sum.double_value(&[]) / seen as f64,
                        100.0 * correct.int64_value(&[]) as f64 / seen as f64
                    ));
                }
            }
            batch_bar.finish();
            let train_loss = loss_sum.double_value(&[]) / n_train as f64;
            let train_acc = 100.0 * correct.int64_value(&[]) as f64 / n_train as f64;
            let val = self.val_acc()?;
            let test = if phase.select == Selection::BestTest { Some(self.test_acc()?) } else { None };
            let metric = match phase.select {
                Selection::Last => None,
                Selection::BestVal => val,
                Selection::BestTest => test,
            };
            if let Some(m) = metric {
                if st.best.as_ref().is_none_or(|b| m > b.acc) {
                    let state = self.params.iter().map(|(k, v)| (k.clone(), v.detach().copy())).collect();
                    st.best = Some(Best { acc: m, epoch: e + 1, state });
                }
            }
            st.elapsed += t.elapsed().as_secs_f64();
            self.save_state(it, e + 1, &st)?;
            let mut msg = format!(
                "[{tag}] epoch {}/{epochs}: lr {lr:.2e}, loss {train_loss:.4}, train acc {train_acc:.2} %",
                e + 1
            );
            if let Some(v) = val {
                msg.push_str(&format!(", val acc {v:.2} %"));
            }
            if let Some(v) = test {
                msg.push_str(&format!(", test acc {v:.2} %"));
            }
            msg.push_str(&format!(" ({:.1} s)", t.elapsed().as_secs_f64()));
            self.progress.line(&msg);
            epoch_bar.set_message(match (val, test) {
                (Some(v), _) => format!("val acc {v:.2} %"),
                (None, Some(t)) => format!("test acc {t:.2} %"),
                _ => format!("loss {train_loss:.4}"),
            });
            epoch_bar.inc(1);
        }
        epoch_bar.finish();
        let selected_epoch = match (&st.best, phase.select) {
            (_, Selection::Last) | (None, _) => epochs,
            (Some(b), _) => {
                let best: Vec<(String, Tensor)> =
                    b.state.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect();
                self.model.load_tensors(&best, "").map_err(|e| anyhow!("restoring the best epoch: {e}"))?;
                if b.epoch != epochs {
                    self.progress.line(&format!(
                        "[{tag}] keeping epoch {} ({} accuracy {:.2} %)",
                        b.epoch,
                        if phase.select == Selection::BestVal { "validation" } else { "test" },
                        b.acc
                    ));
                }
                b.epoch
            }
        };
        Ok(PhaseEnd { selected_epoch, elapsed: st.elapsed })
    }

    /// Writes iteration `it`'s checkpoint and the metrics files, drops the phase state.
    fn commit(&mut self, it: usize, row: IterationMetrics) -> Result<()> {
        let mut ck = Checkpoint::new();
        ck.put_model(&self.model, &self.masks);
        self.meta_base(&mut ck);
        ck.set("kind", "iteration");
        ck.set("iteration", it);
        ck.set("epochs", row.selected_epoch);
        ck.set("metrics", serde_json::to_string(&row).expect("serialisable"));
        ck.write(&self.run.iteration_path(it))?;
        self.progress.line(&format!(
            "iteration {it} done: test acc {:.2} % (before retraining {:.2} %), {:.2} % of parameters remain \
             ({:.2}x), FLOPs pruned {:.2} %, units {}, {:.1} s",
            row.acc_retrained,
            row.acc_pruned,
            row.remaining_percent,
            row.compression,
            row.flops_pruned_percent,
            row.architecture(),
            row.wall_time_s
        ));
        self.rows.push(row);
        metrics::write(self.run.path(), &self.rows)?;
        let state = self.run.state_path();
        if state.is_file() {
            std::fs::remove_file(&state).with_context(|| format!("{}: cannot remove", state.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_and_repeat() {
        assert_eq!(derive_seed(1, &[2, 3]), derive_seed(1, &[2, 3]));
        assert_ne!(derive_seed(1, &[2, 3]), derive_seed(1, &[3, 2]));
        assert_ne!(derive_seed(1, &[2, 3]), derive_seed(2, &[2, 3]));
    }
}
