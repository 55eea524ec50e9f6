//! `relief export --compact [--sparse]`: turn a masked checkpoint into a smaller dense model file,
//! optionally stored sparse (non-zero entries plus a CSR or bitmask index, float32 or float16).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use relief_core::compact::{compact_with_report, load_compact, save_compact_with, save_sparse_with};
use relief_core::engine::mark_inert_masks;
use relief_core::exec::{forward, ForwardOptions};
use relief_core::params::Bound;
use relief_core::sparse_file::ValueDtype;
use relief_core::Semantics;
use relief_models::Architecture;
use tch::{Device, Kind, Tensor};

use relief_experiment::checkpoint::{run_checkpoint_kind, Checkpoint};
use relief_experiment::rundir::CONFIG_FILE;

/// Arguments of `relief export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Masked checkpoint to compact: a safetensors file with the model's state_dict tensors
    /// (PyTorch names) and `mask.<name>` masks (conv masks may be `out x in x 1 x 1`), with
    /// metadata `arch` and `num_classes` unless --model / --num-classes are given (a relief
    /// checkpoint works as is; `opt.*` and `best.*` tensors are ignored).
    #[arg(long = "compact", value_name = "CHECKPOINT")]
    checkpoint: PathBuf,
    /// Output safetensors file: the compacted tensors, with the compacted graph as JSON in the
    /// metadata (`graph`); written atomically.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Architecture, when the checkpoint's metadata has no `arch`.
    #[arg(long)]
    model: Option<String>,
    /// Number of classes, when the checkpoint's metadata has no `num_classes`.
    #[arg(long)]
    num_classes: Option<i64>,
    /// Semantics the masks were made with: in `reference` a ResNet stem mask is inert (never
    /// applied), as in the authors' code. Default: the checkpoint's `inert_masks` metadata, else
    /// its `semantics`, else reference.
    #[arg(long)]
    semantics: Option<Semantics>,
    /// Also run the masked and the compacted model on N(0,1) inputs of this batch size and
    /// print the largest logit difference (fails above 1e-4 relative; 5e-2 for --dtype f16).
    #[arg(long, value_name = "BATCH")]
    check: Option<i64>,
    /// Print the per-layer table.
    #[arg(long)]
    verbose: bool,
    /// Store the compacted model sparse: each weight's non-zero entries plus a CSR index (or a
    /// bitmask where denser); `relief eval` and the library read it as a compacted model.
    #[arg(long)]
    sparse: bool,
    /// Value precision of a --sparse file: f32 (exact) or f16 (half the value bytes, rounded).
    #[arg(long, value_name = "f32|f16", default_value = "f32", requires = "sparse")]
    dtype: ValueDtype,
}

/// Runs the export.
pub fn run(args: ExportArgs) -> Result<()> {
    let origin = args.checkpoint.as_path();
    check_output(origin, &args.out)?;
    let ck = Checkpoint::read(origin)?;
    let arch = match &args.model {
        Some(m) => Some(Architecture::resolve(m, args.num_classes).map_err(|e| anyhow!("--model: {e}"))?),
        None => None,
    };
    let device = Device::Cpu;
    let model = ck.model(origin, arch, args.num_classes, device)?;
    if !ck.has_masks() {
        eprintln!("note: {} has no `mask.*` tensors: compacting the dense model", origin.display());
    }
    let mut masks = ck.masks(&model, origin)?;
    // Which masks are inert: --semantics, else the checkpoint's own `inert_masks`, else its
    // `semantics` (default reference): a reference ResNet stem mask is never applied.
    let semantics = match (args.semantics, ck.get("inert_masks"), ck.get("semantics")) {
        (Some(s), _, _) => Some(s),
        (None, Some(_), _) => None,
        (None, None, Some(s)) => {
            Some(s.parse().map_err(|e| anyhow!("{}: metadata `semantics`: {e}", origin.display()))?)
        }
        (None, None, None) => Some(Semantics::Reference),
    };
    if let Some(semantics) = semantics {
        mark_inert_masks(&model.graph, &mut masks, semantics);
    }
    let arch = model.arch.clone();
    let params = model.params();
    let c = compact_with_report(&model.graph, &params, &masks).context("compacting")?;
    // Provenance, so `relief eval` can find the data and report against the dense model.
    let mut extra: std::collections::BTreeMap<String, String> = ["dataset", "data_dir", "iteration"]
        .into_iter()
        .chain(relief_experiment::pipeline::DATA_METADATA_KEYS)
        .filter_map(|k| ck.get(k).map(|v| (k.to_string(), v.to_string())))
        .collect();
    extra.insert("source".to_string(), origin.display().to_string());
    let r = &c.report;
    for (k, v) in [
        ("dense_params", r.params_before),
        ("compact_params", r.params_after),
        ("dense_flops", r.flops_before),
        ("compact_flops", r.flops_after),
    ] {
        extra.insert(k.to_string(), v.to_string());
    }
    let sparse = if args.sparse {
        extra.insert("storage".to_string(), format!("sparse-{:?}", args.dtype).to_lowercase());
        Some(
            save_sparse_with(&args.out, &c.graph, &c.tensors, &extra, args.dtype)
                .with_context(|| format!("writing {}", args.out.display()))?,
        )
    } else {
        save_compact_with(&args.out, &c.graph, &c.tensors, &extra)
            .with_context(|| format!("writing {}", args.out.display()))?;
        None
    };
    let r = &c.report;
    if args.verbose {
        println!("{:<28} {:>15} {:>15} {:>8}", "layer", "outputs", "inputs", "folded");
        for l in &r.layers {
            println!(
                "{:<28} {:>7} -> {:<5} {:>7} -> {:<5} {:>8}",
                l.name, l.outputs.0, l.outputs.1, l.inputs.0, l.inputs.1, l.folded_inputs
            );
        }
    }
    println!(
        "{arch}: parameters {} -> {} (alive {} -> {}), FLOPs/sample {} -> {} ({:.2}x fewer); wrote {}",
        r.params_before,
        r.params_after,
        r.alive_before,
        r.alive_after,
        r.flops_before,
        r.flops_after,
        r.flops_before as f64 / r.flops_after.max(1) as f64,
        args.out.display()
    );
    if let Some(s) = &sparse {
        let file = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
        let stored = s.value_bytes + s.index_bytes;
        println!(
            "sparse ({:?}): {} bytes on disk = {:.2}x the {} bytes of values ({} non-zero weights) and \
             indices ({} bytes; {} CSR, {} bitmask tensors); dense float32 tensors {} bytes ({:.2}x smaller)",
            args.dtype,
            file,
            file as f64 / stored.max(1) as f64,
            stored,
            s.nonzeros,
            s.index_bytes,
            s.csr,
            s.bitmask,
            s.dense_bytes,
            s.dense_bytes as f64 / file.max(1) as f64
        );
    }
    if let Some(n) = args.check {
        let mut shape = vec![n];
        shape.extend(arch.input_shape());
        let x = Tensor::randn(shape.as_slice(), (Kind::Float, device));
        masks.apply(&params);
        let (a, b) = tch::no_grad(|| {
            let a = forward(&model.graph, &model.bound(), Some(&masks), &x, ForwardOptions::EVAL, None);
            // The file as written, read back (a sparse file decodes to dense tensors).
            let (graph, tensors) = load_compact(&args.out)?;
            let bound = Bound::new(&graph, &tensors)?;
            let b = forward(&graph, &bound, None, &x, ForwardOptions::EVAL, None);
            Ok::<_, relief_core::CoreError>((a, b))
        })?;
        let diff = (&a - &b).abs().max().double_value(&[]);
        let scale = a.abs().max().double_value(&[]).max(1.0);
        println!("check: max |logit difference| on {n} N(0,1) inputs = {diff:.3e} (logit scale {scale:.3e})");
        // A NaN difference fails too.
        // float16 values round at 2^-11 relative: a looser bound there.
        let tol = if args.sparse && args.dtype == ValueDtype::F16 { 5e-2 } else { 1e-4 };
        if diff.is_nan() || diff > tol * scale {
            bail!("the compacted model's logits differ from the masked model's by {diff:e}");
        }
    }
    Ok(())
}

/// Whether `a` and `b` are the same file (same device and inode, so hard links and symbolic
/// links count; canonical paths elsewhere).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return (x.dev(), x.ino()) == (y.dev(), y.ino());
        }
    }
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// The relief run directory `path` lies in (its directory, as written or with links resolved,
/// holds `config.resolved.toml`).
fn enclosing_run_dir(path: &Path) -> Option<PathBuf> {
    let parent = |p: &Path| match p.parent() {
        Some(d) if d.as_os_str().is_empty() => PathBuf::from("."),
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let mut candidates = vec![parent(path)];
    if let Ok(c) = path.canonicalize() {
        candidates.push(parent(&c));
    }
    candidates.into_iter().find(|d| d.join(CONFIG_FILE).is_file())
}

/// Refuses an `--out` that would destroy data: the input itself, a relief run's checkpoint, or
/// any existing file inside a relief run directory. A new file is always fine.
fn check_output(input: &Path, out: &Path) -> Result<()> {
    if same_file(input, out) {
        bail!(
            "{}: --out is the input checkpoint itself ({}); writing it would replace the masked \
             checkpoint with the compacted model. Choose another --out file",
            out.display(),
            input.display()
        );
    }
    // `symlink_metadata`: a dangling link is still something that exists there.
    if std::fs::symlink_metadata(out).is_err() {
        return Ok(());
    }
    if let Some(kind) = run_checkpoint_kind(out) {
        bail!(
            "{}: is a relief run checkpoint (kind `{kind}`); export never overwrites one. Choose \
             another --out file",
            out.display()
        );
    }
    if let Some(run) = enclosing_run_dir(out) {
        bail!(
            "{}: exists inside the relief run directory {} (it holds {CONFIG_FILE}); export never \
             overwrites a file of a run. Choose an --out file that does not exist yet, or one \
             outside the run directory",
            out.display(),
            run.display()
        );
    }
    Ok(())
}
