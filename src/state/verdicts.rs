//! The verdict database for Exim: each message's verdict in an LMDB file that Exim's own `lmdb`
//! lookup reads, keyed by the original and by the re-queued message id, so a router or ACL can
//! act on it:
//!
//! ```text
//! condition = ${if eq{${extract{action}{${lookup{$message_exim_id}lmdb{/var/spool/spoolsift/verdicts.mdb}}}}}{hold}}
//! ```
//!
//! Exim opens the file with `MDB_NOSUBDIR|MDB_RDONLY` and reads the unnamed database, so that is
//! the layout written here (no named databases: their names would appear as keys). Values are
//! `key=value` pairs, the form Exim's `${extract{key}{...}}` takes apart; the expiry is one of them.
//!
//! Each value is stored with a NUL after it. Exim's lookup copies a value with `string_copyn`,
//! which runs `strlen` over it first, so without a terminator it reads on past the value's end.
//! Where the value is the last thing in the file (LMDB fills a leaf page from its end, and pads a
//! record with a zero only when its length is odd), that read runs off the mapping: the delivery
//! process dies of SIGBUS, at every attempt, and the message never leaves the queue (seen with a
//! real Exim; `tests/exim_e2e.rs` reproduces it). Keys have no terminator: Exim looks up the key's
//! bytes alone.
//!
//! Or an SQLite file (`format = "sqlite"`), for the Exims that have no `lmdb` lookup: Debian's
//! exim4-daemon-heavy (bookworm's does not link LMDB; it has `sqlite`). One table, the same value:
//!
//! ```text
//! ${lookup sqlite{/var/spool/spoolsift/verdicts.sqlite \
//!     select value from verdicts where id='${quote_sqlite:$message_exim_id}'}}
//! ```
//!
//! The file keeps SQLite's default rollback journal, not WAL: a WAL reader needs write access to
//! the `-shm` file, and Exim's delivery processes only read.

use std::path::Path;
use std::sync::Mutex;

use serde::Deserialize;

use super::system_lmdb::SystemLmdb;

/// `[verdicts] format`: which lookup the Exim has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictFormat {
    /// Exim's `lmdb` lookup (an Exim built with LOOKUP_LMDB).
    #[default]
    Lmdb,
    /// Exim's `sqlite` lookup (Debian's exim4-daemon-heavy).
    Sqlite,
}

/// One message's verdict as Exim will see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerdictEntry {
    pub original_id: String,
    pub requeued_id: Option<String>,
    pub action: String,
    pub verdict: String,
    pub expires: u64,
}

impl VerdictEntry {
    /// `action=quarantine verdict="infected (X)" original=… requeued=… expires=…`
    pub fn value(&self) -> String {
        let quoted = self.verdict.replace(['"', '\\'], "'");
        format!(
            "action={} verdict=\"{quoted}\" original={} requeued={} expires={}",
            self.action,
            self.original_id,
            self.requeued_id.as_deref().unwrap_or("none"),
            self.expires
        )
    }
}

/// The verdict file: LMDB written through the system's library (see [`super::system_lmdb`] for
/// why not heed), or SQLite.
pub struct VerdictDb {
    db: Backend,
}

enum Backend {
    Lmdb(SystemLmdb),
    Sqlite(Mutex<rusqlite::Connection>),
}

/// How long a write waits for an Exim process reading the SQLite file.
const SQLITE_BUSY: std::time::Duration = std::time::Duration::from_secs(5);

impl VerdictDb {
    /// Open (creating) the LMDB verdict file at `path` (`path-lock` beside it).
    pub fn open(path: &Path) -> Result<VerdictDb, String> {
        VerdictDb::open_as(path, VerdictFormat::Lmdb)
    }

    /// Open (creating) the verdict file at `path` in `format`.
    pub fn open_as(path: &Path, format: VerdictFormat) -> Result<VerdictDb, String> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            crate::state::journal::require_free_space(parent, crate::state::journal::MIN_FREE_BYTES)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let at = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let db = match format {
            VerdictFormat::Lmdb => Backend::Lmdb(SystemLmdb::open(path, 256 << 20).map_err(|e| at(&e))?),
            VerdictFormat::Sqlite => {
                let c = rusqlite::Connection::open(path).map_err(|e| at(&e))?;
                c.busy_timeout(SQLITE_BUSY).map_err(|e| at(&e))?;
                // Exim's sqlite lookup creates a missing file (as whoever runs it, root for a
                // router): one made before spoolsift's first start is not ours to write.
                if c.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) || !writable(path) {
                    return Err(format!(
                        "{}: not writable by this process (uid {}); an Exim lookup may have created it \
                         before spoolsift did: remove it, or give it to the user spoolsift runs as",
                        path.display(),
                        // SAFETY: getuid(2) cannot fail.
                        unsafe { libc::getuid() }
                    ));
                }
                c.execute_batch(
                    "PRAGMA journal_mode = DELETE;
                     CREATE TABLE IF NOT EXISTS verdicts (
                         id TEXT PRIMARY KEY NOT NULL,
                         value TEXT NOT NULL,
                         expires INTEGER NOT NULL
                     );",
                )
                .map_err(|e| at(&e))?;
                Backend::Sqlite(Mutex::new(c))
            }
        };
        Ok(VerdictDb { db })
    }

    /// Record verdicts, in one transaction, under both ids of each message.
    pub fn record(&self, entries: &[VerdictEntry]) -> Result<(), String> {
        let db = match &self.db {
            Backend::Lmdb(db) => db,
            Backend::Sqlite(c) => return sqlite_record(&mut c.lock().unwrap_or_else(|p| p.into_inner()), entries),
        };
        let values: Vec<String> = entries.iter().map(|e| format!("{}\0", e.value())).collect();
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(entries.len() * 2);
        for (e, v) in entries.iter().zip(&values) {
            pairs.push((e.original_id.as_bytes(), v.as_bytes()));
            if let Some(r) = &e.requeued_id {
                pairs.push((r.as_bytes(), v.as_bytes()));
            }
        }
        db.put_all(&pairs)
    }

    pub fn get(&self, id: &str) -> Result<Option<String>, String> {
        match &self.db {
            Backend::Lmdb(db) => Ok(db.get(id.as_bytes())?.map(|b| text(&b).into_owned())),
            Backend::Sqlite(c) => {
                use rusqlite::OptionalExtension;
                let c = c.lock().unwrap_or_else(|p| p.into_inner());
                c.query_row("SELECT value FROM verdicts WHERE id = ?1", [id], |r| r.get(0))
                    .optional()
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Remove entries whose `expires=` has passed; returns how many.
    pub fn expire(&self, now: u64) -> Result<usize, String> {
        let db = match &self.db {
            Backend::Lmdb(db) => db,
            Backend::Sqlite(c) => {
                let c = c.lock().unwrap_or_else(|p| p.into_inner());
                return c.execute("DELETE FROM verdicts WHERE expires <= ?1", [now as i64]).map_err(|e| e.to_string());
            }
        };
        db.delete_where(|_, v| {
            let text = text(v);
            let exp = text.rsplit_once("expires=").and_then(|(_, e)| e.split_whitespace().next()?.parse::<u64>().ok());
            exp.is_some_and(|e| e <= now)
        })
    }
}

/// Whether this process may write `path` (access(2) with the real ids, which are the daemon's).
fn writable(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

/// Both ids of each entry, in one transaction.
fn sqlite_record(c: &mut rusqlite::Connection, entries: &[VerdictEntry]) -> Result<(), String> {
    let tx = c.transaction().map_err(|e| e.to_string())?;
    {
        let mut put = tx
            .prepare_cached("INSERT OR REPLACE INTO verdicts (id, value, expires) VALUES (?1, ?2, ?3)")
            .map_err(|e| e.to_string())?;
        for e in entries {
            let value = e.value();
            for id in std::iter::once(&e.original_id).chain(e.requeued_id.as_ref()) {
                put.execute(rusqlite::params![id, value, e.expires as i64]).map_err(|e| e.to_string())?;
            }
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

/// A stored value as text, without its terminator (values written before it was added have none).
fn text(stored: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(stored.strip_suffix(b"\0").unwrap_or(stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ids_map_to_the_verdict_and_entries_expire() {
        let dir = tempfile::tempdir().unwrap();
        let db = VerdictDb::open(&dir.path().join("verdicts.mdb")).unwrap();
        let e = VerdictEntry {
            original_id: "1xXOQD-0004A8-22".into(),
            requeued_id: Some("1xXOQE-0004A8-22".into()),
            action: "deliver".into(),
            verdict: "clean".into(),
            expires: 100,
        };
        db.record(std::slice::from_ref(&e)).unwrap();
        let want = "action=deliver verdict=\"clean\" original=1xXOQD-0004A8-22 requeued=1xXOQE-0004A8-22 expires=100";
        assert_eq!(db.get("1xXOQD-0004A8-22").unwrap().as_deref(), Some(want));
        assert_eq!(db.get("1xXOQE-0004A8-22").unwrap().as_deref(), Some(want));
        assert_eq!(db.expire(99).unwrap(), 0);
        assert_eq!(db.expire(100).unwrap(), 2);
        assert_eq!(db.get("1xXOQD-0004A8-22").unwrap(), None);
        assert!(dir.path().join("verdicts.mdb-lock").exists(), "Exim's MDB_NOSUBDIR layout");
    }

    #[test]
    fn the_sqlite_file_holds_the_same_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("verdicts.sqlite");
        let db = VerdictDb::open_as(&path, VerdictFormat::Sqlite).unwrap();
        let e = VerdictEntry {
            original_id: "1xXOQD-0004A8-22".into(),
            requeued_id: Some("1xXOQE-0004A8-22".into()),
            action: "hold".into(),
            verdict: "spam".into(),
            expires: 100,
        };
        db.record(std::slice::from_ref(&e)).unwrap();
        let want = "action=hold verdict=\"spam\" original=1xXOQD-0004A8-22 requeued=1xXOQE-0004A8-22 expires=100";
        assert_eq!(db.get("1xXOQE-0004A8-22").unwrap().as_deref(), Some(want));
        drop(db);
        // Reopened, as after a restart; then expired.
        let db = VerdictDb::open_as(&path, VerdictFormat::Sqlite).unwrap();
        assert_eq!(db.get("1xXOQD-0004A8-22").unwrap().as_deref(), Some(want));
        assert_eq!(db.expire(99).unwrap(), 0);
        assert_eq!(db.expire(100).unwrap(), 2);
        assert_eq!(db.get("1xXOQD-0004A8-22").unwrap(), None);
        assert!(!dir.path().join("verdicts.sqlite-wal").exists(), "no WAL: Exim only reads");
    }
}
