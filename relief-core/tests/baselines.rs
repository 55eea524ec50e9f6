//! Baselines at an equal budget (`relief_core::baselines`): random scores are seeded,
//! device-independent and uniform; activation scores equal NNrelief's importance computed by a
//! naive loop (linear: |w| mean|x|; conv: per kernel slice, L1 over output positions for the
//! LeNet convention); `keep_counts` keeps exactly the requested counts among unmasked weights;
//! `MagnitudeTarget::GlobalCount` equals a naive global ranking.

use relief_core::baselines::{activation_scores, keep_counts, random_scores};
use relief_core::magnitude::{magnitude_prune, MagnitudeTarget};
use relief_core::{MaskSet, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap()
}

/// Keeps `counts` by the scores with a hand-rolled ranking (descending, ties to lower index).
fn naive_keep(scores: &[f64], mask: &[f64], k: usize) -> Vec<f64> {
    let mut alive: Vec<usize> = (0..scores.len()).filter(|&i| mask[i] != 0.0).collect();
    alive.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap().then(a.cmp(&b)));
    let mut out = vec![0.0; scores.len()];
    for &i in alive.iter().take(k) {
        out[i] = 1.0;
    }
    out
}

fn half_counts(masks: &MaskSet, model: &Model) -> Vec<i64> {
    model.graph.layers.iter().map(|l| masks.kept(&l.weight_name()).unwrap().0 / 2).collect()
}

#[test]
fn random_pruning_is_seeded_exact_and_uniform() {
    let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 0);
    let g = &model.graph;
    let a = random_scores(g, 7, Device::Cpu);
    let b = random_scores(g, 7, Device::Cpu);
    let c = random_scores(g, 8, Device::Cpu);
    for ((x, y), z) in a.iter().zip(&b).zip(&c) {
        assert!(x.1.equal(&y.1), "same seed, same scores");
        assert!(!x.1.equal(&z.1), "another seed, other scores");
        assert_eq!(x.1.kind(), Kind::Double);
        let v = values(&x.1);
        assert!(v.iter().all(|s| (0.0..1.0).contains(s)));
    }
    // Exact counts among the unmasked weights, and every weight of the last layer (10 x 100)
    // kept about equally often over 200 seeds (keep 500 of 1000: 100 +- 7 expected; 6 sd bound).
    let last = g.layers.last().unwrap().weight_name();
    let mut freq = vec![0u32; 1000];
    for seed in 0..200u64 {
        let m = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 0);
        let mut masks = MaskSet::ones(&m.graph, Device::Cpu);
        let counts = half_counts(&masks, &m);
        let scores = random_scores(&m.graph, seed, Device::Cpu);
        keep_counts(&m.graph, &m.params(), &mut masks, &scores, &counts).unwrap();
        for (l, layer) in m.graph.layers.iter().enumerate() {
            assert_eq!(masks.kept(&layer.weight_name()).unwrap().0, counts[l]);
        }
        for (i, v) in values(masks.get(&last).unwrap()).iter().enumerate() {
            freq[i] += *v as u32;
        }
    }
    let (lo, hi) = (freq.iter().min().unwrap(), freq.iter().max().unwrap());
    assert!(*lo >= 58 && *hi <= 142, "kept between {lo} and {hi} times of 200 (expected about 100)");
}

#[test]
fn keep_counts_matches_a_naive_ranking_and_masks_only_shrink() {
    let model = Model::new(Arch::Lenet5, 10, Device::Cpu, 1);
    let g = &model.graph;
    let mut masks = MaskSet::ones(g, Device::Cpu);
    // A first random round, then a second with other scores: masked weights stay masked.
    let first = random_scores(g, 1, Device::Cpu);
    let counts = half_counts(&masks, &model);
    keep_counts(g, &model.params(), &mut masks, &first, &counts).unwrap();
    let before: Vec<Vec<f64>> =
        g.layers.iter().map(|l| values(masks.get(&l.weight_name()).unwrap())).collect();
    let second = random_scores(g, 2, Device::Cpu);
    let counts: Vec<i64> = counts.iter().map(|c| c / 3).collect();
    keep_counts(g, &model.params(), &mut masks, &second, &counts).unwrap();
    for (l, layer) in g.layers.iter().enumerate() {
        let name = layer.weight_name();
        let want = naive_keep(&values(&second[l].1), &before[l], counts[l] as usize);
        assert_eq!(values(masks.get(&name).unwrap()), want, "{name}");
        let w = values(&model.params()[&name]);
        assert!(w.iter().zip(&want).all(|(w, m)| *m == 1.0 || *w == 0.0), "{name}: pruned weights are zero");
    }
    // Impossible counts and mismatched lists are refused, the masks unchanged.
    let snapshot: Vec<Vec<f64>> =
        g.layers.iter().map(|l| values(masks.get(&l.weight_name()).unwrap())).collect();
    let mut too_many = counts.clone();
    too_many[0] += 1;
    let e = keep_counts(g, &model.params(), &mut masks, &second, &too_many).unwrap_err().to_string();
    assert!(e.contains("feature_extractor.0.weight") && e.contains("still unmasked"), "{e}");
    let e = keep_counts(g, &model.params(), &mut masks, &second, &counts[1..]).unwrap_err().to_string();
    assert!(e.contains("keep counts"), "{e}");
    let now: Vec<Vec<f64>> = g.layers.iter().map(|l| values(masks.get(&l.weight_name()).unwrap())).collect();
    assert_eq!(now, snapshot);
}

#[test]
fn activation_scores_equal_nnrelief_importance_by_a_naive_loop() {
    let model = Model::new(Arch::Lenet5, 10, Device::Cpu, 2);
    let g = &model.graph;
    let masks = MaskSet::ones(g, Device::Cpu);
    tch::manual_seed(3);
    let batch = Tensor::rand([12, 1, 28, 28], (Kind::Float, Device::Cpu));
    let scores = activation_scores(g, &model.params(), &masks, &batch, Semantics::Reference, 5).unwrap();
    // First conv (LeNet convention: L1 over output positions), input = the batch itself.
    let w = &model.params()["feature_extractor.0.weight"];
    let (k, kk) = (w.size()[0] as usize, w.size()[2] as usize);
    let wv = values(w);
    let x = values(&batch.abs().mean_dim(0, false, Kind::Double));
    let out = 28 - kk + 1;
    let got = values(&scores[0].1);
    for f in 0..k {
        let mut s = 0.0;
        for p in 0..out {
            for q in 0..out {
                for i in 0..kk {
                    for j in 0..kk {
                        s += wv[(f * kk + i) * kk + j].abs() * x[(p + i) * 28 + q + j];
                    }
                }
            }
        }
        for e in 0..kk * kk {
            let v = got[f * kk * kk + e];
            assert!((v - s).abs() <= 1e-4 * s.abs(), "filter {f}: {v} vs naive {s}");
        }
    }
    // A linear layer: LeNet-300-100's first, whose input is the batch itself: |w| * mean|x|.
    let mlp = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 2);
    let masks = MaskSet::ones(&mlp.graph, Device::Cpu);
    let scores = activation_scores(&mlp.graph, &mlp.params(), &masks, &batch, Semantics::Paper, 7).unwrap();
    let name = mlp.graph.layers[0].weight_name();
    let xin = values(&batch.reshape([12, 784]).abs().mean_dim(0, false, Kind::Double));
    let wv = values(&mlp.params()[&name]);
    let got = values(&scores[0].1);
    for o in 0..300 {
        for i in 0..784 {
            let want = wv[o * 784 + i].abs() * xin[i];
            assert!((got[o * 784 + i] - want).abs() <= 1e-5 * want.abs().max(1e-6), "{name}[{o},{i}]");
        }
    }
}

#[test]
fn global_count_equals_a_naive_global_ranking() {
    let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 4);
    let g = &model.graph;
    let mut masks = MaskSet::ones(g, Device::Cpu);
    magnitude_prune(g, &model.params(), &mut masks, &MagnitudeTarget::Global(0.5)).unwrap();
    let names: Vec<String> = g.layers.iter().map(|l| l.weight_name()).collect();
    let w: Vec<f64> = names.iter().flat_map(|n| values(&model.params()[n])).map(f64::abs).collect();
    let m: Vec<f64> = names.iter().flat_map(|n| values(masks.get(n).unwrap())).collect();
    let k = 12_345;
    magnitude_prune(g, &model.params(), &mut masks, &MagnitudeTarget::GlobalCount(k)).unwrap();
    let got: Vec<f64> = names.iter().flat_map(|n| values(masks.get(n).unwrap())).collect();
    assert_eq!(got, naive_keep(&w, &m, k as usize));
    let e =
        magnitude_prune(g, &model.params(), &mut masks, &MagnitudeTarget::GlobalCount(k + 1)).unwrap_err();
    assert!(e.to_string().contains("still unmasked"), "{e}");
}
