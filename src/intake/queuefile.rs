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
use std::sync::Mutex;
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

/// Where the pairs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntakeKind {
    /// A queuefile transport's directory: flat, copies of messages Exim still owns until their
    /// delivery attempt ends.
    Queuefile,
    /// A stock Exim's own spool (MailScanner's model, for Exims built without queuefile): an
    /// instance with `queue_only` receives, spoolsift takes each message out of its `input/`
    /// (flat or split) under Exim's own lock, and removes its msglog.
    EximSpool { spool: PathBuf },
}

/// The intake directory and, for queuefile, the Exim spool it copies from.
#[derive(Debug)]
pub struct QueuefileDir {
    /// The queuefile directory, or the incoming Exim's `input/`.
    pub dir: PathBuf,
    pub kind: IntakeKind,
    /// Exim's `input/`, to see whether the original's delivery attempt has ended.
    pub spool_input: Option<PathBuf>,
    /// `-D` files with no `-H` older than this are moved aside (a failed copy blocks its id).
    pub orphan_age: Duration,
    /// Copy mode: the size of each `-D` at the previous look. Behind a lock because the engine,
    /// intake included, is shared by its intake, scanner and committer threads.
    sizes: Mutex<HashMap<MessageId, u64>>,
}

impl QueuefileDir {
    pub fn new(dir: &Path, spool_input: Option<&Path>, orphan_age: Duration) -> QueuefileDir {
        QueuefileDir {
            dir: dir.to_path_buf(),
            kind: IntakeKind::Queuefile,
            spool_input: spool_input.map(Path::to_path_buf),
            orphan_age,
            sizes: Mutex::default(),
        }
    }

    /// The `input/` of a stock Exim's spool as the intake.
    pub fn exim_spool(spool: &Path, orphan_age: Duration) -> QueuefileDir {
        QueuefileDir {
            dir: spool.join("input"),
            kind: IntakeKind::EximSpool { spool: spool.to_path_buf() },
            spool_input: None,
            orphan_age,
            sizes: Mutex::default(),
        }
    }

    /// The directories a message of this intake may be in.
    pub fn dirs_for(&self, id: &MessageId) -> Vec<PathBuf> {
        match self.kind {
            IntakeKind::Queuefile => vec![self.dir.clone()],
            IntakeKind::EximSpool { .. } => vec![self.dir.join(id.split_char().to_string()), self.dir.clone()],
        }
    }

    /// Pairs with a `-H` in the intake (and, for an Exim spool, its split subdirectories), oldest
    /// ids first.
    pub fn list(&self) -> io::Result<Vec<SpoolPair>> {
        let mut dirs = vec![self.dir.clone()];
        if matches!(self.kind, IntakeKind::EximSpool { .. }) {
            match std::fs::read_dir(&self.dir) {
                Ok(rd) => {
                    for e in rd.filter_map(|e| e.ok()) {
                        let name = e.file_name();
                        let b = name.as_encoded_bytes();
                        if b.len() == 1 && b[0].is_ascii_alphanumeric() && e.path().is_dir() {
                            dirs.push(e.path());
                        }
                    }
                }
                // Exim creates input/ with the first message.
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
        let mut pairs = Vec::new();
        for d in dirs {
            for e in std::fs::read_dir(&d)?.filter_map(|e| e.ok()) {
                if let Some(id) = MessageId::from_file_name(e.file_name().as_encoded_bytes(), b'H') {
                    pairs.push(SpoolPair::new(&d, id));
                }
            }
        }
        pairs.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(pairs)
    }

    /// After a claim from an Exim spool: the message's msglog goes too, as Exim would remove it.
    pub fn forget(&self, id: &MessageId) -> io::Result<()> {
        if let IntakeKind::EximSpool { spool } = &self.kind {
            let msglog = spool.join("msglog");
            for p in [msglog.join(id.split_char().to_string()).join(id.as_str()), msglog.join(id.as_str())] {
                match std::fs::remove_file(&p) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// Check the completeness rule for one pair and, when it holds, lock its `-D`. The returned
    /// lock must be held until the pair has been moved away. For an Exim spool the lock is Exim's
    /// own: while we hold it, no Exim process delivers the message.
    pub fn check(&self, pair: &SpoolPair) -> io::Result<Result<(Ready, DataLock), NotYet>> {
        let pair = pair.clone();
        let id = &pair.id;
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
        if matches!(self.kind, IntakeKind::EximSpool { .. }) {
            // Exim renames -H into place last and holds the -D lock while receiving.
            return Ok(Ok((Ready { pair, size: meta.len() }, lock)));
        }
        let linked =
            self.spool_input.as_ref().and_then(|i| std::fs::metadata(i).ok()).is_some_and(|m| m.dev() == meta.dev());
        if !linked {
            // Copy mode: nothing on the file says the copy is finished, so wait for one look at
            // which the size did not change.
            let previous = self.sizes.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), meta.len());
            if previous != Some(meta.len()) {
                return Ok(Err(NotYet::Growing));
            }
        }
        self.sizes.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
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
