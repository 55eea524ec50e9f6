//! The model-agnostic description of a prunable network (`PruneGraph`).
//!
//! Every model of the zoo describes itself as an ordered list of prunable [`Layer`]s (fully
//! connected or 2-D convolution, each optionally followed by BatchNorm and ReLU) and a forward
//! program of [`Node`]s that wires them: pooling, flatten, dropout and residual [`Block`]s. The
//! engine (scoring, selection, backward pruning, accounting) and the executor work on this
//! description only; adding a model never touches `relief-core`.
//!
//! Shapes: inputs are `N x D` (fully connected) or `N x C x H x W` (convolution). A flatten maps
//! channel `c` of a `C x H x W` map to the columns `c*H*W .. (c+1)*H*W` (PyTorch's `view`).

use serde::{Deserialize, Serialize};

/// Which of the authors' three per-family implementations a model follows in `reference`
/// semantics (position aggregation, dead-unit rules, residual test, stem quirk). See
/// `Semantics` for the rules that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Convention {
    /// `lenet_pruning`: conv importance summed (L1) over output positions.
    Lenet,
    /// `vgg_pruning`: L2 norm over positions, BatchNorm zeroing of removed filters.
    Vgg,
    /// `resnet_pruning`: L2 norm, residual ratio test, no dead rule on the classifier.
    Resnet,
}

/// The operator of a prunable layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerOp {
    /// `y = x W^T + b`, `W: out x in`.
    Linear { inputs: i64, outputs: i64 },
    /// 2-D cross-correlation, `W: out x in x kh x kw`, square stride and padding.
    Conv2d { inputs: i64, outputs: i64, kernel: i64, stride: i64, padding: i64 },
}

impl LayerOp {
    /// Number of input units (features or channels).
    pub fn inputs(&self) -> i64 {
        match *self {
            LayerOp::Linear { inputs, .. } | LayerOp::Conv2d { inputs, .. } => inputs,
        }
    }
    /// Number of output units (neurons or filters).
    pub fn outputs(&self) -> i64 {
        match *self {
            LayerOp::Linear { outputs, .. } | LayerOp::Conv2d { outputs, .. } => outputs,
        }
    }
    /// Shape of the weight tensor.
    pub fn weight_shape(&self) -> Vec<i64> {
        match *self {
            LayerOp::Linear { inputs, outputs } => vec![outputs, inputs],
            LayerOp::Conv2d { inputs, outputs, kernel, .. } => vec![outputs, inputs, kernel, kernel],
        }
    }
    /// True for convolutions.
    pub fn is_conv(&self) -> bool {
        matches!(self, LayerOp::Conv2d { .. })
    }
}

/// The non-linearity applied to a layer's (BatchNorm'd) output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// No activation: logits, or the second conv of a residual block (ReLU follows the sum).
    Identity,
}

/// Where a layer sits, for the rules that depend on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// An ordinary layer of a chain.
    Plain,
    /// The stem convolution of a ResNet (the reference never applies its mask).
    Stem,
    /// First convolution of residual block `b`.
    BlockConv1(usize),
    /// Second convolution of residual block `b` (its output is added to the shortcut).
    BlockConv2(usize),
    /// The 1x1 projection convolution of residual block `b` (option-B shortcut).
    Shortcut(usize),
}

/// One prunable layer: parameters are named `<name>.weight`, `<name>.bias` and, with
/// BatchNorm, `<bn>.weight|bias|running_mean|running_var|num_batches_tracked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Module path, e.g. `features.0`, `layer2.1.conv1`, `classifier.4`.
    pub name: String,
    /// Linear or convolution, with sizes.
    pub op: LayerOp,
    /// Whether the layer has a bias (masked as one extra entry of each row).
    pub bias: bool,
    /// Module path of the BatchNorm that follows, if any.
    pub batch_norm: Option<String>,
    /// Activation after the (normalised) output.
    pub activation: Activation,
    /// Position in a residual structure.
    pub role: Role,
    /// Spatial size `(h, w)` of the layer's input (1x1 for linear layers).
    pub input_hw: (i64, i64),
}

impl Layer {
    /// `<name>.weight`.
    pub fn weight_name(&self) -> String {
        format!("{}.weight", self.name)
    }
    /// `<name>.bias` when the layer has one.
    pub fn bias_name(&self) -> Option<String> {
        self.bias.then(|| format!("{}.bias", self.name))
    }
    /// Spatial size of the output.
    pub fn output_hw(&self) -> (i64, i64) {
        match self.op {
            LayerOp::Linear { .. } => (1, 1),
            LayerOp::Conv2d { kernel, stride, padding, .. } => {
                let f = |s: i64| (s + 2 * padding - kernel) / stride + 1;
                (f(self.input_hw.0), f(self.input_hw.1))
            }
        }
    }
    /// Number of output positions per filter (1 for linear layers).
    pub fn output_positions(&self) -> i64 {
        let (h, w) = self.output_hw();
        h * w
    }
}

/// The shortcut branch of a residual block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shortcut {
    /// `x` itself (same channels and size).
    Identity,
    /// Option A: `x[:, :, ::2, ::2]` zero-padded with `pad` channels on each side, so input
    /// channel `c` becomes output channel `c + pad`.
    PadA { pad: i64 },
    /// Option B: a 1x1 convolution + BatchNorm, the prunable layer with this index.
    Conv { layer: usize },
    /// A channel gather (what identity and option-A shortcuts become after compaction, see
    /// `compact`): output channel `j` is `x[:, index[j], ::stride, ::stride]`, or zeros where
    /// `index[j] < 0`.
    Gather { stride: i64, index: Vec<i64> },
}

/// A residual block: `relu(bn2(conv2(relu(bn1(conv1(x))))) + m * shortcut(x))`, where `m` is
/// the per-channel shortcut mask named `mask` (option A / identity shortcuts only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// Index of the first convolution in [`PruneGraph::layers`].
    pub conv1: usize,
    /// Index of the second convolution.
    pub conv2: usize,
    /// The shortcut branch.
    pub shortcut: Shortcut,
    /// Name of the per-channel shortcut mask (`layer1.0.shortcut`), shape `(planes,)`.
    pub mask: Option<String>,
}

/// One step of the forward program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Node {
    /// Prunable layer `i` (with its BatchNorm and activation).
    Layer(usize),
    /// Max pooling (no padding).
    MaxPool2d { kernel: i64, stride: i64 },
    /// Average over all positions: `N x C x H x W -> N x C`.
    GlobalAvgPool,
    /// `N x C x H x W -> N x (C*H*W)`, channel-major.
    Flatten,
    /// Dropout with probability `p` (identity in eval mode).
    Dropout { p: f64 },
    /// Residual block `b` of [`PruneGraph::blocks`].
    Block(usize),
}

/// The whole prunable structure of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneGraph {
    /// Architecture name, e.g. `resnet20`.
    pub arch: String,
    /// Per-sample input shape, e.g. `[784]` or `[3, 32, 32]`.
    pub input_shape: Vec<i64>,
    /// Number of classes (outputs of the last layer).
    pub num_classes: i64,
    /// The authors' implementation this model follows in `reference` semantics.
    pub convention: Convention,
    /// Prunable layers in forward (and scoring) order.
    pub layers: Vec<Layer>,
    /// Residual blocks referenced by [`Node::Block`].
    pub blocks: Vec<Block>,
    /// The forward program.
    pub nodes: Vec<Node>,
}

/// Tensors of the forward program known to be non-negative, see
/// [`PruneGraph::nonnegative_tensors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonNegative {
    /// Per layer: its input.
    pub layer_inputs: Vec<bool>,
    /// Per residual block: the residual added to the branch.
    pub residuals: Vec<bool>,
}

/// BatchNorm parameter and buffer suffixes, in `state_dict` order.
pub const BN_SUFFIXES: [&str; 5] = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"];

impl PruneGraph {
    /// Index of a layer by module path.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }

    /// Every parameter/buffer name with its shape, in `state_dict` order of the layers.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            out.push((layer.weight_name(), layer.op.weight_shape()));
            if let Some(b) = layer.bias_name() {
                out.push((b, vec![layer.op.outputs()]));
            }
            if let Some(bn) = &layer.batch_norm {
                for s in BN_SUFFIXES {
                    let shape = if s == "num_batches_tracked" { vec![] } else { vec![layer.op.outputs()] };
                    out.push((format!("{bn}.{s}"), shape));
                }
            }
        }
        out
    }

    /// Names and shapes of every mask this graph carries: weights, biases and shortcut masks.
    pub fn mask_shapes(&self) -> Vec<(String, Vec<i64>)> {
        let mut out = Vec::new();
        for layer in &self.layers {
            out.push((layer.weight_name(), layer.op.weight_shape()));
            if let Some(b) = layer.bias_name() {
                out.push((b, vec![layer.op.outputs()]));
            }
        }
        for block in &self.blocks {
            if let Some(m) = &block.mask {
                out.push((m.clone(), vec![self.layers[block.conv2].op.outputs()]));
            }
        }
        out
    }

    /// The index of the last prunable layer (the classifier output).
    pub fn output_layer(&self) -> usize {
        self.layers.len() - 1
    }

    /// The per-sample shape of the tensor entering each node of the program (the graph must be
    /// valid, see [`PruneGraph::validate`]); one extra entry at the end for the output.
    pub fn node_input_shapes(&self) -> Vec<Vec<i64>> {
        let mut shapes = Vec::with_capacity(self.nodes.len() + 1);
        let mut shape = self.input_shape.clone();
        let after_layer = |l: &Layer| match l.op {
            LayerOp::Linear { outputs, .. } => vec![outputs],
            LayerOp::Conv2d { outputs, .. } => {
                let (h, w) = l.output_hw();
                vec![outputs, h, w]
            }
        };
        for node in &self.nodes {
            shapes.push(shape.clone());
            shape = match node {
                Node::Layer(i) => after_layer(&self.layers[*i]),
                Node::MaxPool2d { kernel, stride } => {
                    vec![shape[0], (shape[1] - kernel) / stride + 1, (shape[2] - kernel) / stride + 1]
                }
                Node::GlobalAvgPool => vec![shape[0]],
                Node::Flatten => vec![shape.iter().product()],
                Node::Dropout { .. } => shape,
                Node::Block(b) => after_layer(&self.layers[self.blocks[*b].conv2]),
            };
        }
        shapes.push(shape);
        shapes
    }

    /// Which tensors of the forward program are non-negative by construction (a ReLU's output,
    /// possibly pooled, flattened, dropped out or multiplied by a 0/1 shortcut mask): per
    /// layer its input, per block its residual. `|.|` is the identity on them, so statistics
    /// skip it (and the full-size temporary it costs).
    pub fn nonnegative_tensors(&self) -> NonNegative {
        let mut out = NonNegative {
            layer_inputs: vec![false; self.layers.len()],
            residuals: vec![false; self.blocks.len()],
        };
        let relu = |l: usize| self.layers[l].activation == Activation::Relu;
        // The model input may be anything (normalised images are signed).
        let mut nonneg = false;
        for node in &self.nodes {
            match node {
                Node::Layer(i) => {
                    out.layer_inputs[*i] = nonneg;
                    nonneg = relu(*i);
                }
                Node::MaxPool2d { .. } | Node::GlobalAvgPool | Node::Flatten | Node::Dropout { .. } => {}
                Node::Block(b) => {
                    let block = &self.blocks[*b];
                    out.layer_inputs[block.conv1] = nonneg;
                    out.layer_inputs[block.conv2] = relu(block.conv1);
                    out.residuals[*b] = match block.shortcut {
                        Shortcut::Conv { layer } => {
                            out.layer_inputs[layer] = nonneg;
                            false
                        }
                        Shortcut::Identity | Shortcut::PadA { .. } | Shortcut::Gather { .. } => nonneg,
                    };
                    // relu(branch + residual)
                    nonneg = true;
                }
            }
        }
        out
    }

    /// Checks internal consistency: channel counts along the program, block wiring, names.
    pub fn validate(&self) -> Result<(), String> {
        let mut shape: Vec<i64> = self.input_shape.clone();
        let mut seen = vec![false; self.layers.len()];
        let visit = |i: usize, shape: &mut Vec<i64>, seen: &mut Vec<bool>| -> Result<(), String> {
            let l = self.layers.get(i).ok_or(format!("node refers to missing layer {i}"))?;
            if seen[i] {
                return Err(format!("layer {} appears twice in the program", l.name));
            }
            seen[i] = true;
            match l.op {
                LayerOp::Linear { inputs, outputs } => {
                    if shape.len() != 1 || shape[0] != inputs {
                        return Err(format!("{}: expects {inputs} features, gets {shape:?}", l.name));
                    }
                    *shape = vec![outputs];
                }
                LayerOp::Conv2d { inputs, outputs, .. } => {
                    if shape.len() != 3 || shape[0] != inputs || (shape[1], shape[2]) != l.input_hw {
                        return Err(format!(
                            "{}: expects {inputs} x {:?}, gets {shape:?}",
                            l.name, l.input_hw
                        ));
                    }
                    let (h, w) = l.output_hw();
                    *shape = vec![outputs, h, w];
                }
            }
            Ok(())
        };
        for node in &self.nodes {
            match node {
                Node::Layer(i) => visit(*i, &mut shape, &mut seen)?,
                Node::MaxPool2d { kernel, stride } => {
                    if shape.len() != 3 {
                        return Err("max pool on a non-image tensor".into());
                    }
                    shape =
                        vec![shape[0], (shape[1] - kernel) / stride + 1, (shape[2] - kernel) / stride + 1];
                }
                Node::GlobalAvgPool => {
                    if shape.len() != 3 {
                        return Err("global pool on a non-image tensor".into());
                    }
                    shape = vec![shape[0]];
                }
                Node::Flatten => shape = vec![shape.iter().product()],
                Node::Dropout { .. } => {}
                Node::Block(b) => {
                    let block = self.blocks.get(*b).ok_or(format!("missing block {b}"))?;
                    let input = shape.clone();
                    visit(block.conv1, &mut shape, &mut seen)?;
                    visit(block.conv2, &mut shape, &mut seen)?;
                    let short = match block.shortcut {
                        Shortcut::Identity => input.clone(),
                        Shortcut::PadA { pad } => {
                            vec![input[0] + 2 * pad, (input[1] + 1) / 2, (input[2] + 1) / 2]
                        }
                        Shortcut::Conv { layer } => {
                            let mut s = input.clone();
                            visit(layer, &mut s, &mut seen)?;
                            s
                        }
                        Shortcut::Gather { stride, ref index } => {
                            if stride < 1 || index.iter().any(|&i| i >= input[0]) {
                                return Err(format!("block {b}: gather reads beyond {} channels", input[0]));
                            }
                            let sub = |s: i64| (s + stride - 1) / stride;
                            vec![index.len() as i64, sub(input[1]), sub(input[2])]
                        }
                    };
                    if short != shape {
                        return Err(format!("block {b}: shortcut gives {short:?}, branch {shape:?}"));
                    }
                }
            }
        }
        if let Some(i) = seen.iter().position(|s| !s) {
            return Err(format!("layer {} is not used by the program", self.layers[i].name));
        }
        if shape != vec![self.num_classes] {
            return Err(format!("program ends with {shape:?}, expected [{}]", self.num_classes));
        }
        Ok(())
    }
}
