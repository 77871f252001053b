//! After the daemon stopped in the middle of a batch (killed, out of memory, a crash in a library
//! on some message), the claims it left are scanned one at a time before anything else, each
//! counting its lone scans in the journal before the scan starts. A message that stops the daemon
//! again is then the only one in its batch, so the messages claimed with it go through at the next
//! start instead of being taken down with it every time. Each such stop counts against the
//! messages whose scans had started (`crashed_scans`, by recovery; not those still waiting for
//! their lone scan), and one that reaches `[defer] processing_attempts` is quarantined unscanned
//! with that reason instead of stopping the daemon for ever.

use std::collections::BTreeSet;
use std::io;
use std::time::Duration;

use super::Engine;
use crate::state::{ClaimRecord, ClaimState};

/// How long a claim for the next lone scan waits for the current one to finish.
const LONE_WAIT: Duration = Duration::from_millis(500);

/// The claims still to be scanned alone, and the one being scanned.
#[derive(Debug, Default)]
pub struct Isolation {
    pending: BTreeSet<String>,
    current: Option<String>,
}

impl Engine<'_> {
    /// Recovery's hand-over: these claims were left by a daemon that stopped.
    pub(super) fn isolate(&self, keys: impl IntoIterator<Item = String>) {
        self.isolation.lock().unwrap_or_else(|p| p.into_inner()).pending.extend(keys);
    }

    /// The next claim to scan alone, as a batch of one; `None` once none is left. While one is
    /// being scanned this waits for it a while (a second one beside it would count the scan that
    /// stopped the daemon against both), then returns an empty batch, so that the executor looks
    /// at its own state (a committer that stopped never takes the claim out of flight).
    pub(super) fn claim_lone(&self) -> io::Result<Option<Vec<ClaimRecord>>> {
        let mut iso = self.isolation.lock().unwrap_or_else(|p| p.into_inner());
        if iso.pending.is_empty() && iso.current.is_none() {
            return Ok(None);
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = iso.current.clone() {
            in_flight = self
                .in_flight_done
                .wait_timeout_while(in_flight, LONE_WAIT, |f| f.contains(&current))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            if in_flight.contains(&current) {
                return Ok(Some(Vec::new()));
            }
            iso.current = None;
        }
        let now = self.clock.now_secs();
        let mut waiting: Vec<ClaimRecord> = self
            .db
            .all()?
            .into_iter()
            .filter(|r| iso.pending.contains(&r.key) && r.state == ClaimState::Claimed && r.not_before <= now)
            .collect();
        // The fewest lone scans first: the messages that were only beside the culprit.
        waiting.sort_by_key(|r| (r.lone_scans, r.key.clone()));
        let Some(mut rec) = waiting.into_iter().next() else {
            iso.pending.clear();
            return Ok(None);
        };
        iso.pending.remove(&rec.key);
        rec.lone_scans += 1;
        rec.awaiting_lone_scan = false;
        // Durable before the scan: a stop during it must be counted.
        self.db.put(std::slice::from_ref(&rec))?;
        in_flight.insert(rec.key.clone());
        iso.current = Some(rec.key.clone());
        Ok(Some(vec![rec]))
    }
}
