//! The architectures of the zoo and their [`PruneGraph`]s, with the authors' parameter names.
//!
//! | name | input | structure |
//! | --- | --- | --- |
//! | `lenet300-100` | 784 | `classifier.{0,2,4}`: 784-300-100-C, ReLU |
//! | `lenet5` | 1x28x28 | `feature_extractor.{0,3}`: conv5 20, 50 (ReLU, max-pool 2); `classifier.{0,2}`: 800-500-C |
//! | `vgg-like`, `vgg11/13/16/19` | 3x32x32 | `features.i`: conv3 (bias) + BN + ReLU, 'M' = max-pool 2; `classifier`: Dropout, 512-512, ReLU, [Dropout, 512-512, ReLU,] 512-C |
//! | `resnet20/32/44/56/110` | 3x32x32 | stem `conv1`+`bn1`, `layer{1,2,3}.b` BasicBlocks (16/32/64 planes, option-A shortcuts), global average pool, `linear` |
//! | `vgg16-tiny`, `vgg19-tiny` | 3x64x64 | VGG features (512x2x2 after five pools), classifier 2048-512-512-C |
//! | `resnet18-tiny` | 3x64x64 | 3x3 stem (64), BasicBlocks `[2,2,2,2]` (64..512 planes, option-B 1x1 conv + BN shortcuts), global average pool, `linear` |
//!
//! Each architecture is also a built-in TOML spec (`specs/<name>.toml`, [`Arch::spec`]) that
//! builds exactly the graph below; `tests/spec_zoo.rs` checks it.

use std::fmt;
use std::str::FromStr;

use relief_core::graph::{Activation, Convention, PruneGraph, Role};

use crate::builder::GraphBuilder;

/// A model architecture of the zoo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// LeNet-300-100 (MNIST).
    Lenet300_100,
    /// LeNet-5, Caffe variant (MNIST).
    Lenet5,
    /// A CIFAR VGG by configuration name.
    Vgg(VggConfig),
    /// A CIFAR ResNet with `n` BasicBlocks per stage (20 = 3, 32 = 5, 44 = 7, 56 = 9, 110 = 18).
    Resnet(i64),
    /// VGG-16 / VGG-19 for Tiny-ImageNet (64x64).
    VggTiny(VggConfig),
    /// ResNet-18 for Tiny-ImageNet (64x64).
    Resnet18Tiny,
}

/// VGG configurations of the authors' `models.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VggConfig {
    /// VGG-16 layout with the single-hidden-layer classifier.
    Like,
    /// VGG-11.
    Vgg11,
    /// VGG-13.
    Vgg13,
    /// VGG-16.
    Vgg16,
    /// VGG-19.
    Vgg19,
}

const M: i64 = 0;

impl VggConfig {
    fn layout(self) -> &'static [i64] {
        match self {
            VggConfig::Vgg11 => &[64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
            VggConfig::Vgg13 => &[64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
            VggConfig::Vgg16 | VggConfig::Like => {
                &[64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M]
            }
            VggConfig::Vgg19 => {
                &[64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M]
            }
        }
    }
}

/// Every architecture name the zoo accepts.
pub const ARCH_NAMES: [&str; 14] = [
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
    "resnet18-tiny",
];

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "lenet300-100" | "lenet300_100" => Arch::Lenet300_100,
            "lenet5" => Arch::Lenet5,
            "vgg-like" => Arch::Vgg(VggConfig::Like),
            "vgg11" => Arch::Vgg(VggConfig::Vgg11),
            "vgg13" => Arch::Vgg(VggConfig::Vgg13),
            "vgg16" => Arch::Vgg(VggConfig::Vgg16),
            "vgg19" => Arch::Vgg(VggConfig::Vgg19),
            "resnet20" => Arch::Resnet(3),
            "resnet32" => Arch::Resnet(5),
            "resnet44" => Arch::Resnet(7),
            "resnet56" => Arch::Resnet(9),
            "resnet110" => Arch::Resnet(18),
            "vgg16-tiny" => Arch::VggTiny(VggConfig::Vgg16),
            "vgg19-tiny" => Arch::VggTiny(VggConfig::Vgg19),
            "resnet18-tiny" => Arch::Resnet18Tiny,
            other => {
                return Err(format!(
                    "unknown model `{other}`; expected one of: {}, vgg19-tiny",
                    ARCH_NAMES.join(", ")
                ))
            }
        })
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Arch::Lenet300_100 => "lenet300-100",
            Arch::Lenet5 => "lenet5",
            Arch::Vgg(VggConfig::Like) => "vgg-like",
            Arch::Vgg(VggConfig::Vgg11) => "vgg11",
            Arch::Vgg(VggConfig::Vgg13) => "vgg13",
            Arch::Vgg(VggConfig::Vgg16) => "vgg16",
            Arch::Vgg(VggConfig::Vgg19) => "vgg19",
            Arch::Resnet(3) => "resnet20",
            Arch::Resnet(5) => "resnet32",
            Arch::Resnet(7) => "resnet44",
            Arch::Resnet(9) => "resnet56",
            Arch::Resnet(18) => "resnet110",
            Arch::Resnet(n) => return write!(f, "resnet{}", 6 * n + 2),
            Arch::VggTiny(VggConfig::Vgg19) => "vgg19-tiny",
            Arch::VggTiny(_) => "vgg16-tiny",
            Arch::Resnet18Tiny => "resnet18-tiny",
        };
        f.write_str(s)
    }
}

impl Arch {
    /// Per-sample input shape.
    pub fn input_shape(&self) -> Vec<i64> {
        match self {
            Arch::Lenet300_100 => vec![784],
            Arch::Lenet5 => vec![1, 28, 28],
            Arch::Vgg(_) | Arch::Resnet(_) => vec![3, 32, 32],
            Arch::VggTiny(_) | Arch::Resnet18Tiny => vec![3, 64, 64],
        }
    }

    /// The prunable structure for `num_classes` outputs.
    pub fn graph(&self, num_classes: i64) -> PruneGraph {
        let name = self.to_string();
        let input = self.input_shape();
        match *self {
            Arch::Lenet300_100 => {
                let mut b = GraphBuilder::new(&name, &input, num_classes, Convention::Lenet);
                b.linear("classifier.0", 300, Activation::Relu);
                b.linear("classifier.2", 100, Activation::Relu);
                b.linear("classifier.4", num_classes, Activation::Identity);
                b.finish()
            }
            Arch::Lenet5 => {
                let mut b = GraphBuilder::new(&name, &input, num_classes, Convention::Lenet);
                b.conv("feature_extractor.0", 20, 5, 1, 0, true, None, Role::Plain);
                b.max_pool(2, 2);
                b.conv("feature_extractor.3", 50, 5, 1, 0, true, None, Role::Plain);
                b.max_pool(2, 2);
                b.flatten();
                b.linear("classifier.0", 500, Activation::Relu);
                b.linear("classifier.2", num_classes, Activation::Identity);
                b.finish()
            }
            Arch::Vgg(cfg) | Arch::VggTiny(cfg) => {
                let mut b = GraphBuilder::new(&name, &input, num_classes, Convention::Vgg);
                let mut index = 0;
                for &c in cfg.layout() {
                    if c == M {
                        b.max_pool(2, 2);
                        index += 1;
                    } else {
                        let conv = format!("features.{index}");
                        let bn = format!("features.{}", index + 1);
                        b.conv(&conv, c, 3, 1, 1, true, Some(&bn), Role::Plain);
                        index += 3;
                    }
                }
                b.flatten();
                b.dropout(0.5);
                b.linear("classifier.1", 512, Activation::Relu);
                if cfg == VggConfig::Like {
                    b.linear("classifier.3", num_classes, Activation::Identity);
                } else {
                    b.dropout(0.5);
                    b.linear("classifier.4", 512, Activation::Relu);
                    b.linear("classifier.6", num_classes, Activation::Identity);
                }
                b.finish()
            }
            Arch::Resnet(n) => {
                let mut b = GraphBuilder::new(&name, &input, num_classes, Convention::Resnet);
                b.conv("conv1", 16, 3, 1, 1, false, Some("bn1"), Role::Stem);
                for (stage, planes) in [16, 32, 64].into_iter().enumerate() {
                    for block in 0..n {
                        let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                        b.basic_block(&format!("layer{}.{block}", stage + 1), planes, stride, false);
                    }
                }
                b.global_avg_pool();
                b.linear("linear", num_classes, Activation::Identity);
                b.finish()
            }
            Arch::Resnet18Tiny => {
                let mut b = GraphBuilder::new(&name, &input, num_classes, Convention::Resnet);
                b.conv("conv1", 64, 3, 1, 1, false, Some("bn1"), Role::Stem);
                for (stage, planes) in [64, 128, 256, 512].into_iter().enumerate() {
                    for block in 0..2 {
                        let stride = if stage > 0 && block == 0 { 2 } else { 1 };
                        b.basic_block(&format!("layer{}.{block}", stage + 1), planes, stride, true);
                    }
                }
                b.global_avg_pool();
                b.linear("linear", num_classes, Activation::Identity);
                b.finish()
            }
        }
    }
}
