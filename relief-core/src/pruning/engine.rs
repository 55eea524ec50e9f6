//! One NNrelief pruning call: pass(es) over the batch -> statistics -> scores -> selection ->
//! dead units and residual test -> backward pruning -> masks applied.
//!
//! `Reference` semantics makes two streamed passes (convolutions on the pre-pruning pass; fully
//! connected layers on a pass through the pruned feature extractor), `Paper` one. Everything runs
//! under no-grad on the parameters' device; the batch is moved there chunk by chunk.

use tch::{Device, Kind, Tensor};

use crate::backward::{backward_prune, mask_rows, rows_removed, BnZeroing};
use crate::error::CoreError;
use crate::exec::{forward, ForwardOptions};
use crate::graph::{Activation, Convention, LayerOp, PruneGraph, Role, Shortcut};
use crate::masks::MaskSet;
use crate::params::{Bound, TensorMap};
use crate::precision::ExactFloat32;
use crate::score::{conv_importance, linear_importance, PositionNorm};
use crate::select::keep_masks;
use crate::semantics::Semantics;
use crate::stats::StatsCollector;

/// Settings of one pruning call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneConfig {
    /// Share of each filter's importance to keep, in (0, 1].
    pub alpha_conv: f64,
    /// Share of each neuron's importance to keep, in (0, 1].
    pub alpha_fc: f64,
    /// Reference (authors' code) or paper semantics.
    pub semantics: Semantics,
    /// Samples per forward chunk (bounds memory; results do not depend on it beyond float
    /// summation order).
    pub chunk_size: i64,
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self { alpha_conv: 0.9, alpha_fc: 0.95, semantics: Semantics::Reference, chunk_size: 256 }
    }
}

impl PruneConfig {
    /// Rejects alphas outside (0, 1] and empty chunks.
    pub fn validate(&self) -> Result<(), CoreError> {
        for (name, a) in [("alpha_conv", self.alpha_conv), ("alpha_fc", self.alpha_fc)] {
            if !(a > 0.0 && a <= 1.0) {
                return Err(CoreError::Invalid(format!("{name} = {a}, expected a value in (0, 1]")));
            }
        }
        if self.chunk_size < 1 {
            return Err(CoreError::Invalid(format!("chunk_size = {}, expected >= 1", self.chunk_size)));
        }
        Ok(())
    }
}

/// What a pruning call did, per layer (same order as the graph's layers).
#[derive(Debug, Clone, Default)]
pub struct PruneOutcome {
    /// Units found dead on the batch.
    pub dead: Vec<i64>,
    /// Block second-conv filters removed by the residual ratio test.
    pub ratio_filters: Vec<i64>,
    /// Shortcut channels removed by the residual ratio test.
    pub ratio_shortcuts: Vec<i64>,
    /// Forward passes over the batch.
    pub passes: usize,
}

/// Streams `batch` through the model in chunks, accumulating statistics for the `want`ed
/// layers; `shortcut_masks` selects the real forward (true) or the reference's scoring forward.
#[allow(clippy::too_many_arguments)]
fn collect(
    graph: &PruneGraph,
    bound: &Bound,
    masks: &MaskSet,
    batch: &Tensor,
    want: Vec<bool>,
    shortcut_masks: bool,
    chunk: i64,
    device: Device,
) -> StatsCollector {
    let mut stats = StatsCollector::new(graph, want);
    let n = batch.size()[0];
    let opts = ForwardOptions { train: false, shortcut_masks };
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let x = batch.narrow(0, start, len).to_device(device).to_kind(Kind::Float);
        let _ = forward(graph, bound, Some(masks), &x, opts, Some(&mut stats));
        stats.samples += len;
        start += len;
    }
    stats
}

struct Call<'a> {
    graph: &'a PruneGraph,
    bound: Bound,
    cfg: PruneConfig,
    zeroing: BnZeroing,
    outcome: PruneOutcome,
    /// Per-layer counts kept on the device until the call ends (no host sync per layer):
    /// `(kind, layer, count)` with kind 0 = dead, 1 = ratio filters, 2 = ratio shortcuts.
    counts: Vec<(u8, usize, Tensor)>,
}

impl Call<'_> {
    fn reference(&self) -> bool {
        self.cfg.semantics == Semantics::Reference
    }

    fn dead_rule_applies(&self, l: usize) -> bool {
        let layer = &self.graph.layers[l];
        let is_output = l == self.graph.output_layer();
        if !is_output {
            return true;
        }
        self.reference()
            && self.graph.convention != Convention::Resnet
            && layer.activation == Activation::Identity
    }

    /// Scores layer `l` from `stats` and updates its masks (and shortcut masks for blocks);
    /// refuses non-finite statistics or scores before selecting (masks untouched then).
    fn score_layer(
        &mut self,
        l: usize,
        stats: &StatsCollector,
        masks: &mut MaskSet,
    ) -> Result<(), CoreError> {
        let graph = self.graph;
        let layer = &graph.layers[l];
        let t = &self.bound.layers[l];
        let st = &stats.layers[l];
        let mean_in = stats.mean(st.input_abs.as_ref().expect("input statistics collected"));
        let (imp, alpha) = match layer.op {
            LayerOp::Linear { .. } => {
                (linear_importance(&t.weight, t.bias.as_ref(), &mean_in), self.cfg.alpha_fc)
            }
            LayerOp::Conv2d { .. } => {
                let norm = match graph.convention {
                    Convention::Lenet => PositionNorm::L1,
                    Convention::Vgg | Convention::Resnet => PositionNorm::L2,
                };
                (conv_importance(&layer.op, &t.weight, t.bias.as_ref(), &mean_in, norm), self.cfg.alpha_conv)
            }
        };
        let name = &layer.name;
        check_finite(name, "input statistics", &mean_in)?;
        if let Some(out) = &st.output {
            check_finite(name, "output statistics", out)?;
        }
        check_finite(name, "importance scores", &imp)?;
        let outputs = layer.op.outputs();
        let dead = if self.dead_rule_applies(l) {
            let out = st.output.as_ref().expect("output statistics collected");
            let dead = out.eq(0.0);
            self.counts.push((0, l, dead.sum(Kind::Int64)));
            Some(dead)
        } else {
            None
        };
        let inputs = layer.op.inputs();
        let (keep_w, keep_b) = keep_masks(&imp, alpha, self.cfg.semantics, inputs, dead.as_ref());
        let keep_w = if layer.op.is_conv() { keep_w.view([outputs, inputs, 1, 1]) } else { keep_w };
        let wname = layer.weight_name();
        let old = masks.get(&wname).expect("weight mask");
        let cumulative = layer.op.is_conv() || !self.reference();
        let new = if cumulative { old * &keep_w } else { keep_w.expand_as(old).contiguous() };
        masks.set(&wname, new);
        if let (Some(bname), Some(keep_b)) = (layer.bias_name(), keep_b) {
            let new = if self.reference() { keep_b } else { masks.get(&bname).expect("bias mask") * keep_b };
            masks.set(&bname, new);
        }
        if let Some(dead) = &dead {
            if layer.batch_norm.is_some() {
                self.zeroing.mark(l, dead);
            }
            if let Role::BlockConv2(b) = layer.role {
                if let Some(name) = &graph.blocks[b].mask {
                    let m = masks.get(name).expect("shortcut mask") * dead.logical_not().to_kind(Kind::Float);
                    masks.set(name, m);
                }
            }
        }
        if let Role::BlockConv2(b) = layer.role {
            let st = &stats.layers[l];
            for (what, t) in
                [("branch statistics", &st.branch_abs), ("residual statistics", &st.residual_abs)]
            {
                if let Some(t) = t {
                    check_finite(name, what, t)?;
                }
            }
            self.residual_ratio_test(l, b, stats, masks);
        }
        Ok(())
    }

    /// The ResNet residual test: with `B_c`, `R_c` the L2 norms over positions of the batch
    /// means of `|bn2(conv2)|` and `|residual|`, drop filter `c` when `B_c / R_c < (1-a)/a` and
    /// the shortcut channel when `R_c / B_c < (1-a)/a` (IEEE division: 0/0 prunes nothing).
    fn residual_ratio_test(&mut self, l: usize, b: usize, stats: &StatsCollector, masks: &mut MaskSet) {
        let st = &stats.layers[l];
        let norm = |sum: &Tensor| {
            let mean = stats.mean(sum);
            let c = mean.size()[0];
            mean.view([c, -1]).norm_scalaropt_dim(2, [1i64].as_slice(), false)
        };
        let branch = norm(st.branch_abs.as_ref().expect("branch statistics"));
        let residual = norm(st.residual_abs.as_ref().expect("residual statistics"));
        let a = self.cfg.alpha_conv;
        let bound = ((1.0 - a) / a) as f32 as f64;
        let drop_filter = (&branch / &residual).lt(bound);
        let drop_short = (&residual / &branch).lt(bound);
        self.counts.push((1, l, drop_filter.sum(Kind::Int64)));
        self.counts.push((2, l, drop_short.sum(Kind::Int64)));
        mask_rows(self.graph, masks, l, &drop_filter);
        let block = &self.graph.blocks[b];
        match block.shortcut {
            Shortcut::Conv { layer } => mask_rows(self.graph, masks, layer, &drop_short),
            Shortcut::Identity | Shortcut::PadA { .. } | Shortcut::Gather { .. } => {
                if let Some(name) = &block.mask {
                    let m = masks.get(name).expect("shortcut mask")
                        * drop_short.logical_not().to_kind(Kind::Float);
                    masks.set(name, m);
                }
            }
        }
    }

    /// Zeroes weight, bias and running statistics of the marked BatchNorm channels.
    fn zero_batch_norms(&self) {
        for (l, rows) in self.zeroing.channels.iter().enumerate() {
            let (Some(rows), Some(bn)) = (rows, &self.bound.layers[l].bn) else { continue };
            for t in [&bn.weight, &bn.bias, &bn.running_mean, &bn.running_var] {
                let _ = t.shallow_clone().masked_fill_(rows, 0.0);
            }
        }
    }
}

/// `Err(NonFinite)` when `t` holds NaN or infinite entries (one host sync per call).
fn check_finite(layer: &str, what: &'static str, t: &Tensor) -> Result<(), CoreError> {
    if !t.is_floating_point() || t.isfinite().all().int64_value(&[]) != 0 {
        return Ok(());
    }
    let nan = t.isnan().sum(Kind::Int64).int64_value(&[]);
    let inf = t.isinf().sum(Kind::Int64).int64_value(&[]);
    Err(CoreError::NonFinite { layer: layer.to_string(), what, nan, inf, total: t.numel() as i64 })
}

/// The statistics of the first (pre-pruning) scoring pass of `semantics`, for every layer:
/// what [`prune_step`] scores convolutions (reference) or all layers (paper) on.
pub fn scoring_statistics(
    graph: &PruneGraph,
    params: &TensorMap,
    masks: &MaskSet,
    batch: &Tensor,
    semantics: Semantics,
    chunk_size: i64,
) -> Result<StatsCollector, CoreError> {
    let batch = conform_batch(graph, batch)?;
    let bound = Bound::new(graph, params)?;
    let device = bound.layers[0].weight.device();
    let _exact = ExactFloat32::new();
    let want = vec![true; graph.layers.len()];
    let shortcut_masks = semantics == Semantics::Paper;
    Ok(tch::no_grad(|| {
        collect(graph, &bound, masks, &batch, want, shortcut_masks, chunk_size.max(1), device)
    }))
}

/// Marks the masks that `semantics` never applies to their weights: in `reference`, the ResNet
/// stem's (the authors' `_apply_mask` and training never multiply it in). Call it before masked
/// training with masks loaded from disk; [`prune_step`] calls it itself.
pub fn mark_inert_masks(graph: &PruneGraph, masks: &mut MaskSet, semantics: Semantics) {
    let reference = semantics == Semantics::Reference;
    for layer in &graph.layers {
        if layer.role == Role::Stem {
            masks.set_inert(&layer.weight_name(), reference && graph.convention == Convention::Resnet);
        }
    }
}

/// Reshapes a batch to `N x input_shape` (accepting e.g. `N x 1 x 28 x 28` for a `784` input)
/// or explains why it cannot.
pub fn conform_batch(graph: &PruneGraph, batch: &Tensor) -> Result<Tensor, CoreError> {
    let size = batch.size();
    let per: i64 = graph.input_shape.iter().product();
    if size.len() > 1 && size[0] == 0 && size[1..].iter().product::<i64>() == per {
        return Err(CoreError::EmptyBatch(size));
    }
    if size.is_empty() || size[0] == 0 || size[1..].iter().product::<i64>() != per {
        return Err(CoreError::BadBatch { expected: graph.input_shape.clone(), found: size });
    }
    let mut shape = vec![size[0]];
    shape.extend_from_slice(&graph.input_shape);
    Ok(batch.reshape(shape.as_slice()))
}

/// One NNrelief pruning call on `params` (PyTorch names, modified in place: masked weights
/// zeroed, BatchNorm channels of removed units zeroed) and `masks` (updated), scored on
/// `batch` (`N x input_shape`, any device).
pub fn prune_step(
    graph: &PruneGraph,
    params: &TensorMap,
    masks: &mut MaskSet,
    batch: &Tensor,
    cfg: &PruneConfig,
) -> Result<PruneOutcome, CoreError> {
    cfg.validate()?;
    let batch = conform_batch(graph, batch)?;
    let bound = Bound::new(graph, params)?;
    let device = bound.layers[0].weight.device();
    // Scores in IEEE float32 on CUDA too (libtorch's TF32 convolutions would move entries
    // near each row's threshold).
    let _exact = ExactFloat32::new();
    let reference = cfg.semantics == Semantics::Reference;
    mark_inert_masks(graph, masks, cfg.semantics);
    let n_layers = graph.layers.len();
    let mut call = Call {
        graph,
        bound,
        cfg: *cfg,
        zeroing: BnZeroing::new(graph),
        outcome: PruneOutcome {
            dead: vec![0; n_layers],
            ratio_filters: vec![0; n_layers],
            ratio_shortcuts: vec![0; n_layers],
            passes: 0,
        },
        counts: Vec::new(),
    };
    tch::no_grad(|| -> Result<(), CoreError> {
        let is_conv: Vec<bool> = graph.layers.iter().map(|l| l.op.is_conv()).collect();
        let want_a: Vec<bool> = if reference { is_conv.clone() } else { vec![true; n_layers] };
        if want_a.iter().any(|&w| w) {
            let stats = collect(
                graph,
                &call.bound,
                masks,
                &batch,
                want_a.clone(),
                !reference,
                cfg.chunk_size,
                device,
            );
            call.outcome.passes += 1;
            for l in (0..n_layers).filter(|&l| want_a[l]) {
                call.score_layer(l, &stats, masks)?;
            }
        }
        if reference && is_conv.iter().any(|c| !c) {
            // The reference scores fully connected layers on the pruned feature extractor.
            masks.apply(params);
            call.zero_batch_norms();
            let want_b: Vec<bool> = is_conv.iter().map(|c| !c).collect();
            let stats =
                collect(graph, &call.bound, masks, &batch, want_b.clone(), true, cfg.chunk_size, device);
            call.outcome.passes += 1;
            for l in (0..n_layers).filter(|&l| want_b[l]) {
                call.score_layer(l, &stats, masks)?;
            }
        }
        backward_prune(graph, masks, &mut call.zeroing, reference);
        if !reference {
            // Paper: every unit that lost all its entries is removed, BatchNorm included.
            for (l, layer) in graph.layers.iter().enumerate() {
                if let Some(bn) = &layer.batch_norm {
                    let removed = rows_removed(graph, masks, l);
                    call.zeroing.mark(l, &removed);
                    let keep = call.zeroing.channels[l].as_ref().expect("just marked").logical_not();
                    for s in ["weight", "bias"] {
                        masks.set(&format!("{bn}.{s}"), keep.shallow_clone());
                    }
                }
            }
        }
        masks.apply(params);
        call.zero_batch_norms();
        Ok(())
    })?;
    for (kind, l, count) in &call.counts {
        let v = count.int64_value(&[]);
        match kind {
            0 => call.outcome.dead[*l] = v,
            1 => call.outcome.ratio_filters[*l] = v,
            _ => call.outcome.ratio_shortcuts[*l] = v,
        }
    }
    Ok(call.outcome)
}
