//! Batched training augmentation: zero-padded random crop and horizontal flip.
//!
//! Input: raw `u8` images `B x C x H x W` on any device. Output: `u8` `B x C x crop x crop` on the
//! same device. The whole batch is padded once with zeros (the raw image, before
//! normalisation, as torchvision pads the PIL image with 0), then one advanced-indexing gather
//! picks each sample's window: row indices `oy[b] + i`, column indices `ox[b] + j`, or
//! `ox[b] + crop - 1 - j` where the sample is flipped. No per-sample loop, no per-sample kernel.
//! Offsets are uniform over `0..=H + 2 * padding - crop` (torchvision `RandomCrop`), flips fair
//! coins (`RandomHorizontalFlip(0.5)`); they come from a seeded [`Mt19937`] as small tensors.

use tch::{Device, Kind, Tensor};

use crate::error::DataError;
use crate::rng::Mt19937;

/// Random crop with zero padding, then optional horizontal flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Augment {
    /// Output height and width.
    pub crop: i64,
    /// Zeros added on every side before cropping.
    pub padding: i64,
    /// Whether to flip half the samples horizontally.
    pub flip: bool,
}

/// One batch's random choices: offsets `B` (`i64`) and flips `B` (`bool`), on a device.
#[derive(Debug)]
pub struct AugmentDraw {
    /// Top offset of each crop window in the padded image.
    pub oy: Tensor,
    /// Left offset of each crop window in the padded image.
    pub ox: Tensor,
    /// Whether each sample is flipped left-right.
    pub flip: Tensor,
}

impl Augment {
    /// CIFAR: `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()`.
    pub const CIFAR: Augment = Augment { crop: 32, padding: 4, flip: true };
    /// Tiny-ImageNet: `RandomCrop(64, padding=8)` + `RandomHorizontalFlip()`.
    pub const TINY_IMAGENET: Augment = Augment { crop: 64, padding: 8, flip: true };

    /// Largest crop offset for `size`-pixel images: `size + 2 * padding - crop`.
    pub fn max_offset(&self, size: i64) -> i64 {
        size + 2 * self.padding - self.crop
    }

    /// Draws offsets and flips for `batch` images of side `size`, as tensors on `device`.
    pub fn draw(
        &self,
        batch: i64,
        size: i64,
        rng: &mut Mt19937,
        device: Device,
    ) -> Result<AugmentDraw, DataError> {
        let max = self.max_offset(size);
        if max < 0 || batch < 0 {
            return Err(DataError::invalid(format!(
                "crop {} larger than padded image {}",
                self.crop,
                size + 2 * self.padding
            )));
        }
        let n = batch as usize;
        let mut oy = Vec::with_capacity(n);
        let mut ox = Vec::with_capacity(n);
        let mut flip = Vec::with_capacity(n);
        for _ in 0..n {
            oy.push(rng.interval(max as u64) as i64);
            ox.push(rng.interval(max as u64) as i64);
            flip.push(self.flip && rng.coin());
        }
        Ok(AugmentDraw {
            oy: Tensor::from_slice(&oy).f_to_device(device)?,
            ox: Tensor::from_slice(&ox).f_to_device(device)?,
            flip: Tensor::from_slice(&flip).f_to_device(device)?,
        })
    }

    /// Augments `u8` images `B x C x H x W` (square) with fresh draws from `rng`.
    pub fn apply(&self, images: &Tensor, rng: &mut Mt19937) -> Result<Tensor, DataError> {
        let s = images.size();
        if s.len() != 4 {
            return Err(DataError::invalid(format!("augment expects B x C x H x W, got {s:?}")));
        }
        let draw = self.draw(s[0], s[2], rng, images.device())?;
        self.apply_draw(images, &draw)
    }

    /// Augments `u8` images `B x C x H x W` with the given draw.
    pub fn apply_draw(&self, images: &Tensor, draw: &AugmentDraw) -> Result<Tensor, DataError> {
        let s = images.size();
        if s.len() != 4 || s[2] != s[3] || images.kind() != Kind::Uint8 {
            return Err(DataError::invalid(format!(
                "augment expects square u8 B x C x H x W images, got {s:?} {:?}",
                images.kind()
            )));
        }
        let (b, c, size) = (s[0], s[1], s[2]);
        if self.max_offset(size) < 0 {
            return Err(DataError::invalid(format!(
                "crop {} larger than padded image {}",
                self.crop,
                size + 2 * self.padding
            )));
        }
        for (name, t) in [("oy", &draw.oy), ("ox", &draw.ox), ("flip", &draw.flip)] {
            if t.size() != [b] {
                return Err(DataError::invalid(format!("draw.{name} must have {b} entries")));
            }
        }
        let dev = images.device();
        let p = self.padding;
        let padded = if p > 0 { images.f_constant_pad_nd([p, p, p, p])? } else { images.shallow_clone() };
        let k = self.crop;
        let ar = Tensor::f_arange(k, (Kind::Int64, dev))?;
        let rows = draw.oy.f_to_device(dev)?.f_unsqueeze(1)?.f_add(&ar)?.f_view([b, 1, k, 1])?;
        let ox = draw.ox.f_to_device(dev)?.f_unsqueeze(1)?;
        let fwd = ox.f_add(&ar)?;
        let rev = ox.f_add(&ar.f_neg()?.f_add_scalar(k - 1)?)?;
        let flip = draw.flip.f_to_device(dev)?.f_unsqueeze(1)?;
        let cols = rev.f_where_self(&flip, &fwd)?.f_view([b, 1, 1, k])?;
        let bi = Tensor::f_arange(b, (Kind::Int64, dev))?.f_view([b, 1, 1, 1])?;
        let ci = Tensor::f_arange(c, (Kind::Int64, dev))?.f_view([1, c, 1, 1])?;
        Ok(padded.f_index(&[Some(bi), Some(ci), Some(rows), Some(cols)])?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: pad one image, cut the window, maybe flip, sample by sample.
    fn reference(img: &Tensor, a: &Augment, oy: i64, ox: i64, flip: bool) -> Tensor {
        let p = a.padding;
        let padded = img.constant_pad_nd([p, p, p, p]);
        let win = padded.narrow(1, oy, a.crop).narrow(2, ox, a.crop);
        if flip {
            win.flip([2])
        } else {
            win
        }
    }

    fn batch(b: i64, c: i64, s: i64) -> Tensor {
        (Tensor::arange(b * c * s * s, (Kind::Int64, Device::Cpu)).remainder(250) + 1)
            .to_kind(Kind::Uint8)
            .view([b, c, s, s])
    }

    #[test]
    fn matches_per_sample_reference() {
        let a = Augment { crop: 6, padding: 2, flip: true };
        let x = batch(5, 3, 6);
        let mut rng = Mt19937::new(3);
        let d = a.draw(5, 6, &mut rng, Device::Cpu).unwrap();
        let y = a.apply_draw(&x, &d).unwrap();
        assert_eq!(y.size(), vec![5, 3, 6, 6]);
        let oy = Vec::<i64>::try_from(&d.oy).unwrap();
        let ox = Vec::<i64>::try_from(&d.ox).unwrap();
        let fl = Vec::<bool>::try_from(&d.flip).unwrap();
        for i in 0..5 {
            let want = reference(&x.get(i), &a, oy[i as usize], ox[i as usize], fl[i as usize]);
            assert!(y.get(i).equal(&want), "sample {i}");
        }
    }

    #[test]
    fn explicit_draw_crops_and_flips() {
        let a = Augment { crop: 2, padding: 1, flip: true };
        // one 1-channel 2x2 image [[1,2],[3,4]]; padded 4x4
        let x = Tensor::from_slice(&[1u8, 2, 3, 4]).view([1, 1, 2, 2]);
        let d = |oy: i64, ox: i64, f: bool| AugmentDraw {
            oy: Tensor::from_slice(&[oy]),
            ox: Tensor::from_slice(&[ox]),
            flip: Tensor::from_slice(&[f]),
        };
        let v = |t: Tensor| Vec::<u8>::try_from(t.view([-1])).unwrap();
        assert_eq!(v(a.apply_draw(&x, &d(1, 1, false)).unwrap()), [1, 2, 3, 4]);
        assert_eq!(v(a.apply_draw(&x, &d(1, 1, true)).unwrap()), [2, 1, 4, 3]);
        assert_eq!(v(a.apply_draw(&x, &d(0, 0, false)).unwrap()), [0, 0, 0, 1]);
        assert_eq!(v(a.apply_draw(&x, &d(2, 2, true)).unwrap()), [0, 4, 0, 0]);
    }

    #[test]
    fn rejects_bad_shapes() {
        let a = Augment::CIFAR;
        let mut rng = Mt19937::new(0);
        assert!(a.apply(&Tensor::zeros([2, 3, 32], (Kind::Uint8, Device::Cpu)), &mut rng).is_err());
        assert!(a.apply(&Tensor::zeros([2, 3, 8, 8], (Kind::Uint8, Device::Cpu)), &mut rng).is_err());
        let x = Tensor::zeros([2, 3, 32, 32], (Kind::Uint8, Device::Cpu));
        let d = a.draw(3, 32, &mut rng, Device::Cpu).unwrap();
        assert!(a.apply_draw(&x, &d).is_err());
    }
}
