//! `MagnitudeTarget::PerLayerCount` keeps exactly the requested number of weights per layer: the
//! largest |w| among the still-unmasked ones, ties broken to the lower flat index, checked
//! against a hand-rolled ranking; masked weights stay masked; impossible counts are refused.

use relief_core::magnitude::{magnitude_prune, MagnitudeTarget};
use relief_core::MaskSet;
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.flatten(0, -1).to_kind(Kind::Float)).unwrap()
}

/// The naive selection: the unmasked indices ordered by |w| descending, then index ascending;
/// the first `k` are kept.
fn naive(w: &[f32], mask: &[f32], k: usize) -> Vec<f32> {
    let mut alive: Vec<usize> = (0..w.len()).filter(|&i| mask[i] != 0.0).collect();
    alive.sort_by(|&a, &b| w[b].abs().partial_cmp(&w[a].abs()).unwrap().then(a.cmp(&b)));
    let mut out = vec![0.0; w.len()];
    for &i in alive.iter().take(k) {
        out[i] = 1.0;
    }
    out
}

/// LeNet-5 with weights rounded to a coarse grid, so |w| has many ties (and exact zeros).
fn tied_model(seed: i64) -> Model {
    let model = Model::new(Arch::Lenet5, 10, Device::Cpu, seed);
    tch::no_grad(|| {
        for l in &model.graph.layers {
            let mut w = model.params()[&l.weight_name()].shallow_clone();
            let q = (&w * 20.0).round() / 20.0;
            w.copy_(&q);
        }
    });
    model
}

fn check_against_naive(model: &Model, masks: &mut MaskSet, counts: &[i64]) {
    let names: Vec<String> = model.graph.layers.iter().map(|l| l.weight_name()).collect();
    let weights: Vec<Vec<f32>> = names.iter().map(|n| values(&model.params()[n])).collect();
    let before: Vec<Vec<f32>> = names.iter().map(|n| values(masks.get(n).unwrap())).collect();
    let biases_before: Vec<(i64, i64)> =
        model.graph.layers.iter().filter_map(|l| l.bias_name()).map(|b| masks.kept(&b).unwrap()).collect();
    magnitude_prune(&model.graph, &model.params(), masks, &MagnitudeTarget::PerLayerCount(counts.to_vec()))
        .unwrap();
    for (i, n) in names.iter().enumerate() {
        let got = values(masks.get(n).unwrap());
        let want = naive(&weights[i], &before[i], counts[i] as usize);
        assert_eq!(got, want, "{n}: mask differs from the naive ranking");
        assert_eq!(masks.kept(n).unwrap().0, counts[i], "{n}");
        // masked stay masked
        assert!(got.iter().zip(&before[i]).all(|(g, b)| *g <= *b), "{n}: a masked weight came back");
        // weights are zeroed where masked, untouched elsewhere
        let w = values(&model.params()[n]);
        for ((wv, orig), g) in w.iter().zip(&weights[i]).zip(&got) {
            assert_eq!(*wv, orig * g, "{n}");
        }
    }
    let biases_after: Vec<(i64, i64)> =
        model.graph.layers.iter().filter_map(|l| l.bias_name()).map(|b| masks.kept(&b).unwrap()).collect();
    assert_eq!(biases_before, biases_after, "biases are left alone");
}

#[test]
fn exact_counts_match_a_naive_ranking_with_ties() {
    let model = tied_model(21);
    // The grid really produces ties among the kept/dropped boundary.
    let w0 = values(&model.params()[&model.graph.layers[0].weight_name()]);
    let distinct: std::collections::BTreeSet<u32> = w0.iter().map(|v| v.abs().to_bits()).collect();
    assert!(distinct.len() * 4 < w0.len(), "expected many ties, {} distinct of {}", distinct.len(), w0.len());
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let totals: Vec<i64> =
        model.graph.layers.iter().map(|l| masks.kept(&l.weight_name()).unwrap().1).collect();
    let first: Vec<i64> = totals.iter().enumerate().map(|(i, t)| t * (3 + i as i64) / 10 + 1).collect();
    check_against_naive(&model, &mut masks, &first);
    // A second step from the pruned masks: only removes, again exactly the naive choice; the
    // zeroed weights now tie with each other at 0 but are never revived.
    let second: Vec<i64> = first.iter().map(|k| k / 2).collect();
    check_against_naive(&model, &mut masks, &second);
    // Keeping everything that is left changes nothing; keeping 0 empties the layer.
    let before: Vec<Tensor> =
        model.graph.layers.iter().map(|l| masks.get(&l.weight_name()).unwrap().copy()).collect();
    let mut same = second.clone();
    same[3] = 0;
    check_against_naive(&model, &mut masks, &same);
    for (l, b) in model.graph.layers.iter().zip(&before).take(3) {
        assert!(masks.get(&l.weight_name()).unwrap().equal(b), "{}", l.name);
    }
    assert_eq!(masks.kept(&model.graph.layers[3].weight_name()).unwrap().0, 0);
}

#[test]
fn exact_counts_from_a_random_prior_mask() {
    // Distinct (untied) weights, and a prior mask that is not a magnitude mask: the new mask is
    // the top-k of the live weights only.
    let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 5);
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    tch::manual_seed(9);
    let mut alive = Vec::new();
    for l in &model.graph.layers {
        let n = l.weight_name();
        let m = Tensor::rand(masks.get(&n).unwrap().size().as_slice(), (Kind::Float, Device::Cpu)).gt(0.4);
        masks.set(&n, m);
        alive.push(masks.kept(&n).unwrap().0);
    }
    masks.apply(&model.params());
    let counts: Vec<i64> = alive.iter().map(|a| a / 3).collect();
    check_against_naive(&model, &mut masks, &counts);
}

#[test]
fn impossible_counts_are_refused() {
    let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 6);
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let totals: Vec<i64> =
        model.graph.layers.iter().map(|l| masks.kept(&l.weight_name()).unwrap().1).collect();
    let run = |masks: &mut MaskSet, counts: Vec<i64>| {
        magnitude_prune(&model.graph, &model.params(), masks, &MagnitudeTarget::PerLayerCount(counts))
    };
    assert!(run(&mut masks, vec![1, 2]).is_err(), "wrong number of layers");
    let mut too_many = totals.clone();
    too_many[1] += 1;
    let err = run(&mut masks, too_many).unwrap_err().to_string();
    assert!(err.contains(&model.graph.layers[1].weight_name()), "{err}");
    let mut negative = totals.clone();
    negative[0] = -1;
    assert!(run(&mut masks, negative).is_err());
    // Refusals leave the masks untouched.
    assert_eq!(masks.kept(&model.graph.layers[1].weight_name()).unwrap(), (totals[1], totals[1]));
    // After pruning, a count above what is left is refused (masks only shrink).
    let half: Vec<i64> = totals.iter().map(|t| t / 2).collect();
    run(&mut masks, half.clone()).unwrap();
    let mut regrow = half.clone();
    regrow[2] += 1;
    assert!(run(&mut masks, regrow).is_err());
}
