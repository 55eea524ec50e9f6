//! The panic hook writes the panic and a backtrace to the run log (and tells the user where the
//! log is; that part goes to stderr).

#[test]
fn a_panic_is_logged_with_a_backtrace() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("relief.log");
    relief_experiment::logging::init_file_log(&log).unwrap();
    relief_experiment::logging::install_panic_hook(log.clone(), dir.path().to_path_buf());
    let caught = std::panic::catch_unwind(|| panic!("deliberate test panic"));
    assert!(caught.is_err());
    let _ = std::panic::take_hook();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("panic") && text.contains("deliberate test panic"), "{text}");
    assert!(text.contains("a_panic_is_logged_with_a_backtrace"), "backtrace missing:\n{text}");
}
