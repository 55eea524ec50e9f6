//! Batching end to end on the bundled MNIST sample: sizes, order, preprocessing, validation
//! carve and the authors' pruning batch.

use std::path::Path;

use relief_data::{BatchConfig, Dataset, DatasetKind, Mt19937, SplitKind, ValSize};
use tch::{Device, Kind};

fn sample() -> Dataset {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-sample");
    Dataset::load(DatasetKind::Mnist, &dir).unwrap()
}

#[test]
fn epoch_over_the_sample() {
    let d = sample();
    let b = d.batcher(SplitKind::Train, BatchConfig::new(1000), true).unwrap();
    assert_eq!(b.len(), 9);
    let batches: Vec<_> = b.epoch(0).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(batches.len(), 9);
    assert_eq!(batches[8].0.size(), vec![4, 1, 28, 28]);
    let (x, y) = &batches[0];
    assert_eq!(x.kind(), Kind::Float);
    assert_eq!(y.kind(), Kind::Int64);
    // unshuffled, MNIST: x = raw / 255 in file order (no augmentation for MNIST)
    let want = d.train.images.narrow(0, 0, 1000).to_kind(Kind::Float) / 255.0;
    assert!(x.equal(&want));
    assert!(y.equal(&d.train.labels.narrow(0, 0, 1000)));
    let max = x.max().double_value(&[]);
    assert!(max <= 1.0 && max > 0.9);
}

#[test]
fn validation_split_and_shuffled_training() {
    let d = sample().with_validation(ValSize::Fraction(0.1), 0).unwrap();
    assert_eq!(d.val.as_ref().unwrap().len(), 800);
    assert_eq!(d.train.len(), 7204);
    let b = d.batcher(SplitKind::Train, BatchConfig::shuffled(256, 1), false).unwrap();
    let mut seen = 0;
    let mut hist = vec![0i64; 10];
    for r in b.epoch(0).unwrap() {
        let (x, y) = r.unwrap();
        assert_eq!(x.size()[0], y.size()[0]);
        seen += y.size()[0];
        for l in Vec::<i64>::try_from(&y).unwrap() {
            hist[l as usize] += 1;
        }
    }
    assert_eq!(seen, 7204);
    assert_eq!(hist, d.train.class_histogram(10).unwrap());
}

#[test]
fn pruning_batch_matches_numpy_indices() {
    let d = sample();
    let (x, y) = d.pruning_examples(1000, 0).unwrap();
    assert_eq!(x.size(), vec![1000, 1, 28, 28]);
    // np.random.seed(0); np.random.permutation(8004)[:8]
    let first = [4976i64, 3710, 3954, 5367, 4021, 4276, 7318, 700];
    assert_eq!(Mt19937::new(0).permutation(8004)[..8], first);
    for (i, &src) in first.iter().enumerate() {
        let want = d.train.images.get(src).to_kind(Kind::Float) / 255.0;
        assert!(x.get(i as i64).equal(&want), "example {i}");
        assert_eq!(y.int64_value(&[i as i64]), d.train.labels.int64_value(&[src]));
    }
    let moved = d.to_device(Device::Cpu).unwrap();
    assert!(moved.pruning_examples(1000, 0).unwrap().0.equal(&x));
}
