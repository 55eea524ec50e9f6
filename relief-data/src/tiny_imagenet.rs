//! Tiny-ImageNet-200 from the official layout, decoded once and cached.
//!
//! Layout (as `tiny-imagenet-200.zip` extracts, the given directory or its
//! `tiny-imagenet-200/`): `wnids.txt` (one class id a line), `train/<wnid>/images/*.JPEG`,
//! `val/images/*.JPEG` with `val/val_annotations.txt` (`file<TAB>wnid<TAB>box...`). Class
//! indices follow the sorted wnids (torchvision `ImageFolder` order). Train images are in class
//! order, then file-name order; the official val images (our test split) in annotation order.
//! Images load as `N x 3 x 64 x 64` `u8` (greyscale JPEGs are replicated to RGB, as PIL
//! `convert("RGB")`), labels as `N` `i64`.
//!
//! The JPEGs are decoded in parallel (rayon) on the first load, then stored as one safetensors
//! file `relief-cache-<fingerprint>.safetensors` next to the data, written atomically. The
//! fingerprint hashes the source listing (wnids, annotations, every image's path, size and
//! modification time): when the listing changes the name changes and the cache is rebuilt.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::dataset::{Dataset, DatasetKind};
use crate::error::{check_dir, DataError};
use crate::split::Split;

/// Side of a Tiny-ImageNet image.
pub const SIDE: usize = 64;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
const EXPECTED: &str = "Tiny-ImageNet-200 (wnids.txt, train/<wnid>/images/*.JPEG, \
                        val/images/*.JPEG, val/val_annotations.txt)";
const CACHE_PREFIX: &str = "relief-cache-";
const CACHE_SUFFIX: &str = ".safetensors";

/// Options of the Tiny-ImageNet loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TinyImageNetOptions {
    /// Read a valid cache when there is one, and write one after decoding.
    pub cache: bool,
}

impl Default for TinyImageNetOptions {
    fn default() -> Self {
        Self { cache: true }
    }
}

/// What the loader did with the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A valid cache was read; no JPEG was decoded.
    Hit(PathBuf),
    /// The JPEGs were decoded and the cache written.
    Written(PathBuf),
    /// The JPEGs were decoded; writing the cache failed (the message says why).
    WriteFailed(String),
    /// Caching was off.
    Disabled,
}

/// The files of the dataset and their labels, with a fingerprint of the listing.
#[derive(Debug)]
pub struct Listing {
    /// The directory holding `wnids.txt`.
    pub root: PathBuf,
    /// Class ids in label order (sorted).
    pub wnids: Vec<String>,
    /// Training images and labels.
    pub train: Vec<(PathBuf, i64)>,
    /// Official validation images (our test split) and labels.
    pub val: Vec<(PathBuf, i64)>,
    /// SHA-256 of the listing, lowercase hex.
    pub fingerprint: String,
}

fn read_text(path: &Path, expected: &str) -> Result<String, DataError> {
    if !path.is_file() {
        return Err(DataError::missing(path, expected));
    }
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| DataError::format(path, "not UTF-8 text"))
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\\'])
}

fn is_jpeg(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("jpeg") || e.eq_ignore_ascii_case("jpg"))
}

/// Finds the data root and lists every image with its label.
pub fn list(dir: &Path) -> Result<Listing, DataError> {
    check_dir(dir, EXPECTED)?;
    let root = if dir.join("wnids.txt").is_file() || !dir.join("tiny-imagenet-200").is_dir() {
        dir.to_path_buf()
    } else {
        dir.join("tiny-imagenet-200")
    };
    let wnids_path = root.join("wnids.txt");
    let wnids_text = read_text(&wnids_path, "Tiny-ImageNet wnids.txt (one class id a line)")?;
    let mut wnids: Vec<String> = wnids_text.split_whitespace().map(str::to_string).collect();
    if wnids.is_empty() {
        return Err(DataError::format(&wnids_path, "no class ids, expected one wnid a line"));
    }
    if let Some(bad) = wnids.iter().find(|w| !plain_name(w)) {
        return Err(DataError::format(&wnids_path, format!("class id {bad:?} is not a plain name")));
    }
    wnids.sort();
    if let Some(w) = wnids.windows(2).find(|w| w[0] == w[1]) {
        return Err(DataError::format(&wnids_path, format!("class id {} appears twice", w[0])));
    }

    let mut train = Vec::new();
    for (label, wnid) in wnids.iter().enumerate() {
        let images = root.join("train").join(wnid).join("images");
        if !images.is_dir() {
            return Err(DataError::missing(&images, format!("JPEG images of class {wnid}")));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&images)
            .map_err(|e| DataError::io(&images, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_jpeg(p))
            .collect();
        if files.is_empty() {
            return Err(DataError::EmptyDir {
                path: images,
                expected: format!("JPEG images of class {wnid}"),
            });
        }
        files.sort();
        train.extend(files.into_iter().map(|p| (p, label as i64)));
    }

    let ann_path = root.join("val").join("val_annotations.txt");
    let ann_text = read_text(&ann_path, "Tiny-ImageNet val annotations (file, wnid, box)")?;
    let mut val = Vec::new();
    for (i, line) in ann_text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (Some(file), Some(wnid)) = (fields.next(), fields.next()) else {
            return Err(DataError::format(
                &ann_path,
                format!("line {}: expected `file<TAB>wnid<TAB>box`, got {line:?}", i + 1),
            ));
        };
        if !plain_name(file) {
            return Err(DataError::format(
                &ann_path,
                format!("line {}: file {file:?} is not a plain name", i + 1),
            ));
        }
        let Ok(label) = wnids.binary_search_by(|w| w.as_str().cmp(wnid)) else {
            return Err(DataError::format(
                &ann_path,
                format!(
                    "line {}: class {wnid} is not in wnids.txt (label out of range 0..{})",
                    i + 1,
                    wnids.len()
                ),
            ));
        };
        let p = root.join("val").join("images").join(file);
        if !p.is_file() {
            return Err(DataError::missing(&p, format!("val image named in {}", ann_path.display())));
        }
        val.push((p, label as i64));
    }
    if val.is_empty() {
        return Err(DataError::format(&ann_path, "no annotated val images"));
    }

    let fingerprint = fingerprint(&root, &wnids_text, &ann_text, &train, &val)?;
    Ok(Listing { root, wnids, train, val, fingerprint })
}

fn fingerprint(
    root: &Path,
    wnids: &str,
    ann: &str,
    train: &[(PathBuf, i64)],
    val: &[(PathBuf, i64)],
) -> Result<String, DataError> {
    let stats: Vec<String> = train
        .par_iter()
        .chain(val.par_iter())
        .map(|(p, label)| {
            let m = std::fs::metadata(p).map_err(|e| DataError::io(p, e))?;
            let mtime =
                m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
            let rel = p.strip_prefix(root).unwrap_or(p);
            Ok(format!("{}\t{label}\t{}\t{mtime}\n", rel.display(), m.len()))
        })
        .collect::<Result<_, DataError>>()?;
    let mut h = Sha256::new();
    h.update(b"relief tiny-imagenet cache v1\n");
    h.update(wnids.as_bytes());
    h.update(b"\0");
    h.update(ann.as_bytes());
    h.update(b"\0");
    for s in &stats {
        h.update(s.as_bytes());
    }
    Ok(crate::checksum::hex(&h.finalize()))
}

/// Decodes one JPEG into `out` (`3 x 64 x 64`, channels first).
fn decode_into(path: &Path, out: &mut [u8]) -> Result<(), DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let img = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
        .map_err(|e| DataError::Image { path: path.to_path_buf(), message: e.to_string() })?;
    if img.width() as usize != SIDE || img.height() as usize != SIDE {
        return Err(DataError::format(
            path,
            format!("image is {}x{}, expected {SIDE}x{SIDE}", img.width(), img.height()),
        ));
    }
    let rgb = img.to_rgb8();
    let plane = SIDE * SIDE;
    for (i, px) in rgb.as_raw().chunks_exact(3).enumerate() {
        out[i] = px[0];
        out[plane + i] = px[1];
        out[2 * plane + i] = px[2];
    }
    Ok(())
}

/// Decodes `files` in parallel into one `N x 3 x 64 x 64` `u8` tensor (with `N` `i64` labels).
pub fn decode_split(files: &[(PathBuf, i64)]) -> Result<Split, DataError> {
    let mut buf = vec![0u8; files.len() * IMAGE_BYTES];
    buf.par_chunks_mut(IMAGE_BYTES)
        .zip(files.par_iter())
        .try_for_each(|(out, (path, _))| decode_into(path, out))?;
    let labels: Vec<i64> = files.iter().map(|(_, l)| *l).collect();
    let n = files.len() as i64;
    Ok(Split {
        images: Tensor::from_slice(&buf).f_view([n, 3, SIDE as i64, SIDE as i64])?,
        labels: Tensor::from_slice(&labels),
    })
}

fn cache_path(listing: &Listing) -> PathBuf {
    listing.root.join(format!("{CACHE_PREFIX}{}{CACHE_SUFFIX}", &listing.fingerprint[..16]))
}

fn read_cache(path: &Path, listing: &Listing) -> Result<(Split, Split), String> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| e.to_string())?;
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| format!("no tensor {name}"))
    };
    let fp = Vec::<u8>::try_from(get("fingerprint")?).map_err(|e| e.to_string())?;
    if fp != listing.fingerprint.as_bytes() {
        return Err("fingerprint differs from the listing".into());
    }
    let train = Split { images: get("train_images")?, labels: get("train_labels")? };
    let test = Split { images: get("test_images")?, labels: get("test_labels")? };
    for (s, n) in [(&train, listing.train.len()), (&test, listing.val.len())] {
        s.validate().map_err(|e| e.to_string())?;
        if s.len() != n as i64 || s.image_shape() != [3, SIDE as i64, SIDE as i64] {
            return Err(format!("cached split has {} images, listing has {n}", s.len()));
        }
    }
    Ok((train, test))
}

fn write_cache(path: &Path, listing: &Listing, train: &Split, test: &Split) -> Result<(), String> {
    let tmp = path.with_extension("safetensors.tmp");
    let fp = Tensor::from_slice(listing.fingerprint.as_bytes());
    let named = [
        ("fingerprint", &fp),
        ("train_images", &train.images),
        ("train_labels", &train.labels),
        ("test_images", &test.images),
        ("test_labels", &test.labels),
    ];
    let written = Tensor::write_safetensors(&named, &tmp)
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // Older caches of a different listing are stale now.
    if let Ok(entries) = std::fs::read_dir(&listing.root) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(CACHE_PREFIX) && name.ends_with(CACHE_SUFFIX) && e.path() != path {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// Loads Tiny-ImageNet, telling what happened with the cache.
pub fn load_tiny_imagenet_detailed(
    dir: &Path,
    options: &TinyImageNetOptions,
) -> Result<(Dataset, CacheOutcome), DataError> {
    let listing = list(dir)?;
    let cache = cache_path(&listing);
    let mut outcome = CacheOutcome::Disabled;
    if options.cache && cache.is_file() {
        match read_cache(&cache, &listing) {
            Ok((train, test)) => {
                let mut d = Dataset::new(DatasetKind::TinyImageNet, train, test);
                d.classes = listing.wnids.len() as i64;
                return Ok((d, CacheOutcome::Hit(cache)));
            }
            Err(why) => {
                tracing::warn!("{}: unusable cache ({why}); decoding the JPEGs", cache.display())
            }
        }
    }
    let train = decode_split(&listing.train)?;
    let test = decode_split(&listing.val)?;
    if options.cache {
        outcome = match write_cache(&cache, &listing, &train, &test) {
            Ok(()) => CacheOutcome::Written(cache),
            Err(why) => {
                tracing::warn!("{}: could not write the cache: {why}", cache.display());
                CacheOutcome::WriteFailed(why)
            }
        };
    }
    let mut d = Dataset::new(DatasetKind::TinyImageNet, train, test);
    d.classes = listing.wnids.len() as i64;
    Ok((d, outcome))
}

/// Loads Tiny-ImageNet from `dir` (or `dir/tiny-imagenet-200`).
pub fn load_tiny_imagenet(dir: &Path, options: &TinyImageNetOptions) -> Result<Dataset, DataError> {
    Ok(load_tiny_imagenet_detailed(dir, options)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_only() {
        assert!(plain_name("val_0.JPEG"));
        for bad in ["", ".", "..", "a/b", "..\\x"] {
            assert!(!plain_name(bad), "{bad}");
        }
        assert!(is_jpeg(Path::new("a.JPEG")) && is_jpeg(Path::new("a.jpg")));
        assert!(!is_jpeg(Path::new("a.txt")) && !is_jpeg(Path::new("a")));
    }

    #[test]
    fn garbage_jpeg_is_an_image_error_naming_the_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.JPEG");
        std::fs::write(&p, b"not a jpeg at all").unwrap();
        let mut out = vec![0u8; IMAGE_BYTES];
        let e = decode_into(&p, &mut out).unwrap_err();
        assert!(matches!(e, DataError::Image { .. }), "{e}");
        assert!(e.to_string().contains("x.JPEG"));
    }
}
