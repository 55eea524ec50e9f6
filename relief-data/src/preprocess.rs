//! Pixel preprocessing exactly as the paper's code (torchvision `ToTensor` then `Normalize`).
//!
//! Input: `u8` images `B x C x H x W` on any device. Output: `f32` `B x C x H x W` on the same
//! device: `x / 255` (MNIST), or `(x / 255 - mean[c]) / std[c]` (CIFAR, Tiny-ImageNet), with the
//! same float32 operations in the same order as torchvision, so values match bit for bit on the
//! same device.

use tch::{Kind, Tensor};

use crate::error::DataError;

/// The ImageNet channel means the authors normalise CIFAR with.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// The ImageNet channel standard deviations the authors normalise CIFAR with.
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

/// How raw `u8` pixels become network input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Preprocess {
    /// `x / 255` (torchvision `ToTensor` alone).
    Scale,
    /// `(x / 255 - mean) / std` per channel (`ToTensor` then `Normalize(mean, std)`), 3 channels.
    Normalize {
        /// Per-channel mean (after `/ 255`).
        mean: [f64; 3],
        /// Per-channel standard deviation (after `/ 255`).
        std: [f64; 3],
    },
    /// None: the images are already `f32` network input (user datasets, normalised when loaded;
    /// see [`crate::user`]).
    Identity,
}

impl Preprocess {
    /// `Normalize` with the ImageNet statistics used for CIFAR and Tiny-ImageNet.
    pub const IMAGENET: Preprocess = Preprocess::Normalize { mean: IMAGENET_MEAN, std: IMAGENET_STD };

    /// Preprocesses `u8` images `B x C x H x W` into `f32`.
    pub fn apply(&self, images: &Tensor) -> Result<Tensor, DataError> {
        Prepared::new(*self, images.device())?.apply(images)
    }
}

/// A [`Preprocess`] with its mean/std tensors already on a device (for hot loops).
#[derive(Debug)]
pub struct Prepared {
    mean_std: Option<(Tensor, Tensor)>,
    identity: bool,
}

impl Prepared {
    /// Builds the `1 x 3 x 1 x 1` float32 mean and std tensors on `device`.
    pub fn new(pre: Preprocess, device: tch::Device) -> Result<Self, DataError> {
        let mean_std = match pre {
            Preprocess::Scale | Preprocess::Identity => None,
            Preprocess::Normalize { mean, std } => {
                let t = |v: [f64; 3]| -> Result<Tensor, DataError> {
                    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
                    Ok(Tensor::from_slice(&f).f_view([1, 3, 1, 1])?.f_to_device(device)?)
                };
                Some((t(mean)?, t(std)?))
            }
        };
        Ok(Self { mean_std, identity: pre == Preprocess::Identity })
    }

    /// Preprocesses `u8` images `B x C x H x W` into `f32`.
    pub fn apply(&self, images: &Tensor) -> Result<Tensor, DataError> {
        let size = images.size();
        if self.identity {
            if size.len() != 4 || images.kind() != Kind::Float {
                return Err(DataError::invalid(format!(
                    "preprocess expects f32 B x C x H x W inputs, got {size:?} {:?}",
                    images.kind()
                )));
            }
            return Ok(images.shallow_clone());
        }
        if size.len() != 4 || images.kind() != Kind::Uint8 {
            return Err(DataError::invalid(format!(
                "preprocess expects u8 B x C x H x W images, got {size:?} {:?}",
                images.kind()
            )));
        }
        let mut x = images.f_to_kind(Kind::Float)?;
        let _ = x.f_div_scalar_(255.0)?;
        if let Some((mean, std)) = &self.mean_std {
            if size[1] != 3 {
                return Err(DataError::invalid(format!("normalisation expects 3 channels, got {}", size[1])));
            }
            let _ = x.f_sub_(mean)?;
            let _ = x.f_div_(std)?;
        }
        Ok(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_divides_by_255() {
        let x = Tensor::from_slice(&[0u8, 51, 255]).view([1, 1, 1, 3]);
        let y = Vec::<f32>::try_from(Preprocess::Scale.apply(&x).unwrap().view([-1])).unwrap();
        assert_eq!(y, vec![0.0, 0.2, 1.0]);
    }

    #[test]
    fn normalize_matches_the_formula_per_channel() {
        let x = Tensor::from_slice(&[0u8, 128, 255, 7, 9, 200]).view([1, 3, 1, 2]);
        let y = Vec::<f32>::try_from(Preprocess::IMAGENET.apply(&x).unwrap().view([-1])).unwrap();
        let raw = [0u8, 128, 255, 7, 9, 200];
        for (i, (&v, &r)) in y.iter().zip(&raw).enumerate() {
            let c = i / 2;
            let want = (r as f32 / 255.0 - IMAGENET_MEAN[c] as f32) / IMAGENET_STD[c] as f32;
            assert!((v - want).abs() < 1e-6, "{i}: {v} vs {want}");
        }
        // a zero (padding) pixel becomes -mean/std
        assert!((y[0] + 0.485 / 0.229).abs() < 1e-5);
    }

    #[test]
    fn rejects_wrong_inputs() {
        let f = Tensor::zeros([1, 3, 2, 2], (Kind::Float, tch::Device::Cpu));
        assert!(Preprocess::Scale.apply(&f).is_err());
        let one = Tensor::zeros([1, 1, 2, 2], (Kind::Uint8, tch::Device::Cpu));
        assert!(Preprocess::IMAGENET.apply(&one).is_err());
        assert!(Preprocess::Scale.apply(&one).is_ok());
    }
}
