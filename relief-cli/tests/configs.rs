//! Every shipped config parses and validates (with its data directory pointed at an existing
//! folder, since the full datasets are not in the repository).

use std::path::{Path, PathBuf};

use relief_experiment::config::{Config, Override, Selection};
use relief_experiment::plan::{Plan, Stages};

fn configs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let mut out = vec![root.join("demo.toml")];
    for e in std::fs::read_dir(root.join("paper")).unwrap() {
        out.push(e.unwrap().path());
    }
    out.sort();
    out
}

#[test]
fn every_preset_parses_and_validates() {
    let files = configs();
    assert!(files.len() >= 8, "{files:?}");
    let data = std::env::temp_dir();
    for f in &files {
        let set: Override = format!("data.dir={}", data.display()).parse().unwrap();
        let cpu: Override = "device=cpu".parse().unwrap();
        let cfg = Config::load(f, &[set, cpu]).unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        let plan = Plan::new(cfg.clone(), Stages::All, &f.display().to_string())
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        assert!(plan.last_iteration > 0, "{}", f.display());
        if f.parent().unwrap().ends_with("paper") {
            // The paper presets reproduce the authors' protocol, test-set selection included.
            assert_eq!(cfg.retrain.select, Selection::BestTest, "{}", f.display());
        }
        // The resolved form parses back to the same config.
        assert_eq!(Config::from_toml(&cfg.to_toml(), "resolved").unwrap(), cfg);
    }
}

#[test]
fn the_demo_binary_copy_is_the_demo_file() {
    let file =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/demo.toml")).unwrap();
    assert_eq!(file, relief_cli::cmd_demo::DEMO_TOML);
}
