//! Safe extraction of `.tar.gz` and `.zip` archives.
//!
//! Every entry must be a regular file or a directory whose path stays inside the destination:
//! absolute paths, `..` components, drive prefixes and links are rejected before anything is
//! written. Entries are unpacked into a staging directory inside the destination, then each
//! top-level entry is renamed into place, so an interrupted extraction leaves no half tree.

use std::fs::File;
use std::io::BufReader;
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use crate::error::DataError;

/// `path` as a safe relative path (no root, prefix or `..`; `.` dropped); `None` if unsafe or
/// empty.
pub fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn archive_err(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Archive { path: path.to_path_buf(), message: message.into() }
}

fn staging_dir(archive: &Path, dest: &Path) -> Result<PathBuf, DataError> {
    let name = archive.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    let staging = dest.join(format!(".{name}.extracting"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    }
    std::fs::create_dir_all(&staging).map_err(|e| DataError::io(&staging, e))?;
    Ok(staging)
}

/// Moves each top-level entry of `staging` into `dest` (replacing what is there) and returns
/// their names.
fn publish(staging: &Path, dest: &Path) -> Result<Vec<String>, DataError> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(staging).map_err(|e| DataError::io(staging, e))? {
        let e = e.map_err(|e| DataError::io(staging, e))?;
        let target = dest.join(e.file_name());
        if target.is_dir() {
            std::fs::remove_dir_all(&target).map_err(|e| DataError::io(&target, e))?;
        } else if target.exists() {
            std::fs::remove_file(&target).map_err(|e| DataError::io(&target, e))?;
        }
        std::fs::rename(e.path(), &target).map_err(|err| DataError::io(&target, err))?;
        names.push(e.file_name().to_string_lossy().to_string());
    }
    std::fs::remove_dir_all(staging).map_err(|e| DataError::io(staging, e))?;
    names.sort();
    Ok(names)
}

fn extract_tar_into(archive: &Path, staging: &Path) -> Result<(), DataError> {
    let f = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(f)));
    let entries = tar.entries().map_err(|e| archive_err(archive, format!("unreadable tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| archive_err(archive, format!("unreadable tar entry: {e}")))?;
        let raw =
            entry.path().map_err(|e| archive_err(archive, format!("bad entry name: {e}")))?.into_owned();
        let Some(rel) = safe_relative(&raw) else {
            return Err(archive_err(
                archive,
                format!("entry {} escapes the destination; refusing to extract", raw.display()),
            ));
        };
        let kind = entry.header().entry_type();
        let target = staging.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| DataError::io(&target, e))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
            }
            let mut out = File::create(&target).map_err(|e| DataError::io(&target, e))?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| archive_err(archive, format!("{}: {e}", raw.display())))?;
        } else if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
            continue;
        } else {
            return Err(archive_err(
                archive,
                format!("entry {} is a {kind:?}, only files and directories are allowed", raw.display()),
            ));
        }
    }
    Ok(())
}

fn extract_zip_into(archive: &Path, staging: &Path) -> Result<(), DataError> {
    let f = File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let mut zip = zip::ZipArchive::new(BufReader::new(f))
        .map_err(|e| archive_err(archive, format!("unreadable zip: {e}")))?;
    for i in 0..zip.len() {
        let mut file =
            zip.by_index(i).map_err(|e| archive_err(archive, format!("unreadable zip entry {i}: {e}")))?;
        let name = file.name().to_string();
        let rel = safe_relative(Path::new(&name)).filter(|_| file.enclosed_name().is_some());
        let Some(rel) = rel else {
            return Err(archive_err(
                archive,
                format!("entry {name} escapes the destination; refusing to extract"),
            ));
        };
        if file.is_symlink() {
            return Err(archive_err(archive, format!("entry {name} is a link, refusing to extract")));
        }
        let target = staging.join(&rel);
        if file.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| DataError::io(&target, e))?;
        } else {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| DataError::io(parent, e))?;
            }
            let mut out = File::create(&target).map_err(|e| DataError::io(&target, e))?;
            std::io::copy(&mut file, &mut out).map_err(|e| archive_err(archive, format!("{name}: {e}")))?;
        }
    }
    Ok(())
}

/// Extracts `archive` (`.tar.gz`/`.tgz` or `.zip`, by name) into `dest`; returns the top-level
/// names it created. Nothing is published if any entry is unsafe or unreadable.
pub fn extract(archive: &Path, dest: &Path) -> Result<Vec<String>, DataError> {
    let name = archive.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default();
    let is_zip = name.ends_with(".zip");
    if !is_zip && !name.ends_with(".tar.gz") && !name.ends_with(".tgz") {
        return Err(archive_err(archive, "unknown archive type, expected .tar.gz, .tgz or .zip"));
    }
    let staging = staging_dir(archive, dest)?;
    let result =
        if is_zip { extract_zip_into(archive, &staging) } else { extract_tar_into(archive, &staging) };
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    publish(&staging, dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_relative_rejects_escapes() {
        assert_eq!(safe_relative(Path::new("a/./b")), Some(PathBuf::from("a/b")));
        for bad in ["../x", "a/../../x", "/etc/passwd", "", "."] {
            assert_eq!(safe_relative(Path::new(bad)), None, "{bad}");
        }
    }

    #[test]
    fn unknown_extension_is_rejected() {
        let d = tempfile::tempdir().unwrap();
        let e = extract(&d.path().join("x.rar"), d.path()).unwrap_err();
        assert!(e.to_string().contains("unknown archive type"));
    }
}
