//! End-to-end: `relief run`, `eval`, `report`, `prune --pretrained` and config errors, on a tiny
//! real experiment (LeNet-300-100 on the bundled MNIST sample).

mod common;

use common::*;

#[test]
fn run_writes_a_complete_run_directory_and_eval_agrees() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 2, 2);
    let run = tmp.path().join("run");
    let out = run_expect(relief(&["run"]).arg(&cfg).arg("--out").arg(&run), true);
    let all = text(&out);
    assert!(all.contains(&format!("run directory {}", run.display())), "{all}");
    // Not a terminal: plain progress lines, one per epoch.
    assert!(all.contains("[train] epoch 1/2"), "{all}");
    assert!(all.contains("[iter 2 retrain] epoch 2/2"), "{all}");
    // The paper-style summary.
    assert!(all.contains("acc retrained %") && all.contains("FLOPs pruned %"), "{all}");
    for f in [
        "config.resolved.toml",
        "relief.log",
        "init.safetensors",
        "iter-000.safetensors",
        "iter-001.safetensors",
        "iter-002.safetensors",
        "metrics.csv",
        "metrics.json",
        "summary.txt",
        "plots/accuracy.svg",
        "plots/accuracy.png",
        "plots/layers.svg",
        "plots/layers.png",
    ] {
        assert!(run.join(f).is_file(), "missing {f}");
    }
    assert!(!run.join("state.safetensors").exists(), "phase state is dropped after the last iteration");
    let m = metrics(&run);
    let rows = m.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["remaining_percent"], 100.0);
    assert!(rows[2]["remaining_percent"].as_f64().unwrap() < rows[1]["remaining_percent"].as_f64().unwrap());
    assert!(rows[2]["acc_retrained"].as_f64().unwrap() > 50.0, "learned something: {}", rows[2]);
    assert_eq!(rows[1]["layers"].as_array().unwrap().len(), 3);
    let csv = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), 4);
    assert!(csv.lines().next().unwrap().contains("units.classifier.0"));
    let log = std::fs::read_to_string(run.join("relief.log")).unwrap();
    assert!(log.contains("iteration 2 done"), "{log}");
    // The checkpoint carries everything eval needs: same accuracy as recorded.
    let out = run_expect(
        relief(&["eval", "--json", "--device", "cpu", "--test-limit", "500"])
            .arg(run.join("iter-002.safetensors")),
        true,
    );
    let ev: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(ev["arch"], "lenet300-100");
    assert_eq!(ev["params_alive"], rows[2]["params_alive"]);
    let (a, b) = (ev["test_accuracy"].as_f64().unwrap(), rows[2]["acc_retrained"].as_f64().unwrap());
    assert!((a - b).abs() < 1e-9, "eval {a} vs run {b}");
    let out = run_expect(relief(&["eval", "--no-data"]).arg(run.join("iter-001.safetensors")), true);
    assert!(text(&out).contains("classifier.0"));
    // Running the finished run again resumes nothing and reprints the summary.
    let out = run_expect(relief(&["run", "-q"]).arg(&cfg).arg("--out").arg(&run), true);
    assert!(text(&out).contains("acc retrained %"));
    assert_eq!(metrics(&run), m);
}

#[test]
fn magnitude_baseline_prune_only_and_report_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 2);
    let trained = tmp.path().join("trained");
    run_expect(relief(&["train", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&trained), true);
    assert_eq!(metrics(&trained).as_array().unwrap().len(), 1);
    let pre = trained.join("iter-000.safetensors");
    let relief_run = tmp.path().join("nnrelief");
    let magnitude = tmp.path().join("magnitude");
    run_expect(
        relief(&["prune", "-q", "--no-plots", "--set", "name=nnrelief"])
            .arg(&cfg)
            .arg("--pretrained")
            .arg(&pre)
            .arg("--out")
            .arg(&relief_run),
        true,
    );
    run_expect(
        relief(&["prune", "-q", "--no-plots", "--set", "prune.method=magnitude", "--set", "name=magnitude"])
            .args(["--set", "prune.magnitude_keep=0.4", "--set", "prune.magnitude_scope=layer"])
            .arg(&cfg)
            .arg("--pretrained")
            .arg(&pre)
            .arg("--out")
            .arg(&magnitude),
        true,
    );
    let (a, b) = (metrics(&relief_run), metrics(&magnitude));
    // Both start from the same trained model (rewind found init.safetensors beside it).
    assert_eq!(a[0]["acc_retrained"], b[0]["acc_retrained"]);
    let rem = b[2]["remaining_percent"].as_f64().unwrap();
    assert!((rem - 16.0).abs() < 0.5, "magnitude keeps 0.4 of the weights twice: {rem}");
    let report = tmp.path().join("report");
    let out =
        run_expect(relief(&["report"]).arg(&relief_run).arg(&magnitude).arg("--out").arg(&report), true);
    let t = text(&out);
    assert!(t.contains("nnrelief") && t.contains("magnitude (per layer, keep 0.4)"), "{t}");
    for f in ["accuracy.svg", "accuracy.png", "layers.svg", "layers.png", "summary.txt"] {
        assert!(report.join(f).is_file(), "missing {f}");
    }
}

#[test]
fn config_errors_name_the_file_and_field_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 1);
    let check = |cmd: &mut std::process::Command, wants: &[&str]| {
        let out = run_expect(cmd, false);
        // 1: a failed command; 2: a usage error reported by clap (e.g. a bad --set).
        assert!(matches!(out.status.code(), Some(1) | Some(2)), "{:?}", out.status);
        let t = text(&out);
        assert!(!t.contains("panicked"), "{t}");
        for w in wants {
            assert!(t.contains(w), "missing {w:?} in:\n{t}");
        }
    };
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "[prune]\nalpah_fc = 0.9\n").unwrap();
    check(relief(&["run", "--dry-run"]).arg(&bad), &["bad.toml", "alpah_fc"]);
    std::fs::write(&bad, "model = \"lenet7\"\n[prune]\nalpha_fc = 2.0\n").unwrap();
    check(relief(&["run", "--dry-run"]).arg(&bad), &["bad.toml", "problems", "lenet7", "prune.alpha_fc = 2"]);
    check(
        relief(&["run", "--set", "prune.alpah_fc=0.9"]).arg(&cfg),
        &["--set prune.alpah_fc", "unknown field"],
    );
    check(relief(&["run", "--set", "data.dir=/no/such/dir"]).arg(&cfg), &["data.dir", "/no/such/dir"]);
    check(relief(&["run"]).arg(tmp.path().join("missing.toml")), &["missing.toml"]);
    check(relief(&["prune"]).arg(&cfg), &["pretrained"]);
    check(relief(&["prune", "--resume"]).arg(tmp.path()), &["not a relief run directory"]);
    check(relief(&["eval"]).arg(&cfg), &["tiny.toml"]);
    check(relief(&["report"]).arg(tmp.path()), &["not a relief run directory"]);
    // An existing run directory is only resumed under the same config.
    let run = tmp.path().join("run");
    run_expect(
        relief(&["train", "-q", "--no-plots", "--set", "train.epochs=0"]).arg(&cfg).arg("--out").arg(&run),
        true,
    );
    check(
        relief(&["train", "--set", "train.epochs=1"]).arg(&cfg).arg("--out").arg(&run),
        &["different config", "train.epochs: 0 -> 1"],
    );
    // --dry-run prints the resolved config and creates nothing.
    let out = run_expect(relief(&["run", "--dry-run", "--set", "prune.alpha_fc=0.97"]).arg(&cfg), true);
    assert!(text(&out).contains("alpha_fc = 0.97"));
}

#[test]
fn help_explains_every_subcommand_and_flag() {
    let out = run_expect(&mut relief(&["--help"]), true);
    let t = text(&out);
    for sub in ["demo", "train", "prune", "run", "eval", "report", "prune-step"] {
        assert!(t.contains(&format!("  {sub} ")), "{sub} missing from\n{t}");
    }
    for (sub, flags) in [
        ("run", &["--set", "--out", "--quiet", "--dry-run", "--no-plots"][..]),
        ("prune", &["--resume", "--pretrained", "--init", "--set"][..]),
        ("eval", &["--model", "--dataset", "--data", "--json", "--no-data", "--test-limit"][..]),
        ("report", &["--out", "--no-plots"][..]),
    ] {
        let t = text(&run_expect(&mut relief(&[sub, "--help"]), true));
        for f in flags {
            assert!(t.contains(f), "{sub} --help lacks {f}:\n{t}");
        }
    }
}
