//! `relief export --compact`: a masked checkpoint becomes a smaller model file that reloads
//! with `load_compact` and computes the masked model's logits.

mod common;

use std::path::Path;
use std::process::Command;

use relief_core::compact::load_compact;
use relief_core::exec::{forward, ForwardOptions};
use relief_core::params::Bound;
use relief_core::{prune_step, MaskSet, PruneConfig, Semantics};
use relief_experiment::checkpoint::Checkpoint;
use relief_models::{Arch, Model};
use tch::{Device, Kind, Tensor};

fn pruned(arch: &str) -> (Model, MaskSet) {
    let arch: Arch = arch.parse().unwrap();
    let model = Model::new(arch, 10, Device::Cpu, 5);
    let mut shape = vec![32];
    shape.extend(arch.input_shape());
    let batch = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu)).abs();
    let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
    let cfg = PruneConfig { alpha_conv: 0.8, alpha_fc: 0.9, semantics: Semantics::Reference, chunk_size: 64 };
    prune_step(&model.graph, &model.params(), &mut masks, &batch, &cfg).unwrap();
    (model, masks)
}

/// Writes `model` and `masks` as a relief checkpoint `ck.safetensors` in `dir`, with metadata.
fn write_checkpoint(
    dir: &std::path::Path,
    model: &Model,
    masks: &MaskSet,
    meta: &[(&str, &str)],
) -> std::path::PathBuf {
    let path = dir.join("ck.safetensors");
    let mut ck = Checkpoint::new();
    ck.put_model(model, masks);
    for (k, v) in meta {
        ck.set(k, v);
    }
    ck.write(&path).unwrap();
    path
}

fn export(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_relief")).arg("export").args(args).output().unwrap();
    assert!(out.status.success(), "relief export failed: {}", String::from_utf8_lossy(&out.stderr));
    out
}

fn assert_same_logits(model: &Model, masks: &MaskSet, file: &std::path::Path) {
    let (graph, tensors) = load_compact(file).unwrap();
    assert!(graph.layers.iter().zip(&model.graph.layers).any(|(a, b)| a.op != b.op), "nothing was removed");
    let mut shape = vec![8];
    shape.extend(model.arch.input_shape());
    let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
    let bound = Bound::new(&graph, &tensors).unwrap();
    let (a, b) = tch::no_grad(|| {
        (
            forward(&model.graph, &model.bound(), Some(masks), &x, ForwardOptions::EVAL, None),
            forward(&graph, &bound, None, &x, ForwardOptions::EVAL, None),
        )
    });
    let diff = (&a - &b).abs().max().double_value(&[]);
    assert!(diff <= 1e-5 * a.abs().max().double_value(&[]).max(1.0), "logits differ by {diff:e}");
}

#[test]
fn exports_a_relief_checkpoint() {
    let (model, masks) = pruned("resnet20");
    let dir = tempfile::tempdir().unwrap();
    let ck_path = write_checkpoint(dir.path(), &model, &masks, &[]);
    let out_path = dir.path().join("small.safetensors");
    let out = export(&[
        "--compact",
        ck_path.to_str().unwrap(),
        "--out",
        out_path.to_str().unwrap(),
        "--check",
        "4",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("check: max |logit difference|"), "{stdout}");
    assert_same_logits(&model, &masks, &out_path);
}

#[test]
fn exports_plain_safetensors_with_flags() {
    let (model, masks) = pruned("lenet5");
    let dir = tempfile::tempdir().unwrap();
    let ck_path = dir.path().join("plain.safetensors");
    let mut tensors = model.state("");
    tensors.extend(masks.export("mask.", true));
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    Tensor::write_safetensors(&refs, &ck_path).unwrap();
    let out_path = dir.path().join("small.safetensors");
    export(&[
        "--compact",
        ck_path.to_str().unwrap(),
        "--model",
        "lenet5",
        "--num-classes",
        "10",
        "--out",
        out_path.to_str().unwrap(),
    ]);
    assert_same_logits(&model, &masks, &out_path);
}

#[test]
fn missing_architecture_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let ck_path = dir.path().join("plain.safetensors");
    let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&[("x", &t)], &ck_path).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_relief"))
        .args(["export", "--compact", ck_path.to_str().unwrap(), "--out", "/nonexistent/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
}

fn eval_json(file: &std::path::Path) -> serde_json::Value {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist-sample");
    let out = Command::new(env!("CARGO_BIN_EXE_relief"))
        .arg("eval")
        .arg(file)
        .args(["--device", "cpu", "--test-limit", "500", "--json", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "relief eval failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_reads_compacted_models_and_agrees_with_the_masked_checkpoint() {
    let (model, masks) = pruned("lenet5");
    let dir = tempfile::tempdir().unwrap();
    let ck_path = write_checkpoint(dir.path(), &model, &masks, &[("dataset", "mnist")]);
    let small = dir.path().join("small.safetensors");
    export(&["--compact", ck_path.to_str().unwrap(), "--out", small.to_str().unwrap()]);

    let masked = eval_json(&ck_path);
    let compacted = eval_json(&small);
    assert_eq!(masked["compacted"], false);
    assert_eq!(compacted["compacted"], true);
    assert_eq!(compacted["arch"], "lenet5");
    assert_eq!(compacted["test_examples"], 500);
    // Same predictions on real digits (logits agree to 1e-5, see the tests above).
    assert_eq!(masked["test_accuracy"], compacted["test_accuracy"]);
    let c = &compacted["compaction"];
    let (dense, small_params) = (c["dense_params"].as_i64().unwrap(), c["compact_params"].as_i64().unwrap());
    assert_eq!(dense, masked["params_total"].as_i64().unwrap(), "LeNet-5 counts every weight and bias");
    assert!(small_params < dense, "compaction removed nothing: {c}");
    // The compacted model is dense: everything it has is alive, and it has what the export made.
    assert_eq!(compacted["params_alive"], compacted["params_total"]);
    assert_eq!(compacted["params_total"].as_i64().unwrap(), small_params);
    assert!(c["compact_flops"].as_i64().unwrap() < c["dense_flops"].as_i64().unwrap());
}

/// A tiny real run (1 epoch, 1 iteration) in `tmp/run`.
fn tiny_run(tmp: &Path) -> std::path::PathBuf {
    let cfg = common::tiny_config(tmp, 1, 1);
    let run = tmp.join("run");
    common::run_expect(common::relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
    run
}

/// Runs `relief export --compact input --out out`, expects a refusal naming `named` and saying
/// what to do, and checks that `protected` is byte-for-byte as it was.
fn assert_refused(input: &Path, out: &Path, named: &Path, protected: &[&Path]) -> String {
    let before: Vec<Vec<u8>> = protected.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let o =
        common::run_expect(common::relief(&["export", "--compact"]).arg(input).arg("--out").arg(out), false);
    let msg = common::text(&o);
    assert!(msg.contains(&named.display().to_string()), "{msg}");
    assert!(msg.contains("Choose"), "says what to do: {msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    for (p, b) in protected.iter().zip(&before) {
        assert_eq!(&std::fs::read(p).unwrap(), b, "{} was modified", p.display());
    }
    msg
}

#[test]
fn export_never_overwrites_the_input_or_a_run_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    let iter1 = run.join("iter-001.safetensors");
    let iter0 = run.join("iter-000.safetensors");
    let init = run.join("init.safetensors");

    // The command: the output is the input.
    let msg = assert_refused(&iter1, &iter1, &iter1, &[&iter1]);
    assert!(msg.contains("is the input checkpoint itself"), "{msg}");
    // The same file reached through a symbolic link, a hard link and a `..` detour.
    let link = tmp.path().join("link.safetensors");
    std::os::unix::fs::symlink(&iter1, &link).unwrap();
    let msg = assert_refused(&iter1, &link, &link, &[&iter1]);
    assert!(msg.contains("is the input checkpoint itself"), "{msg}");
    let hard = tmp.path().join("hard.safetensors");
    std::fs::hard_link(&iter1, &hard).unwrap();
    let msg = assert_refused(&hard, &iter1, &iter1, &[&iter1]);
    assert!(msg.contains("is the input checkpoint itself"), "{msg}");
    let detour = run.join("..").join("run").join("iter-001.safetensors");
    assert_refused(&iter1, &detour, &detour, &[&iter1]);

    // Another checkpoint of the run.
    let msg = assert_refused(&iter1, &iter0, &iter0, &[&iter0, &iter1]);
    assert!(msg.contains("relief run checkpoint (kind `iteration`)"), "{msg}");
    let msg = assert_refused(&iter1, &init, &init, &[&init]);
    assert!(msg.contains("kind `init`"), "{msg}");

    // A run checkpoint copied out of its run directory is still protected by its header.
    let copy = tmp.path().join("copy.safetensors");
    std::fs::copy(&iter0, &copy).unwrap();
    let msg = assert_refused(&iter1, &copy, &copy, &[&copy]);
    assert!(msg.contains("relief run checkpoint"), "{msg}");

    // Any other existing file of a run directory.
    for name in ["config.resolved.toml", "metrics.json", "relief.log"] {
        let f = run.join(name);
        let msg = assert_refused(&iter1, &f, &f, &[&f]);
        assert!(msg.contains("inside the relief run directory"), "{msg}");
    }

    // A new file is fine, even inside the run directory; and a plain file elsewhere can be
    // overwritten.
    let small = run.join("compact.safetensors");
    export(&["--compact", iter1.to_str().unwrap(), "--out", small.to_str().unwrap()]);
    assert!(small.is_file());
    let elsewhere = tmp.path().join("small.safetensors");
    std::fs::write(&elsewhere, b"old").unwrap();
    export(&["--compact", iter1.to_str().unwrap(), "--out", elsewhere.to_str().unwrap()]);
    load_compact(&elsewhere).unwrap();
}

/// The bytes a sparse file must hold, computed independently from the dense compacted tensors:
/// every float tensor's non-zero entries (weights, `>= 2` dims, stored sparse) or all entries
/// (the rest) at `value_bytes` each, plus for each weight the cheaper of CSR (int32 offsets,
/// int16 columns) and a bitmask.
fn payload_bytes(file: &Path, value_bytes: u64) -> u64 {
    let (_, tensors) = load_compact(file).unwrap();
    let mut total = 0;
    for t in tensors.values().filter(|t| t.is_floating_point()) {
        let n = t.numel() as u64;
        let dims = t.size();
        if dims.len() >= 2 {
            let nnz = t.ne(0.0).sum(Kind::Int64).int64_value(&[]) as u64;
            let index = (4 * (dims[0] as u64 + 1) + 2 * nnz).min(n.div_ceil(8));
            total += (nnz * value_bytes + index).min(n * value_bytes);
        } else {
            total += n * value_bytes;
        }
    }
    total
}

#[test]
fn sparse_export_is_as_small_as_the_alive_weights_and_evaluates_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    let iter1 = run.join("iter-001.safetensors");
    let compact = tmp.path().join("compact.safetensors");
    let sparse = tmp.path().join("sparse.safetensors");
    let half = tmp.path().join("half.safetensors");
    export(&["--compact", iter1.to_str().unwrap(), "--out", compact.to_str().unwrap()]);
    let out = export(&[
        "--check",
        "16",
        "--sparse",
        "--compact",
        iter1.to_str().unwrap(),
        "--out",
        sparse.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sparse (F32)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    export(&[
        "--check",
        "16",
        "--sparse",
        "--dtype",
        "f16",
        "--compact",
        iter1.to_str().unwrap(),
        "--out",
        half.to_str().unwrap(),
    ]);

    // Decoded, the sparse file is exactly the compacted model.
    let (g1, t1) = load_compact(&compact).unwrap();
    let (g2, t2) = load_compact(&sparse).unwrap();
    assert_eq!(g1, g2);
    assert_eq!(t1.len(), t2.len());
    for (k, t) in &t1 {
        assert!(t2[k].equal(t), "{k}");
    }
    // Size: at most 1.3x the values and indices it must hold; smaller than the compacted file.
    let size = |p: &Path| std::fs::metadata(p).unwrap().len();
    let need = payload_bytes(&compact, 4);
    assert!(size(&sparse) as f64 <= 1.3 * need as f64, "{} bytes for {need} bytes of payload", size(&sparse));
    assert!(size(&sparse) < size(&compact) && size(&half) < size(&sparse));
    assert!(size(&half) as f64 <= 1.3 * payload_bytes(&compact, 2) as f64);

    // `relief eval`: the same accuracy from the sparse file; float16 within a point.
    let (c, s, h) = (eval_json(&compact), eval_json(&sparse), eval_json(&half));
    assert_eq!(c["test_accuracy"], s["test_accuracy"]);
    assert_eq!(s["compacted"], true);
    let gap = (c["test_accuracy"].as_f64().unwrap() - h["test_accuracy"].as_f64().unwrap()).abs();
    assert!(gap <= 1.0, "float16 changed the accuracy by {gap} points");
    // --dtype without --sparse is refused by the argument parser.
    let o = Command::new(env!("CARGO_BIN_EXE_relief"))
        .args(["export", "--dtype", "f16", "--compact"])
        .arg(&iter1)
        .arg("--out")
        .arg(tmp.path().join("x.safetensors"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
}
