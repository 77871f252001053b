//! The Exim spool a message is re-queued into, and how files there must look.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::spool::paths;
use crate::spool::MessageId;

/// Exim's SPOOL_MODE: files readable by the Exim group, so `exim -bp` and deliveries running as the
/// Exim user can read them.
pub const SPOOL_MODE: u32 = 0o640;
/// Exim's INPUT_DIRECTORY_MODE, for a split subdirectory we have to create.
pub const INPUT_DIRECTORY_MODE: u32 = 0o750;

/// Where and how to write re-queued messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpool {
    /// `<spool>/input` (or `<spool>/<queue>/input`).
    pub input: PathBuf,
    /// Whether the target Exim has `split_spool_directory` set.
    pub split: bool,
    /// Owner and group for new files and directories; `None` leaves them to the process.
    pub owner: Option<(u32, u32)>,
    /// Permission bits for new files.
    pub mode: u32,
}

impl TargetSpool {
    /// A target whose owner and group default to those of its `input/` directory (of the spool
    /// directory while Exim has not created `input/` yet), as the files Exim itself writes there
    /// have.
    pub fn new(spool_dir: &Path, queue: Option<&str>) -> io::Result<TargetSpool> {
        let input = paths::input_dir(spool_dir, queue);
        let meta = match std::fs::metadata(&input) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::metadata(spool_dir)?,
            other => other?,
        };
        Ok(TargetSpool { input, split: false, owner: Some((meta.uid(), meta.gid())), mode: SPOOL_MODE })
    }

    pub fn with_split(mut self, split: bool) -> Self {
        self.split = split;
        self
    }

    pub fn with_owner(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The directory this message's files belong in.
    pub fn dir_for(&self, id: &MessageId) -> PathBuf {
        paths::message_dir(&self.input, id, self.split)
    }
}
