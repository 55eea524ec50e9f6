//! Experiment configuration: the TOML schema, every default (all in this file, in the
//! `Default` impls), `--set key=value` overrides, and the resolved form that each run directory
//! keeps as `config.resolved.toml`.
//!
//! A config file may be empty: every field has a default (LeNet-300-100 on MNIST with the
//! authors' training protocol, NNrelief in `reference` semantics). Unknown fields are errors
//! that name the field and the file. Paths are relative to the current directory.
//!
//! Checkpoint selection (`select`, per training phase) defaults to `best-val`: the weights of
//! the epoch with the best accuracy on a validation split carved from the training set. The
//! authors' code keeps the epoch with the best *test* accuracy (`best-test`), which selects on
//! the test set and so reports an optimistically biased test accuracy; the paper presets keep
//! `best-test` only to reproduce the authors' protocol and say so.

use relief_core::optim::TrainPrecision;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use relief_core::Semantics;
use relief_models::InitScheme;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A whole experiment: model, data, pre-training, pruning and retraining.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Label of the experiment in tables and plot legends (default: the config file's stem).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Architecture: lenet300-100, lenet5, vgg-like, vgg11/13/16/19, resnet20/32/44/56/110,
    /// vgg16-tiny, vgg19-tiny, resnet18-tiny; or the path of a model spec file (`*.toml`,
    /// relative to the current directory; see `relief models` and docs/models.md).
    pub model: String,
    /// Classes of the last layer (default: the dataset's class count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_classes: Option<i64>,
    /// Seed of the initialisation, validation carve, shuffling, augmentation, dropout and the
    /// pruning batch. Every epoch's seed is derived from (seed, iteration, epoch).
    pub seed: u64,
    /// How the initial weights are drawn from `seed`: `relief` (relief's own order and
    /// kernels) or `pytorch` (the authors' PyTorch code bit for bit: `torch.manual_seed(seed)`,
    /// the layers' default `reset_parameters()`, then `kaiming_normal_`; the same tensors on CPU
    /// and CUDA). See `relief_models::init` and docs/models.md. Left out of the resolved config
    /// (and so of [`Config::hash`]) when `relief`, so older run directories still resume.
    #[serde(skip_serializing_if = "InitScheme::is_default")]
    pub init_scheme: InitScheme,
    /// `auto` (CUDA when available), `cpu`, `cuda` or `cuda:N`.
    pub device: String,
    /// CPU threads libtorch uses inside one operation; 0 = libtorch's default (one per core).
    /// Small models run faster on one thread, and it keeps timings stable on a busy machine.
    pub threads: usize,
    /// A trained checkpoint to prune (relief checkpoint or plain safetensors with PyTorch
    /// names); pre-training (`[train]`) is skipped. Masks in it are kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pretrained: Option<PathBuf>,
    /// Initial weights to rewind to (`prune.rewind`) when `pretrained` is given (default:
    /// `init.safetensors` beside the pretrained checkpoint, when it exists).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// The dataset.
    pub data: DataConfig,
    /// Pre-training from scratch (iteration 0).
    pub train: TrainConfig,
    /// The pruning method and its schedule.
    pub prune: PruneSection,
    /// Retraining after each pruning iteration.
    pub retrain: TrainConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: None,
            model: "lenet300-100".into(),
            num_classes: None,
            seed: 0,
            init_scheme: InitScheme::Relief,
            device: "auto".into(),
            threads: 0,
            pretrained: None,
            init: None,
            data: DataConfig::default(),
            train: TrainConfig::default(),
            prune: PruneSection::default(),
            retrain: TrainConfig::default(),
        }
    }
}

/// The datasets relief loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DatasetName {
    /// MNIST (IDX files).
    Mnist,
    /// CIFAR-10 (python or binary batches).
    Cifar10,
    /// CIFAR-100, fine labels.
    Cifar100,
    /// Tiny-ImageNet-200 (the official `val/` images serve as test set).
    TinyImagenet,
    /// Fashion-MNIST (MNIST's IDX files; 10 classes, its standard normalisation).
    FashionMnist,
    /// Any directory of MNIST-format IDX files: shape from the header, classes from the labels,
    /// normalised with the training split's mean and std unless `data.mean`/`data.std` are set.
    Idx,
    /// The user's tensors: `data.dir` holds `train.safetensors` and `test.safetensors` (tensors
    /// `x`, `y`), or names one `.safetensors` file with `train_x`, `train_y`, `test_x`, `test_y`
    /// (see docs/data.md).
    Tensors,
    /// Image files in `data.dir/train/<class>/` and `data.dir/test/<class>/` (or `val/`), as
    /// torchvision's `ImageFolder` (PNG, JPEG, BMP, GIF, WebP).
    Imagefolder,
}

impl DatasetName {
    /// The loader's kind.
    pub fn kind(self) -> relief_data::DatasetKind {
        match self {
            DatasetName::Mnist => relief_data::DatasetKind::Mnist,
            DatasetName::Cifar10 => relief_data::DatasetKind::Cifar10,
            DatasetName::Cifar100 => relief_data::DatasetKind::Cifar100,
            DatasetName::TinyImagenet => relief_data::DatasetKind::TinyImageNet,
            DatasetName::FashionMnist => relief_data::DatasetKind::FashionMnist,
            DatasetName::Idx => relief_data::DatasetKind::Idx,
            DatasetName::Tensors => relief_data::DatasetKind::Tensors,
            DatasetName::Imagefolder => relief_data::DatasetKind::ImageFolder,
        }
    }
}

/// Size of the validation split: a fraction of the training set, or a count of examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ValSpec {
    /// An integer: that many examples (0 = no validation split).
    Count(i64),
    /// A float in (0, 1): that share of the training set.
    Fraction(f64),
}

impl std::fmt::Display for ValSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ValSpec::Count(n) => write!(f, "{n}"),
            ValSpec::Fraction(x) => write!(f, "{x}"),
        }
    }
}

/// `[data]`: where the examples come from and how they are batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// mnist, cifar10, cifar100, tiny-imagenet, fashion-mnist, idx (any MNIST-format
    /// directory), tensors (safetensors files of the user's own data) or imagefolder.
    pub dataset: DatasetName,
    /// Directory with the dataset's files (default: `data/<dataset>`); for `tensors` also one
    /// `.safetensors` file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// `idx`, `tensors`, `fashion-mnist`: per-channel (or per-feature) mean subtracted after
    /// `/255` (one value, or one per channel). Default: the training split's mean for `u8`
    /// data, Fashion-MNIST's standard 0.2860, none for `f32` tensors. Left out of the resolved
    /// config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation divided by, like `mean` (default: the training split's;
    /// Fashion-MNIST 0.3530; none for `f32` tensors). Left out of the resolved config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub std: Option<Vec<f64>>,
    /// `imagefolder`: 1 (grey) or 3 (RGB) channels (default: 3 when any image has colour, else
    /// 1). Left out of the resolved config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<i64>,
    /// `imagefolder`: `[H, W]`; each image is scaled (bilinear, aspect kept) to cover it and
    /// centre-cropped (default: the images' common size; mixed sizes are refused). Left out of
    /// the resolved config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<[i64; 2]>,
    /// `idx`, `tensors`, `imagefolder`: carve the test split from the training data (a float in
    /// (0, 1) is a share, an integer a count) when the data has no test split of its own (see
    /// docs/data.md). Left out of the resolved config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_split: Option<ValSpec>,
    /// Seed of the `test_split` carve (default 0). Left out of the resolved config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_seed: Option<u32>,
    /// Validation split carved from the training set (seeded): a float in (0, 1) is a share,
    /// an integer a count; 0 = none (needed by `select = "best-val"`).
    pub validation: ValSpec,
    /// Keep only the first N training examples (after the validation carve); 0 = all. For
    /// quick runs and tests.
    pub train_limit: i64,
    /// Keep only the first N test examples; 0 = all. For quick runs and tests.
    pub test_limit: i64,
    /// Reshuffle the training set every epoch (the authors' loaders do not shuffle).
    pub shuffle: bool,
    /// Apply the dataset's training augmentation (CIFAR, Tiny-ImageNet: random crop + flip;
    /// MNIST has none).
    pub augment: bool,
    /// Batch size of evaluation passes (does not change results).
    pub eval_batch_size: i64,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: DatasetName::Mnist,
            dir: None,
            mean: None,
            std: None,
            channels: None,
            image_size: None,
            test_split: None,
            split_seed: None,
            validation: ValSpec::Fraction(0.1),
            train_limit: 0,
            test_limit: 0,
            shuffle: true,
            augment: true,
            eval_batch_size: 1000,
        }
    }
}

/// Optimizer family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// Adam (PyTorch's update, L2 weight decay added to the gradient).
    Adam,
    /// SGD with momentum (PyTorch's update).
    Sgd,
}

/// Which epoch's weights a training phase keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Selection {
    /// The weights after the last epoch.
    Last,
    /// The epoch with the best validation accuracy (needs `data.validation`).
    BestVal,
    /// The epoch with the best test accuracy: the authors' protocol, which selects on the test
    /// set (optimistic test numbers). Only for reproducing the paper.
    BestTest,
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Selection::Last => "last",
            Selection::BestVal => "best-val",
            Selection::BestTest => "best-test",
        })
    }
}

/// `[train]` and `[retrain]`: one training phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Epochs (0 = no training in this phase).
    pub epochs: usize,
    /// Examples per training batch.
    pub batch_size: i64,
    /// adam or sgd.
    pub optimizer: OptimizerKind,
    /// Base learning rate.
    pub lr: f64,
    /// SGD momentum (ignored by Adam).
    pub momentum: f64,
    /// L2 weight decay, added to the gradient (PyTorch's `weight_decay`).
    pub weight_decay: f64,
    /// Epochs (0-based, strictly increasing) at which the learning rate is multiplied by
    /// `gamma` (PyTorch's `MultiStepLR`).
    pub milestones: Vec<usize>,
    /// Learning-rate factor at each milestone.
    pub gamma: f64,
    /// Which epoch's weights the phase keeps: last, best-val or best-test.
    pub select: Selection,
    /// Arithmetic of the training steps: default (libtorch's float32 defaults: on CUDA TF32
    /// convolutions, IEEE matrix products), fp32 (IEEE everywhere), tf32 (TF32 convolutions and
    /// matrix products, CUDA), bf16 (bfloat16 autocast, float32 weights, masks and optimizer).
    /// Pruning always scores in IEEE float32.
    #[serde(skip_serializing_if = "is_default_precision")]
    pub precision: TrainPrecision,
}

fn is_default_precision(p: &TrainPrecision) -> bool {
    *p == TrainPrecision::Default
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 60,
            batch_size: 120,
            optimizer: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.9,
            weight_decay: 5e-4,
            milestones: vec![30],
            gamma: 0.1,
            select: Selection::BestVal,
            precision: TrainPrecision::Default,
        }
    }
}

impl TrainConfig {
    /// The optimizer with its hyper-parameters.
    pub fn optimizer_spec(&self) -> relief_core::train::OptimizerSpec {
        use relief_core::train::OptimizerSpec;
        match self.optimizer {
            OptimizerKind::Adam => OptimizerSpec::Adam { lr: self.lr, weight_decay: self.weight_decay },
            OptimizerKind::Sgd => {
                OptimizerSpec::Sgd { lr: self.lr, momentum: self.momentum, weight_decay: self.weight_decay }
            }
        }
    }
}

/// Pruning method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// NNrelief (Dekhovich et al.): keep the connections carrying an `alpha` share of each
    /// unit's incoming signal.
    Nnrelief,
    /// The magnitude baseline: keep the largest `|w|`.
    Magnitude,
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Nnrelief => "nnrelief",
            Method::Magnitude => "magnitude",
        })
    }
}

/// Where the magnitude baseline ranks weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MagnitudeScope {
    /// All prunable weights ranked together.
    Global,
    /// Each layer on its own, each keeping the same share.
    Layer,
}

/// `[prune]`: the pruning method and its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneSection {
    /// nnrelief or magnitude.
    pub method: Method,
    /// Prune-retrain iterations.
    pub iterations: usize,
    /// NNrelief: `reference` (the authors' code, bit for bit) or `paper` (quirks fixed).
    pub semantics: Semantics,
    /// NNrelief: share of each filter's importance to keep (convolutions), in (0, 1].
    pub alpha_conv: f64,
    /// NNrelief: share of each neuron's importance to keep (fully connected layers), in (0, 1].
    pub alpha_fc: f64,
    /// NNrelief: examples in the pruning batch (drawn once from the training split, seeded).
    pub batch_size: i64,
    /// NNrelief: examples per forward chunk while scoring (bounds memory, not results).
    pub chunk_size: i64,
    /// Rewind the surviving weights to their initial values before retraining (the authors do
    /// this for the LeNets).
    pub rewind: bool,
    /// Magnitude: `global` (all layers ranked together) or `layer` (per layer).
    pub magnitude_scope: MagnitudeScope,
    /// Magnitude: share of the still-unpruned weights kept at each iteration, in (0, 1).
    pub magnitude_keep: f64,
    /// Magnitude at equal budget: an NNrelief run directory; at every iteration `i` each layer
    /// keeps exactly as many weights as that run's `iter-<i>.safetensors` weight mask (ranked by
    /// `|w|` within the layer). `magnitude_keep` and `magnitude_scope` are then ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub magnitude_match: Option<PathBuf>,
}

impl Default for PruneSection {
    fn default() -> Self {
        Self {
            method: Method::Nnrelief,
            iterations: 5,
            semantics: Semantics::Reference,
            alpha_conv: 0.9,
            alpha_fc: 0.95,
            batch_size: 1000,
            chunk_size: 256,
            rewind: false,
            magnitude_scope: MagnitudeScope::Global,
            magnitude_keep: 0.5,
            magnitude_match: None,
        }
    }
}

/// Parses a `--set` value as TOML (`0.97`, `[20, 40]`, `true`, `"text"`), falling back to a
/// plain string (`adam`, `data/cifar10`).
fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

/// Puts `value` at the dotted `key` of `tree`, creating tables on the way.
pub(crate) fn insert(tree: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.trim().is_empty()) {
        bail!("--set {key}: empty component in the key");
    }
    let mut table = tree;
    for part in &parts[..parts.len() - 1] {
        let entry = table.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("--set {key}: `{part}` is a value, not a section"),
        };
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Removes the `", expected one of ..."`-style noise location info toml adds for one-line
/// documents, keeping serde's message (which names the unknown field or the expected type).
fn short(err: &toml::de::Error) -> String {
    err.message().to_string()
}

/// Every leaf of `tree` (a value that is not a table) by its dotted key, in document order.
fn leaves(tree: &toml::Table) -> Vec<(String, toml::Value)> {
    fn walk(prefix: &str, t: &toml::Table, out: &mut Vec<(String, toml::Value)>) {
        for (k, v) in t {
            let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
            match v {
                toml::Value::Table(sub) => walk(&key, sub, out),
                other => out.push((key, other.clone())),
            }
        }
    }
    let mut out = Vec::new();
    walk("", tree, &mut out);
    out
}

/// The dotted key of the first leaf of `tree` that fails to deserialise on its own (every
/// field has a default, so a lone leaf fails only for its own type, value or name).
fn culprit(tree: &toml::Table) -> Option<String> {
    leaves(tree).into_iter().map(|(k, _)| k).find(|k| culprit_error(tree, k).is_some())
}

/// The error of the leaf at `key` of `tree` deserialised alone, if it fails.
fn culprit_error(tree: &toml::Table, key: &str) -> Option<String> {
    let (_, value) = leaves(tree).into_iter().find(|(k, _)| k == key)?;
    let mut t = toml::Table::new();
    insert(&mut t, key, value).ok()?;
    toml::Value::Table(t).try_into::<Config>().err().map(|e| short(&e))
}

/// The 1-based line of `text` that assigns the dotted `key`: a `key = ...` line (bare or
/// dotted, quotes allowed) under the `[section]` header that holds it.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let norm = |s: &str| {
        s.split('.').map(|p| p.trim().trim_matches(|c| c == '"' || c == '\'')).collect::<Vec<_>>().join(".")
    };
    let mut section = String::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            let inner = l.trim_start_matches('[').split(']').next().unwrap_or("");
            section = norm(inner);
            continue;
        }
        if l.starts_with('#') {
            continue;
        }
        let Some((k, _)) = l.split_once('=') else { continue };
        let k = norm(k);
        let full = if section.is_empty() { k } else { format!("{section}.{k}") };
        if full == key {
            return Some(i + 1);
        }
    }
    None
}

/// One `--set key=value` override.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// Dotted key, e.g. `prune.alpha_fc`.
    pub key: String,
    /// The value, parsed as TOML (or a plain string).
    pub value: toml::Value,
}

impl std::str::FromStr for Override {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        let (key, raw) = s.split_once('=').ok_or_else(|| anyhow!("--set {s}: expected key=value"))?;
        let key = key.trim().to_string();
        let value = parse_value(raw.trim());
        // Check the key and the value's type against the schema on their own, so the error
        // names this override rather than the merged document.
        let typed = {
            let mut t = toml::Table::new();
            insert(&mut t, &key, value.clone())?;
            toml::Value::Table(t).try_into::<Config>()
        };
        match typed {
            Ok(_) => Ok(Self { key, value }),
            Err(err) => {
                // `name=2024` is a string field given an integer: retry as text.
                let text = toml::Value::String(raw.trim().to_string());
                let mut t = toml::Table::new();
                insert(&mut t, &key, text.clone())?;
                if !matches!(value, toml::Value::String(_))
                    && toml::Value::Table(t).try_into::<Config>().is_ok()
                {
                    return Ok(Self { key, value: text });
                }
                bail!("--set {key}={}: {}", raw.trim(), short(&err))
            }
        }
    }
}

impl Config {
    /// Parses TOML text; errors name `origin` (a file name) and the offending field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self> {
        Self::from_toml_with(text, origin, &[])
    }

    /// Parses TOML text with `--set` overrides applied to the value tree first.
    /// Errors quote the input cut to a readable length.
    pub fn from_toml_with(text: &str, origin: &str, overrides: &[Override]) -> Result<Self> {
        Self::parse_with(text, origin, overrides)
            .map_err(|e| anyhow!(relief_core::runtime::message::cut_long_lines(&format!("{e:#}"))))
    }

    fn parse_with(text: &str, origin: &str, overrides: &[Override]) -> Result<Self> {
        let mut tree: toml::Table = toml::from_str(text).map_err(|e| anyhow!("{origin}: {e}"))?;
        for o in overrides {
            insert(&mut tree, &o.key, o.value.clone())?;
        }
        let what = if overrides.is_empty() { String::new() } else { " (with --set overrides)".into() };
        match toml::Value::Table(tree.clone()).try_into::<Config>() {
            Ok(c) => Ok(c),
            Err(e) => {
                let Some(key) = culprit(&tree) else { bail!("{origin}{what}: {}", short(&e)) };
                if overrides.iter().any(|o| o.key == key) {
                    bail!("{origin}: --set {key}: {}", short(&e));
                }
                let message = match culprit_error(&tree, &key) {
                    Some(m) => m,
                    None => short(&e),
                };
                match line_of(text, &key) {
                    Some(line) => bail!("{origin}:{line}: {key}: {message}"),
                    None => bail!("{origin}{what}: {key}: {message}"),
                }
            }
        }
    }

    /// Reads a config file, applies overrides, and names the experiment after the file when
    /// `name` is unset.
    pub fn load(path: &Path, overrides: &[Override]) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read config file", path.display()))?;
        let mut cfg = Self::from_toml_with(&text, &path.display().to_string(), overrides)?;
        if cfg.name.is_none() {
            cfg.name = path.file_stem().map(|s| s.to_string_lossy().into_owned());
        }
        Ok(cfg)
    }

    /// The resolved TOML: every field, defaults filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a Config always serialises")
    }

    /// SHA-256 of [`Config::to_toml`], first 16 hex digits: identifies the experiment in
    /// checkpoints, so a run directory is never resumed under a different config.
    pub fn hash(&self) -> String {
        let digest = Sha256::digest(self.to_toml().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The options of user datasets (`data.mean`, `data.std`, `num_classes`).
    pub fn user_options(&self) -> relief_data::UserOptions {
        relief_data::UserOptions {
            mean: self.data.mean.clone(),
            std: self.data.std.clone(),
            num_classes: self.num_classes,
            channels: self.data.channels,
            image_size: self.data.image_size,
            test_split: self.data.test_split.map(|v| match v {
                ValSpec::Count(n) => relief_data::ValSize::Count(n),
                ValSpec::Fraction(f) => relief_data::ValSize::Fraction(f),
            }),
            split_seed: self.data.split_seed.unwrap_or(0),
        }
    }

    /// The data directory (`data.dir`, default `data/<dataset>`).
    pub fn data_dir(&self) -> PathBuf {
        self.data.dir.clone().unwrap_or_else(|| PathBuf::from("data").join(self.data.dataset.kind().name()))
    }

    /// `key = value` lines of every leaf (dotted keys), for showing differences.
    pub fn flat(&self) -> Vec<(String, String)> {
        fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<(String, String)>) {
            match v {
                toml::Value::Table(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        walk(&key, v, out);
                    }
                }
                other => out.push((prefix.to_string(), other.to_string())),
            }
        }
        let mut out = Vec::new();
        walk("", &toml::Value::try_from(self).expect("serialisable"), &mut out);
        out
    }

    /// The keys whose values differ between `self` and `other` (`key: a -> b`).
    pub fn diff(&self, other: &Config) -> Vec<String> {
        let a: std::collections::BTreeMap<_, _> = self.flat().into_iter().collect();
        let b: std::collections::BTreeMap<_, _> = other.flat().into_iter().collect();
        let keys: std::collections::BTreeSet<_> = a.keys().chain(b.keys()).collect();
        keys.into_iter()
            .filter(|k| a.get(*k) != b.get(*k))
            .map(|k| {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(unset)".into());
                format!("{k}: {} -> {}", show(a.get(k)), show(b.get(k)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> Result<Override> {
        s.parse()
    }

    #[test]
    fn empty_file_is_all_defaults_and_round_trips() {
        let c = Config::from_toml("", "x.toml").unwrap();
        assert_eq!(c, Config::default());
        let back = Config::from_toml(&c.to_toml(), "resolved").unwrap();
        assert_eq!(back, c);
        assert_eq!(back.hash(), c.hash());
        assert_eq!(c.hash().len(), 16);
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Config::from_toml("[prune]\nalpah_fc = 0.9\n", "bad.toml").unwrap_err().to_string();
        assert!(err.contains("bad.toml") && err.contains("alpah_fc"), "{err}");
        let err = Config::from_toml("modle = 'x'\n", "bad.toml").unwrap_err().to_string();
        assert!(err.contains("modle"), "{err}");
        let err = Config::from_toml("[data]\ndataset = 'svhn'\n", "bad.toml").unwrap_err().to_string();
        assert!(err.contains("svhn") && err.contains("cifar10"), "{err}");
    }

    #[test]
    fn overrides_apply_before_deserialising() {
        let o = vec![
            set("prune.alpha_fc=0.97").unwrap(),
            set("retrain.milestones=[20, 40]").unwrap(),
            set("retrain.optimizer=sgd").unwrap(),
            set("data.dir=data/elsewhere").unwrap(),
            set("name=2024").unwrap(),
            set("data.validation=0").unwrap(),
            set("prune.alpha_conv=1").unwrap(),
        ];
        let c = Config::from_toml_with("[prune]\nalpha_fc = 0.5\n", "x.toml", &o).unwrap();
        assert_eq!(c.prune.alpha_fc, 0.97);
        assert_eq!(c.prune.alpha_conv, 1.0);
        assert_eq!(c.retrain.milestones, vec![20, 40]);
        assert_eq!(c.retrain.optimizer, OptimizerKind::Sgd);
        assert_eq!(c.data.dir, Some(PathBuf::from("data/elsewhere")));
        assert_eq!(c.name.as_deref(), Some("2024"));
        assert_eq!(c.data.validation, ValSpec::Count(0));
    }

    #[test]
    fn bad_overrides_name_the_key() {
        let err = set("prune.alpah_fc=0.9").unwrap_err().to_string();
        assert!(err.contains("prune.alpah_fc") && err.contains("unknown field"), "{err}");
        let err = set("prune.iterations=many").unwrap_err().to_string();
        assert!(err.contains("prune.iterations"), "{err}");
        assert!(set("prune").is_err());
        assert!(set("model.x=1").is_err());
    }

    #[test]
    fn magnitude_match_is_optional_and_keeps_existing_hashes() {
        let c = Config::default();
        assert!(!c.to_toml().contains("magnitude_match"));
        let o = vec![set("prune.method=magnitude").unwrap(), set("prune.magnitude_match=runs/x").unwrap()];
        let m = Config::from_toml_with("", "x.toml", &o).unwrap();
        assert_eq!(m.prune.magnitude_match, Some(PathBuf::from("runs/x")));
        assert!(m.to_toml().contains("magnitude_match = \"runs/x\""));
        assert_eq!(Config::from_toml(&m.to_toml(), "resolved").unwrap(), m);
    }

    #[test]
    fn init_scheme_defaults_to_relief_and_keeps_existing_hashes() {
        let c = Config::default();
        assert_eq!(c.init_scheme, InitScheme::Relief);
        assert!(!c.to_toml().contains("init_scheme"));
        // The hash `relief train --dry-run` printed for this config before `init_scheme` existed.
        let old = "name = \"c\"\nmodel = \"lenet5\"\n[data]\ndir = \"/tmp/hcheck/d\"\n";
        assert_eq!(Config::from_toml(old, "c.toml").unwrap().hash(), "efd499e0f143b7d6");
        let explicit = Config::from_toml(&format!("init_scheme = \"relief\"\n{old}"), "c.toml").unwrap();
        assert_eq!(explicit.hash(), "efd499e0f143b7d6");
        let p = Config::from_toml_with(old, "c.toml", &[set("init_scheme=pytorch").unwrap()]).unwrap();
        assert_eq!(p.init_scheme, InitScheme::Pytorch);
        assert!(p.to_toml().contains("init_scheme = \"pytorch\""));
        assert_ne!(p.hash(), explicit.hash());
        assert_eq!(Config::from_toml(&p.to_toml(), "resolved").unwrap(), p);
        let err = set("init_scheme=torch").unwrap_err().to_string();
        assert!(err.contains("init_scheme") && err.contains("pytorch"), "{err}");
    }

    #[test]
    fn paper_presets_use_the_authors_initialisation() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/paper");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let c = Config::load(&path, &[]).unwrap();
            assert_eq!(c.init_scheme, InitScheme::Pytorch, "{}", path.display());
            n += 1;
        }
        assert!(n >= 7, "{n} presets in {}", dir.display());
    }

    #[test]
    fn diff_lists_changed_keys() {
        let a = Config::default();
        let mut b = a.clone();
        b.prune.alpha_fc = 0.9;
        assert_eq!(a.diff(&b), vec!["prune.alpha_fc: 0.95 -> 0.9".to_string()]);
        assert!(a.diff(&a).is_empty());
    }
}
