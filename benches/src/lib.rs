//! Shared fixtures for the criterion benches (see `benches/`).
//!
//! A bench fixture is a seeded model of the zoo pruned by the engine (`prune_step`, reference
//! semantics, `alpha_conv = 0.9`, `alpha_fc = 0.95`) a few times **without retraining** between
//! iterations:
//!
//! - LeNet-300-100 and LeNet-5: trained for one epoch on the bundled MNIST sample (Adam,
//!   lr 1e-3, batch 120; a second or two) so the masks follow real digit statistics, then pruned
//!   3 times on 1000 training digits;
//! - VGG-like and ResNet-20: untrained (Kaiming init), BatchNorm given the golden fixtures'
//!   random statistics (gamma ~ U(0.5, 1.5), beta ~ 0.25 N(0,1), mean ~ 0.25 N(0,1),
//!   var ~ U(0.5, 2.5), 1/32 of the channels with beta = -30), pruned 2 times on 256 N(0,1)
//!   images.
//!
//! The bench name carries the model's remaining share as `sNN` = NN % of the prunable weights
//! and biases still alive (authors' count). Each fixture also holds the compacted model
//! (`relief_core::compact`) and a sparse model (`relief_core::sparse`, every linear layer of
//! the compacted model as CSR).
//!
//! **Test mode.** `cargo test --all-targets` runs each bench binary without `--bench`;
//! criterion then runs every benchmark once. [`quick`] detects that mode and fixtures shrink
//! (no LeNet training, tiny pruning batches, one iteration) so the whole run takes seconds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use relief_core::accounting::account;
use relief_core::compact::{compact_with_report, Compacted};
use relief_core::sparse::{SparseModel, SparsePolicy};
use relief_core::train::{train_step, OptimizerSpec};
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

/// Models every bench covers, by zoo name.
pub const MODELS: [&str; 4] = ["lenet300-100", "lenet5", "vgg-like", "resnet20"];

/// True when the binary runs in criterion's test mode (no `--bench` argument) and
/// `RELIEF_BENCH_FULL` is unset: fixtures and batches shrink so `cargo test --all-targets`
/// stays fast.
pub fn quick() -> bool {
    !std::env::args().any(|a| a == "--bench") && std::env::var_os("RELIEF_BENCH_FULL").is_none()
}

/// Whether model `name` can match the command line's criterion filter: when an argument names
/// one of [`MODELS`], only the models it names are set up (fixtures are expensive), e.g.
/// `cargo bench -p relief-benches --bench inference -- lenet5`.
pub fn selected(name: &str) -> bool {
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-') && MODELS.iter().any(|m| a.contains(m)))
        .collect();
    named.is_empty() || named.iter().any(|a| a.contains(name))
}

/// CUDA when available, else the CPU. Also applies `RELIEF_THREADS` (libtorch intra-op
/// threads) when set, so every bench can be run single-threaded on a busy machine, and the
/// host memory policy of the `relief` binary ([`relief_core::host_memory`]).
pub fn device() -> Device {
    relief_core::host_memory::retain_freed_memory();
    if let Some(t) = std::env::var("RELIEF_THREADS").ok().and_then(|t| t.parse().ok()) {
        tch::set_num_threads(t);
    }
    Device::cuda_if_available()
}

/// `cpu` or `cuda`, the prefix of every bench name.
pub fn device_tag(device: Device) -> &'static str {
    match device {
        Device::Cpu => "cpu",
        _ => "cuda",
    }
}

/// Waits for queued CUDA work (a no-op on the CPU).
pub fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Times `iters` runs of `f` with device synchronisation before and after (for
/// `Bencher::iter_custom`); `setup` runs before each run, untimed.
pub fn timed<S, T>(
    device: Device,
    iters: u64,
    mut setup: impl FnMut() -> S,
    mut f: impl FnMut(S) -> T,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let s = setup();
        sync(device);
        let start = Instant::now();
        let out = f(s);
        sync(device);
        total += start.elapsed();
        drop(out);
    }
    total
}

/// Input shape `N x input_shape` of `arch`.
pub fn input_shape(arch: Arch, n: i64) -> Vec<i64> {
    let mut s = vec![n];
    s.extend(arch.input_shape());
    s
}

fn mnist_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-sample")
}

/// `n` MNIST training digits (`/255`) shaped for `arch`, with labels; `None` when the sample
/// is missing.
pub fn mnist(arch: Arch, n: i64) -> Option<(Tensor, Tensor)> {
    let data = relief_data::Mnist::load(&mnist_dir()).ok()?;
    let n = n.min(data.train.images.size()[0]);
    let x = data.train.images.narrow(0, 0, n).to_kind(Kind::Float) / 255.0;
    Some((x.reshape(input_shape(arch, n).as_slice()), data.train.labels.narrow(0, 0, n)))
}

/// A batch for `arch`: MNIST digits for the LeNets (when the sample is present), N(0,1)
/// otherwise; labels uniform in `0..classes`. Seeded.
pub fn batch(arch: Arch, n: i64, classes: i64, device: Device, seed: i64) -> (Tensor, Tensor) {
    if matches!(arch, Arch::Lenet300_100 | Arch::Lenet5) {
        if let Some((x, y)) = mnist(arch, n) {
            if x.size()[0] == n {
                return (x.to_device(device), y.to_device(device));
            }
        }
    }
    tch::manual_seed(seed);
    let x = Tensor::randn(input_shape(arch, n).as_slice(), (Kind::Float, device));
    let y = Tensor::randint(classes, [n], (Kind::Int64, device));
    (x, y)
}

/// The golden fixtures' random BatchNorm statistics (see module docs). Seeded.
pub fn randomise_batch_norms(model: &Model, seed: i64) {
    tch::manual_seed(seed);
    let params = model.params();
    let device = model.device();
    tch::no_grad(|| {
        for layer in &model.graph.layers {
            let Some(bn) = &layer.batch_norm else { continue };
            let c = layer.op.outputs();
            let get = |s: &str| params[&format!("{bn}.{s}")].shallow_clone();
            get("weight").copy_(&(Tensor::rand([c], (Kind::Float, device)) + 0.5));
            get("bias").copy_(&(Tensor::randn([c], (Kind::Float, device)) * 0.25));
            get("running_mean").copy_(&(Tensor::randn([c], (Kind::Float, device)) * 0.25));
            get("running_var").copy_(&(Tensor::rand([c], (Kind::Float, device)) * 2.0 + 0.5));
            let _ = get("bias").narrow(0, 0, (c / 32).max(1)).fill_(-30.0);
        }
    });
}

/// A pruned model with its compacted and sparse forms.
pub struct Fixture {
    /// Zoo name.
    pub name: String,
    /// The architecture.
    pub arch: Arch,
    /// The pruned model (masked weights are zero).
    pub model: Model,
    /// Its masks.
    pub masks: MaskSet,
    /// The compacted model.
    pub compact: Compacted,
    /// The compacted model with every linear layer as CSR.
    pub sparse: SparseModel,
    /// Percent of the prunable weights and biases alive (authors' count), rounded down.
    pub kept_percent: i64,
    /// Dense FLOPs per sample (original model).
    pub flops_dense: i64,
    /// FLOPs per sample with masked entries skipped.
    pub flops_alive: i64,
    /// Dense FLOPs per sample of the compacted model.
    pub flops_compact: i64,
    /// FLOPs per sample of the sparse model (CSR layers at their non-zeros).
    pub flops_sparse: i64,
}

fn train_one_epoch(model: &Model, masks: &MaskSet, x: &Tensor, y: &Tensor) {
    let spec = OptimizerSpec::Adam { lr: 1e-3, weight_decay: 5e-4 };
    let mut opt = spec.build(&model.vs).expect("optimizer");
    let bound = model.bound();
    let params = model.params();
    let n = x.size()[0];
    let mut s = 0;
    while s < n {
        let len = 120.min(n - s);
        let _ = train_step(
            &model.graph,
            &bound,
            &params,
            masks,
            &mut opt,
            &x.narrow(0, s, len),
            &y.narrow(0, s, len),
        );
        s += len;
    }
}

impl Fixture {
    /// Builds the fixture of zoo model `name` on `device` (see module docs; smaller in
    /// [`quick`] mode).
    pub fn new(name: &str, device: Device) -> Self {
        let quick = quick();
        let arch: Arch = name.parse().expect("zoo model name");
        let classes = 10;
        let model = Model::new(arch, classes, device, 1);
        let mut masks = MaskSet::ones(&model.graph, device);
        let lenet = matches!(arch, Arch::Lenet300_100 | Arch::Lenet5);
        let (prune_batch, iterations) = if lenet {
            if !quick {
                if let Some((x, y)) = mnist(arch, 8000) {
                    train_one_epoch(&model, &masks, &x.to_device(device), &y.to_device(device));
                }
            }
            (if quick { 100 } else { 1000 }, if quick { 1 } else { 3 })
        } else {
            randomise_batch_norms(&model, 2);
            (if quick { 8 } else { 256 }, if quick { 1 } else { 2 })
        };
        let (x, _) = batch(arch, prune_batch, classes, device, 3);
        let cfg =
            PruneConfig { alpha_conv: 0.9, alpha_fc: 0.95, semantics: Semantics::Reference, chunk_size: 256 };
        for _ in 0..iterations {
            prune_step(&model.graph, &model.params(), &mut masks, &x, &cfg)
                .expect("pruning the bench fixture");
        }
        let acc = account(&model.graph, &masks);
        let compact = compact_with_report(&model.graph, &model.params(), &masks).expect("compaction");
        let policy = SparsePolicy::Threshold { linear: 1.0, conv: 0.0 };
        let sparse = SparseModel::new(&compact.graph, &compact.tensors, &policy).expect("sparse model");
        let flops_sparse = compact
            .graph
            .layers
            .iter()
            .zip(sparse.choices())
            .zip(&compact.report.layers)
            .map(|((l, c), r)| {
                if c.sparse {
                    let w: i64 = l.op.weight_shape().iter().product();
                    let nnz = (c.density * w as f64).round() as i64;
                    l.output_positions() * (2 * nnz + if l.bias { l.op.outputs() } else { 0 })
                } else {
                    r.flops.1
                }
            })
            .sum();
        Self {
            name: name.to_string(),
            arch,
            kept_percent: (acc.remaining_percent()).floor() as i64,
            flops_dense: acc.flops_dense,
            flops_alive: acc.flops_alive,
            flops_compact: compact.report.flops_after,
            flops_sparse,
            model,
            masks,
            compact,
            sparse,
        }
    }

    /// `sNN`, the sparsity tag of bench names.
    pub fn tag(&self) -> String {
        format!("s{}", self.kept_percent)
    }

    /// Batch sizes of the inference benches: 1, 32, 256 (VGG-like: 1, 32 in quick mode and
    /// 256 only when `RELIEF_BENCH_HEAVY` is set, see `docs/performance.md`).
    pub fn inference_batches(&self) -> Vec<i64> {
        if quick() {
            return vec![1, 2];
        }
        let heavy = std::env::var_os("RELIEF_BENCH_HEAVY").is_some();
        if self.arch == Arch::Vgg(relief_models::VggConfig::Like) && !heavy {
            vec![1, 32]
        } else {
            vec![1, 32, 256]
        }
    }
}

/// Pruning batch of the prune benches: 1000 (VGG-like: 256 unless `RELIEF_BENCH_HEAVY` is
/// set), 8 in quick mode.
pub fn prune_batch(arch: Arch) -> i64 {
    if quick() {
        8
    } else if arch == Arch::Vgg(relief_models::VggConfig::Like)
        && std::env::var_os("RELIEF_BENCH_HEAVY").is_none()
    {
        256
    } else {
        1000
    }
}

/// Batch of the training-step benches: 120 (MNIST models) or 128 (CIFAR models); 4 in quick
/// mode.
pub fn train_batch(arch: Arch) -> i64 {
    if quick() {
        4
    } else if matches!(arch, Arch::Lenet300_100 | Arch::Lenet5) {
        120
    } else {
        128
    }
}

/// Criterion settings for the heavy benches on a 2-core machine.
pub fn configure<M: criterion::measurement::Measurement>(group: &mut criterion::BenchmarkGroup<'_, M>) {
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(if quick() { 1 } else { 500 }));
    group.measurement_time(Duration::from_secs(if quick() { 1 } else { 3 }));
    group.sampling_mode(criterion::SamplingMode::Flat);
}
