//! File digests (SHA-256, MD5) for verifying downloads.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::error::DataError;

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(2 * bytes.len()), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// SHA-256 and MD5 of a file, lowercase hex, in one pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    /// SHA-256.
    pub sha256: String,
    /// MD5.
    pub md5: String,
}

/// Hashes the file at `path`.
pub fn digests(path: &Path) -> Result<Digests, DataError> {
    let mut f = File::open(path).map_err(|e| DataError::io(path, e))?;
    let (mut sha, mut md5) = (Sha256::new(), Md5::new());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        sha.update(&buf[..n]);
        md5.update(&buf[..n]);
    }
    Ok(Digests { sha256: hex(&sha.finalize()), md5: hex(&md5.finalize()) })
}

/// Checks `path` against the expected digests (each optional; case-insensitive hex).
pub fn verify(path: &Path, sha256: Option<&str>, md5: Option<&str>) -> Result<(), DataError> {
    let d = digests(path)?;
    for (algorithm, expected, actual) in [("sha256", sha256, &d.sha256), ("md5", md5, &d.md5)] {
        if let Some(expected) = expected {
            if !expected.eq_ignore_ascii_case(actual) {
                return Err(DataError::Checksum {
                    path: path.to_path_buf(),
                    algorithm,
                    expected: expected.to_ascii_lowercase(),
                    actual: actual.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests_of_abc() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        let g = digests(&p).unwrap();
        assert_eq!(g.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(g.md5, "900150983cd24fb0d6963f7d28e17f72");
        assert!(verify(&p, Some(&g.sha256.to_uppercase()), Some(&g.md5)).is_ok());
        let e = verify(&p, None, Some("00")).unwrap_err();
        assert!(matches!(e, DataError::Checksum { algorithm: "md5", .. }));
        assert!(e.to_string().contains("expected 00, got 900150983cd24fb0d6963f7d28e17f72"));
        assert!(verify(&d.path().join("nope"), None, None).is_err());
    }
}
