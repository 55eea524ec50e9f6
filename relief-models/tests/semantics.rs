//! `paper` semantics: one test per documented fix (relief_core::semantics), each contrasted with
//! `reference` where the two differ.

use relief_core::backward::{backward_prune, BnZeroing};
use relief_core::engine::scoring_statistics;
use relief_core::score::linear_importance;
use relief_core::select::select_by_cumulative_share;
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

fn cfg(semantics: Semantics, alpha_conv: f64, alpha_fc: f64) -> PruneConfig {
    PruneConfig { alpha_conv, alpha_fc, semantics, chunk_size: 7 }
}

fn batch(arch: Arch, n: i64, seed: i64) -> Tensor {
    tch::manual_seed(seed);
    let mut shape = vec![n];
    shape.extend(arch.input_shape());
    Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu))
}

#[test]
fn paper_scores_every_layer_on_one_pre_pruning_pass() {
    let arch = Arch::Lenet5;
    let x = batch(arch, 20, 1).abs();
    for (semantics, passes) in [(Semantics::Paper, 1), (Semantics::Reference, 2)] {
        let model = Model::new(arch, 10, Device::Cpu, 1);
        let params = model.params();
        let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
        // the expected fc1 keep-mask from the PRE-pruning features (before any mask changes)
        let stats = scoring_statistics(&model.graph, &params, &masks, &x, Semantics::Paper, 7).unwrap();
        let fc1 = model.graph.layer_index("classifier.0").unwrap();
        let mean = stats.mean(stats.layers[fc1].input_abs.as_ref().unwrap());
        let imp =
            linear_importance(&params["classifier.0.weight"], Some(&params["classifier.0.bias"]), &mean);
        let expected = select_by_cumulative_share(&imp, 0.95, Semantics::Paper).narrow(1, 0, 800);
        let outcome = prune_step(&model.graph, &params, &mut masks, &x, &cfg(semantics, 0.9, 0.95)).unwrap();
        assert_eq!(outcome.passes, passes, "{semantics}");
        let got = masks.get("classifier.0.weight").unwrap().ne(0.0);
        // rows still alive must equal the pre-pruning selection exactly in paper semantics
        let alive = got.any_dim(1, true);
        let same = got.eq_tensor(&expected.logical_and(&alive)).all().int64_value(&[]) == 1;
        match semantics {
            Semantics::Paper => assert!(same, "paper: fc1 must be scored on pre-pruning features"),
            // the reference scores fc1 on post-pruning conv features, so its mask differs
            Semantics::Reference => assert!(!same, "reference: fc1 scored on post-pruning features"),
        }
    }
}

#[test]
fn paper_applies_the_resnet_stem_mask() {
    let arch = Arch::Resnet(3);
    let x = batch(arch, 6, 2);
    for semantics in [Semantics::Paper, Semantics::Reference] {
        let model = Model::new(arch, 10, Device::Cpu, 2);
        let params = model.params();
        let before = params["conv1.weight"].copy();
        let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
        prune_step(&model.graph, &params, &mut masks, &x, &cfg(semantics, 0.6, 0.99)).unwrap();
        let mask = masks.get("conv1.weight").unwrap();
        assert!(mask.eq(0.0).any().int64_value(&[]) == 1, "alpha 0.6 drops some stem kernels");
        let after = &params["conv1.weight"];
        match semantics {
            Semantics::Paper => {
                assert!(after.equal(&(&before * mask)));
                assert!(!masks.is_inert("conv1.weight"));
            }
            Semantics::Reference => {
                assert!(after.equal(&before), "the reference never applies the stem mask");
                assert!(masks.is_inert("conv1.weight"));
            }
        }
    }
}

#[test]
fn paper_scores_the_residual_through_the_shortcut_mask() {
    let arch = Arch::Resnet(3);
    let model = Model::new(arch, 10, Device::Cpu, 3);
    let params = model.params();
    let masks = MaskSet::ones(&model.graph, Device::Cpu);
    let _ = masks.get("layer1.0.shortcut").unwrap().shallow_clone().get(3).fill_(0.0);
    let x = batch(arch, 4, 3);
    let conv2 = model.graph.layer_index("layer1.0.conv2").unwrap();
    let residual_at = |s: Semantics| {
        let stats = scoring_statistics(&model.graph, &params, &masks, &x, s, 4).unwrap();
        let r = stats.layers[conv2].residual_abs.as_ref().unwrap().get(3);
        r.sum(Kind::Float).double_value(&[])
    };
    assert_eq!(residual_at(Semantics::Paper), 0.0);
    assert!(residual_at(Semantics::Reference) > 0.0);
}

#[test]
fn paper_masks_the_batch_norm_of_removed_filters() {
    let arch = Arch::Resnet(3);
    let x = batch(arch, 6, 4);
    let model = Model::new(arch, 10, Device::Cpu, 4);
    let params = model.params();
    // make channel 5 of layer2.1.bn1 dead on every input
    let _ = tch::no_grad(|| params["layer2.1.bn1.bias"].shallow_clone().get(5).fill_(-1e4));
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    prune_step(&model.graph, &params, &mut masks, &x, &cfg(Semantics::Paper, 0.95, 0.99)).unwrap();
    let mut removed_total = 0;
    for layer in &model.graph.layers {
        let Some(bn) = &layer.batch_norm else { continue };
        let w = masks.get(&layer.weight_name()).unwrap();
        let removed = w.flatten(1, -1).amax([1].as_slice(), false).eq(0.0);
        removed_total += removed.sum(Kind::Int64).int64_value(&[]);
        for s in ["weight", "bias", "running_mean", "running_var"] {
            let t = &params[&format!("{bn}.{s}")];
            let leaked = t.masked_select(&removed).abs().sum(Kind::Float).double_value(&[]);
            assert_eq!(leaked, 0.0, "{bn}.{s} of removed filters must be zero");
        }
        for s in ["weight", "bias"] {
            let m = masks.get(&format!("{bn}.{s}")).expect("paper masks gamma and beta");
            assert!(m.masked_select(&removed).eq(0.0).all().int64_value(&[]) == 1);
        }
    }
    assert!(removed_total >= 1, "the dead channel's filter is removed");
    let dead = masks.get("layer2.1.conv1.weight").unwrap().get(5);
    assert_eq!(dead.sum(Kind::Float).double_value(&[]), 0.0);
}

#[test]
fn paper_masks_only_shrink_across_calls() {
    let arch = Arch::Lenet300_100;
    let model = Model::new(arch, 10, Device::Cpu, 5);
    let params = model.params();
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let c = cfg(Semantics::Paper, 0.9, 0.9);
    prune_step(&model.graph, &params, &mut masks, &batch(arch, 30, 5).abs(), &c).unwrap();
    let first = masks.clone();
    prune_step(&model.graph, &params, &mut masks, &batch(arch, 30, 6).abs(), &c).unwrap();
    let mut shrank = false;
    for (name, m) in masks.iter() {
        let prev = first.get(name).unwrap();
        assert!(m.le_tensor(prev).all().int64_value(&[]) == 1, "{name} grew");
        shrank |= m.sum(Kind::Float).double_value(&[]) < prev.sum(Kind::Float).double_value(&[]);
    }
    assert!(shrank, "a second call at alpha 0.9 removes more");
}

#[test]
fn paper_never_forces_a_drop_when_every_entry_is_needed() {
    // LeNet-5 conv1 has one input channel: a filter's row is {kernel, bias}; the reference
    // always drops the smaller one, the paper keeps both when alpha needs both.
    let arch = Arch::Lenet5;
    let x = batch(arch, 8, 7).abs();
    for semantics in [Semantics::Paper, Semantics::Reference] {
        let model = Model::new(arch, 10, Device::Cpu, 7);
        let params = model.params();
        let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
        prune_step(&model.graph, &params, &mut masks, &x, &cfg(semantics, 1.0, 1.0)).unwrap();
        let w = masks.get("feature_extractor.0.weight").unwrap().amax([1, 2, 3].as_slice(), false);
        let b = masks.get("feature_extractor.0.bias").unwrap();
        let both = (&w * b).sum(Kind::Float).double_value(&[]);
        match semantics {
            Semantics::Reference => assert_eq!(both, 0.0, "reference keeps at most one of kernel and bias"),
            Semantics::Paper => assert!(both > 0.0, "paper keeps both when alpha = 1 needs both"),
        }
    }
}

#[test]
fn backward_pruning_follows_any_flatten_shape() {
    // vgg16-tiny flattens 512 x 2 x 2: channel c of the last conv feeds columns 4c..4c+3.
    let graph = Arch::VggTiny(relief_models::VggConfig::Vgg16).graph(200);
    let mut masks = MaskSet::ones(&graph, Device::Cpu);
    let fc1 = masks.get("classifier.1.weight").unwrap().copy();
    let _ = fc1.narrow(1, 5 * 4, 4).fill_(0.0); // all four columns of channel 5
    let _ = fc1.narrow(1, 6 * 4, 3).fill_(0.0); // three of four columns of channel 6
    masks.set("classifier.1.weight", fc1);
    let mut zeroing = BnZeroing::new(&graph);
    backward_prune(&graph, &mut masks, &mut zeroing, false);
    let last = graph.layers.iter().rfind(|l| l.op.is_conv()).unwrap();
    let rows = masks.get(&last.weight_name()).unwrap().amax([1, 2, 3].as_slice(), false);
    assert_eq!(rows.double_value(&[5]), 0.0);
    assert_eq!(rows.double_value(&[6]), 1.0);
    assert_eq!(masks.get(&last.bias_name().unwrap()).unwrap().double_value(&[5]), 0.0);
    let l = graph.layer_index(&last.name).unwrap();
    let z = zeroing.channels[l].as_ref().unwrap();
    assert!(z.int64_value(&[5]) == 1 && z.int64_value(&[6]) == 0);
}

#[test]
fn backward_pruning_keeps_block_inputs_the_shortcut_still_carries() {
    let graph = Arch::Resnet(3).graph(10);
    let mut masks = MaskSet::ones(&graph, Device::Cpu);
    // layer1.2.conv1 no longer reads channels 2 and 3; the shortcut still carries channel 2.
    let w = masks.get("layer1.2.conv1.weight").unwrap().copy();
    let _ = w.narrow(1, 2, 2).fill_(0.0);
    masks.set("layer1.2.conv1.weight", w);
    let s = masks.get("layer1.2.shortcut").unwrap().copy();
    let _ = s.get(3).fill_(0.0);
    masks.set("layer1.2.shortcut", s);
    let mut zeroing = BnZeroing::new(&graph);
    backward_prune(&graph, &mut masks, &mut zeroing, false);
    // channel 3 of the block input (= layer1.1's output) is unused: layer1.1.conv2 filter 3 goes
    let rows = masks.get("layer1.1.conv2.weight").unwrap().amax([1, 2, 3].as_slice(), false);
    assert_eq!(rows.double_value(&[3]), 0.0);
    assert_eq!(rows.double_value(&[2]), 1.0);
    assert_eq!(masks.get("layer1.1.shortcut").unwrap().double_value(&[3]), 0.0);
}
