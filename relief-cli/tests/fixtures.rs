//! Golden fixtures: `relief prune-step` in `reference` semantics must reproduce every `mask.*`
//! and `after.*` tensor produced by the authors' own code (../shared/fixtures/nnrelief), on the
//! CPU and (tests marked `ignore`, run with `-- --ignored` on a CUDA machine) on CUDA.
//!
//! `RELIEF_FIXTURES` overrides the fixtures' directory and `RELIEF_BIN` the `relief` binary
//! (for running a copied test binary on another machine).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use tch::{Kind, Tensor};

fn fixtures_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("RELIEF_FIXTURES") {
        return PathBuf::from(dir);
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/nnrelief");
    assert!(
        dir.is_dir(),
        "golden fixtures not found at {} (set RELIEF_FIXTURES to their directory)",
        dir.display()
    );
    dir
}

fn load(path: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).into_iter().collect()
}

fn relief_bin() -> PathBuf {
    std::env::var_os("RELIEF_BIN").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_relief").into())
}

/// Runs prune-step on fixture `name` on `device`; returns (fixture tensors, our tensors).
fn run_fixture(name: &str, device: &str) -> (HashMap<String, Tensor>, HashMap<String, Tensor>) {
    let dir = fixtures_dir();
    let file = dir.join(format!("{name}.safetensors"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let model = meta["model"].as_str().unwrap().to_lowercase();
    let model = match model.as_str() {
        "lenet300_100" | "lenet300-100" => "lenet300-100".to_string(),
        other => other.to_string(),
    };
    let classes = meta["num_classes"].as_i64().unwrap();
    let alpha_conv = meta["alpha_conv"].as_f64().unwrap_or(0.9);
    let alpha_fc = meta["alpha_fc"].as_f64().unwrap();
    let out = tempfile::tempdir().unwrap();
    let out_file = out.path().join("out.safetensors");
    let status = Command::new(relief_bin())
        .args(["prune-step", "--model", &model, "--num-classes", &classes.to_string()])
        .arg("--weights")
        .arg(&file)
        .args(["--weights-prefix", "before."])
        .arg("--batch")
        .arg(&file)
        .args(["--alpha-conv", &alpha_conv.to_string(), "--alpha-fc", &alpha_fc.to_string()])
        .args(["--semantics", "reference", "--device", device, "--chunk-size", "100000"])
        .arg("--out")
        .arg(&out_file)
        .status()
        .unwrap();
    assert!(status.success(), "prune-step failed on {name} ({device})");
    (load(&file), load(&out_file))
}

fn check_fixture(name: &str) {
    check_fixture_on(name, "cpu");
}

fn check_fixture_on(name: &str, device: &str) {
    let (fix, ours) = run_fixture(name, device);
    let mut masks = 0;
    let mut mismatched_entries = 0i64;
    for (key, expected) in fix.iter().filter(|(k, _)| k.starts_with("mask.")) {
        let got = ours.get(key).unwrap_or_else(|| panic!("{name}: we wrote no {key}"));
        assert_eq!(got.size(), expected.size(), "{name}: {key} shape");
        let diff = got.ne_tensor(expected).sum(Kind::Int64).int64_value(&[]);
        if diff > 0 {
            eprintln!("{name}: {key}: {diff} entries differ");
        }
        mismatched_entries += diff;
        masks += 1;
    }
    let ours_masks = ours.keys().filter(|k| k.starts_with("mask.")).count();
    assert_eq!(ours_masks, masks, "{name}: we wrote masks the fixture does not have");
    assert_eq!(mismatched_entries, 0, "{name}: mask entries differ from the authors' code");

    let mut afters = 0;
    for (key, before) in fix.iter().filter(|(k, _)| k.starts_with("before.")) {
        let k = &key["before.".len()..];
        let expected = match fix.get(&format!("after.{k}")) {
            Some(t) => t.shallow_clone(),
            None => {
                let m =
                    fix.get(&format!("mask.{k}")).unwrap_or_else(|| panic!("{name}: no after/mask for {k}"));
                before * m.to_kind(before.kind())
            }
        };
        let got = ours.get(&format!("after.{k}")).unwrap_or_else(|| panic!("{name}: we wrote no after.{k}"));
        assert_eq!(got.size(), expected.size(), "{name}: after.{k} shape");
        let diff = got.to_kind(Kind::Double).ne_tensor(&expected.to_kind(Kind::Double)).sum(Kind::Int64);
        assert_eq!(diff.int64_value(&[]), 0, "{name}: after.{k} differs from the authors' code");
        afters += 1;
    }
    assert!(masks > 0 && afters > 0);
    eprintln!("{name} ({device}): {masks} masks and {afters} after-state tensors identical to the reference");
}

#[test]
fn lenet300_100_matches_reference() {
    check_fixture("lenet300-100");
}

#[test]
fn lenet5_matches_reference() {
    check_fixture("lenet5");
}

#[test]
fn vgg_like_matches_reference() {
    check_fixture("vgg-like");
}

#[test]
fn vgg11_c100_matches_reference() {
    check_fixture("vgg11-c100");
}

#[test]
fn resnet20_matches_reference() {
    check_fixture("resnet20");
}

#[test]
#[ignore = "needs CUDA"]
fn cuda_lenet300_100_matches_reference() {
    check_fixture_on("lenet300-100", "cuda");
}

#[test]
#[ignore = "needs CUDA"]
fn cuda_lenet5_matches_reference() {
    check_fixture_on("lenet5", "cuda");
}

#[test]
#[ignore = "needs CUDA"]
fn cuda_vgg_like_matches_reference() {
    check_fixture_on("vgg-like", "cuda");
}

#[test]
#[ignore = "needs CUDA"]
fn cuda_vgg11_c100_matches_reference() {
    check_fixture_on("vgg11-c100", "cuda");
}

#[test]
#[ignore = "needs CUDA"]
fn cuda_resnet20_matches_reference() {
    check_fixture_on("resnet20", "cuda");
}
