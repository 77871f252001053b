//! The journal and the dedupe store.
//!
//! Every copy taken from the intake gets a claim record, keyed by a sequence number and the
//! message id (the same id can arrive again while an earlier copy is still in flight: queuefile
//! copies a multi-recipient message once per retry). A record moves through
//! `Claimed → Committing → DataWritten → Committed` and is deleted when the message is done; on
//! start every record left over is completed or rolled back (see the engine's recovery).

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use heed::byteorder::BigEndian;
use heed::types::{Bytes, SerdeJson, Str, U64};
use heed::{CommitOrAbort, Database, Env, EnvOpenOptions};
use serde::{Deserialize, Serialize};

/// Where a claimed copy is in its journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClaimState {
    /// Moved into the work directory; not yet written anywhere else.
    Claimed,
    /// About to write into Exim's spool under `target_id` (written before the first byte).
    Committing,
    /// The target `-D` and the `-H` under its temporary name are durably in place; the `-H` is
    /// being renamed. Its temporary file gone means it was renamed (the commit point passed).
    DataWritten,
    /// The target `-H` is in place: Exim owns the message now; only cleanup remains.
    Committed,
}

/// One copy in flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// `<seq>.<id>`: unique per claim, and the stem of its files in the work directory.
    pub key: String,
    pub original_id: String,
    pub state: ClaimState,
    /// Unix seconds when first claimed (defer gives up by this age).
    pub claimed_at: u64,
    /// Delivery attempts deferred so far.
    pub attempts: u32,
    /// Unix seconds before which a deferred copy is not tried again.
    pub not_before: u64,
    /// The id the message is re-queued under.
    pub target_id: Option<String>,
    /// The recipients this copy hands back to Exim, recorded before the first byte is written so
    /// that a crash after the commit point still remembers them (dedupe).
    #[serde(default)]
    pub handing_on: Vec<Vec<u8>>,
    /// Scans of this claim alone, after the daemon had stopped while it was in flight, counted
    /// before each starts (see `src/engine/isolation.rs`); back to 0 once a scan of it finishes.
    #[serde(default)]
    pub lone_scans: u32,
    /// The daemon run (see [`StateDb::next_run`]) that took this claim to scan it; `None` while it
    /// waits (a deferral). A claim still marked with the previous run at a start was in flight
    /// when that run stopped.
    #[serde(default)]
    pub scan_run: Option<u64>,
    /// Scans of this claim that crashed: the daemon stopped during them (counted by the recovery
    /// that finds the claim left in flight) or a stage panicked on it. At `[defer]
    /// processing_attempts` the message is quarantined instead of scanned again.
    #[serde(default)]
    pub crashed_scans: u32,
    /// Left in flight by a stopped daemon and waiting for its lone scan, which has not started: a
    /// stop before it starts is not this message's doing, so recovery does not count it in
    /// `crashed_scans` (a daemon killed over and over while it works through the lone scans
    /// would otherwise quarantine every message waiting for one).
    #[serde(default)]
    pub awaiting_lone_scan: bool,
    /// Held by an admin (`spoolsift queue hold`): not retried until released.
    #[serde(default)]
    pub held: bool,
    /// Why it was last deferred (the policy's reasons), for `spoolsift queue`.
    #[serde(default)]
    pub deferred_because: Option<String>,
    /// A copy for some of the recipients of the claim with this key, whose recipients came to
    /// different outcomes (see `src/engine/commit.rs`, `settle_split`); its key is that key, `+`,
    /// and its number.
    #[serde(default)]
    pub split_from: Option<String>,
}

impl ClaimRecord {
    /// Its scan ended and it waits (deferred, or its target busy): it is in no run's hands, and
    /// owes no lone scans.
    pub fn scan_finished(&mut self) {
        self.scan_run = None;
        self.lone_scans = 0;
        self.awaiting_lone_scan = false;
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A state store operation that failed: what it was doing, on which claim if one, and LMDB's
/// error. It reaches the log whole, so an admin reads "recording the recipients handed on
/// (3.1xXOQD-0004A8-22): MDB_MAP_FULL" rather than LMDB's words alone.
#[derive(Debug, thiserror::Error)]
#[error("state store: {doing}{}: {source}", key.as_deref().map(|k| format!(" ({k})")).unwrap_or_default())]
pub struct StateError {
    pub doing: &'static str,
    /// The claim it was about, when it was about one.
    pub key: Option<String>,
    #[source]
    pub source: heed::Error,
}

/// The engine's file work and its journal writes fail together: a journal error is carried as
/// an I/O error of kind `Other` whose inner error is the [`StateError`] itself.
impl From<StateError> for std::io::Error {
    fn from(e: StateError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

/// Name what a heed call was doing.
trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T, StateError>;
}

impl<T> Doing<T> for heed::Result<T> {
    fn doing(self, doing: &'static str) -> Result<T, StateError> {
        self.map_err(|source| StateError { doing, key: None, source })
    }
}

/// The key of the only record of a one-record write, for the error.
fn only_key(records: &[ClaimRecord]) -> Option<String> {
    match records {
        [one] => Some(one.key.clone()),
        _ => None,
    }
}

/// The databases of an open LMDB environment (see [`open_env`]).
pub struct StateDb<'e> {
    env: &'e Env,
    journal: Database<'e, Str, SerdeJson<ClaimRecord>>,
    /// `<original id>\0<recipient>` → Unix seconds when the entry expires.
    dedupe: Database<'e, Bytes, U64<BigEndian>>,
    meta: Database<'e, Str, U64<BigEndian>>,
}

/// What an LMDB environment needs free on its file system to be opened at all (see
/// [`require_free_space`]).
pub const MIN_FREE_BYTES: u64 = 1 << 20;

/// Refuse to open an LMDB environment in `dir` when its file system has less than `min` bytes
/// free. LMDB maps its lock file (and reads its data file) through `mmap`; on a full file system
/// the first touch of a page that cannot be allocated is a SIGBUS, which kills the process before
/// any error can be returned, at every start. Checked first, it is an error that says why.
pub fn require_free_space(dir: &Path, min: u64) -> std::io::Result<()> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: a zeroed statvfs is a valid value for statvfs(3) to fill; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers for the duration of the call.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    if free < min {
        return Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            format!(
                "only {free} bytes free on the file system of {}; the database needs at least {min}",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Open (creating) the LMDB environment in `dir`. heed refuses a second open of the same
/// environment in one process; another process is kept out by the daemon's lock file.
/// Its errors are reported by the callers, which name the directory.
pub fn open_env(dir: &Path) -> heed::Result<Env> {
    crate::private_files::create_dir(dir)?;
    require_free_space(dir, MIN_FREE_BYTES)?;
    // SAFETY: heed's requirement is that the environment is not opened twice in one process,
    // which it checks itself (EnvAlreadyOpened), and that the files are not modified by other
    // means while open.
    unsafe { EnvOpenOptions::new().map_size(1 << 30).max_dbs(4).open(dir) }
}

fn dedupe_key(original_id: &str, recipient: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(original_id.len() + 1 + recipient.len());
    k.extend_from_slice(original_id.as_bytes());
    k.push(0);
    k.extend_from_slice(recipient);
    k
}

impl<'e> StateDb<'e> {
    /// Open (creating) the journal, dedupe and meta databases.
    pub fn new(env: &'e Env) -> Result<StateDb<'e>, StateError> {
        let run = || -> heed::Result<StateDb<'e>> {
            let wtxn = env.write_txn()?;
            let (journal, dedupe, meta) = env
                .create_databases_and_commit(wtxn, |dbo, wtxn| {
                    let j = dbo.create_database(wtxn, Some("journal"))?;
                    let d = dbo.create_database(wtxn, Some("dedupe"))?;
                    let m = dbo.create_database(wtxn, Some("meta"))?;
                    Ok::<_, heed::Error>(CommitOrAbort::<_, ()>::Commit((j, d, m)))
                })?
                .unwrap_commit();
            Ok(StateDb { env, journal, dedupe, meta })
        };
        run().doing("opening the journal, dedupe and meta databases")
    }

    /// Reserve `n` claim sequence numbers, durably, returning the first.
    pub fn reserve_seq(&self, n: u64) -> Result<u64, StateError> {
        let run = || -> heed::Result<u64> {
            let mut w = self.env.write_txn()?;
            let first = self.meta.get(&w, "seq")?.unwrap_or(0);
            self.meta.put(&mut w, "seq", &(first + n))?;
            w.commit()?;
            Ok(first)
        };
        run().doing("reserving claim numbers")
    }

    /// The number of this daemon run (one more than the last); returns (previous, this).
    pub fn next_run(&self) -> Result<(u64, u64), StateError> {
        let run = || -> heed::Result<(u64, u64)> {
            let mut w = self.env.write_txn()?;
            let prev = self.meta.get(&w, "run")?.unwrap_or(0);
            self.meta.put(&mut w, "run", &(prev + 1))?;
            w.commit()?;
            Ok((prev, prev + 1))
        };
        run().doing("numbering this run")
    }

    /// Count a notice to `to` in the hour of `now` if fewer than `per_hour` went to it in that
    /// hour; whether it may go. Kept beside the journal, so that a restart (or a SIGHUP that
    /// builds a new engine) does not start every address's count again. Earlier hours' counts
    /// are dropped in the same transaction.
    pub fn count_notice(&self, to: &str, now: u64, per_hour: u32) -> Result<bool, StateError> {
        let hour = now / 3600;
        let key = format!("notice/{hour:012}/{}", to.to_ascii_lowercase());
        let run = || -> heed::Result<bool> {
            let mut w = self.env.write_txn()?;
            let this_hour = format!("notice/{hour:012}/");
            let old: Vec<String> = self
                .meta
                .prefix_iter(&w, "notice/")?
                .map(|kv| kv.map(|(k, _)| k.to_string()))
                .collect::<heed::Result<Vec<_>>>()?
                .into_iter()
                .filter(|k| k.as_str() < this_hour.as_str())
                .collect();
            for k in &old {
                self.meta.delete(&mut w, k)?;
            }
            let sent = self.meta.get(&w, &key)?.unwrap_or(0);
            if sent >= u64::from(per_hour) {
                return Ok(false);
            }
            self.meta.put(&mut w, &key, &(sent + 1))?;
            w.commit()?;
            Ok(true)
        };
        run().map_err(|source| StateError { doing: "counting a notice", key: Some(to.to_string()), source })
    }

    /// Write (insert or replace) records in one durable transaction.
    pub fn put(&self, records: &[ClaimRecord]) -> Result<(), StateError> {
        let run = || -> heed::Result<()> {
            let mut w = self.env.write_txn()?;
            for r in records {
                self.journal.put(&mut w, &r.key, r)?;
            }
            w.commit()
        };
        run().map_err(|source| StateError { doing: "writing claim records", key: only_key(records), source })
    }

    /// Write records and remember the recipients each one hands on, atomically.
    pub fn commit_with_dedupe(&self, records: &[ClaimRecord], expires: u64) -> Result<(), StateError> {
        let run = || -> heed::Result<()> {
            let mut w = self.env.write_txn()?;
            for r in records {
                self.journal.put(&mut w, &r.key, r)?;
                for rcpt in &r.handing_on {
                    self.dedupe.put(&mut w, &dedupe_key(&r.original_id, rcpt), &expires)?;
                }
            }
            w.commit()
        };
        run().map_err(|source| StateError {
            doing: "recording the recipients handed on",
            key: only_key(records),
            source,
        })
    }

    /// Delete finished records and, in the same transaction, remember the recipients each
    /// `(original id, recipients)` put into the quarantine as handed on.
    pub fn finish(&self, keys: &[&str], held: &[(String, Vec<Vec<u8>>)], expires: u64) -> Result<(), StateError> {
        let run = || -> heed::Result<()> {
            let mut w = self.env.write_txn()?;
            for k in keys {
                self.journal.delete(&mut w, k)?;
            }
            for (id, rcpts) in held {
                for rcpt in rcpts {
                    self.dedupe.put(&mut w, &dedupe_key(id, rcpt), &expires)?;
                }
            }
            w.commit()
        };
        run().doing("forgetting finished claims")
    }

    /// Replace the records `old` with `new` in one transaction (a claim split into copies).
    pub fn replace(&self, old: &[&str], new: &[ClaimRecord]) -> Result<(), StateError> {
        let run = || -> heed::Result<()> {
            let mut w = self.env.write_txn()?;
            for k in old {
                self.journal.delete(&mut w, k)?;
            }
            for r in new {
                self.journal.put(&mut w, &r.key, r)?;
            }
            w.commit()
        };
        run().map_err(|source| StateError {
            doing: "splitting a claim into copies",
            key: old.first().map(|k| k.to_string()),
            source,
        })
    }

    /// Delete finished records.
    pub fn remove(&self, keys: &[&str]) -> Result<(), StateError> {
        let run = || -> heed::Result<()> {
            let mut w = self.env.write_txn()?;
            for k in keys {
                self.journal.delete(&mut w, k)?;
            }
            w.commit()
        };
        run().doing("forgetting finished claims")
    }

    /// Take up to `max` waiting claims that are due (not held, not in `busy`) for a scan in run
    /// `run`, marking them in the same transaction: a `spoolsift queue hold` either lands before
    /// (and the claim is not taken) or finds it taken.
    pub fn take_due(
        &self,
        now: u64,
        max: usize,
        busy: &std::collections::HashSet<String>,
        run: u64,
    ) -> Result<Vec<ClaimRecord>, StateError> {
        let run = || -> heed::Result<Vec<ClaimRecord>> {
            let mut w = self.env.write_txn()?;
            // A record that does not decode is an error, as in `all`: never silently left behind.
            // Those in flight are ours, written in this run, and are passed over undecoded: the
            // daemon asks at every claim, and under load most of the journal is in flight (up to
            // four batches), all of which every claim decoded before.
            let mut due = Vec::new();
            for kv in self.journal.lazily_decode_data().iter(&w)? {
                if due.len() >= max {
                    break;
                }
                let (key, lazy) = kv?;
                if busy.contains(key) {
                    continue;
                }
                let r = lazy.decode().map_err(heed::Error::Decoding)?;
                if r.state == ClaimState::Claimed && r.not_before <= now && !r.held {
                    due.push(r);
                }
            }
            let mut out = Vec::with_capacity(due.len());
            for mut r in due {
                r.scan_run = Some(run);
                self.journal.put(&mut w, &r.key, &r)?;
                out.push(r);
            }
            w.commit()?;
            Ok(out)
        };
        run().doing("taking the claims that are due")
    }

    /// Change a claim that waits (deferred, in no run's hands) in one transaction; `Ok(None)`
    /// when there is no such claim, `Ok(Some(false))` when it is being scanned now.
    pub fn update_waiting(&self, key: &str, f: impl FnOnce(&mut ClaimRecord)) -> Result<Option<bool>, StateError> {
        let run = || -> heed::Result<Option<bool>> {
            let mut w = self.env.write_txn()?;
            let Some(mut r) = self.journal.get(&w, key)? else { return Ok(None) };
            if r.state != ClaimState::Claimed || r.scan_run.is_some() {
                return Ok(Some(false));
            }
            f(&mut r);
            self.journal.put(&mut w, key, &r)?;
            w.commit()?;
            Ok(Some(true))
        };
        run().map_err(|source| StateError { doing: "changing a waiting claim", key: Some(key.to_string()), source })
    }

    pub fn get(&self, key: &str) -> Result<Option<ClaimRecord>, StateError> {
        let run = || -> heed::Result<Option<ClaimRecord>> {
            let r = self.env.read_txn()?;
            self.journal.get(&r, key)
        };
        run().map_err(|source| StateError { doing: "reading a claim record", key: Some(key.to_string()), source })
    }

    /// Every record, in key order.
    pub fn all(&self) -> Result<Vec<ClaimRecord>, StateError> {
        let run = || -> heed::Result<Vec<ClaimRecord>> {
            let r = self.env.read_txn()?;
            let all = self.journal.iter(&r)?.map(|kv| kv.map(|(_, v)| v)).collect();
            all
        };
        run().doing("reading the claim records")
    }

    /// Recipients of `original_id` already handed back to Exim (and not yet expired).
    pub fn handed_on(&self, original_id: &str, recipient: &[u8], now: u64) -> Result<bool, StateError> {
        let run = || -> heed::Result<bool> {
            let r = self.env.read_txn()?;
            Ok(self.dedupe.get(&r, &dedupe_key(original_id, recipient))?.is_some_and(|exp| exp > now))
        };
        run().map_err(|source| StateError {
            doing: "looking up the recipients handed on",
            key: Some(original_id.to_string()),
            source,
        })
    }

    /// Drop dedupe entries that expired; returns how many.
    pub fn expire_dedupe(&self, now: u64) -> Result<usize, StateError> {
        let run = || -> heed::Result<usize> {
            let mut w = self.env.write_txn()?;
            let stale: Vec<Vec<u8>> = self
                .dedupe
                .iter(&w)?
                .filter_map(|kv| kv.ok())
                .filter(|(_, exp)| *exp <= now)
                .map(|(k, _)| k.to_vec())
                .collect();
            for k in &stale {
                self.dedupe.delete(&mut w, k)?;
            }
            w.commit()?;
            Ok(stale.len())
        };
        run().doing("expiring the recipients handed on")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn rec(key: &str, state: ClaimState) -> ClaimRecord {
        ClaimRecord {
            key: key.into(),
            original_id: "1xXOQD-0004A8-22".into(),
            state,
            claimed_at: 1,
            attempts: 0,
            not_before: 0,
            target_id: None,
            handing_on: Vec::new(),
            lone_scans: 0,
            scan_run: None,
            held: false,
            deferred_because: None,
            split_from: None,
            crashed_scans: 0,
            awaiting_lone_scan: false,
        }
    }

    #[test]
    fn a_state_error_says_what_it_was_doing_and_stays_typed_through_io() {
        let e = StateError {
            doing: "recording the recipients handed on",
            key: Some("3.1xXOQD-0004A8-22".into()),
            source: heed::Error::Mdb(heed::MdbError::MapFull),
        };
        let io: std::io::Error = e.into();
        assert_eq!(
            io.to_string(),
            format!(
                "state store: recording the recipients handed on (3.1xXOQD-0004A8-22): {}",
                heed::Error::Mdb(heed::MdbError::MapFull)
            )
        );
        let inner = io.get_ref().and_then(|e| e.downcast_ref::<StateError>()).expect("still a StateError");
        assert!(matches!(inner.source, heed::Error::Mdb(heed::MdbError::MapFull)));
    }

    #[test]
    fn records_survive_reopen_and_move_through_states() {
        let dir = tempfile::tempdir().unwrap();
        {
            let env = open_env(dir.path()).unwrap();
            let db = StateDb::new(&env).unwrap();
            assert_eq!(db.reserve_seq(10).unwrap(), 0);
            assert_eq!(db.reserve_seq(1).unwrap(), 10);
            db.put(&[rec("a", ClaimState::Claimed), rec("b", ClaimState::Claimed)]).unwrap();
            let mut b = rec("b", ClaimState::Committed);
            b.target_id = Some("1xXOQE-0004A8-22".into());
            b.handing_on = vec![b"bob@x".to_vec()];
            db.commit_with_dedupe(&[b], 100).unwrap();
        }
        let env = open_env(dir.path()).unwrap();
        let db = StateDb::new(&env).unwrap();
        assert_eq!(db.reserve_seq(1).unwrap(), 11);
        let all = db.all().unwrap();
        assert_eq!(
            all.iter().map(|r| (r.key.as_str(), r.state)).collect::<Vec<_>>(),
            [("a", ClaimState::Claimed), ("b", ClaimState::Committed)]
        );
        assert!(db.handed_on("1xXOQD-0004A8-22", b"bob@x", 50).unwrap());
        assert!(!db.handed_on("1xXOQD-0004A8-22", b"carol@x", 50).unwrap());
        assert!(!db.handed_on("1xXOQD-0004A8-22", b"bob@x", 100).unwrap(), "expired");
        assert_eq!(db.expire_dedupe(100).unwrap(), 1);
        db.remove(&["a", "b"]).unwrap();
        assert!(db.all().unwrap().is_empty());
    }

    #[test]
    fn take_due_passes_over_claims_in_flight_and_those_not_due_and_marks_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let env = open_env(dir.path()).unwrap();
        let db = StateDb::new(&env).unwrap();
        let mut later = rec("2", ClaimState::Claimed);
        later.not_before = 101;
        let mut held = rec("3", ClaimState::Claimed);
        held.held = true;
        let records = [
            rec("1", ClaimState::Claimed),
            later,
            held,
            rec("4", ClaimState::Committed),
            rec("5", ClaimState::Claimed),
            rec("6", ClaimState::Claimed),
        ];
        db.put(&records).unwrap();
        // In flight, and not even a record: passed over without being read.
        let mut w = env.write_txn().unwrap();
        db.journal.remap_data_type::<Bytes>().put(&mut w, "0", b"{not json").unwrap();
        w.commit().unwrap();
        let busy: HashSet<String> = ["0", "5"].map(String::from).into();
        let due = db.take_due(100, 1, &busy, 7).unwrap();
        assert_eq!(due.iter().map(|r| (r.key.as_str(), r.scan_run)).collect::<Vec<_>>(), [("1", Some(7))]);
        let due = db.take_due(100, 10, &busy, 8).unwrap();
        assert_eq!(
            due.iter().map(|r| (r.key.as_str(), r.scan_run)).collect::<Vec<_>>(),
            [("1", Some(8)), ("6", Some(8))]
        );
        assert_eq!(db.get("6").unwrap().unwrap().scan_run, Some(8), "marked in the journal too");
        // A record not in flight that does not decode is an error, never left behind unread.
        let e = db.take_due(100, 10, &HashSet::new(), 9).unwrap_err();
        assert!(matches!(e.source, heed::Error::Decoding(_)), "{e}");
    }

    #[test]
    fn notices_per_address_per_hour_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let now = 1_800_000_000;
        {
            let env = open_env(dir.path()).unwrap();
            let db = StateDb::new(&env).unwrap();
            assert!(db.count_notice("Bob@x", now, 2).unwrap());
            assert!(db.count_notice("bob@x", now + 1, 2).unwrap());
        }
        let env = open_env(dir.path()).unwrap();
        let db = StateDb::new(&env).unwrap();
        assert!(!db.count_notice("BOB@X", now + 2, 2).unwrap(), "the count outlived the stop");
        assert!(db.count_notice("carol@x", now + 2, 2).unwrap());
        assert!(db.count_notice("bob@x", now + 3600, 2).unwrap(), "a new hour");
        // The hour before is gone from the store.
        let r = env.read_txn().unwrap();
        let keys: Vec<String> =
            db.meta.prefix_iter(&r, "notice/").unwrap().map(|kv| kv.unwrap().0.to_string()).collect();
        assert_eq!(keys, [format!("notice/{:012}/bob@x", (now + 3600) / 3600)]);
    }
}
