//! Property tests: the vectorised importances and selection against naive loop implementations
//! written straight from the formulas (SEMANTICS.md sections 1.1-1.3).

use proptest::prelude::*;
use relief_core::graph::LayerOp;
use relief_core::score::{conv_importance, linear_importance, PositionNorm};
use relief_core::select::select_by_cumulative_share;
use relief_core::Semantics;
use tch::{Kind, Tensor};

fn tensor(data: &[f32], shape: &[i64]) -> Tensor {
    Tensor::from_slice(data).view(shape)
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

fn close(a: f32, b: f64) -> bool {
    (a as f64 - b).abs() <= 1e-4 * (1.0 + b.abs())
}

/// Uniform values in [-1, 1] with about a quarter exact zeros.
fn values(n: usize) -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(prop_oneof![1 => Just(0.0f32), 3 => -1.0f32..1.0], n)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn linear_importance_matches_loops(
        (n, inp, out, x, w, b, with_bias) in (1usize..6, 1usize..7, 1usize..5).prop_flat_map(|(n, i, o)| {
            (Just(n), Just(i), Just(o), values(n * i), values(o * i), values(o), any::<bool>())
        })
    ) {
        let xt = tensor(&x, &[n as i64, inp as i64]);
        let mean_abs = xt.abs().mean_dim(0, false, Kind::Float);
        let wt = tensor(&w, &[out as i64, inp as i64]);
        let bt = tensor(&b, &[out as i64]);
        let imp = linear_importance(&wt, with_bias.then_some(&bt), &mean_abs);
        let got = to_vec(&imp);
        let cols = inp + usize::from(with_bias);
        prop_assert_eq!(imp.size(), vec![out as i64, cols as i64]);
        for i in 0..out {
            for j in 0..inp {
                let naive: f64 = (0..n).map(|s| (x[s * inp + j] as f64 * w[i * inp + j] as f64).abs()).sum::<f64>() / n as f64;
                prop_assert!(close(got[i * cols + j], naive), "({},{}): {} vs {}", i, j, got[i * cols + j], naive);
            }
            if with_bias {
                prop_assert!(close(got[i * cols + inp], (b[i] as f64).abs()));
            }
        }
    }

    #[test]
    fn conv_importance_matches_loops(
        (n, c, k, h, ksize, stride, pad, l2, with_bias, seed) in
            (1usize..4, 1usize..4, 1usize..4, 3usize..8, prop_oneof![Just(1usize), Just(3)], 1usize..3, 0usize..2, any::<bool>(), any::<bool>(), any::<u32>())
    ) {
        prop_assume!(h + 2 * pad >= ksize);
        tch::manual_seed(seed as i64);
        let w_img = h + 1; // non-square input
        let x = Tensor::randn([n as i64, c as i64, h as i64, w_img as i64], (Kind::Float, tch::Device::Cpu));
        let w = Tensor::randn([k as i64, c as i64, ksize as i64, ksize as i64], (Kind::Float, tch::Device::Cpu));
        let b = Tensor::randn([k as i64], (Kind::Float, tch::Device::Cpu));
        let op = LayerOp::Conv2d { inputs: c as i64, outputs: k as i64, kernel: ksize as i64, stride: stride as i64, padding: pad as i64 };
        let mean_abs = x.abs().mean_dim(0, false, Kind::Float);
        let norm = if l2 { PositionNorm::L2 } else { PositionNorm::L1 };
        let imp = conv_importance(&op, &w, with_bias.then_some(&b), &mean_abs, norm);
        let got = to_vec(&imp);

        let xv = to_vec(&x);
        let wv = to_vec(&w);
        let bv = to_vec(&b);
        let (hp, wp) = (h + 2 * pad, w_img + 2 * pad);
        let xpad = |s: usize, ch: usize, y: usize, xx: usize| -> f64 {
            if y < pad || xx < pad || y >= pad + h || xx >= pad + w_img { 0.0 } else {
                xv[((s * c + ch) * h + (y - pad)) * w_img + (xx - pad)] as f64
            }
        };
        let (ho, wo) = ((hp - ksize) / stride + 1, (wp - ksize) / stride + 1);
        let positions = (ho * wo) as f64;
        let cols = c + usize::from(with_bias);
        prop_assert_eq!(imp.size(), vec![k as i64, cols as i64]);
        for f in 0..k {
            for ch in 0..c {
                let mut agg = 0.0f64;
                for oy in 0..ho {
                    for ox in 0..wo {
                        // batch mean of the sum over the window of |x_pad * w|
                        let mut total = 0.0;
                        for s in 0..n {
                            for dy in 0..ksize {
                                for dx in 0..ksize {
                                    let wt = wv[((f * c + ch) * ksize + dy) * ksize + dx] as f64;
                                    total += (xpad(s, ch, oy * stride + dy, ox * stride + dx) * wt).abs();
                                }
                            }
                        }
                        let v = total / n as f64;
                        agg += if l2 { v * v } else { v };
                    }
                }
                let naive = if l2 { agg.sqrt() } else { agg };
                prop_assert!(close(got[f * cols + ch], naive), "filter {} channel {}: {} vs {}", f, ch, got[f * cols + ch], naive);
            }
            if with_bias {
                let scale = if l2 { positions.sqrt() } else { positions };
                prop_assert!(close(got[f * cols + c], (bv[f] as f64).abs() * scale));
            }
        }
    }

    #[test]
    fn selection_matches_loops(
        (rows, len, data, alpha, paper) in (1usize..5, 1usize..9).prop_flat_map(|(r, l)| {
            // small integers make ties frequent and sums exact
            (Just(r), Just(l), prop::collection::vec(0u8..5, r * l), prop_oneof![Just(0.5f64), Just(0.9), Just(0.95), Just(1.0), 0.05f64..1.0], any::<bool>())
        })
    ) {
        let vals: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        let t = tensor(&vals, &[rows as i64, len as i64]);
        let semantics = if paper { Semantics::Paper } else { Semantics::Reference };
        let keep = select_by_cumulative_share(&t, alpha, semantics);
        let keep = Vec::<bool>::try_from(&keep.flatten(0, -1)).unwrap();
        for r in 0..rows {
            let row = &vals[r * len..(r + 1) * len];
            let total: f32 = row.iter().sum();
            let mut sorted = row.to_vec();
            sorted.sort_by(|a, b| b.partial_cmp(a).unwrap());
            let target = alpha as f32 * total;
            let mut running = 0.0f32;
            let mut p = 0;
            for &s in &sorted {
                running += s;
                if running < target {
                    p += 1;
                }
            }
            for (j, &v) in row.iter().enumerate() {
                let expected = if paper {
                    let threshold = sorted[p.min(len - 1)];
                    v >= threshold && v > 0.0
                } else {
                    let pivot = if p < len - 1 { p + 1 } else { len - 1 };
                    v > sorted[pivot]
                };
                prop_assert_eq!(keep[r * len + j], expected, "row {:?} alpha {} entry {}", row, alpha, j);
            }
        }
    }
}
