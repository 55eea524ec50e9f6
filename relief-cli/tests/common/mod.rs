//! Helpers shared by the integration tests: a tiny real experiment on the bundled MNIST sample
//! and running the `relief` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The bundled MNIST sample.
pub fn mnist_sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../data/mnist-sample")
        .canonicalize()
        .expect("data/mnist-sample")
}

/// A small but real LeNet-300-100 experiment: 600 training digits (after a 100-digit validation
/// carve), 500 test digits, `epochs` epochs per phase, `iterations` NNrelief iterations with
/// rewinding. `extra` is appended verbatim (e.g. a `[prune]` override is not possible twice, so
/// use `--set` for changes).
pub fn tiny_config(dir: &Path, epochs: usize, iterations: usize) -> PathBuf {
    let text = format!(
        r#"# integration-test experiment
model = "lenet300-100"
seed = 3
device = "cpu"
threads = 1

[data]
dataset = "mnist"
dir = "{data}"
validation = 100
train_limit = 600
test_limit = 500

[train]
epochs = {epochs}
batch_size = 60
milestones = {milestones}

[prune]
iterations = {iterations}
batch_size = 200
rewind = true

[retrain]
epochs = {epochs}
batch_size = 60
milestones = {milestones}
"#,
        data = mnist_sample().display(),
        // A milestone must lie before the last epoch; with one epoch there is none.
        milestones = if epochs > 1 { "[1]" } else { "[]" },
    );
    let path = dir.join("tiny.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `relief` with `args`.
pub fn relief(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relief"));
    cmd.args(args);
    cmd
}

/// Runs and returns the output; panics with stdout/stderr when the exit status is not `ok`.
pub fn run_expect(cmd: &mut Command, ok: bool) -> Output {
    let out = cmd.output().expect("relief starts");
    if out.status.success() != ok {
        panic!(
            "expected success = {ok}, got {:?}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// stdout + stderr as text.
pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// metrics.json of a run, parsed.
pub fn metrics(run: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run.join("metrics.json")).unwrap()).unwrap()
}

/// metrics.json rows with the wall time removed (the only field that differs between two
/// identical runs).
pub fn metrics_without_timing(run: &Path) -> serde_json::Value {
    let mut m = metrics(run);
    for row in m.as_array_mut().unwrap() {
        row.as_object_mut().unwrap().remove("wall_time_s");
    }
    m
}

/// A study file of tiny LeNet-300-100 runs (the sizes of [`tiny_config`]), written into `dir`:
/// `extra` goes before the base (e.g. `match = "nnrelief"`), `grid` is the `[grid]` table's body.
pub fn study_file(
    dir: &Path,
    name: &str,
    epochs: usize,
    iterations: usize,
    extra: &str,
    grid: &str,
) -> PathBuf {
    let text = format!(
        r#"name = "{name}"
{extra}
[base]
model = "lenet300-100"
device = "cpu"
threads = 1

[base.data]
dataset = "mnist"
dir = "{data}"
validation = 100
train_limit = 600
test_limit = 500

[base.train]
epochs = {epochs}
batch_size = 60
milestones = []

[base.prune]
iterations = {iterations}
batch_size = 200
rewind = true

[base.retrain]
epochs = {epochs}
batch_size = 60
milestones = []

[grid]
{grid}

[slurm]
cpus_per_task = 1
"#,
        data = mnist_sample().display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}
