//! Safetensors files of the workspace (checkpoints, compacted models): the one mapping between
//! libtorch tensor kinds and safetensors dtypes, serialisation with string metadata, and the
//! one atomic file writer (temporary sibling, `fsync`, rename, `fsync` of the directory), so a
//! crash never leaves a half-written checkpoint under the final name.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use tch::{Device, Kind, Tensor};

use crate::error::CoreError;

/// The safetensors dtype that stores `kind`, if any.
pub fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

/// The tensor kind that holds safetensors `dtype`, if any.
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Serialises `tensors` (any device; copied to the host) with string `metadata` to
/// safetensors bytes, in the given order.
pub fn safetensors_bytes(
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>, CoreError> {
    let mut bufs: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(Device::Cpu).contiguous();
        let dtype = dtype_of(t.kind())
            .ok_or_else(|| CoreError::Invalid(format!("tensor `{name}`: unsupported kind {:?}", t.kind())))?;
        let numel = t.numel();
        let mut bytes = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        if numel > 0 {
            t.f_copy_data_u8(&mut bytes, numel)
                .map_err(|e| CoreError::Invalid(format!("tensor `{name}`: {e}")))?;
        }
        bufs.push((name.clone(), dtype, t.size().iter().map(|&d| d as usize).collect(), bytes));
    }
    let mut views = Vec::with_capacity(bufs.len());
    for (name, dtype, shape, bytes) in &bufs {
        let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
            .map_err(|e| CoreError::Invalid(format!("tensor `{name}`: {e:?}")))?;
        views.push((name.clone(), view));
    }
    let info: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    safetensors::serialize(views, &Some(info)).map_err(|e| CoreError::Invalid(format!("serialising: {e:?}")))
}

/// A temporary sibling of `path`, unique to this process.
pub fn temp_sibling(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

/// Writes `bytes` to `path` atomically: temporary sibling, `fsync`, rename, `fsync` of the
/// directory (best effort). On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CoreError> {
    let tmp = temp_sibling(path);
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CoreError::Io { path: path.display().to_string(), message: format!("cannot write: {e}") }
    })
}

/// [`safetensors_bytes`] written with [`write_atomic`].
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<(), CoreError> {
    write_atomic(path, &safetensors_bytes(tensors, metadata)?)
}

/// What a safetensors parsing error means, in words (the crate's errors print as enum names such
/// as `MetadataIncompleteBuffer`).
pub fn safetensors_error(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::InvalidHeader | E::InvalidHeaderStart => "the header is not UTF-8 JSON".into(),
        E::InvalidHeaderDeserialization | E::JsonError(_) => {
            "the header is not a safetensors JSON header".into()
        }
        E::HeaderTooLarge => "the header length is larger than safetensors allows (100 MB)".into(),
        E::HeaderTooSmall => "the file is shorter than a safetensors header (truncated?)".into(),
        E::InvalidHeaderLength => "the header length runs past the end of the file (truncated?)".into(),
        E::MetadataIncompleteBuffer => {
            "the tensor data is shorter than the header says (the file is truncated)".into()
        }
        E::TensorNotFound(n) => format!("tensor `{n}` is not in the file"),
        E::TensorInvalidInfo => "a tensor's shape and dtype do not match its data size".into(),
        E::InvalidOffset(n) => {
            format!("tensor `{n}`: its data offsets are invalid (overlapping or out of order)")
        }
        E::IoError(io) => format!("cannot read: {io}"),
        E::InvalidTensorView(dtype, shape, len) => {
            format!("a {dtype:?} tensor of shape {shape:?} cannot hold {len} bytes")
        }
        E::ValidationOverflow => "a tensor's size overflows".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_with_metadata_and_failed_writes_leave_no_trace() {
        let dir = std::env::temp_dir().join(format!("relief-tensor-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let a = Tensor::from_slice(&[1f32, -2.5, 3.0]).view([3, 1]);
        let b = Tensor::from_slice(&[true, false]);
        let meta: BTreeMap<String, String> = [("k".to_string(), "v".to_string())].into();
        write_safetensors(&path, &[("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())], &meta)
            .unwrap();
        let back: HashMap<String, Tensor> = Tensor::read_safetensors(&path).unwrap().into_iter().collect();
        assert!(back["a"].equal(&a) && back["b"].equal(&b));
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(header.metadata().as_ref().unwrap()["k"], "v");
        // A write into a missing directory fails, names the file and leaves nothing behind.
        let bad = dir.join("missing").join("x.safetensors");
        let err = write_safetensors(&bad, &[("a".into(), a)], &meta).unwrap_err().to_string();
        assert!(err.contains("x.safetensors"), "{err}");
        assert!(!temp_sibling(&bad).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_supported_kind_round_trips() {
        for k in [
            Kind::Float,
            Kind::Double,
            Kind::Half,
            Kind::BFloat16,
            Kind::Int64,
            Kind::Int,
            Kind::Int16,
            Kind::Int8,
            Kind::Uint8,
            Kind::Bool,
        ] {
            assert_eq!(kind_of(dtype_of(k).unwrap()), Some(k));
        }
        assert_eq!(dtype_of(Kind::ComplexFloat), None);
    }
}
