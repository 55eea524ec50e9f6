//! `prune.magnitude_match`: the magnitude baseline at equal budget. A magnitude run matched to an
//! NNrelief run keeps, at every iteration and in every layer, exactly as many weights as the
//! NNrelief run did; validation refuses misuse and names the key.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use relief_experiment::checkpoint::Checkpoint;
use tch::{Kind, Tensor};

/// The weight masks (`mask.<layer>.weight`) of a run's iteration checkpoint.
fn weight_masks(run: &Path, it: usize) -> BTreeMap<String, Tensor> {
    let ck = Checkpoint::read(&run.join(format!("iter-{it:03}.safetensors"))).unwrap();
    ck.tensors
        .iter()
        .filter(|(k, _)| k.starts_with("mask.") && k.ends_with(".weight"))
        .map(|(k, t)| (k.clone(), t.to_kind(Kind::Float)))
        .collect()
}

fn kept(t: &Tensor) -> i64 {
    t.ne(0.0).sum(Kind::Int64).int64_value(&[])
}

#[test]
fn matched_magnitude_run_keeps_the_nnrelief_counts_per_layer_and_iteration() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 2);
    let nn = tmp.path().join("nnrelief");
    run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&nn), true);
    let mag = tmp.path().join("magnitude");
    let matched = format!("prune.magnitude_match={}", nn.display());
    let out = run_expect(
        relief(&["prune", "--no-plots", "--set", "prune.method=magnitude", "--set", &matched])
            .arg("--pretrained")
            .arg(nn.join("iter-000.safetensors"))
            .arg(&cfg)
            .arg("--out")
            .arg(&mag),
        true,
    );
    assert!(text(&out).contains("equal budget"), "{}", text(&out));
    let resolved = std::fs::read_to_string(mag.join("config.resolved.toml")).unwrap();
    assert!(resolved.contains("magnitude_match"), "{resolved}");
    let dense = weight_masks(&nn, 0);
    assert_eq!(dense.len(), 3, "{:?}", dense.keys());
    let w0 = Checkpoint::read(&nn.join("iter-000.safetensors")).unwrap();
    let mut pruned_somewhere = false;
    let mut differs_somewhere = false;
    for it in 1..=2 {
        let a = weight_masks(&nn, it);
        let b = weight_masks(&mag, it);
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (name, m) in &a {
            let (ka, kb) = (kept(m), kept(&b[name]));
            assert_eq!(ka, kb, "iteration {it}, {name}: NNrelief kept {ka}, magnitude {kb}");
            pruned_somewhere |= ka < m.numel() as i64;
            differs_somewhere |= !m.equal(&b[name]);
            // Masks only shrink.
            let prev = weight_masks(&mag, it - 1);
            assert!(bool::try_from(b[name].le_tensor(&prev[name]).all()).unwrap(), "{name}");
        }
    }
    assert!(pruned_somewhere, "the NNrelief run pruned nothing: the test would prove nothing");
    assert!(differs_somewhere, "magnitude chose exactly NNrelief's weights everywhere");
    // Iteration 1 prunes the (shared) dense model by |w|: the kept weights are the largest.
    let b = weight_masks(&mag, 1);
    for (name, m) in &b {
        let layer = name.strip_prefix("mask.").unwrap();
        let w = w0.tensors.iter().find(|(k, _)| k == layer).unwrap().1.abs();
        let on = w.masked_select(&m.ne(0.0));
        let off = w.masked_select(&m.eq(0.0));
        if on.numel() > 0 && off.numel() > 0 {
            assert!(on.min().double_value(&[]) >= off.max().double_value(&[]), "{name}");
        }
    }
}

#[test]
fn a_matched_run_that_has_not_reached_the_iteration_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 1);
    let nn = tmp.path().join("nnrelief");
    run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&nn), true);
    // Pretend the NNrelief run is still at iteration 0 of 1.
    std::fs::remove_file(nn.join("iter-001.safetensors")).unwrap();
    let matched = format!("prune.magnitude_match={}", nn.display());
    let out = run_expect(
        relief(&["prune", "-q", "--no-plots", "--set", "prune.method=magnitude", "--set", &matched])
            .arg("--pretrained")
            .arg(nn.join("iter-000.safetensors"))
            .arg(&cfg)
            .arg("--out")
            .arg(tmp.path().join("magnitude")),
        false,
    );
    let all = text(&out);
    assert!(all.contains("iter-001.safetensors"), "{all}");
    assert!(all.contains("has not completed iteration 1"), "{all}");
}

#[test]
fn misuse_is_refused_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 2);
    let somewhere = tmp.path().join("not-a-run");
    std::fs::create_dir(&somewhere).unwrap();
    let matched = format!("prune.magnitude_match={}", somewhere.display());
    // With NNrelief.
    let out = run_expect(relief(&["run", "--dry-run", "--set", &matched]).arg(&cfg), false);
    let all = text(&out);
    assert!(all.contains("prune.magnitude_match") && all.contains("prune.method"), "{all}");
    // A directory that is not a run.
    let out = run_expect(
        relief(&["run", "--dry-run", "--set", "prune.method=magnitude", "--set", &matched]).arg(&cfg),
        false,
    );
    let all = text(&out);
    assert!(all.contains("prune.magnitude_match") && all.contains("not a relief run directory"), "{all}");
    // No such directory.
    let matched = format!("prune.magnitude_match={}", tmp.path().join("missing").display());
    let out = run_expect(
        relief(&["run", "--dry-run", "--set", "prune.method=magnitude", "--set", &matched]).arg(&cfg),
        false,
    );
    let all = text(&out);
    assert!(all.contains("prune.magnitude_match") && all.contains("no such directory"), "{all}");
}
