//! `relief models`: the built-in model specs (`list`) and one spec's per-layer shapes,
//! parameters and FLOPs (`show`), zoo name or TOML file; `show NAME --toml` prints the spec
//! itself, to save and edit (see docs/models.md).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use relief_core::accounting::account_dense;
use relief_models::spec::zoo_toml;
use relief_models::{Arch, Inference, ModelSpec, SpecError, ZOO_SPECS};

use relief_experiment::report::{render_table, thousands};

/// Arguments of `relief models`.
#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// The `relief models` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// The built-in models: name, input shape, classes, parameters, FLOPs per sample.
    List,
    /// One model, a zoo name or a spec file: per layer its output shape, parameters and FLOPs.
    /// A spec file is checked first (shape inference); an error names the layer.
    Show(ShowArgs),
}

/// Arguments of `relief models show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// A zoo model (see `relief models list`) or a TOML spec file.
    pub model: String,
    /// Print only the spec as TOML (ready to save and edit as a new model).
    #[arg(long)]
    pub toml: bool,
    /// Number of classes (default: the spec's `num_classes`).
    #[arg(long)]
    pub num_classes: Option<i64>,
}

/// Runs `relief models`.
pub fn run(args: ModelsArgs) -> Result<()> {
    match args.command {
        ModelsCommand::List => {
            print!("{}", list()?);
            Ok(())
        }
        ModelsCommand::Show(a) => {
            print!("{}", show(&a)?);
            Ok(())
        }
    }
}

/// Totals of a built spec: every trainable parameter (BatchNorm included), weights + biases of
/// the prunable layers, the authors' count, dense FLOPs per sample, and per spec entry
/// `(params, flops)`.
struct Counts {
    params: i64,
    prunable: i64,
    authors: i64,
    flops: i64,
    per_entry: Vec<(i64, i64)>,
}

fn counts(inf: &Inference) -> Counts {
    // From shapes: counting allocates nothing, so a network too large to build is still shown.
    let acc = account_dense(&inf.graph);
    let per_entry = inf
        .layers
        .iter()
        .map(|e| {
            let w = sat_sum(e.weights.iter().map(|&l| acc.layers[l].params_total));
            let bn = sat_sum(e.batch_norms.iter().map(|&l| 2 * acc.layers[l].units_total));
            let f = sat_sum(e.weights.iter().map(|&l| acc.layers[l].flops_dense));
            (w.saturating_add(bn), f)
        })
        .collect();
    Counts {
        params: acc.full_params_total,
        prunable: sat_sum(acc.layers.iter().map(|l| l.params_total)),
        authors: acc.params_total,
        flops: acc.flops_dense,
        per_entry,
    }
}

/// A sum that saturates at `i64::MAX` (a spec may describe an absurdly large network).
fn sat_sum(v: impl Iterator<Item = i64>) -> i64 {
    v.fold(0i64, i64::saturating_add)
}

fn shape(s: &[i64]) -> String {
    s.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
}

fn list() -> Result<String> {
    let mut rows = Vec::new();
    for name in ZOO_SPECS {
        let spec = ModelSpec::zoo(name).with_context(|| format!("built-in spec {name}"))?;
        let inf = spec.infer(spec.num_classes)?;
        let c = counts(&inf);
        rows.push(vec![
            name.to_string(),
            shape(&spec.input_shape),
            spec.num_classes.to_string(),
            inf.graph.layers.len().to_string(),
            thousands(c.params),
            thousands(c.flops),
        ]);
    }
    let mut out = render_table(
        &["model", "input", "classes", "layers", "params", "FLOPs"],
        &rows,
        &[false, false, true, true, true, true],
    );
    out.push_str(
        "\n  params: every trainable parameter (BatchNorm included); FLOPs: one forward pass of one\n  \
         sample (a multiply-add is 2). `relief models show NAME` gives the per-layer table,\n  \
         `--toml` the spec to start your own model from.\n",
    );
    Ok(out)
}

/// The spec named by `model`: a zoo name, else a file.
fn load(model: &str) -> Result<(ModelSpec, Option<&'static str>)> {
    if let Ok(arch) = model.parse::<Arch>() {
        let text = zoo_toml(&arch.to_string()).context("built-in spec")?;
        return Ok((ModelSpec::parse(text)?, Some(text)));
    }
    let path = Path::new(model);
    if !path.exists() && !model.ends_with(".toml") && !model.contains(std::path::MAIN_SEPARATOR) {
        bail!("unknown model `{model}`: not a zoo model ({}) and no such file", ZOO_SPECS.join(", "));
    }
    let spec = ModelSpec::from_file(path).map_err(|e| match e {
        // Read and syntax errors name the file already.
        SpecError::Read { .. } | SpecError::Syntax(_) => anyhow!(e),
        other => anyhow!(other).context(path.display().to_string()),
    })?;
    Ok((spec, None))
}

fn show(args: &ShowArgs) -> Result<String> {
    let (spec, builtin) = load(&args.model)?;
    let classes = args.num_classes.unwrap_or(spec.num_classes);
    let inf = spec.infer(classes).with_context(|| format!("model `{}` ({})", spec.name, args.model))?;
    if args.toml {
        return Ok(match (builtin, args.num_classes) {
            (Some(text), None) => text.to_string(),
            _ => ModelSpec { num_classes: classes, ..spec }.to_toml(),
        });
    }
    let c = counts(&inf);
    let mut rows = Vec::new();
    for (e, (params, flops)) in inf.layers.iter().zip(&c.per_entry) {
        rows.push(vec![
            e.index.to_string(),
            e.kind.to_string(),
            e.name.clone().unwrap_or_default(),
            shape(&e.output_shape),
            if *params > 0 { thousands(*params) } else { String::new() },
            if *flops > 0 { thousands(*flops) } else { String::new() },
        ]);
    }
    let mut out = format!(
        "model {}: input {}, {} classes, convention {}, {} prunable layers, {} residual blocks\n\n",
        spec.name,
        shape(&spec.input_shape),
        classes,
        format!("{:?}", inf.graph.convention).to_lowercase(),
        inf.graph.layers.len(),
        inf.graph.blocks.len(),
    );
    out.push_str(&render_table(
        &["#", "kind", "name", "output", "params", "FLOPs"],
        &rows,
        &[true, false, false, false, true, true],
    ));
    out.push_str(&format!(
        "\n  parameters: {} (weights and biases of the prunable layers: {}; the authors' count: {})\n  \
         FLOPs per sample: {}\n",
        thousands(c.params),
        thousands(c.prunable),
        thousands(c.authors),
        thousands(c.flops),
    ));
    Ok(out)
}
