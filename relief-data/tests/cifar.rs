//! CIFAR-10/100 binary loaders: both directory layouts, file order, channels-first pixels,
//! fine/coarse labels, and errors naming the file.

mod common;

use relief_data::{load_cifar10, load_cifar100, Cifar100Labels, DataError, Dataset, DatasetKind};
use tch::Kind;

#[test]
fn cifar10_flat_and_nested_layouts() {
    let flat = tempfile::tempdir().unwrap();
    common::write_cifar10(flat.path(), 4);
    let nested = tempfile::tempdir().unwrap();
    common::write_cifar10(&nested.path().join("cifar-10-batches-bin"), 4);
    for dir in [flat.path(), nested.path()] {
        let d = load_cifar10(dir).unwrap();
        assert_eq!(d.train.images.size(), vec![20, 3, 32, 32]);
        assert_eq!(d.test.images.size(), vec![4, 3, 32, 32]);
        assert_eq!(d.train.images.kind(), Kind::Uint8);
        assert_eq!(d.classes, 10);
        // data_batch_1..5 in order, then test_batch: seeds 0..20 and 20..24
        let labels = Vec::<i64>::try_from(&d.train.labels).unwrap();
        assert_eq!(labels, (0..20).map(|i| i % 10).collect::<Vec<_>>());
        assert_eq!(Vec::<i64>::try_from(&d.test.labels).unwrap(), vec![0, 1, 2, 3]);
        // channels first: pixel 0 of channel c is c, the rest (seed*3 + c) % 256
        assert_eq!(d.train.images.int64_value(&[7, 2, 0, 0]), 2);
        assert_eq!(d.train.images.int64_value(&[7, 1, 5, 9]), 22);
        assert_eq!(d.test.images.int64_value(&[1, 0, 31, 31]), 63);
        d.validate().unwrap();
    }
}

#[test]
fn cifar100_fine_by_default_coarse_selectable() {
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar100(&dir.path().join("cifar-100-binary"), 130, 7);
    let fine = Dataset::load(DatasetKind::Cifar100, dir.path()).unwrap();
    assert_eq!((fine.classes, fine.train.len(), fine.test.len()), (100, 130, 7));
    assert_eq!(fine.train.labels.int64_value(&[123]), 23);
    let coarse = load_cifar100(dir.path(), Cifar100Labels::Coarse).unwrap();
    assert_eq!(coarse.classes, 20);
    assert_eq!(coarse.train.labels.int64_value(&[123]), 3);
    assert!(coarse.name.contains("coarse"));
    assert!(coarse.train.images.equal(&fine.train.images));
    coarse.validate().unwrap();
}

#[test]
fn missing_file_is_named_with_the_expected_set() {
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar10(&dir.path().join("cifar-10-batches-bin"), 2);
    std::fs::remove_file(dir.path().join("cifar-10-batches-bin/data_batch_4.bin")).unwrap();
    let e = load_cifar10(dir.path()).unwrap_err();
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("cifar-10-batches-bin/data_batch_4.bin: missing file; expected CIFAR-10 binary"),
        "{msg}"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hi").unwrap();
    let msg = load_cifar100(dir.path(), Cifar100Labels::Fine).unwrap_err().to_string();
    assert!(msg.contains("train.bin: missing file; expected CIFAR-100 binary files"), "{msg}");
}

#[test]
fn empty_directory() {
    let dir = tempfile::tempdir().unwrap();
    let e = load_cifar10(dir.path()).unwrap_err();
    assert!(matches!(e, DataError::EmptyDir { .. }), "{e}");
    assert!(e.to_string().contains("directory is empty; expected CIFAR-10 binary files"));
}

#[test]
fn truncated_batch() {
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar10(dir.path(), 2);
    let p = dir.path().join("data_batch_3.bin");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..3073 + 1000]).unwrap();
    let msg = load_cifar10(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("data_batch_3.bin: truncated: 4073 bytes is not a whole number of 3073-byte records (1 complete, 1000 bytes left over)"),
        "{msg}"
    );
}

#[test]
fn label_out_of_range_in_each_format() {
    let dir = tempfile::tempdir().unwrap();
    common::write_cifar10(dir.path(), 2);
    let mut bytes = common::cifar_record(&[0], 0);
    bytes.extend(common::cifar_record(&[10], 1));
    std::fs::write(dir.path().join("test_batch.bin"), bytes).unwrap();
    let msg = load_cifar10(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("test_batch.bin: label 10 of record 1 is out of range 0..10"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    common::write_cifar100(dir.path(), 3, 3);
    std::fs::write(dir.path().join("train.bin"), common::cifar_record(&[20, 5], 0)).unwrap();
    assert!(load_cifar100(dir.path(), Cifar100Labels::Fine).is_ok());
    let msg = load_cifar100(dir.path(), Cifar100Labels::Coarse).unwrap_err().to_string();
    assert!(msg.contains("train.bin: label 20 of record 0 is out of range 0..20"), "{msg}");
}
