//! Data pipeline throughput in images/s on CIFAR-shaped synthetic `u8` data (50,000 x 3 x 32 x
//! 32, one tensor on the device): per batch of 128, a shuffled gather from the dataset tensor,
//! `RandomCrop(32, padding=4)` + `RandomHorizontalFlip` (batched, `relief_data::Augment`) and
//! `ToTensor` + `Normalize` to `f32` (`relief_data::Batcher`).
//!
//! Names: `<device>/<what>`:
//! - `cifar_augment_batch128`: one augmented training batch (`Throughput::Elements(128)`);
//! - `cifar_plain_batch128`: one shuffled, normalised batch without augmentation;
//! - `cifar_augment_epoch`: a whole augmented epoch of 50,000 (390 full batches and the tail),
//!   including the epoch's permutation (`Throughput::Elements(50000)`).
//!
//! Compare with `scripts/bench_data_torch.py` (torchvision `DataLoader`, PIL transforms).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use relief_benches::{configure, device_tag, quick, sync};
use relief_data::{Augment, BatchConfig, Batcher, Preprocess, Split};
use tch::{Device, Kind, Tensor};

fn synthetic(n: i64, device: Device) -> Split {
    tch::manual_seed(0);
    Split {
        images: Tensor::randint(256, [n, 3, 32, 32], (Kind::Uint8, Device::Cpu)).to_device(device),
        labels: Tensor::randint(10, [n], (Kind::Int64, Device::Cpu)).to_device(device),
    }
}

fn batcher(split: &Split, augment: bool) -> Batcher {
    let cfg = BatchConfig { batch_size: 128, shuffle: true, drop_last: false, seed: 0 };
    Batcher::new(split, Preprocess::IMAGENET, augment.then_some(Augment::CIFAR), cfg).expect("batcher")
}

fn data(c: &mut Criterion) {
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    let n = if quick() { 1000 } else { 50_000 };
    for device in devices {
        let split = synthetic(n, device);
        let mut group = c.benchmark_group(device_tag(device));
        configure(&mut group);
        group.throughput(Throughput::Elements(128));
        for (name, augment) in [("cifar_augment_batch128", true), ("cifar_plain_batch128", false)] {
            let b = batcher(&split, augment);
            let mut epoch = 0;
            let mut it = b.epoch(epoch).expect("epoch");
            group.bench_function(name, |bench| {
                bench.iter(|| {
                    let batch = match it.next() {
                        Some(batch) => batch,
                        None => {
                            epoch += 1;
                            it = b.epoch(epoch).expect("epoch");
                            it.next().expect("a batch")
                        }
                    };
                    let (x, y) = batch.expect("batch");
                    sync(device);
                    (x, y)
                })
            });
        }
        group.throughput(Throughput::Elements(n as u64));
        let b = batcher(&split, true);
        group.bench_function("cifar_augment_epoch", |bench| {
            bench.iter(|| {
                let mut count = 0;
                for batch in b.epoch(0).expect("epoch") {
                    count += batch.expect("batch").0.size()[0];
                }
                sync(device);
                count
            })
        });
        group.finish();
    }
}

criterion_group!(benches, data);
criterion_main!(benches);
