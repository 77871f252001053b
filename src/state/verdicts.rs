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

use std::path::Path;

use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions};

/// Open (creating) the verdict file at `path` (`path-lock` beside it).
pub fn open_env(path: &Path) -> heed::Result<Env> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // SAFETY: opened once per process (heed checks), and Exim only ever reads it.
    unsafe { EnvOpenOptions::new().map_size(256 << 20).flags(EnvFlags::NO_SUB_DIR).open(path) }
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

pub struct VerdictDb<'e> {
    env: &'e Env,
    db: Database<'e, Bytes, Bytes>,
}

impl<'e> VerdictDb<'e> {
    pub fn new(env: &'e Env) -> heed::Result<VerdictDb<'e>> {
        let wtxn = env.write_txn()?;
        let db = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| {
                Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit(dbo.create_database(wtxn, None)?))
            })?
            .unwrap_commit();
        Ok(VerdictDb { env, db })
    }

    /// Record verdicts, in one transaction, under both ids of each message.
    pub fn record(&self, entries: &[VerdictEntry]) -> heed::Result<()> {
        let mut w = self.env.write_txn()?;
        for e in entries {
            let v = e.value();
            self.db.put(&mut w, e.original_id.as_bytes(), v.as_bytes())?;
            if let Some(r) = &e.requeued_id {
                self.db.put(&mut w, r.as_bytes(), v.as_bytes())?;
            }
        }
        w.commit()
    }

    pub fn get(&self, id: &str) -> heed::Result<Option<String>> {
        let r = self.env.read_txn()?;
        let v = self.db.get(&r, id.as_bytes())?.map(|b| String::from_utf8_lossy(b).into_owned());
        Ok(v)
    }

    /// Remove entries whose `expires=` has passed; returns how many.
    pub fn expire(&self, now: u64) -> heed::Result<usize> {
        let mut w = self.env.write_txn()?;
        let stale: Vec<Vec<u8>> = self
            .db
            .iter(&w)?
            .filter_map(|kv| kv.ok())
            .filter(|(_, v)| {
                let text = String::from_utf8_lossy(v);
                let exp =
                    text.rsplit_once("expires=").and_then(|(_, e)| e.split_whitespace().next()?.parse::<u64>().ok());
                exp.is_some_and(|e| e <= now)
            })
            .map(|(k, _)| k.to_vec())
            .collect();
        for k in &stale {
            self.db.delete(&mut w, k)?;
        }
        w.commit()?;
        Ok(stale.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ids_map_to_the_verdict_and_entries_expire() {
        let dir = tempfile::tempdir().unwrap();
        let env = open_env(&dir.path().join("verdicts.mdb")).unwrap();
        let db = VerdictDb::new(&env).unwrap();
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
}
