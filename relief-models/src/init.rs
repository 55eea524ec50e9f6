//! How a fresh model's parameters are drawn: relief's own scheme ([`InitScheme::Relief`], the
//! default) or the authors' PyTorch code, bit for bit ([`InitScheme::Pytorch`]).
//!
//! # `pytorch`
//!
//! The authors' `train.py` calls `torch.manual_seed(seed)` and then builds the model on the CPU
//! (`model.to(device)` comes after; nothing draws from the generator in between). Building draws
//! in two passes over the CPU generator:
//!
//! 1. every module runs its default `reset_parameters()` when it is constructed. `nn.Linear` and
//!    `nn.Conv2d`: `kaiming_uniform_(weight, a = sqrt(5))`, i.e. `weight.uniform_(-b, b)` with
//!    `b = sqrt(3) * gain / sqrt(fan_in)`, `gain = sqrt(2 / (1 + a^2))`; then, when the layer has
//!    a bias, `bias.uniform_(-1 / sqrt(fan_in), 1 / sqrt(fan_in))`. BatchNorm sets weight 1,
//!    bias 0, running mean 0, running variance 1 and draws nothing; ReLU, pooling, dropout and the
//!    option-A `LambdaLayer` own no parameters.
//! 2. `self.apply(_weights_init)` at the end of the top module's `__init__`:
//!    `kaiming_normal_(m.weight)` (fan_in, leaky_relu with `a = 0`: `weight.normal_(0, std)`,
//!    `std = sqrt(2) / sqrt(fan_in)`) for every `nn.Linear` and `nn.Conv2d`, in `Module.apply`
//!    order: children before their parent, children in registration order, so the layers come in
//!    the order they were registered. Biases are left alone: they keep their draw of pass 1.
//!
//! relief replays both passes with libtorch's own generator and kernels (`manual_seed`,
//! `Tensor::uniform_` and `Tensor::normal_` on f32 CPU tensors), bounds and deviations computed in
//! f64 exactly as `torch.nn.init` computes them, and only then copies the tensors to the device:
//! CPU and CUDA runs start from the same bits, the bits `torch.manual_seed(seed)` plus the
//! authors' model classes give (`tests/init_pytorch.rs` checks every zoo model for seeds 0, 1
//! and 2 against PyTorch). `fan_in` is `torch.nn.init`'s: the weight's second dimension times
//! its receptive field (`in x k x k` for a convolution).
//!
//! Both passes visit the layers in the network's module construction order, which relief takes
//! from the graph ([`construction_order`]): the layers as the forward program reaches them, a
//! residual block as `conv1`, `conv2` and then its option-B projection `shortcut.0` (the authors'
//! `BasicBlock` constructs `conv1`, `bn1`, `conv2`, `bn2`, then the shortcut; `shortcut` is
//! registered as an empty `nn.Sequential` before the projection replaces it, which keeps its
//! place). For every zoo architecture this is the authors' construction order, and it is also the
//! graph's layer order (`construction_order_is_the_layer_order_for_every_zoo_model` below): the
//! LeNets' `nn.Sequential`s, VGG's `features` then `classifier`, ResNet's `conv1`, `bn1`,
//! `layer1..`, `linear`; no zoo model needs a reordering. For a user spec the same rule applies:
//! spec order is construction order, so the PyTorch module a spec mirrors must construct its
//! layers in forward order (as an `nn.Sequential` does) for the bits to agree.
//!
//! The generator is libtorch's global one: a thread drawing random numbers while another
//! initialises a model interleaves with it (the same holds for [`InitScheme::Relief`]).

use std::fmt;
use std::str::FromStr;

use relief_core::graph::{Node, PruneGraph, Shortcut};
use serde::{Deserialize, Serialize};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use crate::model::{add_batch_norm, init_vars, sub_path};

/// How [`init_vars_with`] draws a fresh model's parameters from its seed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitScheme {
    /// relief's own (the default, [`init_vars`]): layer by layer in graph order, Kaiming-normal
    /// weights (`std = sqrt(2 / fan_in)`, `randn` drawn on the model's device, so CPU and CUDA
    /// differ), then the bias `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`; BatchNorm `gamma = 1,
    /// beta = 0`, running mean 0 and variance 1. The same distributions as the authors', not
    /// their draws.
    #[default]
    Relief,
    /// The authors' PyTorch code bit for bit: for a seed, exactly the tensors that
    /// `torch.manual_seed(seed)` and the authors' model classes give (see the module docs).
    Pytorch,
}

impl InitScheme {
    /// Both schemes, default first.
    pub const ALL: [InitScheme; 2] = [InitScheme::Relief, InitScheme::Pytorch];

    /// The config name: `relief` or `pytorch`.
    pub fn name(self) -> &'static str {
        match self {
            InitScheme::Relief => "relief",
            InitScheme::Pytorch => "pytorch",
        }
    }

    /// True for the default ([`InitScheme::Relief`]); for `skip_serializing_if`.
    pub fn is_default(&self) -> bool {
        *self == InitScheme::Relief
    }
}

impl fmt::Display for InitScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InitScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        InitScheme::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown init scheme `{s}`; expected relief or pytorch"))
    }
}

/// The parameters and BatchNorm buffers of `graph`, freshly drawn with `scheme` from `seed`
/// (see [`InitScheme`]); [`InitScheme::Relief`] is exactly [`init_vars`].
pub fn init_vars_with(graph: &PruneGraph, device: Device, seed: i64, scheme: InitScheme) -> VarStore {
    match scheme {
        InitScheme::Relief => init_vars(graph, device, seed),
        InitScheme::Pytorch => init_vars_pytorch(graph, device, seed),
    }
}

/// Indices of `graph`'s layers in the construction order of the PyTorch modules (see the module
/// docs): program order, a block's `conv1`, `conv2`, then its projection shortcut. Panics when
/// the program does not use every layer exactly once (an invalid graph).
pub fn construction_order(graph: &PruneGraph) -> Vec<usize> {
    let mut order = Vec::with_capacity(graph.layers.len());
    for node in &graph.nodes {
        match node {
            Node::Layer(i) => order.push(*i),
            Node::Block(b) => {
                let block = &graph.blocks[*b];
                order.push(block.conv1);
                order.push(block.conv2);
                if let Shortcut::Conv { layer } = block.shortcut {
                    order.push(layer);
                }
            }
            Node::MaxPool2d { .. } | Node::GlobalAvgPool | Node::Flatten | Node::Dropout { .. } => {}
        }
    }
    let mut seen = vec![false; graph.layers.len()];
    for &i in &order {
        assert!(!seen[i], "{}: layer {} appears twice in the program", graph.arch, graph.layers[i].name);
        seen[i] = true;
    }
    assert!(seen.iter().all(|&s| s), "{}: a layer is not used by the program", graph.arch);
    order
}

/// `torch.nn.init.calculate_gain("leaky_relu", a)`: `sqrt(2 / (1 + a ** 2))`.
fn leaky_relu_gain(a: f64) -> f64 {
    (2.0 / (1.0 + a.powf(2.0))).sqrt()
}

/// `torch.nn.init._calculate_fan_in_and_fan_out(w)[0]`: `w.size(1)` times the receptive field.
fn fan_in(weight_shape: &[i64]) -> i64 {
    weight_shape[1..].iter().product()
}

/// The bound of `kaiming_uniform_(w, a)` (mode fan_in, leaky_relu): `sqrt(3) * gain / sqrt(fan)`.
fn kaiming_uniform_bound(fan: i64, a: f64) -> f64 {
    let std = leaky_relu_gain(a) / (fan as f64).sqrt();
    3.0f64.sqrt() * std
}

/// The deviation of `kaiming_normal_(w)` (a = 0, mode fan_in, leaky_relu): `sqrt(2) / sqrt(fan)`.
fn kaiming_normal_std(fan: i64) -> f64 {
    leaky_relu_gain(0.0) / (fan as f64).sqrt()
}

/// The bias bound of `nn.Linear` / `nn.Conv2d`'s `reset_parameters`.
fn bias_bound(fan: i64) -> f64 {
    if fan > 0 {
        1.0 / (fan as f64).sqrt()
    } else {
        0.0
    }
}

/// [`InitScheme::Pytorch`]: both passes on the CPU, then into a `VarStore` on `device`.
fn init_vars_pytorch(graph: &PruneGraph, device: Device, seed: i64) -> VarStore {
    let order = construction_order(graph);
    let cpu = (Kind::Float, Device::Cpu);
    let mut weights: Vec<Option<Tensor>> = graph.layers.iter().map(|_| None).collect();
    let mut biases: Vec<Option<Tensor>> = graph.layers.iter().map(|_| None).collect();
    tch::manual_seed(seed);
    // Pass 1: each layer's reset_parameters(), as the modules are constructed.
    for &i in &order {
        let layer = &graph.layers[i];
        let shape = layer.op.weight_shape();
        let fan = fan_in(&shape);
        let mut w = Tensor::empty(shape.as_slice(), cpu);
        let bound = kaiming_uniform_bound(fan, 5.0f64.sqrt());
        let _ = w.uniform_(-bound, bound);
        weights[i] = Some(w);
        if layer.bias {
            let mut b = Tensor::empty([layer.op.outputs()], cpu);
            let bound = bias_bound(fan);
            let _ = b.uniform_(-bound, bound);
            biases[i] = Some(b);
        }
    }
    // Pass 2: the authors' `apply(_weights_init)`, kaiming_normal_ on every weight.
    for &i in &order {
        let w = weights[i].as_mut().expect("drawn in pass 1");
        let std = kaiming_normal_std(fan_in(&w.size()));
        let _ = w.normal_(0.0, std);
    }
    let vs = VarStore::new(device);
    for (i, layer) in graph.layers.iter().enumerate() {
        let p = sub_path(&vs, &layer.name);
        let _ = p.var_copy("weight", weights[i].as_ref().expect("drawn in pass 1"));
        if let Some(b) = &biases[i] {
            let _ = p.var_copy("bias", b);
        }
        if let Some(bn) = &layer.batch_norm {
            add_batch_norm(&vs, bn, layer.op.outputs());
        }
    }
    vs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Arch, ModelSpec, ZOO_SPECS};

    #[test]
    fn construction_order_is_the_layer_order_for_every_zoo_model() {
        for name in ZOO_SPECS {
            let arch: Arch = name.parse().unwrap();
            for graph in [arch.graph(10), ModelSpec::zoo(name).unwrap().graph(10).unwrap()] {
                let order = construction_order(&graph);
                assert_eq!(order, (0..graph.layers.len()).collect::<Vec<_>>(), "{name}");
            }
        }
    }

    #[test]
    fn bounds_are_torch_nn_inits() {
        // Python: math.sqrt(2.0 / (1 + math.sqrt(5) ** 2)), math.sqrt(2.0 / (1 + 0 ** 2)).
        assert_eq!(leaky_relu_gain(5.0f64.sqrt()), 0.5773502691896257);
        assert_eq!(leaky_relu_gain(0.0), std::f64::consts::SQRT_2);
        // lenet300-100's first layer (fan_in 784) and a 3x3 conv over 64 channels (576).
        assert_eq!(kaiming_uniform_bound(784, 5.0f64.sqrt()), 0.03571428571428571);
        assert_eq!(kaiming_normal_std(576), std::f64::consts::SQRT_2 / 24.0);
        assert_eq!(bias_bound(784), 1.0 / 28.0);
    }

    #[test]
    fn scheme_names_round_trip() {
        for s in InitScheme::ALL {
            assert_eq!(s.name().parse::<InitScheme>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{}\"", s.name()));
        }
        assert_eq!(InitScheme::default(), InitScheme::Relief);
        assert!("torch".parse::<InitScheme>().is_err());
    }
}
