//! `relief data`: fetch the official dataset archives (verified, resumable, extracted safely)
//! and verify that a dataset directory loads through the real loaders.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use relief_data::tiny_imagenet::load_tiny_imagenet_detailed;
use relief_data::{
    fetch, load_cifar100, CacheOutcome, Cifar100Labels, Dataset, DatasetKind, FetchOptions, FileOutcome,
    TinyImageNetOptions,
};

/// Arguments of `relief data`.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: DataCommand,
}

/// The `relief data` subcommands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Download the official archives into DIR, verify their SHA-256 (and MD5), resume partial
    /// downloads, extract them. Already verified files are not downloaded again.
    Fetch(FetchArgs),
    /// Load a dataset directory through the real loaders; print split sizes, image shape and
    /// class histogram, or the precise error.
    Verify(VerifyArgs),
}

/// A dataset name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DatasetName {
    /// MNIST (4 IDX .gz files).
    Mnist,
    /// CIFAR-10 binary version.
    Cifar10,
    /// CIFAR-100 binary version.
    Cifar100,
    /// Tiny-ImageNet-200.
    TinyImagenet,
    /// Fashion-MNIST (MNIST's 4 IDX files; verify only, no official download here).
    FashionMnist,
    /// Any MNIST-format IDX directory (verify only).
    Idx,
    /// Your tensors: train.safetensors + test.safetensors, or one .safetensors file (verify only).
    Tensors,
    /// An image folder: train/<class>/, test/<class>/ (verify only).
    Imagefolder,
}

impl From<DatasetName> for DatasetKind {
    fn from(n: DatasetName) -> Self {
        match n {
            DatasetName::Mnist => DatasetKind::Mnist,
            DatasetName::Cifar10 => DatasetKind::Cifar10,
            DatasetName::Cifar100 => DatasetKind::Cifar100,
            DatasetName::TinyImagenet => DatasetKind::TinyImageNet,
            DatasetName::FashionMnist => DatasetKind::FashionMnist,
            DatasetName::Idx => DatasetKind::Idx,
            DatasetName::Tensors => DatasetKind::Tensors,
            DatasetName::Imagefolder => DatasetKind::ImageFolder,
        }
    }
}

/// Arguments of `relief data fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Which dataset.
    pub dataset: DatasetName,
    /// Directory to download and extract into (created if missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Fetch every file from `<URL>/<file name>` instead of the official URLs.
    #[arg(long, value_name = "URL")]
    pub mirror: Option<String>,
    /// Extra attempts after an interrupted transfer (each resumes the partial file).
    #[arg(long, default_value_t = 2)]
    pub retries: u32,
}

/// Arguments of `relief data verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Which dataset.
    pub dataset: DatasetName,
    /// The dataset directory (as `relief data fetch --dir` filled it, or the archive's own
    /// top directory).
    #[arg(long)]
    pub dir: PathBuf,
    /// CIFAR-100: use the 20 coarse labels instead of the 100 fine ones.
    #[arg(long)]
    pub coarse: bool,
    /// Tiny-ImageNet: decode the JPEGs without reading or writing the cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// Runs `relief data ...`.
pub fn run(args: DataArgs) -> Result<()> {
    match args.command {
        DataCommand::Fetch(a) => run_fetch(a),
        DataCommand::Verify(a) => run_verify(a),
    }
}

fn run_fetch(a: FetchArgs) -> Result<()> {
    let kind = DatasetKind::from(a.dataset);
    if a.dir.exists() && !a.dir.is_dir() {
        anyhow::bail!(
            "--dir {}: is a file, not a directory (--dir names the directory the dataset goes into)",
            a.dir.display()
        );
    }
    let options = FetchOptions {
        mirror: a.mirror.clone(),
        progress: std::io::stderr().is_terminal(),
        retries: a.retries,
        ..FetchOptions::default()
    };
    let report =
        fetch(kind, &a.dir, &options).with_context(|| format!("fetching {kind} into {}", a.dir.display()))?;
    for (path, outcome) in &report.files {
        match outcome {
            FileOutcome::AlreadyVerified => println!("verified (already here)  {}", path.display()),
            FileOutcome::Downloaded { resumed_from: 0 } => {
                println!("downloaded and verified  {}", path.display())
            }
            FileOutcome::Downloaded { resumed_from } => {
                println!("downloaded and verified  {} (resumed at byte {resumed_from})", path.display())
            }
        }
    }
    for name in &report.extracted {
        println!("extracted                {}", a.dir.join(name).display());
    }
    println!("next: relief data verify {kind} --dir {}", a.dir.display());
    Ok(())
}

fn run_verify(a: VerifyArgs) -> Result<()> {
    let kind = DatasetKind::from(a.dataset);
    let context = || format!("verifying {kind} in {}", a.dir.display());
    let (data, cache) = match kind {
        DatasetKind::Cifar100 if a.coarse => {
            (load_cifar100(&a.dir, Cifar100Labels::Coarse).with_context(context)?, None)
        }
        DatasetKind::TinyImageNet => {
            let opts = TinyImageNetOptions { cache: !a.no_cache };
            let (d, c) = load_tiny_imagenet_detailed(&a.dir, &opts).with_context(context)?;
            (d, Some(c))
        }
        _ => (Dataset::load(kind, &a.dir).with_context(context)?, None),
    };
    data.validate().with_context(context)?;
    let [c, h, w] = data.image_shape();
    println!("{} in {}", data.name, a.dir.display());
    if data.preprocess == relief_data::Preprocess::Identity {
        // normalised when loaded (Fashion-MNIST and your own data)
        let shape: Vec<String> = data.example_shape.iter().map(|d| d.to_string()).collect();
        println!("  classes {}   examples {} f32", data.classes, shape.join("x"));
        if let Some(n) = &data.normalization {
            println!("  normalised with mean {:?} std {:?}", n.mean, n.std);
        }
        if !data.class_names.is_empty() {
            println!("  class names: {}", data.class_names.join(", "));
        }
    } else {
        println!("  classes {}   image {c}x{h}x{w} u8", data.classes);
    }
    println!("  train {} images   test {} images", data.train.len(), data.test.len());
    match cache {
        Some(CacheOutcome::Hit(p)) => println!("  cache: read {}", p.display()),
        Some(CacheOutcome::Written(p)) => println!("  cache: decoded the JPEGs, wrote {}", p.display()),
        Some(CacheOutcome::WriteFailed(why)) => {
            println!("  cache: decoded the JPEGs, could not write the cache: {why}")
        }
        Some(CacheOutcome::Disabled) | None => {}
    }
    for (name, split) in [("train", &data.train), ("test", &data.test)] {
        let hist = split.class_histogram(data.classes)?;
        let (min, max) = (hist.iter().min().copied().unwrap_or(0), hist.iter().max().copied().unwrap_or(0));
        let empty = hist.iter().filter(|&&n| n == 0).count();
        println!("  class histogram ({name}): min {min}, max {max}, {empty} empty classes");
        for (row, chunk) in hist.chunks(10).enumerate() {
            let cells: Vec<String> = chunk.iter().map(|n| format!("{n:6}")).collect();
            println!("    {:>3}-{:<3} {}", row * 10, row * 10 + chunk.len() - 1, cells.join(""));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(subcommand)]
        command: DataCommand,
    }

    fn parse(args: &[&str]) -> DataArgs {
        let w = Wrap::try_parse_from(std::iter::once("data").chain(args.iter().copied())).unwrap();
        DataArgs { command: w.command }
    }

    #[test]
    fn parses_names_and_options() {
        let a = parse(&["fetch", "tiny-imagenet", "--dir", "d", "--mirror", "http://m/x"]);
        let DataCommand::Fetch(f) = a.command else { panic!("fetch") };
        assert_eq!(DatasetKind::from(f.dataset), DatasetKind::TinyImageNet);
        assert_eq!(f.mirror.as_deref(), Some("http://m/x"));
        assert_eq!(f.retries, 2);
        assert!(Wrap::try_parse_from(["data", "verify", "svhn", "--dir", "d"]).is_err());
        assert!(Wrap::try_parse_from(["data", "verify", "mnist"]).is_err());
    }

    #[test]
    fn verify_loads_the_sample_and_reports_errors() {
        let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist-sample");
        run(parse(&["verify", "mnist", "--dir", sample])).unwrap();
        let empty = tempfile::tempdir().unwrap();
        let dir = empty.path().to_str().unwrap();
        let e = run(parse(&["verify", "cifar10", "--dir", dir])).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("verifying cifar10 in") && msg.contains("directory is empty"), "{msg}");
    }

    #[test]
    fn fetch_from_an_unreachable_mirror_fails_with_the_url() {
        // Port 9 (discard) on loopback: nothing listens there.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().to_str().unwrap();
        let e = run(parse(&[
            "fetch",
            "cifar10",
            "--dir",
            dir,
            "--mirror",
            "http://127.0.0.1:9/m",
            "--retries",
            "0",
        ]))
        .unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("http://127.0.0.1:9/m/cifar-10-binary.tar.gz"), "{msg}");
        assert!(!d.path().join("cifar-10-binary.tar.gz").exists());
    }
}
