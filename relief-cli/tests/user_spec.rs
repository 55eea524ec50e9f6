//! A network that is not in the zoo, described by a spec file (`examples/specs/small-resnet.toml`:
//! a small CNN with two residual blocks, one of them an option-B downsampling block, and a
//! two-layer MLP head), taken through the whole product as a new user would: `relief run` with
//! `model = "nets/small-resnet.toml"` (a path relative to the working directory) trains, prunes
//! and retrains it on the MNIST sample; `relief export --compact` compacts the last checkpoint
//! without the spec file (it travels in the checkpoint's metadata); `relief eval` of the
//! compacted file gives the masked checkpoint's accuracy; editing the spec makes the run
//! directory refuse to resume as the same experiment.

mod common;

use std::path::{Path, PathBuf};

fn spec_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs/small-resnet.toml")
}

fn eval_json(cwd: &Path, file: &Path) -> serde_json::Value {
    let out = common::run_expect(
        common::relief(&["eval", "--device", "cpu", "--test-limit", "300", "--json", "--data"])
            .arg(common::mnist_sample())
            .arg(file)
            .current_dir(cwd),
        true,
    );
    serde_json::from_slice(&out.stdout).expect("eval --json prints JSON")
}

#[test]
fn a_user_spec_trains_prunes_compacts_and_evaluates_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    std::fs::create_dir(cwd.join("nets")).unwrap();
    std::fs::copy(spec_file(), cwd.join("nets/small-resnet.toml")).unwrap();
    let cfg = common::tiny_config(cwd, 1, 2);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("model = \"lenet300-100\"", "model = \"nets/small-resnet.toml\"");
    std::fs::write(&cfg, text).unwrap();

    let out = common::run_expect(
        common::relief(&["run", "--no-plots"]).arg(&cfg).args(["--out", "run"]).current_dir(cwd),
        true,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The table: the dense row and both iterations, under the spec's name.
    assert!(stdout.contains("small-resnet"), "{stdout}");
    for iteration in ["0", "1", "2"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(iteration)),
            "row {iteration} in\n{stdout}"
        );
    }
    let run = cwd.join("run");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap();
    let rows = metrics["rows"].as_array().or_else(|| metrics.as_array()).expect("metrics rows");
    assert_eq!(rows.len(), 3, "{metrics}");

    // The spec travels with the checkpoint: move the spec file away, then compact and evaluate.
    std::fs::rename(cwd.join("nets"), cwd.join("nets-gone")).unwrap();
    let last = run.join("iter-002.safetensors");
    let small = cwd.join("small.safetensors");
    common::run_expect(
        common::relief(&["export", "--check", "16", "--compact"]).arg(&last).arg("--out").arg(&small),
        true,
    );
    let masked = eval_json(cwd, &last);
    let compacted = eval_json(cwd, &small);
    assert_eq!(masked["arch"], "small-resnet");
    assert_eq!(compacted["arch"], "small-resnet");
    assert_eq!(compacted["compacted"], true);
    assert_eq!(masked["test_accuracy"], compacted["test_accuracy"], "same predictions on real digits");
    let acc = compacted["test_accuracy"].as_f64().unwrap();
    assert!(acc > 30.0, "a trained network beats chance (10 %) clearly: {acc} %");
    let c = &compacted["compaction"];
    assert!(c["compact_params"].as_i64().unwrap() < c["dense_params"].as_i64().unwrap(), "{c}");
    assert_eq!(
        c["dense_params"].as_i64().unwrap(),
        55_698,
        "prunable weights and biases (relief models show)"
    );

    // An edited spec is another experiment: the run directory refuses to resume it.
    std::fs::rename(cwd.join("nets-gone"), cwd.join("nets")).unwrap();
    let spec = cwd.join("nets/small-resnet.toml");
    let edited =
        std::fs::read_to_string(&spec).unwrap().replacen("out_features = 64", "out_features = 32", 1);
    std::fs::write(&spec, edited).unwrap();
    let out = common::run_expect(
        common::relief(&["run", "-q", "--no-plots"]).arg(&cfg).args(["--out", "run"]).current_dir(cwd),
        false,
    );
    let msg = common::text(&out);
    assert!(msg.contains("holds a run with a different config"), "{msg}");
    assert!(msg.contains("differs from the run's copy") && msg.contains("model.toml"), "{msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    // Restored, the spec resumes the run (nothing left to do: the same table).
    std::fs::write(&spec, std::fs::read_to_string(spec_file()).unwrap()).unwrap();
    let out = common::run_expect(
        common::relief(&["run", "--no-plots"]).arg(&cfg).args(["--out", "run"]).current_dir(cwd),
        true,
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("small-resnet"));
}

#[test]
fn a_bad_spec_in_a_config_is_refused_before_any_work_naming_the_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let bad = std::fs::read_to_string(spec_file()).unwrap().replace("out_channels = 8", "out_channels = 0");
    std::fs::write(cwd.join("bad.toml"), bad).unwrap();
    let cfg = common::tiny_config(cwd, 1, 1);
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"lenet300-100\"", "\"bad.toml\"");
    std::fs::write(&cfg, text).unwrap();
    let out = common::run_expect(
        common::relief(&["run", "-q", "--no-plots"]).arg(&cfg).args(["--out", "run"]).current_dir(cwd),
        false,
    );
    assert_eq!(out.status.code(), Some(1));
    let msg = common::text(&out);
    assert!(msg.contains("model = \"bad.toml\"") && msg.contains("layer 0 `stem.conv`"), "{msg}");
    assert!(!cwd.join("run").exists(), "nothing is created for an invalid plan");
}

#[test]
fn a_resnet_style_spec_without_a_stem_is_refused_under_reference_semantics() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let spec = std::fs::read_to_string(spec_file()).unwrap();
    let no_stem: String =
        spec.lines().filter(|l| !l.starts_with("stem = true")).collect::<Vec<_>>().join("\n");
    assert_ne!(no_stem, spec);
    std::fs::write(cwd.join("nostem.toml"), no_stem).unwrap();
    let cfg = common::tiny_config(cwd, 1, 1);
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"lenet300-100\"", "\"nostem.toml\"");
    std::fs::write(&cfg, text).unwrap();
    let run = |extra: &[&str], ok: bool| {
        common::run_expect(
            common::relief(&["run", "-q", "--no-plots", "--dry-run"]).arg(&cfg).args(extra).current_dir(cwd),
            ok,
        )
    };
    let msg = common::text(&run(&[], false));
    assert!(msg.contains("stem = true") && msg.contains("prune.semantics = \"paper\""), "{msg}");
    // Paper semantics, or magnitude pruning, have no stem rule.
    run(&["--set", "prune.semantics=paper"], true);
    run(&["--set", "prune.method=magnitude"], true);
}
