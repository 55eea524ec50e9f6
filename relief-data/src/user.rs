//! Datasets of the user's own: tensors in safetensors files (`tensors`), any directory of
//! MNIST-format IDX files (`idx`), and Fashion-MNIST (IDX files with fixed statistics).
//!
//! `tensors`: `dir` is either a directory holding `train.safetensors` and `test.safetensors`,
//! each with tensors `x` and `y`, or one `.safetensors` file holding `train_x`, `train_y`,
//! `test_x`, `test_y`. `x` is `u8` images `N x C x H x W` (scaled by `1/255`, then normalised
//! per channel), `f32` `N x C x H x W` (taken as given unless a mean or std is set), or
//! `N x F` feature vectors (`u8` or `f32`, stored as `N x F x 1 x 1`; normalised per feature).
//! `y` holds integer labels `N` (`i64`, `i32` or `u8`).
//!
//! Normalisation happens once, when loading: the dataset's images become `f32` network input
//! and batches use [`Preprocess::Identity`](crate::Preprocess::Identity). The mean and std
//! default to the training split's per-channel statistics (population std over every pixel of
//! the channel, after `/255`; a constant channel gets std 1); the values used are kept in
//! [`Dataset::normalization`] so that an evaluation can rebuild the same test set.
//!
//! Only headers (safetensors JSON header, IDX header) and labels are read by [`inspect`], which
//! gives a plan the example shape and class count without loading the images.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tch::{Kind, Tensor};

use crate::dataset::{Dataset, DatasetKind, Normalization};
use crate::error::{check_dir, DataError};
use crate::mnist::{load_idx_split, locate, parse_idx_labels, read_maybe_gz};
use crate::split::{Split, ValSize};

/// Fashion-MNIST's training-set mean (after `/255`), its usual normalisation.
pub const FASHION_MNIST_MEAN: f64 = 0.2860;
/// Fashion-MNIST's training-set standard deviation (after `/255`).
pub const FASHION_MNIST_STD: f64 = 0.3530;

/// Options of user datasets (all default to "from the data").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserOptions {
    /// Per-channel (or per-feature) mean, one value or one per channel (default: computed over
    /// the training split for `u8` data; 0 for `f32` data).
    pub mean: Option<Vec<f64>>,
    /// Per-channel standard deviation, one value or one per channel (default: computed over the
    /// training split for `u8` data; 1 for `f32` data).
    pub std: Option<Vec<f64>>,
    /// Class count; every label must be below it (default: largest label + 1; for image
    /// folders the number of class folders).
    pub num_classes: Option<i64>,
    /// Image folders: 1 (grey) or 3 (RGB) channels (default: 3 when any image has colour).
    pub channels: Option<i64>,
    /// Image folders: `[H, W]` every image is resized and centre-cropped to (default: the
    /// images' common size).
    pub image_size: Option<[i64; 2]>,
    /// Carve the test split from the training data (a share or a count) instead of reading one:
    /// then the data has no test file or folder (see [`TEST_SPLIT_LAYOUT`]).
    pub test_split: Option<ValSize>,
    /// Seed of that carve (numpy's `permutation`, as the validation carve).
    pub split_seed: u32,
}

/// What a dataset holds when `test_split` carves its test split: only training data.
pub const TEST_SPLIT_LAYOUT: &str = "with data.test_split the data holds only a training split: tensors      train.safetensors (x, y) or one .safetensors file with x and y; IDX train-* files; image folders train/<class>/";

/// The test split carved from `train` when `options.test_split` is set: `(train, test)`.
fn carve_test(train: Split, options: &UserOptions) -> Result<(Split, Split), DataError> {
    let size = options.test_split.expect("carving");
    train.carve_validation(size, options.split_seed).map_err(|e| {
        DataError::invalid(format!(
            "data.test_split = {}: {}",
            match size {
                ValSize::Fraction(f) => f.to_string(),
                ValSize::Count(n) => n.to_string(),
            },
            e.to_string().replace("invalid argument: ", "").replace("validation", "test")
        ))
    })
}

/// Refuses a test source that `test_split` would silently ignore.
fn no_test_source(path: &Path) -> Result<(), DataError> {
    if path.exists() {
        return Err(DataError::format(
            path,
            format!("data.test_split is set, so the test split is carved from the training data and this would be ignored: remove it or unset data.test_split ({TEST_SPLIT_LAYOUT})"),
        ));
    }
    Ok(())
}

/// What a plan needs to know of a dataset: one example's shape and the class count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataInfo {
    /// `[C, H, W]`, or `[F]` for feature vectors.
    pub shape: Vec<i64>,
    /// Number of classes.
    pub classes: i64,
}

/// The shape and class count of `kind` in `dir`, reading headers and labels only.
pub fn inspect(kind: DatasetKind, dir: &Path, options: &UserOptions) -> Result<DataInfo, DataError> {
    match kind {
        DatasetKind::Tensors => {
            let (train, test) = tensor_splits(dir, options.test_split.is_some())?;
            let tr = train.header()?;
            let mut splits = vec![(&train, tr.clone())];
            if let Some(test) = &test {
                let te = test.header()?;
                check_same(&test.path, &tr, &te)?;
                splits.push((test, te));
            }
            let refs: Vec<(&TensorSplit, &SplitHeader)> = splits.iter().map(|(s, h)| (*s, h)).collect();
            let classes = classes_of(&refs, options.num_classes)?;
            Ok(DataInfo { shape: tr.x_shape[1..].to_vec(), classes })
        }
        DatasetKind::Idx | DatasetKind::FashionMnist => {
            check_dir(dir, IDX_EXPECTED)?;
            let fixed = kind == DatasetKind::FashionMnist;
            let mut shape = None;
            let mut classes = 0;
            for prefix in idx_prefixes(dir, options)? {
                let ip = locate(dir, &format!("{prefix}-images-idx3-ubyte"))?;
                let (rows, cols) = idx_image_header(&ip)?;
                if fixed && (rows, cols) != (28, 28) {
                    return Err(DataError::format(&ip, format!("images are {rows}x{cols}, expected 28x28")));
                }
                match shape {
                    None => shape = Some(vec![1, rows, cols]),
                    Some(ref s) if s[1..] != [rows, cols] => {
                        return Err(DataError::format(
                            &ip,
                            format!("test images are {rows}x{cols}, training images {}x{}", s[1], s[2]),
                        ))
                    }
                    Some(_) => {}
                }
                let lp = locate(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
                let limit = if fixed { 10 } else { label_limit(options.num_classes) };
                let labels = parse_idx_labels(&read_maybe_gz(&lp)?, &lp, limit)?;
                if labels.numel() > 0 {
                    classes = classes.max(labels.max().int64_value(&[]) + 1);
                }
            }
            let classes = if fixed { 10 } else { options.num_classes.unwrap_or(classes) };
            Ok(DataInfo { shape: shape.unwrap_or_default(), classes })
        }
        DatasetKind::ImageFolder => {
            let (classes, train, test) = crate::imagefolder::list(dir, options.test_split.is_some())?;
            let test_files = test.as_ref().map(|t| &t.files[..]).unwrap_or_default();
            let all: Vec<&(PathBuf, i64)> = train.files.iter().chain(test_files).collect();
            let (c, [h, w]) = crate::imagefolder::shape(&all, options.channels, options.image_size)?;
            Ok(DataInfo {
                shape: vec![c, h, w],
                classes: folder_classes(&classes, dir, options.num_classes)?,
            })
        }
        other => Ok(DataInfo {
            shape: other.image_shape().map(|s| s.to_vec()).unwrap_or_default(),
            classes: options.num_classes.or(other.classes()).unwrap_or(0),
        }),
    }
}

/// Loads a user dataset (`tensors`, `idx`) or Fashion-MNIST from `dir`, normalised to `f32`.
pub fn load_user(kind: DatasetKind, dir: &Path, options: &UserOptions) -> Result<Dataset, DataError> {
    match kind {
        DatasetKind::Tensors => load_tensors(dir, options),
        DatasetKind::Idx | DatasetKind::FashionMnist => load_idx(kind, dir, options),
        DatasetKind::ImageFolder => load_folder(dir, options),
        other => Err(DataError::invalid(format!("{other} is not a user dataset"))),
    }
}

// ---------------------------------------------------------------------------------------------
// image folders

/// The class count of an image folder: its class folders, or `num_classes` when it is not
/// smaller.
fn folder_classes(classes: &[String], dir: &Path, num_classes: Option<i64>) -> Result<i64, DataError> {
    let n = classes.len() as i64;
    match num_classes {
        Some(k) if k < n => {
            Err(DataError::format(dir.join("train"), format!("{n} class folders, but num_classes = {k}")))
        }
        Some(k) => Ok(k),
        None => Ok(n),
    }
}

fn load_folder(dir: &Path, options: &UserOptions) -> Result<Dataset, DataError> {
    let (classes, train_l, test_l) = crate::imagefolder::list(dir, options.test_split.is_some())?;
    let test_files = test_l.as_ref().map(|t| &t.files[..]).unwrap_or_default();
    let all: Vec<&(PathBuf, i64)> = train_l.files.iter().chain(test_files).collect();
    let (c, size) = crate::imagefolder::shape(&all, options.channels, options.image_size)?;
    let resize = options.image_size.is_some();
    let train = crate::imagefolder::load(&train_l, c, size, resize)?;
    let (train, test) = match &test_l {
        Some(t) => (train, crate::imagefolder::load(t, c, size, resize)?),
        None => carve_test(train, options)?,
    };
    let mut options = options.clone();
    options.num_classes = Some(folder_classes(&classes, dir, options.num_classes)?);
    let origin = format!("the images in {}", train_l.dir.display());
    let mut data = finish(DatasetKind::ImageFolder, train, test, &options, &origin, None)?;
    data.class_names = classes;
    Ok(data)
}

// ---------------------------------------------------------------------------------------------
// IDX

const IDX_EXPECTED: &str = "IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, \
                            t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (raw or .gz)";

/// The IDX file prefixes to read: `train` and `t10k`, or `train` alone with `test_split` (a
/// `t10k` file is then refused).
fn idx_prefixes(dir: &Path, options: &UserOptions) -> Result<Vec<&'static str>, DataError> {
    if options.test_split.is_none() {
        return Ok(vec!["train", "t10k"]);
    }
    for stem in ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"] {
        no_test_source(&dir.join(stem))?;
        no_test_source(&dir.join(format!("{stem}.gz")))?;
    }
    Ok(vec!["train"])
}

/// Label bound for IDX labels: `num_classes` (at most 256) or any byte.
fn label_limit(num_classes: Option<i64>) -> u16 {
    num_classes.map(|n| n.clamp(0, 256) as u16).unwrap_or(256)
}

/// `(rows, cols)` from the 16-byte header of an IDX image file (raw or gzip).
fn idx_image_header(path: &Path) -> Result<(i64, i64), DataError> {
    let file = File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut first = [0u8; 2];
    let mut head = [0u8; 16];
    let read = |r: &mut dyn Read, buf: &mut [u8]| -> Result<(), DataError> {
        r.read_exact(buf).map_err(|_| DataError::format(path, "truncated IDX header: expected 16 bytes"))
    };
    let mut f = file;
    let n = f.read(&mut first).map_err(|e| DataError::io(path, e))?;
    f.seek(SeekFrom::Start(0)).map_err(|e| DataError::io(path, e))?;
    if n == 2 && first == [0x1f, 0x8b] {
        read(&mut GzDecoder::new(f), &mut head)?;
    } else {
        read(&mut f, &mut head)?;
    }
    let be = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    if be(0) != 2051 {
        return Err(DataError::format(
            path,
            format!("wrong magic number {}, expected 2051 (IDX images)", be(0)),
        ));
    }
    Ok((be(8) as i64, be(12) as i64))
}

fn load_idx(kind: DatasetKind, dir: &Path, options: &UserOptions) -> Result<Dataset, DataError> {
    check_dir(dir, IDX_EXPECTED)?;
    let fixed = kind == DatasetKind::FashionMnist;
    let mut splits = Vec::new();
    for prefix in idx_prefixes(dir, options)? {
        let limit = if fixed { 10 } else { label_limit(options.num_classes) };
        let (ip, images, labels) = load_idx_split(dir, prefix, fixed.then_some((28, 28)), limit)?;
        splits.push((ip, Split { images, labels }));
    }
    let (train, test, test_path) = if options.test_split.is_some() {
        let (ip, train) = splits.pop().expect("one split");
        let (train, test) = carve_test(train, options)?;
        (train, test, ip)
    } else {
        let (test_path, test) = splits.pop().expect("two splits");
        let (_, train) = splits.pop().expect("two splits");
        (train, test, test_path)
    };
    if test.image_shape() != train.image_shape() {
        let (t, r) = (test.image_shape(), train.image_shape());
        return Err(DataError::format(
            &test_path,
            format!("test images are {}x{}, training images {}x{}", t[1], t[2], r[1], r[2]),
        ));
    }
    let mut options = options.clone();
    if fixed {
        options.mean.get_or_insert_with(|| vec![FASHION_MNIST_MEAN]);
        options.std.get_or_insert_with(|| vec![FASHION_MNIST_STD]);
        options.num_classes = Some(10);
    }
    let origin = format!("IDX images in {}", dir.display());
    finish(kind, train, test, &options, &origin, None)
}

// ---------------------------------------------------------------------------------------------
// safetensors

/// One split of a tensors dataset: the file and the names of its `x` and `y` tensors.
#[derive(Debug, Clone)]
struct TensorSplit {
    path: PathBuf,
    x: String,
    y: String,
}

/// One tensor's entry in a safetensors header.
#[derive(Debug, Clone)]
struct Entry {
    dtype: String,
    shape: Vec<i64>,
    begin: u64,
    end: u64,
}

/// A split's header, checked: `x` and `y` present with accepted dtypes and shapes.
#[derive(Debug, Clone)]
struct SplitHeader {
    data_start: u64,
    x_dtype: String,
    x_shape: Vec<i64>,
    x: Entry,
    y: Entry,
}

const TENSORS_EXPECTED: &str = "train.safetensors and test.safetensors (tensors x and y each), or \
                                data.dir naming one .safetensors file with train_x, train_y, test_x, test_y";

/// Where the splits of a tensors dataset are.
/// With `carve` (`test_split`): the training split alone (`x`, `y` in a single file).
fn tensor_splits(dir: &Path, carve: bool) -> Result<(TensorSplit, Option<TensorSplit>), DataError> {
    if dir.is_file() {
        let s = |x: &str, y: &str| TensorSplit { path: dir.to_path_buf(), x: x.into(), y: y.into() };
        if carve {
            return Ok((s("x", "y"), None));
        }
        return Ok((s("train_x", "train_y"), Some(s("test_x", "test_y"))));
    }
    if !dir.is_dir() {
        return Err(DataError::missing(dir, TENSORS_EXPECTED));
    }
    if carve {
        no_test_source(&dir.join("test.safetensors"))?;
        let path = dir.join("train.safetensors");
        if !path.is_file() {
            return Err(DataError::missing(path, TEST_SPLIT_LAYOUT));
        }
        return Ok((TensorSplit { path, x: "x".into(), y: "y".into() }, None));
    }
    let mut out = Vec::new();
    for name in ["train.safetensors", "test.safetensors"] {
        let path = dir.join(name);
        if !path.is_file() {
            return Err(DataError::missing(path, TENSORS_EXPECTED));
        }
        out.push(TensorSplit { path, x: "x".into(), y: "y".into() });
    }
    let test = out.pop().expect("two");
    Ok((out.pop().expect("two"), Some(test)))
}

fn dtype_size(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "U8" | "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2" => 1,
        "I16" | "U16" | "F16" | "BF16" => 2,
        "I32" | "U32" | "F32" => 4,
        "I64" | "U64" | "F64" => 8,
        _ => return None,
    })
}

/// Reads the JSON header of a safetensors file (not the data).
fn read_header(path: &Path) -> Result<(u64, BTreeMap<String, Entry>), DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let len = f.metadata().map_err(|e| DataError::io(path, e))?.len();
    let bad = |m: String| DataError::format(path, format!("not a readable safetensors file: {m}"));
    let mut n8 = [0u8; 8];
    f.read_exact(&mut n8).map_err(|_| bad(format!("{len} bytes, shorter than the 8-byte header size")))?;
    let n = u64::from_le_bytes(n8);
    if n > 100 << 20 || 8 + n > len {
        return Err(bad(format!("header size {n} does not fit the file of {len} bytes")));
    }
    let mut text = vec![0u8; n as usize];
    f.read_exact(&mut text).map_err(|e| DataError::io(path, e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| bad(format!("header is not JSON ({e})")))?;
    let obj = json.as_object().ok_or_else(|| bad("header is not a JSON object".into()))?;
    let data_len = len - 8 - n;
    let mut out = BTreeMap::new();
    for (name, v) in obj {
        if name == "__metadata__" {
            continue;
        }
        let entry = (|| {
            let dtype = v.get("dtype")?.as_str()?.to_string();
            let shape = v
                .get("shape")?
                .as_array()?
                .iter()
                .map(|d| d.as_u64().map(|d| d as i64))
                .collect::<Option<Vec<_>>>()?;
            let offs = v.get("data_offsets")?.as_array()?;
            let (begin, end) = (offs.first()?.as_u64()?, offs.get(1)?.as_u64()?);
            Some(Entry { dtype, shape, begin, end })
        })()
        .ok_or_else(|| bad(format!("tensor `{name}`: header entry needs dtype, shape and data_offsets")))?;
        // checked: a corrupt header must not overflow (`None` = no size fits)
        let numel = entry.shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let want = dtype_size(&entry.dtype).map(|s| numel.and_then(|n| n.checked_mul(s)));
        if entry.end < entry.begin
            || entry.end > data_len
            || want.is_some_and(|w| w != Some(entry.end - entry.begin))
        {
            return Err(DataError::format(
                path,
                format!(
                    "tensor `{name}`: data offsets {}..{} do not hold {:?} {} (file truncated or corrupt)",
                    entry.begin, entry.end, entry.shape, entry.dtype
                ),
            ));
        }
        out.insert(name.clone(), entry);
    }
    Ok((8 + n, out))
}

impl TensorSplit {
    /// Reads and checks this split's header.
    fn header(&self) -> Result<SplitHeader, DataError> {
        let (data_start, tensors) = read_header(&self.path)?;
        let get = |name: &str| {
            tensors.get(name).cloned().ok_or_else(|| {
                let found: Vec<&str> = tensors.keys().map(String::as_str).collect();
                DataError::format(
                    &self.path,
                    format!(
                        "missing tensor `{name}`; expected `{}` (N x C x H x W or N x F) and `{}` (N labels), found {}",
                        self.x,
                        self.y,
                        if found.is_empty() { "no tensors".to_string() } else { found.join(", ") }
                    ),
                )
            })
        };
        let (x, y) = (get(&self.x)?, get(&self.y)?);
        if x.dtype != "U8" && x.dtype != "F32" {
            return Err(DataError::format(
                &self.path,
                format!("tensor `{}` has dtype {}, expected U8 (images) or F32", self.x, x.dtype),
            ));
        }
        if !(x.shape.len() == 2 || x.shape.len() == 4) || x.shape[1..].contains(&0) {
            return Err(DataError::format(
                &self.path,
                format!(
                    "tensor `{}` has shape {:?}, expected N x C x H x W images or N x F feature vectors",
                    self.x, x.shape
                ),
            ));
        }
        if !matches!(y.dtype.as_str(), "I64" | "I32" | "U8") {
            return Err(DataError::format(
                &self.path,
                format!(
                    "tensor `{}` has dtype {}, expected integer labels (I64, I32 or U8)",
                    self.y, y.dtype
                ),
            ));
        }
        if y.shape.len() != 1 {
            return Err(DataError::format(
                &self.path,
                format!("tensor `{}` has shape {:?}, expected N labels (one dimension)", self.y, y.shape),
            ));
        }
        if y.shape[0] != x.shape[0] {
            return Err(DataError::format(
                &self.path,
                format!(
                    "tensor `{}` has {} labels but `{}` has {} examples",
                    self.y, y.shape[0], self.x, x.shape[0]
                ),
            ));
        }
        Ok(SplitHeader { data_start, x_dtype: x.dtype.clone(), x_shape: x.shape.clone(), x, y })
    }

    /// Reads one tensor's bytes into a CPU tensor.
    fn read(&self, h: &SplitHeader, e: &Entry) -> Result<Tensor, DataError> {
        let mut f = File::open(&self.path).map_err(|err| DataError::io(&self.path, err))?;
        f.seek(SeekFrom::Start(h.data_start + e.begin)).map_err(|err| DataError::io(&self.path, err))?;
        let mut bytes = vec![0u8; (e.end - e.begin) as usize];
        f.read_exact(&mut bytes).map_err(|err| DataError::io(&self.path, err))?;
        let kind = match e.dtype.as_str() {
            "U8" => Kind::Uint8,
            "I32" => Kind::Int,
            "I64" => Kind::Int64,
            "F32" => Kind::Float,
            other => return Err(DataError::invalid(format!("unsupported dtype {other}"))),
        };
        Ok(Tensor::f_from_data_size(&bytes, &e.shape, kind)?)
    }

    /// The labels as `i64`, checked against `num_classes` (and for negative values).
    fn labels(&self, h: &SplitHeader, num_classes: Option<i64>) -> Result<Tensor, DataError> {
        let y = self.read(h, &h.y)?.f_to_kind(Kind::Int64)?;
        if y.numel() == 0 {
            return Ok(y);
        }
        let (lo, hi) = (y.min().int64_value(&[]), y.max().int64_value(&[]));
        if lo < 0 {
            let at = y.argmin(0, false).int64_value(&[]);
            return Err(DataError::format(
                &self.path,
                format!(
                    "tensor `{}`: label {lo} at index {at} is negative, expected labels 0..num_classes",
                    self.y
                ),
            ));
        }
        if let Some(n) = num_classes {
            if hi >= n {
                let at = y.argmax(0, false).int64_value(&[]);
                return Err(DataError::format(
                    &self.path,
                    format!(
                        "tensor `{}`: label {hi} at index {at} is out of range 0..{n} (num_classes = {n})",
                        self.y
                    ),
                ));
            }
        }
        Ok(y)
    }
}

/// Train and test must agree on `x`'s dtype and example shape (the error names the test file).
fn check_same(test_path: &Path, train: &SplitHeader, test: &SplitHeader) -> Result<(), DataError> {
    if train.x_dtype != test.x_dtype || train.x_shape[1..] != test.x_shape[1..] {
        return Err(DataError::format(
            test_path,
            format!(
                "test x is {:?} {} per example but train x is {:?} {}; both splits need the same shape and dtype",
                &test.x_shape[1..],
                test.x_dtype,
                &train.x_shape[1..],
                train.x_dtype
            ),
        ));
    }
    Ok(())
}

/// The class count: `num_classes`, or the largest label of any split + 1 (labels checked).
fn classes_of(splits: &[(&TensorSplit, &SplitHeader)], num_classes: Option<i64>) -> Result<i64, DataError> {
    let mut classes = 0;
    for (s, h) in splits {
        let y = s.labels(h, num_classes)?;
        if y.numel() > 0 {
            classes = classes.max(y.max().int64_value(&[]) + 1);
        }
    }
    Ok(num_classes.unwrap_or(classes))
}

fn load_tensors(dir: &Path, options: &UserOptions) -> Result<Dataset, DataError> {
    let (train_s, test_s) = tensor_splits(dir, options.test_split.is_some())?;
    let tr = train_s.header()?;
    let test_h = match &test_s {
        Some(t) => {
            let te = t.header()?;
            check_same(&t.path, &tr, &te)?;
            Some((t, te))
        }
        None => None,
    };
    let split = |s: &TensorSplit, h: &SplitHeader| -> Result<Split, DataError> {
        let labels = s.labels(h, options.num_classes)?;
        let mut images = s.read(h, &h.x)?;
        if images.kind() == Kind::Float {
            let n = h.x_shape[0];
            if n > 0 {
                let bad = images.isfinite().logical_not().view([n, -1]).any_dim(1, false);
                if bad.any().int64_value(&[]) != 0 {
                    let at = bad.nonzero().int64_value(&[0, 0]);
                    return Err(DataError::format(
                        &s.path,
                        format!("tensor `{}` holds NaN or infinite values (first at example {at})", s.x),
                    ));
                }
            }
        }
        if images.dim() == 2 {
            let sz = images.size();
            images = images.view([sz[0], sz[1], 1, 1]);
        }
        Ok(Split { images, labels })
    };
    let train = split(&train_s, &tr)?;
    let (train, test) = match &test_h {
        Some((t, te)) => (train, split(t, te)?),
        None => carve_test(train, options)?,
    };
    let mut options = options.clone();
    if options.num_classes.is_none() {
        let max = |s: &Split| if s.is_empty() { -1 } else { s.labels.max().int64_value(&[]) };
        options.num_classes = Some(max(&train).max(max(&test)) + 1);
    }
    let origin = format!("tensor `{}` of {}", train_s.x, train_s.path.display());
    let shape = tr.x_shape[1..].to_vec();
    finish(DatasetKind::Tensors, train, test, &options, &origin, Some(shape))
}

// ---------------------------------------------------------------------------------------------
// normalisation

/// `values` (one, or one per channel) as `channels` values; `field` names it in errors.
fn per_channel(values: &[f64], channels: i64, field: &str, origin: &str) -> Result<Vec<f64>, DataError> {
    if values.iter().any(|v| !v.is_finite()) {
        return Err(DataError::invalid(format!("data.{field} = {values:?}: every value must be finite")));
    }
    match values.len() {
        1 => Ok(vec![values[0]; channels as usize]),
        n if n as i64 == channels => Ok(values.to_vec()),
        n => Err(DataError::invalid(format!(
            "data.{field} has {n} values, expected 1 or {channels} (one per channel of {origin})"
        ))),
    }
}

/// Normalises both splits to `f32` and builds the dataset.
fn finish(
    kind: DatasetKind,
    train: Split,
    test: Split,
    options: &UserOptions,
    origin: &str,
    shape: Option<Vec<i64>>,
) -> Result<Dataset, DataError> {
    let channels = train.image_shape()[0];
    let is_u8 = train.images.kind() == Kind::Uint8;
    let scaled = |s: &Split| -> Result<Tensor, DataError> {
        let x = s.images.f_to_kind(Kind::Float)?;
        Ok(if is_u8 { x.f_div_scalar(255.0)? } else { x })
    };
    let (xtr, xte) = (scaled(&train)?, scaled(&test)?);
    let stats = |which: bool| -> Result<Vec<f64>, DataError> {
        // which: true = mean, false = std; population statistics per channel, in f64
        if train.is_empty() {
            return Err(DataError::invalid(format!("{origin}: the training split is empty")));
        }
        let mut d = train.images.f_to_kind(Kind::Double)?;
        if is_u8 {
            d = d.f_div_scalar(255.0)?;
        }
        let d = d.f_transpose(0, 1)?.f_reshape([channels, -1])?;
        let t = if which { d.f_mean_dim(1, false, None)? } else { d.f_std_correction(1, 0, false)? };
        let v = Vec::<f64>::try_from(&t)?;
        Ok(if which { v } else { v.into_iter().map(|s| if s < 1e-8 { 1.0 } else { s }).collect() })
    };
    let norm = match (&options.mean, &options.std) {
        (None, None) if !is_u8 => None,
        (mean, std) => {
            let mean = match mean {
                Some(m) => per_channel(m, channels, "mean", origin)?,
                None if is_u8 => stats(true)?,
                None => vec![0.0; channels as usize],
            };
            let std = match std {
                Some(s) => per_channel(s, channels, "std", origin)?,
                None if is_u8 => stats(false)?,
                None => vec![1.0; channels as usize],
            };
            if let Some(bad) = std.iter().find(|s| **s <= 0.0) {
                return Err(DataError::invalid(format!("data.std: {bad} is not positive")));
            }
            Some(Normalization { mean, std })
        }
    };
    let apply = |x: Tensor| -> Result<Tensor, DataError> {
        let Some(n) = &norm else { return Ok(x) };
        let t = |v: &[f64]| -> Result<Tensor, DataError> {
            let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
            Ok(Tensor::from_slice(&f).f_view([1, channels, 1, 1])?)
        };
        Ok(x.f_sub(&t(&n.mean)?)?.f_div(&t(&n.std)?)?)
    };
    let train = Split { images: apply(xtr)?, labels: train.labels };
    let test = Split { images: apply(xte)?, labels: test.labels };
    let mut data = Dataset::new(kind, train, test);
    if let Some(n) = options.num_classes {
        data.classes = n;
    }
    data.normalization = norm;
    data.test_carve = options.test_split;
    data.split_seed = options.split_seed;
    if let Some(shape) = shape {
        data.example_shape = shape;
    }
    data.validate()?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_channel_broadcasts_one_value_and_refuses_other_counts() {
        assert_eq!(per_channel(&[0.5], 3, "mean", "x").unwrap(), vec![0.5; 3]);
        assert_eq!(per_channel(&[1.0, 2.0], 2, "mean", "x").unwrap(), vec![1.0, 2.0]);
        let e = per_channel(&[1.0, 2.0], 3, "std", "x").unwrap_err().to_string();
        assert!(e.contains("data.std has 2 values, expected 1 or 3"), "{e}");
    }
}
