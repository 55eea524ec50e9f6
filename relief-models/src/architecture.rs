//! `Architecture`: which network a model is, a zoo architecture or a user spec.
//!
//! Configs name a model by a string: a zoo name (`"lenet5"`) or the path of a spec file
//! (`"nets/my-cnn.toml"`, anything ending in `.toml` or holding a `/`). Both become the same
//! [`crate::spec::ModelSpec`]-checked [`PruneGraph`]; the zoo's graphs come from the Rust
//! builders (equal to their built-in specs, which the tests assert), a spec's from shape
//! inference over its layers.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use relief_core::graph::PruneGraph;

use crate::spec::{ModelSpec, SpecError};
use crate::zoo::Arch;

/// A network: one of the zoo's, or one described by a spec.
#[derive(Debug, Clone, PartialEq)]
pub enum Architecture {
    /// A zoo architecture.
    Zoo(Arch),
    /// A user spec (already parsed; its shapes are checked by [`Architecture::graph`]).
    Spec(Arc<ModelSpec>),
}

impl From<Arch> for Architecture {
    fn from(a: Arch) -> Self {
        Architecture::Zoo(a)
    }
}

impl From<ModelSpec> for Architecture {
    fn from(s: ModelSpec) -> Self {
        Architecture::Spec(Arc::new(s))
    }
}

/// Whether a config's `model` value names a spec file rather than a zoo architecture.
pub fn names_spec_file(value: &str) -> bool {
    value.ends_with(".toml") || value.contains('/') || value.contains(std::path::MAIN_SEPARATOR)
}

impl Architecture {
    /// The architecture a config's `model` value names: a zoo name, or a spec file (relative
    /// paths against the current directory), read, parsed and shape-checked for `num_classes`
    /// outputs (default: the spec's own `num_classes`).
    pub fn resolve(value: &str, num_classes: Option<i64>) -> Result<Architecture, SpecError> {
        if names_spec_file(value) {
            let spec = ModelSpec::from_file(Path::new(value))?;
            spec.infer(num_classes.unwrap_or(spec.num_classes)).map_err(|e| match e {
                SpecError::Read { .. } | SpecError::Syntax(_) => e,
                other => SpecError::Spec(format!("{value}: {other}")),
            })?;
            Ok(spec.into())
        } else {
            value.parse::<Arch>().map(Architecture::Zoo).map_err(|e| {
                SpecError::Spec(format!(
                    "{e}, or the path of a model spec file (`*.toml`, see `relief models`)"
                ))
            })
        }
    }

    /// Its name: the zoo name, or the spec's `name`.
    pub fn name(&self) -> String {
        match self {
            Architecture::Zoo(a) => a.to_string(),
            Architecture::Spec(s) => s.name.clone(),
        }
    }

    /// Per-sample input shape.
    pub fn input_shape(&self) -> Vec<i64> {
        match self {
            Architecture::Zoo(a) => a.input_shape(),
            Architecture::Spec(s) => s.input_shape.clone(),
        }
    }

    /// The prunable structure for `num_classes` outputs.
    pub fn graph(&self, num_classes: i64) -> Result<PruneGraph, SpecError> {
        match self {
            Architecture::Zoo(a) => Ok(a.graph(num_classes)),
            Architecture::Spec(s) => s.graph(num_classes),
        }
    }

    /// The spec (a zoo architecture's built-in one).
    pub fn spec(&self) -> ModelSpec {
        match self {
            Architecture::Zoo(a) => a.spec(),
            Architecture::Spec(s) => (**s).clone(),
        }
    }

    /// The zoo architecture, if it is one.
    pub fn zoo(&self) -> Option<Arch> {
        match self {
            Architecture::Zoo(a) => Some(*a),
            Architecture::Spec(_) => None,
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoo_names_and_spec_files_resolve() {
        let a = Architecture::resolve("lenet5", Some(10)).unwrap();
        assert_eq!(a, Architecture::Zoo(Arch::Lenet5));
        assert_eq!(a.graph(10).unwrap(), Arch::Lenet5.graph(10));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("net.toml");
        let mut spec = Arch::Lenet300_100.spec();
        spec.name = "my-mlp".into();
        std::fs::write(&path, spec.to_toml()).unwrap();
        let b = Architecture::resolve(path.to_str().unwrap(), None).unwrap();
        assert_eq!(b.name(), "my-mlp");
        assert_eq!(b.input_shape(), vec![784]);
        assert_eq!(b.graph(10).unwrap().layers, Arch::Lenet300_100.graph(10).layers);
    }

    #[test]
    fn bad_values_name_what_was_expected() {
        let e = Architecture::resolve("lenet6", None).unwrap_err().to_string();
        assert!(e.contains("unknown model `lenet6`") && e.contains(".toml"), "{e}");
        let e = Architecture::resolve("/nonexistent/net.toml", None).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/net.toml"), "{e}");
    }
}
