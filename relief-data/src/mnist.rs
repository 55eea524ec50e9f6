//! MNIST in the official IDX format (`train-images-idx3-ubyte[.gz]`, ...), any number of images.
//!
//! IDX: big-endian `u32` magic (2051 images, 2049 labels), `u32` count, for images `u32` rows
//! and columns, then `u8` data. Images load as `N x 1 x 28 x 28` `u8`, labels as `N` `i64`
//! (0..=9). Files may be raw or gzip-compressed (detected by the gzip magic `1f 8b`).

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tch::{Kind, Tensor};

use crate::dataset::{Dataset, DatasetKind};
use crate::error::{check_dir, DataError};
use crate::split::Split;

/// One split of MNIST: images `N x 1 x 28 x 28` (`u8`) and labels `N` (`i64`).
#[derive(Debug)]
pub struct MnistSplit {
    /// Raw pixel bytes.
    pub images: Tensor,
    /// Class indices 0..=9.
    pub labels: Tensor,
}

/// Both splits of MNIST.
#[derive(Debug)]
pub struct Mnist {
    /// `train-*` files.
    pub train: MnistSplit,
    /// `t10k-*` files.
    pub test: MnistSplit,
}

/// What an MNIST directory must hold.
const EXPECTED: &str = "MNIST IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, \
                        t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)";

/// Reads a whole file, gunzipping when it is gzip-compressed (magic `1f 8b`).
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>, DataError> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| DataError::format(path, format!("corrupt or truncated gzip stream: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Parses IDX image bytes into `N x 1 x 28 x 28` `u8`.
pub fn parse_idx_images(bytes: &[u8], path: &Path) -> Result<Tensor, DataError> {
    parse_idx_images_sized(bytes, path, Some((28, 28)))
}

/// Parses IDX image bytes into `N x 1 x rows x cols` `u8`; `expected` (rows, cols), when
/// given, is checked.
pub fn parse_idx_images_sized(
    bytes: &[u8],
    path: &Path,
    expected: Option<(usize, usize)>,
) -> Result<Tensor, DataError> {
    if bytes.len() < 16 {
        return Err(DataError::format(
            path,
            format!("truncated IDX header: {} bytes, expected 16", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 2051 {
        return Err(DataError::format(
            path,
            format!("wrong magic number {magic}, expected 2051 (IDX images)"),
        ));
    }
    let (n, rows, cols) = (be_u32(bytes, 4) as usize, be_u32(bytes, 8) as usize, be_u32(bytes, 12) as usize);
    if let Some((er, ec)) = expected {
        if rows != er || cols != ec {
            return Err(DataError::format(path, format!("images are {rows}x{cols}, expected {er}x{ec}")));
        }
    }
    if rows == 0 || cols == 0 {
        return Err(DataError::format(path, format!("images are {rows}x{cols}, expected at least 1x1")));
    }
    let want = n * rows * cols;
    let data = &bytes[16..];
    if data.len() != want {
        let what = if data.len() < want { "truncated" } else { "trailing bytes" };
        return Err(DataError::format(
            path,
            format!("{what}: header says {n} images ({want} bytes of pixels), file has {} bytes", data.len()),
        ));
    }
    Ok(Tensor::from_slice(data).view([n as i64, 1, rows as i64, cols as i64]))
}

/// Parses IDX label bytes into `N` `i64`, checking every label is below `classes` (at most
/// 256: any byte).
pub fn parse_idx_labels(bytes: &[u8], path: &Path, classes: u16) -> Result<Tensor, DataError> {
    if bytes.len() < 8 {
        return Err(DataError::format(
            path,
            format!("truncated IDX header: {} bytes, expected 8", bytes.len()),
        ));
    }
    let magic = be_u32(bytes, 0);
    if magic != 2049 {
        return Err(DataError::format(
            path,
            format!("wrong magic number {magic}, expected 2049 (IDX labels)"),
        ));
    }
    let n = be_u32(bytes, 4) as usize;
    let data = &bytes[8..];
    if data.len() != n {
        let what = if data.len() < n { "truncated" } else { "trailing bytes" };
        return Err(DataError::format(
            path,
            format!("{what}: header says {n} labels, file has {}", data.len()),
        ));
    }
    if let Some((i, &bad)) = data.iter().enumerate().find(|(_, &l)| u16::from(l) >= classes) {
        return Err(DataError::format(
            path,
            format!("label {bad} at index {i} is out of range 0..{classes}"),
        ));
    }
    Ok(Tensor::from_slice(data).to_kind(Kind::Int64))
}

/// Finds `stem` or `stem.gz` in `dir`.
pub(crate) fn locate(dir: &Path, stem: &str) -> Result<PathBuf, DataError> {
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = dir.join(&name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::missing(dir.join(stem), format!("MNIST IDX file {stem} or {stem}.gz")))
}

fn load_split(dir: &Path, prefix: &str) -> Result<MnistSplit, DataError> {
    let (_, images, labels) = load_idx_split(dir, prefix, Some((28, 28)), 10)?;
    Ok(MnistSplit { images, labels })
}

/// One IDX split of `dir` (`<prefix>-images-idx3-ubyte[.gz]` and its labels): the images file's
/// path, `N x 1 x rows x cols` `u8` images (of size `size` when given) and labels below
/// `classes`, their counts checked against each other.
pub(crate) fn load_idx_split(
    dir: &Path,
    prefix: &str,
    size: Option<(usize, usize)>,
    classes: u16,
) -> Result<(PathBuf, Tensor, Tensor), DataError> {
    let ip = locate(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lp = locate(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = parse_idx_images_sized(&read_maybe_gz(&ip)?, &ip, size)?;
    let labels = parse_idx_labels(&read_maybe_gz(&lp)?, &lp, classes)?;
    if images.size()[0] != labels.size()[0] {
        return Err(DataError::format(
            &lp,
            format!(
                "count mismatch: {} labels for {} images in {}",
                labels.size()[0],
                images.size()[0],
                ip.display()
            ),
        ));
    }
    Ok((ip, images, labels))
}

impl Mnist {
    /// Loads both splits from `dir` (raw or gzip IDX files).
    pub fn load(dir: &Path) -> Result<Self, DataError> {
        check_dir(dir, EXPECTED)?;
        Ok(Self { train: load_split(dir, "train")?, test: load_split(dir, "t10k")? })
    }

    /// Converts to the common [`Dataset`] (10 classes, `/255` preprocessing, no augmentation).
    pub fn into_dataset(self) -> Dataset {
        Dataset::new(
            DatasetKind::Mnist,
            Split { images: self.train.images, labels: self.train.labels },
            Split { images: self.test.images, labels: self.test.labels },
        )
    }
}

/// Loads MNIST from `dir` as a [`Dataset`].
pub fn load_mnist(dir: &Path) -> Result<Dataset, DataError> {
    Ok(Mnist::load(dir)?.into_dataset())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images(n: u32, rows: u32, cols: u32, pixels: usize) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [2051, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend((0..pixels).map(|i| (i % 251) as u8));
        v
    }

    #[test]
    fn parses_images_of_any_count() {
        let p = Path::new("imgs");
        let t = parse_idx_images(&images(3, 28, 28, 3 * 784), p).unwrap();
        assert_eq!(t.size(), vec![3, 1, 28, 28]);
        assert_eq!(t.kind(), Kind::Uint8);
        assert_eq!(t.int64_value(&[2, 0, 0, 5]), ((2 * 784 + 5) % 251) as i64);
        assert_eq!(parse_idx_images(&images(0, 28, 28, 0), p).unwrap().size(), vec![0, 1, 28, 28]);
    }

    #[test]
    fn rejects_bad_image_files() {
        let p = Path::new("imgs");
        let msg = |b: &[u8]| parse_idx_images(b, p).unwrap_err().to_string();
        assert!(msg(&[0; 10]).contains("truncated IDX header"));
        let mut wrong = images(1, 28, 28, 784);
        wrong[3] = 1;
        assert!(msg(&wrong).contains("wrong magic number 2049, expected 2051"));
        assert!(msg(&images(1, 32, 32, 1024)).contains("images are 32x32, expected 28x28"));
        assert!(msg(&images(2, 28, 28, 784)).contains("truncated: header says 2 images"));
        assert!(msg(&images(1, 28, 28, 785)).contains("trailing bytes"));
    }

    #[test]
    fn rejects_bad_label_files() {
        let p = Path::new("labels");
        let mut ok = vec![0, 0, 8, 1, 0, 0, 0, 3];
        ok.extend([0, 9, 4]);
        assert_eq!(Vec::<i64>::try_from(parse_idx_labels(&ok, p, 10).unwrap()).unwrap(), [0, 9, 4]);
        let mut bad = ok.clone();
        bad[10] = 10;
        let e = parse_idx_labels(&bad, p, 10).unwrap_err().to_string();
        assert!(e.contains("label 10 at index 2 is out of range 0..10"), "{e}");
        let e = parse_idx_labels(&ok[..10], p, 10).unwrap_err().to_string();
        assert!(e.contains("truncated: header says 3 labels, file has 2"), "{e}");
        let e = parse_idx_labels(&ok[..5], p, 10).unwrap_err().to_string();
        assert!(e.contains("truncated IDX header"), "{e}");
    }

    #[test]
    fn corrupt_gzip_is_a_format_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.gz");
        std::fs::write(&p, [0x1f, 0x8b, 8, 0, 1, 2]).unwrap();
        let e = read_maybe_gz(&p).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }));
        assert!(e.to_string().contains("gzip"));
    }
}
