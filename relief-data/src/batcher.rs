//! Epoch iteration over a [`Split`] that lives on the device as one `u8` tensor.
//!
//! Each batch is `(x, y)`: `x` `f32` `B x C x H' x W'` preprocessed (and, if asked, augmented
//! to `crop x crop`), `y` `i64` `B`, both on the split's device. Shuffling is a seeded
//! permutation per epoch (off to match the authors' unshuffled loaders); augmentation draws
//! come from a per-epoch seeded generator, so epoch `e` of a given seed is reproducible.

use tch::{Kind, Tensor};

use crate::augment::{Augment, Workspace};
use crate::error::DataError;
use crate::preprocess::{Prepared, Preprocess};
use crate::rng::Mt19937;
use crate::split::Split;

/// How to cut a split into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Examples per batch (the last batch may be smaller unless `drop_last`).
    pub batch_size: i64,
    /// Reshuffle every epoch with a seeded permutation; `false` keeps file order.
    pub shuffle: bool,
    /// Drop a final incomplete batch.
    pub drop_last: bool,
    /// Seed of the shuffles and augmentation draws.
    pub seed: u64,
}

impl BatchConfig {
    /// Batches of `batch_size` in file order, last batch kept (PyTorch `DataLoader` defaults).
    pub fn new(batch_size: i64) -> Self {
        Self { batch_size, shuffle: false, drop_last: false, seed: 0 }
    }

    /// The same with per-epoch shuffling seeded by `seed`.
    pub fn shuffled(batch_size: i64, seed: u64) -> Self {
        Self { batch_size, shuffle: true, drop_last: false, seed }
    }
}

/// Cuts one split into preprocessed (and optionally augmented) batches, epoch by epoch.
#[derive(Debug)]
pub struct Batcher {
    split: Split,
    prepared: Prepared,
    augment: Option<Augment>,
    config: BatchConfig,
}

impl Batcher {
    /// A batcher over `split` (shares its storage). `augment: None` yields plain batches.
    pub fn new(
        split: &Split,
        preprocess: Preprocess,
        augment: Option<Augment>,
        config: BatchConfig,
    ) -> Result<Self, DataError> {
        split.validate()?;
        if config.batch_size <= 0 {
            return Err(DataError::invalid(format!(
                "batch size must be positive, got {}",
                config.batch_size
            )));
        }
        if let Some(a) = augment {
            let [_, h, w] = split.image_shape();
            if h != w || a.max_offset(h) < 0 {
                return Err(DataError::invalid(format!("augmentation {a:?} does not fit {h}x{w} images")));
            }
        }
        let prepared = Prepared::new(preprocess, split.images.device())?;
        Ok(Self { split: split.shallow_clone(), prepared, augment, config })
    }

    /// Number of batches per epoch.
    pub fn len(&self) -> i64 {
        let (n, b) = (self.split.len(), self.config.batch_size);
        if self.config.drop_last {
            n / b
        } else {
            (n + b - 1) / b
        }
    }

    /// Whether an epoch yields no batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of examples in the underlying split.
    pub fn examples(&self) -> i64 {
        self.split.len()
    }

    /// The batches of epoch `epoch` (0-based): same seed and epoch, same batches.
    pub fn epoch(&self, epoch: u64) -> Result<Epoch<'_>, DataError> {
        let n = self.split.len();
        let order = self
            .config
            .shuffle
            .then(|| Mt19937::derived(self.config.seed, 2 * epoch).permutation(n as usize));
        Ok(Epoch {
            batcher: self,
            order,
            next: 0,
            end: self.len() * self.config.batch_size,
            rng: Mt19937::derived(self.config.seed, 2 * epoch + 1),
            workspace: Workspace::default(),
        })
    }
}

/// The batches of one epoch; yields `Result<(x, y)>`.
#[derive(Debug)]
pub struct Epoch<'a> {
    batcher: &'a Batcher,
    /// The epoch's permutation (host), when shuffling.
    order: Option<Vec<i64>>,
    next: i64,
    end: i64,
    rng: Mt19937,
    workspace: Workspace,
}

impl Epoch<'_> {
    fn batch(&mut self, start: i64, len: i64) -> Result<(Tensor, Tensor), DataError> {
        let b = self.batcher;
        let (images, labels) = (&b.split.images, &b.split.labels);
        // Labels (and, without augmentation, images): a view in file order, a gather otherwise.
        let picked = |t: &Tensor| -> Result<Tensor, DataError> {
            Ok(match &self.order {
                Some(order) => {
                    let idx = &order[start as usize..(start + len) as usize];
                    t.f_index_select(0, &index_tensor(idx, t)?)?
                }
                None => t.f_narrow(0, start, len)?,
            })
        };
        let y = picked(labels)?;
        let x = match &b.augment {
            Some(a) => {
                let indices: Vec<i64> = match &self.order {
                    Some(order) => order[start as usize..(start + len) as usize].to_vec(),
                    None => (start..start + len).collect(),
                };
                let draw = a.draw(indices.len(), images.size()[2], &mut self.rng)?;
                a.apply_indexed(images, &indices, &draw, &mut self.workspace)?
            }
            None => picked(images)?,
        };
        Ok((b.prepared.apply(&x)?, y.f_to_kind(Kind::Int64)?))
    }
}

/// `indices` as an `i64` tensor on `like`'s device.
fn index_tensor(indices: &[i64], like: &Tensor) -> Result<Tensor, DataError> {
    Ok(Tensor::from_slice(indices).f_to_device(like.device())?)
}

impl Iterator for Epoch<'_> {
    type Item = Result<(Tensor, Tensor), DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let n = self.batcher.split.len();
        if self.next >= self.end.min(n) {
            return None;
        }
        let start = self.next;
        let len = self.batcher.config.batch_size.min(n - start);
        self.next += len;
        Some(self.batch(start, len))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let b = self.batcher.config.batch_size;
        let left = ((self.end.min(self.batcher.split.len()) - self.next).max(0) + b - 1) / b;
        (left as usize, Some(left as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn toy(n: i64) -> Split {
        let images = Tensor::arange(n, (Kind::Int64, Device::Cpu))
            .to_kind(Kind::Uint8)
            .view([n, 1, 1, 1])
            .repeat([1, 1, 2, 2]);
        Split { images, labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)) }
    }

    fn labels_of(b: &Batcher, epoch: u64) -> Vec<Vec<i64>> {
        b.epoch(epoch).unwrap().map(|r| Vec::<i64>::try_from(&r.unwrap().1).unwrap()).collect()
    }

    #[test]
    fn unshuffled_batches_keep_file_order_and_keep_the_tail() {
        let b = Batcher::new(&toy(10), Preprocess::Scale, None, BatchConfig::new(4)).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(labels_of(&b, 0), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
        assert_eq!(b.epoch(0).unwrap().size_hint(), (3, Some(3)));
    }

    #[test]
    fn drop_last_drops_the_tail() {
        let cfg = BatchConfig { drop_last: true, ..BatchConfig::new(4) };
        let b = Batcher::new(&toy(10), Preprocess::Scale, None, cfg).unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(labels_of(&b, 0).len(), 2);
    }

    #[test]
    fn shuffling_is_seeded_per_epoch_and_covers_everything() {
        let b = Batcher::new(&toy(50), Preprocess::Scale, None, BatchConfig::shuffled(8, 9)).unwrap();
        let e0 = labels_of(&b, 0);
        assert_eq!(e0, labels_of(&b, 0));
        assert_ne!(e0, labels_of(&b, 1));
        let mut all: Vec<i64> = e0.concat();
        assert_ne!(all, (0..50).collect::<Vec<_>>());
        all.sort_unstable();
        assert_eq!(all, (0..50).collect::<Vec<_>>());
        let other = Batcher::new(&toy(50), Preprocess::Scale, None, BatchConfig::shuffled(8, 10)).unwrap();
        assert_ne!(e0, labels_of(&other, 0));
    }

    #[test]
    fn images_follow_their_labels_and_are_preprocessed() {
        let b = Batcher::new(&toy(20), Preprocess::Scale, None, BatchConfig::shuffled(7, 1)).unwrap();
        for r in b.epoch(3).unwrap() {
            let (x, y) = r.unwrap();
            assert_eq!(x.kind(), Kind::Float);
            let first = x.select(1, 0).select(1, 0).select(1, 0);
            let want = y.to_kind(Kind::Float) / 255.0;
            assert!(first.allclose(&want, 1e-6, 1e-7, false));
        }
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(Batcher::new(&toy(4), Preprocess::Scale, None, BatchConfig::new(0)).is_err());
        let aug = Some(Augment { crop: 9, padding: 1, flip: true });
        assert!(Batcher::new(&toy(4), Preprocess::Scale, aug, BatchConfig::new(2)).is_err());
    }
}
