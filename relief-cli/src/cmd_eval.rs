//! `relief eval`: accuracy and parameter/FLOP accounting of a checkpoint.

use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::Args;
use relief_models::Architecture;
use serde_json::json;

use relief_experiment::evaluate::LoadedModel;
use relief_experiment::report::{render_table, thousands};
use relief_experiment::util::parse_device;

/// Arguments of `relief eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The checkpoint: a relief checkpoint (e.g. `RUN_DIR/iter-003.safetensors`), a compacted
    /// model from `relief export --compact`, or a safetensors file with PyTorch parameter names
    /// (then pass --model and --num-classes).
    pub checkpoint: PathBuf,
    /// Architecture (default: the checkpoint's metadata).
    #[arg(long)]
    pub model: Option<String>,
    /// Classes of the last layer (default: the checkpoint's metadata).
    #[arg(long)]
    pub num_classes: Option<i64>,
    /// Dataset to measure accuracy on: mnist, cifar10, cifar100, tiny-imagenet, fashion-mnist,
    /// idx, tensors, imagefolder (default: the checkpoint's metadata, which for the last four
    /// also records the shape, classes and normalisation, so the same test set is rebuilt).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Dataset directory (default: the checkpoint's metadata, else `data/<dataset>`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Examples per evaluation batch (does not change results).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: i64,
    /// Evaluate on the first N test examples only (0 = all).
    #[arg(long, default_value_t = 0)]
    pub test_limit: i64,
    /// Count parameters and FLOPs only; load no data.
    #[arg(long)]
    pub no_data: bool,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// Runs `relief eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let device = parse_device(&args.device)?;
    let arch = args
        .model
        .as_deref()
        .map(|m| Architecture::resolve(m, args.num_classes).map_err(|e| anyhow!("--model: {e}")))
        .transpose()?;
    let loaded = LoadedModel::load(&args.checkpoint, arch, args.num_classes, device)?;
    let (graph, compacted, dense, ck) =
        (&loaded.graph, loaded.compacted, loaded.compaction, &loaded.checkpoint);
    let acc = loaded.accounting();
    let test_acc = if args.no_data {
        None
    } else {
        loaded.test_accuracy(
            args.dataset.as_deref(),
            args.data.as_deref(),
            args.test_limit,
            args.batch_size,
            &args.checkpoint,
        )?
    };
    let class_names: Option<Vec<String>> =
        ck.get("data_class_names").and_then(|v| serde_json::from_str(v).ok());
    if args.json {
        let v = json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "arch": graph.arch,
            "num_classes": graph.num_classes,
            "compacted": compacted,
            "compaction": dense,
            "iteration": ck.get("iteration").and_then(|s| s.parse::<i64>().ok()),
            "test_accuracy": test_acc.map(|a| a.0),
            "test_examples": test_acc.map(|a| a.1),
            "dataset": ck.get("dataset"),
            "class_names": class_names,
            "params_alive": acc.params_alive,
            "params_total": acc.params_total,
            "compression": acc.compression(),
            "remaining_percent": acc.remaining_percent(),
            "full_params_alive": acc.full_params_alive,
            "full_params_total": acc.full_params_total,
            "flops": acc.flops_alive,
            "flops_dense": acc.flops_dense,
            "flops_pruned_percent": acc.flops_pruned_percent(),
            "layers": acc.layers,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let kind = if compacted { ", compacted" } else { "" };
    println!("{} ({}{kind}, {} classes)", args.checkpoint.display(), graph.arch, graph.num_classes);
    if let (Some(dataset), Some(shape)) = (ck.get("dataset"), ck.get("data_shape")) {
        let shape = format!(", examples {shape}");
        let norm = match (ck.get("data_mean"), ck.get("data_std")) {
            (Some(m), Some(s)) => format!(", normalised with mean [{m}] std [{s}]"),
            _ => String::new(),
        };
        println!("  dataset: {dataset}{shape}{norm}");
    }
    if let Some(names) = &class_names {
        println!("  classes: {}", names.join(", "));
    }
    if let Some((a, n)) = test_acc {
        println!("  test accuracy: {a:.2} % on {n} examples");
    }
    println!(
        "  parameters: {} of {} remain ({:.2} %, compression {:.2}x); with BatchNorm: {} of {}",
        thousands(acc.params_alive),
        thousands(acc.params_total),
        acc.remaining_percent(),
        acc.compression(),
        thousands(acc.full_params_alive),
        thousands(acc.full_params_total)
    );
    if let Some(d) = dense {
        println!(
            "  compaction: weight + bias entries {} -> {} ({:.2}x fewer), FLOPs per sample {} -> {} \
             ({:.2}x fewer)",
            thousands(d.dense_params),
            thousands(d.compact_params),
            d.dense_params as f64 / d.compact_params.max(1) as f64,
            thousands(d.dense_flops),
            thousands(d.compact_flops),
            d.dense_flops as f64 / d.compact_flops.max(1) as f64
        );
    }
    println!(
        "  FLOPs per sample: {} of {} ({:.2} % pruned)\n",
        thousands(acc.flops_alive),
        thousands(acc.flops_dense),
        acc.flops_pruned_percent()
    );
    let rows: Vec<Vec<String>> = acc
        .layers
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                format!("{} / {}", l.units_alive, l.units_total),
                format!("{} / {}", thousands(l.params_alive), thousands(l.params_total)),
                format!("{:.2}", 100.0 * l.params_alive as f64 / l.params_total.max(1) as f64),
                format!("{:.2}", 100.0 * (1.0 - l.flops_alive as f64 / l.flops_dense.max(1) as f64)),
            ]
        })
        .collect();
    print!(
        "{}",
        render_table(
            &["layer", "units alive", "params alive", "remaining %", "FLOPs pruned %"],
            &rows,
            &[false, true, true, true, true]
        )
    );
    Ok(())
}
