//! The relief model zoo: LeNet-300-100, LeNet-5, VGG (CIFAR and Tiny-ImageNet) and ResNet
//! (CIFAR option A, Tiny-ImageNet ResNet-18 option B), each described as a
//! [`relief_core::PruneGraph`] with the authors' PyTorch parameter names.

mod builder;
pub mod error;
pub mod model;
pub mod zoo;

pub use error::ModelError;
pub use model::Model;
pub use zoo::{Arch, VggConfig, ARCH_NAMES};
