//! One split of a dataset (train, validation or test) and the seeded train/validation carve.
//!
//! A [`Split`] holds images `N x C x H x W` (`u8`, raw bytes, on any device) and labels `N`
//! (`i64`).

use tch::{Device, Kind, Tensor};

use crate::error::DataError;
use crate::rng::Mt19937;

/// Images `N x C x H x W` (`u8`) and labels `N` (`i64`), on one device.
#[derive(Debug)]
pub struct Split {
    /// Raw pixel bytes, `N x C x H x W`.
    pub images: Tensor,
    /// Class indices, `N`.
    pub labels: Tensor,
}

/// How large a validation split to carve from the training set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValSize {
    /// A fraction of the training set in `(0, 1)`, rounded to the nearest image.
    Fraction(f64),
    /// An exact number of images.
    Count(i64),
}

impl Split {
    /// Number of examples.
    pub fn len(&self) -> i64 {
        self.labels.size().first().copied().unwrap_or(0)
    }

    /// Whether the split has no examples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[C, H, W]` of one image.
    pub fn image_shape(&self) -> [i64; 3] {
        let s = self.images.size();
        [s[1], s[2], s[3]]
    }

    /// Checks the tensor invariants: 4-d `u8` images (or `f32` already preprocessed, for user
    /// datasets), 1-d `i64` labels of the same length.
    pub fn validate(&self) -> Result<(), DataError> {
        let (is, ls) = (self.images.size(), self.labels.size());
        if is.len() != 4 || !matches!(self.images.kind(), Kind::Uint8 | Kind::Float) {
            return Err(DataError::invalid(format!(
                "images must be N x C x H x W u8 (or f32), got {is:?} {:?}",
                self.images.kind()
            )));
        }
        if ls.len() != 1 || self.labels.kind() != Kind::Int64 || ls[0] != is[0] {
            return Err(DataError::invalid(format!(
                "labels must be N = {} i64, got {ls:?} {:?}",
                is[0],
                self.labels.kind()
            )));
        }
        Ok(())
    }

    /// A shallow copy sharing storage.
    pub fn shallow_clone(&self) -> Split {
        Split { images: self.images.shallow_clone(), labels: self.labels.shallow_clone() }
    }

    /// The split on `device` (images stay `u8`).
    pub fn to_device(&self, device: Device) -> Result<Split, DataError> {
        Ok(Split { images: self.images.f_to_device(device)?, labels: self.labels.f_to_device(device)? })
    }

    /// The examples at `index` (`i64`, any device; moved to the split's device).
    pub fn select(&self, index: &Tensor) -> Result<Split, DataError> {
        let index = index.f_to_device(self.images.device())?;
        Ok(Split {
            images: self.images.f_index_select(0, &index)?,
            labels: self.labels.f_index_select(0, &index)?,
        })
    }

    /// Number of examples of each class `0..classes`.
    pub fn class_histogram(&self, classes: i64) -> Result<Vec<i64>, DataError> {
        let counts = self.labels.f_to_device(Device::Cpu)?.f_bincount::<Tensor>(None, classes)?;
        let mut v = Vec::<i64>::try_from(&counts)?;
        v.resize(classes as usize, 0);
        Ok(v)
    }

    /// Carves a validation split: a seeded permutation of `0..N` (numpy-compatible, see
    /// [`Mt19937::permutation`]); its first `n_val` indices form the validation split, the rest
    /// the new training split. Both keep the original order of their examples.
    pub fn carve_validation(&self, size: ValSize, seed: u32) -> Result<(Split, Split), DataError> {
        let n = self.len();
        let n_val = match size {
            ValSize::Fraction(f) if f > 0.0 && f < 1.0 => (f * n as f64).round() as i64,
            ValSize::Fraction(f) => {
                return Err(DataError::invalid(format!("val_fraction {f} is not in (0, 1)")))
            }
            ValSize::Count(c) => c,
        };
        if n_val <= 0 || n_val >= n {
            return Err(DataError::invalid(format!(
                "validation size {n_val} must be in 1..{n} (training set has {n} examples)"
            )));
        }
        let perm = Mt19937::new(seed).permutation(n as usize);
        let mut val: Vec<i64> = perm[..n_val as usize].to_vec();
        let mut train: Vec<i64> = perm[n_val as usize..].to_vec();
        val.sort_unstable();
        train.sort_unstable();
        Ok((self.select(&Tensor::from_slice(&train))?, self.select(&Tensor::from_slice(&val))?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(n: i64) -> Split {
        let images = Tensor::arange(n, (Kind::Uint8, Device::Cpu)).view([n, 1, 1, 1]);
        let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
        Split { images, labels }
    }

    #[test]
    fn carve_is_seeded_disjoint_and_complete() {
        let s = toy(100);
        let (tr, va) = s.carve_validation(ValSize::Fraction(0.1), 5).unwrap();
        assert_eq!((tr.len(), va.len()), (90, 10));
        let tv = Vec::<i64>::try_from(tr.images.to_kind(Kind::Int64).view([-1])).unwrap();
        let vv = Vec::<i64>::try_from(va.images.to_kind(Kind::Int64).view([-1])).unwrap();
        let mut all: Vec<i64> = tv.iter().chain(vv.iter()).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert!(tv.windows(2).all(|w| w[0] < w[1]) && vv.windows(2).all(|w| w[0] < w[1]));
        // labels travel with their images
        let vl = Vec::<i64>::try_from(&va.labels).unwrap();
        assert!(vv.iter().zip(&vl).all(|(i, l)| i % 3 == *l));
        // same seed, same carve; another seed, another carve
        let (_, va2) = s.carve_validation(ValSize::Count(10), 5).unwrap();
        assert!(va2.images.equal(&va.images));
        let (_, va3) = s.carve_validation(ValSize::Count(10), 6).unwrap();
        assert!(!va3.images.equal(&va.images));
    }

    #[test]
    fn carve_rejects_bad_sizes() {
        let s = toy(10);
        for size in [ValSize::Fraction(0.0), ValSize::Fraction(1.0), ValSize::Count(0), ValSize::Count(10)] {
            assert!(matches!(s.carve_validation(size, 0), Err(DataError::InvalidArgument(_))));
        }
    }

    #[test]
    fn histogram_and_validate() {
        let s = toy(10);
        assert_eq!(s.class_histogram(4).unwrap(), vec![4, 3, 3, 0]);
        assert!(s.validate().is_ok());
        let bad = Split { images: s.images.view([10, 1]), labels: s.labels.shallow_clone() };
        assert!(bad.validate().is_err());
        let bad = Split { images: s.images.shallow_clone(), labels: s.labels.narrow(0, 0, 3) };
        assert!(bad.validate().is_err());
    }
}
