//! User datasets: tensors in safetensors files and IDX directories, written here from the
//! bundled MNIST sample; every bad input refused with the file and tensor named.

use std::path::{Path, PathBuf};

use relief_data::{inspect, DataInfo, Dataset, DatasetKind, Mnist, Preprocess, UserOptions};
use tch::{Device, Kind, Tensor};

/// Tensors by name, as written to a file.
type Named = Vec<(&'static str, Tensor)>;

fn sample_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-sample")
}

fn write(path: &Path, tensors: &[(&str, &Tensor)]) {
    let owned: Vec<(&str, Tensor)> = tensors.iter().map(|(n, t)| (*n, t.contiguous())).collect();
    Tensor::write_safetensors(&owned, path).unwrap();
}

/// The MNIST sample, first `n` training and test examples.
fn mnist(n: i64) -> (Tensor, Tensor, Tensor, Tensor) {
    let m = Mnist::load(&sample_dir()).unwrap();
    (
        m.train.images.narrow(0, 0, n),
        m.train.labels.narrow(0, 0, n),
        m.test.images.narrow(0, 0, n),
        m.test.labels.narrow(0, 0, n),
    )
}

fn err(kind: DatasetKind, dir: &Path, options: &UserOptions) -> String {
    Dataset::load_with(kind, dir, options).unwrap_err().to_string()
}

#[test]
fn tensors_from_the_mnist_sample_load_to_the_same_images_and_labels() {
    let (xtr, ytr, xte, yte) = mnist(1000);
    let tmp = tempfile::tempdir().unwrap();
    write(&tmp.path().join("train.safetensors"), &[("x", &xtr), ("y", &ytr)]);
    write(&tmp.path().join("test.safetensors"), &[("x", &xte), ("y", &yte.to_kind(Kind::Int))]);
    let opts = UserOptions::default();
    assert_eq!(
        inspect(DatasetKind::Tensors, tmp.path(), &opts).unwrap(),
        DataInfo { shape: vec![1, 28, 28], classes: 10 }
    );
    let d = Dataset::load_with(DatasetKind::Tensors, tmp.path(), &opts).unwrap();
    assert_eq!(
        (d.classes, d.preprocess, d.example_shape.clone()),
        (10, Preprocess::Identity, vec![1, 28, 28])
    );
    let n = d.normalization.clone().unwrap();
    // the default statistics are the training split's
    let scaled = xtr.to_kind(Kind::Double) / 255.0;
    let (mean, std) = (scaled.mean(Kind::Double).double_value(&[]), scaled.std(false).double_value(&[]));
    assert!((n.mean[0] - mean).abs() < 1e-9 && (n.std[0] - std).abs() < 1e-9, "{n:?} vs {mean} {std}");
    // images: (x / 255 - mean) / std, labels unchanged
    let want = (xte.to_kind(Kind::Float) / 255.0 - n.mean[0]) / n.std[0];
    let diff = (&d.test.images - &want).abs().max().double_value(&[]);
    assert!(diff < 1e-5, "max difference {diff}");
    assert!(d.test.labels.equal(&yte));
    assert!(d.train.labels.equal(&ytr));
    // given mean 0 / std 1 the images are exactly x / 255
    let plain = UserOptions { mean: Some(vec![0.0]), std: Some(vec![1.0]), ..UserOptions::default() };
    let d = Dataset::load_with(DatasetKind::Tensors, tmp.path(), &plain).unwrap();
    assert!(d.train.images.equal(&(xtr.to_kind(Kind::Float) / 255.0)));
    // batches come out as stored
    let b = d.batcher(relief_data::SplitKind::Test, relief_data::BatchConfig::new(64), true).unwrap();
    let (x, y) = b.epoch(0).unwrap().next().unwrap().unwrap();
    assert_eq!((x.size(), x.kind(), y.size()), (vec![64, 1, 28, 28], Kind::Float, vec![64]));
    let (px, _) = d.pruning_examples(10, 0).unwrap();
    assert_eq!(px.size(), vec![10, 1, 28, 28]);
}

#[test]
fn one_file_layout_float_features_and_num_classes() {
    let (xtr, ytr, xte, yte) = mnist(300);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("all.safetensors");
    let f = |x: &Tensor| x.to_kind(Kind::Float).view([-1, 784]) / 255.0;
    write(
        &file,
        &[
            ("train_x", &f(&xtr)),
            ("train_y", &ytr.to_kind(Kind::Uint8)),
            ("test_x", &f(&xte)),
            ("test_y", &yte),
        ],
    );
    let info = inspect(DatasetKind::Tensors, &file, &UserOptions::default()).unwrap();
    assert_eq!(info, DataInfo { shape: vec![784], classes: 10 });
    let d = Dataset::load_with(DatasetKind::Tensors, &file, &UserOptions::default()).unwrap();
    // float data is taken as given
    assert!(d.normalization.is_none());
    assert_eq!(d.train.images.size(), vec![300, 784, 1, 1]);
    assert!(d.train.images.view([-1, 784]).equal(&f(&xtr)));
    assert_eq!(d.example_shape, vec![784]);
    let o = UserOptions { num_classes: Some(12), ..UserOptions::default() };
    assert_eq!(inspect(DatasetKind::Tensors, &file, &o).unwrap().classes, 12);
    assert_eq!(Dataset::load_with(DatasetKind::Tensors, &file, &o).unwrap().classes, 12);
    // a mean/std on float data is applied
    let o = UserOptions { mean: Some(vec![0.5]), std: Some(vec![0.25]), ..UserOptions::default() };
    let d = Dataset::load_with(DatasetKind::Tensors, &file, &o).unwrap();
    assert!(d.test.images.view([-1, 784]).allclose(&((f(&xte) - 0.5) / 0.25), 1e-6, 1e-6, false));
}

#[test]
fn bad_tensors_are_refused_naming_the_file_and_tensor() {
    let (xtr, ytr, xte, yte) = mnist(50);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (train, test) = (dir.join("train.safetensors"), dir.join("test.safetensors"));
    let opts = UserOptions::default();
    let good_test = || write(&test, &[("x", &xte), ("y", &yte)]);
    good_test();
    let neg = ytr.copy();
    let _ = neg.get(4).fill_(-1);
    let cases: Vec<(&str, Named, &str)> = vec![
        (
            "length mismatch",
            vec![("x", xtr.shallow_clone()), ("y", ytr.narrow(0, 0, 40))],
            "tensor `y` has 40 labels but `x` has 50 examples",
        ),
        (
            "negative label",
            vec![("x", xtr.shallow_clone()), ("y", neg.shallow_clone())],
            "label -1 at index 4 is negative",
        ),
        ("missing y", vec![("x", xtr.shallow_clone())], "missing tensor `y`"),
        (
            "missing x",
            vec![("images", xtr.shallow_clone()), ("y", ytr.shallow_clone())],
            "missing tensor `x`",
        ),
        (
            "x dtype",
            vec![("x", xtr.to_kind(Kind::Double)), ("y", ytr.shallow_clone())],
            "tensor `x` has dtype F64, expected U8 (images) or F32",
        ),
        (
            "y dtype",
            vec![("x", xtr.shallow_clone()), ("y", ytr.to_kind(Kind::Float))],
            "tensor `y` has dtype F32, expected integer labels",
        ),
        (
            "x rank",
            vec![("x", xtr.view([50, 28, 28])), ("y", ytr.shallow_clone())],
            "expected N x C x H x W images or N x F",
        ),
    ];
    for (what, tensors, want) in cases {
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        write(&train, &refs);
        let e = err(DatasetKind::Tensors, dir, &opts);
        assert!(e.contains(&train.display().to_string()) && e.contains(want), "{what}: {e}");
        let e = inspect(DatasetKind::Tensors, dir, &opts).unwrap_err().to_string();
        assert!(e.contains(want), "{what} (inspect): {e}");
    }
    // a label >= num_classes
    let y = ytr.copy();
    let _ = y.get(7).fill_(10);
    write(&train, &[("x", &xtr), ("y", &y)]);
    let o = UserOptions { num_classes: Some(10), ..UserOptions::default() };
    let e = err(DatasetKind::Tensors, dir, &o);
    assert!(
        e.contains("label 10 at index 7 is out of range 0..10") && e.contains("train.safetensors"),
        "{e}"
    );
    // NaN in float x
    let x = xtr.to_kind(Kind::Float);
    let _ = x.get(3).get(0).get(5).get(5).fill_(f64::NAN);
    write(&train, &[("x", &x), ("y", &ytr)]);
    write(&test, &[("x", &xte.to_kind(Kind::Float)), ("y", &yte)]);
    let e = err(DatasetKind::Tensors, dir, &opts);
    assert!(
        e.contains("tensor `x` holds NaN or infinite values (first at example 3)")
            && e.contains("train.safetensors"),
        "{e}"
    );
    // test shape differs from train
    write(&train, &[("x", &xtr), ("y", &ytr)]);
    write(&test, &[("x", &xte.narrow(3, 0, 20)), ("y", &yte)]);
    let e = err(DatasetKind::Tensors, dir, &opts);
    assert!(
        e.contains("test.safetensors")
            && e.contains("test x is [1, 28, 20] U8 per example but train x is [1, 28, 28] U8"),
        "{e}"
    );
    // a missing split file; a file that is not safetensors
    std::fs::remove_file(&test).unwrap();
    let e = err(DatasetKind::Tensors, dir, &opts);
    assert!(e.contains("test.safetensors: missing file"), "{e}");
    std::fs::write(&test, b"not a safetensors file").unwrap();
    let e = err(DatasetKind::Tensors, dir, &opts);
    assert!(e.contains("test.safetensors: not a readable safetensors file"), "{e}");
    // a truncated file
    good_test();
    let bytes = std::fs::read(&test).unwrap();
    std::fs::write(&test, &bytes[..bytes.len() - 100]).unwrap();
    let e = err(DatasetKind::Tensors, dir, &opts);
    assert!(e.contains("test.safetensors: tensor `") && e.contains("file truncated or corrupt"), "{e}");
    // the one-file layout names the prefixed tensors
    let file = dir.join("one.safetensors");
    write(&file, &[("train_x", &xtr), ("train_y", &ytr), ("test_x", &xte)]);
    let e = err(DatasetKind::Tensors, &file, &opts);
    assert!(e.contains("one.safetensors") && e.contains("missing tensor `test_y`"), "{e}");
    // a mean with the wrong number of values
    good_test();
    let o = UserOptions { mean: Some(vec![0.1, 0.2]), ..UserOptions::default() };
    let e = err(DatasetKind::Tensors, dir, &o);
    assert!(e.contains("data.mean has 2 values, expected 1 or 1"), "{e}");
}

#[test]
fn idx_directory_gets_its_shape_classes_and_statistics_from_the_data() {
    let info = inspect(DatasetKind::Idx, &sample_dir(), &UserOptions::default()).unwrap();
    assert_eq!(info, DataInfo { shape: vec![1, 28, 28], classes: 10 });
    let d = Dataset::load_with(DatasetKind::Idx, &sample_dir(), &UserOptions::default()).unwrap();
    let m = Dataset::load(DatasetKind::Mnist, &sample_dir()).unwrap();
    let n = d.normalization.clone().unwrap();
    assert!((n.mean[0] - 0.13).abs() < 0.01 && (n.std[0] - 0.31).abs() < 0.01, "{n:?}");
    let want = (m.test.images.to_kind(Kind::Float) / 255.0 - n.mean[0]) / n.std[0];
    assert!((&d.test.images - want).abs().max().double_value(&[]) < 1e-5);
    assert!(d.train.labels.equal(&m.train.labels));
    assert_eq!(d.classes, 10);
    // num_classes below a label is refused naming the label file
    let o = UserOptions { num_classes: Some(5), ..UserOptions::default() };
    let e = Dataset::load_with(DatasetKind::Idx, &sample_dir(), &o).unwrap_err().to_string();
    assert!(e.contains("train-labels-idx1-ubyte") && e.contains("out of range 0..5"), "{e}");
    // an empty directory
    let tmp = tempfile::tempdir().unwrap();
    let e = inspect(DatasetKind::Idx, tmp.path(), &UserOptions::default()).unwrap_err().to_string();
    assert!(e.contains("directory is empty"), "{e}");
}

#[test]
fn fashion_mnist_if_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        assert!(std::env::var_os("RELIEF_REQUIRE_FASHION").is_none(), "{} is missing", dir.display());
        println!("skipped: {} not installed (apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let info = inspect(DatasetKind::FashionMnist, dir, &UserOptions::default()).unwrap();
    assert_eq!(info, DataInfo { shape: vec![1, 28, 28], classes: 10 });
    let d = Dataset::load(DatasetKind::FashionMnist, dir).unwrap().to_device(Device::Cpu).unwrap();
    assert_eq!((d.train.len(), d.test.len(), d.classes), (60000, 10000, 10));
    let n = d.normalization.clone().unwrap();
    assert_eq!((n.mean.clone(), n.std.clone()), (vec![0.2860], vec![0.3530]));
    // the standard statistics are those of the training split
    let m = d.train.images.mean(Kind::Double).double_value(&[]);
    assert!(m.abs() < 0.01, "normalised mean {m}");
}

/// Writes the first `n` examples of each MNIST split as grey PNGs into
/// `root/train/<digit>/<index>.png` and `root/test/<digit>/<index>.png`.
fn mnist_pngs(root: &Path, n: i64) -> (Tensor, Tensor, Tensor, Tensor) {
    let (xtr, ytr, xte, yte) = mnist(n);
    for (split, x, y) in [("train", &xtr, &ytr), ("test", &xte, &yte)] {
        for i in 0..n {
            let label = y.int64_value(&[i]);
            let dir = root.join(split).join(label.to_string());
            std::fs::create_dir_all(&dir).unwrap();
            let px = Vec::<u8>::try_from(x.get(i).reshape([-1])).unwrap();
            image::GrayImage::from_raw(28, 28, px).unwrap().save(dir.join(format!("{i:05}.png"))).unwrap();
        }
    }
    (xtr, ytr, xte, yte)
}

/// `x`, `y` reordered by (label, index): the order of an image folder named by index.
fn by_class(x: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
    let labels = Vec::<i64>::try_from(y).unwrap();
    let mut order: Vec<i64> = (0..labels.len() as i64).collect();
    order.sort_by_key(|&i| (labels[i as usize], i));
    let idx = Tensor::from_slice(&order);
    (x.index_select(0, &idx), y.index_select(0, &idx))
}

#[test]
fn image_folder_of_mnist_pngs_loads_to_the_idx_images_and_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let (xtr, ytr, xte, yte) = mnist_pngs(tmp.path(), 300);
    let plain = UserOptions { mean: Some(vec![0.0]), std: Some(vec![1.0]), ..UserOptions::default() };
    let info = inspect(DatasetKind::ImageFolder, tmp.path(), &plain).unwrap();
    assert_eq!(info, DataInfo { shape: vec![1, 28, 28], classes: 10 });
    let d = Dataset::load_with(DatasetKind::ImageFolder, tmp.path(), &plain).unwrap();
    assert_eq!(d.class_names, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    for (split, x, y) in [(&d.train, &xtr, &ytr), (&d.test, &xte, &yte)] {
        let (wx, wy) = by_class(x, y);
        assert!(split.labels.equal(&wy));
        assert!(split.images.equal(&(wx.to_kind(Kind::Float) / 255.0)));
    }
    // forced to 3 channels: grey replicated; resized to 14 x 14
    let o = UserOptions { channels: Some(3), image_size: Some([14, 14]), ..plain.clone() };
    let d = Dataset::load_with(DatasetKind::ImageFolder, tmp.path(), &o).unwrap();
    assert_eq!(d.train.images.size(), vec![300, 3, 14, 14]);
    assert!(d.train.images.select(1, 0).equal(&d.train.images.select(1, 2)));
    // val/ instead of test/
    std::fs::rename(tmp.path().join("test"), tmp.path().join("val")).unwrap();
    assert_eq!(Dataset::load_with(DatasetKind::ImageFolder, tmp.path(), &plain).unwrap().test.len(), 300);
}

#[test]
fn image_folder_problems_are_refused_naming_the_folder_or_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let opts = UserOptions::default();
    let e = |o: &UserOptions| Dataset::load_with(DatasetKind::ImageFolder, root, o).unwrap_err().to_string();
    assert!(e(&opts).contains("train: missing file"), "{}", e(&opts));
    let img = |path: &Path, w: u32, h: u32| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 30])).save(path).unwrap();
    };
    img(&root.join("train/cat/a.png"), 8, 8);
    img(&root.join("train/dog/b.jpg"), 8, 8);
    img(&root.join("test/cat/c.bmp"), 8, 8);
    // a class of train missing in test
    let msg = e(&opts);
    assert!(msg.contains("test/dog") && msg.contains("class \"dog\""), "{msg}");
    // an empty class folder
    std::fs::create_dir_all(root.join("test/dog")).unwrap();
    let msg = e(&opts);
    assert!(msg.contains("test/dog: directory is empty") && msg.contains("images of class \"dog\""), "{msg}");
    // mixed sizes name two files; image_size resolves them
    img(&root.join("test/dog/d.png"), 10, 6);
    let msg = e(&opts);
    assert!(msg.contains("train/cat/a.png is 8x8") && msg.contains("test/dog/d.png is 10x6"), "{msg}");
    let o = UserOptions { image_size: Some([4, 4]), ..opts.clone() };
    let d = Dataset::load_with(DatasetKind::ImageFolder, root, &o).unwrap();
    assert_eq!((d.train.images.size(), d.classes), (vec![2, 3, 4, 4], 2));
    assert_eq!(d.class_names, vec!["cat".to_string(), "dog".to_string()]);
    // colour to grey with PIL's weights
    let o = UserOptions {
        channels: Some(1),
        image_size: Some([4, 4]),
        mean: Some(vec![0.0]),
        std: Some(vec![1.0]),
        ..opts.clone()
    };
    let d = Dataset::load_with(DatasetKind::ImageFolder, root, &o).unwrap();
    let want = ((10 * 19595 + 200 * 38470 + 30 * 7471 + 0x8000) >> 16) as f64 / 255.0;
    assert!((d.train.images.double_value(&[0, 0, 0, 0]) - want).abs() < 1e-6);
    // an unreadable image
    std::fs::write(root.join("train/cat/broken.png"), b"not a png").unwrap();
    let msg = e(&o);
    assert!(msg.contains("broken.png: unreadable image"), "{msg}");
    std::fs::remove_file(root.join("train/cat/broken.png")).unwrap();
    // a class only in test
    img(&root.join("test/eel/e.png"), 8, 8);
    let msg = e(&o);
    assert!(msg.contains("class \"eel\" is in the test split but not in"), "{msg}");
}

#[test]
fn test_split_carves_the_test_set_from_training_data() {
    let (xtr, ytr, _, _) = mnist(400);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("one.safetensors");
    write(&file, &[("x", &xtr), ("y", &ytr)]);
    let o = UserOptions {
        test_split: Some(relief_data::ValSize::Fraction(0.25)),
        split_seed: 3,
        mean: Some(vec![0.0]),
        std: Some(vec![1.0]),
        ..UserOptions::default()
    };
    assert_eq!(inspect(DatasetKind::Tensors, &file, &o).unwrap().classes, 10);
    let d = Dataset::load_with(DatasetKind::Tensors, &file, &o).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (300, 100));
    // the same carve as the validation split's (numpy permutation of the seed)
    let split = relief_data::Split { images: xtr.to_kind(Kind::Float) / 255.0, labels: ytr.shallow_clone() };
    let (train, test) = split.carve_validation(relief_data::ValSize::Fraction(0.25), 3).unwrap();
    assert!(d.test.images.equal(&test.images) && d.test.labels.equal(&test.labels));
    assert!(d.train.labels.equal(&train.labels));
    assert_eq!((d.test_carve, d.split_seed), (o.test_split, 3));
    // the same in a directory; a test file beside it is refused rather than ignored
    let dir = tmp.path().join("d");
    std::fs::create_dir(&dir).unwrap();
    write(&dir.join("train.safetensors"), &[("x", &xtr), ("y", &ytr)]);
    assert_eq!(Dataset::load_with(DatasetKind::Tensors, &dir, &o).unwrap().test.len(), 100);
    write(&dir.join("test.safetensors"), &[("x", &xtr), ("y", &ytr)]);
    let e = Dataset::load_with(DatasetKind::Tensors, &dir, &o).unwrap_err().to_string();
    assert!(e.contains("test.safetensors: data.test_split is set"), "{e}");
    // IDX: the sample's t10k files are refused; an image folder without test/ is fine
    let e = Dataset::load_with(DatasetKind::Idx, &sample_dir(), &o).unwrap_err().to_string();
    assert!(e.contains("t10k-images-idx3-ubyte") && e.contains("data.test_split is set"), "{e}");
    let folder = tmp.path().join("f");
    let _ = mnist_pngs(&folder, 100);
    std::fs::remove_dir_all(folder.join("test")).unwrap();
    let d = Dataset::load_with(DatasetKind::ImageFolder, &folder, &o).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (75, 25));
    // out of range
    let bad = UserOptions { test_split: Some(relief_data::ValSize::Count(100)), ..o.clone() };
    let e = Dataset::load_with(DatasetKind::ImageFolder, &folder, &bad).unwrap_err().to_string();
    assert!(e.contains("data.test_split = 100") && e.contains("test size 100 must be in 1..100"), "{e}");
}

#[test]
fn image_folder_cache_is_reused_and_renewed_when_an_image_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let _ = mnist_pngs(tmp.path(), 60);
    let caches = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("relief-cache-"))
            .collect();
        v.sort();
        v
    };
    let o = UserOptions::default();
    let first = Dataset::load_with(DatasetKind::ImageFolder, tmp.path(), &o).unwrap();
    let written = caches();
    assert_eq!(written.len(), 2, "{written:?}");
    assert!(written[0].starts_with("relief-cache-test-") && written[1].starts_with("relief-cache-train-"));
    // a second load reads the caches: same tensors, same files
    let second = Dataset::load_with(DatasetKind::ImageFolder, tmp.path(), &o).unwrap();
    assert!(first.train.images.equal(&second.train.images) && first.test.labels.equal(&second.test.labels));
    assert_eq!(caches(), written);
    // a cache that does not decode is ignored and replaced
    std::fs::write(tmp.path().join(&written[1]), b"junk").unwrap();
    let third = Dataset::load_with(DatasetKind::ImageFolder, tmp.path(), &o).unwrap();
    assert!(first.train.images.equal(&third.train.images));
    // rewriting an image gives the training split a new cache; the stale one is deleted
    let some = std::fs::read_dir(tmp.path().join("train/3")).unwrap().next().unwrap().unwrap().path();
    image::GrayImage::from_pixel(28, 28, image::Luma([255])).save(&some).unwrap();
    let fourth = Dataset::load_with(DatasetKind::ImageFolder, tmp.path(), &o).unwrap();
    let now = caches();
    assert_eq!(now.len(), 2, "{now:?}");
    assert_eq!(now[0], written[0]);
    assert_ne!(now[1], written[1]);
    assert!(!first.train.images.equal(&fourth.train.images));
}
