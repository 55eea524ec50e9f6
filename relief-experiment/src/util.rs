//! Small helpers shared by the subcommands.

use anyhow::{bail, Result};
use tch::Device;

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
