//! `relief`: prune neural networks with NNrelief from the command line (see `relief --help`).

fn main() {
    // Die quietly on a closed pipe (`relief report ... | head`), like other Unix tools, instead of
    // panicking on the next print. Checkpoints are written atomically, so nothing is lost.
    #[cfg(unix)]
    // SAFETY: setting the default disposition of a signal has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // Large CPU activations are reused instead of re-faulted on every pass (see host_memory).
    relief_core::host_memory::retain_freed_memory();
    std::process::exit(relief_cli::cli::main());
}
