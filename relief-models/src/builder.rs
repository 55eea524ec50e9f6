//! A small helper that assembles a [`PruneGraph`] while tracking the running tensor shape.

use relief_core::graph::{Activation, Block, Convention, Layer, LayerOp, Node, PruneGraph, Role, Shortcut};

/// Module paths of a BasicBlock's layers and of its shortcut mask.
pub(crate) struct BlockNames {
    pub conv1: String,
    pub bn1: String,
    pub conv2: String,
    pub bn2: String,
    /// The 1x1 projection (option B) and its BatchNorm.
    pub shortcut_conv: String,
    pub shortcut_bn: String,
    /// The per-channel shortcut mask (identity and option-A shortcuts).
    pub mask: String,
}

impl BlockNames {
    /// The authors' names under `prefix` (`layer2.0.conv1`, ..., `layer2.0.shortcut`).
    pub fn from_prefix(prefix: &str) -> Self {
        Self {
            conv1: format!("{prefix}.conv1"),
            bn1: format!("{prefix}.bn1"),
            conv2: format!("{prefix}.conv2"),
            bn2: format!("{prefix}.bn2"),
            shortcut_conv: format!("{prefix}.shortcut.0"),
            shortcut_bn: format!("{prefix}.shortcut.1"),
            mask: format!("{prefix}.shortcut"),
        }
    }
}

/// Builds a graph layer by layer; `shape` is the per-sample shape after the last node. The
/// builder computes shapes but does not check them: callers check first (see `spec`), and
/// [`GraphBuilder::try_finish`] validates the whole graph.
pub(crate) struct GraphBuilder {
    graph: PruneGraph,
    shape: Vec<i64>,
}

impl GraphBuilder {
    pub fn new(arch: &str, input_shape: &[i64], num_classes: i64, convention: Convention) -> Self {
        Self {
            graph: PruneGraph {
                arch: arch.to_string(),
                input_shape: input_shape.to_vec(),
                num_classes,
                convention,
                layers: Vec::new(),
                blocks: Vec::new(),
                nodes: Vec::new(),
            },
            shape: input_shape.to_vec(),
        }
    }

    fn add_layer(&mut self, layer: Layer) -> usize {
        self.graph.layers.push(layer);
        self.graph.layers.len() - 1
    }

    /// A layer declared but not yet placed in the program (block members).
    #[allow(clippy::too_many_arguments)]
    fn conv_layer(
        &mut self,
        name: &str,
        input: &[i64],
        outputs: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        bias: bool,
        bn: Option<&str>,
        activation: Activation,
        role: Role,
    ) -> (usize, Vec<i64>) {
        let layer = Layer {
            name: name.to_string(),
            op: LayerOp::Conv2d { inputs: input[0], outputs, kernel, stride, padding },
            bias,
            batch_norm: bn.map(str::to_string),
            activation,
            role,
            input_hw: (input[1], input[2]),
        };
        let (h, w) = layer.output_hw();
        (self.add_layer(layer), vec![outputs, h, w])
    }

    /// Conv (+BN) + activation placed in the program.
    #[allow(clippy::too_many_arguments)]
    pub fn conv(
        &mut self,
        name: &str,
        outputs: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        bias: bool,
        bn: Option<&str>,
        role: Role,
    ) {
        self.conv_with(name, outputs, kernel, stride, padding, bias, bn, Activation::Relu, role);
    }

    /// Conv (+BN) with the given activation, placed in the program.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_with(
        &mut self,
        name: &str,
        outputs: i64,
        kernel: i64,
        stride: i64,
        padding: i64,
        bias: bool,
        bn: Option<&str>,
        activation: Activation,
        role: Role,
    ) {
        let input = self.shape.clone();
        let (i, shape) =
            self.conv_layer(name, &input, outputs, kernel, stride, padding, bias, bn, activation, role);
        self.graph.nodes.push(Node::Layer(i));
        self.shape = shape;
    }

    /// Linear layer (with bias) placed in the program.
    pub fn linear(&mut self, name: &str, outputs: i64, activation: Activation) {
        self.linear_with(name, outputs, true, activation);
    }

    /// Linear layer placed in the program.
    pub fn linear_with(&mut self, name: &str, outputs: i64, bias: bool, activation: Activation) {
        let inputs = self.shape[0];
        let i = self.add_layer(Layer {
            name: name.to_string(),
            op: LayerOp::Linear { inputs, outputs },
            bias,
            batch_norm: None,
            activation,
            role: Role::Plain,
            input_hw: (1, 1),
        });
        self.graph.nodes.push(Node::Layer(i));
        self.shape = vec![outputs];
    }

    pub fn max_pool(&mut self, kernel: i64, stride: i64) {
        self.graph.nodes.push(Node::MaxPool2d { kernel, stride });
        let s = &self.shape;
        self.shape = vec![s[0], (s[1] - kernel) / stride + 1, (s[2] - kernel) / stride + 1];
    }

    pub fn flatten(&mut self) {
        self.graph.nodes.push(Node::Flatten);
        self.shape = vec![self.shape.iter().product()];
    }

    pub fn global_avg_pool(&mut self) {
        self.graph.nodes.push(Node::GlobalAvgPool);
        self.shape = vec![self.shape[0]];
    }

    pub fn dropout(&mut self, p: f64) {
        self.graph.nodes.push(Node::Dropout { p });
    }

    /// A BasicBlock `prefix` (e.g. `layer2.0`) with `planes` outputs and the given stride;
    /// `option_b` selects a 1x1 conv + BN projection for a changing shape, else option A.
    pub fn basic_block(&mut self, prefix: &str, planes: i64, stride: i64, option_b: bool) {
        self.basic_block_named(&BlockNames::from_prefix(prefix), planes, stride, option_b);
    }

    /// A BasicBlock with explicit names; an option-A shortcut pads `(planes - inputs) / 2`
    /// channels on each side.
    pub fn basic_block_named(&mut self, names: &BlockNames, planes: i64, stride: i64, option_b: bool) {
        let b = self.graph.blocks.len();
        let input = self.shape.clone();
        let (conv1, mid) = self.conv_layer(
            &names.conv1,
            &input,
            planes,
            3,
            stride,
            1,
            false,
            Some(&names.bn1),
            Activation::Relu,
            Role::BlockConv1(b),
        );
        let (conv2, out) = self.conv_layer(
            &names.conv2,
            &mid,
            planes,
            3,
            1,
            1,
            false,
            Some(&names.bn2),
            Activation::Identity,
            Role::BlockConv2(b),
        );
        let changes = stride != 1 || input[0] != planes;
        let (shortcut, mask) = if !changes {
            (Shortcut::Identity, Some(names.mask.clone()))
        } else if option_b {
            let (layer, _) = self.conv_layer(
                &names.shortcut_conv,
                &input,
                planes,
                1,
                stride,
                0,
                false,
                Some(&names.shortcut_bn),
                Activation::Identity,
                Role::Shortcut(b),
            );
            (Shortcut::Conv { layer }, None)
        } else {
            (Shortcut::PadA { pad: (planes - input[0]) / 2 }, Some(names.mask.clone()))
        };
        self.graph.blocks.push(Block { conv1, conv2, shortcut, mask });
        self.graph.nodes.push(Node::Block(b));
        self.shape = out;
    }

    /// The graph, validated.
    pub fn try_finish(self) -> Result<PruneGraph, String> {
        self.graph.validate()?;
        Ok(self.graph)
    }

    /// The graph of a zoo architecture (panics when inconsistent: a bug of the zoo).
    pub fn finish(self) -> PruneGraph {
        let arch = self.graph.arch.clone();
        match self.try_finish() {
            Ok(g) => g,
            Err(e) => panic!("model zoo graph `{arch}` is inconsistent: {e}"),
        }
    }
}
