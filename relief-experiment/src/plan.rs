//! The high-level plan: raw command-line arguments plus the TOML config become one validated
//! [`Plan`] before any work starts (ripgrep's split between low-level and high-level
//! arguments). Every problem found is reported at once, each naming its config field.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use relief_core::PruneConfig;
use relief_data::{DatasetKind, ValSize};
use relief_models::Architecture;
use tch::Device;

use crate::config::{Config, MagnitudeScope, Method, OptimizerKind, Selection, TrainConfig, ValSpec};
use crate::memory::{estimate, host_available, human};
use crate::rundir::{RunDir, CONFIG_FILE};
use crate::util::parse_device;

/// Which stages a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stages {
    /// `relief train`: iteration 0 only (train from scratch).
    Train,
    /// `relief prune`: prune a given trained model (`pretrained` required).
    Prune,
    /// `relief run`: train unless `pretrained` is given, then prune.
    All,
}

/// How each iteration prunes.
#[derive(Debug, Clone, PartialEq)]
pub enum PruneMethod {
    /// NNrelief with these settings.
    Nnrelief(PruneConfig),
    /// Magnitude pruning keeping `keep` of the remaining weights per iteration.
    Magnitude {
        /// Global or per-layer ranking.
        scope: MagnitudeScope,
        /// Share of the remaining weights kept at each iteration.
        keep: f64,
    },
    /// Magnitude pruning at equal budget: at iteration `i`, every layer keeps as many weights
    /// as the NNrelief run in `run` kept at its iteration `i` (`prune.magnitude_match`).
    MagnitudeMatch {
        /// The matched NNrelief run directory.
        run: PathBuf,
    },
}

/// A validated experiment, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The resolved config (defaults filled in; written into the run directory).
    pub config: Config,
    /// [`Config::hash`] of it, combined with the spec's content for a spec model ([`run_hash`]).
    pub hash: String,
    /// Label of the experiment.
    pub name: String,
    /// The architecture (a zoo one, or a spec file's, read when the plan was made).
    pub arch: Architecture,
    /// Classes of the last layer.
    pub num_classes: i64,
    /// The dataset.
    pub dataset: DatasetKind,
    /// Its directory.
    pub data_dir: PathBuf,
    /// Where tensors live.
    pub device: Device,
    /// The validation split, if any.
    pub validation: Option<ValSize>,
    /// The trained model to start from (skips pre-training).
    pub pretrained: Option<PathBuf>,
    /// Initial weights to rewind to, when not the run's own `init.safetensors`.
    pub init: Option<PathBuf>,
    /// The last iteration to run (0 = only the dense model).
    pub last_iteration: usize,
    /// How each iteration prunes.
    pub method: PruneMethod,
}

fn check_phase(section: &str, t: &TrainConfig, has_val: bool, problems: &mut Vec<String>) {
    if t.batch_size < 1 {
        problems.push(format!("{section}.batch_size = {}: expected >= 1", t.batch_size));
    }
    if !(t.lr > 0.0 && t.lr.is_finite()) {
        problems.push(format!("{section}.lr = {}: expected > 0", t.lr));
    }
    if !(0.0..1.0).contains(&t.momentum) {
        problems.push(format!("{section}.momentum = {}: expected a value in [0, 1)", t.momentum));
    }
    if !(t.weight_decay >= 0.0 && t.weight_decay.is_finite()) {
        problems.push(format!("{section}.weight_decay = {}: expected >= 0", t.weight_decay));
    }
    if !(t.gamma > 0.0 && t.gamma <= 1.0) {
        problems.push(format!("{section}.gamma = {}: expected a value in (0, 1]", t.gamma));
    }
    if t.milestones.windows(2).any(|w| w[0] >= w[1]) {
        problems
            .push(format!("{section}.milestones = {:?}: expected strictly increasing epochs", t.milestones));
    }
    if let Some(&m) = t.milestones.iter().find(|&&m| t.epochs > 0 && m >= t.epochs) {
        problems.push(format!(
            "{section}.milestones = {:?}: milestone {m} is not before the last epoch ({section}.epochs = {}), \
             so the learning rate would never drop there; give milestones below {section}.epochs \
             (or {section}.milestones = [] for none)",
            t.milestones, t.epochs
        ));
    }
    if t.select == Selection::BestVal && !has_val && t.epochs > 0 {
        problems.push(format!(
            "{section}.select = \"best-val\" needs a validation split: set data.validation (e.g. 0.1) \
             or choose select = \"last\""
        ));
    }
}

/// The run's identity: the config's hash, and for a spec model also the spec's content
/// (`spec_toml`), so that a run whose spec file was edited is not resumed as the same experiment.
pub fn run_hash(config: &Config, spec_toml: Option<&str>) -> String {
    match spec_toml {
        None => config.hash(),
        Some(spec) => {
            use sha2::{Digest, Sha256};
            let digest = Sha256::digest(format!("{}\n{spec}", config.hash()).as_bytes());
            digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
        }
    }
}

/// A spec model's TOML (none for a zoo architecture).
pub fn spec_toml(arch: &Architecture) -> Option<String> {
    match arch {
        Architecture::Zoo(_) => None,
        Architecture::Spec(spec) => Some(spec.to_toml()),
    }
}

/// One example's shape and the class count of the configured dataset: fixed by the kind, or,
/// for user datasets, read from the headers and labels in `data.dir` (a problem when they cannot
/// be read, naming `data.dir`, the file and the tensor).
fn data_info(config: &Config, problems: &mut Vec<String>) -> Option<relief_data::DataInfo> {
    let kind = config.data.dataset.kind();
    let d = &config.data;
    let folder = kind == relief_data::DatasetKind::ImageFolder;
    let user_only = [
        ("data.channels", d.channels.is_some(), folder),
        ("data.image_size", d.image_size.is_some(), folder),
        ("data.test_split", d.test_split.is_some(), kind.is_user()),
        ("data.split_seed", d.split_seed.is_some(), kind.is_user()),
    ];
    for (field, set, applies) in user_only {
        if set && !applies {
            problems.push(format!(
                "{field} does not apply to dataset = \"{kind}\" (see docs/data.md, \"Your own data\")"
            ));
        }
    }
    if (d.mean.is_some() || d.std.is_some())
        && !kind.is_user()
        && kind != relief_data::DatasetKind::FashionMnist
    {
        problems.push(format!(
            "data.mean / data.std do not apply to dataset = \"{kind}\" (its preprocessing is fixed); they apply to \
             idx, tensors, imagefolder and fashion-mnist"
        ));
    }
    match d.test_split {
        Some(ValSpec::Fraction(f)) if !(f > 0.0 && f < 1.0) => {
            problems.push(format!("data.test_split = {f}: expected a share in (0, 1) or a count >= 1"))
        }
        Some(ValSpec::Count(n)) if n < 1 => {
            problems.push(format!("data.test_split = {n}: expected a share in (0, 1) or a count >= 1"))
        }
        _ => {}
    }
    if !kind.is_user() {
        return Some(relief_data::DataInfo {
            shape: kind.image_shape().map(|s| s.to_vec()).unwrap_or_default(),
            classes: kind.classes().unwrap_or(2),
        });
    }
    let dir = config.data_dir();
    if !dir.exists() {
        problems.push(format!("data.dir = {:?}: no such file or directory", dir.display().to_string()));
        return None;
    }
    match relief_data::inspect(kind, &dir, &config.user_options()) {
        Ok(info) => Some(info),
        Err(e) => {
            problems.push(format!("data.dir = {:?} (dataset = \"{kind}\"): {e}", dir.display().to_string()));
            None
        }
    }
}

fn must_exist(field: &str, path: &Path, dir: bool, problems: &mut Vec<String>) {
    let ok = if dir { path.is_dir() } else { path.is_file() };
    if !ok {
        let what = if dir { "directory" } else { "file" };
        problems.push(format!("{field} = {:?}: no such {what}", path.display().to_string()));
    }
}

/// The checks of `prune.magnitude_match` that read the matched run directory: it exists, is a
/// relief run directory (has `config.resolved.toml`), ran NNrelief on the same model, class
/// count and dataset, and has at least `prune.iterations` iterations. One problem per line,
/// each naming `prune.magnitude_match`; empty when the option is unset or everything fits.
/// Whether the run has *completed* those iterations is checked at each pruning step instead.
pub fn check_magnitude_match(config: &Config) -> Vec<String> {
    let Some(dir) = &config.prune.magnitude_match else { return Vec::new() };
    let field = format!("prune.magnitude_match = {:?}", dir.display().to_string());
    if !dir.is_dir() {
        return vec![format!("{field}: no such directory (expected an NNrelief run directory)")];
    }
    let path = dir.join(CONFIG_FILE);
    if !path.is_file() {
        return vec![format!("{field}: not a relief run directory (no {CONFIG_FILE})")];
    }
    let matched = match std::fs::read_to_string(&path)
        .map_err(anyhow::Error::from)
        .and_then(|text| Config::from_toml(&text, &path.display().to_string()))
    {
        Ok(c) => c,
        Err(e) => return vec![format!("{field}: cannot read its {CONFIG_FILE}: {e:#}")],
    };
    let mut problems = Vec::new();
    if matched.prune.method != Method::Nnrelief {
        problems.push(format!(
            "{field}: that run uses prune.method = \"{}\", expected an NNrelief run",
            matched.prune.method
        ));
    }
    if matched.model != config.model {
        problems
            .push(format!("{field}: that run's model is {:?}, this run's {:?}", matched.model, config.model));
    }
    if matched.data.dataset != config.data.dataset {
        problems.push(format!(
            "{field}: that run's data.dataset is {:?}, this run's {:?}",
            matched.data.dataset.kind().name(),
            config.data.dataset.kind().name()
        ));
    }
    let classes = |c: &Config| {
        c.num_classes
            .or(c.data.dataset.kind().classes())
            .map_or("the dataset's".to_string(), |n| n.to_string())
    };
    if classes(&matched) != classes(config) {
        problems.push(format!(
            "{field}: that run has {} classes (num_classes), this run {}",
            classes(&matched),
            classes(config)
        ));
    }
    if matched.prune.iterations < config.prune.iterations {
        problems.push(format!(
            "{field}: that run has prune.iterations = {}, fewer than this run's {}",
            matched.prune.iterations, config.prune.iterations
        ));
    }
    problems
}

/// Refuses a run whose memory estimate ([`crate::memory`]) exceeds what the host can give
/// (`available`, bytes; unknown: no check). On the CPU the whole estimate counts; on CUDA, whose
/// memory libtorch does not report here, the parameters alone (the host holds them while
/// initialising and checkpointing).
fn check_memory(
    config: &Config,
    graph: &relief_core::PruneGraph,
    device: Device,
    available: Option<i64>,
    problems: &mut Vec<String>,
) {
    let Some(available) = available else { return };
    let state = |t: &TrainConfig| match t.optimizer {
        OptimizerKind::Adam => 2,
        OptimizerKind::Sgd if t.momentum != 0.0 => 1,
        OptimizerKind::Sgd => 0,
    };
    let train_batch = config.train.batch_size.max(config.retrain.batch_size);
    let forward_batch = config.prune.batch_size.max(config.data.eval_batch_size);
    let e = estimate(graph, train_batch, state(&config.train).max(state(&config.retrain)), forward_batch);
    let (need, what) = if device == Device::Cpu {
        (e.total(), "in all")
    } else {
        (e.parameters.saturating_mul(4), "for the weights on the host")
    };
    if need > available {
        problems.push(format!(
            "model = {:?} cannot fit in memory: {} parameters; at least {} needed {what} (parameters with \
             gradients, masks and optimizer state {}, activations at batch size {train_batch} (training) / \
             {forward_batch} (pruning, evaluation) {}), but this machine has {} available (see \
             docs/reliability.md, memory estimate); use a smaller model or batch size",
            config.model,
            e.parameters,
            human(need),
            human(e.parameter_bytes),
            human(e.activation_bytes),
            human(available)
        ));
    }
}

impl Plan {
    /// Validates `config` for `stages`; `origin` (the config file) prefixes the error.
    pub fn new(config: Config, stages: Stages, origin: &str) -> Result<Self> {
        Self::build(config, stages, origin, false)
    }

    /// Like [`Plan::new`], but a `prune.magnitude_match` directory that does not hold a run yet
    /// (no such directory, or no `config.resolved.toml` in it) is accepted: for validating a
    /// magnitude run before its matched NNrelief run has started (a study). The structural checks
    /// stay, and a matched directory that already holds a run is checked as by [`Plan::new`]
    /// ([`check_magnitude_match`]).
    pub fn new_deferring_match(config: Config, stages: Stages, origin: &str) -> Result<Self> {
        Self::build(config, stages, origin, true)
    }

    fn build(config: Config, stages: Stages, origin: &str, defer_match: bool) -> Result<Self> {
        let mut problems = Vec::new();
        let dataset = config.data.dataset.kind();
        // The example shape and class count: fixed by the kind, or read from the data's headers
        // and labels (user datasets); `None` when the data cannot be read (a problem then).
        let data_info = data_info(&config, &mut problems);
        let num_classes = config.num_classes.or(data_info.as_ref().map(|i| i.classes)).unwrap_or(2);
        if num_classes < 2 {
            problems.push(format!("num_classes = {num_classes}: expected >= 2"));
        }
        let arch = match Architecture::resolve(&config.model, Some(num_classes.max(2))) {
            Ok(a) => Some(a),
            Err(e) => {
                problems.push(format!("model = {:?}: {e}", config.model));
                None
            }
        };
        let graph = arch.as_ref().filter(|_| num_classes >= 2).and_then(|a| a.graph(num_classes).ok());
        if let Some(graph) = &graph {
            let want = relief_core::accounting::numel(&graph.input_shape);
            if let Some(info) =
                data_info.as_ref().filter(|i| relief_core::accounting::numel(&i.shape) != want)
            {
                let source = if dataset.is_user() {
                    format!(" in {}", config.data_dir().display())
                } else {
                    String::new()
                };
                problems.push(format!(
                    "model = {:?} takes inputs of shape {:?}, but {} {}{source} are {:?}",
                    config.model,
                    graph.input_shape,
                    dataset.name(),
                    if info.shape.len() == 1 { "feature vectors" } else { "images" },
                    info.shape
                ));
            }
            // The authors' ResNet code (reference semantics) is written around its stem: without
            // one, a spec's first convolution would be scored and backward-pruned by rules made
            // for block convolutions (observed: a 1-channel first convolution lost every filter on MNIST).
            let uses_reference = config.prune.semantics == relief_core::Semantics::Reference
                && config.prune.method != crate::config::Method::Magnitude;
            if uses_reference
                && graph.convention == relief_core::graph::Convention::Resnet
                && !graph.layers.iter().any(|l| l.role == relief_core::graph::Role::Stem)
            {
                problems.push(format!(
                    "model = {:?}: a ResNet-style model (residual blocks) under prune.semantics = \"reference\" \
                     needs its first convolution marked `stem = true`, as in the authors' ResNets (see \
                     docs/models.md); or set prune.semantics = \"paper\"",
                    config.model
                ));
            }
        }
        let device = match parse_device(&config.device) {
            Ok(d) => d,
            Err(e) => {
                problems.push(format!("device = {:?}: {e}", config.device));
                Device::Cpu
            }
        };
        if let Some(graph) = &graph {
            check_memory(&config, graph, device, host_available(), &mut problems);
        }
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if config.threads > cores * 4 {
            problems.push(format!(
                "threads = {}: expected 0 (libtorch's default) or at most {} (4 x the {cores} available cores)",
                config.threads,
                cores * 4
            ));
        }
        let data_dir = config.data_dir();
        if !dataset.is_user() {
            must_exist("data.dir", &data_dir, true, &mut problems);
        }
        let validation = match config.data.validation {
            ValSpec::Count(0) => None,
            ValSpec::Count(n) if n > 0 => Some(ValSize::Count(n)),
            ValSpec::Fraction(f) if f > 0.0 && f < 1.0 => Some(ValSize::Fraction(f)),
            ValSpec::Fraction(0.0) => None,
            other => {
                problems.push(format!(
                    "data.validation = {other}: expected a share in (0, 1), a count >= 1, or 0 for none"
                ));
                None
            }
        };
        for (field, v) in
            [("data.train_limit", config.data.train_limit), ("data.test_limit", config.data.test_limit)]
        {
            if v < 0 {
                problems.push(format!("{field} = {v}: expected >= 0 (0 = all)"));
            }
        }
        if config.data.eval_batch_size < 1 {
            problems.push(format!("data.eval_batch_size = {}: expected >= 1", config.data.eval_batch_size));
        }
        let has_val = validation.is_some();
        if config.pretrained.is_none() || stages == Stages::Train {
            check_phase("train", &config.train, has_val, &mut problems);
        }
        let last_iteration = if stages == Stages::Train { 0 } else { config.prune.iterations };
        if last_iteration > 0 {
            check_phase("retrain", &config.retrain, has_val, &mut problems);
        }
        if stages == Stages::Prune && config.pretrained.is_none() {
            problems.push(
                "pretrained is not set: `relief prune` needs a trained model (set `pretrained` in the config \
                 or pass --pretrained; `relief run` trains one first)"
                    .into(),
            );
        }
        if stages == Stages::Train && config.pretrained.is_some() {
            problems.push(
                "pretrained is set: `relief train` trains from scratch; remove it or use `relief prune`"
                    .into(),
            );
        }
        if let Some(p) = &config.pretrained {
            must_exist("pretrained", p, false, &mut problems);
        }
        let mut init = config.init.clone();
        if let Some(p) = &init {
            must_exist("init", p, false, &mut problems);
        }
        let p = &config.prune;
        if p.rewind && last_iteration > 0 && init.is_none() {
            if let Some(pre) = &config.pretrained {
                let beside = pre.with_file_name("init.safetensors");
                if beside.is_file() {
                    init = Some(beside);
                } else {
                    problems.push(format!(
                        "prune.rewind = true with a pretrained model needs its initial weights: set `init` \
                         (no init.safetensors beside {})",
                        pre.display()
                    ));
                }
            }
        }
        if let (Some(dir), Method::Nnrelief) = (&p.magnitude_match, p.method) {
            problems.push(format!(
                "prune.magnitude_match = {:?} is only valid with prune.method = \"magnitude\" (this run uses \
                 \"{}\"); remove it or set prune.method = \"magnitude\"",
                dir.display().to_string(),
                p.method
            ));
        }
        let method = match p.method {
            Method::Nnrelief => {
                let cfg = PruneConfig {
                    alpha_conv: p.alpha_conv,
                    alpha_fc: p.alpha_fc,
                    semantics: p.semantics,
                    chunk_size: p.chunk_size,
                };
                for (field, a) in [("prune.alpha_conv", p.alpha_conv), ("prune.alpha_fc", p.alpha_fc)] {
                    if !(a > 0.0 && a <= 1.0) {
                        problems.push(format!("{field} = {a}: expected a value in (0, 1]"));
                    }
                }
                if p.chunk_size < 1 {
                    problems.push(format!("prune.chunk_size = {}: expected >= 1", p.chunk_size));
                }
                if p.batch_size < 1 {
                    problems.push(format!("prune.batch_size = {}: expected >= 1", p.batch_size));
                }
                PruneMethod::Nnrelief(cfg)
            }
            Method::Magnitude if p.magnitude_match.is_some() => {
                let run = p.magnitude_match.clone().expect("matched");
                if !defer_match || RunDir::is_run(&run) {
                    problems.extend(check_magnitude_match(&config));
                }
                PruneMethod::MagnitudeMatch { run }
            }
            Method::Magnitude => {
                if !(p.magnitude_keep > 0.0 && p.magnitude_keep < 1.0) {
                    problems.push(format!(
                        "prune.magnitude_keep = {}: expected a value in (0, 1)",
                        p.magnitude_keep
                    ));
                }
                PruneMethod::Magnitude { scope: p.magnitude_scope, keep: p.magnitude_keep }
            }
        };
        if !problems.is_empty() {
            let n = problems.len();
            bail!(
                "{origin}: {n} problem{} in the configuration:\n  - {}",
                if n == 1 { "" } else { "s" },
                problems.join("\n  - ")
            );
        }
        let arch = arch.expect("checked");
        let name = config.name.clone().unwrap_or_else(|| format!("{}-{}", arch.name(), p.method));
        Ok(Self {
            hash: run_hash(&config, spec_toml(&arch).as_deref()),
            name,
            arch,
            num_classes,
            dataset,
            data_dir,
            device,
            validation,
            pretrained: config.pretrained.clone(),
            init,
            last_iteration,
            method,
            config,
        })
    }

    /// One line describing the experiment.
    pub fn describe(&self) -> String {
        let method = match &self.method {
            PruneMethod::Nnrelief(c) => {
                let has_conv =
                    self.arch.graph(self.num_classes).is_ok_and(|g| g.layers.iter().any(|l| l.op.is_conv()));
                if has_conv {
                    format!(
                        "NNrelief ({}, alpha_conv {}, alpha_fc {})",
                        c.semantics, c.alpha_conv, c.alpha_fc
                    )
                } else {
                    format!("NNrelief ({}, alpha_fc {})", c.semantics, c.alpha_fc)
                }
            }
            PruneMethod::Magnitude { scope, keep } => {
                format!("magnitude ({scope:?}, keep {keep} per iteration)")
            }
            PruneMethod::MagnitudeMatch { run } => {
                format!("magnitude at equal budget with the NNrelief run {} (per layer)", run.display())
            }
        };
        format!(
            "{} ({}) on {} from {}, {} iteration(s) of {method}, device {:?}",
            self.name,
            self.arch,
            self.dataset,
            self.data_dir.display(),
            self.last_iteration,
            self.device
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Config {
        let mut c = Config::default();
        c.data.dir = Some(PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist-sample")));
        c.device = "cpu".into();
        c
    }

    #[test]
    fn defaults_validate() {
        let p = Plan::new(demo(), Stages::All, "demo").unwrap();
        assert_eq!(p.num_classes, 10);
        assert_eq!(p.last_iteration, 5);
        assert_eq!(Plan::new(demo(), Stages::Train, "demo").unwrap().last_iteration, 0);
    }

    #[test]
    fn every_problem_is_listed_with_its_field() {
        let mut c = demo();
        c.model = "lenet7".into();
        c.prune.alpha_fc = 1.5;
        c.retrain.milestones = vec![40, 20];
        c.data.validation = ValSpec::Count(0);
        c.data.dir = Some(PathBuf::from("/no/such/dir"));
        let err = Plan::new(c, Stages::All, "x.toml").unwrap_err().to_string();
        for want in [
            "x.toml",
            "model = \"lenet7\"",
            "prune.alpha_fc = 1.5",
            "retrain.milestones",
            "best-val",
            "data.dir",
        ] {
            assert!(err.contains(want), "missing {want:?} in {err}");
        }
    }

    fn matched(dir: &Path) -> Config {
        let mut c = demo();
        c.prune.method = Method::Magnitude;
        c.prune.magnitude_match = Some(dir.to_path_buf());
        c
    }

    #[test]
    fn magnitude_match_needs_the_magnitude_method() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = matched(tmp.path());
        c.prune.method = Method::Nnrelief;
        for err in [
            Plan::new(c.clone(), Stages::All, "x").unwrap_err().to_string(),
            Plan::new_deferring_match(c, Stages::All, "x").unwrap_err().to_string(),
        ] {
            assert!(err.contains("prune.magnitude_match") && err.contains("prune.method"), "{err}");
        }
    }

    #[test]
    fn magnitude_match_checks_the_matched_run_unless_deferred() {
        let tmp = tempfile::tempdir().unwrap();
        // Not yet there: refused now, accepted when deferred.
        let missing = tmp.path().join("later");
        let err = Plan::new(matched(&missing), Stages::All, "x").unwrap_err().to_string();
        assert!(err.contains("prune.magnitude_match") && err.contains("no such directory"), "{err}");
        let p = Plan::new_deferring_match(matched(&missing), Stages::All, "x").unwrap();
        assert_eq!(p.method, PruneMethod::MagnitudeMatch { run: missing.clone() });
        assert!(p.describe().contains("equal budget"), "{}", p.describe());
        // A directory that is not a run.
        let err = Plan::new(matched(tmp.path()), Stages::All, "x").unwrap_err().to_string();
        assert!(err.contains("not a relief run directory"), "{err}");
        // magnitude_keep is ignored with a match.
        let mut c = matched(&missing);
        c.prune.magnitude_keep = 7.0;
        Plan::new_deferring_match(c, Stages::All, "x").unwrap();
        // A run of another model, method and length: every problem named, deferred or not.
        let run = tmp.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let mut other = demo();
        other.model = "lenet5".into();
        other.prune.method = Method::Magnitude;
        other.prune.iterations = 2;
        std::fs::write(run.join(CONFIG_FILE), other.to_toml()).unwrap();
        let mut c = matched(&run);
        c.model = "lenet300-100".into();
        for err in [
            Plan::new(c.clone(), Stages::All, "x").unwrap_err().to_string(),
            Plan::new_deferring_match(c.clone(), Stages::All, "x").unwrap_err().to_string(),
        ] {
            for want in ["\"lenet5\"", "prune.iterations = 2", "NNrelief run", "3 problems"] {
                assert!(err.contains(want), "missing {want:?} in {err}");
            }
        }
        assert_eq!(check_magnitude_match(&c).len(), 3);
        // The same run, fitting: accepted.
        other.model = c.model.clone();
        other.prune.method = Method::Nnrelief;
        other.prune.iterations = 5;
        std::fs::write(run.join(CONFIG_FILE), other.to_toml()).unwrap();
        assert!(check_magnitude_match(&c).is_empty());
        let p = Plan::new(c, Stages::All, "x").unwrap();
        assert_eq!(p.method, PruneMethod::MagnitudeMatch { run });
    }

    #[test]
    fn prune_needs_a_model_and_shapes_must_fit() {
        let err = Plan::new(demo(), Stages::Prune, "x").unwrap_err().to_string();
        assert!(err.contains("pretrained"), "{err}");
        let mut c = demo();
        c.model = "resnet20".into();
        let err = Plan::new(c, Stages::All, "x").unwrap_err().to_string();
        assert!(err.contains("[3, 32, 32]"), "{err}");
    }
}
