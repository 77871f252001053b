//! Files and directories of spoolsift's own, with their modes set explicitly: directories 0750,
//! files 0640 (owner and the Exim group), quarantined mail 0600. The mode given to `open` or
//! `mkdir` is narrowed by the umask but never widened, and a service unit's `UMask=` is not there
//! when the daemon is run by hand, so each mode is set with `fchmod`/`chmod` after creation rather
//! than left to whatever umask the process has.

use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Directories: the owner writes, the Exim group reads (docs/exim.md).
pub const DIR_MODE: u32 = 0o750;
/// Files: reasons, verdicts, the work copies.
pub const FILE_MODE: u32 = 0o640;
/// Quarantined mail: nobody but its owner reads malware.
pub const QUARANTINE_MODE: u32 = 0o600;

/// `create_dir_all`, with every directory it makes (and `path` itself) at [`DIR_MODE`].
pub fn create_dir(path: &Path) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            create_dir(parent)?;
        }
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(path) {
        Ok(()) => std::fs::set_permissions(path, Permissions::from_mode(DIR_MODE)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Create (or truncate) `path` with `mode` set explicitly, write `bytes` and sync it.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut f: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)?;
    f.set_permissions(Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Set `path`'s mode (a file moved into place by rename keeps its own).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn modes_do_not_depend_on_the_umask() {
        // SAFETY: umask(2) has no memory-safety preconditions. 077 alone would give 0700/0600
        // (and is harmless to the tests running beside this one).
        let old = unsafe { libc::umask(0o077) };
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        create_dir(&deep).unwrap();
        write_file(&deep.join("f"), b"x", FILE_MODE).unwrap();
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        for p in [d.path().join("a"), d.path().join("a/b"), deep.clone()] {
            assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, DIR_MODE, "{}", p.display());
        }
        assert_eq!(std::fs::metadata(deep.join("f")).unwrap().mode() & 0o7777, FILE_MODE);
        create_dir(&deep).unwrap();
    }
}
