//! End-to-end fetch tests against a local HTTP server on 127.0.0.1 serving archives the tests
//! build: verified download, idempotence, checksum failure, interrupted transfer and resume,
//! safe extraction, then loading through the real loaders.

mod common;

use std::path::Path;
use std::time::Duration;

use common::server::{Route, Seen, TestServer};
use relief_data::checksum;
use relief_data::{
    fetch, fetch_sources, load_cifar10, load_tiny_imagenet, DataError, DatasetKind, FetchOptions,
    FileOutcome, Mnist, Source, TinyImageNetOptions,
};

fn opts(retries: u32) -> FetchOptions {
    FetchOptions { mirror: None, progress: false, retries, timeout: Duration::from_secs(10) }
}

fn sha256_of(bytes: &[u8]) -> String {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x");
    std::fs::write(&p, bytes).unwrap();
    checksum::digests(&p).unwrap().sha256
}

fn source(file: &str, url: String, bytes: &[u8], extract: bool) -> Source {
    Source {
        file: file.into(),
        urls: vec![url],
        sha256: sha256_of(bytes),
        md5: None,
        size: Some(bytes.len() as u64),
        extract,
    }
}

fn mnist_files() -> Vec<(String, Vec<u8>)> {
    let d = tempfile::tempdir().unwrap();
    common::write_mnist(d.path(), 30, 12, true);
    common::files_under(d.path())
}

#[test]
fn mnist_downloads_verifies_loads_and_is_idempotent() {
    let server = TestServer::start();
    let files = mnist_files();
    let sources: Vec<Source> = files
        .iter()
        .map(|(name, bytes)| source(name, server.serve(name, Route::Bytes(bytes.clone())), bytes, false))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let report = fetch_sources(&sources, dir.path(), &opts(0)).unwrap();
    assert_eq!(report.files.len(), 4);
    assert!(report.files.iter().all(|(_, o)| *o == FileOutcome::Downloaded { resumed_from: 0 }));
    let m = Mnist::load(dir.path()).unwrap();
    assert_eq!((m.train.images.size()[0], m.test.labels.size()[0]), (30, 12));
    assert_eq!(server.seen().len(), 4);

    let again = fetch_sources(&sources, dir.path(), &opts(0)).unwrap();
    assert!(again.files.iter().all(|(_, o)| *o == FileOutcome::AlreadyVerified));
    assert_eq!(server.seen().len(), 4, "verified files must not be downloaded again");
}

#[test]
fn checksum_mismatch_is_a_clear_error_and_nothing_is_kept() {
    let server = TestServer::start();
    let good = b"the real archive bytes".to_vec();
    let url = server.serve("a.gz", Route::Bytes(b"corrupted archive bytes!".to_vec()));
    let mut s = source("a.gz", url, &good, false);
    s.size = None;
    let dir = tempfile::tempdir().unwrap();
    let e = fetch_sources(std::slice::from_ref(&s), dir.path(), &opts(0)).unwrap_err();
    match &e {
        DataError::Checksum { path, algorithm, expected, actual } => {
            assert_eq!(path, &dir.path().join("a.gz"));
            assert_eq!(*algorithm, "sha256");
            assert_eq!(expected, &s.sha256);
            assert_ne!(actual, expected);
        }
        other => panic!("expected a checksum error, got {other}"),
    }
    assert!(e.to_string().contains("a.gz: sha256 checksum mismatch: expected"));
    assert!(!dir.path().join("a.gz").exists());
    assert!(!dir.path().join("a.gz.part").exists());

    // An md5 mismatch is caught too.
    let bytes = b"fine".to_vec();
    let url = server.serve("b.bin", Route::Bytes(bytes.clone()));
    let mut s = source("b.bin", url, &bytes, false);
    s.md5 = Some("0".repeat(32));
    let e = fetch_sources(&[s], dir.path(), &opts(0)).unwrap_err();
    assert!(matches!(e, DataError::Checksum { algorithm: "md5", .. }), "{e}");
    assert!(!dir.path().join("b.bin").exists());
}

#[test]
fn stale_local_file_is_replaced() {
    let server = TestServer::start();
    let bytes = b"fresh".to_vec();
    let s = source("f.bin", server.serve("f.bin", Route::Bytes(bytes.clone())), &bytes, false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.bin"), b"stale").unwrap();
    let r = fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(r.files[0].1, FileOutcome::Downloaded { resumed_from: 0 });
    assert_eq!(std::fs::read(dir.path().join("f.bin")).unwrap(), bytes);
}

/// The bytes, inode and modification time of a file: what "never touched" means.
fn fingerprint(path: &Path) -> (Vec<u8>, u64, std::time::SystemTime) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (std::fs::read(path).unwrap(), m.ino(), m.modified().unwrap())
}

#[test]
fn sample_files_survive_a_fetch_from_an_unreachable_mirror() {
    // The case: the bundled sample (which does not match the official checksums) sits in
    // DIR and `relief data fetch mnist --mirror http://127.0.0.1:9/` cannot connect.
    let sample = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mnist-sample"));
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ];
    for n in names {
        std::fs::copy(sample.join(n), dir.path().join(n)).unwrap();
    }
    let before: Vec<_> = names.iter().map(|n| fingerprint(&dir.path().join(n))).collect();
    let options = FetchOptions { mirror: Some("http://127.0.0.1:9/".into()), ..opts(0) };
    let e = fetch(DatasetKind::Mnist, dir.path(), &options).unwrap_err();
    assert!(matches!(e, DataError::Http { .. }), "{e}");
    assert!(e.to_string().contains("http://127.0.0.1:9/train-images-idx3-ubyte.gz"), "{e}");
    let after: Vec<_> = names.iter().map(|n| fingerprint(&dir.path().join(n))).collect();
    assert_eq!(before, after, "a failed fetch must leave the existing files as they were");
    Mnist::load(dir.path()).unwrap();
}

#[test]
fn unverified_local_file_is_kept_when_the_replacement_fails() {
    let server = TestServer::start();
    let good = b"the real file".to_vec();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("k.bin");
    std::fs::write(&dest, b"an older local copy").unwrap();

    // 1. The replacement does not verify: the local file stays, the bad download is discarded.
    let url = server.serve("k.bin", Route::Bytes(b"a corrupted copy".to_vec()));
    let mut s = source("k.bin", url, &good, false);
    s.size = None;
    let e = fetch_sources(std::slice::from_ref(&s), dir.path(), &opts(0)).unwrap_err();
    assert!(matches!(e, DataError::Checksum { .. }), "{e}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"an older local copy");
    assert!(!dir.path().join("k.bin.part").exists());

    // 2. The replacement is cut short: the local file stays, the partial download is kept.
    let url = server.serve("k2.bin", Route::CutOnce { bytes: good.clone(), after: 5, cut: false });
    let s2 = Source { file: "k.bin".into(), urls: vec![url], ..source("k.bin", String::new(), &good, false) };
    let e = fetch_sources(std::slice::from_ref(&s2), dir.path(), &opts(0)).unwrap_err();
    assert!(e.to_string().contains("interrupted"), "{e}");
    assert_eq!(std::fs::read(&dest).unwrap(), b"an older local copy");
    assert_eq!(std::fs::read(dir.path().join("k.bin.part")).unwrap(), &good[..5]);

    // 3. Only a replacement that downloaded completely and verified is renamed over it.
    let r = fetch_sources(&[s2], dir.path(), &opts(0)).unwrap();
    assert_eq!(r.files[0].1, FileOutcome::Downloaded { resumed_from: 5 });
    assert_eq!(std::fs::read(&dest).unwrap(), good);
    assert!(!dir.path().join("k.bin.part").exists());
}

#[test]
fn verified_local_file_is_never_touched() {
    let server = TestServer::start();
    let bytes = b"verified bytes".to_vec();
    // The server would hand out something else: it must not even be asked.
    let s = source("v.bin", server.serve("v.bin", Route::Bytes(b"other".to_vec())), &bytes, false);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("v.bin");
    std::fs::write(&dest, &bytes).unwrap();
    let before = fingerprint(&dest);
    let r = fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(r.files[0].1, FileOutcome::AlreadyVerified);
    assert_eq!(fingerprint(&dest), before);
    assert!(server.seen().is_empty());
}

#[test]
fn interrupted_transfer_resumes_with_range_on_rerun() {
    let server = TestServer::start();
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let url = server.serve("big.bin", Route::CutOnce { bytes: bytes.clone(), after: 70_000, cut: false });
    let s = source("big.bin", url, &bytes, false);
    let dir = tempfile::tempdir().unwrap();

    let e = fetch_sources(std::slice::from_ref(&s), dir.path(), &opts(0)).unwrap_err();
    assert!(matches!(e, DataError::Http { .. }), "{e}");
    assert!(e.to_string().contains("interrupted"), "{e}");
    let part = dir.path().join("big.bin.part");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 70_000);
    assert!(!dir.path().join("big.bin").exists());

    let r = fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(r.files[0].1, FileOutcome::Downloaded { resumed_from: 70_000 });
    assert_eq!(std::fs::read(dir.path().join("big.bin")).unwrap(), bytes);
    assert!(!part.exists());
    let seen = server.seen();
    assert_eq!(
        seen,
        vec![
            Seen { path: "/big.bin".into(), range: None },
            Seen { path: "/big.bin".into(), range: Some("bytes=70000-".into()) },
        ]
    );
}

#[test]
fn retries_resume_within_one_run() {
    let server = TestServer::start();
    let bytes: Vec<u8> = (0..50_000u32).map(|i| (i % 253) as u8).collect();
    let url = server.serve("r.bin", Route::CutOnce { bytes: bytes.clone(), after: 1234, cut: false });
    let s = source("r.bin", url, &bytes, false);
    let dir = tempfile::tempdir().unwrap();
    let r = fetch_sources(&[s], dir.path(), &opts(1)).unwrap();
    assert_eq!(r.files[0].1, FileOutcome::Downloaded { resumed_from: 0 });
    assert_eq!(std::fs::read(dir.path().join("r.bin")).unwrap(), bytes);
    assert_eq!(server.seen()[1].range.as_deref(), Some("bytes=1234-"));
}

#[test]
fn server_ignoring_range_restarts_the_file() {
    let server = TestServer::start();
    let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 7) as u8).collect();
    let url = server.serve("n.bin", Route::NoRange(bytes.clone()));
    let s = source("n.bin", url, &bytes, false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("n.bin.part"), &bytes[..500]).unwrap();
    fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(std::fs::read(dir.path().join("n.bin")).unwrap(), bytes);
}

#[test]
fn complete_part_file_is_verified_without_transfer() {
    let server = TestServer::start();
    let bytes = b"already all here".to_vec();
    let url = server.serve("c.bin", Route::Bytes(bytes.clone()));
    let s = source("c.bin", url, &bytes, false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.bin.part"), &bytes).unwrap();
    let r = fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(r.files[0].1, FileOutcome::Downloaded { resumed_from: bytes.len() as u64 });
    assert!(server.seen().is_empty());
}

#[test]
fn http_errors_name_the_url() {
    let server = TestServer::start();
    let s = Source {
        file: "missing.bin".into(),
        urls: vec![format!("{}/missing.bin", server.base)],
        sha256: "0".repeat(64),
        md5: None,
        size: None,
        extract: false,
    };
    let dir = tempfile::tempdir().unwrap();
    let e = fetch_sources(&[s], dir.path(), &opts(0)).unwrap_err();
    assert!(matches!(e, DataError::Http { .. }));
    assert!(e.to_string().contains("/missing.bin: HTTP 404"), "{e}");
}

#[test]
fn falls_back_to_the_next_url() {
    let server = TestServer::start();
    let bytes = b"mirror two".to_vec();
    let good = server.serve("m.bin", Route::Bytes(bytes.clone()));
    let mut s = source("m.bin", good, &bytes, false);
    s.urls.insert(0, format!("{}/nowhere/m.bin", server.base));
    let dir = tempfile::tempdir().unwrap();
    fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(std::fs::read(dir.path().join("m.bin")).unwrap(), bytes);
}

fn cifar10_archive() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    common::write_cifar10(&d.path().join("cifar-10-batches-bin"), 3);
    let files = common::files_under(d.path());
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    common::tar_gz(&entries)
}

#[test]
fn cifar10_tar_gz_extracts_once_and_loads() {
    let server = TestServer::start();
    let archive = cifar10_archive();
    let url = server.serve("cifar-10-binary.tar.gz", Route::Bytes(archive.clone()));
    let s = source("cifar-10-binary.tar.gz", url, &archive, true);
    let dir = tempfile::tempdir().unwrap();
    let r = fetch_sources(std::slice::from_ref(&s), dir.path(), &opts(0)).unwrap();
    assert_eq!(r.extracted, vec!["cifar-10-batches-bin".to_string()]);
    let d = load_cifar10(dir.path()).unwrap();
    assert_eq!((d.train.len(), d.test.len()), (15, 3));

    let again = fetch_sources(std::slice::from_ref(&s), dir.path(), &opts(0)).unwrap();
    assert!(again.extracted.is_empty(), "already extracted");
    assert_eq!(again.files[0].1, FileOutcome::AlreadyVerified);

    // If the extracted tree disappears, the next fetch restores it from the verified archive.
    std::fs::remove_dir_all(dir.path().join("cifar-10-batches-bin")).unwrap();
    let third = fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(third.extracted, vec!["cifar-10-batches-bin".to_string()]);
    assert_eq!(server.seen().len(), 1);
}

#[test]
fn tiny_imagenet_zip_extracts_and_loads() {
    let src = tempfile::tempdir().unwrap();
    common::write_tiny(&src.path().join("tiny-imagenet-200"), 2);
    let files = common::files_under(src.path());
    let entries: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), b.as_slice())).collect();
    let archive = common::zip_of(&entries);
    let server = TestServer::start();
    let url = server.serve("tiny-imagenet-200.zip", Route::Bytes(archive.clone()));
    let s = source("tiny-imagenet-200.zip", url, &archive, true);
    let dir = tempfile::tempdir().unwrap();
    let r = fetch_sources(&[s], dir.path(), &opts(0)).unwrap();
    assert_eq!(r.extracted, vec!["tiny-imagenet-200".to_string()]);
    let d = load_tiny_imagenet(dir.path(), &TinyImageNetOptions { cache: false }).unwrap();
    assert_eq!((d.train.len(), d.test.len(), d.classes), (6, 4, 3));
}

fn assert_refused(dir: &Path, e: DataError) {
    assert!(matches!(e, DataError::Archive { .. }), "{e}");
    assert!(e.to_string().contains("escapes the destination"), "{e}");
    assert!(!dir.parent().unwrap().join("evil.txt").exists());
    // nothing published, no staging left behind
    let left: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(
        left.iter()
            .all(|n| n.to_string_lossy().ends_with(".tar.gz") || n.to_string_lossy().ends_with(".zip")),
        "{left:?}"
    );
}

#[test]
fn tar_path_traversal_is_rejected() {
    for hostile in ["../evil.txt", "ok/../../evil.txt", "/tmp/relief-evil.txt"] {
        let archive = common::tar_gz(&[("good/file.txt", b"fine"), (hostile, b"pwned")]);
        let server = TestServer::start();
        let url = server.serve("x.tar.gz", Route::Bytes(archive.clone()));
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("data");
        let e = fetch_sources(&[source("x.tar.gz", url, &archive, true)], &dir, &opts(0)).unwrap_err();
        assert_refused(&dir, e);
        assert!(!dir.join("good").exists());
    }
}

#[test]
fn zip_path_traversal_is_rejected() {
    let archive = common::zip_of(&[("good.txt", b"fine"), ("../evil.txt", b"pwned")]);
    let server = TestServer::start();
    let url = server.serve("x.zip", Route::Bytes(archive.clone()));
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    let e = fetch_sources(&[source("x.zip", url, &archive, true)], &dir, &opts(0)).unwrap_err();
    assert_refused(&dir, e);
    assert!(!dir.join("good.txt").exists());
}
