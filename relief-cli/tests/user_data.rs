//! `relief run` on the user's own data: tensors in safetensors files (written here from the
//! bundled MNIST sample), IDX directories and Fashion-MNIST; every bad input refused with exit
//! status 1, the file and tensor named, and no panic; existing config hashes unchanged.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use relief_data::Mnist;
use relief_experiment::config::{Config, Override};
use tch::{Kind, Tensor};

/// Tensors by name, as written to a file.
type Named = Vec<(&'static str, Tensor)>;

fn write(path: &Path, tensors: &[(&str, &Tensor)]) {
    let owned: Vec<(&str, Tensor)> = tensors.iter().map(|(n, t)| (*n, t.contiguous())).collect();
    Tensor::write_safetensors(&owned, path).unwrap();
}

/// `train.safetensors` and `test.safetensors` in `dir` from the first `n` examples of each
/// split of the MNIST sample (`u8` images, `i32` labels).
fn mnist_tensors(dir: &Path, n: i64) {
    let m = Mnist::load(&mnist_sample()).unwrap();
    let y = |t: &Tensor| t.narrow(0, 0, n).to_kind(Kind::Int);
    write(
        &dir.join("train.safetensors"),
        &[("x", &m.train.images.narrow(0, 0, n)), ("y", &y(&m.train.labels))],
    );
    write(&dir.join("test.safetensors"), &[("x", &m.test.images.narrow(0, 0, n)), ("y", &y(&m.test.labels))]);
}

/// A one-epoch, one-iteration experiment on `dataset` in `dir`.
fn config(root: &Path, model: &str, dataset: &str, dir: &Path, train_limit: i64, epochs: usize) -> PathBuf {
    let text = format!(
        r#"model = "{model}"
seed = 1
device = "cpu"
threads = 1

[data]
dataset = "{dataset}"
dir = "{dir}"
validation = 100
train_limit = {train_limit}
test_limit = 500

[train]
epochs = {epochs}
batch_size = 50
milestones = []

[prune]
iterations = 1
batch_size = 200

[retrain]
epochs = {epochs}
batch_size = 50
milestones = []
"#,
        dir = dir.display()
    );
    let path = root.join(format!("{dataset}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `cmd`, expects exit status 1 and no panic, returns the output text.
fn refused(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    all
}

#[test]
fn default_and_preset_config_hashes_are_unchanged() {
    // `relief run /tmp/x.toml --dry-run --set data.dir=data/mnist-sample` (an empty x.toml)
    // printed the resolved TOML before the user-data fields existed; its SHA-256 without the
    // `name` and `dir` lines (and the trailing newline println adds) is this.
    assert_eq!(Config::default().hash(), "d2aefe78ff11ffd1");
    // `relief run <preset> --dry-run --set data.dir=/tmp/hcheck/d --set device=cpu`, printed
    // by the binary built before the change.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sets: Vec<Override> =
        ["data.dir=/tmp/hcheck/d", "device=cpu"].iter().map(|s| s.parse().unwrap()).collect();
    for (file, hash) in [
        ("configs/demo.toml", "0365d288c991e94b"),
        ("configs/paper/lenet300-100-mnist.toml", "d43a076f6711e31a"),
        ("configs/paper/lenet5-mnist.toml", "eb2d034439c58850"),
        ("configs/paper/resnet18-tiny-imagenet.toml", "9cd21920f1680b88"),
        ("configs/paper/resnet20-cifar10-sgd.toml", "4dc2837d3895649b"),
        ("configs/paper/resnet56-cifar100-adam.toml", "04b0bcfabba2a718"),
        ("configs/paper/vgg-like-cifar10-adam.toml", "f96052fddfea8bac"),
        ("configs/paper/vgg16-tiny-imagenet.toml", "6730324e54ac4476"),
    ] {
        let c = Config::load(&root.join(file), &sets).unwrap();
        assert_eq!(c.hash(), hash, "{file}");
        assert!(!c.to_toml().contains("mean") && !c.to_toml().contains("std ="), "{file}");
    }
    // set, the new fields are part of the config (and so of its hash)
    let c =
        Config::from_toml("[data]\ndataset = \"tensors\"\nmean = [0.5]\nstd = [0.25]\n", "u.toml").unwrap();
    assert!(c.to_toml().contains("mean = [0.5]"), "{}", c.to_toml());
    assert_eq!(Config::from_toml(&c.to_toml(), "resolved").unwrap(), c);
}

#[test]
fn tensors_run_trains_prunes_and_eval_rebuilds_the_test_set() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    mnist_tensors(&data, 1200);
    let cfg = config(tmp.path(), "lenet300-100", "tensors", &data, 600, 1);
    let out = run_expect(relief(&["run", "--dry-run"]).arg(&cfg), true);
    assert!(text(&out).contains("dataset = \"tensors\""), "{}", text(&out));
    let run = tmp.path().join("run");
    let out = run_expect(relief(&["run", "--quiet", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
    let rows = metrics(&run);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", text(&out));
    assert!(rows[1]["remaining_percent"].as_f64().unwrap() < 100.0);
    let acc = rows[1]["acc_retrained"].as_f64().unwrap();
    assert!(acc > 50.0, "learned something: {acc}");
    // the checkpoint records the dataset, and eval rebuilds the same test set from it
    let ck = run.join("iter-001.safetensors");
    let ev = run_expect(relief(&["eval", "--json", "--device", "cpu", "--test-limit", "500"]).arg(&ck), true);
    let ev: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert!((ev["test_accuracy"].as_f64().unwrap() - acc).abs() < 1e-9, "{ev} vs {acc}");
    let meta = relief_experiment::Checkpoint::read(&ck).unwrap();
    assert_eq!(meta.get("dataset"), Some("tensors"));
    assert_eq!(meta.get("data_shape"), Some("1x28x28"));
    assert_eq!(meta.get("data_classes"), Some("10"));
    assert!(meta.get("data_mean").is_some() && meta.get("data_std").is_some());
    // ... and so does a compacted export
    let compact = tmp.path().join("compact.safetensors");
    run_expect(relief(&["export", "--compact"]).arg(&ck).arg("--out").arg(&compact), true);
    let ev =
        run_expect(relief(&["eval", "--json", "--device", "cpu", "--test-limit", "500"]).arg(&compact), true);
    let ev: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert!((ev["test_accuracy"].as_f64().unwrap() - acc).abs() < 1e-9, "{ev} vs {acc}");
}

#[test]
fn plan_checks_the_model_against_the_data_shape() {
    let tmp = tempfile::tempdir().unwrap();
    // 3 x 10 x 10 images do not fit LeNet-300-100
    let x = Tensor::zeros([20, 3, 10, 10], (Kind::Uint8, tch::Device::Cpu));
    let y = Tensor::arange(20, (Kind::Int64, tch::Device::Cpu)).remainder(4);
    let file = tmp.path().join("small.safetensors");
    write(&file, &[("train_x", &x), ("train_y", &y), ("test_x", &x), ("test_y", &y)]);
    let cfg = config(tmp.path(), "lenet300-100", "tensors", &file, 0, 1);
    let e = refused(relief(&["run", "--dry-run"]).arg(&cfg));
    assert!(
        e.contains("takes inputs of shape [784]") && e.contains("small.safetensors are [3, 10, 10]"),
        "{e}"
    );
    // 784 features fit it (feature vectors for an MLP), with the classes from the labels
    let f = Tensor::zeros([20, 784], (Kind::Float, tch::Device::Cpu));
    write(&file, &[("train_x", &f), ("train_y", &y), ("test_x", &f), ("test_y", &y)]);
    let out = run_expect(relief(&["run", "--dry-run"]).arg(&cfg), true);
    assert!(text(&out).contains("on tensors"), "{}", text(&out));
    // an IDX directory: the MNIST sample read as any IDX data
    let cfg = config(tmp.path(), "lenet5", "idx", &mnist_sample(), 0, 1);
    run_expect(relief(&["run", "--dry-run"]).arg(&cfg), true);
    let cfg = config(tmp.path(), "vgg-like", "idx", &mnist_sample(), 0, 1);
    let e = refused(relief(&["run", "--dry-run"]).arg(&cfg));
    assert!(e.contains("are [1, 28, 28]") && e.contains("mnist-sample"), "{e}");
}

#[test]
fn bad_tensors_exit_1_naming_the_file_and_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir(&data).unwrap();
    mnist_tensors(&data, 300);
    let m = Mnist::load(&mnist_sample()).unwrap();
    let (x, y) = (m.train.images.narrow(0, 0, 300), m.train.labels.narrow(0, 0, 300));
    let cfg = config(tmp.path(), "lenet300-100", "tensors", &data, 0, 1);
    let train = data.join("train.safetensors");
    // `relief data verify` loads it through the same loader
    let v = text(&run_expect(relief(&["data", "verify", "tensors", "--dir"]).arg(&data), true));
    assert!(v.contains("classes 10   examples 1x28x28 f32") && v.contains("train 300 images"), "{v}");
    let neg = y.copy();
    let _ = neg.get(9).fill_(-3);
    let big = y.copy();
    let _ = big.get(2).fill_(10);
    let cases: Vec<(&str, Named, Vec<&str>, &str)> = vec![
        (
            "length",
            vec![("x", x.shallow_clone()), ("y", y.narrow(0, 0, 299))],
            vec![],
            "tensor `y` has 299 labels but `x` has 300 examples",
        ),
        (
            "negative",
            vec![("x", x.shallow_clone()), ("y", neg)],
            vec![],
            "tensor `y`: label -3 at index 9 is negative",
        ),
        (
            "num_classes",
            vec![("x", x.shallow_clone()), ("y", big)],
            vec!["--set", "num_classes=10"],
            "tensor `y`: label 10 at index 2 is out of range 0..10",
        ),
        ("missing", vec![("x", x.shallow_clone())], vec![], "missing tensor `y`"),
        (
            "x dtype",
            vec![("x", x.to_kind(Kind::Int16)), ("y", y.shallow_clone())],
            vec![],
            "tensor `x` has dtype I16",
        ),
        (
            "y dtype",
            vec![("x", x.shallow_clone()), ("y", y.to_kind(Kind::Double))],
            vec![],
            "tensor `y` has dtype F64",
        ),
        (
            "shape",
            vec![("x", x.narrow(2, 0, 27)), ("y", y.shallow_clone())],
            vec![],
            "test x is [1, 28, 28] U8 per example but train x is [1, 27, 28] U8",
        ),
    ];
    for (what, tensors, extra, want) in cases {
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        write(&train, &refs);
        let e = refused(relief(&["run", "--dry-run"]).arg(&cfg).args(&extra));
        assert!(e.contains(want) && e.contains("safetensors"), "{what}: {e}");
        assert!(e.contains(&data.display().to_string()), "{what}: {e}");
    }
    // NaN in float x is found when loading: `relief run` exits 1 naming the tensor
    let xf = x.to_kind(Kind::Float);
    let _ = xf.get(5).get(0).get(0).get(0).fill_(f64::NAN);
    write(&train, &[("x", &xf), ("y", &y)]);
    write(&data.join("test.safetensors"), &[("x", &x.to_kind(Kind::Float)), ("y", &y)]);
    let e =
        refused(relief(&["run", "--quiet", "--no-plots"]).arg(&cfg).arg("--out").arg(tmp.path().join("r")));
    assert!(
        e.contains("train.safetensors: tensor `x` holds NaN or infinite values (first at example 5)"),
        "{e}"
    );
    let e = refused(relief(&["data", "verify", "tensors", "--dir"]).arg(&data));
    assert!(e.contains("tensor `x` holds NaN or infinite values"), "{e}");
    // no such directory; a directory without the files
    let e = refused(relief(&["run", "--dry-run", "--set", "data.dir=/nonexistent/d"]).arg(&cfg));
    assert!(e.contains("data.dir = \"/nonexistent/d\": no such file or directory"), "{e}");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = refused(
        relief(&["run", "--dry-run", "--set"]).arg(format!("data.dir={}", empty.display())).arg(&cfg),
    );
    assert!(e.contains("train.safetensors: missing file"), "{e}");
}

#[test]
fn fashion_mnist_trains_lenet5_and_prunes() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        assert!(
            std::env::var_os("RELIEF_REQUIRE_FASHION").is_none(),
            "RELIEF_REQUIRE_FASHION is set but {} is missing (apt-get install dataset-fashion-mnist)",
            dir.display()
        );
        println!("skipped: {} not installed (apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config(tmp.path(), "lenet5", "fashion-mnist", dir, 2000, 2);
    let run = tmp.path().join("run");
    let out = run_expect(relief(&["run", "--quiet", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
    let rows = metrics(&run);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{}", text(&out));
    let (dense, pruned) =
        (rows[0]["acc_retrained"].as_f64().unwrap(), rows[1]["acc_retrained"].as_f64().unwrap());
    assert!(dense > 60.0 && pruned > 60.0, "accuracy {dense} / {pruned}\n{}", text(&out));
    assert!(rows[1]["remaining_percent"].as_f64().unwrap() < 100.0);
    let meta = relief_experiment::Checkpoint::read(&run.join("iter-001.safetensors")).unwrap();
    assert_eq!(
        (meta.get("dataset"), meta.get("data_mean"), meta.get("data_std")),
        (Some("fashion-mnist"), Some("0.286"), Some("0.353"))
    );
}

#[test]
fn image_folder_run_records_the_class_names_and_eval_shows_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("pictures");
    let m = Mnist::load(&mnist_sample()).unwrap();
    let names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"];
    for (split, split_data, n) in [("train", &m.train, 800), ("test", &m.test, 300)] {
        for i in 0..n {
            let dir = data.join(split).join(names[split_data.labels.int64_value(&[i]) as usize]);
            std::fs::create_dir_all(&dir).unwrap();
            let px = Vec::<u8>::try_from(split_data.images.get(i).reshape([-1])).unwrap();
            image::GrayImage::from_raw(28, 28, px).unwrap().save(dir.join(format!("{i:04}.png"))).unwrap();
        }
    }
    let cfg = config(tmp.path(), "lenet300-100", "imagefolder", &data, 600, 1);
    let run = tmp.path().join("run");
    let out = run_expect(relief(&["run", "--quiet", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
    let rows = metrics(&run);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{}", text(&out));
    let acc = rows[1]["acc_retrained"].as_f64().unwrap();
    assert!(acc > 40.0, "learned something: {acc}");
    let ck = run.join("iter-001.safetensors");
    let ev = run_expect(relief(&["eval", "--device", "cpu"]).arg(&ck), true);
    let ev = text(&ev);
    // classes sorted by name, as torchvision's ImageFolder numbers them
    assert!(ev.contains("classes: eight, five, four, nine, one, seven, six, three, two, zero"), "{ev}");
    assert!(ev.contains("dataset: imagefolder, examples 1x28x28"), "{ev}");
    assert!(ev.contains(&format!("test accuracy: {acc:.2} % on 300 examples")), "{ev}");
    // a model that does not fit the images is refused at plan time, naming both shapes
    let cfg = config(tmp.path(), "vgg-like", "imagefolder", &data, 600, 1);
    let e = refused(relief(&["run", "--dry-run"]).arg(&cfg));
    assert!(e.contains("takes inputs of shape [3, 32, 32]") && e.contains("are [1, 28, 28]"), "{e}");
}

#[test]
fn test_split_run_records_the_carve_and_eval_rebuilds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Mnist::load(&mnist_sample()).unwrap();
    let file = tmp.path().join("all.safetensors");
    write(&file, &[("x", &m.train.images.narrow(0, 0, 1000)), ("y", &m.train.labels.narrow(0, 0, 1000))]);
    let cfg = config(tmp.path(), "lenet300-100", "tensors", &file, 0, 1);
    let sets = ["--set", "data.test_split=0.3", "--set", "data.split_seed=5"];
    let run = tmp.path().join("run");
    run_expect(relief(&["run", "--quiet", "--no-plots"]).arg(&cfg).args(sets).arg("--out").arg(&run), true);
    let resolved = std::fs::read_to_string(run.join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("test_split = 0.3") && resolved.contains("split_seed = 5"), "{resolved}");
    let acc = metrics(&run)[1]["acc_retrained"].as_f64().unwrap();
    let ck = run.join("iter-001.safetensors");
    let meta = relief_experiment::Checkpoint::read(&ck).unwrap();
    assert_eq!((meta.get("data_test_split"), meta.get("data_split_seed")), (Some("0.3"), Some("5")));
    let ev = run_expect(relief(&["eval", "--json", "--device", "cpu"]).arg(&ck), true);
    let ev: serde_json::Value = serde_json::from_slice(&ev.stdout).unwrap();
    assert_eq!(ev["test_examples"], 300);
    assert!((ev["test_accuracy"].as_f64().unwrap() - acc).abs() < 1e-9, "{ev} vs {acc}");
    // options that do not apply are refused at plan time
    let e = refused(relief(&["run", "--dry-run", "--set", "data.channels=3"]).arg(&cfg));
    assert!(e.contains("data.channels does not apply to dataset = \"tensors\""), "{e}");
    let e = refused(relief(&["run", "--dry-run", "--set", "data.test_split=1.5"]).arg(&cfg));
    assert!(e.contains("data.test_split = 1.5: expected a share in (0, 1)"), "{e}");
}
