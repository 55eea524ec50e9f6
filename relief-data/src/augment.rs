//! Batched training augmentation: zero-padded random crop and horizontal flip.
//!
//! Input: raw `u8` images `N x C x S x S` on any device and the batch's sample indices. Output:
//! `u8` `B x C x crop x crop` on the same device. Zero padding is applied to the raw image,
//! before normalisation (torchvision pads the PIL image with 0, then `ToTensor`, then
//! `Normalize`), so a padded pixel becomes `(0 - mean) / std` after preprocessing. Offsets are
//! uniform over `0..=S + 2 * padding - crop` (`RandomCrop`), flips fair coins
//! (`RandomHorizontalFlip(0.5)`); both are drawn on the host from a seeded [`Mt19937`].
//!
//! How it stays batched (no per-sample loop or kernel): a reusable zero-bordered workspace
//! `2 x Bmax x C x (S+2p) x (S+2p)` receives the batch's unflipped samples in its first half and
//! the flipped ones (one `flip` of that subset) in its second half, through two `index_select`s
//! and two interior copies; the border is never written, so it stays zero. An overlapping
//! `as_strided` view of the workspace then has one 32-byte "row" per byte offset, and a single
//! `index_select` over `B x C x crop` row starts cuts every window at once. A flipped sample's
//! window sits at the mirrored offset `S + 2p - crop - ox` of its flipped copy.

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

/// One batch's random choices (host side): top and left offsets of each crop window in the
/// padded image, and whether each sample is flipped left-right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AugmentDraw {
    /// Top offsets, `0..=max_offset`.
    pub oy: Vec<i64>,
    /// Left offsets, `0..=max_offset`.
    pub ox: Vec<i64>,
    /// Flips.
    pub flip: Vec<bool>,
}

/// A reusable zero-bordered buffer for [`Augment::apply_indexed`] (avoids reallocating and
/// re-zeroing every batch).
#[derive(Debug, Default)]
pub struct Workspace {
    buf: Option<Tensor>,
    /// `(capacity, C, padded side)` of `buf`.
    shape: (i64, i64, i64),
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

    fn check_fit(&self, size: i64) -> Result<(), DataError> {
        if self.crop <= 0 || self.padding < 0 || self.max_offset(size) < 0 {
            return Err(DataError::invalid(format!(
                "crop {} with padding {} does not fit {size}x{size} images",
                self.crop, self.padding
            )));
        }
        Ok(())
    }

    /// Draws offsets and flips for `batch` images of side `size`.
    pub fn draw(&self, batch: usize, size: i64, rng: &mut Mt19937) -> Result<AugmentDraw, DataError> {
        self.check_fit(size)?;
        let max = self.max_offset(size) as u64;
        let mut d = AugmentDraw {
            oy: Vec::with_capacity(batch),
            ox: Vec::with_capacity(batch),
            flip: Vec::with_capacity(batch),
        };
        for _ in 0..batch {
            d.oy.push(rng.interval(max) as i64);
            d.ox.push(rng.interval(max) as i64);
            d.flip.push(self.flip && rng.coin());
        }
        Ok(d)
    }

    /// Augments a whole `u8` batch `B x C x S x S` with fresh draws from `rng`.
    pub fn apply(&self, images: &Tensor, rng: &mut Mt19937) -> Result<Tensor, DataError> {
        let s = images.size();
        if s.len() != 4 {
            return Err(DataError::invalid(format!("augment expects B x C x H x W, got {s:?}")));
        }
        let draw = self.draw(s[0] as usize, s[2], rng)?;
        self.apply_draw(images, &draw)
    }

    /// Augments a whole `u8` batch `B x C x S x S` with the given draw.
    pub fn apply_draw(&self, images: &Tensor, draw: &AugmentDraw) -> Result<Tensor, DataError> {
        let n = images.size().first().copied().unwrap_or(0);
        let indices: Vec<i64> = (0..n).collect();
        self.apply_indexed(images, &indices, draw, &mut Workspace::default())
    }

    /// Augments samples `indices` of `source` (`u8` `N x C x S x S`): returns
    /// `u8` `B x C x crop x crop`, row `i` from `source[indices[i]]` with `draw`'s choice `i`.
    pub fn apply_indexed(
        &self,
        source: &Tensor,
        indices: &[i64],
        draw: &AugmentDraw,
        ws: &mut Workspace,
    ) -> Result<Tensor, DataError> {
        let s = source.size();
        if s.len() != 4 || s[2] != s[3] || source.kind() != Kind::Uint8 {
            return Err(DataError::invalid(format!(
                "augment expects square u8 N x C x H x W images, got {s:?} {:?}",
                source.kind()
            )));
        }
        let (n, c, size) = (s[0], s[1], s[2]);
        self.check_fit(size)?;
        let b = indices.len();
        if draw.oy.len() != b || draw.ox.len() != b || draw.flip.len() != b {
            return Err(DataError::invalid(format!("the draw must have {b} entries per field")));
        }
        let max = self.max_offset(size);
        if let Some(i) = indices.iter().position(|&i| i < 0 || i >= n) {
            return Err(DataError::invalid(format!("index {} out of range 0..{n}", indices[i])));
        }
        if let Some(v) = draw.oy.iter().chain(&draw.ox).find(|&&v| v < 0 || v > max) {
            return Err(DataError::invalid(format!("crop offset {v} out of range 0..={max}")));
        }
        let (p, k, dev) = (self.padding, self.crop, source.device());
        let sp = size + 2 * p;
        if b == 0 {
            return Ok(Tensor::f_zeros([0, c, k, k], (Kind::Uint8, dev))?);
        }

        // Workspace: first half unflipped samples, second half flipped ones; border stays zero.
        let cap = ws.ensure(b as i64, c, sp, dev)?;
        let (mut plain, mut flipped) = (Vec::new(), Vec::new());
        let mut slot = Vec::with_capacity(b);
        for (i, &f) in draw.flip.iter().enumerate() {
            if f {
                slot.push(cap + flipped.len() as i64);
                flipped.push(indices[i]);
            } else {
                slot.push(plain.len() as i64);
                plain.push(indices[i]);
            }
        }
        let buf = ws.buf.as_ref().ok_or_else(|| DataError::invalid("no workspace"))?;
        for (start, list, flip) in [(0, &plain, false), (cap, &flipped, true)] {
            if list.is_empty() {
                continue;
            }
            let idx = Tensor::from_slice(list).f_to_device(dev)?;
            let mut picked = source.f_index_select(0, &idx)?;
            if flip {
                picked = picked.f_flip([3])?;
            }
            let mut interior =
                buf.f_narrow(0, start, list.len() as i64)?.f_narrow(2, p, size)?.f_narrow(3, p, size)?;
            interior.f_copy_(&picked)?;
        }

        // One index_select over overlapping k-byte rows cuts every window.
        let plane = sp * sp;
        let mut rows = Vec::with_capacity(b * (c * k) as usize);
        for (i, &slot) in slot.iter().enumerate() {
            let ox = if draw.flip[i] { max - draw.ox[i] } else { draw.ox[i] };
            let base = slot * c * plane + draw.oy[i] * sp + ox;
            for ch in 0..c {
                for r in 0..k {
                    rows.push(base + ch * plane + r * sp);
                }
            }
        }
        let total = 2 * cap * c * plane;
        let view = buf.f_as_strided([total - k + 1, k], [1, 1], 0)?;
        let rows = Tensor::from_slice(&rows).f_to_device(dev)?;
        Ok(view.f_index_select(0, &rows)?.f_view([b as i64, c, k, k])?)
    }
}

impl Workspace {
    /// Makes room for `b` samples of `C x sp x sp` on `device`; returns the half capacity.
    fn ensure(&mut self, b: i64, c: i64, sp: i64, device: Device) -> Result<i64, DataError> {
        let fits = self.buf.as_ref().is_some_and(|t| t.device() == device)
            && self.shape.0 >= b
            && self.shape.1 == c
            && self.shape.2 == sp;
        if !fits {
            self.buf = Some(Tensor::f_zeros([2 * b, c, sp, sp], (Kind::Uint8, device))?);
            self.shape = (b, c, sp);
        }
        Ok(self.shape.0)
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
        for a in [Augment { crop: 6, padding: 2, flip: true }, Augment { crop: 4, padding: 1, flip: true }] {
            let x = batch(9, 3, 6);
            let mut rng = Mt19937::new(3);
            let d = a.draw(9, 6, &mut rng).unwrap();
            let y = a.apply_draw(&x, &d).unwrap();
            assert_eq!(y.size(), vec![9, 3, a.crop, a.crop]);
            for i in 0..9 {
                let u = i as usize;
                let want = reference(&x.get(i), &a, d.oy[u], d.ox[u], d.flip[u]);
                assert!(y.get(i).equal(&want), "{a:?} sample {i}: {d:?}");
            }
        }
    }

    #[test]
    fn indexed_picks_samples_and_reuses_the_workspace() {
        let a = Augment { crop: 5, padding: 2, flip: true };
        let x = batch(7, 2, 5);
        let mut ws = Workspace::default();
        let mut rng = Mt19937::new(11);
        for idx in [vec![6i64, 0, 3, 3], vec![1, 2], vec![5, 4, 3, 2, 1]] {
            let d = a.draw(idx.len(), 5, &mut rng).unwrap();
            let y = a.apply_indexed(&x, &idx, &d, &mut ws).unwrap();
            for (i, &src) in idx.iter().enumerate() {
                let want = reference(&x.get(src), &a, d.oy[i], d.ox[i], d.flip[i]);
                assert!(y.get(i as i64).equal(&want), "{idx:?} {i}");
            }
        }
    }

    #[test]
    fn explicit_draw_crops_and_flips() {
        let a = Augment { crop: 2, padding: 1, flip: true };
        // one 1-channel 2x2 image [[1,2],[3,4]]; padded 4x4
        let x = Tensor::from_slice(&[1u8, 2, 3, 4]).view([1, 1, 2, 2]);
        let d = |oy: i64, ox: i64, f: bool| AugmentDraw { oy: vec![oy], ox: vec![ox], flip: vec![f] };
        let v = |t: Tensor| Vec::<u8>::try_from(t.view([-1])).unwrap();
        assert_eq!(v(a.apply_draw(&x, &d(1, 1, false)).unwrap()), [1, 2, 3, 4]);
        assert_eq!(v(a.apply_draw(&x, &d(1, 1, true)).unwrap()), [2, 1, 4, 3]);
        assert_eq!(v(a.apply_draw(&x, &d(0, 0, false)).unwrap()), [0, 0, 0, 1]);
        assert_eq!(v(a.apply_draw(&x, &d(2, 2, true)).unwrap()), [0, 4, 0, 0]);
        assert_eq!(v(a.apply_draw(&x, &d(0, 2, true)).unwrap()), [0, 0, 0, 2]);
    }

    #[test]
    fn rejects_bad_inputs() {
        let a = Augment::CIFAR;
        let mut rng = Mt19937::new(0);
        assert!(a.apply(&Tensor::zeros([2, 3, 32], (Kind::Uint8, Device::Cpu)), &mut rng).is_err());
        assert!(a.apply(&Tensor::zeros([2, 3, 8, 8], (Kind::Uint8, Device::Cpu)), &mut rng).is_err());
        assert!(a.apply(&Tensor::zeros([2, 3, 32, 32], (Kind::Float, Device::Cpu)), &mut rng).is_err());
        let x = Tensor::zeros([2, 3, 32, 32], (Kind::Uint8, Device::Cpu));
        let d = a.draw(3, 32, &mut rng).unwrap();
        assert!(a.apply_draw(&x, &d).is_err());
        let bad = AugmentDraw { oy: vec![9, 0], ox: vec![0, 0], flip: vec![false, false] };
        assert!(a.apply_draw(&x, &bad).is_err());
        let d2 = a.draw(2, 32, &mut rng).unwrap();
        assert!(a.apply_indexed(&x, &[0, 2], &d2, &mut Workspace::default()).is_err());
        assert_eq!(
            a.apply_indexed(&x, &[], &a.draw(0, 32, &mut rng).unwrap(), &mut Workspace::default())
                .unwrap()
                .size(),
            vec![0, 3, 32, 32]
        );
    }
}
