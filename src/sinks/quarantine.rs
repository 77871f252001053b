//! The quarantine store: one directory per message holding its pair, untouched, and a
//! `verdict.json` saying why it is there. `spoolsift quarantine release` re-queues from here.

use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::requeue::commit::sync_dir;
use crate::spool::MessageId;

/// The quarantine directory.
#[derive(Debug, Clone)]
pub struct QuarantineStore {
    pub dir: PathBuf,
}

/// One quarantined message.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The entry's directory name: unique even when one id is quarantined twice.
    pub key: String,
    pub id: MessageId,
    pub dir: PathBuf,
    pub verdict: Value,
}

/// The file in an entry that marks a release begun, holding the id it is re-queued under.
const RELEASING: &str = "releasing";

impl Entry {
    /// Whether a release of this entry has begun, and the id it re-queued (or was re-queuing)
    /// the message under, when it got that far.
    pub fn releasing(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(RELEASING)).ok().map(|s| s.trim().to_string())
    }

    pub fn header_path(&self) -> PathBuf {
        self.dir.join(format!("{}-H", self.id))
    }
    pub fn data_path(&self) -> PathBuf {
        self.dir.join(format!("{}-D", self.id))
    }
}

impl QuarantineStore {
    pub fn new(dir: &Path) -> QuarantineStore {
        QuarantineStore { dir: dir.to_path_buf() }
    }

    /// Move a pair in (rename: same file system, nothing copied) with its verdict. The verdict is
    /// written and synced first, so an entry never exists without its reason.
    pub fn store(&self, key: &str, id: &MessageId, header: &Path, data: &Path, verdict: &Value) -> io::Result<Entry> {
        use crate::private_files::{create_dir, set_mode, write_file, FILE_MODE, QUARANTINE_MODE};
        let dir = self.dir.join(key);
        // Never over a complete entry: its message would be replaced, and lost. (One that stopped
        // before its -H arrived is only a verdict, or a verdict and the -D recovery gave back.)
        if self.get(key)?.is_some() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{}: entry exists", dir.display())));
        }
        create_dir(&dir)?;
        let tmp = dir.join("verdict.json.tmp");
        let mut text = serde_json::to_vec_pretty(verdict).map_err(io::Error::other)?;
        text.push(b'\n');
        write_file(&tmp, &text, FILE_MODE)?;
        std::fs::rename(&tmp, dir.join("verdict.json"))?;
        let entry = Entry { key: key.to_string(), id: id.clone(), dir: dir.clone(), verdict: verdict.clone() };
        // Malware, readable by its owner only; set on the work files before they move in.
        for p in [data, header] {
            set_mode(p, QUARANTINE_MODE)?;
        }
        std::fs::rename(data, entry.data_path())?;
        std::fs::rename(header, entry.header_path())?;
        sync_dir(&dir)?;
        sync_dir(&self.dir)?;
        for p in [header, data] {
            if let Some(parent) = p.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(entry)
    }

    /// Undo a [`store`](Self::store) that a crash stopped before its last step, the `-H`'s
    /// rename: an entry with the message's `-D` but no `-H` gives the `-D` back to `data`, and the
    /// entry (its verdict) goes. The message, whole again where it was, is then handled anew;
    /// left as it was, half of it would be in the quarantine and half, unreadable alone, in the
    /// work directory. Returns whether there was such an entry. A complete entry is left alone.
    pub fn undo_partial(&self, key: &str, id: &MessageId, data: &Path) -> io::Result<bool> {
        let dir = self.dir.join(key);
        let entry = Entry { key: key.to_string(), id: id.clone(), dir: dir.clone(), verdict: Value::Null };
        if !dir.is_dir() || entry.header_path().exists() {
            return Ok(false);
        }
        if entry.data_path().exists() {
            std::fs::rename(entry.data_path(), data)?;
            if let Some(parent) = data.parent() {
                sync_dir(parent)?;
            }
        }
        for name in ["verdict.json", "verdict.json.tmp"] {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        // Not remove_dir_all: anything else in there is not ours to delete.
        std::fs::remove_dir(&dir)?;
        sync_dir(&self.dir)?;
        Ok(true)
    }

    /// Every entry, sorted by key.
    pub fn list(&self) -> io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for e in rd {
            let e = e?;
            if let Some(entry) = self.get(&e.file_name().to_string_lossy())? {
                out.push(entry);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// One entry by key (`None` if there is no such complete entry).
    pub fn get(&self, key: &str) -> io::Result<Option<Entry>> {
        if key.contains('/') || key.starts_with('.') {
            return Ok(None);
        }
        let dir = self.dir.join(key);
        let verdict = match std::fs::read(dir.join("verdict.json")) {
            Ok(b) => serde_json::from_slice(&b).map_err(io::Error::other)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .find_map(|e| MessageId::from_file_name(e.file_name().as_encoded_bytes(), b'H'));
        Ok(id.map(|id| Entry { key: key.to_string(), id, dir, verdict }))
    }

    /// Entries by key, or by the quarantined message's Exim id.
    pub fn find(&self, key_or_id: &str) -> io::Result<Vec<Entry>> {
        if let Some(e) = self.get(key_or_id)? {
            return Ok(vec![e]);
        }
        Ok(self.list()?.into_iter().filter(|e| e.id.as_str() == key_or_id).collect())
    }

    /// Take the entry for a release, once: `None` if a release of it has begun already (then
    /// [`Entry::releasing`] says as what). The claim is a file made with `O_EXCL`, so two
    /// releases at once cannot both go on, and one that stopped half way is not repeated.
    pub fn claim_release(&self, entry: &Entry) -> io::Result<Option<std::fs::File>> {
        let path = entry.dir.join(RELEASING);
        match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(f) => {
                sync_dir(&entry.dir)?;
                Ok(Some(f))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete the entries stored more than `keep` ago (by their verdict's time on disk); returns
    /// them. Nothing when `keep` is zero.
    pub fn expire(&self, keep: std::time::Duration, now: std::time::SystemTime) -> io::Result<Vec<Entry>> {
        let mut gone = Vec::new();
        if keep.is_zero() {
            return Ok(gone);
        }
        for e in self.list()? {
            let stored = std::fs::metadata(e.dir.join("verdict.json")).and_then(|m| m.modified())?;
            if now.duration_since(stored).is_ok_and(|age| age > keep) {
                self.delete(&e)?;
                gone.push(e);
            }
        }
        Ok(gone)
    }

    /// Remove an entry for good.
    pub fn delete(&self, entry: &Entry) -> io::Result<()> {
        std::fs::remove_dir_all(&entry.dir)?;
        sync_dir(&self.dir)
    }
}
