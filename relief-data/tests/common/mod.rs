//! Writers of small files in the official formats, shared by the integration tests.
#![allow(dead_code)]

pub mod server;

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;
use flate2::Compression;

/// IDX image file bytes: `n` images of `rows x cols`, pixel `(i, p) -> (i * 7 + p) % 256`.
pub fn idx_images(n: u32, rows: u32, cols: u32) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [2051, n, rows, cols] {
        v.extend_from_slice(&x.to_be_bytes());
    }
    for i in 0..n as usize {
        v.extend((0..(rows * cols) as usize).map(|p| ((i * 7 + p) % 256) as u8));
    }
    v
}

/// IDX label file bytes.
pub fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&2049u32.to_be_bytes());
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// Gzip of `bytes`.
pub fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Writes a complete small MNIST (`n_train`, `n_test` images) into `dir`, gzipped or raw.
pub fn write_mnist(dir: &Path, n_train: u32, n_test: u32, gzip: bool) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let files = [
            (format!("{prefix}-images-idx3-ubyte"), idx_images(n, 28, 28)),
            (format!("{prefix}-labels-idx1-ubyte"), idx_labels(&labels)),
        ];
        for (name, bytes) in files {
            if gzip {
                std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).unwrap();
            } else {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

/// One CIFAR record: label bytes then 3072 pixels; channel `c` of image `seed` is filled with
/// `(seed * 3 + c) % 256` except pixel 0 of each channel, which is `c`.
pub fn cifar_record(label_bytes: &[u8], seed: usize) -> Vec<u8> {
    let mut r = label_bytes.to_vec();
    for c in 0..3 {
        r.push(c as u8);
        r.extend(std::iter::repeat_n(((seed * 3 + c) % 256) as u8, 1023));
    }
    r
}

/// Writes CIFAR-10 binary batches (`per_file` records each) into `dir`; labels `i % 10`.
pub fn write_cifar10(dir: &Path, per_file: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let mut seed = 0;
    let names: Vec<String> =
        (1..=5).map(|i| format!("data_batch_{i}.bin")).chain(["test_batch.bin".into()]).collect();
    for name in names {
        let mut bytes = Vec::new();
        for _ in 0..per_file {
            bytes.extend(cifar_record(&[(seed % 10) as u8], seed));
            seed += 1;
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Writes CIFAR-100 `train.bin` and `test.bin` into `dir`; coarse `i % 20`, fine `i % 100`.
pub fn write_cifar100(dir: &Path, n_train: usize, n_test: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, n) in [("train.bin", n_train), ("test.bin", n_test)] {
        let mut bytes = Vec::new();
        for i in 0..n {
            bytes.extend(cifar_record(&[(i % 20) as u8, (i % 100) as u8], i));
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Writes a solid-colour 64x64 RGB JPEG (quality 100).
pub fn write_jpeg(path: &Path, rgb: [u8; 3], side: u32) {
    let img = image::RgbImage::from_pixel(side, side, image::Rgb(rgb));
    let mut f = std::fs::File::create(path).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 100).encode_image(&img).unwrap();
}

/// Writes a solid greyscale 64x64 JPEG.
pub fn write_grey_jpeg(path: &Path, v: u8) {
    let img = image::GrayImage::from_pixel(64, 64, image::Luma([v]));
    let mut f = std::fs::File::create(path).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut f, 100).encode_image(&img).unwrap();
}

/// The wnids of the toy Tiny-ImageNet (deliberately not sorted in the file).
pub const WNIDS: [&str; 3] = ["n03", "n01", "n02"];

/// Colour of class `label` (sorted-wnid index).
pub fn class_colour(label: usize) -> [u8; 3] {
    [40 + 60 * label as u8, 200 - 50 * label as u8, 100]
}

/// Writes a toy Tiny-ImageNet tree into `root`: 3 classes x `per_class` train images, 4 val
/// images (`val_0`: n01, `val_1`: n03, `val_2`: n02, `val_3`: n01). Returns the val files.
pub fn write_tiny(root: &Path, per_class: usize) -> Vec<PathBuf> {
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("wnids.txt"), WNIDS.join("\n") + "\n").unwrap();
    let mut sorted = WNIDS.to_vec();
    sorted.sort();
    for (label, w) in sorted.iter().enumerate() {
        let d = root.join("train").join(w).join("images");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(root.join("train").join(w).join(format!("{w}_boxes.txt")), "").unwrap();
        for i in 0..per_class {
            write_jpeg(&d.join(format!("{w}_{i}.JPEG")), class_colour(label), 64);
        }
    }
    let vi = root.join("val").join("images");
    std::fs::create_dir_all(&vi).unwrap();
    let val = [("val_0.JPEG", "n01"), ("val_1.JPEG", "n03"), ("val_2.JPEG", "n02"), ("val_3.JPEG", "n01")];
    let mut ann = String::new();
    let mut files = Vec::new();
    for (f, w) in val {
        let label = sorted.iter().position(|s| *s == w).unwrap();
        write_jpeg(&vi.join(f), class_colour(label), 64);
        ann.push_str(&format!("{f}\t{w}\t0\t0\t63\t63\n"));
        files.push(vi.join(f));
    }
    std::fs::write(root.join("val").join("val_annotations.txt"), ann).unwrap();
    files
}

/// A `.tar.gz` of `entries` (path, bytes).
pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for (path, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        // Write the name raw so tests can build hostile archives (`..`, absolute paths).
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

/// A `.zip` of `entries` (path, bytes); names are written as given.
pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (path, data) in entries {
        w.start_file(*path, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Every file under `dir` as (path relative to `dir` with `/`, bytes), sorted.
pub fn files_under(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<(String, Vec<u8>)>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().to_string_lossy().replace('\\', "/");
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
