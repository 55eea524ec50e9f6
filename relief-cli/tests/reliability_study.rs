//! Reliability battery for studies: hostile but realistic arguments, study files and damaged
//! study directories must end in a clear error naming the argument, file, key or point, exit
//! status 1 and no panic; a refusal creates nothing and leaves an existing study directory
//! byte-for-byte as it was. A failed point is reported as failed, with its error and its log.
//!
//! One tiny study (one point that completes, one that fails at once) is built once and shared;
//! cases that damage a study directory work on their own copy. Every other case is refused
//! before any training.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use common::{relief, run_expect, study_file, text};
use serde_json::Value;

/// The shared study: `train_limit=600` completes, `train_limit=50` fails (50 digits cannot fill a
/// pruning batch of 200).
struct Fx {
    _tmp: tempfile::TempDir,
    study: PathBuf,
    dir: PathBuf,
    /// stderr + stdout of the run that made it.
    log: String,
}

fn fx() -> &'static Fx {
    static FX: OnceLock<Fx> = OnceLock::new();
    FX.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let study = study_file(tmp.path(), "shared", 1, 1, "", "\"data.train_limit\" = [600, 50]");
        let dir = tmp.path().join("shared");
        // The most jobs allowed: clamped to the 2 points.
        let jobs = (4 * std::thread::available_parallelism().map(|c| c.get()).unwrap_or(1)).to_string();
        let o = run_expect(
            relief(&["study", "run"]).arg(&study).arg("--out").arg(&dir).args(["--jobs", &jobs]),
            false,
        );
        let log = text(&o);
        assert!(log.contains("1 of 2 points failed"), "{log}");
        Fx { _tmp: tmp, study, dir, log }
    })
}

/// Every file (bytes) and directory (`None`) under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Option<Vec<u8>>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Option<Vec<u8>>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            if p.is_dir() {
                out.insert(rel, None);
                walk(root, &p, out);
            } else {
                out.insert(rel, Some(std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = BTreeMap::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out
}

fn assert_same_tree(dir: &Path, before: &BTreeMap<PathBuf, Option<Vec<u8>>>) {
    let after = tree(dir);
    let changed: Vec<&PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(changed.is_empty(), "{} changed on a refusal: {changed:?}", dir.display());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dest = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).unwrap();
        }
    }
}

/// A copy of the shared study directory in a fresh temporary directory.
fn copy_study() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("study");
    copy_dir(&fx().dir, &dir);
    (tmp, dir)
}

/// Runs `cmd` in `cwd`, expects exit status 1 and every one of `names` in its stderr, and no
/// panic; checks that nothing under `cwd` changed (nothing created, nothing written). Returns
/// stderr.
fn refused(cmd: &mut Command, cwd: &Path, names: &[&str]) -> String {
    let before = tree(cwd);
    let out: Output = cmd.current_dir(cwd).output().expect("relief starts");
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "exit status {:?}\n{}", out.status, text(&out));
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    for n in names {
        assert!(err.contains(n), "the message does not name {n:?}:\n{err}");
    }
    assert!(err.len() < 4000, "{} bytes of error:\n{}", err.len(), &err[..2000]);
    assert_same_tree(cwd, &before);
    err
}

/// A study file of tiny points with `grid` as its grid and `extra` before the base.
fn tiny(dir: &Path, name: &str, extra: &str, grid: &str) -> PathBuf {
    study_file(dir, name, 1, 1, extra, grid)
}

fn run_cmd(study: &Path, extra: &[&str]) -> Command {
    let mut c = relief(&["study", "run"]);
    c.arg(study).args(extra);
    c
}

#[test]
fn out_naming_a_directory_that_is_not_a_study_is_refused_before_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = [0, 1]");
    std::fs::create_dir(tmp.path().join("mine")).unwrap();
    std::fs::write(tmp.path().join("mine/notes.txt"), "precious").unwrap();
    for sub in [["study", "run"], ["study", "submit"]] {
        let mut c = relief(&sub);
        c.arg(&study).args(["--out", "mine"]);
        if sub[1] == "submit" {
            c.arg("--slurm");
        }
        let err = refused(&mut c, tmp.path(), &["mine", "not a relief study directory"]);
        assert!(!tmp.path().join("mine/study.lock").exists(), "{err}");
    }
    // An existing file as --out.
    std::fs::write(tmp.path().join("afile"), "x").unwrap();
    refused(&mut run_cmd(&study, &["--out", "afile"]), tmp.path(), &["afile", "not a directory"]);
}

#[test]
fn jobs_zero_or_absurd_is_refused_before_the_directory_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = [0, 1]");
    for jobs in ["0", "1000000000000", &usize::MAX.to_string()] {
        let err =
            refused(&mut run_cmd(&study, &["--out", "o", "--jobs", jobs]), tmp.path(), &["--jobs", jobs]);
        assert!(jobs == "0" || err.contains("cores"), "{err}");
    }
    // Without --out (the default studies/<name>) neither.
    refused(&mut run_cmd(&study, &["--jobs", "0"]), tmp.path(), &["--jobs 0"]);
}

#[test]
fn a_cuda_device_this_machine_lacks_is_refused_naming_it_and_the_count() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = [0, 1]");
    let n = tch::Cuda::device_count();
    let missing = format!("cuda:{n}");
    let count = if n == 0 { "no CUDA device".to_string() } else { format!("{n} CUDA device") };
    for dry in [false, true] {
        let mut args = vec!["--out", "o", "--devices", missing.as_str()];
        if dry {
            args.push("--dry-run");
        }
        refused(&mut run_cmd(&study, &args), tmp.path(), &[&missing, &count, "--devices"]);
    }
    refused(&mut run_cmd(&study, &["--out", "o", "--devices", "gpu0"]), tmp.path(), &["gpu0", "--devices"]);
}

#[test]
fn a_repeated_grid_value_is_refused_naming_key_and_value() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = [0, 1, 1]");
    let err =
        refused(&mut run_cmd(&study, &["--dry-run"]), tmp.path(), &["st.toml", "[grid] seed", "value 1"]);
    assert!(err.contains("2 times"), "{err}");
    let study = tiny(tmp.path(), "st2", "", "model = [\"lenet5\", \"lenet300-100\", \"lenet5\"]");
    refused(&mut run_cmd(&study, &["--out", "o"]), tmp.path(), &["[grid] model", "\"lenet5\""]);
}

#[test]
fn repeated_explicit_points_are_refused_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = [0, 1]\n\n[[point]]\nseed = 7\n\n[[point]]\nseed = 7");
    refused(
        &mut run_cmd(&study, &["--out", "o"]),
        tmp.path(),
        &["[[point]] #2 (seed=7)", "[[point]] #1 (seed=7)"],
    );
    // An explicit point that repeats a grid point.
    let study = tiny(tmp.path(), "st2", "", "seed = [0, 1]\n\n[[point]]\nseed = 1");
    refused(&mut run_cmd(&study, &["--dry-run"]), tmp.path(), &["[[point]] #1 (seed=1)", "point seed=1"]);
}

#[test]
fn one_config_under_two_ids_or_one_key_given_twice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "\"prune.alpha_fc\" = [1, 1.0]");
    refused(&mut run_cmd(&study, &["--dry-run"]), tmp.path(), &["alpha_fc=1.0", "alpha_fc=1", "same config"]);
    let study = tiny(tmp.path(), "st2", "", "\"prune.alpha_fc\" = [0.9]\n[grid.prune]\nalpha_fc = [0.8]");
    refused(&mut run_cmd(&study, &["--out", "o"]), tmp.path(), &["[grid] prune.alpha_fc", "twice"]);
}

#[test]
fn an_empty_grid_list_or_a_key_that_is_not_a_config_field_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = []");
    refused(&mut run_cmd(&study, &["--out", "o"]), tmp.path(), &["st.toml", "[grid] seed", "empty list"]);
    let study = tiny(tmp.path(), "st2", "", "\"train.epohcs\" = [1, 2]");
    refused(&mut run_cmd(&study, &["--out", "o"]), tmp.path(), &["st2.toml", "train.epohcs", "epohcs"]);
}

#[test]
fn a_base_that_does_not_exist_or_is_a_directory_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("confdir")).unwrap();
    for (base, why) in [("missing.toml", "cannot read"), ("confdir", "is a directory")] {
        let path = tmp.path().join(format!("b-{base}.toml"));
        std::fs::write(&path, format!("name = \"b\"\nbase = \"{base}\"\n[grid]\nseed = [0, 1]\n")).unwrap();
        refused(&mut run_cmd(&path, &["--out", "o"]), tmp.path(), &[&format!("base = \"{base}\""), why]);
    }
}

#[test]
fn a_study_file_that_is_a_directory_or_missing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("adir")).unwrap();
    refused(&mut relief(&["study", "run", "adir"]), tmp.path(), &["adir", "is a directory"]);
    refused(
        &mut relief(&["study", "run", "nope.toml", "--dry-run"]),
        tmp.path(),
        &["nope.toml", "cannot read"],
    );
    // A study directory given where the study file belongs says so.
    let (tmp2, dir) = copy_study();
    refused(relief(&["study", "run"]).arg(&dir), tmp2.path(), &["is a study directory"]);
}

#[test]
fn a_ten_megabyte_line_gives_a_short_error() {
    let tmp = tempfile::tempdir().unwrap();
    let long = "x".repeat(10_000_000);
    std::fs::write(tmp.path().join("garbage.toml"), format!("name = {long}\n")).unwrap();
    let err =
        refused(&mut relief(&["study", "run", "garbage.toml", "--out", "o"]), tmp.path(), &["garbage.toml"]);
    assert!(err.contains('…'), "{err}");
    // A 10 MB grid value, quoted by the schema check.
    let study = tiny(tmp.path(), "st", "", &format!("seed = [0, 1]\n\"data.dataset\" = [\"{long}\"]"));
    let err = refused(&mut run_cmd(&study, &["--out", "o"]), tmp.path(), &["st.toml", "data.dataset"]);
    assert!(err.contains('…'), "{err}");
    // A 10 MB study name.
    let study = tiny(tmp.path(), "st2", "", "seed = [0]");
    let text =
        std::fs::read_to_string(&study).unwrap().replacen("name = \"st2\"", &format!("name = \"{long}\""), 1);
    std::fs::write(&study, text).unwrap();
    refused(&mut run_cmd(&study, &["--dry-run"]), tmp.path(), &["st2.toml", "name = "]);
}

#[test]
fn a_name_that_is_not_a_directory_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = [0]");
    let text = std::fs::read_to_string(&study).unwrap().replacen("name = \"st\"", "name = \"..\"", 1);
    std::fs::write(&study, text).unwrap();
    refused(&mut run_cmd(&study, &[]), tmp.path(), &["st.toml", "name = \"..\""]);
}

#[test]
fn slurm_options_in_the_wrong_form_are_refused_even_with_dry_run() {
    let tmp = tempfile::tempdir().unwrap();
    let study = tiny(tmp.path(), "st", "", "seed = [0, 1]");
    for (flag, value) in [
        ("--mem", "lots"),
        ("--time", "12:00\n#SBATCH --wrap=evil"),
        ("--partition", "gpu queue"),
        ("--max-parallel", "0"),
        ("--cpus-per-task", "0"),
    ] {
        let mut c = relief(&["study", "submit"]);
        c.arg(&study).args(["--slurm", "--dry-run", "--out", "o", flag, value]);
        let err = refused(&mut c, tmp.path(), &[flag]);
        assert!(err.contains("expected"), "{err}");
    }
    // The same checks for the study file's [slurm] table, in `run --dry-run` too.
    let study = tiny(tmp.path(), "st2", "", "seed = [0, 1]");
    let text = std::fs::read_to_string(&study)
        .unwrap()
        .replace("cpus_per_task = 1", "cpus_per_task = 1\nmem = \"16 GB\"");
    std::fs::write(&study, text).unwrap();
    refused(&mut run_cmd(&study, &["--dry-run"]), tmp.path(), &["st2.toml", "[slurm] mem", "16 GB"]);
}

#[test]
fn retry_failed_on_a_directory_that_is_not_a_study_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("plain")).unwrap();
    std::fs::write(tmp.path().join("plain/file"), "x").unwrap();
    refused(
        &mut relief(&["study", "submit", "plain", "--slurm", "--retry-failed"]),
        tmp.path(),
        &["plain", "not a relief study directory", "points.json"],
    );
}

#[test]
fn report_status_and_run_point_on_an_empty_directory_are_refused_and_create_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir(tmp.path().join("empty")).unwrap();
    for sub in [
        &["study", "report", "empty"][..],
        &["study", "status", "empty"],
        &["study", "run-point", "empty", "0"],
    ] {
        refused(&mut relief(sub), tmp.path(), &["empty", "not a relief study directory"]);
    }
}

#[test]
fn run_point_out_of_range_names_the_index_and_the_count() {
    let (tmp, dir) = copy_study();
    for index in ["2", &usize::MAX.to_string()] {
        refused(
            relief(&["study", "run-point"]).arg(&dir).arg(index),
            tmp.path(),
            &[&format!("no point {index}"), "2 points"],
        );
    }
}

#[test]
fn a_truncated_points_json_is_refused_by_every_command() {
    let (tmp, dir) = copy_study();
    let text = std::fs::read_to_string(dir.join("points.json")).unwrap();
    std::fs::write(dir.join("points.json"), &text[..text.len() / 2]).unwrap();
    let study = &fx().study;
    let cmds: Vec<Command> = vec![
        {
            let mut c = relief(&["study", "status"]);
            c.arg(&dir);
            c
        },
        {
            let mut c = relief(&["study", "report"]);
            c.arg(&dir);
            c
        },
        {
            let mut c = relief(&["study", "run-point"]);
            c.arg(&dir).arg("0");
            c
        },
        {
            let mut c = relief(&["study", "run"]);
            c.arg(study).arg("--out").arg(&dir);
            c
        },
        {
            let mut c = relief(&["study", "submit"]);
            c.arg(&dir).args(["--slurm", "--retry-failed"]);
            c
        },
    ];
    for mut c in cmds {
        refused(&mut c, tmp.path(), &["points.json", "unreadable"]);
    }
}

#[test]
fn an_edited_points_json_is_refused_naming_the_point() {
    let (tmp, dir) = copy_study();
    let path = dir.join("points.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["points"][1]["depends_on"] = 7.into();
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    refused(
        relief(&["study", "run-point"]).arg(&dir).arg("0"),
        tmp.path(),
        &["points.json", "train_limit=50", "depends_on = 7"],
    );
    // An id that would lead out of the study directory.
    v["points"][1]["depends_on"] = Value::Null;
    v["points"][1]["id"] = "../../escape".into();
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    refused(
        relief(&["study", "status"]).arg(&dir),
        tmp.path(),
        &["points.json", "../../escape", "not a point id"],
    );
}

#[test]
fn a_deleted_or_edited_study_resolved_toml_is_refused_before_any_work() {
    let (tmp, dir) = copy_study();
    let path = dir.join("study.resolved.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    refused(
        relief(&["study", "run-point"]).arg(&dir).arg("0"),
        tmp.path(),
        &["study.resolved.toml", "changed by hand"],
    );
    refused(
        relief(&["study", "submit"]).arg(&dir).args(["--slurm", "--dry-run"]),
        tmp.path(),
        &["study.resolved.toml"],
    );
    // Edited: a point's config no longer hashes as points.json says.
    std::fs::write(&path, text.replace("test_limit = 500", "test_limit = 400")).unwrap();
    for args in [&["run-point", "0"][..], &["run-point", "1"]] {
        let mut c = relief(&["study", args[0]]);
        c.arg(&dir).arg(args[1]);
        refused(
            &mut c,
            tmp.path(),
            &["study.resolved.toml", "points.json", "train_limit=600", "config hash"],
        );
    }
    refused(
        relief(&["study", "submit"]).arg(&dir).args(["--slurm", "--dry-run"]),
        tmp.path(),
        &["train_limit=50", "config hash"],
    );
    // Garbage: the parse error names the file.
    std::fs::write(&path, "name = [").unwrap();
    refused(relief(&["study", "run-point"]).arg(&dir).arg("0"), tmp.path(), &["study.resolved.toml"]);
}

#[test]
fn a_truncated_jobs_json_is_refused_by_retry_failed_and_status() {
    let (tmp, dir) = copy_study();
    std::fs::create_dir_all(dir.join("slurm")).unwrap();
    std::fs::write(dir.join("slurm/jobs.json"), "{\"submissions\": [{\"number\": 1,").unwrap();
    refused(
        relief(&["study", "submit"]).arg(&dir).args(["--slurm", "--retry-failed"]),
        tmp.path(),
        &["jobs.json"],
    );
    refused(relief(&["study", "status"]).arg(&dir), tmp.path(), &["jobs.json"]);
}

#[test]
fn an_unreadable_status_file_is_named_by_status_and_by_the_report() {
    let (_tmp, dir) = copy_study();
    let status = dir.join("status/train_limit=50.json");
    let good = std::fs::read_to_string(&status).unwrap();
    for damaged in [good[..good.len() / 3].to_string(), good.replace("\"failed\"", "\"faild\"")] {
        std::fs::write(&status, &damaged).unwrap();
        let before = tree(&dir);
        let o = relief(&["study", "status"]).arg(&dir).output().unwrap();
        let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{out}{err}");
        assert!(out.contains("unknown") && out.contains("1 done"), "the table is still shown: {out}");
        assert!(err.contains("status/train_limit=50.json") && !err.contains("panicked"), "{err}");
        assert_same_tree(&dir, &before);
        // The report still aggregates, and names the file.
        let o = run_expect(relief(&["study", "report"]).arg(&dir), true);
        let all = text(&o);
        assert!(all.contains("warning") && all.contains("status/train_limit=50.json"), "{all}");
        let summary: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report/summary.json")).unwrap()).unwrap();
        assert_eq!(summary["missing"][0]["state"], "unknown", "{summary}");
        assert!(summary["missing"][0]["error"].as_str().unwrap().contains("train_limit=50.json"));
    }
    // A status path that is a directory is no "never started" either.
    std::fs::remove_file(&status).unwrap();
    std::fs::create_dir(&status).unwrap();
    let o = relief(&["study", "status"]).arg(&dir).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is a directory"), "{}", text(&o));
}

#[test]
fn the_executor_names_an_unreadable_status_file_and_runs_the_point_again() {
    let (_tmp, dir) = copy_study();
    let status = dir.join("status/train_limit=50.json");
    std::fs::write(&status, "{\"state\": \"fail").unwrap();
    // The point fails again (its cause is in the study file), and says so in its status file.
    let o = run_expect(relief(&["study", "run"]).arg(&fx().study).arg("--out").arg(&dir), false);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning") && err.contains("status/train_limit=50.json"), "{err}");
    assert!(err.contains("1 of 2 points failed") && !err.contains("panicked"), "{err}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&status).unwrap()).unwrap();
    assert_eq!(v["state"], "failed");
}

#[test]
fn the_report_lists_a_failed_point_as_failed_with_its_error_and_log() {
    let fx = fx();
    // The executor clamped --jobs to the 2 points.
    assert!(fx.log.contains("2 at a time"), "{}", fx.log);
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(fx.dir.join("report/summary.json")).unwrap()).unwrap();
    let missing = &summary["missing"][0];
    assert_eq!(missing["id"], "train_limit=50", "{summary}");
    assert_eq!(missing["state"], "failed");
    assert!(missing["error"].as_str().unwrap().contains("prune.batch_size"), "{missing}");
    assert_eq!(missing["log"], "logs/train_limit=50.log");
    let md = std::fs::read_to_string(fx.dir.join("report/summary.md")).unwrap();
    let line = md.lines().find(|l| l.contains("`train_limit=50`")).unwrap();
    assert!(line.contains("failed: ") && line.contains("prune.batch_size"), "{line}");
    let log = fx.dir.join("logs/train_limit=50.log");
    assert!(line.contains(&log.display().to_string()) && line.contains("exceeds the 50 training"), "{line}");
    let html = std::fs::read_to_string(fx.dir.join("report/report.html")).unwrap();
    assert!(html.contains("failed: ") && html.contains("train_limit=50.log"));
    // And `status` agrees.
    let s = text(&run_expect(relief(&["study", "status"]).arg(&fx.dir), true));
    assert!(s.contains("1 done, 1 failed"), "{s}");
}

#[test]
fn a_refused_rerun_leaves_the_study_directory_byte_for_byte() {
    // A rerun whose arguments are wrong touches nothing (no lock, no rewritten index).
    let (tmp, dir) = copy_study();
    let study = &fx().study;
    let out = dir.display().to_string();
    for args in [
        vec!["--out", &out, "--jobs", "0"],
        vec!["--out", &out, "--devices", "cuda:4096"],
        vec!["--out", &out, "--devices", "tpu"],
    ] {
        refused(relief(&["study", "run"]).arg(study).args(&args), tmp.path(), &[args[2]]);
    }
    // A study file whose points differ from the directory's.
    refused(
        relief(&["study", "run"]).arg(study).args(["--out", &out, "--set", "train.epochs=2"]),
        tmp.path(),
        &["train_limit=600", "config changed"],
    );
}

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

#[test]
fn slurm_submissions_of_damaged_directories_or_bad_options_queue_nothing() {
    if !slurm_up() {
        return;
    }
    let queued = || {
        let o = Command::new("squeue").args(["-h", "-n", "relief-shared", "-o", "%i"]).output().unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let before = queued();
    let (tmp, dir) = copy_study();
    let path = dir.join("study.resolved.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("test_limit = 500", "test_limit = 400")).unwrap();
    refused(
        relief(&["study", "submit"]).arg(&dir).args(["--slurm", "--retry-failed"]),
        tmp.path(),
        &["config hash"],
    );
    refused(
        relief(&["study", "submit"]).arg(&fx().study).args(["--slurm", "--out", "x", "--time", "forever"]),
        tmp.path(),
        &["--time"],
    );
    assert_eq!(queued(), before, "a refused submission queued jobs");
}
