//! CIFAR-10 and CIFAR-100 in the official binary format.
//!
//! CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` (train, in that order) and
//! `test_batch.bin`; each record is 1 label byte then 3072 pixel bytes (1024 red, 1024 green,
//! 1024 blue, row-major 32x32). CIFAR-100: `train.bin`, `test.bin`; each record is a coarse
//! label byte, a fine label byte, then the same 3072 bytes. Images load as `N x 3 x 32 x 32`
//! `u8`, labels as `N` `i64`. The files may sit directly in the given directory or in the
//! archive's top directory inside it (`cifar-10-batches-bin/`, `cifar-100-binary/`).

use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::dataset::{Dataset, DatasetKind};
use crate::error::{check_dir, DataError};
use crate::split::Split;

/// Pixel bytes of one CIFAR image (`3 x 32 x 32`).
pub const CIFAR_IMAGE_BYTES: usize = 3 * 32 * 32;

/// Which CIFAR-100 labels to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Cifar100Labels {
    /// The 100 fine classes (the paper's setting).
    #[default]
    Fine,
    /// The 20 coarse superclasses.
    Coarse,
}

/// The layout of one CIFAR binary record.
#[derive(Debug, Clone, Copy)]
pub struct RecordFormat {
    /// Label bytes before the pixels (1 for CIFAR-10, 2 for CIFAR-100).
    pub label_bytes: usize,
    /// Which of those bytes is the label used.
    pub label_index: usize,
    /// Labels must be below this.
    pub classes: u8,
}

impl RecordFormat {
    /// CIFAR-10: one label byte, 10 classes.
    pub const CIFAR10: RecordFormat = RecordFormat { label_bytes: 1, label_index: 0, classes: 10 };

    /// CIFAR-100 with the chosen labels.
    pub fn cifar100(labels: Cifar100Labels) -> RecordFormat {
        match labels {
            Cifar100Labels::Coarse => RecordFormat { label_bytes: 2, label_index: 0, classes: 20 },
            Cifar100Labels::Fine => RecordFormat { label_bytes: 2, label_index: 1, classes: 100 },
        }
    }

    /// Bytes per record.
    pub fn record_bytes(&self) -> usize {
        self.label_bytes + CIFAR_IMAGE_BYTES
    }
}

/// Appends the records of one file's bytes to `images` and `labels`.
pub fn parse_records(
    bytes: &[u8],
    path: &Path,
    format: RecordFormat,
    images: &mut Vec<u8>,
    labels: &mut Vec<i64>,
) -> Result<(), DataError> {
    let rec = format.record_bytes();
    if bytes.is_empty() {
        return Err(DataError::format(path, format!("empty file, expected records of {rec} bytes")));
    }
    let left_over = bytes.len() % rec;
    if left_over != 0 {
        return Err(DataError::format(
            path,
            format!(
                "truncated: {} bytes is not a whole number of {rec}-byte records \
                 ({} complete, {left_over} bytes left over)",
                bytes.len(),
                bytes.len() / rec,
            ),
        ));
    }
    let n = bytes.len() / rec;
    images.reserve(n * CIFAR_IMAGE_BYTES);
    labels.reserve(n);
    for (i, r) in bytes.chunks_exact(rec).enumerate() {
        let label = r[format.label_index];
        if label >= format.classes {
            return Err(DataError::format(
                path,
                format!("label {label} of record {i} is out of range 0..{}", format.classes),
            ));
        }
        labels.push(i64::from(label));
        images.extend_from_slice(&r[format.label_bytes..]);
    }
    Ok(())
}

/// Reads and concatenates the records of `files` into one split.
pub fn load_records(files: &[PathBuf], format: RecordFormat) -> Result<Split, DataError> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for f in files {
        let bytes = std::fs::read(f).map_err(|e| DataError::io(f, e))?;
        parse_records(&bytes, f, format, &mut images, &mut labels)?;
    }
    let n = labels.len() as i64;
    Ok(Split {
        images: Tensor::from_slice(&images).f_view([n, 3, 32, 32])?,
        labels: Tensor::from_slice(&labels),
    })
}

/// Picks `dir/sub` when it holds `probe`, else `dir`; errors for a missing or empty `dir`.
fn root(dir: &Path, sub: &str, probe: &str, expected: &str) -> Result<PathBuf, DataError> {
    check_dir(dir, expected)?;
    let nested = dir.join(sub);
    Ok(if nested.join(probe).is_file() || (nested.is_dir() && !dir.join(probe).is_file()) {
        nested
    } else {
        dir.to_path_buf()
    })
}

fn existing(root: &Path, names: &[&str], expected: &str) -> Result<Vec<PathBuf>, DataError> {
    names
        .iter()
        .map(|n| {
            let p = root.join(n);
            if p.is_file() {
                Ok(p)
            } else {
                Err(DataError::missing(p, expected))
            }
        })
        .collect()
}

/// Loads CIFAR-10 from `dir` (or `dir/cifar-10-batches-bin`).
pub fn load_cifar10(dir: &Path) -> Result<Dataset, DataError> {
    let expected = "CIFAR-10 binary files data_batch_1.bin..data_batch_5.bin and test_batch.bin";
    let root = root(dir, "cifar-10-batches-bin", "data_batch_1.bin", expected)?;
    let train_names =
        ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
    let train = existing(&root, &train_names, expected)?;
    let test = existing(&root, &["test_batch.bin"], expected)?;
    Ok(Dataset::new(
        DatasetKind::Cifar10,
        load_records(&train, RecordFormat::CIFAR10)?,
        load_records(&test, RecordFormat::CIFAR10)?,
    ))
}

/// Loads CIFAR-100 from `dir` (or `dir/cifar-100-binary`) with fine or coarse labels.
pub fn load_cifar100(dir: &Path, labels: Cifar100Labels) -> Result<Dataset, DataError> {
    let expected = "CIFAR-100 binary files train.bin and test.bin";
    let root = root(dir, "cifar-100-binary", "train.bin", expected)?;
    let format = RecordFormat::cifar100(labels);
    let train = existing(&root, &["train.bin"], expected)?;
    let test = existing(&root, &["test.bin"], expected)?;
    let mut d =
        Dataset::new(DatasetKind::Cifar100, load_records(&train, format)?, load_records(&test, format)?);
    if labels == Cifar100Labels::Coarse {
        d.classes = 20;
        d.name = "cifar100 (coarse)".into();
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(label_bytes: &[u8], fill: u8) -> Vec<u8> {
        let mut r = label_bytes.to_vec();
        r.extend((0..CIFAR_IMAGE_BYTES).map(|i| fill.wrapping_add((i / 1024) as u8)));
        r
    }

    #[test]
    fn parses_channels_first_records() {
        let mut bytes = record(&[3], 10);
        bytes.extend(record(&[9], 20));
        let (mut im, mut lb) = (Vec::new(), Vec::new());
        parse_records(&bytes, Path::new("b"), RecordFormat::CIFAR10, &mut im, &mut lb).unwrap();
        assert_eq!(lb, vec![3, 9]);
        assert_eq!(im.len(), 2 * CIFAR_IMAGE_BYTES);
        assert_eq!((im[0], im[1024], im[2048], im[3072]), (10, 11, 12, 20));
    }

    #[test]
    fn cifar100_fine_or_coarse() {
        let bytes = record(&[4, 77], 0);
        let (mut im, mut lb) = (Vec::new(), Vec::new());
        let fine = RecordFormat::cifar100(Cifar100Labels::Fine);
        parse_records(&bytes, Path::new("t"), fine, &mut im, &mut lb).unwrap();
        let coarse = RecordFormat::cifar100(Cifar100Labels::Coarse);
        parse_records(&bytes, Path::new("t"), coarse, &mut im, &mut lb).unwrap();
        assert_eq!(lb, vec![77, 4]);
    }

    #[test]
    fn rejects_truncated_empty_and_out_of_range() {
        let p = Path::new("data_batch_1.bin");
        let (mut im, mut lb) = (Vec::new(), Vec::new());
        let mut run =
            |b: &[u8]| parse_records(b, p, RecordFormat::CIFAR10, &mut im, &mut lb).unwrap_err().to_string();
        let one = record(&[1], 0);
        let e = run(&one[..3000]);
        assert!(e.contains("truncated: 3000 bytes is not a whole number of 3073-byte records"), "{e}");
        assert!(run(&[]).contains("empty file"));
        let e = run(&record(&[10], 0));
        assert!(e.contains("label 10 of record 0 is out of range 0..10"), "{e}");
    }
}
