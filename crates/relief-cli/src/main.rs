//! `relief`: prune neural networks with NNrelief from the command line (see `relief --help`).

fn main() {
    // Die quietly on a closed pipe (`relief report ... | head`), like other Unix tools, instead of
    // panicking on the next print. Checkpoints are written atomically, so nothing is lost.
    #[cfg(unix)]
    // SAFETY: setting the default disposition of a signal has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(relief_cli::cli::main());
}
