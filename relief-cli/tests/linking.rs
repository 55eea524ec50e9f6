//! The built binary finds libtorch through its rpath and links libtorch_cuda explicitly.

use std::process::Command;

#[test]
fn binary_runs_without_ld_library_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_relief"))
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("relief binary starts");
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("relief "));
}

#[test]
fn binary_declares_libtorch_cuda_when_libtorch_has_it() {
    let out = Command::new("ldd").arg(env!("CARGO_BIN_EXE_relief")).env_remove("LD_LIBRARY_PATH").output();
    let Ok(out) = out else { return }; // no ldd on this system: nothing to check
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("not found"), "unresolved libraries without LD_LIBRARY_PATH:\n{text}");
    let libtorch_has_cuda = text.lines().any(|l| l.contains("libtorch_cpu.so")) && {
        let cpu = text.lines().find(|l| l.contains("libtorch_cpu.so")).unwrap();
        let path = cpu.split("=>").nth(1).unwrap().split_whitespace().next().unwrap();
        std::path::Path::new(path).with_file_name("libtorch_cuda.so").exists()
    };
    if libtorch_has_cuda {
        assert!(text.contains("libtorch_cuda.so"), "libtorch_cuda.so not linked:\n{text}");
    }
}
