//! Image folders as torchvision's `ImageFolder` reads them: `dir/train/<class>/...` and
//! `dir/test/<class>/...` (`dir/val/` is accepted for the test split).
//!
//! Classes are the training split's sub-directories sorted by name (byte order of their UTF-8
//! names, which is Python's string order), numbered from 0; every class must have at least one
//! image in both splits. Within a class, images are taken from the class directory and its
//! sub-directories, sorted by path, as torchvision's `make_dataset` does. Files ending in
//! `.png`, `.jpg`, `.jpeg`, `.bmp`, `.gif` or `.webp` (any case) are images; other files and
//! hidden entries (`.name`) are ignored.
//!
//! Pixels: decoded with the `image` crate, in parallel (rayon). `channels` 3 converts to RGB
//! (alpha dropped, grey replicated, as PIL `convert("RGB")`), 1 to grey with PIL's
//! `convert("L")` weights (`(19595 R + 38470 G + 7471 B + 2^15) >> 16`). Default: 3 when any
//! image has a colour type, else 1. Without `image_size` every image must have the same size;
//! with `image_size = [H, W]` each image is scaled (bilinear) so that it covers `H x W` with
//! its aspect ratio kept (for a square target: its shorter side becomes `H`), then the centre
//! `H x W` is cut out.
//!
//! Decoded splits are cached next to the split folders as
//! `relief-cache-<split>-<fingerprint>.safetensors` (written atomically; stale ones deleted;
//! a read-only directory only costs a warning), so later runs skip the decoding.

use std::path::{Path, PathBuf};

use image::imageops::FilterType;
use image::{DynamicImage, ImageReader};
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tch::Tensor;

use crate::error::DataError;
use crate::split::Split;

/// File extensions read as images (lowercase).
pub const IMAGE_EXTENSIONS: [&str; 6] = ["png", "jpg", "jpeg", "bmp", "gif", "webp"];

/// The images of one split: `(path, class index)` in load order.
#[derive(Debug, Clone)]
pub(crate) struct Listing {
    /// The split's directory.
    pub dir: PathBuf,
    /// Every image with its class.
    pub files: Vec<(PathBuf, i64)>,
}

/// The class names and the listings of `dir`'s train and test splits; with `carve`
/// (`test_split`) only the training split (a `test/` or `val/` folder is then refused).
pub(crate) fn list(dir: &Path, carve: bool) -> Result<(Vec<String>, Listing, Option<Listing>), DataError> {
    let train_dir = dir.join("train");
    if !train_dir.is_dir() {
        return Err(DataError::missing(
            train_dir,
            "an image folder: train/<class>/<images> and test/<class>/<images> (or val/<class>/...)",
        ));
    }
    let found_test = ["test", "val"].iter().map(|s| dir.join(s)).find(|p| p.is_dir());
    if carve {
        if let Some(t) = &found_test {
            return Err(DataError::format(
                t,
                "data.test_split is set, so the test split is carved from train/ and this folder would be \
                 ignored: remove it or unset data.test_split",
            ));
        }
    }
    let classes = class_dirs(&train_dir)?;
    if classes.is_empty() {
        return Err(DataError::EmptyDir {
            path: train_dir,
            expected: "one sub-directory per class, holding its images".into(),
        });
    }
    let listing = |split: &Path| -> Result<Listing, DataError> {
        let mut files = Vec::new();
        for (i, class) in classes.iter().enumerate() {
            let cdir = split.join(class);
            if !cdir.is_dir() {
                return Err(DataError::missing(
                    cdir,
                    format!("class {class:?} (it is in {}) in this split too", train_dir.display()),
                ));
            }
            let mut found = Vec::new();
            walk(&cdir, &mut found)?;
            if found.is_empty() {
                return Err(DataError::EmptyDir {
                    path: cdir,
                    expected: format!("images of class {class:?} ({})", IMAGE_EXTENSIONS.join(", ")),
                });
            }
            found.sort();
            files.extend(found.into_iter().map(|p| (p, i as i64)));
        }
        Ok(Listing { dir: split.to_path_buf(), files })
    };
    if carve {
        let train = listing(&train_dir)?;
        return Ok((classes, train, None));
    }
    let test_dir = found_test.ok_or_else(|| {
        DataError::missing(dir.join("test"), "the test split: test/<class>/<images> (or val/<class>/...)")
    })?;
    let test_classes = class_dirs(&test_dir)?;
    if let Some(extra) = test_classes.iter().find(|c| !classes.contains(c)) {
        return Err(DataError::format(
            test_dir.join(extra),
            format!("class {extra:?} is in the test split but not in {}", train_dir.display()),
        ));
    }
    let (train, test) = (listing(&train_dir)?, listing(&test_dir)?);
    Ok((classes, train, Some(test)))
}

/// Sorted names of the sub-directories of `dir` (hidden ones skipped).
fn class_dirs(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let e = e.map_err(|e| DataError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && e.path().is_dir() {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Every image file under `dir`, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), DataError> {
    for e in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let path = e.map_err(|e| DataError::io(dir, e))?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| IMAGE_EXTENSIONS.contains(&x.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, DataError> {
    ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))
}

fn unreadable(path: &Path, e: impl ToString) -> DataError {
    DataError::Image { path: path.to_path_buf(), message: e.to_string() }
}

/// `(width, height, has colour)` of an image, from its header.
fn header(path: &Path) -> Result<(u32, u32, bool), DataError> {
    let decoder = reader(path)?.into_decoder().map_err(|e| unreadable(path, e))?;
    use image::ImageDecoder;
    let (w, h) = decoder.dimensions();
    Ok((w, h, decoder.color_type().has_color()))
}

/// The channel count and `[H, W]` of the dataset: `channels` / `image_size` when given, else
/// from the images' headers (mixed sizes refused naming two files).
pub(crate) fn shape(
    files: &[&(PathBuf, i64)],
    channels: Option<i64>,
    image_size: Option<[i64; 2]>,
) -> Result<(i64, [i64; 2]), DataError> {
    if let Some(c) = channels {
        if c != 1 && c != 3 {
            return Err(DataError::invalid(format!("data.channels = {c}: expected 1 or 3")));
        }
    }
    if let Some([h, w]) = image_size {
        if h < 1 || w < 1 {
            return Err(DataError::invalid(format!("data.image_size = [{h}, {w}]: expected positive sizes")));
        }
        if channels.is_some() {
            return Ok((channels.unwrap_or(3), [h, w]));
        }
    }
    let heads: Vec<(u32, u32, bool)> = files.par_iter().map(|(p, _)| header(p)).collect::<Result<_, _>>()?;
    let colour = heads.iter().any(|h| h.2);
    let c = channels.unwrap_or(if colour { 3 } else { 1 });
    if let Some(size) = image_size {
        return Ok((c, size));
    }
    let (w0, h0, _) = heads[0];
    if let Some((i, (w, h, _))) = heads.iter().enumerate().find(|(_, h)| (h.0, h.1) != (w0, h0)) {
        return Err(DataError::invalid(format!(
            "images of different sizes: {} is {w0}x{h0}, {} is {w}x{h} (width x height); set data.image_size = [H, W] \
             to resize and centre-crop them",
            files[0].0.display(),
            files[i].0.display()
        )));
    }
    Ok((c, [h0 as i64, w0 as i64]))
}

/// Decodes one image to `channels x H x W` bytes (resized and centre-cropped when `resize`).
fn decode(path: &Path, channels: i64, size: [i64; 2], resize: bool) -> Result<Vec<u8>, DataError> {
    let img = reader(path)?.decode().map_err(|e| unreadable(path, e))?;
    let (th, tw) = (size[0] as u32, size[1] as u32);
    let img = if resize && (img.width(), img.height()) != (tw, th) {
        let s = (tw as f64 / img.width() as f64).max(th as f64 / img.height() as f64);
        let nw = ((img.width() as f64 * s).round() as u32).max(tw);
        let nh = ((img.height() as f64 * s).round() as u32).max(th);
        let scaled = img.resize_exact(nw, nh, FilterType::Triangle);
        scaled.crop_imm((nw - tw) / 2, (nh - th) / 2, tw, th)
    } else {
        img
    };
    if (img.width(), img.height()) != (tw, th) {
        return Err(DataError::format(
            path,
            format!("image is {}x{}, expected {tw}x{th} (width x height)", img.width(), img.height()),
        ));
    }
    let rgb = |img: &DynamicImage| img.to_rgb8();
    let n = (tw * th) as usize;
    Ok(if channels == 1 {
        match img {
            DynamicImage::ImageLuma8(g) => g.into_raw(),
            other if !other.color().has_color() => other.to_luma8().into_raw(),
            other => rgb(&other)
                .pixels()
                .map(|p| {
                    let [r, g, b] = p.0.map(u32::from);
                    ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) as u8
                })
                .collect(),
        }
    } else {
        let raw = rgb(&img).into_raw();
        let mut planes = vec![0u8; 3 * n];
        for (i, px) in raw.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c * n + i] = px[c];
            }
        }
        planes
    })
}

/// Decodes a listing in parallel into a `u8` split `N x channels x H x W`, or reads it from
/// the split's decoded-tensor cache when the listing, channels and size are unchanged (see
/// [`cache_path`]); a fresh decode writes the cache (a failure to write only costs a warning).
pub(crate) fn load(
    listing: &Listing,
    channels: i64,
    size: [i64; 2],
    resize: bool,
) -> Result<Split, DataError> {
    let cache = cache_path(listing, channels, size, resize)?;
    if let Some(path) = &cache {
        if let Ok(split) = read_cache(path, listing, channels, size) {
            return Ok(split);
        }
    }
    let split = decode_all(listing, channels, size, resize)?;
    if let Some(path) = &cache {
        if let Err(e) = write_cache(path, &split) {
            tracing::warn!("{}: could not write the decoded-image cache: {e}", path.display());
        }
    }
    Ok(split)
}

const CACHE_PREFIX: &str = "relief-cache-";
const CACHE_SUFFIX: &str = ".safetensors";

/// `<dataset dir>/relief-cache-<split>-<fingerprint>.safetensors`: the fingerprint is a SHA-256
/// over the channels, size and resizing and every image's path (relative to the split), class,
/// byte size and modification time, so adding, removing, renaming or rewriting an image starts
/// a new cache. `None` when the split directory has no parent or name.
fn cache_path(
    listing: &Listing,
    channels: i64,
    size: [i64; 2],
    resize: bool,
) -> Result<Option<PathBuf>, DataError> {
    let (Some(root), Some(split)) = (listing.dir.parent(), listing.dir.file_name()) else { return Ok(None) };
    let stats: Vec<String> = listing
        .files
        .par_iter()
        .map(|(p, label)| {
            let m = std::fs::metadata(p).map_err(|e| DataError::io(p, e))?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let rel = p.strip_prefix(&listing.dir).unwrap_or(p);
            Ok(format!("{}\t{label}\t{}\t{mtime}\n", rel.display(), m.len()))
        })
        .collect::<Result<_, DataError>>()?;
    let mut h = Sha256::new();
    h.update(
        format!("relief imagefolder cache v1\n{channels} {} {} {resize}\n", size[0], size[1]).as_bytes(),
    );
    for s in &stats {
        h.update(s.as_bytes());
    }
    let fp = crate::checksum::hex(&h.finalize());
    let split = split.to_string_lossy();
    Ok(Some(root.join(format!("{CACHE_PREFIX}{split}-{}{CACHE_SUFFIX}", &fp[..16]))))
}

fn read_cache(path: &Path, listing: &Listing, channels: i64, size: [i64; 2]) -> Result<Split, String> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| e.to_string())?;
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| format!("no tensor {name}"))
    };
    let split = Split { images: get("images")?, labels: get("labels")? };
    split.validate().map_err(|e| e.to_string())?;
    if split.len() != listing.files.len() as i64
        || split.images.kind() != tch::Kind::Uint8
        || split.image_shape() != [channels, size[0], size[1]]
    {
        return Err("cached split does not match the listing".into());
    }
    Ok(split)
}

fn write_cache(path: &Path, split: &Split) -> Result<(), String> {
    let tmp = path.with_extension("safetensors.tmp");
    let written = Tensor::write_safetensors(&[("images", &split.images), ("labels", &split.labels)], &tmp)
        .map_err(|e| e.to_string())
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| e.to_string()));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // Older caches of this split (another listing, size or channel count) are stale now.
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let prefix = &name[..name.len() - CACHE_SUFFIX.len() - 16];
    if let Some(Ok(entries)) = path.parent().map(std::fs::read_dir) {
        for e in entries.flatten() {
            let other = e.file_name().to_string_lossy().into_owned();
            if other != name && other.starts_with(prefix) && other.ends_with(CACHE_SUFFIX) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

fn decode_all(listing: &Listing, channels: i64, size: [i64; 2], resize: bool) -> Result<Split, DataError> {
    let pixels: Vec<Vec<u8>> =
        listing.files.par_iter().map(|(p, _)| decode(p, channels, size, resize)).collect::<Result<_, _>>()?;
    let n = pixels.len() as i64;
    let flat: Vec<u8> = pixels.concat();
    let images = Tensor::from_slice(&flat).view([n, channels, size[0], size[1]]);
    let labels: Vec<i64> = listing.files.iter().map(|(_, c)| *c).collect();
    Ok(Split { images, labels: Tensor::from_slice(&labels) })
}
