//! The common dataset type: train/test (and optional validation) [`Split`]s of `u8` images
//! `N x C x H x W` with `i64` labels `N`, the class count, and the paper's preprocessing and
//! training augmentation for that dataset.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use tch::{Device, Tensor};

use crate::augment::Augment;
use crate::batcher::{BatchConfig, Batcher};
use crate::cifar::{load_cifar10, load_cifar100, Cifar100Labels};
use crate::error::DataError;
use crate::mnist::load_mnist;
use crate::preprocess::Preprocess;
use crate::rng::Mt19937;
use crate::split::{Split, ValSize};
use crate::tiny_imagenet::{load_tiny_imagenet, TinyImageNetOptions};
use crate::user::UserOptions;

/// The datasets relief knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DatasetKind {
    /// MNIST, 10 classes, `1 x 28 x 28`.
    Mnist,
    /// CIFAR-10, 10 classes, `3 x 32 x 32`.
    Cifar10,
    /// CIFAR-100 (fine labels unless loaded with coarse ones), `3 x 32 x 32`.
    Cifar100,
    /// Tiny-ImageNet-200, 200 classes, `3 x 64 x 64`.
    TinyImageNet,
    /// Fashion-MNIST (MNIST's IDX files and layout), 10 classes, `1 x 28 x 28`, normalised with
    /// its training-set statistics ([`crate::user::FASHION_MNIST_MEAN`]).
    FashionMnist,
    /// Any directory of MNIST-format IDX files: image size from the header, classes from the
    /// labels, normalised with the training split's mean and std (see [`crate::user`]).
    Idx,
    /// User tensors in safetensors files (`x`, `y`; see [`crate::user`]).
    Tensors,
    /// Image files in `train/<class>/` and `test/<class>/` folders, as torchvision's
    /// `ImageFolder` (see [`crate::imagefolder`]).
    ImageFolder,
}

impl DatasetKind {
    /// Every kind with official archives (what `relief data fetch` knows), in CLI order.
    pub const ALL: [DatasetKind; 4] =
        [DatasetKind::Mnist, DatasetKind::Cifar10, DatasetKind::Cifar100, DatasetKind::TinyImageNet];

    /// The CLI name: `mnist`, `cifar10`, `cifar100`, `tiny-imagenet`.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::TinyImageNet => "tiny-imagenet",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Idx => "idx",
            DatasetKind::Tensors => "tensors",
            DatasetKind::ImageFolder => "imagefolder",
        }
    }

    /// Whether shape and classes come from the data (user datasets) rather than the kind.
    pub fn is_user(self) -> bool {
        matches!(self, DatasetKind::Idx | DatasetKind::Tensors | DatasetKind::ImageFolder)
    }

    /// Number of classes (CIFAR-100 fine labels); `None` for user datasets, whose class count
    /// comes from their labels ([`crate::user::inspect`]).
    pub fn classes(self) -> Option<i64> {
        match self {
            DatasetKind::Mnist | DatasetKind::Cifar10 | DatasetKind::FashionMnist => Some(10),
            DatasetKind::Cifar100 => Some(100),
            DatasetKind::TinyImageNet => Some(200),
            DatasetKind::Idx | DatasetKind::Tensors | DatasetKind::ImageFolder => None,
        }
    }

    /// `[C, H, W]` of one image; `None` for user datasets ([`crate::user::inspect`]).
    pub fn image_shape(self) -> Option<[i64; 3]> {
        match self {
            DatasetKind::Mnist | DatasetKind::FashionMnist => Some([1, 28, 28]),
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Some([3, 32, 32]),
            DatasetKind::TinyImageNet => Some([3, 64, 64]),
            DatasetKind::Idx | DatasetKind::Tensors | DatasetKind::ImageFolder => None,
        }
    }

    /// The paper's preprocessing: `/255` for MNIST, ImageNet-normalised for CIFAR and
    /// Tiny-ImageNet; none at batch time for Fashion-MNIST and user datasets (normalised to
    /// `f32` when loaded).
    pub fn preprocess(self) -> Preprocess {
        match self {
            DatasetKind::Mnist => Preprocess::Scale,
            DatasetKind::FashionMnist
            | DatasetKind::Idx
            | DatasetKind::Tensors
            | DatasetKind::ImageFolder => Preprocess::Identity,
            _ => Preprocess::IMAGENET,
        }
    }

    /// The paper's training augmentation: none for MNIST (and Fashion-MNIST and user
    /// datasets), crop + flip otherwise.
    pub fn train_augment(self) -> Option<Augment> {
        match self {
            DatasetKind::Mnist
            | DatasetKind::FashionMnist
            | DatasetKind::Idx
            | DatasetKind::Tensors
            | DatasetKind::ImageFolder => None,
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => Some(Augment::CIFAR),
            DatasetKind::TinyImageNet => Some(Augment::TINY_IMAGENET),
        }
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "mnist" => Ok(DatasetKind::Mnist),
            "cifar10" | "cifar-10" => Ok(DatasetKind::Cifar10),
            "cifar100" | "cifar-100" => Ok(DatasetKind::Cifar100),
            "tiny-imagenet" | "tinyimagenet" | "tiny-imagenet-200" => Ok(DatasetKind::TinyImageNet),
            "fashion-mnist" | "fashionmnist" => Ok(DatasetKind::FashionMnist),
            "idx" => Ok(DatasetKind::Idx),
            "tensors" => Ok(DatasetKind::Tensors),
            "imagefolder" | "image-folder" => Ok(DatasetKind::ImageFolder),
            other => Err(DataError::invalid(format!(
                "unknown dataset {other:?}; expected mnist, cifar10, cifar100, tiny-imagenet, \
                 fashion-mnist, idx, tensors or imagefolder"
            ))),
        }
    }
}

/// Which split of a [`Dataset`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SplitKind {
    /// The training split (after any validation carve).
    Train,
    /// The validation split carved by [`Dataset::with_validation`].
    Val,
    /// The official test split.
    Test,
}

/// A loaded dataset: `u8` images `N x C x H x W` and `i64` labels per split.
#[derive(Debug)]
pub struct Dataset {
    /// Which dataset this is.
    pub kind: DatasetKind,
    /// Human-readable name (`"cifar100"`, `"cifar100 (coarse)"`, ...).
    pub name: String,
    /// Number of classes; every label is below it.
    pub classes: i64,
    /// Training examples.
    pub train: Split,
    /// Validation examples, when carved from the training set.
    pub val: Option<Split>,
    /// Test examples (Tiny-ImageNet: the official `val/` images).
    pub test: Split,
    /// How pixels become network input.
    pub preprocess: Preprocess,
    /// Training augmentation (none for MNIST).
    pub augment: Option<Augment>,
    /// For datasets normalised when loaded (Fashion-MNIST, user datasets): the per-channel
    /// (per-feature) mean and std used, so that the same test set can be rebuilt.
    pub normalization: Option<Normalization>,
    /// Shape of one example as the data has it: `[C, H, W]`, or `[F]` for feature vectors
    /// (stored as `F x 1 x 1`).
    pub example_shape: Vec<i64>,
    /// Class names by index, where the data names its classes (image folders); else empty.
    pub class_names: Vec<String>,
    /// When the test split was carved from the training data ([`UserOptions::test_split`]):
    /// its size ...
    pub test_carve: Option<ValSize>,
    /// ... and the seed of the carve.
    pub split_seed: u32,
}

/// Per-channel mean and std a dataset was normalised with when loaded: `(x - mean) / std`
/// (after `/ 255` for `u8` data).
#[derive(Debug, Clone, PartialEq)]
pub struct Normalization {
    /// One value per channel (or feature).
    pub mean: Vec<f64>,
    /// One value per channel (or feature).
    pub std: Vec<f64>,
}

impl Dataset {
    /// A dataset of `kind` with that kind's class count, preprocessing and augmentation.
    /// User kinds take their class count from the labels (max + 1).
    pub fn new(kind: DatasetKind, train: Split, test: Split) -> Self {
        let classes = kind.classes().unwrap_or_else(|| {
            let max = |s: &Split| if s.is_empty() { -1 } else { s.labels.max().int64_value(&[]) };
            max(&train).max(max(&test)) + 1
        });
        let example_shape = train.image_shape().to_vec();
        Self {
            kind,
            name: kind.name().to_string(),
            classes,
            train,
            val: None,
            test,
            preprocess: kind.preprocess(),
            augment: kind.train_augment(),
            normalization: None,
            example_shape,
            class_names: Vec::new(),
            test_carve: None,
            split_seed: 0,
        }
    }

    /// Loads `kind` from `dir` (the directory the official archive was extracted into, or the
    /// archive's own top directory). CIFAR-100 gets fine labels; Tiny-ImageNet is cached.
    /// Fashion-MNIST and user datasets are loaded with [`UserOptions::default`].
    pub fn load(kind: DatasetKind, dir: &Path) -> Result<Self, DataError> {
        Self::load_with(kind, dir, &UserOptions::default())
    }

    /// Like [`Dataset::load`], with the options of user datasets (normalisation, class count;
    /// ignored by the built-in kinds other than Fashion-MNIST's class count).
    pub fn load_with(kind: DatasetKind, dir: &Path, options: &UserOptions) -> Result<Self, DataError> {
        match kind {
            DatasetKind::Mnist => load_mnist(dir),
            DatasetKind::Cifar10 => load_cifar10(dir),
            DatasetKind::Cifar100 => load_cifar100(dir, Cifar100Labels::Fine),
            DatasetKind::TinyImageNet => load_tiny_imagenet(dir, &TinyImageNetOptions::default()),
            DatasetKind::FashionMnist
            | DatasetKind::Idx
            | DatasetKind::Tensors
            | DatasetKind::ImageFolder => crate::user::load_user(kind, dir, options),
        }
    }

    /// `[C, H, W]` of one stored image.
    pub fn image_shape(&self) -> [i64; 3] {
        self.train.image_shape()
    }

    /// The split `which`, if present.
    pub fn split(&self, which: SplitKind) -> Option<&Split> {
        match which {
            SplitKind::Train => Some(&self.train),
            SplitKind::Val => self.val.as_ref(),
            SplitKind::Test => Some(&self.test),
        }
    }

    /// Every split moved to `device` (images stay `u8`: 1 byte a pixel on the device).
    pub fn to_device(&self, device: Device) -> Result<Self, DataError> {
        Ok(Self {
            kind: self.kind,
            name: self.name.clone(),
            classes: self.classes,
            train: self.train.to_device(device)?,
            val: self.val.as_ref().map(|v| v.to_device(device)).transpose()?,
            test: self.test.to_device(device)?,
            preprocess: self.preprocess,
            augment: self.augment,
            normalization: self.normalization.clone(),
            example_shape: self.example_shape.clone(),
            class_names: self.class_names.clone(),
            test_carve: self.test_carve,
            split_seed: self.split_seed,
        })
    }

    /// Carves a validation split from the training set (see [`Split::carve_validation`]).
    pub fn with_validation(mut self, size: ValSize, seed: u32) -> Result<Self, DataError> {
        let (train, val) = self.train.carve_validation(size, seed)?;
        self.train = train;
        self.val = Some(val);
        Ok(self)
    }

    /// A batcher over split `which`; training augmentation only when `augment` is set (and the
    /// dataset has one).
    pub fn batcher(
        &self,
        which: SplitKind,
        config: BatchConfig,
        augment: bool,
    ) -> Result<Batcher, DataError> {
        let split = self
            .split(which)
            .ok_or_else(|| DataError::invalid("no validation split: call with_validation first"))?;
        Batcher::new(split, self.preprocess, if augment { self.augment } else { None }, config)
    }

    /// The pruning batch as the authors' `get_pruning_examples` picks it:
    /// `np.random.seed(seed); idx = np.random.permutation(N_train)[:n]`, no augmentation,
    /// preprocessed (MNIST `/255`, others normalised). Returns `x` `f32` `n x C x H x W` and
    /// `y` `i64` `n` on the dataset's device. The indices are those of numpy for the same seed.
    pub fn pruning_examples(&self, n: i64, seed: u32) -> Result<(Tensor, Tensor), DataError> {
        let total = self.train.len();
        if n <= 0 || n > total {
            return Err(DataError::invalid(format!(
                "pruning batch of {n} examples from a training set of {total}"
            )));
        }
        let perm = Mt19937::new(seed).permutation(total as usize);
        let idx = Tensor::from_slice(&perm[..n as usize]);
        let picked = self.train.select(&idx)?;
        Ok((self.preprocess.apply(&picked.images)?, picked.labels))
    }

    /// Checks every split: shapes, dtypes and labels in `0..classes`.
    pub fn validate(&self) -> Result<(), DataError> {
        let splits = [Some(&self.train), self.val.as_ref(), Some(&self.test)];
        for s in splits.into_iter().flatten() {
            s.validate()?;
            if !s.is_empty() {
                let (lo, hi) = (s.labels.f_min()?.int64_value(&[]), s.labels.f_max()?.int64_value(&[]));
                if lo < 0 || hi >= self.classes {
                    return Err(DataError::invalid(format!(
                        "labels span {lo}..={hi}, expected 0..{}",
                        self.classes
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    fn toy(kind: DatasetKind, n: i64) -> Dataset {
        let [c, h, w] = kind.image_shape().unwrap();
        let images = Tensor::arange(n, (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Uint8)
            .view([n, 1, 1, 1])
            .repeat([1, c, h, w]);
        let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(kind.classes().unwrap());
        let split = Split { images, labels };
        Dataset::new(kind, split.shallow_clone(), split)
    }

    #[test]
    fn kinds_parse_and_describe_themselves() {
        for k in DatasetKind::ALL {
            assert_eq!(k.name().parse::<DatasetKind>().unwrap(), k);
        }
        assert_eq!("CIFAR-10".parse::<DatasetKind>().unwrap(), DatasetKind::Cifar10);
        assert!("svhn".parse::<DatasetKind>().is_err());
        assert_eq!(DatasetKind::Mnist.preprocess(), Preprocess::Scale);
        assert_eq!(DatasetKind::Cifar100.train_augment(), Some(Augment::CIFAR));
        assert_eq!(DatasetKind::TinyImageNet.train_augment(), Some(Augment::TINY_IMAGENET));
    }

    #[test]
    fn pruning_examples_follow_numpy_permutation() {
        let d = toy(DatasetKind::Mnist, 200);
        let (x, y) = d.pruning_examples(10, 0).unwrap();
        assert_eq!(x.size(), vec![10, 1, 28, 28]);
        let want = Mt19937::new(0).permutation(200)[..10].to_vec();
        assert_eq!(Vec::<i64>::try_from(&y).unwrap(), want.iter().map(|i| i % 10).collect::<Vec<_>>());
        let px: Vec<f32> = Vec::try_from(x.select(1, 0).select(1, 0).select(1, 0)).unwrap();
        let wx: Vec<f32> = want.iter().map(|&i| i as f32 / 255.0).collect();
        assert_eq!(px, wx);
        assert!(d.pruning_examples(201, 0).is_err());
        assert!(d.pruning_examples(0, 0).is_err());
    }

    #[test]
    fn cifar_pruning_examples_are_normalised() {
        let d = toy(DatasetKind::Cifar10, 30);
        let (x, _) = d.pruning_examples(5, 1).unwrap();
        let idx = Mt19937::new(1).permutation(30)[0];
        let v = x.double_value(&[0, 2, 0, 0]);
        let want = (idx as f64 / 255.0 - 0.406) / 0.225;
        assert!((v - want).abs() < 1e-5, "{v} vs {want}");
    }

    #[test]
    fn validation_and_batchers() {
        let d = toy(DatasetKind::Cifar10, 100).with_validation(ValSize::Count(20), 3).unwrap();
        assert_eq!(d.train.len(), 80);
        assert_eq!(d.val.as_ref().unwrap().len(), 20);
        assert!(d.validate().is_ok());
        let b = d.batcher(SplitKind::Val, BatchConfig::new(8), false).unwrap();
        assert_eq!(b.len(), 3);
        let b = d.batcher(SplitKind::Train, BatchConfig::new(16), true).unwrap();
        let (x, y) = b.epoch(0).unwrap().next().unwrap().unwrap();
        assert_eq!((x.size(), y.size()), (vec![16, 3, 32, 32], vec![16]));
        let no_val = toy(DatasetKind::Mnist, 10);
        assert!(no_val.batcher(SplitKind::Val, BatchConfig::new(2), false).is_err());
    }

    #[test]
    fn validate_catches_labels_out_of_range() {
        let mut d = toy(DatasetKind::Cifar10, 10);
        d.classes = 5;
        assert!(d.validate().is_err());
    }
}
