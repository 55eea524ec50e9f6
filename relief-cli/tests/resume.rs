//! Resume: a run killed (SIGKILL) at random instants and resumed each time ends with exactly the
//! metrics and weights of the same run done in one go; no checkpoint is ever left corrupt.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use relief_experiment::checkpoint::Checkpoint;

/// A small xorshift generator seeded from the clock (printed, so a failure can be replayed with
/// RELIEF_RESUME_SEED).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Changes whenever a session saves an epoch or finishes an iteration.
fn progress_marker(run: &Path) -> Vec<(String, Option<std::time::SystemTime>)> {
    let mut out: Vec<_> = std::fs::read_dir(run)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".safetensors"))
                .map(|n| {
                    let t = std::fs::metadata(run.join(&n)).and_then(|m| m.modified()).ok();
                    (n, t)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn every_checkpoint_loads(run: &Path) {
    for e in std::fs::read_dir(run).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            Checkpoint::read(&p).unwrap_or_else(|err| panic!("corrupt checkpoint {}: {err:#}", p.display()));
        }
    }
}

#[test]
fn killed_and_resumed_run_matches_the_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tiny_config(tmp.path(), 3, 3);
    // Training uses Adam and best-val selection; retraining SGD with momentum and the last
    // epoch: both optimizers' state and both selection paths go through the checkpoints.
    let sets = ["--set", "retrain.optimizer=sgd", "--set", "retrain.lr=0.05", "--set", "retrain.select=last"];
    let reference = tmp.path().join("reference");
    let t = Instant::now();
    run_expect(relief(&["run", "-q", "--no-plots"]).args(sets).arg(&cfg).arg("--out").arg(&reference), true);
    let full = t.elapsed();

    let seed = std::env::var("RELIEF_RESUME_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("RELIEF_RESUME_SEED={seed} (uninterrupted run: {:.2} s)", full.as_secs_f64());
    let mut rng = Rng(seed);
    let run = tmp.path().join("interrupted");
    let epoch = full / 14; // 12 epochs, evaluation and start-up: roughly one epoch's time
    let mut interrupted = 0;
    for k in 0..6 {
        // Alternate the two ways of continuing a run.
        let mut cmd = if k % 2 == 0 {
            let mut c = relief(&["run", "-q", "--no-plots"]);
            c.args(sets).arg(&cfg).arg("--out").arg(&run);
            c
        } else {
            let mut c = relief(&["prune", "-q", "--no-plots", "--resume"]);
            c.arg(&run);
            c
        };
        let before = progress_marker(&run);
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // Let the session make some progress (an epoch saved), then kill it at a random instant
        // within about the next epoch: mid-training, mid-evaluation or mid-checkpoint-write.
        let start = Instant::now();
        let mut finished = false;
        while progress_marker(&run) == before && start.elapsed() < Duration::from_secs(120) {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let delay = epoch.mul_f64(1.5 * rng.next());
        let t = Instant::now();
        while !finished && t.elapsed() < delay {
            finished = child.try_wait().unwrap().is_some();
            std::thread::sleep(Duration::from_millis(1));
        }
        if !finished {
            child.kill().unwrap(); // SIGKILL
            interrupted += 1;
        }
        let _ = child.wait();
        every_checkpoint_loads(&run);
        let done = run.join("iter-003.safetensors").is_file();
        eprintln!(
            "session {k}: killed = {} after {:.2} s; iterations done: {}",
            !finished,
            start.elapsed().as_secs_f64(),
            (0..4).filter(|i| run.join(format!("iter-{i:03}.safetensors")).is_file()).count()
        );
        if done {
            break;
        }
    }
    assert!(interrupted >= 2, "fewer than two kills landed inside a run; the test proves little");
    run_expect(relief(&["prune", "-q", "--no-plots", "--resume"]).arg(&run), true);
    every_checkpoint_loads(&run);
    assert_eq!(metrics_without_timing(&run), metrics_without_timing(&reference));
    // Bit-identical weights and masks at the end.
    let a = Checkpoint::read(&reference.join("iter-003.safetensors")).unwrap();
    let b = Checkpoint::read(&run.join("iter-003.safetensors")).unwrap();
    assert_eq!(a.tensors.len(), b.tensors.len());
    for ((ka, ta), (kb, tb)) in a.tensors.iter().zip(&b.tensors) {
        assert_eq!(ka, kb);
        assert!(ta.equal(tb), "{ka} differs after resuming");
    }
    let log = std::fs::read_to_string(run.join("relief.log")).unwrap();
    assert!(log.matches("session start").count() >= 2, "{log}");
}
