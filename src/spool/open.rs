//! Opening spool files: only regular files, without following links and without blocking.
//!
//! A queuefile directory may be writable by other local accounts, and whatever is found there
//! under a spool file name is opened by the daemon. A symbolic link would make it read (and quote
//! in its logs) a file it was never given, a FIFO would block the open or the first read for ever,
//! and a directory or device is nothing Exim writes. So every spool file is opened with
//! `O_NOFOLLOW | O_NONBLOCK`, its type checked on the open descriptor (`fstat`, so that it cannot
//! change between the check and the use), and anything but a regular file refused with what it
//! is, never with its contents.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a non-regular directory entry is, in words.
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device"
    } else {
        "not a regular file"
    }
}

/// The error for an entry that is not a regular file (kind `InvalidInput`, so callers can tell it
/// from a missing file or an I/O failure).
pub fn not_regular(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("not a regular file ({what})"))
}

/// Whether `e` is [`not_regular`]'s error, or an open refused for the same reason by the kernel.
pub fn is_not_regular(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
}

/// Whether an error opening a dropped file is the file's doing (not a regular file, not
/// readable by us, held by a lease), so that the pair is to be moved aside with the error; any
/// other error is the system's, and is reported.
pub fn is_the_files_fault(e: &io::Error) -> bool {
    is_not_regular(e) || matches!(e.kind(), io::ErrorKind::PermissionDenied | io::ErrorKind::WouldBlock)
}

/// Open `path` for reading (and writing, with `write`), refusing anything but a regular file.
pub fn open_regular(path: &Path, write: bool) -> io::Result<File> {
    open_regular_with_metadata(path, write).map(|(file, _)| file)
}

/// [`open_regular`], with the metadata of the open file: the type check already takes it, and
/// the callers that need the size, owner or mode would otherwise ask the kernel again.
pub fn open_regular_with_metadata(path: &Path, write: bool) -> io::Result<(File, Metadata)> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC;
    let file = match OpenOptions::new().read(true).write(write).custom_flags(flags).open(path) {
        Ok(f) => f,
        // The kernel's answers for a link (ELOOP under O_NOFOLLOW), a directory opened for
        // writing (EISDIR) and a socket (ENXIO): say what the entry is instead.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EISDIR | libc::ENXIO)) => {
            let what = std::fs::symlink_metadata(path).map_or("not a regular file", |m| kind_of(m.file_type()));
            return Err(not_regular(what));
        }
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(not_regular(kind_of(meta.file_type())));
    }
    Ok((file, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_are_opened() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        assert!(open_regular(&file, false).is_ok());
        assert!(open_regular(&file, true).is_ok());
        let link = d.path().join("l");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let dir = d.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let fifo = d.path().join("p");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        for (p, what) in [(&link, "a symbolic link"), (&dir, "a directory"), (&fifo, "a FIFO")] {
            for write in [false, true] {
                let e = open_regular(p, write).unwrap_err();
                assert!(is_not_regular(&e), "{}: {e}", p.display());
                assert_eq!(e.to_string(), format!("not a regular file ({what})"), "{} write={write}", p.display());
            }
        }
        assert_eq!(open_regular(&d.path().join("none"), false).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
