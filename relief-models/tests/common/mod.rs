//! Helpers shared by the tests that run PyTorch next to relief.

use std::path::PathBuf;

/// The Python with the torch whose libtorch relief links: `RELIEF_PYTHON`, else the project
/// venv (`scripts/setup.sh` creates it). Panics with what to do when it is missing; `purpose`
/// says what the test needs PyTorch for ("builds the models").
pub fn venv_python(purpose: &str) -> PathBuf {
    let path = std::env::var_os("RELIEF_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"));
    assert!(
        path.exists(),
        "{} not found: this test {purpose} in PyTorch; run scripts/setup.sh (it creates the \
         project venv .venv with torch) or set RELIEF_PYTHON to a Python with the torch whose \
         libtorch relief links",
        path.display()
    );
    path
}
