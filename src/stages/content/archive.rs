//! Looking inside archives: zip, gzip, tar (and tar in gzip), to a depth, each member handed to
//! the scanner's name and type rules as if it were an attachment of its own.
//!
//! Members are read as streams, a chunk at a time: only the first [`HEAD`] bytes of each are
//! kept (enough for its magic numbers and for the test file), and only a member that is itself
//! an archive or a document container, and no larger than [`HELD`], is held whole to be opened
//! in turn. Every byte inflated counts against [`ArchiveLimits`], checked while inflating, so an
//! archive bomb (42.zip: 42 KB that expand to 4.5 PB through five levels of zips) costs at most
//! the limits: the walk stops at the first limit crossed and says which.
//!
//! 7z and rar have no maintained pure-Rust reader that we would trust with hostile input; they
//! are recognised and reported as not opened.

use std::io::{self, Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::filetype;

/// What is kept of each member to tell its type.
pub const HEAD: usize = 64 * 1024;

/// The largest member held whole, to be opened as an archive or a document in turn.
pub const HELD: u64 = 32 * 1024 * 1024;

/// Expansion below this many bytes is never a ratio breach: small files compress well.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// Limits against archive bombs, over the whole of one attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Archive levels opened: 1 opens the attachment, 2 the archives in it...
    pub max_depth: usize,
    /// Members listed, at every level.
    pub max_members: usize,
    /// Bytes inflated, at every level.
    pub max_expanded_bytes: u64,
    /// Inflated bytes per compressed byte of one member (past the first MiB).
    pub max_ratio: u64,
}

/// A limit crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth,
    Members,
    ExpandedBytes,
    Ratio,
}

impl Limit {
    /// The finding's rule.
    pub fn rule(self) -> &'static str {
        match self {
            Limit::Depth => "archive:depth",
            Limit::Members => "archive:members",
            Limit::ExpandedBytes => "archive:expanded-bytes",
            Limit::Ratio => "archive:ratio",
        }
    }
}

/// What the walk reports, in archive order.
#[derive(Debug)]
pub enum Event<'a> {
    /// A member: its path from the attachment (`outer.zip/inner.zip/setup.exe`), its first
    /// bytes, all of it when `whole` (none for a member that cannot be read or is encrypted: its
    /// name is still checked).
    Member { path: &'a str, head: &'a [u8], whole: bool },
    /// A member that is encrypted: nothing of it can be read.
    Encrypted { path: &'a str, format: &'static str },
    /// An archive in a format we do not open, or a member we could not read.
    NotOpened { path: &'a str, why: String },
    /// A limit crossed at `path`; the walk stops.
    Breach { path: &'a str, limit: Limit, found: u64, max: u64 },
}

/// The formats opened, by [`filetype`]'s family names.
pub fn is_archive(family: Option<&str>) -> bool {
    matches!(family, Some("zip" | "gzip" | "tar" | "7z" | "rar"))
}

/// Walk the archive `bytes` (the attachment `name`, of `family`), calling `visit` for each
/// member and problem.
pub fn walk(name: &str, family: &str, bytes: &[u8], limits: &ArchiveLimits, visit: &mut dyn FnMut(Event<'_>)) {
    // The readers are told not to panic, but they parse hostile input; a panic costs the rest
    // of this archive, and the findings so far stand.
    let failed = {
        let mut w = Walker { limits: *limits, members: 0, expanded: 0, stopped: false, visit: &mut *visit };
        catch_unwind(AssertUnwindSafe(|| w.open(name, family, bytes, 1))).is_err()
    };
    if failed {
        visit(Event::NotOpened { path: name, why: "the archive reader failed on it".into() });
    }
}

struct Walker<'v> {
    limits: ArchiveLimits,
    members: usize,
    expanded: u64,
    stopped: bool,
    visit: &'v mut dyn FnMut(Event<'_>),
}

/// A member read: its head, and all of it if it was held.
struct Read_ {
    head: Vec<u8>,
    held: Option<Vec<u8>>,
    size: u64,
}

impl Walker<'_> {
    fn breach(&mut self, path: &str, limit: Limit, found: u64, max: u64) {
        if !self.stopped {
            self.stopped = true;
            (self.visit)(Event::Breach { path, limit, found, max });
        }
    }

    fn open(&mut self, path: &str, family: &str, bytes: &[u8], depth: usize) {
        if depth > self.limits.max_depth {
            self.breach(path, Limit::Depth, depth as u64, self.limits.max_depth as u64);
            return;
        }
        match family {
            "zip" => self.zip(path, bytes, depth),
            "gzip" => self.gzip(path, bytes, depth),
            "tar" => self.tar(path, Cursor::new(bytes), depth),
            other => (self.visit)(Event::NotOpened { path, why: format!("{other} archives are not opened") }),
        }
    }

    fn zip(&mut self, path: &str, bytes: &[u8], depth: usize) {
        let mut zip = match zip::ZipArchive::new(Cursor::new(bytes)) {
            Ok(z) => z,
            Err(e) => return (self.visit)(Event::NotOpened { path, why: format!("not a readable zip: {e}") }),
        };
        for i in 0..zip.len() {
            if self.stopped {
                return;
            }
            let (name, encrypted, dir, compressed) = match zip.by_index_raw(i) {
                Ok(f) => (
                    f.name().map(|n| n.into_owned()).unwrap_or_else(|_| format!("member {i}")),
                    f.encrypted(),
                    f.is_dir(),
                    f.compressed_size(),
                ),
                Err(e) => {
                    (self.visit)(Event::NotOpened { path, why: format!("member {i} not readable: {e}") });
                    continue;
                }
            };
            if dir {
                continue;
            }
            let member = format!("{path}/{name}");
            if !self.count_member(&member) {
                return;
            }
            if encrypted {
                // Its name is in the clear, and its name rules apply: `setup.exe` locked in a zip
                // is still an executable someone was sent.
                (self.visit)(Event::Member { path: &member, head: &[], whole: false });
                (self.visit)(Event::Encrypted { path: &member, format: "zip" });
                continue;
            }
            let read = match zip.by_index(i) {
                Ok(mut f) => self.read_member(&member, &mut f, compressed),
                Err(e) => Err(io::Error::other(e)),
            };
            self.member(&member, read, depth);
        }
    }

    fn gzip(&mut self, path: &str, bytes: &[u8], depth: usize) {
        let mut gz = flate2::read::MultiGzDecoder::new(bytes);
        let inner = path.strip_suffix(".gz").or_else(|| path.strip_suffix(".tgz")).unwrap_or(path);
        let member = format!("{path}/{}", inner.rsplit('/').next().unwrap_or(inner));
        if !self.count_member(&member) {
            return;
        }
        // A tar inside is walked from the stream, never held: its header is in the first block.
        let mut head = [0u8; 512];
        let got = read_full(&mut gz, &mut head).unwrap_or(0);
        let mut rest = Cursor::new(head[..got].to_vec()).chain(gz);
        if got == 512 && filetype::is_tar(&head) {
            let counted = Counted { inner: &mut rest, walker_expanded: self.expanded };
            return self.tar_counted(&member, counted, depth + 1);
        }
        let read = self.read_member(&member, &mut rest, bytes.len() as u64);
        self.member(&member, read, depth);
    }

    fn tar(&mut self, path: &str, stream: impl Read, depth: usize) {
        let counted = Counted { inner: stream, walker_expanded: self.expanded };
        self.tar_counted(path, counted, depth);
    }

    /// A tar from a stream; past `max_expanded_bytes` of it the stream fails, so the tar reader
    /// (which holds a long name whole) never holds more.
    fn tar_counted<R: Read>(&mut self, path: &str, stream: Counted<R>, depth: usize) {
        if depth > self.limits.max_depth {
            return self.breach(path, Limit::Depth, depth as u64, self.limits.max_depth as u64);
        }
        let limit = self.limits.max_expanded_bytes;
        let mut archive = tar::Archive::new(Capped { inner: stream, limit });
        let entries = match archive.entries() {
            Ok(e) => e,
            Err(e) => return (self.visit)(Event::NotOpened { path, why: format!("not a readable tar: {e}") }),
        };
        for entry in entries {
            if self.stopped {
                return;
            }
            let mut entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    // Past the cap, the stream itself says so.
                    if e.to_string().contains(CAPPED) {
                        return self.breach(path, Limit::ExpandedBytes, limit, limit);
                    }
                    return (self.visit)(Event::NotOpened { path, why: format!("tar entry not readable: {e}") });
                }
            };
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let member = format!("{path}/{name}");
            if !self.count_member(&member) {
                return;
            }
            let read = self.read_member(&member, &mut entry, 0);
            self.member(&member, read, depth);
        }
    }

    fn count_member(&mut self, path: &str) -> bool {
        self.members += 1;
        if self.members > self.limits.max_members {
            self.breach(path, Limit::Members, self.members as u64, self.limits.max_members as u64);
            return false;
        }
        true
    }

    /// Read one member as a stream, counting what it inflates to; `compressed` is its size in
    /// the archive (0 where the archive does not compress it alone). All of it is kept only if
    /// its first bytes say it may be opened in turn, and only up to [`HELD`].
    fn read_member(&mut self, path: &str, r: &mut dyn Read, compressed: u64) -> io::Result<Read_> {
        let mut head = Vec::new();
        let mut all: Option<Vec<u8>> = Some(Vec::new());
        let mut decided = false;
        let mut size: u64 = 0;
        let mut complete = true;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match r.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            size += n as u64;
            self.expanded += n as u64;
            if self.expanded > self.limits.max_expanded_bytes {
                self.breach(path, Limit::ExpandedBytes, self.expanded, self.limits.max_expanded_bytes);
                complete = false;
                break;
            }
            if compressed > 0 && size > RATIO_FLOOR && size / compressed > self.limits.max_ratio {
                self.breach(path, Limit::Ratio, size / compressed, self.limits.max_ratio);
                complete = false;
                break;
            }
            let data = &chunk[..n];
            if head.len() < HEAD {
                head.extend_from_slice(&data[..n.min(HEAD - head.len())]);
            }
            if let Some(a) = all.as_mut() {
                a.extend_from_slice(data);
                // A tar's magic is at byte 257: decide once there are 512.
                if !decided && a.len() >= 512 {
                    decided = true;
                    if !worth_holding(&head) {
                        all = None;
                    }
                }
                if all.as_ref().is_some_and(|a| a.len() as u64 > HELD) {
                    all = None;
                }
            }
        }
        if !complete || (!decided && !worth_holding(&head)) {
            all = None;
        }
        Ok(Read_ { head, held: all, size })
    }

    fn member(&mut self, path: &str, read: io::Result<Read_>, depth: usize) {
        let read = match read {
            Ok(r) => r,
            Err(e) => {
                // A member we cannot read (a compression we do not inflate, a broken stream)
                // still has a name, and the name rules still apply to it.
                (self.visit)(Event::Member { path, head: &[], whole: false });
                return (self.visit)(Event::NotOpened { path, why: format!("not readable: {e}") });
            }
        };
        if self.stopped {
            return;
        }
        let whole = read.held.as_deref();
        let bytes = whole.unwrap_or(&read.head);
        (self.visit)(Event::Member { path, head: bytes, whole: whole.is_some() || read.size <= HEAD as u64 });
        let family = filetype::sniff(&read.head, false, false).family;
        if let (Some(all), Some(f)) = (whole, family.filter(|f| is_archive(Some(f)))) {
            if f != "zip" || !filetype::is_document_zip(all) {
                self.open(path, f, all, depth + 1);
            }
        }
    }
}

const CAPPED: &str = "archive expands past its limit";

/// Whether a member whose first bytes are `head` may be opened in turn: an archive, or a
/// container the type checks open (OLE2, a zip that is a document).
fn worth_holding(head: &[u8]) -> bool {
    let family = filetype::sniff(head, false, false).family;
    is_archive(family) || family == Some("ole2")
}

/// A reader counting the bytes it passes, from where the walk's count stood.
struct Counted<R> {
    inner: R,
    walker_expanded: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.walker_expanded += n as u64;
        Ok(n)
    }
}

/// A reader that fails once `limit` bytes have passed: whatever reads it (the tar reader, which
/// holds long names whole) holds no more than that.
struct Capped<R> {
    inner: Counted<R>,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.inner.walker_expanded > self.limit {
            return Err(io::Error::other(CAPPED));
        }
        self.inner.read(buf)
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
