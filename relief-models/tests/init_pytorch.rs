//! `InitScheme::Pytorch` reproduces the authors' PyTorch initialisation bit for bit: for every
//! zoo model and seeds 0, 1 and 2, the SHA-256 of relief's initial state equals that of the same
//! architecture built in PyTorch (defined below in Python, from the architecture, with module
//! classes shaped and named like the authors': `torch.manual_seed(seed)`, construction with the
//! layers' default `reset_parameters()`, then `apply(kaiming_normal_ on Linear/Conv2d weights)`).
//!
//! The state hash: every parameter and buffer but `num_batches_tracked` (an int64 zero; the name
//! lists, which include it, are compared separately), sorted by name, each as its name, a
//! newline and its raw little-endian f32 bytes.
//!
//! PyTorch runs in the project venv (`.venv/bin/python`, made by `scripts/setup.sh`, the torch
//! whose libtorch relief links); `RELIEF_PYTHON` names another interpreter with that torch.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use relief_models::{init_vars, init_vars_with, Arch, Architecture, InitScheme, Model, ModelSpec, ZOO_SPECS};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

/// libtorch's generator is global: one test at a time draws from it.
static SEEDED: Mutex<()> = Mutex::new(());

const SEEDS: [i64; 3] = [0, 1, 2];

/// Written from the architectures (docs of `relief_models::zoo`), not from the authors' files:
/// the module classes construct and register their layers in the authors' order and under their
/// names, which is all the initialisation depends on.
const PYTORCH_MODELS: &str = r#"
import ctypes, hashlib, json, sys
import torch
from torch import nn
import torch.nn.functional as F

# VGG stages: the 3x3 convolutions between two max-pools.
VGG_STAGES = {
    "vgg11": [[64], [128], [256] * 2, [512] * 2, [512] * 2],
    "vgg13": [[64] * 2, [128] * 2, [256] * 2, [512] * 2, [512] * 2],
    "vgg16": [[64] * 2, [128] * 2, [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64] * 2, [128] * 2, [256] * 4, [512] * 4, [512] * 4],
}
VGG_STAGES["vgg-like"] = VGG_STAGES["vgg16"]


class LeNet300(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.classifier = nn.Sequential(nn.Linear(784, 300), nn.ReLU(True), nn.Linear(300, 100),
                                        nn.ReLU(True), nn.Linear(100, classes))


class LeNet5(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.feature_extractor = nn.Sequential(nn.Conv2d(1, 20, 5), nn.ReLU(True), nn.MaxPool2d(2),
                                               nn.Conv2d(20, 50, 5), nn.ReLU(True), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(800, 500), nn.ReLU(True), nn.Linear(500, classes))


class Vgg(nn.Module):
    def __init__(self, stages, classes, flat, deep_classifier):
        super().__init__()
        mods, channels = [], 3
        for stage in stages:
            for width in stage:
                mods += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(True)]
                channels = width
            mods.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*mods)
        head = [nn.Dropout(), nn.Linear(flat, 512), nn.ReLU(True)]
        if deep_classifier:
            head += [nn.Dropout(), nn.Linear(512, 512), nn.ReLU(True)]
        self.classifier = nn.Sequential(*head, nn.Linear(512, classes))


class PadShortcut(nn.Module):
    """Option A: subsample by 2, zero-pad the channels (no parameters)."""
    def __init__(self, pad):
        super().__init__()
        self.pad = pad

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class Block(nn.Module):
    def __init__(self, inputs, planes, stride, option):
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != planes:
            if option == "A":
                self.shortcut = PadShortcut((planes - inputs) // 2)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(inputs, planes, 1, stride=stride, bias=False),
                                              nn.BatchNorm2d(planes))


class ResNet(nn.Module):
    def __init__(self, widths, blocks, option, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        inputs = widths[0]
        for stage, planes in enumerate(widths):
            seq = []
            for b in range(blocks):
                seq.append(Block(inputs, planes, 2 if stage > 0 and b == 0 else 1, option))
                inputs = planes
            setattr(self, "layer%d" % (stage + 1), nn.Sequential(*seq))
        self.linear = nn.Linear(inputs, classes)


def construct(name, classes):
    if name == "lenet300-100":
        return LeNet300(classes)
    if name == "lenet5":
        return LeNet5(classes)
    if name.startswith("resnet") and name != "resnet18-tiny":
        return ResNet([16, 32, 64], (int(name[6:]) - 2) // 6, "A", classes)
    if name == "resnet18-tiny":
        return ResNet([64, 128, 256, 512], 2, "B", classes)
    if name.endswith("-tiny"):
        return Vgg(VGG_STAGES[name[:-5]], classes, 2048, True)
    return Vgg(VGG_STAGES[name], classes, 512, name != "vgg-like")


def kaiming(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.kaiming_normal_(m.weight)


def raw(t):
    t = t.detach().contiguous()
    return ctypes.string_at(t.data_ptr(), t.numel() * t.element_size())


out = {"torch": torch.__version__, "runs": []}
for spec in sys.argv[1:]:
    name, classes, seed = spec.split(":")
    torch.manual_seed(int(seed))
    model = construct(name, int(classes))
    model.apply(kaiming)
    state = model.state_dict()
    total = hashlib.sha256()
    tensors = {}
    for key in sorted(state):
        if key.endswith("num_batches_tracked"):
            continue
        t = state[key]
        assert t.dtype == torch.float32 and sys.byteorder == "little", key
        data = raw(t)
        total.update(key.encode() + b"\n" + data)
        tensors[key] = [list(t.shape), hashlib.sha256(data).hexdigest()]
    out["runs"].append({"spec": spec, "names": sorted(state), "sha256": total.hexdigest(),
                        "tensors": tensors})
json.dump(out, sys.stdout)
"#;

fn python() -> PathBuf {
    common::venv_python("builds the models")
}

fn default_classes(name: &str) -> i64 {
    if name.contains("tiny") {
        200
    } else {
        10
    }
}

/// Every variable of `vs` by name, on the CPU.
fn state(vs: &VarStore) -> BTreeMap<String, Tensor> {
    vs.variables().into_iter().map(|(k, v)| (k, v.detach().to_device(Device::Cpu))).collect()
}

fn raw_f32(t: &Tensor) -> Vec<u8> {
    assert_eq!(t.kind(), Kind::Float);
    let v = Vec::<f32>::try_from(t.contiguous().view([-1])).unwrap();
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The state hash (see the file docs) and, per tensor, its shape and the hash of its bytes.
fn state_hash(state: &BTreeMap<String, Tensor>) -> (String, BTreeMap<String, (Vec<i64>, String)>) {
    let mut total = Sha256::new();
    let mut tensors = BTreeMap::new();
    for (name, t) in state {
        if name.ends_with("num_batches_tracked") {
            continue;
        }
        let data = raw_f32(t);
        total.update(name.as_bytes());
        total.update(b"\n");
        total.update(&data);
        tensors.insert(name.clone(), (t.size(), hex(&Sha256::digest(&data))));
    }
    (hex(&total.finalize()), tensors)
}

#[test]
fn pytorch_scheme_is_the_authors_pytorch_init_for_every_zoo_model_and_seed() {
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let specs: Vec<String> = ZOO_SPECS
        .iter()
        .flat_map(|name| SEEDS.iter().map(move |seed| format!("{name}:{}:{seed}", default_classes(name))))
        .collect();
    let output = Command::new(python())
        .arg("-c")
        .arg(PYTORCH_MODELS)
        .args(&specs)
        .output()
        .expect("the venv's python runs");
    assert!(output.status.success(), "PyTorch side failed:\n{}", String::from_utf8_lossy(&output.stderr));
    let torch: Value = serde_json::from_slice(&output.stdout).expect("the PyTorch side prints JSON");
    let version = torch["torch"].as_str().unwrap().to_string();
    let runs = torch["runs"].as_array().unwrap();
    assert_eq!(runs.len(), specs.len());
    for (spec, run) in specs.iter().zip(runs) {
        assert_eq!(run["spec"], spec.as_str());
        let mut parts = spec.split(':');
        let name = parts.next().unwrap();
        let classes: i64 = parts.next().unwrap().parse().unwrap();
        let seed: i64 = parts.next().unwrap().parse().unwrap();
        let arch: Arch = name.parse().unwrap();
        let expected_names: Vec<&str> =
            run["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
        let expected: BTreeMap<String, (Vec<i64>, String)> = run["tensors"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let shape = v[0].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
                (k.clone(), (shape, v[1].as_str().unwrap().to_string()))
            })
            .collect();
        // The zoo's Rust graph and its built-in spec (what `model = "<spec>.toml"` builds).
        let graphs = [arch.graph(classes), ModelSpec::zoo(name).unwrap().graph(classes).unwrap()];
        for (origin, graph) in ["zoo", "spec"].iter().zip(graphs) {
            let got = state(&init_vars_with(&graph, Device::Cpu, seed, InitScheme::Pytorch));
            let names: Vec<&str> = got.keys().map(String::as_str).collect();
            assert_eq!(names, expected_names, "{spec} ({origin}): parameter and buffer names");
            let (sha, tensors) = state_hash(&got);
            for (k, (shape, h)) in &tensors {
                let (want_shape, want) = &expected[k];
                assert_eq!(shape, want_shape, "{spec} ({origin}): {k} shape");
                assert_eq!(h, want, "{spec} ({origin}): {k} differs from PyTorch {version}'s");
            }
            assert_eq!(sha, run["sha256"].as_str().unwrap(), "{spec} ({origin}): state hash");
        }
    }
}

#[test]
fn build_with_pytorch_draws_the_same_tensors_on_every_device() {
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let arch = Architecture::Zoo(Arch::Resnet(3));
    let cpu = Model::build_with(&arch, 10, Device::Cpu, 5, InitScheme::Pytorch).unwrap();
    let graph = arch.graph(10).unwrap();
    assert_eq!(
        state_hash(&state(&cpu.vs)).0,
        state_hash(&state(&init_vars_with(&graph, Device::Cpu, 5, InitScheme::Pytorch))).0
    );
    // A later manual_seed does not matter: the scheme seeds itself.
    tch::manual_seed(99);
    let again = Model::build_with(&arch, 10, Device::Cpu, 5, InitScheme::Pytorch).unwrap();
    assert_eq!(state_hash(&state(&cpu.vs)).0, state_hash(&state(&again.vs)).0);
    if tch::Cuda::is_available() {
        let gpu = Model::build_with(&arch, 10, Device::Cuda(0), 5, InitScheme::Pytorch).unwrap();
        assert_eq!(gpu.device(), Device::Cuda(0));
        assert_eq!(state_hash(&state(&cpu.vs)).0, state_hash(&state(&gpu.vs)).0, "CUDA differs");
    } else {
        eprintln!("no CUDA device: the CPU/CUDA comparison is skipped");
    }
    // The two schemes draw differently.
    let relief = Model::build_with(&arch, 10, Device::Cpu, 5, InitScheme::Relief).unwrap();
    assert_ne!(state_hash(&state(&cpu.vs)).0, state_hash(&state(&relief.vs)).0);
}

/// relief's own scheme is unchanged by the second one: the hash of lenet5 seed 3 was computed
/// before `InitScheme` existed (and agrees with a PyTorch replay of tch's `Init::Randn` /
/// `Init::Uniform` draws in graph order).
#[test]
fn relief_scheme_is_unchanged() {
    const LENET5_SEED3: &str = "c4edf87d8f7046cba25e6e168b791df3506303c38c658c0bccbba508250283ca";
    let _seeded = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let graph = Arch::Lenet5.graph(10);
    let new = Model::new(Arch::Lenet5, 10, Device::Cpu, 3);
    assert_eq!(state_hash(&state(&new.vs)).0, LENET5_SEED3, "Model::new");
    assert_eq!(state_hash(&state(&init_vars(&graph, Device::Cpu, 3))).0, LENET5_SEED3, "init_vars");
    let vs = init_vars_with(&graph, Device::Cpu, 3, InitScheme::Relief);
    assert_eq!(state_hash(&state(&vs)).0, LENET5_SEED3, "init_vars_with");
    let built = Model::build(&Architecture::Zoo(Arch::Lenet5), 10, Device::Cpu, 3).unwrap();
    assert_eq!(state_hash(&state(&built.vs)).0, LENET5_SEED3, "Model::build");
}
