//! `relief study run` end to end on the bundled MNIST sample: points validated before any
//! work, run two at a time, a failed point not stopping the others, a SIGKILLed study resumed
//! to the same metrics as an uninterrupted one, and the aggregation checked against the runs'
//! own metrics.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{metrics, metrics_without_timing, relief, run_expect, study_file, text};
use serde_json::Value;

fn points(dir: &Path) -> Vec<Value> {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("points.json")).unwrap()).unwrap();
    v["points"].as_array().unwrap().clone()
}

fn status(dir: &Path, id: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("status").join(format!("{id}.json"))).unwrap())
        .unwrap()
}

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    (m, s)
}

#[test]
fn two_jobs_run_in_parallel_matched_magnitude_follows_and_the_report_aggregates_the_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let study = study_file(
        tmp.path(),
        "pair",
        1,
        2,
        "match = \"nnrelief\"",
        "\"prune.method\" = [\"nnrelief\", \"magnitude\"]\nseed = [0, 1]",
    );
    let out = tmp.path().join("pair");
    let o =
        run_expect(relief(&["study", "run"]).arg(&study).arg("--out").arg(&out).args(["--jobs", "2"]), true);
    let all = text(&o);
    let pts = points(&out);
    let ids: Vec<&str> = pts.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "method=nnrelief,seed=0",
            "method=nnrelief,seed=1",
            "method=magnitude,seed=0",
            "method=magnitude,seed=1"
        ]
    );
    // Every point is an ordinary, complete run directory.
    for p in &pts {
        let run = out.join(p["run_dir"].as_str().unwrap());
        assert!(run.join("iter-002.safetensors").is_file(), "{}", run.display());
        assert_eq!(metrics(&run).as_array().unwrap().len(), 3);
        assert_eq!(status(&out, p["id"].as_str().unwrap())["state"], "done");
    }
    // Two at a time: the first two points overlapped in time.
    let (a, b) = (status(&out, ids[0]), status(&out, ids[1]));
    let span = |s: &Value| (s["started_ms"].as_u64().unwrap(), s["finished_ms"].as_u64().unwrap());
    let ((a0, a1), (b0, b1)) = (span(&a), span(&b));
    assert!(a0 < b1 && b0 < a1, "points 0 and 1 did not overlap: {a0}-{a1} vs {b0}-{b1}");
    // Each magnitude point is matched to its NNrelief point and started after it finished.
    for (m, n) in [(2, 0), (3, 1)] {
        assert_eq!(pts[m]["depends_on"].as_u64(), Some(n as u64));
        let cfg = std::fs::read_to_string(
            out.join(pts[m]["run_dir"].as_str().unwrap()).join("config.resolved.toml"),
        )
        .unwrap();
        let want = out.canonicalize().unwrap().join(pts[n]["run_dir"].as_str().unwrap());
        assert!(cfg.contains(&format!("magnitude_match = \"{}\"", want.display())), "{cfg}");
        assert!(span(&status(&out, ids[m])).0 >= span(&status(&out, ids[n])).1);
    }
    // The aggregation agrees with the runs' own metrics (mean and sample std over seeds).
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report").join("summary.json")).unwrap())
            .unwrap();
    for (group, members) in [("method=nnrelief", [0, 1]), ("method=magnitude", [2, 3])] {
        let finals: Vec<f64> = members
            .iter()
            .map(|&i| {
                let m = metrics(&out.join(pts[i]["run_dir"].as_str().unwrap()));
                m[2]["acc_retrained"].as_f64().unwrap()
            })
            .collect();
        let (mean, std) = mean_std(&finals);
        let g = summary["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["group"] == group)
            .unwrap_or_else(|| panic!("{group} in {summary}"));
        assert!((g["final_acc"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9, "{group}: {g}");
        assert!((g["final_acc"]["std"].as_f64().unwrap() - std).abs() < 1e-9, "{group}: {g}");
        assert_eq!(g["final_acc"]["n"], 2);
        let table = format!("{:.2} ± {:.2}", mean, std);
        assert!(all.contains(&table), "summary table lacks {table}:\n{all}");
    }
    assert!(out.join("report").join("report.html").is_file());
    // Rerunning skips every point and changes nothing.
    let before: Vec<Vec<u8>> = pts
        .iter()
        .map(|p| {
            std::fs::read(out.join(p["run_dir"].as_str().unwrap()).join("iter-002.safetensors")).unwrap()
        })
        .collect();
    let o = run_expect(relief(&["study", "run"]).arg(&study).arg("--out").arg(&out), true);
    assert!(text(&o).contains("4 already done, 0 to run"), "{}", text(&o));
    for (p, b) in pts.iter().zip(&before) {
        assert_eq!(
            &std::fs::read(out.join(p["run_dir"].as_str().unwrap()).join("iter-002.safetensors")).unwrap(),
            b
        );
    }
}

#[test]
fn a_bad_grid_key_or_value_is_refused_before_any_point_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let study = study_file(tmp.path(), "badkey", 1, 1, "", "\"prune.alpah_fc\" = [0.9, 0.95]\nseed = [0, 1]");
    let out = tmp.path().join("badkey");
    let o = run_expect(relief(&["study", "run"]).arg(&study).arg("--out").arg(&out), false);
    let msg = text(&o);
    assert!(msg.contains("prune.alpah_fc") && msg.contains("alpah_fc"), "{msg}");
    assert!(msg.contains("badkey.toml"), "{msg}");
    assert!(!out.exists(), "a refused study created {}", out.display());

    let study =
        study_file(tmp.path(), "badvalue", 1, 1, "", "\"prune.alpha_fc\" = [0.9, 1.5]\nseed = [0, 1]");
    let out = tmp.path().join("badvalue");
    let o = run_expect(relief(&["study", "run"]).arg(&study).arg("--out").arg(&out), false);
    let msg = text(&o);
    assert!(msg.contains("point alpha_fc=1.5,seed=0") && msg.contains("prune.alpha_fc = 1.5"), "{msg}");
    assert!(msg.contains("point alpha_fc=1.5,seed=1"), "{msg}");
    assert!(!msg.contains("point alpha_fc=0.9"), "valid points are not listed: {msg}");
    assert!(msg.contains("2 of 4 points are invalid; nothing was run"), "{msg}");
    assert!(!out.exists());

    let study = study_file(tmp.path(), "notalist", 1, 1, "", "seed = 3");
    let o = run_expect(relief(&["study", "run"]).arg(&study).arg("--out").arg(tmp.path().join("x")), false);
    assert!(text(&o).contains("[grid] seed = 3: expected a list of values"), "{}", text(&o));
}

#[test]
fn a_failed_point_does_not_stop_the_others_and_is_listed_with_its_log() {
    let tmp = tempfile::tempdir().unwrap();
    // 50 training digits cannot fill a pruning batch of 200: that point fails when it starts.
    let study = study_file(tmp.path(), "onefails", 1, 1, "", "\"data.train_limit\" = [600, 50]");
    let out = tmp.path().join("onefails");
    let o =
        run_expect(relief(&["study", "run"]).arg(&study).arg("--out").arg(&out).args(["--jobs", "2"]), false);
    let msg = text(&o);
    assert!(msg.contains("1 of 2 points failed"), "{msg}");
    let log = out.join("logs").join("train_limit=50.log");
    assert!(msg.contains("train_limit=50") && msg.contains(&log.display().to_string()), "{msg}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("prune.batch_size"), "the log holds the error");
    assert_eq!(status(&out, "train_limit=50")["state"], "failed");
    assert!(out.join("runs/train_limit=600/iter-001.safetensors").is_file());
    let o = run_expect(relief(&["study", "status"]).arg(&out), true);
    let s = text(&o);
    assert!(s.contains("1 done") && s.contains("1 failed"), "{s}");
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_study_killed_midway_resumes_to_the_metrics_of_an_uninterrupted_study() {
    let tmp = tempfile::tempdir().unwrap();
    let study = study_file(tmp.path(), "resume", 3, 2, "", "seed = [0, 1, 2]");
    let whole = tmp.path().join("whole");
    run_expect(
        relief(&["study", "run"]).arg(&study).arg("--out").arg(&whole).args(["--jobs", "2", "--quiet"]),
        true,
    );

    let killed = tmp.path().join("killed");
    let mut child = relief(&["study", "run"])
        .arg(&study)
        .arg("--out")
        .arg(&killed)
        .args(["--jobs", "2", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the executor once a point is past its first iteration (mid-run).
    wait_for("a first iteration", Duration::from_secs(120), || {
        killed.join("runs/seed=0/iter-001.safetensors").is_file()
            || killed.join("runs/seed=1/iter-001.safetensors").is_file()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // Its children die with it: no run directory stays locked.
    wait_for("the points' processes to exit", Duration::from_secs(20), || {
        ["seed=0", "seed=1", "seed=2"].iter().all(|id| {
            let lock = killed.join("runs").join(id).join("run.lock");
            !lock.exists() || std::fs::File::open(&lock).map(|f| !is_locked(&f)).unwrap_or(true)
        })
    });
    assert!(
        !killed.join("runs/seed=2/iter-002.safetensors").is_file(),
        "the kill came too late to test resuming"
    );
    let o = run_expect(
        relief(&["study", "run"]).arg(&study).arg("--out").arg(&killed).args(["--jobs", "2"]),
        true,
    );
    assert!(text(&o).contains("(resuming)"), "{}", text(&o));
    for id in ["seed=0", "seed=1", "seed=2"] {
        assert_eq!(
            metrics_without_timing(&killed.join("runs").join(id)),
            metrics_without_timing(&whole.join("runs").join(id)),
            "point {id} differs after the resume"
        );
    }
}

fn is_locked(f: &std::fs::File) -> bool {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor we own; an acquired lock is released when `f` drops.
    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) != 0 }
}

#[test]
fn every_study_preset_validates() {
    let presets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/studies").canonicalize().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    for d in ["mnist", "mnist-sample", "cifar10", "cifar100", "tiny-imagenet"] {
        std::fs::create_dir_all(cwd.path().join("data").join(d)).unwrap();
    }
    let mut n = 0;
    for entry in std::fs::read_dir(&presets).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let o =
            run_expect(relief(&["study", "run"]).arg(&path).arg("--dry-run").current_dir(cwd.path()), true);
        let out = text(&o);
        assert!(out.contains("all valid"), "{}: {out}", path.display());
        // NNrelief and magnitude at equal budget over three seeds, in every preset.
        assert!(out.contains("method=magnitude,seed=2") && out.contains("method=nnrelief,seed=0"), "{out}");
        n += 1;
    }
    assert!(n >= 8, "only {n} presets in {}", presets.display());
    assert!(!cwd.path().join("studies").exists(), "--dry-run wrote a study directory");
}

#[test]
fn set_overrides_the_base_of_every_point_and_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let study = study_file(tmp.path(), "sets", 1, 1, "", "seed = [0, 1]");
    let plain = text(&run_expect(relief(&["study", "run"]).arg(&study).arg("--dry-run"), true));
    let set = text(&run_expect(
        relief(&["study", "run"]).arg(&study).args(["--dry-run", "--set", "train.epochs=2"]),
        true,
    ));
    let hashes = |t: &str| {
        t.lines()
            .filter(|l| l.contains("seed="))
            .map(|l| l.split_whitespace().nth(3).unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let (a, b) = (hashes(&plain), hashes(&set));
    assert_eq!(a.len(), 2);
    assert!(a.iter().zip(&b).all(|(x, y)| x != y), "--set did not change the points: {a:?} {b:?}");
    let o = run_expect(
        relief(&["study", "run"]).arg(&study).args(["--dry-run", "--set", "train.epohcs=2"]),
        false,
    );
    assert!(text(&o).contains("train.epohcs"), "{}", text(&o));
    let out = tmp.path().join("sets");
    run_expect(
        relief(&["study", "run"]).arg(&study).arg("--out").arg(&out).args([
            "--quiet",
            "--set",
            "retrain.epochs=2",
        ]),
        true,
    );
    let cfg = std::fs::read_to_string(out.join("runs/seed=1/config.resolved.toml")).unwrap();
    assert!(cfg.contains("[retrain]\nepochs = 2"), "{cfg}");
}
