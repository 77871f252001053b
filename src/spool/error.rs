//! Errors of the spool format: every one names the file, the line, the byte offset and the reason,
//! so that an admin can open the file at the right place and see what is wrong.

use std::fmt;
use std::path::PathBuf;

/// Why a spool file was refused. Each variant is one rule of Exim's reader (or one stricter rule of
/// ours, marked so), worded for an admin reading a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Reason {
    #[error("file name is not a spool file name: {0}")]
    BadFileName(String),
    #[error("first line {found:?} does not name this file (expected {expected:?})")]
    FirstLineMismatch { expected: String, found: String },
    #[error("line has no final LF (truncated file)")]
    MissingFinalLf,
    #[error("CR byte in the file (CRLF line endings are a format error for Exim)")]
    CarriageReturn,
    #[error("NUL byte in the file")]
    Nul,
    #[error("line is longer than {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("file is larger than {limit} bytes")]
    FileTooLarge { limit: u64 },
    #[error("owner line must be `login uid gid`")]
    BadOwnerLine,
    #[error("sender line must be `<address>`")]
    BadSenderLine,
    #[error("received-time line must be `seconds warnings`")]
    BadReceivedLine,
    #[error("number {0:?} is not a canonical decimal (Exim writes plain %d)")]
    BadNumber(String),
    #[error("option line: {0}")]
    BadOption(&'static str),
    #[error("ACL variable block: {0}")]
    BadAclVariable(&'static str),
    #[error("non-recipients tree: {0}")]
    BadTree(&'static str),
    #[error("recipient count {0:?} is not a number from 0 to 16384")]
    BadRecipientCount(String),
    #[error("recipient list ends after {found} of {expected} lines (at an empty line or the end of the file)")]
    MissingRecipients { expected: usize, found: usize },
    #[error("recipient line: {0}")]
    BadRecipient(&'static str),
    #[error("expected the blank line that ends the envelope")]
    MissingBlankLine,
    #[error("header: {0}")]
    BadHeader(&'static str),
    #[error("header length {length} runs past the end of the file")]
    HeaderPastEof { length: usize },
    #[error("header text does not end with LF (it would glue onto the next header)")]
    HeaderWithoutLf,
    #[error("body: {0}")]
    BadBody(&'static str),
    #[error("refusing to write: {0}")]
    Unwritable(&'static str),
    /// A link, FIFO, directory... under a spool file's name (the message says which).
    #[error("{0}")]
    NotRegularFile(String),
    #[error("I/O error: {0}")]
    Io(String),
}

/// A spool file that could not be read or written, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolError {
    /// The file, when the error came from one (parsers of in-memory bytes leave it empty).
    pub path: Option<PathBuf>,
    /// 1-based line number; 0 when the error is not about one line.
    pub line: usize,
    /// Byte offset of the start of the offending line (or of the offending byte).
    pub offset: u64,
    pub reason: Reason,
}

impl SpoolError {
    pub fn new(line: usize, offset: u64, reason: Reason) -> Self {
        SpoolError { path: None, line, offset, reason }
    }

    /// An error about the whole file rather than one place in it.
    pub fn whole_file(reason: Reason) -> Self {
        SpoolError::new(0, 0, reason)
    }

    pub fn io(path: impl Into<PathBuf>, err: &std::io::Error) -> Self {
        let reason = if super::open::is_not_regular(err) {
            Reason::NotRegularFile(err.to_string())
        } else {
            Reason::Io(err.to_string())
        };
        SpoolError { path: Some(path.into()), line: 0, offset: 0, reason }
    }

    /// Attach the file the bytes came from.
    pub fn in_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.path = Some(path.into());
        self
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}", p.display())?,
            None => f.write_str("<bytes>")?,
        }
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        write!(f, " (byte {}): {}", self.offset, self.reason)
    }
}

impl std::error::Error for SpoolError {}
