//! The write sequence: `-D`, then `-H` through a temporary name, fsync, rename, directory fsync.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{fchown, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::target::{TargetSpool, INPUT_DIRECTORY_MODE};
use crate::spool::paths::file_name;
use crate::spool::{DataFile, DataLock, MessageId, SpoolHeader, SpoolPair};

/// Why a re-queue did not happen. Nothing is left at a final name when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    /// The header model would not serialise into a file that reads back as itself.
    #[error("{0}")]
    Invalid(#[from] crate::spool::SpoolError),
    /// The target already has a file of this id: the message is queued (or the id is taken).
    #[error("{0} already exists: the message is already queued under this id")]
    AlreadyQueued(PathBuf),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RequeueError {
    let path = path.to_path_buf();
    move |source| RequeueError::Io { op, path, source }
}

/// Where the body of the re-queued message comes from.
pub enum BodyPlan<'a> {
    /// Same id, body unchanged: hard-link the external `-D` (same file system, no copy).
    Link(&'a Path),
    /// Copy the body of an existing `-D` under a new first line (a new id, or another file system).
    Copy(&'a DataFile),
    /// A new body (already counted into the header by `transform::set_body_counts`).
    Bytes(&'a [u8]),
}

/// What a commit put where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub id: MessageId,
    pub header_path: PathBuf,
    pub data_path: PathBuf,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A temporary name that Exim never looks at: not 18 or 25 bytes ending in `-H`, not `hdr.<id>`
/// (Exim's own), and recognisable for cleanup after a crash.
pub fn temp_name(id: &MessageId, what: char) -> String {
    let n = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    format!("rq.{}.{}.{}{}.tmp", std::process::id(), id, what, n)
}

/// Is this a temporary file of ours (left behind by a crash)?
pub fn is_temp_name(name: &[u8]) -> bool {
    name.starts_with(b"rq.") && name.ends_with(b".tmp")
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// rename(2) that fails with EEXIST instead of replacing the target.
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: two valid NUL-terminated paths; AT_FDCWD resolves them like rename(2).
    let rc = unsafe { libc::renameat2(libc::AT_FDCWD, f.as_ptr(), libc::AT_FDCWD, t.as_ptr(), libc::RENAME_NOREPLACE) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS)) {
        // A file system without renameat2 flags: link + unlink gives the same no-replace guarantee.
        std::fs::hard_link(from, to)?;
        return std::fs::remove_file(from);
    }
    Err(err)
}

/// fsync a directory, so that renames and unlinks in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir)?.sync_all() {
        // Some file systems cannot sync directories; Exim ignores EINVAL too.
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    }
}

/// Run `op`, which creates something in `dir`; if it fails because `dir` is missing, create `dir`
/// and run it once more. The directory almost always exists, so it is not looked at first.
fn in_dir<T>(
    target: &TargetSpool,
    dir: &Path,
    mut op: impl FnMut() -> Result<T, RequeueError>,
) -> Result<T, RequeueError> {
    match op() {
        Err(RequeueError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            ensure_dir(target, dir)?;
            op()
        }
        other => other,
    }
}

fn ensure_dir(target: &TargetSpool, dir: &Path) -> Result<(), RequeueError> {
    if dir.is_dir() {
        return Ok(());
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(INPUT_DIRECTORY_MODE))
                .map_err(io_err("chmod", dir))?;
            if let Some((uid, gid)) = target.owner {
                std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io_err("chown", dir))?;
            }
            sync_dir(dir.parent().unwrap_or(dir)).map_err(io_err("fsync", dir))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_err("mkdir", dir)(e)),
    }
}

/// Create a temp file in `dir`, let `fill` write it, fix owner and mode, fsync, and rename it to
/// `final_path` without replacing anything. The temp file is removed on every failure.
fn write_new_file(
    target: &TargetSpool,
    dir: &Path,
    tmp: &str,
    final_path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<(), RequeueError> {
    let tmp_path = dir.join(tmp);
    create_filled(target, &tmp_path, fill)?;
    rename_noreplace(&tmp_path, final_path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp_path);
        if e.kind() == io::ErrorKind::AlreadyExists {
            RequeueError::AlreadyQueued(final_path.to_path_buf())
        } else {
            io_err("rename", final_path)(e)
        }
    })
}

/// Create `path` (which must not exist) with the target's owner and mode, fill it and sync it.
/// On failure nothing is left at `path`.
pub(crate) fn create_filled(
    target: &TargetSpool,
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<File, RequeueError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(target.mode)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("create", path))?;
    let result = (|| {
        // What the new file got is read back from it rather than assumed: the group can come from
        // a set-gid directory, and the mode given to open() can be narrowed by the umask or a
        // default ACL. Each is set only where it differs, which running as the spool's owner
        // with a usual umask makes rare.
        let got = f.metadata().map_err(io_err("fstat", path))?;
        let mut chowned = false;
        if let Some((uid, gid)) = target.owner {
            if (got.uid(), got.gid()) != (uid, gid) {
                fchown(&f, Some(uid), Some(gid)).map_err(io_err("fchown", path))?;
                chowned = true;
            }
        }
        // A chown may clear set-id bits, so after one the mode read before it no longer holds.
        if chowned || got.mode() & 0o7777 != target.mode {
            f.set_permissions(std::fs::Permissions::from_mode(target.mode)).map_err(io_err("fchmod", path))?;
        }
        fill(&mut f).map_err(io_err("write", path))?;
        f.sync_all().map_err(io_err("fsync", path))
    })();
    match result {
        Ok(()) => Ok(f),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// Step 1 of a commit: put the `-D` in place under its final name. Its data is synced; its
/// directory entry becomes durable with the next [`sync_dir`] of `target.dir_for(id)`.
///
/// The id must come from [`super::decide`] (kept: neither file was there) or be newly minted. The
/// `-D` is placed exclusively (a link, or a rename without replace), as Exim creates its own with
/// O_EXCL, and that is what refuses an id that is taken: whoever queues a message puts its `-D`
/// in before its `-H`, so a `-H` cannot have come since without a `-D`. (The one `-H` without a
/// `-D`, Exim's between its two unlinks, is of a message that had both when `decide` looked, which
/// then did not keep the id.) So the `-H` is not looked for here.
pub fn write_data(target: &TargetSpool, id: &MessageId, body: BodyPlan<'_>) -> Result<PathBuf, RequeueError> {
    let dir = target.dir_for(id);
    let data_path = dir.join(file_name(id, 'D'));
    // A link that fails for want of the directory is told from one whose source is missing by
    // the second try, after the directory has been made.
    in_dir(target, &dir, || match &body {
        BodyPlan::Link(external) => std::fs::hard_link(external, &data_path).map_err(|e| {
            if e.kind() == io::ErrorKind::AlreadyExists {
                RequeueError::AlreadyQueued(data_path.clone())
            } else {
                io_err("link", &data_path)(e)
            }
        }),
        BodyPlan::Copy(src) => write_new_file(target, &dir, &temp_name(id, 'D'), &data_path, |f| {
            let mut w = io::BufWriter::with_capacity(256 * 1024, f);
            w.write_all(format!("{id}-D\n").as_bytes())?;
            io::copy(&mut src.body_reader().take(src.body_len()), &mut w)?;
            w.flush()
        }),
        BodyPlan::Bytes(bytes) => write_new_file(target, &dir, &temp_name(id, 'D'), &data_path, |f| {
            f.write_all(format!("{id}-D\n").as_bytes())?;
            f.write_all(bytes)
        }),
    })?;
    Ok(data_path)
}

/// Where [`prepare_header`] puts a message's `-H` before its rename. The name is derived from the
/// id alone, so that recovery can tell a `-H` that was never renamed (this file is still there)
/// from one that was (it is not), whatever process wrote it.
pub fn header_temp_path(target: &TargetSpool, id: &MessageId) -> PathBuf {
    target.dir_for(id).join(format!("rq.{id}.H.tmp"))
}

/// Step 2a: the `-H`, written and synced under [`header_temp_path`], not yet visible to Exim.
pub fn prepare_header(target: &TargetSpool, header: &SpoolHeader) -> Result<PathBuf, RequeueError> {
    let header_bytes = header.to_checked_bytes()?;
    let tmp = header_temp_path(target, &header.id);
    let dir = target.dir_for(&header.id);
    in_dir(target, &dir, || match create_filled(target, &tmp, |f| f.write_all(&header_bytes)) {
        // One left by an earlier, interrupted attempt for this id is ours and stale. It is
        // removed only when found, rather than before every attempt, which is almost never.
        Err(RequeueError::Io { op: "create", source, .. }) if source.kind() == io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
            create_filled(target, &tmp, |f| f.write_all(&header_bytes))
        }
        other => other,
    })?;
    Ok(tmp)
}

/// Step 2b: rename the prepared `-H` into place without replacing anything: the commit point,
/// durable with the next [`sync_dir`] of the directory. While it is renamed we hold an OFD lock
/// on the `-D`, so a queue runner that finds the message in that instant skips it instead of
/// racing us.
pub fn publish_header(target: &TargetSpool, id: &MessageId) -> Result<Committed, RequeueError> {
    let dir = target.dir_for(id);
    let data_path = dir.join(file_name(id, 'D'));
    let header_path = dir.join(file_name(id, 'H'));
    let tmp = header_temp_path(target, id);
    let _lock = DataLock::try_acquire(&data_path, id.first_line_len() as u64).map_err(io_err("lock", &data_path))?;
    rename_noreplace(&tmp, &header_path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            RequeueError::AlreadyQueued(header_path.clone())
        } else {
            io_err("rename", &header_path)(e)
        }
    })?;
    Ok(Committed { id: id.clone(), header_path, data_path })
}

/// Steps 2a and 2b together, for a single message.
pub fn write_header(target: &TargetSpool, header: &SpoolHeader) -> Result<Committed, RequeueError> {
    let tmp = prepare_header(target, header)?;
    publish_header(target, &header.id).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Re-queue one message: `-D`, then `-H`, then the directory sync that makes both durable.
/// `header` is already transformed and carries its final id. On failure nothing is left at a
/// final name.
pub fn commit(target: &TargetSpool, header: &SpoolHeader, body: BodyPlan<'_>) -> Result<Committed, RequeueError> {
    header.validate()?;
    let data_path = write_data(target, &header.id, body)?;
    let published = match write_header(target, header) {
        Ok(c) => c,
        Err(e) => {
            // Without its -H the -D we just placed is an orphan that blocks the id: take it back.
            let _ = std::fs::remove_file(&data_path);
            return Err(e);
        }
    };
    // The -H is in place: Exim may be delivering the message already. A failed sync is an error
    // to report, but the -D stays; taking it back now would leave Exim an -H without its body.
    let dir = target.dir_for(&header.id);
    sync_dir(&dir).map_err(io_err("fsync", &dir))?;
    Ok(published)
}

/// After a commit: remove the external pair (`-H` first, so that a half-removed pair is an orphan
/// `-D`, which is never mistaken for a message), then make the removal durable.
pub fn remove_external_pair(pair: &SpoolPair) -> io::Result<()> {
    for p in [pair.header_path(), pair.data_path()] {
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    sync_dir(&pair.dir)
}
