//! Taking complete pairs out of a queuefile directory.
//!
//! queuefile writes `<id>-H` then `<id>-D` under their final names: hard links when the directory is
//! on the spool's file system, growing copies otherwise, with no completion signal either way. A
//! pair is taken only when it is complete by this rule: both names exist; the original `-D` in
//! Exim's spool is gone or unlocked (the delivery attempt that made the copy has ended); the
//! external `-D` can be locked (in link mode it is the same inode as the original); and in copy mode
//! its size has not changed since the previous look.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::requeue::commit::sync_dir;
use crate::spool::paths::candidate_paths;
use crate::spool::{DataLock, LockProbe, MessageId, SpoolPair};

/// A pair found in the intake directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    pub pair: SpoolPair,
    /// Size of the `-D`, for batching by bytes.
    pub size: u64,
}

/// Why a pair is not taken yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotYet {
    /// Exim's delivery attempt still holds the original (or, in link mode, this very `-D`).
    Locked,
    /// Copy mode: the `-D` is still growing.
    Growing,
    /// One of the two names is missing.
    Incomplete,
}

/// The queuefile directory and the Exim spool it copies from.
#[derive(Debug)]
pub struct QueuefileDir {
    pub dir: PathBuf,
    /// Exim's `input/`, to see whether the original's delivery attempt has ended.
    pub spool_input: Option<PathBuf>,
    /// `-D` files with no `-H` older than this are moved aside (a failed copy blocks its id).
    pub orphan_age: Duration,
    /// Copy mode: the size of each `-D` at the previous look.
    sizes: HashMap<MessageId, u64>,
}

impl QueuefileDir {
    pub fn new(dir: &Path, spool_input: Option<&Path>, orphan_age: Duration) -> QueuefileDir {
        QueuefileDir {
            dir: dir.to_path_buf(),
            spool_input: spool_input.map(Path::to_path_buf),
            orphan_age,
            sizes: HashMap::new(),
        }
    }

    /// Ids with a `-H` in the directory, sorted (the oldest ids first).
    pub fn list(&self) -> io::Result<Vec<MessageId>> {
        let mut ids: Vec<MessageId> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| MessageId::from_file_name(e.file_name().as_encoded_bytes(), b'H'))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Check the completeness rule for one id and, when it holds, lock the external `-D`.
    /// The returned lock must be held until the pair has been moved away.
    pub fn check(&mut self, id: &MessageId) -> io::Result<Result<(Ready, DataLock), NotYet>> {
        let pair = SpoolPair::new(&self.dir, id.clone());
        let lock_len = id.first_line_len() as u64;
        if !pair.header_path().exists() {
            return Ok(Err(NotYet::Incomplete));
        }
        if let Some(input) = &self.spool_input {
            for original in candidate_paths(input, id, 'D') {
                if DataLock::probe(&original, lock_len)? == LockProbe::Locked {
                    return Ok(Err(NotYet::Locked));
                }
            }
        }
        let lock = match DataLock::try_acquire(&pair.data_path(), lock_len) {
            Ok(Some(l)) => l,
            Ok(None) => return Ok(Err(NotYet::Locked)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err(NotYet::Incomplete)),
            Err(e) => return Err(e),
        };
        let meta = lock.file().metadata()?;
        let linked =
            self.spool_input.as_ref().and_then(|i| std::fs::metadata(i).ok()).is_some_and(|m| m.dev() == meta.dev());
        if !linked {
            // Copy mode: nothing on the file says the copy is finished, so wait for one look at
            // which the size did not change.
            let previous = self.sizes.insert(id.clone(), meta.len());
            if previous != Some(meta.len()) {
                return Ok(Err(NotYet::Growing));
            }
        }
        self.sizes.remove(id);
        Ok(Ok((Ready { pair, size: meta.len() }, lock)))
    }

    /// `-D` files without a `-H`, older than `orphan_age` and not locked: leftovers of a failed
    /// copy, which would block that id for ever. They are moved (never deleted) into `aside`.
    pub fn move_orphans(&self, aside: &Path) -> io::Result<Vec<PathBuf>> {
        let now = SystemTime::now();
        let mut moved = Vec::new();
        for e in std::fs::read_dir(&self.dir)? {
            let e = e?;
            let Some(id) = MessageId::from_file_name(e.file_name().as_encoded_bytes(), b'D') else { continue };
            let pair = SpoolPair::new(&self.dir, id.clone());
            if pair.header_path().exists() {
                continue;
            }
            let age = e.metadata()?.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if age < self.orphan_age {
                continue;
            }
            let Some(_lock) = DataLock::try_acquire(&e.path(), id.first_line_len() as u64)? else { continue };
            std::fs::create_dir_all(aside)?;
            let to = aside.join(e.file_name());
            std::fs::rename(e.path(), &to)?;
            std::fs::write(aside.join(format!("{id}.reason")), b"orphan -D without -H (a failed queuefile copy)\n")?;
            moved.push(to);
        }
        if !moved.is_empty() {
            sync_dir(&self.dir)?;
            sync_dir(aside)?;
        }
        Ok(moved)
    }
}
