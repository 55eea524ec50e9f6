//! `relief models list|show`: the built-in specs, per-layer tables, `--toml` to start a spec
//! from a zoo one, and bad spec files refused with exit status 1 and the layer named.

use std::path::Path;
use std::process::{Command, Output};

fn relief(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_relief")).args(args).output().expect("run relief")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn list_names_every_built_in_model_with_its_counts() {
    let out = relief(&["models", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for name in relief_models::ZOO_SPECS {
        assert!(text.lines().any(|l| l.trim_start().starts_with(&format!("{name} "))), "{name} in\n{text}");
    }
    // LeNet-300-100: 266,610 parameters, 2 * 266,200 + 410 FLOPs.
    let lenet = text.lines().find(|l| l.trim_start().starts_with("lenet300-100")).unwrap();
    assert!(lenet.contains("784") && lenet.contains("266,610") && lenet.contains("532,810"), "{lenet}");
    // ResNet-20: the authors' 267,914 + 432 stem weights + 2 x 688 BatchNorm channels.
    let resnet = text.lines().find(|l| l.trim_start().starts_with("resnet20 ")).unwrap();
    assert!(resnet.contains("3x32x32") && resnet.contains("269,722"), "{resnet}");
}

#[test]
fn show_gives_the_per_layer_table() {
    let out = relief(&["models", "show", "resnet20"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("convention resnet") && text.contains("9 residual blocks"), "{text}");
    let row = text.lines().find(|l| l.contains("layer2.0")).unwrap();
    // 3x3 16->32 + 3x3 32->32 + 2 BatchNorms of 32 (option A: no shortcut parameters).
    assert!(row.contains("32x16x16") && row.contains("13,952"), "{row}");
    assert!(text.contains("the authors' count: 267,914"), "{text}");
    let out = relief(&["models", "show", "vgg11", "--num-classes", "100"]);
    assert!(stdout(&out).contains("the authors' count: 9,797,092"), "{}", stdout(&out));
}

#[test]
fn a_spec_started_from_a_zoo_one_follows_its_edited_widths() {
    let out = relief(&["models", "show", "lenet5", "--toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text, relief_models::Arch::Lenet5.spec_toml());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("narrow.toml");
    std::fs::write(
        &path,
        text.replacen("out_channels = 20", "out_channels = 6", 1).replace("\"lenet5\"", "\"narrow\""),
    )
    .unwrap();
    let out = relief(&["models", "show", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    // conv 1->6 (5x5 + bias) = 156; the next conv sees 6 channels: 50 * (6*25) + 50 = 7,550.
    let row = |name: &str| table.lines().find(|l| l.contains(name)).unwrap().to_string();
    assert!(row("feature_extractor.0").contains("6x24x24") && row("feature_extractor.0").contains("156"));
    assert!(row("feature_extractor.3").contains("7,550"), "{table}");
    assert!(table.contains("model narrow"), "{table}");
    // --toml of a file prints the (checked) spec.
    let out = relief(&["models", "show", path.to_str().unwrap(), "--toml"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("out_channels = 6"));
}

fn refused(path: &Path, parts: &[&str]) {
    let out = relief(&["models", "show", path.to_str().unwrap()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for p in parts {
        assert!(err.contains(p), "`{err}` lacks `{p}`");
    }
}

#[test]
fn bad_spec_files_exit_1_naming_the_layer() {
    let dir = tempfile::tempdir().unwrap();
    let head = "name = \"bad\"\ninput_shape = [1, 28, 28]\nnum_classes = 10\n";
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "kind.toml",
            "[[layer]]\nkind = \"conv3d\"\nname = \"c\"\n",
            &["layer 0 `c` (conv3d)", "not supported"],
        ),
        (
            "flatten.toml",
            "[[layer]]\nkind = \"conv2d\"\nname = \"c\"\nout_channels = 4\nkernel = 5\n\
             [[layer]]\nkind = \"flatten\"\n[[layer]]\nkind = \"linear\"\nname = \"fc\"\nin_features = 800\n",
            &["layer 2 `fc` (linear)", "expected 800 input features", "[2304]"],
        ),
        (
            "field.toml",
            "[[layer]]\nkind = \"conv2d\"\nname = \"c\"\nout_channels = 4\nkernal = 5\n",
            &["layer 0 `c` (conv2d)", "unknown field `kernal`"],
        ),
        ("syntax.toml", "[[layer]\n", &["syntax.toml"]),
    ];
    for (file, layers, parts) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, format!("{head}{layers}")).unwrap();
        let mut parts = parts.to_vec();
        parts.push(file);
        refused(&path, &parts);
    }
    refused(&dir.path().join("absent.toml"), &["absent.toml"]);
    let out = relief(&["models", "show", "resnet21"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unknown model `resnet21`"), "{}", stderr(&out));
}
