//! relief-data: dataset loaders for MNIST, CIFAR-10/100 and Tiny-ImageNet, batching and
//! on-device augmentation, and fetching the official archives. Knows nothing of models.
//!
//! Tensors: a dataset's images are one `u8` tensor `N x C x H x W` per split (MNIST
//! `1 x 28 x 28`, CIFAR `3 x 32 x 32`, Tiny-ImageNet `3 x 64 x 64`) and labels one `i64`
//! tensor `N`; batches are `f32` `B x C x H x W` preprocessed as the paper's code does, with
//! `i64` labels `B`.
//!
//! ```no_run
//! use relief_data::{BatchConfig, Dataset, DatasetKind, SplitKind};
//! # fn main() -> Result<(), relief_data::DataError> {
//! let data = Dataset::load(DatasetKind::Cifar10, "data/cifar10".as_ref())?.to_device(tch::Device::Cpu)?;
//! let batches = data.batcher(SplitKind::Train, BatchConfig::shuffled(128, 0), true)?;
//! for batch in batches.epoch(0)? {
//!     let (x, y) = batch?; // x: f32 128 x 3 x 32 x 32, normalised; y: i64 128
//! #   let _ = (x, y);
//! }
//! let (x_prune, _y) = data.pruning_examples(1000, 0)?;
//! # let _ = x_prune;
//! # Ok(())
//! # }
//! ```

pub mod augment;
pub mod batcher;
pub mod checksum;
pub mod cifar;
pub mod dataset;
pub mod error;
pub mod extract;
pub mod fetch;
pub mod imagefolder;
pub mod mnist;
pub mod preprocess;
pub mod rng;
pub mod split;
pub mod tiny_imagenet;
pub mod user;

pub use augment::{Augment, AugmentDraw, Workspace};
pub use batcher::{BatchConfig, Batcher, Epoch};
pub use cifar::{load_cifar10, load_cifar100, Cifar100Labels};
pub use dataset::{Dataset, DatasetKind, Normalization, SplitKind};
pub use error::DataError;
pub use fetch::{fetch, fetch_sources, official_sources, FetchOptions, FetchReport, FileOutcome, Source};
pub use mnist::{load_mnist, Mnist, MnistSplit};
pub use preprocess::Preprocess;
pub use rng::Mt19937;
pub use split::{Split, ValSize};
pub use tiny_imagenet::{load_tiny_imagenet, CacheOutcome, TinyImageNetOptions};
pub use user::{inspect, load_user, DataInfo, UserOptions};
