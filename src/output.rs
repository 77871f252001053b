//! Standard output and standard error, written the way Unix tools write them.
//!
//! Rust ignores SIGPIPE, so a write to a closed pipe (`spoolsift scan DIR | head -1`) returns
//! EPIPE, and `println!` turns that into a panic (exit 101). The default disposition cannot simply
//! be restored at start: the stages write to clamd and dccifd over Unix sockets, where a peer that
//! closes early must be an error of that scan, not the end of the process. So only a write to
//! standard output that fails with EPIPE ends the process, by the signal it would have got.
//! A line that cannot be written to standard error is dropped: a diagnostic that nobody can read
//! must not stop the work it describes (the daemon's log under a restarting journal, say).

use std::fmt;
use std::io::{self, Write};

/// End the process as a write to a closed pipe would have, had SIGPIPE not been ignored.
pub fn broken_pipe() -> ! {
    // SAFETY: resetting a signal's disposition and raising it have no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        libc::raise(libc::SIGPIPE);
    }
    // Not reached when the signal is delivered; 128 + SIGPIPE is what a shell reports for it.
    std::process::exit(128 + libc::SIGPIPE)
}

/// What became of a write to standard output: EPIPE ends the process quietly, other errors are
/// handed back.
pub fn checked(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => broken_pipe(),
        r => r,
    }
}

/// Write to standard output; see the module comment for a closed pipe. Other errors (a full
/// disk behind a redirect) are reported on standard error and the process exits with status 2.
pub fn stdout(args: fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = checked(out.write_fmt(args).and_then(|()| out.flush())) {
        stderr(format_args!("spoolsift: writing to standard output: {e}\n"));
        std::process::exit(2);
    }
}

/// Write the daemon's per-message line to standard output, dropping it if it cannot be written:
/// the daemon goes on delivering mail whatever became of its output.
pub fn log_line(args: fmt::Arguments<'_>) {
    let _ = io::stdout().lock().write_fmt(args);
}

/// Write to standard error, dropping what cannot be written.
pub fn stderr(args: fmt::Arguments<'_>) {
    let _ = io::stderr().lock().write_fmt(args);
}

/// `println!` for the commands' results: see [`stdout`].
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for the commands' results: see [`stdout`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout(format_args!($($arg)*)) };
}

/// `eprintln!` that never panics: see [`stderr`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => { $crate::output::stderr(format_args!("{}\n", format_args!($($arg)*))) };
}
