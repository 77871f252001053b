//! The `-D` file: its first line names the file, the body follows from a fixed offset.
//!
//! Bodies can be large, so nothing here loads one into memory: counts are taken by streaming and
//! readers use positional reads on the open file.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{Reason, SpoolError};
use super::id::MessageId;

/// What Exim records about a body: `-body_linecount` (LF bytes), `-body_zerocount` (NUL bytes) and
/// `-max_received_linelength`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct BodyCounts {
    pub len: u64,
    pub lines: u64,
    pub nuls: u64,
    /// Longest line in bytes, without its line end.
    pub max_line_len: u64,
    pub ends_with_lf: bool,
}

impl BodyCounts {
    /// Count a body streamed through `r`, 64 KiB at a time.
    pub fn of_reader(mut r: impl Read) -> io::Result<BodyCounts> {
        let mut c = BodyCounts::default();
        let mut current = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = None;
        loop {
            let n = match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            c.len += n as u64;
            for &b in &buf[..n] {
                match b {
                    b'\n' => {
                        c.lines += 1;
                        c.max_line_len = c.max_line_len.max(current);
                        current = 0;
                    }
                    0 => {
                        c.nuls += 1;
                        current += 1;
                    }
                    _ => current += 1,
                }
            }
            last = Some(buf[n - 1]);
        }
        c.max_line_len = c.max_line_len.max(current);
        c.ends_with_lf = last == Some(b'\n');
        Ok(c)
    }

    pub fn of_bytes(b: &[u8]) -> BodyCounts {
        BodyCounts::of_reader(b).unwrap_or_default()
    }
}

/// An open `-D` file whose first line was checked.
#[derive(Debug)]
pub struct DataFile {
    file: File,
    /// As of the open: its size, owner, mode and links.
    meta: Metadata,
    path: PathBuf,
    id: MessageId,
    body_len: u64,
}

impl DataFile {
    /// Open read-only, refusing a symlink as Exim does.
    pub fn open(path: &Path, id: &MessageId) -> Result<DataFile, SpoolError> {
        let (file, meta) =
            super::open::open_regular_with_metadata(path, false).map_err(|e| SpoolError::io(path, &e))?;
        DataFile::from_parts(file, meta, path, id)
    }

    /// Wrap an already open file (e.g. one opened read-write to hold a lock on it).
    pub fn from_file(file: File, path: &Path, id: &MessageId) -> Result<DataFile, SpoolError> {
        let meta = file.metadata().map_err(|e| SpoolError::io(path, &e))?;
        DataFile::from_parts(file, meta, path, id)
    }

    fn from_parts(file: File, meta: Metadata, path: &Path, id: &MessageId) -> Result<DataFile, SpoolError> {
        let expected = format!("{id}-D\n");
        let mut first = vec![0u8; expected.len()];
        let got = read_full_at(&file, &mut first, 0).map_err(|e| SpoolError::io(path, &e))?;
        let size = meta.len();
        if got < first.len() || first != expected.as_bytes() {
            let shown = &first[..got];
            let shown = shown.split(|&b| b == b'\n').next().unwrap_or_default();
            return Err(SpoolError::new(
                1,
                0,
                Reason::FirstLineMismatch {
                    expected: format!("{id}-D"),
                    found: String::from_utf8_lossy(shown).into_owned(),
                },
            )
            .in_file(path));
        }
        Ok(DataFile { file, meta, path: path.to_path_buf(), id: id.clone(), body_len: size - first.len() as u64 })
    }

    pub fn id(&self) -> &MessageId {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The file's metadata as of its open.
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// Where the body starts: the length of the first line.
    pub fn body_offset(&self) -> u64 {
        self.id.first_line_len() as u64
    }

    pub fn body_len(&self) -> u64 {
        self.body_len
    }

    /// Read body bytes at a body-relative offset.
    pub fn read_body_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.body_len {
            return Ok(0);
        }
        let max = usize::try_from(self.body_len - offset).unwrap_or(usize::MAX).min(buf.len());
        self.file.read_at(&mut buf[..max], self.body_offset() + offset)
    }

    /// A streaming reader over the body.
    pub fn body_reader(&self) -> BodyReader<'_> {
        BodyReader { data: self, pos: 0 }
    }

    /// Count the body without loading it.
    pub fn counts(&self) -> Result<BodyCounts, SpoolError> {
        BodyCounts::of_reader(self.body_reader()).map_err(|e| SpoolError::io(&self.path, &e))
    }
}

fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Sequential reader over a `-D` body.
pub struct BodyReader<'a> {
    data: &'a DataFile,
    pos: u64,
}

impl Read for BodyReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read_body_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_match_exims_definitions() {
        let c = BodyCounts::of_bytes(b"Hello Bob.\nThis is line two.\n");
        assert_eq!((c.len, c.lines, c.nuls, c.max_line_len, c.ends_with_lf), (29, 2, 0, 17, true));
        let c = BodyCounts::of_bytes(b"a\0b\nlonger line no lf");
        assert_eq!((c.lines, c.nuls, c.max_line_len, c.ends_with_lf), (1, 1, 17, false));
        assert_eq!(BodyCounts::of_bytes(b""), BodyCounts::default());
    }

    #[test]
    fn first_line_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let id = MessageId::parse(b"1xXOQD-0004A8-22").unwrap();
        let p = dir.path().join("1xXOQD-0004A8-22-D");
        std::fs::write(&p, b"1xXOQD-0004A8-22-D\nbody\n").unwrap();
        let d = DataFile::open(&p, &id).unwrap();
        assert_eq!(d.body_len(), 5);
        let mut s = String::new();
        d.body_reader().read_to_string(&mut s).unwrap();
        assert_eq!(s, "body\n");
        std::fs::write(&p, b"1xXOQD-0004A8-23-D\nbody\n").unwrap();
        let e = DataFile::open(&p, &id).unwrap_err();
        assert!(matches!(e.reason, Reason::FirstLineMismatch { .. }), "{e}");
        std::fs::write(&p, b"1xXOQD-00").unwrap();
        assert!(DataFile::open(&p, &id).is_err());
    }
}
