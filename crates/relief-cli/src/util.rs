//! Small helpers shared by the subcommands.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};

/// Parses `auto|cpu|cuda|cuda:N` into a device (`auto` = CUDA when available).
pub fn parse_device(s: &str) -> Result<Device> {
    Ok(match s {
        "auto" => Device::cuda_if_available(),
        "cpu" => Device::Cpu,
        "cuda" => {
            if !tch::Cuda::is_available() {
                bail!("--device cuda: CUDA is not available on this machine");
            }
            Device::Cuda(0)
        }
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n < tch::Cuda::device_count() as usize => Device::Cuda(n),
            Some(n) => {
                bail!("--device cuda:{n}: only {} CUDA device(s) available", tch::Cuda::device_count())
            }
            None => bail!("--device `{other}`: expected auto, cpu, cuda or cuda:N"),
        },
    })
}

/// A temporary sibling of `path` for atomic writes.
fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes tensors to a safetensors file atomically (temp file + rename).
pub fn write_safetensors_atomic(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let tmp = temp_sibling(path);
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&refs, &tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

/// Reads every tensor of a safetensors file, naming the file on failure.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    Tensor::read_safetensors(path)
        .with_context(|| format!("{}: not a readable safetensors file", path.display()))
}
