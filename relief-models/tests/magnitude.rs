//! The magnitude baseline keeps exactly the largest |w|, per layer or globally, monotonically.

use relief_core::magnitude::{magnitude_prune, MagnitudeTarget};
use relief_core::MaskSet;
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

fn kept_and_dropped(w: &Tensor, m: &Tensor) -> (Tensor, Tensor) {
    let a = w.abs();
    (a.masked_select(&m.ne(0.0)), a.masked_select(&m.eq(0.0)))
}

#[test]
fn per_layer_keeps_the_largest_weights_at_each_fraction() {
    let model = Model::new(Arch::Lenet5, 10, Device::Cpu, 11);
    let originals: Vec<Tensor> =
        model.graph.layers.iter().map(|l| model.params()[&l.weight_name()].copy()).collect();
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let fractions = vec![0.5, 0.25, 0.1, 0.3];
    magnitude_prune(&model.graph, &model.params(), &mut masks, &MagnitudeTarget::PerLayer(fractions.clone()))
        .unwrap();
    for ((layer, f), w) in model.graph.layers.iter().zip(&fractions).zip(&originals) {
        let m = masks.get(&layer.weight_name()).unwrap();
        let kept = m.sum(Kind::Float).double_value(&[]) as i64;
        assert_eq!(kept, (f * w.numel() as f64).round() as i64, "{}", layer.name);
        let (k, d) = kept_and_dropped(w, m);
        assert!(k.min().double_value(&[]) >= d.max().double_value(&[]), "{}", layer.name);
        // weights are zeroed where masked, untouched elsewhere
        assert!(model.params()[&layer.weight_name()].equal(&(w * m)));
        // biases are left alone
        assert_eq!(masks.kept(&layer.bias_name().unwrap()).unwrap().0, layer.op.outputs());
    }
    // a second call only removes more
    let before = masks.clone();
    magnitude_prune(&model.graph, &model.params(), &mut masks, &MagnitudeTarget::PerLayer(vec![0.5; 4]))
        .unwrap();
    for (name, m) in masks.iter() {
        assert!(m.le_tensor(before.get(name).unwrap()).all().int64_value(&[]) == 1, "{name}");
    }
}

#[test]
fn global_ranks_all_layers_together() {
    let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 12);
    let names: Vec<String> = model.graph.layers.iter().map(|l| l.weight_name()).collect();
    let all =
        Tensor::cat(&names.iter().map(|n| model.params()[n].abs().flatten(0, -1)).collect::<Vec<_>>(), 0);
    let originals: Vec<Tensor> = names.iter().map(|n| model.params()[n].copy()).collect();
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    magnitude_prune(&model.graph, &model.params(), &mut masks, &MagnitudeTarget::Global(0.2)).unwrap();
    let m_all =
        Tensor::cat(&names.iter().map(|n| masks.get(n).unwrap().flatten(0, -1)).collect::<Vec<_>>(), 0);
    let kept = m_all.sum(Kind::Float).double_value(&[]) as i64;
    assert_eq!(kept, (0.2 * all.numel() as f64).round() as i64);
    let (k, d) = kept_and_dropped(&all, &m_all);
    assert!(k.min().double_value(&[]) >= d.max().double_value(&[]));
    // layers end up with different fractions (the output layer's weights are larger)
    let fr: Vec<f64> =
        names.iter().map(|n| masks.get(n).unwrap().mean(Kind::Float).double_value(&[])).collect();
    assert!(fr[2] > fr[0], "{fr:?}");
    for (n, w) in names.iter().zip(&originals) {
        assert!(model.params()[n].equal(&(w * masks.get(n).unwrap())));
    }
    assert!(
        magnitude_prune(&model.graph, &model.params(), &mut masks, &MagnitudeTarget::Global(1.5)).is_err()
    );
}
