//! `relief study submit --slurm` on a real Slurm cluster (CI starts a single-node one with
//! scripts/slurm.sh): a 2 x 3 study of tiny runs through job arrays and the aggregation job;
//! then a cancelled task shown as failed by `status` and completed by `--retry-failed`.
//! Skipped when no Slurm controller answers, unless RELIEF_REQUIRE_SLURM=1 (CI).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{relief, run_expect, study_file, text};
use serde_json::Value;

fn slurm_up() -> bool {
    let up = Command::new("sinfo").args(["-h", "-o", "%T"]).output().is_ok_and(|o| o.status.success());
    if !up {
        if std::env::var("RELIEF_REQUIRE_SLURM").as_deref() == Ok("1") {
            panic!(
                "RELIEF_REQUIRE_SLURM=1 but no Slurm controller answers (sinfo failed; is SLURM_CONF set?)"
            );
        }
        eprintln!("skipped: no Slurm");
    }
    up
}

fn jobs(dir: &Path) -> Vec<Value> {
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("slurm/jobs.json")).unwrap()).unwrap();
    v["submissions"].as_array().unwrap().clone()
}

/// `JobState` of a job (or `JOB_TASK`) from `scontrol -o show job`.
fn job_state(job: &str) -> Option<String> {
    let o = Command::new("scontrol").args(["-o", "show", "job", job]).output().ok()?;
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    out.split_whitespace().find_map(|kv| kv.strip_prefix("JobState=").map(str::to_string))
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn wait_job_end(job: &str, timeout: Duration) {
    wait_for(&format!("job {job} to end"), timeout, || {
        matches!(job_state(job).as_deref(), Some("COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT"))
    });
}

fn complete(run: &Path, iterations: usize) -> bool {
    run.join(format!("iter-{iterations:03}.safetensors")).is_file()
}

#[test]
fn a_study_runs_as_slurm_job_arrays_and_a_cancelled_task_is_retried() {
    if !slurm_up() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // 1. A 2 x 3 study, submitted, run by array tasks, aggregated by the dependent report job.
    let study =
        study_file(tmp.path(), "slurm23", 1, 1, "", "\"prune.alpha_fc\" = [0.9, 0.95]\nseed = [0, 1, 2]");
    let out = tmp.path().join("slurm23");
    let dry = run_expect(
        relief(&["study", "submit"])
            .arg(&study)
            .args(["--slurm", "--dry-run", "--max-parallel", "3"])
            .arg("--out")
            .arg(&out),
        true,
    );
    assert!(text(&dry).contains("#SBATCH --array=0-5%3"), "{}", text(&dry));
    assert!(!out.exists(), "--dry-run wrote {}", out.display());
    let t = Instant::now();
    let o = run_expect(relief(&["study", "submit"]).arg(&study).arg("--slurm").arg("--out").arg(&out), true);
    assert!(text(&o).contains("submitted array job"), "{}", text(&o));
    let sub = &jobs(&out)[0];
    let array = sub["array_job"].as_str().unwrap().to_string();
    let report = sub["report_job"].as_str().unwrap().to_string();
    wait_for("the first array task to run", Duration::from_secs(60), || {
        out.join("status").read_dir().map(|mut d| d.next().is_some()).unwrap_or(false)
    });
    eprintln!("submit -> first task running: {:.2} s", t.elapsed().as_secs_f64());
    wait_job_end(&report, Duration::from_secs(300));
    assert_eq!(job_state(&report).as_deref(), Some("COMPLETED"), "report job");
    for i in 0..6 {
        assert_eq!(job_state(&format!("{array}_{i}")).as_deref(), Some("COMPLETED"), "task {i}");
    }
    let pts: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("points.json")).unwrap()).unwrap();
    for p in pts["points"].as_array().unwrap() {
        assert!(complete(&out.join(p["run_dir"].as_str().unwrap()), 1), "{p}");
        let log = out.join("slurm/logs").join(format!("{array}_{}.log", p["index"]));
        assert!(log.is_file(), "{}", log.display());
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report/summary.json")).unwrap()).unwrap();
    let groups = summary["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2);
    for g in groups {
        assert_eq!(g["n"], 3, "{g}");
    }
    assert!(out.join("report/report.html").is_file());
    let s = text(&run_expect(relief(&["study", "status"]).arg(&out), true));
    assert!(s.contains("6 done") && s.contains("COMPLETED"), "{s}");

    // 2. A task cancelled mid-run shows as failed; --retry-failed resubmits only it.
    let study = study_file(tmp.path(), "cancel", 8, 4, "", "seed = [0, 1, 2]");
    let out = tmp.path().join("cancel");
    run_expect(relief(&["study", "submit"]).arg(&study).arg("--slurm").arg("--out").arg(&out), true);
    let sub = &jobs(&out)[0];
    let array = sub["array_job"].as_str().unwrap().to_string();
    let report = sub["report_job"].as_str().unwrap().to_string();
    let victim = out.join("runs/seed=1");
    wait_for("point seed=1 to start", Duration::from_secs(120), || {
        victim.join("iter-000.safetensors").is_file()
    });
    assert!(!complete(&victim, 4), "point seed=1 finished before it could be cancelled");
    let c = Command::new("scancel").arg(format!("{array}_1")).status().unwrap();
    assert!(c.success());
    wait_job_end(&report, Duration::from_secs(300));
    assert_eq!(job_state(&format!("{array}_1")).as_deref(), Some("CANCELLED"));
    assert!(!complete(&victim, 4));
    let s = text(&run_expect(relief(&["study", "status"]).arg(&out), true));
    let line = s.lines().find(|l| l.contains("seed=1")).unwrap_or_else(|| panic!("{s}"));
    assert!(line.contains("failed") && line.contains("CANCELLED"), "{line}");
    assert!(s.contains("2 done") && s.contains("1 failed"), "{s}");
    let o = run_expect(relief(&["study", "submit"]).arg(&out).args(["--slurm", "--retry-failed"]), true);
    assert!(text(&o).contains("resubmitting 1 point"), "{}", text(&o));
    let retry = &jobs(&out)[1];
    assert_eq!(retry["points"], serde_json::json!([1]));
    wait_job_end(retry["report_job"].as_str().unwrap(), Duration::from_secs(300));
    for id in ["seed=0", "seed=1", "seed=2"] {
        assert!(complete(&out.join("runs").join(id), 4), "{id}");
    }
    let s = text(&run_expect(relief(&["study", "status"]).arg(&out), true));
    assert!(s.contains("3 done"), "{s}");
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["groups"][0]["n"], 3, "{summary}");
}

#[test]
fn submit_errors_are_clear_and_submit_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let study = study_file(tmp.path(), "nosbatch", 1, 1, "", "seed = [0, 1]");
    // No Slurm on PATH: a clear error naming sbatch.
    let o = run_expect(
        relief(&["study", "submit"])
            .arg(&study)
            .arg("--slurm")
            .arg("--out")
            .arg(tmp.path().join("a"))
            .env("PATH", "/nonexistent"),
        false,
    );
    let msg = text(&o);
    assert!(msg.contains("sbatch not found on PATH") && msg.contains("nothing was submitted"), "{msg}");
    assert!(!tmp.path().join("a/slurm/jobs.json").exists());
    if !slurm_up() {
        return;
    }
    // A partition that does not exist: sbatch's own message, nothing left queued.
    let o = run_expect(
        relief(&["study", "submit"])
            .arg(&study)
            .args(["--slurm", "--partition", "nosuchpartition"])
            .arg("--out")
            .arg(tmp.path().join("b")),
        false,
    );
    let msg = text(&o);
    assert!(msg.contains("sbatch") && msg.to_lowercase().contains("partition"), "{msg}");
    assert!(!tmp.path().join("b/slurm/jobs.json").exists());
}
