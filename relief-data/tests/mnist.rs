//! MNIST: the bundled real sample, files of any count, and every error naming its file.

mod common;

use std::path::{Path, PathBuf};

use relief_data::{DataError, Dataset, DatasetKind, Mnist, Preprocess};
use tch::Kind;

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-sample")
}

#[test]
fn bundled_sample_loads() {
    let m = Mnist::load(&sample_dir()).unwrap();
    assert_eq!(m.train.images.size(), vec![8004, 1, 28, 28]);
    assert_eq!(m.train.labels.size(), vec![8004]);
    assert_eq!(m.test.images.size(), vec![1996, 1, 28, 28]);
    assert_eq!(m.train.images.kind(), Kind::Uint8);
    assert_eq!(m.test.labels.kind(), Kind::Int64);
    let d = Dataset::load(DatasetKind::Mnist, &sample_dir()).unwrap();
    d.validate().unwrap();
    assert_eq!(d.preprocess, Preprocess::Scale);
    assert!(d.augment.is_none());
    // Class counts of the sample (split per class, one fifth of each class in the test split).
    let h_train = d.train.class_histogram(10).unwrap();
    let h_test = d.test.class_histogram(10).unwrap();
    assert_eq!(h_train, vec![801, 902, 793, 826, 784, 691, 812, 856, 756, 783]);
    assert_eq!(h_test, vec![200, 225, 198, 206, 196, 172, 202, 214, 188, 195]);
    // Real digits: mostly background with some ink.
    let mean = d.train.images.to_kind(Kind::Float).mean(Kind::Float).double_value(&[]);
    assert!(mean > 20.0 && mean < 50.0, "{mean}");
}

#[test]
fn raw_and_gz_of_any_count() {
    for (gzip, n) in [(false, 3), (true, 17)] {
        let d = tempfile::tempdir().unwrap();
        common::write_mnist(d.path(), n, 2, gzip);
        let m = Mnist::load(d.path()).unwrap();
        assert_eq!(m.train.images.size(), vec![n as i64, 1, 28, 28]);
        assert_eq!(m.test.labels.size(), vec![2]);
        assert_eq!(m.train.images.int64_value(&[1, 0, 0, 3]), 10);
    }
}

fn err(dir: &Path) -> DataError {
    Mnist::load(dir).unwrap_err()
}

#[test]
fn missing_file_names_it() {
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 3, 2, true);
    std::fs::remove_file(d.path().join("t10k-labels-idx1-ubyte.gz")).unwrap();
    let e = err(d.path());
    assert!(matches!(e, DataError::Missing { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
    assert!(
        msg.contains("expected MNIST IDX file t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"),
        "{msg}"
    );
}

#[test]
fn missing_and_empty_directories() {
    let d = tempfile::tempdir().unwrap();
    let e = err(d.path());
    assert!(matches!(e, DataError::EmptyDir { .. }), "{e}");
    assert!(e.to_string().contains("directory is empty; expected MNIST IDX files"));
    let e = err(&d.path().join("nope"));
    assert!(matches!(e, DataError::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope"));
}

#[test]
fn wrong_magic_number() {
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 3, 2, false);
    // labels where images belong
    std::fs::write(d.path().join("train-images-idx3-ubyte"), common::idx_labels(&[1; 40])).unwrap();
    let msg = err(d.path()).to_string();
    assert!(msg.contains("train-images-idx3-ubyte: wrong magic number 2049, expected 2051"), "{msg}");
}

#[test]
fn truncated_file() {
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 3, 2, false);
    let p = d.path().join("train-images-idx3-ubyte");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 100]).unwrap();
    let msg = err(d.path()).to_string();
    assert!(msg.contains("train-images-idx3-ubyte: truncated: header says 3 images (2352 bytes"), "{msg}");
    // a gzip stream cut short
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 3, 2, true);
    let p = d.path().join("t10k-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 2]).unwrap();
    let msg = err(d.path()).to_string();
    assert!(msg.contains("t10k-images-idx3-ubyte.gz: corrupt or truncated gzip stream"), "{msg}");
}

#[test]
fn header_label_count_mismatch() {
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 3, 2, false);
    std::fs::write(d.path().join("train-labels-idx1-ubyte"), common::idx_labels(&[1, 2])).unwrap();
    let msg = err(d.path()).to_string();
    assert!(msg.contains("train-labels-idx1-ubyte: count mismatch: 2 labels for 3 images"), "{msg}");
}

#[test]
fn label_out_of_range() {
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 3, 2, false);
    std::fs::write(d.path().join("t10k-labels-idx1-ubyte"), common::idx_labels(&[1, 12])).unwrap();
    let msg = err(d.path()).to_string();
    assert!(msg.contains("t10k-labels-idx1-ubyte: label 12 at index 1 is out of range 0..10"), "{msg}");
}

#[test]
fn image_of_the_wrong_size() {
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 3, 2, false);
    std::fs::write(d.path().join("train-images-idx3-ubyte"), common::idx_images(3, 32, 32)).unwrap();
    let msg = err(d.path()).to_string();
    assert!(msg.contains("train-images-idx3-ubyte: images are 32x32, expected 28x28"), "{msg}");
}
