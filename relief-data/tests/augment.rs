//! Statistics and semantics of the batched augmentation, read back from the output images:
//! flip rate about 0.5, crop offsets uniform over 0..=8, padded pixels zero before
//! normalisation and `-mean/std` after it.

use relief_data::augment::Workspace;
use relief_data::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use relief_data::{Augment, BatchConfig, Batcher, Mt19937, Preprocess, Split};
use tch::{Device, Kind, Tensor};

/// `n` CIFAR-shaped images whose pixel (r, c) is `c + 1` in every channel (1..=32, never 0).
fn column_coded(n: i64) -> Tensor {
    let cols = Tensor::arange_start(1, 33, (Kind::Int64, Device::Cpu)).to_kind(Kind::Uint8);
    cols.view([1, 1, 1, 32]).expand([n, 3, 32, 32], false).contiguous()
}

/// Reads (oy, ox, flipped) back from one augmented column-coded image `3 x 32 x 32`.
fn decode(img: &[u8]) -> (i64, i64, bool) {
    let px = |r: usize, c: usize| img[r * 32 + c];
    let nonzero_row = |r: usize| (0..32).any(|c| px(r, c) != 0);
    let top = (0..32).take_while(|&r| !nonzero_row(r)).count() as i64;
    let bottom = (0..32).rev().take_while(|&r| !nonzero_row(r)).count() as i64;
    let oy = 4 - top + bottom;
    let r = top as usize;
    let cols: Vec<(usize, u8)> = (0..32).map(|c| (c, px(r, c))).filter(|(_, v)| *v != 0).collect();
    let flipped = cols.len() > 1 && cols[0].1 > cols[1].1;
    // A visible pixel of value v sits at padded column v + 3. Output column j shows padded
    // column ox + j, or ox + 31 - j when flipped.
    let (pos, val) = (cols[0].0 as i64, cols[0].1 as i64);
    let ox = if flipped { val + 3 - 31 + pos } else { val + 3 - pos };
    (oy, ox, flipped)
}

#[test]
fn offsets_uniform_flips_fair_padding_zero() {
    let n = 9000;
    let x = column_coded(n);
    let a = Augment::CIFAR;
    let mut rng = Mt19937::new(2024);
    let draw = a.draw(n as usize, 32, &mut rng).unwrap();
    let idx: Vec<i64> = (0..n).collect();
    let y = a.apply_indexed(&x, &idx, &draw, &mut Workspace::default()).unwrap();
    assert_eq!(y.size(), vec![n, 3, 32, 32]);
    let bytes = Vec::<u8>::try_from(y.view([-1])).unwrap();

    let (mut oy_hist, mut ox_hist, mut flips) = ([0usize; 9], [0usize; 9], 0usize);
    for i in 0..n as usize {
        let img = &bytes[i * 3072..(i + 1) * 3072];
        let (oy, ox, flipped) = decode(&img[..1024]);
        // read back from the pixels, equal to what was drawn
        assert_eq!((oy, ox, flipped), (draw.oy[i], draw.ox[i], draw.flip[i]), "sample {i}");
        oy_hist[oy as usize] += 1;
        ox_hist[ox as usize] += 1;
        flips += flipped as usize;
        // zero exactly where the window covers padding; channels identical
        for r in 0..32i64 {
            for c in 0..32i64 {
                let src_r = oy + r - 4;
                let pc = if flipped { ox + 31 - c } else { ox + c };
                let src_c = pc - 4;
                let inside = (0..32).contains(&src_r) && (0..32).contains(&src_c);
                let v = img[(r * 32 + c) as usize];
                assert_eq!(v != 0, inside, "sample {i} pixel ({r},{c})");
                if inside {
                    assert_eq!(v as i64, src_c + 1);
                }
                assert_eq!(img[1024 + (r * 32 + c) as usize], v);
            }
        }
    }
    let rate = flips as f64 / n as f64;
    assert!((rate - 0.5).abs() < 0.02, "flip rate {rate}");
    // chi-square against uniform over 9 offsets, 8 dof: 99.9% quantile 26.1
    for hist in [oy_hist, ox_hist] {
        let e = n as f64 / 9.0;
        let chi2: f64 = hist.iter().map(|&o| (o as f64 - e).powi(2) / e).sum();
        assert!(chi2 < 26.1, "{hist:?} chi2 {chi2}");
        assert!(hist.iter().all(|&c| c > 0));
    }
}

#[test]
fn padded_pixels_are_minus_mean_over_std_after_normalisation() {
    let n = 1024;
    let images = Tensor::full([n, 3, 32, 32], 255, (Kind::Uint8, Device::Cpu));
    let split = Split { images, labels: Tensor::zeros([n], (Kind::Int64, Device::Cpu)) };
    let b = Batcher::new(&split, Preprocess::IMAGENET, Some(Augment::CIFAR), BatchConfig::shuffled(128, 5))
        .unwrap();
    let (mut padded, mut total) = (0i64, 0i64);
    for batch in b.epoch(0).unwrap() {
        let (x, _) = batch.unwrap();
        for c in 0..3 {
            let ch = x.select(1, c);
            // float32 arithmetic in torchvision's order: x / 255, - mean, / std
            let (m, sd) = (IMAGENET_MEAN[c as usize] as f32, IMAGENET_STD[c as usize] as f32);
            let pad = (0.0f32 / 255.0 - m) / sd;
            let img = (255.0f32 / 255.0 - m) / sd;
            let is_pad = ch.eq(pad as f64);
            let is_img = ch.eq(img as f64);
            assert!(is_pad.logical_or(&is_img).all().int64_value(&[]) == 1, "channel {c}");
            padded += is_pad.sum(Kind::Int64).int64_value(&[]);
            total += ch.numel() as i64;
        }
    }
    // E[padded fraction] = 1 - E[(32 - |oy-4|)(32 - |ox-4|)] / 1024 = 1 - (32 - 20/9)^2 / 1024
    let expect = 1.0 - (32.0 - 20.0 / 9.0f64).powi(2) / 1024.0;
    let got = padded as f64 / total as f64;
    assert!((got - expect).abs() < 0.01, "padded fraction {got} vs {expect}");
}

#[test]
fn tiny_imagenet_offsets_span_0_to_16() {
    let a = Augment::TINY_IMAGENET;
    let d = a.draw(5000, 64, &mut Mt19937::new(1)).unwrap();
    assert_eq!(d.oy.iter().min(), Some(&0));
    assert_eq!(d.ox.iter().max(), Some(&16));
    let x = Tensor::full([2, 3, 64, 64], 7, (Kind::Uint8, Device::Cpu));
    let y = a.apply(&x, &mut Mt19937::new(0)).unwrap();
    assert_eq!(y.size(), vec![2, 3, 64, 64]);
}

#[test]
fn same_seed_same_augmented_epoch() {
    let n = 100;
    let x = Tensor::randint(256, [n, 3, 32, 32], (Kind::Uint8, Device::Cpu));
    let split = Split { images: x, labels: Tensor::arange(n, (Kind::Int64, Device::Cpu)) };
    let cfg = BatchConfig::shuffled(32, 77);
    let a = Batcher::new(&split, Preprocess::IMAGENET, Some(Augment::CIFAR), cfg).unwrap();
    let b = Batcher::new(&split, Preprocess::IMAGENET, Some(Augment::CIFAR), cfg).unwrap();
    for (p, q) in a.epoch(4).unwrap().zip(b.epoch(4).unwrap()) {
        let ((x1, y1), (x2, y2)) = (p.unwrap(), q.unwrap());
        assert!(x1.equal(&x2) && y1.equal(&y2));
    }
    let first = |e| a.epoch(e).unwrap().next().unwrap().unwrap().0;
    assert!(!first(0).equal(&first(1)));
}
