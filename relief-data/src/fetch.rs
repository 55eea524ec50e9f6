//! Downloading the official archives: resumable, verified, extracted safely, idempotent.
//!
//! Each [`Source`] is a file name, candidate URLs and the expected SHA-256 (plus the MD5 the
//! dataset's publisher or torchvision lists). [`official_sources`] is the table for the four
//! datasets; tests build their own sources against a local server. A download goes to
//! `<file>.part` (resumed with an HTTP `Range` request when it exists), is verified, then renamed
//! to `<file>`; a download that fails verification is deleted. A verified `<file>` is never fetched
//! again or touched; an existing `<file>` that does not verify is left in place until its
//! replacement has fully downloaded and verified, so a failed or interrupted fetch never loses
//! it. An archive is extracted once (a marker `.<file>.extracted` records it).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::checksum;
use crate::dataset::DatasetKind;
use crate::error::DataError;
use crate::extract;

/// One file to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Name of the file in the target directory.
    pub file: String,
    /// URLs to try, in order.
    pub urls: Vec<String>,
    /// Expected SHA-256, lowercase hex.
    pub sha256: String,
    /// Expected MD5, lowercase hex, where one is published.
    pub md5: Option<String>,
    /// Expected size in bytes, where known.
    pub size: Option<u64>,
    /// Whether to extract the file (`.tar.gz` or `.zip`) into the target directory.
    pub extract: bool,
}

impl Source {
    /// The same file fetched from `mirror` (`<mirror>/<file>`) instead.
    pub fn mirrored(&self, mirror: &str) -> Source {
        let url = format!("{}/{}", mirror.trim_end_matches('/'), self.file);
        Source { urls: vec![url], ..self.clone() }
    }
}

/// Mirrors of the MNIST files (the original site often refuses scripted downloads).
const MNIST_BASES: [&str; 3] = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
];

/// `(file, sha256, md5, size)` of the four MNIST files.
const MNIST_FILES: [(&str, &str, &str, u64); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        9_912_422,
    ),
    (
        "train-labels-idx1-ubyte.gz",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "d53e105ee54ea40749a09fcbcd1e9432",
        28_881,
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "9fb629c4189551a2d022fa330f9573f3",
        1_648_877,
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
        "ec29112dd5afa0611ce80d1b7f02629c",
        4_542,
    ),
];

fn archive(file: &str, url: &str, sha256: &str, md5: &str, size: u64) -> Source {
    Source {
        file: file.into(),
        urls: vec![url.into()],
        sha256: sha256.into(),
        md5: Some(md5.into()),
        size: Some(size),
        extract: true,
    }
}

/// The official downloads of `kind` (see `docs/data.md` for where each checksum comes from).
/// Empty for Fashion-MNIST and user datasets (not fetched by relief).
pub fn official_sources(kind: DatasetKind) -> Vec<Source> {
    match kind {
        DatasetKind::FashionMnist | DatasetKind::Idx | DatasetKind::Tensors | DatasetKind::ImageFolder => {
            Vec::new()
        }
        DatasetKind::Mnist => MNIST_FILES
            .iter()
            .map(|(file, sha256, md5, size)| Source {
                file: (*file).into(),
                urls: MNIST_BASES.iter().map(|b| format!("{b}{file}")).collect(),
                sha256: (*sha256).into(),
                md5: Some((*md5).into()),
                size: Some(*size),
                extract: false,
            })
            .collect(),
        DatasetKind::Cifar10 => vec![archive(
            "cifar-10-binary.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            "c32a1d4ab5d03f1284b67883e8d87530",
            170_052_171,
        )],
        DatasetKind::Cifar100 => vec![archive(
            "cifar-100-binary.tar.gz",
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
            "03b5dce01913d631647c71ecec9e9cb8",
            168_513_733,
        )],
        DatasetKind::TinyImageNet => vec![archive(
            "tiny-imagenet-200.zip",
            "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "6198c8ae015e2b3e007c7841da39ec069199b9aa3bfa943a462022fe5e43c821",
            "90528d7ca1a48142e341f4ef8d21d0de",
            248_100_043,
        )],
    }
}

/// How to fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Fetch every file from `<mirror>/<file>` instead of the official URLs.
    pub mirror: Option<String>,
    /// Draw a progress bar on stderr (only when it is a terminal).
    pub progress: bool,
    /// Extra attempts after a failed or interrupted transfer (each resumes the `.part`).
    pub retries: u32,
    /// Connect and read timeout.
    pub timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self { mirror: None, progress: true, retries: 2, timeout: Duration::from_secs(60) }
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileOutcome {
    /// A verified copy was already there; nothing was transferred.
    AlreadyVerified,
    /// Downloaded and verified; `resumed_from` bytes were already in `<file>.part`.
    Downloaded {
        /// Bytes that a previous attempt had left in `<file>.part` (0 when fresh).
        resumed_from: u64,
    },
}

/// What [`fetch_sources`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// Per file: its final path and outcome.
    pub files: Vec<(PathBuf, FileOutcome)>,
    /// Top-level names created by extraction in this run (empty when already extracted).
    pub extracted: Vec<String>,
}

/// Fetches the official files of `kind` into `dir` (honouring `options.mirror`).
pub fn fetch(kind: DatasetKind, dir: &Path, options: &FetchOptions) -> Result<FetchReport, DataError> {
    let mut sources = official_sources(kind);
    if sources.is_empty() {
        return Err(DataError::invalid(format!(
            "{kind}: relief has no official download for this dataset; put its files into {} yourself",
            dir.display()
        )));
    }
    if let Some(m) = &options.mirror {
        sources = sources.iter().map(|s| s.mirrored(m)).collect();
    }
    fetch_sources(&sources, dir, options)
}

/// Downloads, verifies and (where asked) extracts every source into `dir`.
pub fn fetch_sources(
    sources: &[Source],
    dir: &Path,
    options: &FetchOptions,
) -> Result<FetchReport, DataError> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let agent =
        ureq::AgentBuilder::new().timeout_connect(options.timeout).timeout_read(options.timeout).build();
    let mut report = FetchReport { files: Vec::new(), extracted: Vec::new() };
    for s in sources {
        let outcome = download(&agent, s, dir, options)?;
        let path = dir.join(&s.file);
        if s.extract {
            report.extracted.extend(extract_once(&path, s, dir)?);
        }
        report.files.push((path, outcome));
    }
    Ok(report)
}

fn verify(path: &Path, s: &Source) -> Result<(), DataError> {
    checksum::verify(path, Some(&s.sha256), s.md5.as_deref())
}

fn download(
    agent: &ureq::Agent,
    s: &Source,
    dir: &Path,
    options: &FetchOptions,
) -> Result<FileOutcome, DataError> {
    if s.file.is_empty() || extract::safe_relative(Path::new(&s.file)).as_deref() != Some(Path::new(&s.file))
    {
        return Err(DataError::invalid(format!("source file name {:?} is not a plain name", s.file)));
    }
    let dest = dir.join(&s.file);
    // The existing file is only read here, never removed: if it does not verify, it stays in
    // place until a replacement has been fully downloaded and verified (then renamed over it).
    if dest.is_file() {
        match verify(&dest, s) {
            Ok(()) => {
                tracing::info!("{}: already downloaded and verified", dest.display());
                return Ok(FileOutcome::AlreadyVerified);
            }
            Err(DataError::Checksum { .. }) => {
                tracing::warn!(
                    "{}: does not verify; downloading a replacement (the file is kept until the \
                     replacement has downloaded and verified)",
                    dest.display()
                );
            }
            Err(e) => return Err(e),
        }
    }
    if s.urls.is_empty() {
        return Err(DataError::invalid(format!("no URL for {}", s.file)));
    }
    let part = dir.join(format!("{}.part", s.file));
    let resumed_from = part.metadata().map(|m| m.len()).unwrap_or(0);
    let mut last_err = None;
    'attempts: for _ in 0..=options.retries {
        for url in &s.urls {
            match transfer(agent, url, &part, s, options) {
                Ok(()) => {
                    last_err = None;
                    break 'attempts;
                }
                Err(e) => {
                    tracing::warn!("{e}");
                    last_err = Some(e);
                }
            }
        }
    }
    if let Some(e) = last_err {
        return Err(e);
    }
    if let Err(e) = verify(&part, s) {
        let _ = std::fs::remove_file(&part);
        return Err(match e {
            DataError::Checksum { algorithm, expected, actual, .. } => {
                DataError::Checksum { path: dest, algorithm, expected, actual }
            }
            other => other,
        });
    }
    // The `.part` was fsynced by `transfer` (or by the run that completed it); make sure of it
    // before the rename publishes it, then persist the rename itself.
    File::open(&part).and_then(|f| f.sync_all()).map_err(|e| DataError::io(&part, e))?;
    std::fs::rename(&part, &dest).map_err(|e| DataError::io(&dest, e))?;
    sync_dir(dir);
    Ok(FileOutcome::Downloaded { resumed_from })
}

fn http_err(url: &str, message: impl Into<String>) -> DataError {
    DataError::Http { url: url.to_string(), message: message.into() }
}

/// Parses `bytes START-END/TOTAL` or `bytes */TOTAL` into `(start, total)`.
fn content_range(v: &str) -> (Option<u64>, Option<u64>) {
    let v = v.trim().strip_prefix("bytes").unwrap_or(v).trim();
    let (range, total) = v.split_once('/').unwrap_or((v, "*"));
    let start = range.split_once('-').and_then(|(a, _)| a.trim().parse().ok());
    (start, total.trim().parse().ok())
}

fn progress_bar(options: &FetchOptions, total: Option<u64>, name: &str) -> ProgressBar {
    if !options.progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(total.unwrap_or(0));
    let style =
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_message(name.to_string());
    pb
}

/// One HTTP attempt: appends to `part` from its current length (or restarts it).
fn transfer(
    agent: &ureq::Agent,
    url: &str,
    part: &Path,
    s: &Source,
    options: &FetchOptions,
) -> Result<(), DataError> {
    let mut offset = part.metadata().map(|m| m.len()).unwrap_or(0);
    if let Some(size) = s.size {
        if offset == size {
            return Ok(()); // complete but unverified: verification decides
        }
        if offset > size {
            std::fs::remove_file(part).map_err(|e| DataError::io(part, e))?;
            offset = 0;
        }
    }
    let mut req = agent.get(url);
    if offset > 0 {
        req = req.set("Range", &format!("bytes={offset}-"));
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(416, r)) => {
            let total = r.header("Content-Range").and_then(|v| content_range(v).1);
            if total == Some(offset) {
                return Ok(());
            }
            std::fs::remove_file(part).map_err(|e| DataError::io(part, e))?;
            return Err(http_err(url, "HTTP 416: cannot resume the partial file; it was discarded"));
        }
        Err(ureq::Error::Status(code, r)) => {
            return Err(http_err(url, format!("HTTP {code} {}", r.status_text())))
        }
        Err(ureq::Error::Transport(t)) => return Err(http_err(url, t.to_string())),
    };
    let length: Option<u64> = resp.header("Content-Length").and_then(|v| v.trim().parse().ok());
    let append = match resp.status() {
        206 => {
            let start = resp.header("Content-Range").and_then(|v| content_range(v).0);
            if start != Some(offset) {
                return Err(http_err(url, format!("server resumed at {start:?}, expected byte {offset}")));
            }
            true
        }
        200 => false,
        code => return Err(http_err(url, format!("unexpected HTTP {code}"))),
    };
    let start = if append { offset } else { 0 };
    let mut out = if append { OpenOptions::new().append(true).open(part) } else { File::create(part) }
        .map_err(|e| DataError::io(part, e))?;
    let pb = progress_bar(options, length.map(|l| l + start), &s.file);
    pb.set_position(start);
    let mut body = resp.into_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let interrupted = |received: u64, why: String| {
        let of = length.map(|l| format!(" of {l}")).unwrap_or_default();
        http_err(
            url,
            format!(
                "transfer interrupted after {received}{of} bytes ({why}); \
                 {} kept, run again to resume",
                part.display()
            ),
        )
    };
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = out.flush();
                pb.abandon();
                return Err(interrupted(received, e.to_string()));
            }
        };
        out.write_all(&buf[..n]).map_err(|e| DataError::io(part, e))?;
        received += n as u64;
        pb.inc(n as u64);
    }
    out.flush().map_err(|e| DataError::io(part, e))?;
    out.sync_all().map_err(|e| DataError::io(part, e))?;
    pb.finish_and_clear();
    if let Some(l) = length {
        if received < l {
            return Err(interrupted(received, "connection closed early".into()));
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, then rename).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(|e| DataError::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| DataError::io(path, e))?;
    if let Some(parent) = path.parent() {
        sync_dir(parent);
    }
    Ok(())
}

/// Best effort: persists a rename in `dir` (not every platform can fsync a directory).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Extracts `archive` unless its marker says this very archive was already extracted and
/// everything it created is still there.
fn extract_once(archive: &Path, s: &Source, dir: &Path) -> Result<Vec<String>, DataError> {
    let marker = dir.join(format!(".{}.extracted", s.file));
    if let Ok(text) = std::fs::read_to_string(&marker) {
        let mut lines = text.lines();
        let same = lines.next() == Some(s.sha256.as_str());
        let names: Vec<&str> = lines.collect();
        if same && !names.is_empty() && names.iter().all(|n| dir.join(n).exists()) {
            return Ok(Vec::new());
        }
    }
    let names = extract::extract(archive, dir)?;
    let mut text = format!("{}\n", s.sha256);
    for n in &names {
        text.push_str(n);
        text.push('\n');
    }
    write_atomic(&marker, text.as_bytes())?;
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_table_is_complete_and_well_formed() {
        for kind in DatasetKind::ALL {
            let sources = official_sources(kind);
            assert!(!sources.is_empty());
            for s in &sources {
                assert_eq!(s.sha256.len(), 64, "{}", s.file);
                assert!(s.sha256.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
                assert_eq!(s.md5.as_ref().map(String::len), Some(32));
                assert!(s.urls.iter().all(|u| u.ends_with(&s.file)));
            }
        }
        assert_eq!(official_sources(DatasetKind::Mnist).len(), 4);
    }

    #[test]
    fn mirror_replaces_urls() {
        let s = official_sources(DatasetKind::Cifar10).remove(0).mirrored("http://m.example/data/");
        assert_eq!(s.urls, vec!["http://m.example/data/cifar-10-binary.tar.gz".to_string()]);
    }

    #[test]
    fn parses_content_range() {
        assert_eq!(content_range("bytes 100-199/200"), (Some(100), Some(200)));
        assert_eq!(content_range("bytes */200"), (None, Some(200)));
        assert_eq!(content_range("garbage"), (None, None));
    }

    #[test]
    fn unsafe_file_names_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = Source {
            file: "../x".into(),
            urls: vec!["http://127.0.0.1:9/x".into()],
            sha256: "0".repeat(64),
            md5: None,
            size: None,
            extract: false,
        };
        let opts = FetchOptions { progress: false, retries: 0, ..Default::default() };
        let e = fetch_sources(&[s], d.path(), &opts).unwrap_err();
        assert!(matches!(e, DataError::InvalidArgument(_)), "{e}");
    }
}
