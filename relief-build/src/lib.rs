//! Build-script helper shared by every relief crate that produces binaries, tests or benches.
//!
//! Two tch pitfalls are handled in one place:
//! - `tch::Cuda::is_available()` silently returns `false` unless the final binary has a
//!   `DT_NEEDED` entry for `libtorch_cuda` (nothing references its symbols directly, so the
//!   default `--as-needed` link drops it). We pass `-Wl,--no-as-needed -ltorch_cuda` whenever the
//!   libtorch in use ships that library.
//! - Binaries should find libtorch without `LD_LIBRARY_PATH`: we embed an rpath to its `lib/`.
//!
//! Call [`link_libtorch`] from a crate's `build.rs`. Cargo applies `rustc-link-arg` to every
//! binary, test, bench and example of that crate.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where libtorch's shared libraries live, resolved the same way `torch-sys` resolves them:
/// `LIBTORCH_LIB`, then `LIBTORCH_USE_PYTORCH` (ask Python's `torch`), then `LIBTORCH`.
pub fn libtorch_lib_dir() -> Option<PathBuf> {
    for var in ["LIBTORCH_LIB", "LIBTORCH_USE_PYTORCH", "LIBTORCH", "PYTHON_SYS_EXECUTABLE"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Ok(lib) = env::var("LIBTORCH_LIB") {
        return Some(PathBuf::from(lib).join("lib"));
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
        let out = Command::new(python)
            .args(["-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))"])
            .output()
            .ok()?;
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        return (!path.is_empty()).then(|| PathBuf::from(path));
    }
    env::var("LIBTORCH").ok().map(|p| PathBuf::from(p).join("lib"))
}

/// Emits the link arguments described in the crate docs. Safe to call when libtorch cannot be
/// located (then `torch-sys` itself fails with its own message).
pub fn link_libtorch() {
    let Some(dir) = libtorch_lib_dir() else {
        println!("cargo:warning=relief-build: libtorch not located; no rpath embedded");
        return;
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    if has_cuda(&dir) {
        println!("cargo:rustc-link-search=native={}", dir.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

fn has_cuda(dir: &Path) -> bool {
    dir.join("libtorch_cuda.so").exists()
}

/// libtorch's C++ headers (`include/` beside its `lib/`), when libtorch can be located.
pub fn libtorch_include_dir() -> Option<PathBuf> {
    let lib = libtorch_lib_dir()?;
    let lib = lib.canonicalize().unwrap_or(lib);
    lib.parent().map(|p| p.join("include")).filter(|p| p.join("ATen").is_dir())
}

/// Compiles the C++ files `sources` (relative to the calling crate) against libtorch's headers
/// into the static library `name` and links it into the crate, for the few libtorch facilities
/// that tch does not expose. Panics with a clear message when libtorch's headers are missing.
pub fn compile_libtorch_shim(sources: &[&str], name: &str) {
    for source in sources {
        println!("cargo:rerun-if-changed={source}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = libtorch_include_dir().unwrap_or_else(|| {
        panic!(
            "relief-build: libtorch's headers (include/ATen) not found; run scripts/setup.sh or set LIBTORCH"
        )
    });
    // The PyPI torch wheels of 2.x are built with the C++11 ABI, as torch-sys assumes by default.
    let abi = env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .files(sources)
        .include(&include)
        .flag("-std=c++17")
        // at::parallel_for is header code: without OpenMP enabled here it would run serially.
        // The runtime it calls is libgomp, the one libtorch itself loads (torch-sys links it).
        .flag("-fopenmp")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile(name);
}
