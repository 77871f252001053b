//! Locks that Exim sees.
//!
//! Exim locks the first line of `-D` with `fcntl(F_SETLK)`. `flock()` does not interact with that
//! lock on Linux, and classic POSIX record locks vanish when the process closes *any* descriptor
//! of the file, so we use open file description (OFD) locks: they conflict with Exim's, and they
//! live exactly as long as the `File` that holds them.

use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use super::open::{open_regular, open_regular_with_metadata};

/// Try a non-blocking OFD lock on `[0, len)`. `Ok(false)` means someone else holds a conflicting
/// lock.
pub fn try_lock_range(file: &File, write: bool, len: u64) -> io::Result<bool> {
    // SAFETY: a zeroed flock is a valid value; F_OFD_SETLK reads it and writes nothing back.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = if write { libc::F_WRLCK } else { libc::F_RDLCK } as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = 0;
    fl.l_len = len as libc::off_t;
    fl.l_pid = 0;
    // SAFETY: valid fd, valid pointer to an initialised flock for the duration of the call.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// A held lock on the first line of a `-D` file; released when dropped (the file is closed).
#[derive(Debug)]
pub struct DataLock {
    file: File,
    /// Of the open file, as taken when it was opened (its size then, its owner and mode).
    meta: Metadata,
}

/// What a probe of a `-D` file found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockProbe {
    Absent,
    /// Someone (normally an Exim delivery process) holds the lock.
    Locked,
    Unlocked,
}

impl DataLock {
    /// Open `path` and lock `[0, first_line_len)` without waiting. Opens read-write for a write
    /// lock; where that is not permitted, read-only with a read lock, which conflicts with Exim's
    /// write lock just the same. `Ok(None)`: the file is locked by someone else.
    /// Only a regular file is opened (see [`super::open`]): anything else is an `InvalidInput`
    /// error.
    pub fn try_acquire(path: &Path, first_line_len: u64) -> io::Result<Option<DataLock>> {
        let ((file, meta), write) = match open_regular_with_metadata(path, true) {
            Ok(f) => (f, true),
            // Not ours to write, or someone holds a lease that a writer would break (EWOULDBLOCK
            // under O_NONBLOCK): a read lock conflicts with Exim's write lock just the same.
            Err(e) if matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::WouldBlock) => {
                (open_regular_with_metadata(path, false)?, false)
            }
            Err(e) => return Err(e),
        };
        Ok(try_lock_range(&file, write, first_line_len)?.then_some(DataLock { file, meta }))
    }

    /// Is the file there, and is it locked? The probe's own lock is released before returning.
    pub fn probe(path: &Path, first_line_len: u64) -> io::Result<LockProbe> {
        match DataLock::try_acquire(path, first_line_len) {
            Ok(Some(_)) => Ok(LockProbe::Unlocked),
            Ok(None) => Ok(LockProbe::Locked),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LockProbe::Absent),
            Err(e) => Err(e),
        }
    }

    /// Is the file there, and is it locked? Unlike [`DataLock::probe`] this takes no lock at all
    /// (`F_OFD_GETLK`), not even for a moment, so it cannot make an Exim process that tries to
    /// lock the file at that instant skip the message: for copying from a live queue.
    pub fn peek(path: &Path, first_line_len: u64) -> io::Result<LockProbe> {
        let file = match open_regular(path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LockProbe::Absent),
            Err(e) => return Err(e),
        };
        // SAFETY: a zeroed flock is a valid value; F_OFD_GETLK reads it and writes the result back.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        fl.l_len = first_line_len as libc::off_t;
        // SAFETY: valid fd, valid pointer to an initialised flock for the duration of the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(if fl.l_type == libc::F_UNLCK as libc::c_short { LockProbe::Unlocked } else { LockProbe::Locked })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's metadata as of the open that took the lock.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    pub fn into_file(self) -> File {
        self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_ofd_lock_conflicts_and_drop_releases() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-D");
        std::fs::write(&p, b"0123456789\n").unwrap();
        let held = DataLock::try_acquire(&p, 11).unwrap().expect("first lock");
        assert!(DataLock::try_acquire(&p, 11).unwrap().is_none());
        assert_eq!(DataLock::probe(&p, 11).unwrap(), LockProbe::Locked);
        assert_eq!(DataLock::peek(&p, 11).unwrap(), LockProbe::Locked);
        drop(held);
        assert_eq!(DataLock::probe(&p, 11).unwrap(), LockProbe::Unlocked);
        assert_eq!(DataLock::peek(&p, 11).unwrap(), LockProbe::Unlocked);
        assert_eq!(DataLock::peek(&dir.path().join("nope"), 11).unwrap(), LockProbe::Absent);
        assert_eq!(DataLock::probe(&dir.path().join("nope"), 11).unwrap(), LockProbe::Absent);
    }
}
