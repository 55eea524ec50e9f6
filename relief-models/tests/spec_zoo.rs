//! The built-in specs (`specs/*.toml`) describe exactly the zoo's graphs: same layers, names,
//! shapes, blocks and counts as `Arch::graph`, and the same seeded initial weights.
//!
//! `RELIEF_WRITE_SPECS=1 cargo test -p relief-models --test spec_zoo` rewrites the files from the
//! Rust zoo (after a change of the zoo); the tests then check the files.

use relief_core::accounting::account;
use relief_core::MaskSet;
use relief_models::{init_vars, Arch, Model, ModelSpec, ZOO_SPECS};
use tch::Device;

static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn default_classes(name: &str) -> i64 {
    if name.contains("tiny") {
        200
    } else {
        10
    }
}

fn header(name: &str) -> String {
    format!(
        "# relief built-in model spec `{name}` (see docs/models.md). Start your own from it:\n\
         #   relief models show {name} --toml > my-model.toml\n\
         # Generated from the Rust zoo; relief-models/tests/spec_zoo.rs checks they agree.\n\n"
    )
}

#[test]
fn write_specs_when_asked() {
    if std::env::var_os("RELIEF_WRITE_SPECS").is_none() {
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("specs");
    for name in ZOO_SPECS {
        let arch: Arch = name.parse().unwrap();
        let spec = ModelSpec::from_graph(&arch.graph(default_classes(name))).unwrap();
        std::fs::write(dir.join(format!("{name}.toml")), header(name) + &spec.to_toml()).unwrap();
    }
}

#[test]
fn every_zoo_name_has_a_spec() {
    for name in relief_models::ARCH_NAMES.iter().chain(["vgg19-tiny"].iter()) {
        assert!(ZOO_SPECS.contains(name), "{name}");
        assert!(ModelSpec::zoo(name).is_some(), "{name}");
    }
    assert_eq!(ModelSpec::zoo("lenet300_100").unwrap().name, "lenet300-100");
    assert!(ModelSpec::zoo("resnet21").is_none());
}

#[test]
fn every_spec_builds_the_zoo_graph_field_by_field() {
    for name in ZOO_SPECS {
        let arch: Arch = name.parse().unwrap();
        let spec = arch.spec();
        assert_eq!(spec.name, name);
        assert_eq!(spec.input_shape, arch.input_shape(), "{name}");
        assert_eq!(spec.num_classes, default_classes(name), "{name}");
        for classes in [10, 100, 200] {
            let expected = arch.graph(classes);
            let got = spec.graph(classes).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                serde_json::to_value(&got).unwrap(),
                serde_json::to_value(&expected).unwrap(),
                "{name} ({classes} classes)"
            );
            assert_eq!(got, expected, "{name}");
            assert_eq!(got.tensor_shapes(), expected.tensor_shapes(), "{name}");
            assert_eq!(got.mask_shapes(), expected.mask_shapes(), "{name}");
        }
    }
}

#[test]
fn spec_files_are_what_the_zoo_generates() {
    for name in ZOO_SPECS {
        let arch: Arch = name.parse().unwrap();
        let generated = ModelSpec::from_graph(&arch.graph(default_classes(name))).unwrap();
        assert_eq!(arch.spec(), generated, "{name}: rerun with RELIEF_WRITE_SPECS=1");
        assert_eq!(arch.spec_toml(), header(name) + &generated.to_toml(), "{name}");
        // What `--toml` prints parses back to the same spec.
        assert_eq!(ModelSpec::parse(&generated.to_toml()).unwrap(), generated, "{name}");
    }
}

#[test]
fn spec_counts_equal_the_authors() {
    let count = |name: &str, classes: i64| {
        let g = ModelSpec::zoo(name).unwrap().graph(classes).unwrap();
        account(&g, &MaskSet::ones(&g, Device::Cpu)).params_total
    };
    assert_eq!(count("lenet300-100", 10), 266_610);
    assert_eq!(count("lenet5", 10), 431_080);
    assert_eq!(count("resnet20", 10), 267_914);
    assert_eq!(count("vgg-like", 10), 14_982_474);
    assert_eq!(count("vgg11", 100), 9_797_092);
}

#[test]
fn spec_models_start_from_the_same_weights() {
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    for name in ["lenet300-100", "lenet5", "vgg11", "resnet20", "resnet18-tiny"] {
        let arch: Arch = name.parse().unwrap();
        let classes = default_classes(name);
        let zoo = Model::new(arch, classes, Device::Cpu, 11);
        let vs = init_vars(&arch.spec().graph(classes).unwrap(), Device::Cpu, 11);
        let (a, b) = (zoo.params(), vs.variables());
        assert_eq!(a.len(), b.len(), "{name}");
        for (k, t) in &a {
            let u = b.get(k).unwrap_or_else(|| panic!("{name}: {k} missing"));
            assert!(t.equal(u), "{name}: {k} differs");
        }
    }
}

#[test]
fn width_edits_propagate_through_shape_inference() {
    // A zoo spec with one width changed: only the shapes that depend on it change.
    let text =
        ModelSpec::zoo("lenet5").unwrap().to_toml().replacen("out_channels = 20", "out_channels = 8", 1);
    let g = ModelSpec::parse(&text).unwrap().graph(10).unwrap();
    assert_eq!(g.layers[0].op.weight_shape(), [8, 1, 5, 5]);
    assert_eq!(g.layers[1].op.weight_shape(), [50, 8, 5, 5]);
    assert_eq!(g.layers[2].op.weight_shape(), [500, 800]);
    let text = ModelSpec::zoo("resnet20").unwrap().to_toml().replace("planes = 64", "planes = 48");
    let g = ModelSpec::parse(&text).unwrap().graph(10).unwrap();
    assert_eq!(g.layers.last().unwrap().op.weight_shape(), [10, 48]);
}
