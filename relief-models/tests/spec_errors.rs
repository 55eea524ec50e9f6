//! Bad specs are refused before anything runs, with an error that names the layer (index and
//! name), what it got and what it expected.

use relief_models::{ModelSpec, SpecError};

const HEAD: &str = "name = \"t\"\ninput_shape = [1, 28, 28]\nnum_classes = 10\n";

/// A spec of `HEAD` and `layers`, its error (parse or shape inference) as text and its index.
fn error(layers: &str) -> (Option<usize>, String) {
    let text = format!("{HEAD}{layers}");
    let err = match ModelSpec::parse(&text) {
        Ok(spec) => spec.graph(spec.num_classes).expect_err("the spec should be refused"),
        Err(e) => e,
    };
    (err.layer_index(), err.to_string())
}

fn assert_error(layers: &str, index: Option<usize>, parts: &[&str]) {
    let (i, msg) = error(layers);
    assert_eq!(i, index, "{msg}");
    for p in parts {
        assert!(msg.contains(p), "`{msg}` lacks `{p}`");
    }
}

const CONV: &str = "[[layer]]\nkind = \"conv2d\"\nname = \"c1\"\nout_channels = 4\nkernel = 5\n";
const TAIL: &str = "[[layer]]\nkind = \"flatten\"\n[[layer]]\nkind = \"linear\"\nname = \"fc\"\n";

#[test]
fn a_good_spec_builds() {
    let spec = ModelSpec::parse(&format!("{HEAD}{CONV}[[layer]]\nkind = \"relu\"\n{TAIL}")).unwrap();
    let g = spec.graph(10).unwrap();
    assert_eq!(g.layers[1].op.weight_shape(), [10, 4 * 24 * 24]);
}

#[test]
fn unknown_layer_kind() {
    assert_error(
        "[[layer]]\nkind = \"conv3d\"\nname = \"x\"\n",
        Some(0),
        &["layer 0 `x` (conv3d)", "not supported", "2-D convolutions"],
    );
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"frobnicate\"\n"),
        Some(1),
        &["layer 1 (frobnicate)", "unknown layer kind `frobnicate`", "expected one of: linear, conv2d"],
    );
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"avg_pool\"\nkernel = 2\n"),
        Some(1),
        &["global_avg_pool"],
    );
    assert_error(&format!("{CONV}[[layer]]\nkind = \"sigmoid\"\n"), Some(1), &["ReLU only"]);
}

#[test]
fn missing_kind() {
    assert_error(
        "[[layer]]\nname = \"x\"\nout_channels = 3\n",
        Some(0),
        &["layer 0 `x`", "missing field `kind`"],
    );
}

#[test]
fn missing_field() {
    assert_error(
        "[[layer]]\nkind = \"conv2d\"\nname = \"c1\"\nkernel = 5\n",
        Some(0),
        &["layer 0 `c1` (conv2d)", "missing field `out_channels`"],
    );
    // out_features may be omitted on the last layer only.
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"flatten\"\n[[layer]]\nkind = \"linear\"\nname = \"fc1\"\n[[layer]]\nkind = \"linear\"\nname = \"fc2\"\n"),
        Some(2),
        &["layer 2 `fc1` (linear)", "missing field `out_features`"],
    );
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"basic_block\"\nplanes = 4\nshortcut = \"a\"\n{TAIL}"),
        Some(1),
        &["layer 1 (basic_block)", "missing field `prefix`"],
    );
}

#[test]
fn unknown_field() {
    assert_error(
        "[[layer]]\nkind = \"conv2d\"\nname = \"c1\"\nout_channels = 4\nkernal = 5\n",
        Some(0),
        &["layer 0 `c1` (conv2d)", "unknown field `kernal`"],
    );
    let (i, msg) = error(&format!("classes = 3\n{CONV}{TAIL}"));
    assert_eq!(i, None);
    assert!(msg.contains("unknown field `classes`"), "{msg}");
}

#[test]
fn wrong_field_type() {
    assert_error(
        "[[layer]]\nkind = \"conv2d\"\nname = \"c1\"\nout_channels = \"many\"\nkernel = 5\n",
        Some(0),
        &["layer 0 `c1`", "invalid type"],
    );
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"flatten\"\n[[layer]]\nkind = \"linear\"\nname = \"fc\"\nout_features = \"all\"\n"),
        Some(2),
        &["layer 2 `fc`", "\"classes\""],
    );
}

#[test]
fn channel_mismatch() {
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"conv2d\"\nname = \"c2\"\nin_channels = 6\nout_channels = 8\nkernel = 3\n{TAIL}"),
        Some(1),
        &["layer 1 `c2` (conv2d)", "expected 6 input channels", "got shape [4, 24, 24]"],
    );
}

#[test]
fn flatten_size_wrong() {
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"flatten\"\n[[layer]]\nkind = \"linear\"\nname = \"fc\"\nin_features = 800\n"),
        Some(2),
        &["layer 2 `fc` (linear)", "expected 800 input features", "got shape [2304]"],
    );
}

#[test]
fn linear_on_an_image_without_flatten() {
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"linear\"\nname = \"fc\"\n"),
        Some(1),
        &["layer 1 `fc` (linear)", "vector input", "[4, 24, 24]", "flatten"],
    );
}

#[test]
fn conv_after_flatten() {
    assert_error(
        &format!("[[layer]]\nkind = \"flatten\"\n{CONV}"),
        Some(1),
        &["layer 1 `c1` (conv2d)", "C x H x W", "[784]"],
    );
}

#[test]
fn kernel_larger_than_the_input() {
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"max_pool\"\nkernel = 30\n{TAIL}"),
        Some(1),
        &["layer 1 (max_pool)", "kernel 30", "[4, 24, 24]"],
    );
}

#[test]
fn duplicate_parameter_name() {
    assert_error(
        &format!("{CONV}{}{TAIL}", CONV.replace("kernel = 5", "kernel = 3")),
        Some(1),
        &["layer 1 `c1` (conv2d)", "duplicate parameter name `c1.weight`", "layer 0 `c1`"],
    );
    // A BatchNorm reusing a convolution's module path.
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"batch_norm\"\nname = \"c1\"\n{TAIL}"),
        Some(1),
        &["layer 1 `c1` (batch_norm)", "duplicate parameter name `c1.weight`"],
    );
}

#[test]
fn invalid_module_path() {
    assert_error(
        "[[layer]]\nkind = \"conv2d\"\nname = \"features..0\"\nout_channels = 4\nkernel = 5\n",
        Some(0),
        &["layer 0 `features..0`", "invalid module path"],
    );
}

#[test]
fn residual_shapes_that_cannot_add() {
    let head = "name = \"r\"\ninput_shape = [3, 32, 32]\nnum_classes = 10\n\
                [[layer]]\nkind = \"conv2d\"\nname = \"conv1\"\nout_channels = 16\nkernel = 3\npadding = 1\n\
                [[layer]]\nkind = \"relu\"\n";
    let tail = "[[layer]]\nkind = \"global_avg_pool\"\n[[layer]]\nkind = \"linear\"\nname = \"linear\"\n";
    let err = |block: &str| {
        let spec = ModelSpec::parse(&format!("{head}{block}{tail}")).unwrap();
        spec.graph(10).unwrap_err().to_string()
    };
    // Option A with stride 1 cannot subsample.
    let msg = err("[[layer]]\nkind = \"basic_block\"\nprefix = \"layer2.0\"\nplanes = 32\nstride = 1\nshortcut = \"a\"\n");
    assert!(msg.contains("layer 2 `layer2.0` (basic_block): residual shapes cannot add"), "{msg}");
    assert!(msg.contains("[32, 16, 16]") && msg.contains("[32, 32, 32]"), "{msg}");
    // Option A pads channels on both sides: an odd growth cannot.
    let msg = err("[[layer]]\nkind = \"basic_block\"\nprefix = \"layer2.0\"\nplanes = 23\nstride = 2\nshortcut = \"a\"\n");
    assert!(msg.contains("residual shapes cannot add") && msg.contains("even"), "{msg}");
    // Option B adapts any shape.
    let ok = "[[layer]]\nkind = \"basic_block\"\nprefix = \"layer2.0\"\nplanes = 23\nstride = 2\nshortcut = \"b\"\n";
    let g = ModelSpec::parse(&format!("{head}{ok}{tail}")).unwrap().graph(10).unwrap();
    assert_eq!(g.layers[3].name, "layer2.0.shortcut.0");
    assert_eq!(g.layers[4].op.weight_shape(), [10, 23]);
}

#[test]
fn fusion_order_is_checked() {
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"max_pool\"\nkernel = 2\n[[layer]]\nkind = \"relu\"\n{TAIL}"),
        Some(2),
        &["layer 2 (relu)", "must directly follow", "follows max_pool"],
    );
    assert_error(
        &format!("{CONV}[[layer]]\nkind = \"relu\"\n[[layer]]\nkind = \"batch_norm\"\nname = \"bn\"\n{TAIL}"),
        Some(2),
        &["layer 2 `bn` (batch_norm)", "follows relu"],
    );
    assert_error(
        &format!("{CONV}{TAIL}out_features = 20\n[[layer]]\nkind = \"batch_norm\"\nname = \"bn\"\n"),
        Some(3),
        &["layer 3 `bn` (batch_norm)", "after a linear layer"],
    );
}

#[test]
fn the_network_must_end_with_the_classes() {
    assert_error(
        &format!("{CONV}{TAIL}out_features = 7\n"),
        Some(2),
        &["layer 2 `fc` (linear)", "10 class scores", "[7]"],
    );
}

#[test]
fn top_level_problems() {
    let err = ModelSpec::parse(
        "name = \"t\"\ninput_shape = [1, 28]\nnum_classes = 10\n[[layer]]\nkind = \"flatten\"\n",
    )
    .unwrap()
    .graph(10)
    .unwrap_err();
    assert!(matches!(err, SpecError::Spec(_)) && err.to_string().contains("input_shape"), "{err}");
    let err = ModelSpec::parse("name = \"t\"\nnum_classes = 10\n").unwrap_err();
    assert!(err.to_string().contains("missing field `input_shape`"), "{err}");
    let err = ModelSpec::parse("name = \"t\"\ninput_shape = [784]\nnum_classes = 10\n").unwrap().graph(10);
    assert!(err.unwrap_err().to_string().contains("at least one"));
    let err = ModelSpec::parse("name = [").unwrap_err();
    assert!(matches!(err, SpecError::Syntax(_)), "{err}");
}

#[test]
fn files_are_read_and_errors_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "name = \"t\"\ninput_shape = [784]\nnum_classes = 10\nbogus = 1\n").unwrap();
    let err = ModelSpec::from_file(&path).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("unknown field `bogus`"), "{err}");
    let err = ModelSpec::from_file(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(err, SpecError::Read { .. }), "{err}");
}

#[test]
fn names_chosen_by_the_spec_are_the_parameter_names() {
    let text = "name = \"mine\"\ninput_shape = [3, 8, 8]\nnum_classes = 5\n\
        [[layer]]\nkind = \"conv2d\"\nname = \"stem.conv\"\nout_channels = 8\nkernel = 3\npadding = 1\nbias = false\nstem = true\n\
        [[layer]]\nkind = \"batch_norm\"\nname = \"stem.norm\"\n[[layer]]\nkind = \"relu\"\n\
        [[layer]]\nkind = \"basic_block\"\nconv1 = \"b.a\"\nbn1 = \"b.an\"\nconv2 = \"b.b\"\nbn2 = \"b.bn\"\nmask = \"b.skip\"\nplanes = 8\nshortcut = \"a\"\n\
        [[layer]]\nkind = \"adaptive_avg_pool\"\noutput_size = 1\n\
        [[layer]]\nkind = \"dropout\"\np = 0.25\n\
        [[layer]]\nkind = \"linear\"\nname = \"head\"\nbias = false\n";
    let spec = ModelSpec::parse(text).unwrap();
    let inf = spec.infer(5).unwrap();
    let names: Vec<String> = inf.graph.tensor_shapes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[..2], ["stem.conv.weight".to_string(), "stem.norm.weight".to_string()]);
    assert!(names.contains(&"b.an.running_var".to_string()) && names.contains(&"head.weight".to_string()));
    assert!(!names.contains(&"head.bias".to_string()));
    assert_eq!(inf.graph.blocks[0].mask.as_deref(), Some("b.skip"));
    assert_eq!(inf.graph.convention, relief_core::graph::Convention::Resnet);
    let shapes: Vec<Vec<i64>> = inf.layers.iter().map(|l| l.output_shape.clone()).collect();
    assert_eq!(
        shapes,
        [vec![8, 8, 8], vec![8, 8, 8], vec![8, 8, 8], vec![8, 8, 8], vec![8], vec![8], vec![5]]
    );
    assert_eq!(inf.layers[3].weights, [1, 2]);
    // The spec round-trips through TOML.
    assert_eq!(ModelSpec::parse(&spec.to_toml()).unwrap(), spec);
    // And a model initialises from it.
    let vs = relief_models::init_vars(&inf.graph, tch::Device::Cpu, 0);
    assert_eq!(vs.variables().len(), names.len());
}

#[test]
fn the_example_of_the_docs_builds_and_runs() {
    let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/models.md")).unwrap();
    // The first TOML block that is a spec (one with layers; config snippets come before it).
    let example = docs
        .split("```toml\n")
        .skip(1)
        .map(|b| &b[..b.find("```").unwrap()])
        .find(|b| b.contains("[[layer]]"))
        .expect("a spec example in docs/models.md");
    let spec = ModelSpec::parse(example).unwrap();
    let graph = spec.graph(spec.num_classes).unwrap();
    assert_eq!((graph.layers.len(), graph.blocks.len()), (6, 2));
    let vs = relief_models::init_vars(&graph, tch::Device::Cpu, 0);
    let params: relief_core::params::TensorMap = vs.variables().into_iter().collect();
    let bound = relief_core::params::Bound::new(&graph, &params).unwrap();
    let x = tch::Tensor::zeros([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
    let y = tch::no_grad(|| {
        relief_core::exec::forward(&graph, &bound, None, &x, relief_core::exec::ForwardOptions::EVAL, None)
    });
    assert_eq!(y.size(), [2, 10]);
}
