//! `relief prune-step`: one NNrelief pruning call from the shell.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use clap::Args;
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Architecture, Model};

use relief_experiment::checkpoint::{self, check_tensors, Checkpoint};
use relief_experiment::util::parse_device;

/// Arguments of `relief prune-step`.
#[derive(Debug, Args)]
pub struct PruneStepArgs {
    /// Architecture (lenet300-100, lenet5, vgg-like, vgg11..19, resnet20..110, vgg16-tiny,
    /// vgg19-tiny, resnet18-tiny).
    #[arg(long)]
    model: String,
    /// Number of classes of the model's last layer.
    #[arg(long, default_value_t = 10)]
    num_classes: i64,
    /// Safetensors file holding the weights (every state_dict entry under --weights-prefix).
    #[arg(long)]
    weights: PathBuf,
    /// Prefix of the weight tensors in --weights (e.g. `before.` for the golden fixtures).
    #[arg(long, default_value = "")]
    weights_prefix: String,
    /// Safetensors file holding the pruning batch.
    #[arg(long)]
    batch: PathBuf,
    /// Name of the batch tensor in --batch.
    #[arg(long, default_value = "x")]
    batch_key: String,
    /// Share of each filter's importance to keep (convolutions), in (0, 1].
    #[arg(long, default_value_t = 0.9)]
    alpha_conv: f64,
    /// Share of each neuron's importance to keep (fully connected layers), in (0, 1].
    #[arg(long, default_value_t = 0.95)]
    alpha_fc: f64,
    /// Existing masks to start from (as a second pruning iteration does).
    #[arg(long)]
    masks: Option<PathBuf>,
    /// Prefix of the mask tensors in --masks.
    #[arg(long, default_value = "mask.")]
    masks_prefix: String,
    /// `reference` (the authors' code, bit for bit) or `paper` (quirks fixed).
    #[arg(long, default_value = "reference")]
    semantics: Semantics,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Samples per forward chunk while scoring (bounds memory).
    #[arg(long, default_value_t = 256)]
    chunk_size: i64,
    /// Output safetensors file: `mask.<name>` and `after.<state_dict key>` tensors.
    #[arg(long)]
    out: PathBuf,
}

/// Runs one pruning call and writes masks and the after-state.
///
/// Every input is checked at load: NaN/inf entries in the weights, the batch or the masks and
/// mask values other than 0 and 1 are refused with the file and tensor named. `--weights` may
/// be a relief checkpoint (`relief train`/`prune`/`run`): with an empty `--weights-prefix` its
/// `mask.*`, `opt.*` and `best.*` tensors are not weights, and its masks are the starting masks
/// unless `--masks` is given.
pub fn run(args: PruneStepArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let arch =
        Architecture::resolve(&args.model, Some(args.num_classes)).map_err(|e| anyhow!("--model: {e}"))?;
    let mut model = Model::build(&arch, args.num_classes, device, 0).map_err(|e| anyhow!("--model: {e}"))?;
    let ck = Checkpoint::read_checking(&args.weights, None)?;
    ck.refuse_compacted(&args.weights)?;
    let relief_checkpoint = args.weights_prefix.is_empty() && ck.get("format") == Some(checkpoint::FORMAT);
    let weights = if relief_checkpoint {
        ck.model_state()
    } else {
        ck.tensors.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect()
    };
    model
        .load_tensors(&weights, &args.weights_prefix)
        .with_context(|| format!("loading weights from {}", args.weights.display()))?;
    drop(weights);
    let batch_file = Checkpoint::read_checking(&args.batch, None)?;
    let batch = batch_file
        .tensors
        .iter()
        .find(|(k, _)| *k == args.batch_key)
        .map(|(_, t)| t.shallow_clone())
        .ok_or_else(|| anyhow!("{}: no tensor named `{}`", args.batch.display(), args.batch_key))?;
    let mut masks = match &args.masks {
        Some(path) => {
            let file = Checkpoint::read_checking(path, Some(&args.masks_prefix))?;
            MaskSet::import(&model.graph, &file.tensors, &args.masks_prefix, device)
                .with_context(|| format!("loading masks from {}", path.display()))?
        }
        None if relief_checkpoint && ck.has_masks() => {
            check_tensors(&ck.tensors, &args.weights, Some(checkpoint::MASK_PREFIX))?;
            eprintln!(
                "note: starting from the masks of {} (pass --masks to override)",
                args.weights.display()
            );
            MaskSet::import(&model.graph, &ck.tensors, checkpoint::MASK_PREFIX, device)
                .with_context(|| format!("loading masks from {}", args.weights.display()))?
        }
        None => MaskSet::ones(&model.graph, device),
    };
    drop(ck);
    let cfg = PruneConfig {
        alpha_conv: args.alpha_conv,
        alpha_fc: args.alpha_fc,
        semantics: args.semantics,
        chunk_size: args.chunk_size,
    };
    let params = model.params();
    let outcome = prune_step(&model.graph, &params, &mut masks, &batch, &cfg)
        .with_context(|| format!("pruning {} on {}", arch, args.batch.display()))?;
    let mut out = masks.export("mask.", true);
    out.extend(model.state("after."));
    relief_core::tensor_io::write_safetensors(&args.out, &out, &Default::default())?;
    let account = relief_core::accounting::account(&model.graph, &masks);
    println!(
        "{arch}: {} of {} parameters kept ({:.2} %, compression {:.2}x), {} pass(es), {} dead units; wrote {}",
        account.params_alive,
        account.params_total,
        account.remaining_percent(),
        account.compression(),
        outcome.passes,
        outcome.dead.iter().sum::<i64>(),
        args.out.display()
    );
    Ok(())
}
