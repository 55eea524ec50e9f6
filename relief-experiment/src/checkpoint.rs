//! Checkpoints: one safetensors file holding every parameter and buffer by its PyTorch name,
//! every mask as `mask.<name>`, optionally the optimizer state (`opt.*`) and the best weights
//! of the training phase so far (`best.<name>`), and string metadata in the safetensors header
//! (architecture, class count, iteration, epochs done, config hash, semantics, relief version,
//! metrics). Files are written to a temporary sibling, flushed to disk, then renamed over the
//! target, so a reader (or a process killed mid-write) never sees a partial checkpoint.
//!
//! A checkpoint loads without the config that made it: [`Checkpoint::model`] rebuilds the
//! architecture from the metadata and rejects a mismatch with the list of missing, extra and
//! mis-shaped tensors.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use relief_core::tensor_io::safetensors_error;
use relief_core::MaskSet;
use relief_models::{Architecture, Model, ModelSpec};
use safetensors::tensor::Dtype;
use tch::{Device, Kind, Tensor};

/// Format tag stored under `format` in every checkpoint written by relief.
pub const FORMAT: &str = "relief-checkpoint/1";

/// Tensor-name prefixes that are not model state. Each is a name of
/// [`relief_models::spec::RESERVED_NAMES`] plus `.`, so no model (spec or export) can own a
/// parameter under one of them.
pub const MASK_PREFIX: &str = "mask.";
/// Metadata key holding a spec model's TOML, so that a checkpoint of a user network loads
/// without the spec file.
pub const MODEL_SPEC_KEY: &str = "model_spec";
/// Prefix of the optimizer state.
pub const OPT_PREFIX: &str = "opt.";
/// Prefix of the best-so-far weights of a training phase in progress.
pub const BEST_PREFIX: &str = "best.";

/// A checkpoint in memory: named CPU tensors and string metadata.
#[derive(Debug, Default)]
pub struct Checkpoint {
    /// Every tensor, by name.
    pub tensors: Vec<(String, Tensor)>,
    /// Header metadata.
    pub meta: BTreeMap<String, String>,
}

fn kind(dtype: Dtype) -> Result<Kind> {
    relief_core::tensor_io::kind_of(dtype)
        .ok_or_else(|| anyhow!("safetensors dtype {dtype:?} is not supported"))
}

pub use relief_core::tensor_io::temp_sibling;

/// Writes `bytes` to `path` atomically ([`relief_core::tensor_io::write_atomic`]: temporary
/// sibling, `fsync`, rename, `fsync` of the directory).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(relief_core::tensor_io::write_atomic(path, bytes)?)
}

/// The `kind` values of the checkpoints a run directory holds (`init.safetensors`,
/// `state.safetensors`, `iter-NNN.safetensors`).
pub const RUN_KINDS: [&str; 3] = ["iteration", "state", "init"];

/// The header metadata of a safetensors file, reading only the header (not the tensors).
pub fn read_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| anyhow!("{}: not a safetensors file (no header length: {e})", path.display()))?;
    let len = u64::from_le_bytes(len);
    // safetensors itself refuses headers above 100 MB.
    if len > 100_000_000 {
        bail!("{}: not a safetensors file (header length {len})", path.display());
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| anyhow!("{}: not a safetensors file (truncated header: {e})", path.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| anyhow!("{}: not a safetensors file (header is not JSON: {e})", path.display()))?;
    let mut meta = BTreeMap::new();
    if let Some(m) = json.get("__metadata__").and_then(|m| m.as_object()) {
        for (k, v) in m {
            if let Some(v) = v.as_str() {
                meta.insert(k.clone(), v.to_string());
            }
        }
    }
    Ok(meta)
}

/// Whether `path` is a checkpoint of a relief run (format [`FORMAT`], `kind` one of
/// [`RUN_KINDS`]), judged from its header alone; `None` for what is not a readable
/// safetensors file.
pub fn run_checkpoint_kind(path: &Path) -> Option<String> {
    let meta = read_metadata(path).ok()?;
    let kind = meta.get("kind")?;
    (meta.get("format").map(String::as_str) == Some(FORMAT) && RUN_KINDS.contains(&kind.as_str()))
        .then(|| kind.clone())
}

/// Refuses what is not a regular file: a directory (naming the newest iteration checkpoint it
/// holds, if any) or a missing path.
pub fn check_is_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        let newest = std::fs::read_dir(path)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with("iter-") && n.ends_with(".safetensors"))
            .max();
        let hint = match newest {
            Some(n) => format!("e.g. {}", path.join(n).display()),
            None => format!("e.g. {}", path.join("iter-NNN.safetensors").display()),
        };
        bail!(
            "{}: is a directory, not a checkpoint file; give a checkpoint inside it ({hint})",
            path.display()
        );
    }
    if !path.is_file() {
        bail!("{}: no such file", path.display());
    }
    Ok(())
}

/// Counts of NaN and infinite entries of a floating tensor (`(0, 0)` for other kinds).
pub fn non_finite(t: &Tensor) -> (i64, i64) {
    if !t.is_floating_point() || t.numel() == 0 || t.isfinite().all().int64_value(&[]) != 0 {
        return (0, 0);
    }
    (t.isnan().sum(Kind::Int64).int64_value(&[]), t.isinf().sum(Kind::Int64).int64_value(&[]))
}

/// Refuses tensors of `origin` with NaN or infinite entries (naming the tensor and the
/// counts) and, for names under `mask_prefix`, values other than 0 and 1 (naming one).
pub fn check_tensors(tensors: &[(String, Tensor)], origin: &Path, mask_prefix: Option<&str>) -> Result<()> {
    for (name, t) in tensors {
        let (nan, inf) = non_finite(t);
        if nan + inf > 0 {
            bail!(
                "{}: tensor `{name}` has {nan} NaN and {inf} inf entries of {}",
                origin.display(),
                t.numel()
            );
        }
        if mask_prefix.is_some_and(|p| name.starts_with(p)) {
            check_mask_values(name, t, origin)?;
        }
    }
    Ok(())
}

/// Refuses a mask tensor holding values other than 0 and 1.
pub fn check_mask_values(name: &str, t: &Tensor, origin: &Path) -> Result<()> {
    if t.kind() == Kind::Bool || t.numel() == 0 {
        return Ok(());
    }
    let t = t.to_kind(Kind::Double);
    let bad = t.ne(0.0).logical_and(&t.ne(1.0));
    let count = bad.sum(Kind::Int64).int64_value(&[]);
    if count > 0 {
        let v = t.masked_select(&bad).double_value(&[0]);
        bail!(
            "{}: mask `{name}` holds {count} value(s) other than 0 and 1 (e.g. {v}); masks must be 0 or 1",
            origin.display()
        );
    }
    Ok(())
}

impl Checkpoint {
    /// An empty checkpoint with the format tag and relief version set.
    pub fn new() -> Self {
        let mut meta = BTreeMap::new();
        meta.insert("format".into(), FORMAT.into());
        meta.insert("relief_version".into(), env!("CARGO_PKG_VERSION").into());
        Self { tensors: Vec::new(), meta }
    }

    /// Adds tensors (moved to the CPU, made contiguous).
    pub fn extend(&mut self, tensors: impl IntoIterator<Item = (String, Tensor)>) {
        self.tensors
            .extend(tensors.into_iter().map(|(k, t)| (k, t.detach().to_device(Device::Cpu).contiguous())));
    }

    /// Sets a metadata entry.
    pub fn set(&mut self, key: &str, value: impl ToString) {
        self.meta.insert(key.to_string(), value.to_string());
    }

    /// A metadata entry.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.meta.get(key).map(String::as_str)
    }

    /// A metadata entry parsed as `T`, naming the file on failure.
    pub fn parse<T: std::str::FromStr>(&self, key: &str, origin: &Path) -> Result<T> {
        let v = self.get(key).ok_or_else(|| anyhow!("{}: metadata `{key}` is missing", origin.display()))?;
        v.parse().map_err(|_| anyhow!("{}: metadata `{key}` = {v:?} is not valid", origin.display()))
    }

    /// The tensors named `<prefix><name>`, prefix stripped.
    pub fn with_prefix(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .filter_map(|(k, t)| k.strip_prefix(prefix).map(|n| (n.to_string(), t.shallow_clone())))
            .collect()
    }

    /// The model state: every tensor without a reserved prefix (`mask.`, `opt.`, `best.`).
    pub fn model_state(&self) -> Vec<(String, Tensor)> {
        self.tensors
            .iter()
            .filter(|(k, _)| ![MASK_PREFIX, OPT_PREFIX, BEST_PREFIX].iter().any(|p| k.starts_with(p)))
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect()
    }

    /// Whether any `mask.*` tensor is present.
    pub fn has_masks(&self) -> bool {
        self.tensors.iter().any(|(k, _)| k.starts_with(MASK_PREFIX))
    }

    /// Serialises to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        Ok(relief_core::tensor_io::safetensors_bytes(&self.tensors, &self.meta)?)
    }

    /// Writes the checkpoint atomically (see module docs).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, &self.to_bytes()?)
    }

    /// Reads a safetensors file (relief checkpoint or plain safetensors), naming the file on
    /// failure. Every floating tensor must be finite and every `mask.*` tensor 0/1
    /// ([`check_tensors`]): a NaN weight would otherwise evaluate, export and prune silently.
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_checking(path, Some(MASK_PREFIX))
    }

    /// [`Checkpoint::read`] with the masks under `mask_prefix` (none: no mask check).
    pub fn read_checking(path: &Path, mask_prefix: Option<&str>) -> Result<Self> {
        check_is_file(path)?;
        let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow!("{}: not a readable safetensors file ({})", path.display(), safetensors_error(&e))
        })?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
            anyhow!("{}: unreadable safetensors header ({})", path.display(), safetensors_error(&e))
        })?;
        let meta: BTreeMap<String, String> =
            header.metadata().clone().unwrap_or_default().into_iter().collect();
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let k = kind(view.dtype()).with_context(|| format!("{}: tensor `{name}`", path.display()))?;
            let t = Tensor::f_from_data_size(view.data(), &shape, k)
                .with_context(|| format!("{}: tensor `{name}`", path.display()))?;
            tensors.push((name, t));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        check_tensors(&tensors, path, mask_prefix)?;
        Ok(Self { tensors, meta })
    }

    /// Refuses a compacted model (`relief export --compact`) where a dense checkpoint is needed.
    pub fn refuse_compacted(&self, origin: &Path) -> Result<()> {
        if self.get("format") == Some(relief_core::compact::FORMAT) {
            bail!(
                "{}: this is a compacted model (relief export --compact); use it with relief eval, \
                 and prune the original checkpoint instead",
                origin.display()
            );
        }
        Ok(())
    }

    /// The masks of `model`'s graph stored as `mask.*` (all ones when there are none), with the
    /// inert set listed in metadata `inert_masks`.
    pub fn masks(&self, model: &Model, origin: &Path) -> Result<MaskSet> {
        let device = model.device();
        let mut masks = if self.has_masks() {
            MaskSet::import(&model.graph, &self.tensors, MASK_PREFIX, device)
                .map_err(|e| anyhow!("{}: masks do not match {}: {e}", origin.display(), model.arch))?
        } else {
            MaskSet::ones(&model.graph, device)
        };
        for name in self.get("inert_masks").unwrap_or("").split(',').filter(|s| !s.is_empty()) {
            masks.set_inert(name, true);
        }
        Ok(masks)
    }

    /// Loads the model state into `model` (exact names and shapes, or a listed mismatch).
    pub fn load_into(&self, model: &mut Model, origin: &Path) -> Result<()> {
        self.refuse_compacted(origin)?;
        model.load_tensors(&self.model_state(), "").with_context(|| format!("{}", origin.display()))
    }

    /// Builds the model the metadata names (`arch`, `num_classes`) and loads it; `arch` and
    /// `classes` override or supply what the metadata lacks.
    pub fn model(
        &self,
        origin: &Path,
        arch: Option<Architecture>,
        classes: Option<i64>,
        device: Device,
    ) -> Result<Model> {
        let arch = match arch {
            Some(a) => a,
            None => self.architecture(origin)?,
        };
        let classes = match classes {
            Some(c) => c,
            None => self.parse("num_classes", origin).map_err(|e| anyhow!("{e}; pass --num-classes"))?,
        };
        let mut model = Model::build(&arch, classes, device, 0)
            .map_err(|e| anyhow!("{}: {arch}: {e}", origin.display()))?;
        self.load_into(&mut model, origin)?;
        Ok(model)
    }

    /// The architecture the metadata names: the embedded spec of a spec model, else `arch`.
    pub fn architecture(&self, origin: &Path) -> Result<Architecture> {
        if let Some(text) = self.get(MODEL_SPEC_KEY) {
            let spec = ModelSpec::parse(text)
                .map_err(|e| anyhow!("{}: metadata `{MODEL_SPEC_KEY}`: {e}", origin.display()))?;
            return Ok(spec.into());
        }
        let arch = self
            .get("arch")
            .ok_or_else(|| anyhow!("{}: no `arch` in the metadata; pass --model", origin.display()))?;
        Ok(Architecture::Zoo(arch.parse().map_err(|e: String| anyhow!("{}: {e}", origin.display()))?))
    }

    /// Adds the model state (PyTorch names), masks (`mask.*`, full shape, `u8`) and the inert
    /// set of `masks`, and names the architecture (a spec model's TOML goes into the metadata).
    pub fn put_model(&mut self, model: &Model, masks: &MaskSet) {
        self.extend(model.state(""));
        self.extend(masks.export(MASK_PREFIX, false));
        let inert: Vec<&str> = masks.iter().map(|(k, _)| k.as_str()).filter(|k| masks.is_inert(k)).collect();
        self.set("inert_masks", inert.join(","));
        self.set("arch", &model.arch);
        match &model.arch {
            Architecture::Spec(spec) => self.set(MODEL_SPEC_KEY, spec.to_toml()),
            Architecture::Zoo(_) => {
                self.meta.remove(MODEL_SPEC_KEY);
            }
        }
        self.set("num_classes", model.graph.num_classes);
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn every_reserved_prefix_is_a_name_models_cannot_own() {
        for p in [MASK_PREFIX, OPT_PREFIX, BEST_PREFIX] {
            let name = p.strip_suffix('.').expect("prefixes end with a dot");
            assert!(relief_models::spec::RESERVED_NAMES.contains(&name), "{p}");
        }
    }

    use super::*;
    use relief_models::Arch;

    #[test]
    fn round_trip_with_metadata_and_masks() {
        let dir = tempfile::tempdir().unwrap();
        let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 3);
        let mut masks = MaskSet::ones(&model.graph, Device::Cpu);
        let w = masks.get("classifier.0.weight").unwrap().shallow_clone();
        masks.set("classifier.0.weight", w.bernoulli_p(0.5));
        masks.set_inert("classifier.2.bias", true);
        let mut ck = Checkpoint::new();
        ck.put_model(&model, &masks);
        ck.extend([("opt.step".to_string(), Tensor::from(7i64))]);
        ck.set("iteration", 4);
        let path = dir.path().join("c.safetensors");
        ck.write(&path).unwrap();
        assert!(std::fs::read_dir(dir.path()).unwrap().count() == 1, "no temporary file left");
        let back = Checkpoint::read(&path).unwrap();
        assert_eq!(back.get("iteration"), Some("4"));
        assert_eq!(back.get("format"), Some(FORMAT));
        let model2 = back.model(&path, None, None, Device::Cpu).unwrap();
        for (k, v) in model.params() {
            assert!(v.equal(&model2.params()[&k]), "{k}");
        }
        let m2 = back.masks(&model2, &path).unwrap();
        assert!(m2.get("classifier.0.weight").unwrap().equal(masks.get("classifier.0.weight").unwrap()));
        assert!(m2.is_inert("classifier.2.bias"));
        assert_eq!(back.with_prefix("opt.").len(), 1);
    }

    #[test]
    fn header_metadata_is_read_without_the_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 3);
        let mut ck = Checkpoint::new();
        ck.put_model(&model, &MaskSet::ones(&model.graph, Device::Cpu));
        let path = dir.path().join("c.safetensors");
        ck.write(&path).unwrap();
        assert_eq!(read_metadata(&path).unwrap(), Checkpoint::read(&path).unwrap().meta);
        assert_eq!(run_checkpoint_kind(&path), None, "no `kind`: not a run checkpoint");
        for kind in RUN_KINDS {
            ck.set("kind", kind);
            ck.write(&path).unwrap();
            assert_eq!(run_checkpoint_kind(&path).as_deref(), Some(kind));
        }
        ck.set("kind", "compact");
        ck.write(&path).unwrap();
        assert_eq!(run_checkpoint_kind(&path), None);
        std::fs::write(&path, b"short").unwrap();
        let msg = format!("{:#}", read_metadata(&path).unwrap_err());
        assert!(msg.contains("c.safetensors") && msg.contains("not a safetensors file"), "{msg}");
        assert_eq!(run_checkpoint_kind(&path), None);
    }

    #[test]
    fn mismatches_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let model = Model::new(Arch::Lenet300_100, 10, Device::Cpu, 3);
        let mut ck = Checkpoint::new();
        ck.put_model(&model, &MaskSet::ones(&model.graph, Device::Cpu));
        let path = dir.path().join("c.safetensors");
        ck.write(&path).unwrap();
        let err =
            Checkpoint::read(&path).unwrap().model(&path, Some(Arch::Lenet5.into()), Some(10), Device::Cpu);
        let msg = format!("{:#}", err.err().unwrap());
        assert!(msg.contains("c.safetensors") && msg.contains("missing"), "{msg}");
        std::fs::write(dir.path().join("junk.safetensors"), b"not a file").unwrap();
        let msg = format!("{:#}", Checkpoint::read(&dir.path().join("junk.safetensors")).unwrap_err());
        assert!(msg.contains("junk.safetensors"), "{msg}");
    }
}
