//! The relief model zoo: LeNet-300-100, LeNet-5, VGG (CIFAR and Tiny-ImageNet) and ResNet
//! (CIFAR option A, Tiny-ImageNet ResNet-18 option B), each described as a
//! [`relief_core::PruneGraph`] with the authors' PyTorch parameter names; [`spec`] describes
//! any network of the supported layers as TOML data (the zoo's are built-in specs).

pub mod architecture;
mod builder;
pub mod error;
pub mod init;
pub mod model;
pub mod spec;
pub mod zoo;

pub use architecture::{names_spec_file, Architecture};
pub use error::ModelError;
pub use init::{construction_order, init_vars_with, InitScheme};
pub use model::{init_vars, Model};
pub use spec::{Inference, LayerInfo, ModelSpec, SpecError, ZOO_SPECS};
pub use zoo::{Arch, VggConfig, ARCH_NAMES};
