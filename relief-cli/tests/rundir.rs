//! Run directories: a start that failed before saving anything leaves a directory the corrected
//! command takes over; one with saved iterations is never taken over; the lock is taken before
//! the config is looked at, so a second process is told the directory is in use (with the pid)
//! instead of "not a relief run directory"; the leftovers of a killed start are accepted.
//!
//! Concurrent starts on one `--out` do not wait: the process that gets `run.lock` first runs,
//! the other exits at once with "in use by another relief process (pid N)".

mod common;

use std::path::Path;

use common::*;
use relief_experiment::rundir::RunDir;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_failed_start_is_taken_over_and_a_saved_run_is_not() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 1);
    let run = tmp.path().join("run");

    // prune.batch_size larger than the 600 training digits: found once the data is loaded,
    // after the directory was made.
    let big = ["--set", "prune.batch_size=100000"];
    let out =
        run_expect(relief(&["run", "-q", "--no-plots"]).args(big).arg(&cfg).arg("--out").arg(&run), false);
    assert!(text(&out).contains("prune.batch_size = 100000 exceeds"), "{}", text(&out));
    for f in ["config.resolved.toml", "relief.log", "run.lock"] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let old_hash = read(&run.join("config.resolved.toml"));
    // Resuming repeats the failure (the config is the failed one), and saves nothing either.
    let out = run_expect(relief(&["prune", "-q", "--no-plots", "--resume"]).arg(&run), false);
    assert!(text(&out).contains("prune.batch_size = 100000 exceeds"), "{}", text(&out));
    assert_eq!(read(&run.join("config.resolved.toml")), old_hash);

    // The corrected command takes the directory over, says so, and runs.
    let out = run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let note = "no iteration completed under the previous config (hash ";
    assert!(stderr.contains(note) && stderr.contains("starting over with this config"), "{stderr}");
    assert!(stderr.contains(&run.display().to_string()), "{stderr}");
    assert!(read(&run.join("relief.log")).contains(note), "the log records the takeover");
    assert!(read(&run.join("config.resolved.toml")).contains("batch_size = 200"));
    assert!(run.join("iter-001.safetensors").is_file());
    let saved: Vec<Vec<u8>> =
        (0..=1).map(|i| std::fs::read(run.join(format!("iter-{i:03}.safetensors"))).unwrap()).collect();

    // With iterations saved, another config is refused as before, and nothing changes.
    let out = run_expect(
        relief(&["run", "-q", "--no-plots", "--set", "seed=4"]).arg(&cfg).arg("--out").arg(&run),
        false,
    );
    let t = text(&out);
    assert!(t.contains("holds a run with a different config") && t.contains("seed: 3 -> 4"), "{t}");
    assert!(!t.contains(note), "{t}");
    for (i, bytes) in saved.iter().enumerate() {
        assert_eq!(&std::fs::read(run.join(format!("iter-{i:03}.safetensors"))).unwrap(), bytes);
    }
    // The same config still resumes (nothing left to do).
    run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
}

#[test]
fn unreadable_pretrained_and_init_are_taken_over_too() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 1);
    let run = tmp.path().join("run");
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not a checkpoint at all").unwrap();
    let out = run_expect(
        relief(&["prune", "-q", "--no-plots", "--pretrained"])
            .arg(&junk)
            .arg("--init")
            .arg(&junk)
            .arg(&cfg)
            .arg("--out")
            .arg(&run),
        false,
    );
    assert!(text(&out).contains("junk.safetensors"), "{}", text(&out));
    assert!(RunDir::is_run(&run));
    let out = run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
    assert!(String::from_utf8_lossy(&out.stderr).contains("no iteration completed under the previous config"));
    assert!(run.join("iter-001.safetensors").is_file());
}

#[test]
fn a_held_directory_is_in_use_and_leftovers_of_a_killed_start_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 1);
    let run = tmp.path().join("run");
    // What a start killed between creating the lock and renaming its config leaves.
    std::fs::create_dir(&run).unwrap();
    std::fs::write(run.join("run.lock"), b"999999999\n").unwrap();
    std::fs::write(run.join("config.resolved.toml.31337.tmp"), b"model = \"len").unwrap();

    // This test process holds the lock, as a relief process creating the directory would.
    let held = RunDir::acquire(&run).unwrap();
    let me = format!("in use by another relief process (pid {})", std::process::id());
    let out = run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), false);
    let t = text(&out);
    assert!(t.contains(&me) && !t.contains("not a relief run directory"), "{t}");
    let out = run_expect(relief(&["prune", "-q", "--resume"]).arg(&run), false);
    let t = text(&out);
    assert!(t.contains(&format!("pid {}", std::process::id())) && t.contains("in use"), "{t}");
    drop(held);

    std::fs::write(run.join("config.resolved.toml.31337.tmp"), b"model = \"len").unwrap();
    run_expect(relief(&["run", "-q", "--no-plots"]).arg(&cfg).arg("--out").arg(&run), true);
    assert!(run.join("iter-001.safetensors").is_file());
    assert!(!run.join("config.resolved.toml.31337.tmp").exists(), "stale temporary file removed");
    let pid: u32 = read(&run.join("run.lock")).trim().parse().expect("run.lock holds a pid");
    assert_ne!(pid, 999_999_999);
}

#[test]
fn two_simultaneous_starts_on_one_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 1, 1);
    let run = tmp.path().join("run");
    let spawn = || {
        relief(&["run", "-q", "--no-plots"])
            .arg(&cfg)
            .arg("--out")
            .arg(&run)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let ids = [a.id(), b.id()];
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let ok = outs.iter().filter(|o| o.status.success()).count();
    assert!(ok >= 1, "one of them runs:\n{}\n{}", text(&outs[0]), text(&outs[1]));
    for (k, o) in outs.iter().enumerate() {
        if !o.status.success() {
            // The loser exits at once, naming the winner.
            let t = text(o);
            let other = ids[1 - k];
            assert!(t.contains(&format!("in use by another relief process (pid {other})")), "{t}");
            assert!(!t.contains("not a relief run directory") && !t.contains("panicked"), "{t}");
        }
    }
    assert!(run.join("iter-001.safetensors").is_file());
    // The directory is a sound run: resuming it finds everything done.
    run_expect(relief(&["prune", "-q", "--no-plots", "--resume"]).arg(&run), true);
}
