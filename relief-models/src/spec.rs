//! Architectures as data: a TOML model spec that lists a network's layers and blocks with the
//! parameter names the user chooses, checked with shape inference before anything runs, and
//! turned into the [`PruneGraph`] the engine works on. The zoo's architectures are built-in
//! specs of the same format (`specs/*.toml`, embedded in the binary). See `docs/models.md`.
//!
//! ```toml
//! name = "lenet5"
//! input_shape = [1, 28, 28]
//! num_classes = 10
//!
//! [[layer]]
//! kind = "conv2d"
//! name = "feature_extractor.0"
//! out_channels = 20
//! kernel = 5
//!
//! [[layer]]
//! kind = "relu"
//!
//! [[layer]]
//! kind = "max_pool"
//! kernel = 2
//! # ...
//! [[layer]]
//! kind = "linear"
//! name = "classifier.2"
//! out_features = "classes"
//! ```
//!
//! The engine's prunable unit is a convolution or linear layer optionally followed by a
//! BatchNorm and a ReLU: a spec lists them as separate entries and they are fused here, so a
//! `batch_norm` must directly follow a `conv2d` and a `relu` a `conv2d`, `linear` or
//! `batch_norm`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use relief_core::graph::{
    Activation, Block, Convention, LayerOp, Node, PruneGraph, Role, Shortcut, BN_SUFFIXES,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::builder::{BlockNames, GraphBuilder};
use crate::zoo::Arch;

/// A model spec: a network as a list of layers, with its input shape and default classes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelSpec {
    /// The model's name (the graph's `arch`).
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Per-sample input shape: `[features]` or `[channels, height, width]`.
    pub input_shape: Vec<i64>,
    /// Number of classes when none is given (`graph(n)` overrides it).
    pub num_classes: i64,
    /// The authors' implementation the model follows in `reference` semantics; inferred when
    /// absent: `resnet` with residual blocks, else `vgg` with BatchNorm, else `lenet`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub convention: Option<Convention>,
    /// The layers in forward order (`[[layer]]` tables).
    #[serde(rename = "layer")]
    pub layers: Vec<Layer>,
}

/// One entry of a spec (`kind = "..."`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Layer {
    /// Fully connected layer.
    Linear(Linear),
    /// 2-D convolution.
    Conv2d(Conv2d),
    /// BatchNorm of the convolution just before.
    BatchNorm(BatchNorm),
    /// ReLU of the layer (or BatchNorm) just before.
    Relu(NoFields),
    /// Max pooling, no padding.
    MaxPool(MaxPool),
    /// Average over all positions: `C x H x W -> C`.
    GlobalAvgPool(NoFields),
    /// `AdaptiveAvgPool2d(1)` followed by a flatten (only `output_size = 1`).
    AdaptiveAvgPool(AdaptiveAvgPool),
    /// `C x H x W -> C*H*W`, channel-major.
    Flatten(NoFields),
    /// Dropout (identity in eval mode).
    Dropout(Dropout),
    /// A ResNet BasicBlock: two 3x3 convolutions with BatchNorm and a shortcut.
    BasicBlock(BasicBlock),
}

/// A kind without fields (`relu`, `flatten`, `global_avg_pool`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoFields {}

/// `kind = "linear"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// Module path: parameters `<name>.weight`, `<name>.bias`.
    pub name: String,
    /// Expected input features (checked; inferred when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_features: Option<i64>,
    /// Output features, or `"classes"`; may be omitted on the last layer (= classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_features: Option<Features>,
    /// Whether the layer has a bias.
    #[serde(default = "yes")]
    pub bias: bool,
}

/// A width: a number, or `"classes"` (the model's number of classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Features {
    /// A fixed number.
    Count(i64),
    /// The number of classes.
    Classes,
}

impl Features {
    fn resolve(self, num_classes: i64) -> i64 {
        match self {
            Features::Count(n) => n,
            Features::Classes => num_classes,
        }
    }
}

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Features::Count(n) => s.serialize_i64(*n),
            Features::Classes => s.serialize_str("classes"),
        }
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Features;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer or \"classes\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Features, E> {
                Ok(Features::Count(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Features, E> {
                i64::try_from(v).map(Features::Count).map_err(|_| E::custom("width too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Features, E> {
                match v {
                    "classes" => Ok(Features::Classes),
                    other => Err(E::custom(format!("expected an integer or \"classes\", got \"{other}\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `kind = "conv2d"`: square kernel, stride and padding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conv2d {
    /// Module path: parameters `<name>.weight`, `<name>.bias`.
    pub name: String,
    /// Expected input channels (checked; inferred when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_channels: Option<i64>,
    /// Filters.
    pub out_channels: i64,
    /// Kernel size.
    pub kernel: i64,
    /// Stride (1).
    #[serde(default = "one")]
    pub stride: i64,
    /// Zero padding on each side (0).
    #[serde(default)]
    pub padding: i64,
    /// Whether the layer has a bias (true).
    #[serde(default = "yes")]
    pub bias: bool,
    /// The ResNet stem (the first layer): in `reference` semantics its mask is never applied
    /// and the authors' parameter count leaves it out.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stem: bool,
}

/// `kind = "batch_norm"`: buffers `<name>.weight|bias|running_mean|running_var|num_batches_tracked`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchNorm {
    /// Module path.
    pub name: String,
}

/// `kind = "max_pool"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxPool {
    /// Window size.
    pub kernel: i64,
    /// Stride (the kernel size when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stride: Option<i64>,
}

/// `kind = "adaptive_avg_pool"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveAvgPool {
    /// Output size; only 1 (global average pooling) is supported.
    pub output_size: i64,
}

/// `kind = "dropout"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dropout {
    /// Drop probability, `0 <= p < 1`.
    pub p: f64,
}

/// How a BasicBlock's shortcut adapts when the block changes the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShortcutKind {
    /// Option A: subsample by 2 and zero-pad the new channels (no parameters).
    A,
    /// Option B: a 1x1 convolution (stride of the block) + BatchNorm.
    B,
}

/// `kind = "basic_block"`: `relu(bn2(conv2(relu(bn1(conv1(x))))) + m * shortcut(x))` with 3x3
/// convolutions (padding 1, no bias), `conv1` strided. The shortcut is the identity when the
/// block keeps the shape (stride 1, `planes` = input channels), else `shortcut` says how it
/// adapts; identity and option-A shortcuts carry a per-channel shortcut mask `m`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicBlock {
    /// Names everything after the authors: `<prefix>.conv1`, `.bn1`, `.conv2`, `.bn2`,
    /// `.shortcut.0`, `.shortcut.1` (option B) and the mask `<prefix>.shortcut`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Output channels of both convolutions.
    pub planes: i64,
    /// Stride of the first convolution (and of the projection).
    #[serde(default = "one")]
    pub stride: i64,
    /// Option A or B, used when the block changes the shape.
    pub shortcut: ShortcutKind,
    /// Overrides the name of the first convolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv1: Option<String>,
    /// Overrides the name of the first BatchNorm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn1: Option<String>,
    /// Overrides the name of the second convolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv2: Option<String>,
    /// Overrides the name of the second BatchNorm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bn2: Option<String>,
    /// Overrides the name of the option-B projection convolution.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortcut_conv: Option<String>,
    /// Overrides the name of the option-B projection's BatchNorm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shortcut_bn: Option<String>,
    /// Overrides the name of the shortcut mask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<String>,
}

fn yes() -> bool {
    true
}
fn one() -> i64 {
    1
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// Every kind a spec accepts.
pub const LAYER_KINDS: [&str; 10] = [
    "linear",
    "conv2d",
    "batch_norm",
    "relu",
    "max_pool",
    "global_avg_pool",
    "adaptive_avg_pool",
    "flatten",
    "dropout",
    "basic_block",
];

/// Kinds users may expect that the engine does not support, with the reason.
fn unsupported(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "avg_pool" | "avg_pool2d" => {
            "average pooling with a window is not supported by the engine (no program node for it); \
             use global_avg_pool (or adaptive_avg_pool with output_size = 1)"
        }
        "adaptive_max_pool" | "max_pool1d" | "conv1d" | "conv3d" | "conv_transpose2d" | "batch_norm1d" => {
            "the engine supports 2-D convolutions, max pooling and BatchNorm after a convolution only"
        }
        "sigmoid" | "tanh" | "gelu" | "silu" | "elu" | "leaky_relu" | "softmax" | "log_softmax" => {
            "the engine supports ReLU only (or no activation): its statistics, dead-unit rule and \
             compaction assume ReLU"
        }
        "bottleneck" | "residual" => "the only residual block is basic_block",
        "layer_norm" | "group_norm" | "embedding" | "lstm" | "gru" | "attention" => {
            "the engine has no pruning rule for this layer"
        }
        _ => return None,
    })
}

impl Layer {
    /// The `kind` string.
    pub fn kind(&self) -> &'static str {
        match self {
            Layer::Linear(_) => "linear",
            Layer::Conv2d(_) => "conv2d",
            Layer::BatchNorm(_) => "batch_norm",
            Layer::Relu(_) => "relu",
            Layer::MaxPool(_) => "max_pool",
            Layer::GlobalAvgPool(_) => "global_avg_pool",
            Layer::AdaptiveAvgPool(_) => "adaptive_avg_pool",
            Layer::Flatten(_) => "flatten",
            Layer::Dropout(_) => "dropout",
            Layer::BasicBlock(_) => "basic_block",
        }
    }

    /// The name (or block prefix) when the kind has one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Layer::Linear(l) => Some(&l.name),
            Layer::Conv2d(l) => Some(&l.name),
            Layer::BatchNorm(l) => Some(&l.name),
            Layer::BasicBlock(b) => b.prefix.as_deref().or(b.conv1.as_deref()),
            _ => None,
        }
    }

    /// Parses one `[[layer]]` table: `kind` first, then the kind's fields (unknown fields are
    /// refused).
    pub fn from_table(mut table: toml::Table) -> Result<Layer, String> {
        let kind = match table.remove("kind") {
            None => return Err("missing field `kind`".into()),
            Some(toml::Value::String(k)) => k,
            Some(other) => return Err(format!("`kind` must be a string, got {other}")),
        };
        // Every size is bounded, so that shape arithmetic cannot overflow (a layer this large
        // could not be allocated anyway; the plan's memory estimate refuses smaller absurdities).
        for (field, v) in &table {
            if let toml::Value::Integer(i) = v {
                if *i > MAX_SIZE {
                    return Err(format!("`{field}` = {i}: expected at most {MAX_SIZE} (2^24)"));
                }
            }
        }
        let value = toml::Value::Table(table);
        fn fields<T: serde::de::DeserializeOwned>(v: toml::Value) -> Result<T, String> {
            v.try_into::<T>().map_err(|e| e.message().trim().to_string())
        }
        Ok(match kind.as_str() {
            "linear" => Layer::Linear(fields(value)?),
            "conv2d" => Layer::Conv2d(fields(value)?),
            "batch_norm" => Layer::BatchNorm(fields(value)?),
            "relu" => Layer::Relu(fields(value)?),
            "max_pool" => Layer::MaxPool(fields(value)?),
            "global_avg_pool" => Layer::GlobalAvgPool(fields(value)?),
            "adaptive_avg_pool" => Layer::AdaptiveAvgPool(fields(value)?),
            "flatten" => Layer::Flatten(fields(value)?),
            "dropout" => Layer::Dropout(fields(value)?),
            "basic_block" => Layer::BasicBlock(fields(value)?),
            other => {
                return Err(match unsupported(other) {
                    Some(why) => format!("layer kind `{other}` is not supported: {why}"),
                    None => {
                        format!("unknown layer kind `{other}`; expected one of: {}", LAYER_KINDS.join(", "))
                    }
                })
            }
        })
    }
}

impl<'de> Deserialize<'de> for Layer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let table = toml::Table::deserialize(d)?;
        Layer::from_table(table).map_err(serde::de::Error::custom)
    }
}

/// What is wrong with a spec.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SpecError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// Not TOML, or a top-level field is missing, unknown or mistyped.
    #[error("{0}")]
    Syntax(String),
    /// A top-level problem (input shape, classes, the network's output).
    #[error("{0}")]
    Spec(String),
    /// A problem of one layer.
    #[error("layer {index}{} ({kind}): {message}", name.as_ref().map(|n| format!(" `{n}`")).unwrap_or_default())]
    Layer {
        /// Position in the spec's `[[layer]]` list, from 0.
        index: usize,
        /// Its name (or block prefix), when it has one.
        name: Option<String>,
        /// Its kind (`?` when unknown).
        kind: String,
        /// What is wrong.
        message: String,
    },
}

impl SpecError {
    /// The error with every quote of the input cut to a readable length (a 10 MB line in a spec
    /// must not make a 10 MB message).
    pub fn shortened(self) -> SpecError {
        use relief_core::runtime::message::{cut_long_lines as cut_lines, quote_cut};
        match self {
            SpecError::Read { path, message } => SpecError::Read { path, message: cut_lines(&message) },
            SpecError::Syntax(m) => SpecError::Syntax(cut_lines(&m)),
            SpecError::Spec(m) => SpecError::Spec(cut_lines(&m)),
            SpecError::Layer { index, name, kind, message } => SpecError::Layer {
                index,
                name: name.map(|n| quote_cut(&n, 80)),
                kind: quote_cut(&kind, 40),
                message: cut_lines(&message),
            },
        }
    }

    /// The index of the layer the error is about, if any.
    pub fn layer_index(&self) -> Option<usize> {
        match self {
            SpecError::Layer { index, .. } => Some(*index),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: String,
    #[serde(default)]
    description: Option<String>,
    input_shape: Vec<i64>,
    num_classes: i64,
    #[serde(default)]
    convention: Option<Convention>,
    #[serde(default)]
    layer: Vec<toml::Table>,
}

fn raw_to_spec(raw: RawSpec) -> Result<ModelSpec, SpecError> {
    let mut layers = Vec::with_capacity(raw.layer.len());
    for (index, table) in raw.layer.into_iter().enumerate() {
        let kind = table.get("kind").and_then(|k| k.as_str()).unwrap_or("?").to_string();
        let name = ["name", "prefix", "conv1"]
            .iter()
            .find_map(|k| table.get(*k).and_then(|v| v.as_str()))
            .map(str::to_string);
        let layer =
            Layer::from_table(table).map_err(|message| SpecError::Layer { index, name, kind, message })?;
        layers.push(layer);
    }
    Ok(ModelSpec {
        name: raw.name,
        description: raw.description,
        input_shape: raw.input_shape,
        num_classes: raw.num_classes,
        convention: raw.convention,
        layers,
    })
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawSpec::deserialize(d)?;
        raw_to_spec(raw).map_err(serde::de::Error::custom)
    }
}

/// Names of the built-in specs, in listing order.
pub const ZOO_SPECS: [&str; 15] = [
    "lenet300-100",
    "lenet5",
    "vgg-like",
    "vgg11",
    "vgg13",
    "vgg16",
    "vgg19",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "vgg16-tiny",
    "vgg19-tiny",
    "resnet18-tiny",
];

/// The TOML text of a built-in spec by its canonical name.
pub fn zoo_toml(name: &str) -> Option<&'static str> {
    Some(match name {
        "lenet300-100" => include_str!("../specs/lenet300-100.toml"),
        "lenet5" => include_str!("../specs/lenet5.toml"),
        "vgg-like" => include_str!("../specs/vgg-like.toml"),
        "vgg11" => include_str!("../specs/vgg11.toml"),
        "vgg13" => include_str!("../specs/vgg13.toml"),
        "vgg16" => include_str!("../specs/vgg16.toml"),
        "vgg19" => include_str!("../specs/vgg19.toml"),
        "resnet20" => include_str!("../specs/resnet20.toml"),
        "resnet32" => include_str!("../specs/resnet32.toml"),
        "resnet44" => include_str!("../specs/resnet44.toml"),
        "resnet56" => include_str!("../specs/resnet56.toml"),
        "resnet110" => include_str!("../specs/resnet110.toml"),
        "vgg16-tiny" => include_str!("../specs/vgg16-tiny.toml"),
        "vgg19-tiny" => include_str!("../specs/vgg19-tiny.toml"),
        "resnet18-tiny" => include_str!("../specs/resnet18-tiny.toml"),
        _ => return None,
    })
}

impl Arch {
    /// The built-in spec's TOML text.
    pub fn spec_toml(&self) -> &'static str {
        zoo_toml(&self.to_string()).expect("every zoo architecture has a built-in spec")
    }

    /// The built-in spec; `spec().graph(n)` equals `graph(n)`.
    pub fn spec(&self) -> ModelSpec {
        ModelSpec::parse(self.spec_toml()).expect("built-in specs parse")
    }
}

/// What shape inference found for one spec entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// Position in the spec.
    pub index: usize,
    /// Its kind.
    pub kind: &'static str,
    /// Its name (or block prefix), if any.
    pub name: Option<String>,
    /// Per-sample shape after it.
    pub output_shape: Vec<i64>,
    /// Graph layers whose weights and biases this entry declares.
    pub weights: Vec<usize>,
    /// Graph layers whose BatchNorm this entry declares.
    pub batch_norms: Vec<usize>,
}

/// A spec checked and built: the graph and, per spec entry, what it became.
#[derive(Debug, Clone)]
pub struct Inference {
    /// The prunable structure.
    pub graph: PruneGraph,
    /// Per spec entry, in order.
    pub layers: Vec<LayerInfo>,
}

/// A convolution or linear layer waiting for its BatchNorm / ReLU.
struct Pending {
    linear: bool,
    name: String,
    outputs: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
    bias: bool,
    stem: bool,
    bn: Option<String>,
    relu: bool,
}

/// The largest size a spec may give (channels, features, kernel, stride, padding, an input
/// dimension, the classes): 2^24.
pub const MAX_SIZE: i64 = 1 << 24;

/// The most entries one sample's activation (a layer's output) or one layer's weight may have:
/// 2^40 (4 TiB of float32).
pub const MAX_ENTRIES: i64 = 1 << 40;

/// The entries of `shape`, or `None` above [`MAX_ENTRIES`] (or on overflow).
fn bounded_numel(shape: &[i64]) -> Option<i64> {
    shape.iter().try_fold(1i64, |a, &d| a.checked_mul(d)).filter(|&n| n <= MAX_ENTRIES)
}

/// First components of a parameter name that relief's checkpoints use for their own entries
/// (`mask.<param>`, `opt.<state>`, `best.<param>`): a module so named would be read back as one
/// of them, so specs (and relief_torch exports) refuse it.
pub const RESERVED_NAMES: [&str; 3] = ["mask", "opt", "best"];

/// `text` cut to a readable length for an error message (at most 80 characters, then `…`).
fn cut(text: &str) -> String {
    relief_core::runtime::message::quote_cut(text, 80)
}

struct Names {
    /// Tensor (and mask) name -> the spec entry that declared it.
    owner: BTreeMap<String, usize>,
}

impl Names {
    fn check_path(path: &str) -> Result<(), String> {
        let first = path.split('.').next().unwrap_or_default();
        if RESERVED_NAMES.contains(&first) {
            return Err(format!(
                "module path `{}` begins with `{first}`, which relief's checkpoints reserve for their \
                 own entries ({}): rename the module (e.g. `{first}_`)",
                cut(path),
                RESERVED_NAMES.map(|r| format!("`{r}.`")).join(", ")
            ));
        }
        let ok = !path.is_empty()
            && path
                .split('.')
                .all(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'));
        if ok {
            Ok(())
        } else {
            Err(format!(
                "invalid module path `{}`: use dot-separated names of letters, digits and `_` \
                 (like PyTorch's `features.0`)",
                cut(path)
            ))
        }
    }

    fn claim(&mut self, entry: usize, names: Vec<String>, spec: &ModelSpec) -> Result<(), String> {
        for n in names {
            if let Some(&other) = self.owner.get(&n) {
                let who = spec.layers[other].name().map(|s| format!(" `{s}`")).unwrap_or_default();
                return Err(format!(
                    "duplicate parameter name `{n}`: already declared by layer {other}{who} ({})",
                    spec.layers[other].kind()
                ));
            }
            self.owner.insert(n, entry);
        }
        Ok(())
    }
}

fn param_names(module: &str, bias: bool) -> Vec<String> {
    let mut v = vec![format!("{module}.weight")];
    if bias {
        v.push(format!("{module}.bias"));
    }
    v
}

fn bn_names(module: &str) -> Vec<String> {
    BN_SUFFIXES.iter().map(|s| format!("{module}.{s}")).collect()
}

fn conv_out(size: i64, kernel: i64, stride: i64, padding: i64) -> i64 {
    (size + 2 * padding - kernel) / stride + 1
}

impl ModelSpec {
    /// Parses a spec from TOML text (layers are checked for kinds and fields, not yet shapes).
    pub fn parse(text: &str) -> Result<ModelSpec, SpecError> {
        let raw: Result<RawSpec, SpecError> =
            toml::from_str(text).map_err(|e| SpecError::Syntax(e.to_string().trim().to_string()));
        raw.and_then(raw_to_spec).map_err(SpecError::shortened)
    }

    /// Reads and parses a spec file.
    pub fn from_file(path: &Path) -> Result<ModelSpec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::Read { path: path.display().to_string(), message: e.to_string() })?;
        ModelSpec::parse(&text).map_err(|e| match e {
            SpecError::Syntax(m) => SpecError::Syntax(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The built-in spec of a zoo architecture by name (the names `Arch` parses).
    pub fn zoo(name: &str) -> Option<ModelSpec> {
        name.parse::<Arch>().ok().map(|a| a.spec())
    }

    /// The spec as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a spec serialises to TOML")
    }

    /// The convention: the spec's, else inferred (blocks: resnet; BatchNorm: vgg; else lenet).
    pub fn convention(&self) -> Convention {
        self.convention.unwrap_or_else(|| {
            if self.layers.iter().any(|l| matches!(l, Layer::BasicBlock(_))) {
                Convention::Resnet
            } else if self.layers.iter().any(|l| matches!(l, Layer::BatchNorm(_))) {
                Convention::Vgg
            } else {
                Convention::Lenet
            }
        })
    }

    /// Checks the spec with shape inference and builds the graph for `num_classes` outputs.
    pub fn graph(&self, num_classes: i64) -> Result<PruneGraph, SpecError> {
        self.infer(num_classes).map(|i| i.graph)
    }

    /// Checks the spec with shape inference from the input shape; the graph and what each
    /// entry became. Errors name the entry (index and name), the shape it got and what it
    /// expected.
    pub fn infer(&self, num_classes: i64) -> Result<Inference, SpecError> {
        self.infer_checked(num_classes).map_err(SpecError::shortened)
    }

    fn infer_checked(&self, num_classes: i64) -> Result<Inference, SpecError> {
        if !(self.input_shape.len() == 1 || self.input_shape.len() == 3)
            || self.input_shape.iter().any(|&d| !(1..=MAX_SIZE).contains(&d))
        {
            return Err(SpecError::Spec(format!(
                "input_shape must be [features] or [channels, height, width] with sizes from 1 to \
                 {MAX_SIZE}, got {:?}",
                self.input_shape
            )));
        }
        if !(1..=MAX_SIZE).contains(&num_classes) {
            return Err(SpecError::Spec(format!(
                "num_classes must be from 1 to {MAX_SIZE}, got {num_classes}"
            )));
        }
        if bounded_numel(&self.input_shape).is_none() {
            return Err(SpecError::Spec(format!(
                "input_shape {:?} has more than {MAX_ENTRIES} (2^40) entries",
                self.input_shape
            )));
        }
        if self.layers.is_empty() {
            return Err(SpecError::Spec("a spec needs at least one [[layer]]".into()));
        }
        let last_prunable = self
            .layers
            .iter()
            .rposition(|l| matches!(l, Layer::Linear(_) | Layer::Conv2d(_) | Layer::BasicBlock(_)));
        let mut b = GraphBuilder::new(&self.name, &self.input_shape, num_classes, self.convention());
        let mut names = Names { owner: BTreeMap::new() };
        let mut infos: Vec<LayerInfo> = Vec::with_capacity(self.layers.len());
        let mut pending: Option<Pending> = None;
        // The running shape (the builder lags behind while a layer is pending).
        let mut shape = self.input_shape.clone();
        let mut next_layer = 0usize;

        fn flush(b: &mut GraphBuilder, pending: &mut Option<Pending>) {
            let Some(p) = pending.take() else { return };
            let act = if p.relu { Activation::Relu } else { Activation::Identity };
            if p.linear {
                b.linear_with(&p.name, p.outputs, p.bias, act);
            } else {
                let role = if p.stem { Role::Stem } else { Role::Plain };
                b.conv_with(
                    &p.name,
                    p.outputs,
                    p.kernel,
                    p.stride,
                    p.padding,
                    p.bias,
                    p.bn.as_deref(),
                    act,
                    role,
                );
            }
        }

        for (index, layer) in self.layers.iter().enumerate() {
            let err = |message: String| SpecError::Layer {
                index,
                name: layer.name().map(str::to_string),
                kind: layer.kind().to_string(),
                message,
            };
            let image = |what: &str| -> Result<(i64, i64, i64), SpecError> {
                if shape.len() == 3 {
                    Ok((shape[0], shape[1], shape[2]))
                } else {
                    Err(err(format!(
                        "{what} expects a C x H x W input, got shape {shape:?} (after a flatten or linear layer)"
                    )))
                }
            };
            let mut info = LayerInfo {
                index,
                kind: layer.kind(),
                name: layer.name().map(str::to_string),
                output_shape: Vec::new(),
                weights: Vec::new(),
                batch_norms: Vec::new(),
            };
            let prev = index.checked_sub(1).map(|i| self.layers[i].kind()).unwrap_or("the input");
            match layer {
                Layer::Conv2d(c) => {
                    flush(&mut b, &mut pending);
                    Names::check_path(&c.name).map_err(err)?;
                    let (ch, h, w) = image("conv2d")?;
                    if let Some(expected) = c.in_channels {
                        if expected != ch {
                            return Err(err(format!(
                                "expected {expected} input channels (in_channels), got shape {shape:?}"
                            )));
                        }
                    }
                    if c.out_channels < 1 || c.kernel < 1 || c.stride < 1 || c.padding < 0 {
                        return Err(err(format!(
                            "out_channels, kernel and stride must be at least 1 and padding at least 0, got \
                             out_channels = {}, kernel = {}, stride = {}, padding = {}",
                            c.out_channels, c.kernel, c.stride, c.padding
                        )));
                    }
                    if h + 2 * c.padding < c.kernel || w + 2 * c.padding < c.kernel {
                        return Err(err(format!(
                            "kernel {} does not fit the input {shape:?} with padding {}",
                            c.kernel, c.padding
                        )));
                    }
                    if c.stem && next_layer != 0 {
                        return Err(err("only the first layer can be the stem (stem = true)".into()));
                    }
                    names.claim(index, param_names(&c.name, c.bias), self).map_err(err)?;
                    shape = vec![
                        c.out_channels,
                        conv_out(h, c.kernel, c.stride, c.padding),
                        conv_out(w, c.kernel, c.stride, c.padding),
                    ];
                    info.weights.push(next_layer);
                    next_layer += 1;
                    pending = Some(Pending {
                        linear: false,
                        name: c.name.clone(),
                        outputs: c.out_channels,
                        kernel: c.kernel,
                        stride: c.stride,
                        padding: c.padding,
                        bias: c.bias,
                        stem: c.stem,
                        bn: None,
                        relu: false,
                    });
                }
                Layer::Linear(l) => {
                    flush(&mut b, &mut pending);
                    Names::check_path(&l.name).map_err(err)?;
                    if shape.len() != 1 {
                        return Err(err(format!(
                            "expects a vector input, got shape {shape:?}; add a flatten (or global_avg_pool) \
                             before it"
                        )));
                    }
                    if let Some(expected) = l.in_features {
                        if expected != shape[0] {
                            return Err(err(format!(
                                "expected {expected} input features (in_features), got shape {shape:?}"
                            )));
                        }
                    }
                    let outputs = match l.out_features {
                        Some(f) => f.resolve(num_classes),
                        None if Some(index) == last_prunable => num_classes,
                        None => {
                            return Err(err(
                                "missing field `out_features` (it may be omitted on the last layer only)"
                                    .into(),
                            ))
                        }
                    };
                    if outputs < 1 {
                        return Err(err(format!("out_features must be at least 1, got {outputs}")));
                    }
                    names.claim(index, param_names(&l.name, l.bias), self).map_err(err)?;
                    shape = vec![outputs];
                    info.weights.push(next_layer);
                    next_layer += 1;
                    pending = Some(Pending {
                        linear: true,
                        name: l.name.clone(),
                        outputs,
                        kernel: 1,
                        stride: 1,
                        padding: 0,
                        bias: l.bias,
                        stem: false,
                        bn: None,
                        relu: false,
                    });
                }
                Layer::BatchNorm(n) => {
                    Names::check_path(&n.name).map_err(err)?;
                    match pending.as_mut() {
                        Some(p) if !p.linear && p.bn.is_none() && !p.relu => {
                            names.claim(index, bn_names(&n.name), self).map_err(err)?;
                            p.bn = Some(n.name.clone());
                            info.batch_norms.push(next_layer - 1);
                        }
                        Some(p) if p.linear && !p.relu => {
                            return Err(err(
                                "batch_norm after a linear layer is not supported: the engine has BatchNorm \
                                 after convolutions only"
                                    .into(),
                            ))
                        }
                        _ => {
                            return Err(err(format!(
                            "batch_norm must directly follow a conv2d (conv2d, batch_norm, relu); here it \
                                 follows {prev}"
                        )))
                        }
                    }
                }
                Layer::Relu(_) => match pending.as_mut() {
                    Some(p) if !p.relu => p.relu = true,
                    _ => {
                        let why = if prev == "basic_block" {
                            " (a basic_block already ends with its ReLU)"
                        } else {
                            ""
                        };
                        return Err(err(format!(
                            "relu must directly follow a conv2d, linear or batch_norm; here it follows {prev}{why}"
                        )));
                    }
                },
                Layer::MaxPool(m) => {
                    flush(&mut b, &mut pending);
                    let (ch, h, w) = image("max_pool")?;
                    let stride = m.stride.unwrap_or(m.kernel);
                    if m.kernel < 1 || stride < 1 {
                        return Err(err(format!(
                            "kernel and stride must be at least 1, got kernel = {}, stride = {stride}",
                            m.kernel
                        )));
                    }
                    if h < m.kernel || w < m.kernel {
                        return Err(err(format!("kernel {} does not fit the input {shape:?}", m.kernel)));
                    }
                    b.max_pool(m.kernel, stride);
                    shape = vec![ch, (h - m.kernel) / stride + 1, (w - m.kernel) / stride + 1];
                }
                Layer::GlobalAvgPool(_) | Layer::AdaptiveAvgPool(_) => {
                    flush(&mut b, &mut pending);
                    if let Layer::AdaptiveAvgPool(a) = layer {
                        if a.output_size != 1 {
                            return Err(err(format!(
                                "only output_size = 1 is supported (global average pooling), got {}",
                                a.output_size
                            )));
                        }
                    }
                    let (ch, _, _) = image(layer.kind())?;
                    b.global_avg_pool();
                    shape = vec![ch];
                }
                Layer::Flatten(_) => {
                    flush(&mut b, &mut pending);
                    b.flatten();
                    shape = vec![shape.iter().product()];
                }
                Layer::Dropout(d) => {
                    flush(&mut b, &mut pending);
                    if !(0.0..1.0).contains(&d.p) {
                        return Err(err(format!("p must be in [0, 1), got {}", d.p)));
                    }
                    b.dropout(d.p);
                }
                Layer::BasicBlock(blk) => {
                    flush(&mut b, &mut pending);
                    let (ch, h, w) = image("basic_block")?;
                    let block_names = block_names(blk).map_err(err)?;
                    if blk.planes < 1 || blk.stride < 1 {
                        return Err(err(format!(
                            "planes and stride must be at least 1, got planes = {}, stride = {}",
                            blk.planes, blk.stride
                        )));
                    }
                    let out = vec![blk.planes, conv_out(h, 3, blk.stride, 1), conv_out(w, 3, blk.stride, 1)];
                    let changes = blk.stride != 1 || ch != blk.planes;
                    let mut claimed = param_names(&block_names.conv1, false);
                    claimed.extend(bn_names(&block_names.bn1));
                    claimed.extend(param_names(&block_names.conv2, false));
                    claimed.extend(bn_names(&block_names.bn2));
                    let projection = changes && blk.shortcut == ShortcutKind::B;
                    let needed: &[(&String, &str)] = if projection {
                        &[
                            (&block_names.shortcut_conv, "shortcut_conv"),
                            (&block_names.shortcut_bn, "shortcut_bn"),
                        ]
                    } else {
                        &[(&block_names.mask, "mask")]
                    };
                    for (n, field) in needed {
                        if n.is_empty() {
                            return Err(err(format!("missing field `prefix` (or `{field}`)")));
                        }
                        Names::check_path(n).map_err(err)?;
                    }
                    if projection {
                        claimed.extend(param_names(&block_names.shortcut_conv, false));
                        claimed.extend(bn_names(&block_names.shortcut_bn));
                    } else {
                        claimed.push(block_names.mask.clone());
                    }
                    if changes && blk.shortcut == ShortcutKind::A {
                        let grow = blk.planes - ch;
                        if grow < 0 || grow % 2 != 0 {
                            return Err(err(format!(
                                "residual shapes cannot add: the option-A shortcut zero-pads channels equally \
                                 on both sides, so planes - input channels must be even and at least 0; input \
                                 {shape:?}, planes {}",
                                blk.planes
                            )));
                        }
                        let short = vec![blk.planes, (h + 1) / 2, (w + 1) / 2];
                        if short != out {
                            return Err(err(format!(
                                "residual shapes cannot add: the option-A shortcut subsamples by 2 and gives \
                                 {short:?}, the branch (stride {}) gives {out:?}; use stride = 2 or shortcut = \"b\"",
                                blk.stride
                            )));
                        }
                    }
                    names.claim(index, claimed, self).map_err(err)?;
                    b.basic_block_named(&block_names, blk.planes, blk.stride, projection);
                    let members: Vec<usize> =
                        (next_layer..next_layer + if projection { 3 } else { 2 }).collect();
                    next_layer += members.len();
                    info.weights = members.clone();
                    info.batch_norms = members;
                    shape = out;
                }
            }
            if bounded_numel(&shape).is_none() {
                return Err(SpecError::Layer {
                    index,
                    name: layer.name().map(str::to_string),
                    kind: layer.kind().to_string(),
                    message: format!(
                        "its output {shape:?} has more than {MAX_ENTRIES} (2^40) entries per sample"
                    ),
                });
            }
            info.output_shape = shape.clone();
            infos.push(info);
        }
        flush(&mut b, &mut pending);
        if shape != vec![num_classes] {
            let last = self.layers.len() - 1;
            return Err(SpecError::Layer {
                index: last,
                name: self.layers[last].name().map(str::to_string),
                kind: self.layers[last].kind().to_string(),
                message: format!(
                    "the network must end with the {num_classes} class scores, but this last layer gives \
                     shape {shape:?}"
                ),
            });
        }
        let graph =
            b.try_finish().map_err(|e| SpecError::Spec(format!("inconsistent graph (a bug): {e}")))?;
        if let Some(l) = graph.layers.iter().find(|l| bounded_numel(&l.op.weight_shape()).is_none()) {
            return Err(SpecError::Spec(format!(
                "layer `{}`: its weight {:?} has more than {MAX_ENTRIES} (2^40) entries",
                l.name,
                l.op.weight_shape()
            )));
        }
        Ok(Inference { graph, layers: infos })
    }

    /// Describes a graph as a spec (the inverse of [`ModelSpec::graph`]): block names become a
    /// `prefix` when they follow the authors' pattern, the last layer's width `"classes"`.
    /// Compacted graphs (gather shortcuts) cannot be described.
    pub fn from_graph(graph: &PruneGraph) -> Result<ModelSpec, String> {
        let mut layers = Vec::new();
        let uses_b = graph.blocks.iter().any(|b| matches!(b.shortcut, Shortcut::Conv { .. }));
        let push_layer = |layers: &mut Vec<Layer>, i: usize| -> Result<(), String> {
            let l = &graph.layers[i];
            if !matches!(l.role, Role::Plain | Role::Stem) {
                return Err(format!("layer {} is a block member outside its block", l.name));
            }
            match l.op {
                LayerOp::Linear { outputs, .. } => {
                    if l.batch_norm.is_some() {
                        return Err(format!(
                            "{}: BatchNorm after a linear layer cannot be described",
                            l.name
                        ));
                    }
                    let out = if i == graph.output_layer() && outputs == graph.num_classes {
                        Features::Classes
                    } else {
                        Features::Count(outputs)
                    };
                    layers.push(Layer::Linear(Linear {
                        name: l.name.clone(),
                        in_features: None,
                        out_features: Some(out),
                        bias: l.bias,
                    }));
                }
                LayerOp::Conv2d { outputs, kernel, stride, padding, .. } => {
                    layers.push(Layer::Conv2d(Conv2d {
                        name: l.name.clone(),
                        in_channels: None,
                        out_channels: outputs,
                        kernel,
                        stride,
                        padding,
                        bias: l.bias,
                        stem: l.role == Role::Stem,
                    }));
                    if let Some(bn) = &l.batch_norm {
                        layers.push(Layer::BatchNorm(BatchNorm { name: bn.clone() }));
                    }
                }
            }
            if l.activation == Activation::Relu {
                layers.push(Layer::Relu(NoFields {}));
            }
            Ok(())
        };
        for node in &graph.nodes {
            match node {
                Node::Layer(i) => push_layer(&mut layers, *i)?,
                Node::MaxPool2d { kernel, stride } => layers.push(Layer::MaxPool(MaxPool {
                    kernel: *kernel,
                    stride: (stride != kernel).then_some(*stride),
                })),
                Node::GlobalAvgPool => layers.push(Layer::GlobalAvgPool(NoFields {})),
                Node::Flatten => layers.push(Layer::Flatten(NoFields {})),
                Node::Dropout { p } => layers.push(Layer::Dropout(Dropout { p: *p })),
                Node::Block(bi) => {
                    layers.push(Layer::BasicBlock(block_spec(graph, &graph.blocks[*bi], uses_b)?))
                }
            }
        }
        let spec = ModelSpec {
            name: graph.arch.clone(),
            description: None,
            input_shape: graph.input_shape.clone(),
            num_classes: graph.num_classes,
            convention: Some(graph.convention),
            layers,
        };
        match spec.graph(graph.num_classes) {
            Ok(g) if g == *graph => Ok(spec),
            Ok(_) => Err("the graph cannot be described exactly by a spec".into()),
            Err(e) => Err(format!("the graph cannot be described by a spec: {e}")),
        }
    }
}

fn block_names(blk: &BasicBlock) -> Result<BlockNames, String> {
    let fallback = blk.prefix.as_deref().map(BlockNames::from_prefix);
    let mut missing = Vec::new();
    let mut pick = |own: &Option<String>, field: &str, default: Option<&String>| -> String {
        match (own, default) {
            (Some(n), _) => n.clone(),
            (None, Some(d)) => d.clone(),
            (None, None) => {
                missing.push(field.to_string());
                String::new()
            }
        }
    };
    let f = fallback.as_ref();
    let names = BlockNames {
        conv1: pick(&blk.conv1, "conv1", f.map(|n| &n.conv1)),
        bn1: pick(&blk.bn1, "bn1", f.map(|n| &n.bn1)),
        conv2: pick(&blk.conv2, "conv2", f.map(|n| &n.conv2)),
        bn2: pick(&blk.bn2, "bn2", f.map(|n| &n.bn2)),
        shortcut_conv: blk.shortcut_conv.clone().or(f.map(|n| n.shortcut_conv.clone())).unwrap_or_default(),
        shortcut_bn: blk.shortcut_bn.clone().or(f.map(|n| n.shortcut_bn.clone())).unwrap_or_default(),
        mask: blk.mask.clone().or(f.map(|n| n.mask.clone())).unwrap_or_default(),
    };
    if !missing.is_empty() {
        return Err(format!("missing field `prefix` (or the names {})", missing.join(", ")));
    }
    // The shortcut names are checked where they are needed (see `infer`).
    for n in [&names.conv1, &names.bn1, &names.conv2, &names.bn2] {
        Names::check_path(n)?;
    }
    Ok(names)
}

/// A graph's block as a `basic_block` entry.
fn block_spec(graph: &PruneGraph, block: &Block, uses_b: bool) -> Result<BasicBlock, String> {
    let c1 = &graph.layers[block.conv1];
    let c2 = &graph.layers[block.conv2];
    let (stride, planes) = match (c1.op, c2.op) {
        (
            LayerOp::Conv2d { outputs: p1, kernel: 3, stride, padding: 1, .. },
            LayerOp::Conv2d { outputs, kernel: 3, stride: 1, padding: 1, .. },
        ) if p1 == outputs && !c1.bias && !c2.bias => (stride, outputs),
        _ => return Err(format!("block of {}: not a BasicBlock (3x3 convolutions, no bias)", c1.name)),
    };
    let (shortcut, projection) = match &block.shortcut {
        Shortcut::Identity => (if uses_b { ShortcutKind::B } else { ShortcutKind::A }, None),
        Shortcut::PadA { .. } => (ShortcutKind::A, None),
        Shortcut::Conv { layer } => (ShortcutKind::B, Some(&graph.layers[*layer])),
        Shortcut::Gather { .. } => {
            return Err("compacted blocks (gather shortcuts) cannot be described".into())
        }
    };
    let bn = |l: &relief_core::graph::Layer| l.batch_norm.clone().unwrap_or_default();
    let prefix = c1.name.strip_suffix(".conv1").map(str::to_string);
    let mut spec = BasicBlock {
        prefix: prefix.clone(),
        planes,
        stride,
        shortcut,
        conv1: Some(c1.name.clone()),
        bn1: Some(bn(c1)),
        conv2: Some(c2.name.clone()),
        bn2: Some(bn(c2)),
        shortcut_conv: projection.map(|l| l.name.clone()),
        shortcut_bn: projection.map(bn),
        mask: block.mask.clone(),
    };
    if let Some(p) = prefix {
        // Drop the overrides that equal the prefix's names.
        let d = BlockNames::from_prefix(&p);
        let keep = |v: &mut Option<String>, default: &str| {
            if v.as_deref() == Some(default) {
                *v = None;
            }
        };
        keep(&mut spec.conv1, &d.conv1);
        keep(&mut spec.bn1, &d.bn1);
        keep(&mut spec.conv2, &d.conv2);
        keep(&mut spec.bn2, &d.bn2);
        keep(&mut spec.shortcut_conv, &d.shortcut_conv);
        keep(&mut spec.shortcut_bn, &d.shortcut_bn);
        keep(&mut spec.mask, &d.mask);
    }
    Ok(spec)
}
