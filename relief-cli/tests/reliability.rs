//! Reliability battery: bad inputs of every kind (configs, checkpoints, prune-step files, data
//! directories, run directories) must end in a clear error that names the offending key, file or
//! tensor, a non-zero exit status and no panic, and must leave every checkpoint of the shared
//! run directory byte-for-byte as it was.
//!
//! One tiny trained run (1 epoch, 1 iteration) is built once and shared; each case runs the
//! `relief` binary. Cases that change a run directory work on their own copy.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::*;
use relief_experiment::checkpoint::Checkpoint;
use tch::{Kind, Tensor};

/// The shared fixture: a trained run and files derived from it.
struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    cfg: PathBuf,
    run: PathBuf,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let cfg = tiny_config(&root, 1, 1);
        let run = root.join("run");
        run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
        let fx = Fx { _tmp: tmp, root, cfg, run };
        make_files(&fx);
        fx
    })
}

impl Fx {
    fn p(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
    fn ck(&self) -> PathBuf {
        self.run.join("iter-001.safetensors")
    }
}

/// `iter-001` with tensor `name` changed by `f`, written to `out` under the fixture root.
fn derive(fx: &Fx, out: &str, name: &str, f: impl Fn(&Tensor) -> Tensor) {
    let mut ck = Checkpoint::read(&fx.ck()).unwrap();
    let t = ck.tensors.iter_mut().find(|(k, _)| k == name).unwrap_or_else(|| panic!("{name}"));
    t.1 = f(&t.1);
    ck.write(&fx.root.join(out)).unwrap();
}

fn set_first(t: &Tensor, v: f64) -> Tensor {
    let t = t.copy();
    let _ = t.view([-1]).get(0).fill_(v);
    t
}

fn write_tensors(path: &Path, tensors: &[(&str, Tensor)]) {
    let list: Vec<(String, Tensor)> =
        tensors.iter().map(|(k, t)| (k.to_string(), t.shallow_clone())).collect();
    relief_core::tensor_io::write_safetensors(path, &list, &BTreeMap::new()).unwrap();
}

fn make_files(fx: &Fx) {
    derive(fx, "nan.safetensors", "classifier.0.weight", |t| set_first(t, f64::NAN));
    derive(fx, "inf.safetensors", "classifier.2.bias", |t| set_first(t, f64::INFINITY));
    derive(fx, "neginf.safetensors", "classifier.4.weight", |t| set_first(t, f64::NEG_INFINITY));
    derive(fx, "mask2.safetensors", "mask.classifier.0.weight", |t| set_first(t, 2.0));
    derive(fx, "maskhalf.safetensors", "mask.classifier.2.weight", |t| {
        set_first(&t.to_kind(Kind::Float), 0.5)
    });
    derive(fx, "masknan.safetensors", "mask.classifier.4.bias", |t| {
        set_first(&t.to_kind(Kind::Float), f64::NAN)
    });
    let x = Tensor::rand([8, 1, 28, 28], (Kind::Float, tch::Device::Cpu));
    write_tensors(&fx.root.join("batch.safetensors"), &[("x", x.shallow_clone())]);
    let nan_x = set_first(&x, f64::NAN);
    write_tensors(&fx.root.join("batch-nan.safetensors"), &[("x", nan_x)]);
    write_tensors(&fx.root.join("batch-inf.safetensors"), &[("x", set_first(&x, f64::INFINITY))]);
    write_tensors(
        &fx.root.join("batch-empty.safetensors"),
        &[("x", Tensor::zeros([0, 1, 28, 28], (Kind::Float, tch::Device::Cpu)))],
    );
    write_tensors(
        &fx.root.join("batch-shape.safetensors"),
        &[("x", Tensor::zeros([5, 3], (Kind::Float, tch::Device::Cpu)))],
    );
    std::fs::write(fx.root.join("junk.safetensors"), b"this is not a safetensors file").unwrap();
    std::fs::write(fx.root.join("empty.safetensors"), b"").unwrap();
    std::fs::write(fx.root.join("a-file"), b"x").unwrap();
    std::fs::create_dir_all(fx.root.join("empty-dir")).unwrap();
    run_expect(
        relief(&["export", "--compact"]).arg(fx.ck()).arg("--out").arg(fx.root.join("compact.safetensors")),
        true,
    );
}

/// Every file of the shared run directory, by name, with its bytes.
fn snapshot(run: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(run)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
        .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// One case: arguments, whether it must succeed, and the fragments its output must hold (and
/// must not hold).
struct Case {
    name: &'static str,
    args: Vec<String>,
    ok: bool,
    has: Vec<String>,
    lacks: Vec<&'static str>,
}

fn case(name: &'static str, args: &[&str], ok: bool, has: &[&str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        ok,
        has: has.iter().map(|s| s.to_string()).collect(),
        lacks: Vec::new(),
    }
}

/// Debug formatting that must never reach a user.
const LEAKS: [&str; 6] = ["panicked", "IoError", "Os {", "Some(\"", "Fraction(", "RUST_BACKTRACE"];

/// Runs the cases; collects every failure and reports them together.
fn battery(cases: Vec<Case>) {
    let fx = fx();
    let mut failures = Vec::new();
    for c in &cases {
        let before = snapshot(&fx.run);
        let out = relief(&[]).args(&c.args).current_dir(&fx.root).output().expect("relief starts");
        let t = text(&out);
        let mut why = Vec::new();
        if out.status.success() != c.ok {
            why.push(format!("exit status {:?}, expected success = {}", out.status.code(), c.ok));
        }
        if !c.ok && !matches!(out.status.code(), Some(1) | Some(2)) {
            why.push(format!("exit status {:?}, expected 1 or 2", out.status.code()));
        }
        for h in &c.has {
            if !t.contains(h.as_str()) {
                why.push(format!("output lacks {h:?}"));
            }
        }
        for l in LEAKS.iter().chain(&c.lacks) {
            if t.contains(l) {
                why.push(format!("output holds {l:?}"));
            }
        }
        if snapshot(&fx.run) != before {
            why.push("a checkpoint of the run directory changed".into());
        }
        if !why.is_empty() {
            failures.push(format!(
                "[{}] relief {}\n  {}\n--- output\n{t}",
                c.name,
                c.args.join(" "),
                why.join("\n  ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn checkpoints_with_non_finite_or_bad_values_are_refused_by_name() {
    let fx = fx();
    let ck = fx.ck().display().to_string();
    let cfg = fx.cfg.display().to_string();
    let (nan, inf, neg, m2, mh, mn) = (
        fx.p("nan.safetensors"),
        fx.p("inf.safetensors"),
        fx.p("neginf.safetensors"),
        fx.p("mask2.safetensors"),
        fx.p("maskhalf.safetensors"),
        fx.p("masknan.safetensors"),
    );
    let out = fx.p("out.safetensors");
    let nan_msg = "tensor `classifier.0.weight` has 1 NaN and 0 inf entries of 235200";
    let run_out = |n: &str| fx.p(n);
    battery(vec![
        case("eval nan", &["eval", "--no-data", &nan], false, &["nan.safetensors", nan_msg]),
        case("eval inf", &["eval", "--no-data", &inf], false, &["`classifier.2.bias` has 0 NaN and 1 inf"]),
        case(
            "eval -inf",
            &["eval", "--no-data", &neg],
            false,
            &["neginf.safetensors", "classifier.4.weight"],
        ),
        case("export nan", &["export", "--compact", &nan, "--out", &out], false, &[nan_msg]),
        case(
            "export nan --check",
            &["export", "--compact", &nan, "--out", &out, "--check", "4"],
            false,
            &[nan_msg],
        ),
        case(
            "prune --pretrained nan",
            &[
                "prune",
                "-q",
                "--no-plots",
                &cfg,
                "--set",
                "prune.rewind=false",
                "--pretrained",
                &nan,
                "--out",
                &run_out("p-nan"),
            ],
            false,
            &["nan.safetensors", nan_msg],
        ),
        case(
            "run --set init=nan",
            &["run", "-q", "--no-plots", &cfg, "--set", &format!("init={nan}"), "--out", &run_out("i-nan")],
            false,
            &["nan.safetensors", nan_msg],
        ),
        case(
            "eval mask 2",
            &["eval", "--no-data", &m2],
            false,
            &["mask2.safetensors", "mask `mask.classifier.0.weight`", "other than 0 and 1", "e.g. 2"],
        ),
        case("eval mask 0.5", &["eval", "--no-data", &mh], false, &["mask.classifier.2.weight", "0.5"]),
        case("eval mask NaN", &["eval", "--no-data", &mn], false, &["mask.classifier.4.bias", "1 NaN"]),
        case(
            "export mask 2",
            &["export", "--compact", &m2, "--out", &out],
            false,
            &["mask.classifier.0.weight"],
        ),
        case(
            "prune --pretrained mask 0.5",
            &[
                "prune",
                "-q",
                "--no-plots",
                &cfg,
                "--set",
                "prune.rewind=false",
                "--pretrained",
                &mh,
                "--out",
                &run_out("p-mh"),
            ],
            false,
            &["maskhalf.safetensors", "mask.classifier.2.weight"],
        ),
        case("eval good", &["eval", "--no-data", &ck], true, &["lenet300-100"]),
        case(
            "export good --check",
            &["export", "--compact", &ck, "--out", &out, "--check", "16"],
            true,
            &["check:"],
        ),
    ]);
}

#[test]
fn checkpoint_paths_and_kinds_are_named() {
    let fx = fx();
    let ck = fx.ck().display().to_string();
    let run = fx.run.display().to_string();
    let cfg = fx.cfg.display().to_string();
    let compact = fx.p("compact.safetensors");
    battery(vec![
        case("eval dir", &["eval", "--no-data", &run], false, &["is a directory", "iter-001.safetensors"]),
        case(
            "eval missing",
            &["eval", "--no-data", &fx.p("missing.safetensors")],
            false,
            &["missing.safetensors", "no such file"],
        ),
        case("eval junk", &["eval", "--no-data", &fx.p("junk.safetensors")], false, &["junk.safetensors"]),
        case(
            "eval empty file",
            &["eval", "--no-data", &fx.p("empty.safetensors")],
            false,
            &["empty.safetensors"],
        ),
        case("eval compacted", &["eval", "--no-data", &compact], true, &[]),
        case(
            "export onto input",
            &["export", "--compact", &ck, "--out", &ck],
            false,
            &["is the input checkpoint itself"],
        ),
        case(
            "export onto a run checkpoint",
            &[
                "export",
                "--compact",
                &fx.p("compact.safetensors"),
                "--out",
                &fx.run.join("iter-000.safetensors").display().to_string(),
            ],
            false,
            &["iter-000.safetensors"],
        ),
        case(
            "prune --pretrained compacted",
            &[
                "prune",
                "-q",
                "--no-plots",
                &cfg,
                "--set",
                "prune.rewind=false",
                "--pretrained",
                &compact,
                "--out",
                &fx.p("p-compact"),
            ],
            false,
            &["compact.safetensors", "this is a compacted model", "prune the original checkpoint"],
        ),
        case(
            "export a compacted model",
            &["export", "--compact", &compact, "--out", &fx.p("again.safetensors")],
            false,
            &["compacted model"],
        ),
        case(
            "prune --pretrained dir",
            &[
                "prune",
                "-q",
                "--no-plots",
                &cfg,
                "--set",
                "prune.rewind=false",
                "--pretrained",
                &run,
                "--out",
                &fx.p("p-dir"),
            ],
            false,
            &["pretrained"],
        ),
    ]);
}

fn prune_step(weights: &str, batch: &str, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["prune-step", "--model", "lenet300-100", "--weights", weights, "--batch", batch]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let fx = fx();
    if !extra.contains(&"--out") {
        v.extend(["--out".to_string(), fx.p("step.safetensors")]);
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn ps(name: &'static str, args: Vec<String>, ok: bool, has: &[&str]) -> Case {
    // The temporary sibling of --out (`step.safetensors.<pid>.tmp`) is never named.
    Case {
        name,
        args,
        ok,
        has: has.iter().map(|s| s.to_string()).collect(),
        lacks: vec!["safetensors.", "dir/x."],
    }
}

#[test]
fn prune_step_inputs_are_checked() {
    let fx = fx();
    let ck = fx.ck().display().to_string();
    let init = fx.run.join("init.safetensors").display().to_string();
    let b = fx.p("batch.safetensors");
    battery(vec![
        ps(
            "weights nan",
            prune_step(&fx.p("nan.safetensors"), &b, &[]),
            false,
            &["nan.safetensors", "`classifier.0.weight` has 1 NaN"],
        ),
        ps(
            "batch NaN pixel",
            prune_step(&init, &fx.p("batch-nan.safetensors"), &[]),
            false,
            &["batch-nan.safetensors", "tensor `x` has 1 NaN"],
        ),
        ps(
            "batch inf pixel",
            prune_step(&init, &fx.p("batch-inf.safetensors"), &[]),
            false,
            &["batch-inf.safetensors", "1 inf"],
        ),
        ps(
            "masks value 2",
            prune_step(&init, &b, &["--masks", &fx.p("mask2.safetensors")]),
            false,
            &["mask2.safetensors", "mask.classifier.0.weight", "other than 0 and 1"],
        ),
        ps(
            "masks NaN",
            prune_step(&init, &b, &["--masks", &fx.p("masknan.safetensors")]),
            false,
            &["masknan.safetensors", "mask.classifier.4.bias"],
        ),
        ps(
            "weights' own bad mask",
            prune_step(&fx.p("mask2.safetensors"), &b, &[]),
            false,
            &["mask2.safetensors", "mask.classifier.0.weight"],
        ),
        ps(
            "empty batch",
            prune_step(&init, &fx.p("batch-empty.safetensors"), &[]),
            false,
            &["empty pruning batch"],
        ),
        ps("batch shape", prune_step(&init, &fx.p("batch-shape.safetensors"), &[]), false, &["[5, 3]"]),
        ps(
            "batch key",
            prune_step(&init, &b, &["--batch-key", "images"]),
            false,
            &["batch.safetensors", "no tensor named `images`"],
        ),
        ps(
            "out in a missing dir",
            prune_step(&init, &b, &["--out", "/nonexistent/dir/x"]),
            false,
            &["/nonexistent/dir/x", "cannot write", "No such file or directory"],
        ),
        ps(
            "weights missing",
            prune_step(&fx.p("missing.safetensors"), &b, &[]),
            false,
            &["missing.safetensors", "no such file"],
        ),
        ps("weights dir", prune_step(&fx.run.display().to_string(), &b, &[]), false, &["is a directory"]),
        ps(
            "weights compacted",
            prune_step(&fx.p("compact.safetensors"), &b, &[]),
            false,
            &["this is a compacted model"],
        ),
        ps("alpha_fc 1.5", prune_step(&init, &b, &["--alpha-fc", "1.5"]), false, &["alpha_fc = 1.5"]),
        ps("chunk 0", prune_step(&init, &b, &["--chunk-size", "0"]), false, &["chunk_size = 0"]),
        ps(
            "wrong model",
            {
                let mut a = prune_step(&init, &b, &[]);
                a[2] = "lenet5".into();
                a
            },
            false,
            &["init.safetensors", "missing"],
        ),
        ps(
            "relief checkpoint as weights",
            prune_step(&ck, &b, &[]),
            true,
            &["starting from the masks of", "parameters kept"],
        ),
        ps("init as weights", prune_step(&init, &b, &[]), true, &["parameters kept"]),
    ]);
}

#[test]
fn prune_step_mismatch_lists_are_stable() {
    let fx = fx();
    let init = fx.run.join("init.safetensors").display().to_string();
    let mut args = prune_step(&init, &fx.p("batch.safetensors"), &[]);
    args[2] = "lenet5".into();
    let a = text(&run_expect(relief(&[]).args(&args), false));
    let b = text(&run_expect(relief(&[]).args(&args), false));
    assert_eq!(a, b, "the same mismatch prints the same list");
    assert!(a.contains("classifier.0.weight"), "{a}");
}

/// A copy of the tiny config with `from` replaced by `to` (which must occur).
fn variant(name: &str, from: &str, to: &str) -> String {
    let fx = fx();
    let text = std::fs::read_to_string(&fx.cfg).unwrap();
    assert!(text.contains(from), "{from:?} in the tiny config");
    let path = fx.root.join(name);
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
    path.display().to_string()
}

/// The 1-based line of `needle` in the config variant at `path`.
fn line(path: &str, needle: &str) -> usize {
    std::fs::read_to_string(path).unwrap().lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn config_errors_name_the_key_and_line() {
    let fx = fx();
    let cfg = fx.cfg.display().to_string();
    let lr = variant("lr.toml", "[retrain]\n", "[retrain]\nlr = \"fast\"\n");
    let shuffle = variant("shuffle.toml", "[data]\n", "[data]\nshuffle = \"yes\"\n");
    let epochs = variant("epochs.toml", "[train]\nepochs = 1", "[train]\nepochs = -1");
    let alpah = variant("alpah.toml", "[prune]\n", "[prune]\nalpah_fc = 0.9\n");
    let syntax = variant("syntax.toml", "[prune]\n", "[prune\n");
    let dataset = variant("dataset.toml", "dataset = \"mnist\"", "dataset = \"svhn\"");
    let val = variant("val.toml", "validation = 100", "validation = 1.5");
    let ms = variant(
        "ms.toml",
        "[train]\nepochs = 1\nbatch_size = 60\nmilestones = []",
        "[train]\nepochs = 1\nbatch_size = 60\nmilestones = [1]",
    );
    let rms = variant(
        "rms.toml",
        "[retrain]\nepochs = 1\nbatch_size = 60\nmilestones = []",
        "[retrain]\nepochs = 1\nbatch_size = 60\nmilestones = [3]",
    );
    let zero = variant(
        "zero.toml",
        "[train]\nepochs = 1\nbatch_size = 60\nmilestones = []",
        "[train]\nepochs = 0\nbatch_size = 60\nmilestones = [30]",
    );
    let threads = variant("threads.toml", "threads = 1", "threads = 100000");
    let model = variant("model.toml", "model = \"lenet300-100\"", "model = \"resnet999\"");
    let mom = variant("mom.toml", "[train]\n", "[train]\nmomentum = 1.5\n");
    let bs =
        variant("bs.toml", "[retrain]\nepochs = 1\nbatch_size = 60", "[retrain]\nepochs = 1\nbatch_size = 0");
    let gamma = variant("gamma.toml", "[train]\n", "[train]\ngamma = 2.0\n");
    let alpha = variant("alpha.toml", "[prune]\n", "[prune]\nalpha_fc = 0\n");
    let dry = |f: &str| vec!["run".to_string(), "--dry-run".to_string(), f.to_string()];
    let c = |name, args: Vec<String>, ok, has: Vec<String>| Case { name, args, ok, has, lacks: vec![] };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    battery(vec![
        c(
            "lr string",
            dry(&lr),
            false,
            vec![format!(
                "lr.toml:{}: retrain.lr: invalid type: string \"fast\", expected f64",
                line(&lr, "fast")
            )],
        ),
        c(
            "shuffle string",
            dry(&shuffle),
            false,
            vec![format!("shuffle.toml:{}: data.shuffle", line(&shuffle, "\"yes\"")), "boolean".into()],
        ),
        c(
            "epochs -1",
            dry(&epochs),
            false,
            vec![format!("epochs.toml:{}: train.epochs", line(&epochs, "epochs = -1")), "-1".into()],
        ),
        c("unknown key", dry(&alpah), false, s(&["alpah.toml:", "prune.alpah_fc", "unknown field"])),
        c("syntax", dry(&syntax), false, s(&["syntax.toml", "line"])),
        c("dataset", dry(&dataset), false, s(&["data.dataset", "svhn", "cifar10"])),
        c("validation 1.5", dry(&val), false, s(&["data.validation = 1.5"])),
        c(
            "train milestone at epochs",
            dry(&ms),
            false,
            s(&["ms.toml", "train.milestones = [1]", "train.epochs = 1"]),
        ),
        c(
            "retrain milestone beyond epochs",
            dry(&rms),
            false,
            s(&["retrain.milestones = [3]", "retrain.epochs = 1"]),
        ),
        c("epochs 0 with milestones", dry(&zero), true, s(&["epochs = 0"])),
        c("threads", dry(&threads), false, s(&["threads = 100000", "available cores"])),
        c("model", dry(&model), false, s(&["model = \"resnet999\""])),
        c("momentum", dry(&mom), false, s(&["train.momentum = 1.5"])),
        c("batch 0", dry(&bs), false, s(&["retrain.batch_size = 0"])),
        c("gamma", dry(&gamma), false, s(&["train.gamma = 2"])),
        c("alpha 0", dry(&alpha), false, s(&["prune.alpha_fc"])),
        c(
            "--set string",
            s(&["run", "--dry-run", &cfg, "--set", "train.lr=fast"]),
            false,
            s(&["train.lr", "fast"]),
        ),
        c(
            "--set unknown",
            s(&["run", "--dry-run", &cfg, "--set", "lr=0.1"]),
            false,
            s(&["--set lr", "unknown field"]),
        ),
        c(
            "--set milestones cut by epochs",
            s(&["run", "--dry-run", &cfg, "--set", "retrain.milestones=[5]"]),
            false,
            s(&["retrain.milestones = [5]"]),
        ),
        c(
            "--set data.dir",
            s(&["run", "--dry-run", &cfg, "--set", "data.dir=/no/such/dir"]),
            false,
            s(&["data.dir", "/no/such/dir"]),
        ),
        c("missing config", s(&["run", "--dry-run", &fx.p("missing.toml")]), false, s(&["missing.toml"])),
        c("config is a directory", s(&["run", "--dry-run", &fx.p("empty-dir")]), false, s(&["empty-dir"])),
        c("good config", dry(&cfg), true, s(&["milestones = []"])),
    ]);
}

#[test]
fn data_directories_and_fetch() {
    let fx = fx();
    // The bundled sample in a directory, fetched from a mirror nothing listens on.
    let dir = fx.root.join("mnist-copy");
    std::fs::create_dir_all(&dir).unwrap();
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    for n in names {
        std::fs::copy(mnist_sample().join(n), dir.join(n)).unwrap();
    }
    let before: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(dir.join(n)).unwrap()).collect();
    let d = dir.display().to_string();
    battery(vec![
        case(
            "fetch --dir FILE",
            &["data", "fetch", "mnist", "--dir", &fx.p("a-file"), "--mirror", "http://127.0.0.1:9/"],
            false,
            &["a-file", "is a file, not a directory"],
        ),
        case(
            "fetch unreachable mirror",
            &["data", "fetch", "mnist", "--dir", &d, "--mirror", "http://127.0.0.1:9/", "--retries", "0"],
            false,
            &["http://127.0.0.1:9/"],
        ),
        case(
            "verify empty dir",
            &["data", "verify", "cifar10", "--dir", &fx.p("empty-dir")],
            false,
            &["empty-dir"],
        ),
        case(
            "verify missing dir",
            &["data", "verify", "mnist", "--dir", &fx.p("no-such-dir")],
            false,
            &["no-such-dir"],
        ),
        case("verify the copy", &["data", "verify", "mnist", "--dir", &d], true, &[]),
    ]);
    let after: Vec<Vec<u8>> = names.iter().map(|n| std::fs::read(dir.join(n)).unwrap()).collect();
    assert!(before == after, "a failed fetch must leave the existing files as they were");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn run_directories_and_reports() {
    let fx = fx();
    let cfg = fx.cfg.display().to_string();
    let run = fx.run.display().to_string();
    // A copy of the run, and an "interrupted" one: killed while iteration 1 ran (iter-001 and its
    // metrics row are absent).
    let twin = fx.root.join("twin");
    copy_dir(&fx.run, &twin);
    let cut = fx.root.join("cut");
    copy_dir(&fx.run, &cut);
    std::fs::remove_file(cut.join("iter-001.safetensors")).unwrap();
    let mut rows: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.join("metrics.json")).unwrap()).unwrap();
    rows.as_array_mut().unwrap().truncate(1);
    std::fs::write(cut.join("metrics.json"), serde_json::to_string(&rows).unwrap()).unwrap();
    let csv = std::fs::read_to_string(cut.join("metrics.csv")).unwrap();
    std::fs::write(cut.join("metrics.csv"), csv.lines().take(2).collect::<Vec<_>>().join("\n") + "\n")
        .unwrap();
    let (twin_s, cut_s) = (twin.display().to_string(), cut.display().to_string());
    battery(vec![
        case(
            "other config onto a saved run",
            &["run", "-q", "--no-plots", &cfg, "--set", "seed=9", "--out", &run],
            false,
            &["different config", "seed: 3 -> 9"],
        ),
        case(
            "resume a non-run dir",
            &["prune", "--resume", &fx.p("empty-dir")],
            false,
            &["not a relief run directory"],
        ),
        case(
            "--out is a file",
            &["run", "-q", "--no-plots", &cfg, "--out", &fx.p("a-file")],
            false,
            &["a-file"],
        ),
        case(
            "report of a non-run dir",
            &["report", &fx.p("empty-dir")],
            false,
            &["not a relief run directory"],
        ),
        case("report same names", &["report", &run, &twin_s], true, &["tiny (", "twin)"]),
        case("report interrupted", &["report", &cut_s], true, &["incomplete: 0 of 1 iterations"]),
        Case { lacks: vec!["incomplete"], ..case("report complete", &["report", &run], true, &["tiny"]) },
        case("resume a finished run", &["run", "-q", "--no-plots", &cfg, "--out", &run], true, &[]),
    ]);
}

#[test]
fn the_engine_refuses_non_finite_statistics_and_scores() {
    use relief_core::{prune_step, CoreError, MaskSet, PruneConfig};
    use relief_models::{Arch, Model};
    let model = Model::new(Arch::Lenet300_100, 10, tch::Device::Cpu, 1);
    let x = Tensor::rand([16, 784], (Kind::Float, tch::Device::Cpu));
    // A NaN pixel: the first layer's input statistics.
    let bad = set_first(&x, f64::NAN);
    let mut masks = MaskSet::ones(&model.graph, tch::Device::Cpu);
    let e = prune_step(&model.graph, &model.params(), &mut masks, &bad, &PruneConfig::default()).unwrap_err();
    assert!(matches!(&e, CoreError::NonFinite { layer, .. } if layer == "classifier.0"), "{e}");
    assert!(e.to_string().contains("input statistics") && e.to_string().contains("1 NaN"), "{e}");
    // An infinite weight in the last layer: its scores.
    let params = model.params();
    tch::no_grad(|| {
        let _ = params["classifier.4.weight"].view([-1]).get(3).fill_(f64::INFINITY);
    });
    let mut masks = MaskSet::ones(&model.graph, tch::Device::Cpu);
    let e = prune_step(&model.graph, &params, &mut masks, &x, &PruneConfig::default()).unwrap_err();
    assert!(matches!(&e, CoreError::NonFinite { layer, .. } if layer == "classifier.4"), "{e}");
    // Masks other than 0/1 are refused by the engine's import too, naming the tensor.
    let model = Model::new(Arch::Lenet300_100, 10, tch::Device::Cpu, 1);
    let mut tensors = MaskSet::ones(&model.graph, tch::Device::Cpu).export("mask.", false);
    tensors[0].1 = set_first(&tensors[0].1.to_kind(Kind::Float), 0.5);
    let key = tensors[0].0.clone();
    let e = MaskSet::import(&model.graph, &tensors, "mask.", tch::Device::Cpu).unwrap_err().to_string();
    assert!(e.contains(&key) && e.contains("0.5"), "{e}");
    // Finite inputs prune as before.
    let model = Model::new(Arch::Lenet300_100, 10, tch::Device::Cpu, 1);
    let mut masks = MaskSet::ones(&model.graph, tch::Device::Cpu);
    prune_step(&model.graph, &model.params(), &mut masks, &x, &PruneConfig::default()).unwrap();
}

/// A small tmpfs mounted at `dir` (root only; `None` where mounting is not allowed).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(dir.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_cleanly_and_keeps_what_was_written() {
    let fx = fx();
    let tmp = tempfile::tempdir().unwrap();
    // 3 MB holds the initial weights (1.1 MB) but not the first epoch's training state.
    let Some(disk) = Tmpfs::mount(&tmp.path().join("disk"), "3m") else {
        eprintln!("skipped: cannot mount a tmpfs (not root)");
        return;
    };
    let run = disk.0.join("run");
    let o = run_expect(relief(&["run", "-q", "--no-plots"]).arg(&fx.cfg).arg("--out").arg(&run), false);
    let msg = text(&o);
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(msg.contains(&run.display().to_string()), "the error names the run directory: {msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    // What was written before the disk filled is whole, and no temporary file is left.
    let init = Checkpoint::read(&run.join("init.safetensors")).expect("init.safetensors loads");
    assert!(!init.tensors.is_empty());
    let leftovers: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left on the full disk: {leftovers:?}");
    // An export onto the full disk fails and changes nothing in the source run.
    let before = snapshot(&fx.run);
    std::fs::write(disk.0.join("filler"), vec![0u8; 1_500_000]).ok();
    let out = disk.0.join("small.safetensors");
    let o = run_expect(relief(&["export", "--compact"]).arg(fx.ck()).arg("--out").arg(&out), false);
    let msg = text(&o);
    assert!(msg.contains("No space left on device") && !msg.contains("panicked"), "{msg}");
    assert!(!out.exists(), "a partial export was left at {}", out.display());
    assert_eq!(snapshot(&fx.run), before, "the source run changed");
}

// ---------------------------------------------------------------------------------------------
// Specs, sparse and compacted files, sizes and message lengths (the surfaces added last).

/// A sequential MLP spec for MNIST with the hidden layer named `hidden` and `outputs` units.
fn mlp_spec(hidden: &str, outputs: &str) -> String {
    format!(
        "name = \"mlp\"\ninput_shape = [784]\nnum_classes = 10\n\n[[layer]]\nkind = \"linear\"\nname = \"{hidden}\"\n\
         out_features = {outputs}\n\n[[layer]]\nkind = \"relu\"\n\n[[layer]]\nkind = \"linear\"\nname = \"out\"\n\
         out_features = \"classes\"\n"
    )
}

/// The fixture's config with `model` set to the spec at `spec`, written as `name`.
fn config_with_model(fx: &Fx, name: &str, spec: &Path) -> String {
    let text = std::fs::read_to_string(&fx.cfg).unwrap();
    let text = text.replace("model = \"lenet300-100\"", &format!("model = {:?}", spec.display().to_string()));
    let path = fx.root.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// `src` rewritten with its tensors changed by `edit` and its metadata by `meta`.
fn rewrite(
    src: &Path,
    out: &Path,
    edit: impl Fn(&mut Vec<(String, Tensor)>),
    meta: impl Fn(&mut BTreeMap<String, String>),
) {
    let mut tensors = Tensor::read_safetensors(src).unwrap();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut tensors);
    let mut m = relief_core::compact::read_safetensors_metadata(src).unwrap();
    meta(&mut m);
    relief_core::tensor_io::write_safetensors(out, &tensors, &m).unwrap();
}

/// The first CSR row of `name` in a sparse file with at least two entries: (row, offset).
fn row_with_two(tensors: &[(String, Tensor)], name: &str) -> (i64, i64) {
    let crow = &tensors.iter().find(|(k, _)| k == &format!("{name}::crow")).expect("a CSR tensor").1;
    let crow = crow.to_kind(Kind::Int64);
    let rows = crow.size()[0] - 1;
    let r =
        (0..rows).find(|&r| crow.int64_value(&[r + 1]) - crow.int64_value(&[r]) >= 2).expect("a row of two");
    (r, crow.int64_value(&[r]))
}

fn edit_col(tensors: &mut [(String, Tensor)], name: &str, f: impl Fn(&Tensor, i64)) {
    let (_, at) = row_with_two(tensors, name);
    let t = tensors.iter_mut().find(|(k, _)| k == &format!("{name}::col")).unwrap();
    let col = t.1.copy();
    f(&col, at);
    t.1 = col;
}

/// The tree under `dir` (relative path -> bytes); empty when it does not exist.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(p.strip_prefix(base).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// Names of the files that differ between two [`tree`]s.
fn changed(a: &BTreeMap<String, Vec<u8>>, b: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    let names: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    names.into_iter().filter(|n| a.get(*n) != b.get(*n)).cloned().collect()
}

#[test]
fn spec_names_sizes_and_long_quotes_are_refused_before_any_work() {
    let fx = fx();
    let write = |name: &str, text: &str| {
        let p = fx.root.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let mask = write("spec-mask.toml", &mlp_spec("mask", "100"));
    let opt = write("spec-opt.toml", &mlp_spec("opt.fc", "100"));
    let best = write("spec-best.toml", &mlp_spec("best", "100"));
    let ok_name = write("spec-masked.toml", &mlp_spec("masking", "100"));
    let huge = write("spec-huge.toml", &mlp_spec("fc", "16000000"));
    let max = write("spec-max.toml", &mlp_spec("fc", &i64::MAX.to_string()));
    let pad = write(
        "spec-pad.toml",
        "name = \"c\"\ninput_shape = [1, 28, 28]\nnum_classes = 10\n[[layer]]\nkind = \"conv2d\"\nname = \"c\"\n\
         out_channels = 4\nkernel = 3\npadding = 9223372036854775807\n[[layer]]\nkind = \"flatten\"\n[[layer]]\n\
         kind = \"linear\"\nname = \"o\"\nout_features = \"classes\"\n",
    );
    let wide = write(
        "spec-wide.toml",
        "name = \"c\"\ninput_shape = [16777216]\nnum_classes = 10\n[[layer]]\nkind = \"linear\"\nname = \"a\"\n\
         out_features = 16777216\n[[layer]]\nkind = \"linear\"\nname = \"o\"\nout_features = \"classes\"\n",
    );
    let long_line = write("spec-long.toml", &format!("name = \"x\" \"{}\"\n", "y".repeat(10_000_000)));
    let long_name = write("spec-long-name.toml", &mlp_spec(&format!("a-{}", "b".repeat(1_000_000)), "10"));
    let cfg_long = fx.root.join("cfg-long.toml");
    std::fs::write(&cfg_long, format!("model = \"lenet5\" {}\n", "z".repeat(10_000_000))).unwrap();
    let cfg_mask = config_with_model(fx, "cfg-mask.toml", &mask);
    let cfg_huge = config_with_model(fx, "cfg-huge.toml", &huge);
    let cfg_max = config_with_model(fx, "cfg-max.toml", &max);
    let out = fx.p("never-created");
    let s = |p: &PathBuf| p.display().to_string();
    let reserved = ["layer 0 `mask`", "reserve", "rename"];
    battery(vec![
        case("show mask", &["models", "show", &s(&mask)], false, &reserved),
        case("show opt", &["models", "show", &s(&opt)], false, &["layer 0 `opt.fc`", "`opt.`"]),
        case("show best", &["models", "show", &s(&best)], false, &["layer 0 `best`", "`best.`"]),
        case("show masking is fine", &["models", "show", &s(&ok_name)], true, &["masking"]),
        case("run mask", &["run", "-q", &cfg_mask, "--out", &out], false, &reserved),
        // Counting allocates nothing: the terabyte-sized network is shown with its numbers.
        case("show huge", &["models", "show", &s(&huge)], true, &["12,560,000,000"]),
        case("show i64::MAX", &["models", "show", &s(&max)], false, &["out_features", "at most 16777216"]),
        case("show padding i64::MAX", &["models", "show", &s(&pad)], false, &["padding", "at most 16777216"]),
        case("show 2^48 weights", &["models", "show", &s(&wide)], false, &["layer `a`", "2^40"]),
        case(
            "run huge",
            &["run", "-q", &cfg_huge, "--out", &out],
            false,
            &["cannot fit in memory", "12720000010 parameters", "GiB", "available"],
        ),
        case("run i64::MAX", &["run", "-q", &cfg_max, "--out", &out], false, &["at most 16777216"]),
        case("dry run huge", &["run", "--dry-run", &cfg_huge], false, &["cannot fit in memory"]),
        case(
            "show long line",
            &["models", "show", &s(&long_line)],
            false,
            &["spec-long.toml", "characters)"],
        ),
        case("show long name", &["models", "show", &s(&long_name)], false, &["invalid module path", "…"]),
        case("run long config line", &["run", "-q", &s(&cfg_long), "--out", &out], false, &["cfg-long.toml"]),
    ]);
    // Nothing was created by the refusals, and no message quoted megabytes.
    assert!(!fx.root.join("never-created").exists());
    for args in [
        vec!["models".to_string(), "show".into(), s(&long_line)],
        vec!["models".into(), "show".into(), s(&long_name)],
        vec!["run".into(), "-q".into(), s(&cfg_long), "--out".into(), out.clone()],
    ] {
        let o = relief(&[]).args(&args).current_dir(&fx.root).output().unwrap();
        assert!(text(&o).len() < 4000, "{args:?}: {} bytes of output", text(&o).len());
    }
}

#[test]
fn sparse_and_compacted_files_with_bad_indices_or_metadata_are_refused() {
    let fx = fx();
    // The tiny run is too dense for a CSR index: thin its first layer to every 50th weight and
    // write it with relief's sparse writer, as `export --sparse` would.
    let compact = fx.root.join("compact.safetensors");
    let sparse = fx.root.join("sparse.safetensors");
    let w = "classifier.0.weight";
    let (graph, mut tensors) = relief_core::compact::load_compact(&compact).unwrap();
    let dense = &tensors[w];
    let keep = Tensor::arange(dense.numel() as i64, (Kind::Int64, tch::Device::Cpu)).remainder(50).eq(0);
    let thinned = dense * keep.reshape(dense.size()).to_kind(Kind::Float);
    let shape = format!("{:?}", dense.size()).replace(' ', "");
    let cols = dense.size()[1];
    tensors.insert(w.to_string(), thinned);
    let mut extra = relief_core::compact::read_safetensors_metadata(&compact).unwrap();
    extra.retain(|k, _| k != "graph" && k != "format");
    relief_core::compact::save_sparse_with(
        &sparse,
        &graph,
        &tensors,
        &extra,
        relief_core::sparse_file::ValueDtype::F32,
    )
    .unwrap();
    let p = |n: &str| fx.root.join(n);
    let keep = |_: &mut BTreeMap<String, String>| {};
    let same = |_: &mut Vec<(String, Tensor)>| {};
    rewrite(
        &sparse,
        &p("sp-repeat.safetensors"),
        |t| {
            edit_col(t, w, |c, at| {
                let v = c.int64_value(&[at]);
                let _ = c.narrow(0, at + 1, 1).fill_(v);
            })
        },
        keep,
    );
    rewrite(
        &sparse,
        &p("sp-unsorted.safetensors"),
        |t| {
            edit_col(t, w, |c, at| {
                let (a, b) = (c.int64_value(&[at]), c.int64_value(&[at + 1]));
                let _ = c.narrow(0, at, 1).fill_(b);
                let _ = c.narrow(0, at + 1, 1).fill_(a);
            })
        },
        keep,
    );
    rewrite(
        &sparse,
        &p("sp-floatcol.safetensors"),
        |t| {
            let e = t.iter_mut().find(|(k, _)| k == &format!("{w}::col")).unwrap();
            e.1 = e.1.to_kind(Kind::Float);
        },
        keep,
    );
    rewrite(
        &sparse,
        &p("sp-crow.safetensors"),
        |t| {
            let e = t.iter_mut().find(|(k, _)| k == &format!("{w}::crow")).unwrap();
            let c = e.1.copy();
            let _ = c.narrow(0, 1, 1).fill_(-5);
            e.1 = c;
        },
        keep,
    );
    rewrite(
        &sparse,
        &p("sp-stray.safetensors"),
        |t| {
            t.push(("ghost::col".into(), Tensor::zeros([1], (Kind::Int, tch::Device::Cpu))));
        },
        keep,
    );
    rewrite(
        &sparse,
        &p("sp-values-nan.safetensors"),
        |t| {
            let e = t.iter_mut().find(|(k, _)| k == &format!("{w}::values")).unwrap();
            e.1 = set_first(&e.1, f64::NAN);
        },
        keep,
    );
    let shape_edit = |to: String| {
        let from = shape.clone();
        move |m: &mut BTreeMap<String, String>| {
            let s = m.get_mut("sparse").expect("sparse metadata");
            assert!(s.contains(&from), "{s}");
            *s = s.replacen(&from, &to, 1);
        }
    };
    rewrite(
        &sparse,
        &p("sp-shape-string.safetensors"),
        same,
        shape_edit(shape.replacen('[', "[\"", 1).replacen(',', "\",", 1)),
    );
    rewrite(
        &sparse,
        &p("sp-shape-huge.safetensors"),
        same,
        shape_edit(format!("[4611686018427387904,{}]", cols)),
    );
    rewrite(&sparse, &p("sp-meta-json.safetensors"), same, |m| {
        m.insert("sparse".into(), "{not json".into());
    });
    rewrite(&compact, &p("cp-graph-json.safetensors"), same, |m| {
        m.insert("graph".into(), "[1, 2".into());
    });
    rewrite(&compact, &p("cp-no-graph.safetensors"), same, |m| {
        m.remove("graph");
    });
    let bytes = std::fs::read(&sparse).unwrap();
    std::fs::write(p("sp-truncated.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    std::fs::write(p("sp-header-only.safetensors"), &bytes[..12]).unwrap();
    let cbytes = std::fs::read(fx.ck()).unwrap();
    std::fs::write(p("ck-truncated.safetensors"), &cbytes[..cbytes.len() / 2]).unwrap();
    let data = mnist_sample().display().to_string();
    let eval = |f: &str| -> Vec<String> {
        ["eval", &fx.p(f), "--data", &data, "--test-limit", "100"].iter().map(|s| s.to_string()).collect()
    };
    let c = |name: &'static str, f: &str, has: &[&str]| Case {
        name,
        args: eval(f),
        ok: false,
        has: std::iter::once(f.to_string()).chain(has.iter().map(|s| s.to_string())).collect(),
        lacks: vec!["MetadataIncompleteBuffer", "InvalidHeader", "TypeError"],
    };
    battery(vec![
        case(
            "sparse itself is fine",
            &eval("sparse.safetensors").iter().map(String::as_str).collect::<Vec<_>>(),
            true,
            &[],
        ),
        c("repeated column", "sp-repeat.safetensors", &[w, "strictly increasing", "row "]),
        c("unsorted columns", "sp-unsorted.safetensors", &[w, "strictly increasing"]),
        c("float column index", "sp-floatcol.safetensors", &["::col", "expected int16"]),
        c("bad row offsets", "sp-crow.safetensors", &[w, "row offsets"]),
        c("stray index tensor", "sp-stray.safetensors", &["ghost::col", "belongs to no entry"]),
        c("nan value", "sp-values-nan.safetensors", &[w, "NaN"]),
        c("shape entry string", "sp-shape-string.safetensors", &["sparse"]),
        c("shape overflow", "sp-shape-huge.safetensors", &[w, "invalid shape"]),
        c("sparse metadata not json", "sp-meta-json.safetensors", &["sparse"]),
        c("graph not json", "cp-graph-json.safetensors", &["graph"]),
        c("no graph", "cp-no-graph.safetensors", &["graph"]),
        c("truncated sparse", "sp-truncated.safetensors", &["truncated"]),
        c("header only", "sp-header-only.safetensors", &["safetensors"]),
        c("truncated checkpoint", "ck-truncated.safetensors", &["truncated"]),
    ]);
}

#[test]
fn an_edited_spec_is_refused_on_resume_with_advice_that_works() {
    let fx = fx();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("net.toml");
    std::fs::write(&spec, mlp_spec("fc", "20")).unwrap();
    let cfg_text = std::fs::read_to_string(&fx.cfg)
        .unwrap()
        .replace("model = \"lenet300-100\"", &format!("model = {:?}", spec.display().to_string()))
        .replace("iterations = 1", "iterations = 2");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let run = dir.path().join("run");
    // One iteration done, then the spec is edited.
    run_expect(
        relief(&["run", "-q", "--no-plots", "--set", "prune.iterations=1"]).arg(&cfg).arg("--out").arg(&run),
        true,
    );
    let before = tree(&run);
    std::fs::write(&spec, mlp_spec("fc", "21")).unwrap();
    let out = run_expect(relief(&["prune", "--resume"]).arg(&run), false);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("differs from the run's copy") && t.contains("cp ") && t.contains("model.toml"),
        "{t}"
    );
    assert!(!t.contains("`relief prune --resume"), "advises the command that just failed: {t}");
    // (run.lock holds the pid of the last process that opened the directory.)
    let changed: Vec<String> =
        changed(&before, &tree(&run)).into_iter().filter(|n| n != "run.lock").collect();
    assert_eq!(changed, Vec::<String>::new(), "files of the run directory changed");
    // The advice works: restore the spec from the run's copy and resume.
    std::fs::copy(run.join("model.toml"), &spec).unwrap();
    run_expect(relief(&["prune", "--resume"]).arg(&run), true);
}
