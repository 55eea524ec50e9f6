//! What a run will hold in memory, estimated from the graph's shapes before any tensor exists,
//! so that a network (or batch size) that cannot fit is refused at plan time with the numbers
//! instead of aborting inside libtorch's allocator.
//!
//! The estimate is a lower bound (float32, 4 bytes an entry):
//! - parameters `P` (every weight, bias and BatchNorm parameter): the weights, their gradients,
//!   their masks, the optimizer's state (Adam 2 x P, SGD with momentum 1 x P), the rewind copy
//!   and the best-epoch copy: `P x (4 + state)`;
//! - activations: every layer's output (`units x positions`) per sample, kept for the backward
//!   pass and matched by a gradient of the same size, at the largest training batch (x 2), or the
//!   no-grad forward of pruning and evaluation at their batch sizes (x 1, the engine's recorded
//!   inputs included), whichever is larger.
//!
//! libtorch needs more than this (workspaces, the allocator's slack), so passing the check does
//! not promise a fit; failing it means the run cannot fit.

use relief_core::accounting::{account_dense, numel};
use relief_core::PruneGraph;

/// Bytes of one float32 entry.
const F32: i64 = 4;

/// The estimate, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    /// Trainable entries (weights, biases, BatchNorm parameters).
    pub parameters: i64,
    /// Parameters with gradients, masks, optimizer state and the saved copies.
    pub parameter_bytes: i64,
    /// The largest of the phases' activations.
    pub activation_bytes: i64,
}

impl MemoryEstimate {
    /// The whole lower bound.
    pub fn total(&self) -> i64 {
        self.parameter_bytes.saturating_add(self.activation_bytes)
    }
}

/// Estimates a run of `graph` with training batches up to `train_batch`, `optimizer_state`
/// entries of optimizer state per parameter, and no-grad forwards at `forward_batch` (pruning
/// and evaluation).
pub fn estimate(
    graph: &PruneGraph,
    train_batch: i64,
    optimizer_state: i64,
    forward_batch: i64,
) -> MemoryEstimate {
    let parameters = account_dense(graph).full_params_total;
    let per_sample = graph
        .layers
        .iter()
        .map(|l| l.op.outputs().saturating_mul(l.output_positions()))
        .fold(numel(&graph.input_shape), i64::saturating_add);
    let train = per_sample.saturating_mul(train_batch.max(0)).saturating_mul(2 * F32);
    let forward = per_sample.saturating_mul(forward_batch.max(0)).saturating_mul(F32);
    MemoryEstimate {
        parameters,
        parameter_bytes: parameters.saturating_mul(F32 * (4 + optimizer_state.max(0))),
        activation_bytes: train.max(forward),
    }
}

/// Memory this process can still get on the host, in bytes (`MemAvailable` + `SwapFree` from
/// `/proc/meminfo`); `None` where that is not known.
pub fn host_available() -> Option<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<i64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kb: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.saturating_mul(1024))
    };
    Some(field("MemAvailable:")?.saturating_add(field("SwapFree:").unwrap_or(0)))
}

/// `bytes` for people: `1.5 GiB`, `12.0 TiB`, ...
pub fn human(bytes: i64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut v = bytes.max(0) as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenet300_by_hand() {
        let g = relief_models::Arch::Lenet300_100.graph(10);
        // 784*300+300 + 300*100+100 + 100*10+10 = 266,610 parameters; Adam: 6 entries each.
        let e = estimate(&g, 60, 2, 1000);
        assert_eq!(e.parameters, 266_610);
        assert_eq!(e.parameter_bytes, 266_610 * 4 * 6);
        // activations per sample: 784 input + 300 + 100 + 10 = 1194; forward at 1000 beats
        // training at 60 (x2).
        assert_eq!(e.activation_bytes, 1194 * 1000 * 4);
        assert_eq!(e.total(), e.parameter_bytes + e.activation_bytes);
    }

    #[test]
    fn absurd_sizes_saturate_instead_of_overflowing() {
        // Specs bound every size (relief_models::spec::MAX_SIZE); batch sizes are where the
        // products can still run past i64.
        let g = relief_models::Arch::Lenet300_100.graph(10);
        let e = estimate(&g, i64::MAX, 2, i64::MAX);
        assert_eq!(e.activation_bytes, i64::MAX);
        assert_eq!(e.total(), i64::MAX);
        assert!(human(e.total()).ends_with("EiB"), "{}", human(e.total()));
        assert_eq!(human(512), "512 B");
        assert_eq!(human(3 * 1024 * 1024 / 2), "1.5 MiB");
    }

    #[test]
    fn host_memory_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(host_available().is_some_and(|b| b > 0));
        }
    }
}
