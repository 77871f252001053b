//! The overlapped executor behind `spoolsift watch`: intake, scanning and commit on threads of
//! their own, joined by bounded channels, so that batch N+1 is scanned while batch N commits and
//! the intake claims batch N+2.
//!
//! ```text
//! intake (calling thread) ──claimed──▶ 2 scanners (one thread pool) ──scanned──▶ committer
//! ```
//!
//! Each channel holds one batch: a slow committer stops the scanners, which stop the intake, so
//! the backlog stays in the queuefile directory rather than in memory. Two batches are scanned at
//! once, so that one batch's slowest message does not leave the pool and clamd idle; batches are
//! still committed one at a time, in claim order. The two hazards of overlapping are handled in
//! the engine: a claim in flight is not claimed again (`Engine::claim_batch`), and the recipients
//! a scan found owed are checked again against the dedupe store when the batch commits, because a
//! copy of the same message may have been committed in between.

use std::collections::BTreeMap;
use std::io;

use crossbeam_channel::bounded;

use super::engine::{Engine, Handled, ScannedBatch};
use crate::state::ClaimRecord;

/// Batches scanned at once: the second keeps the scan threads and the services busy while the
/// first waits for its slowest message.
const SCANNERS: usize = 2;

/// What the intake does after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Claim,
    /// Claim nothing more: finish the batches in hand and return.
    Drain,
}

impl Engine<'_> {
    /// Run until `next` says [`Next::Drain`], then finish every batch claimed so far.
    ///
    /// `next(engine, claimed)` runs on the calling thread after each claim, with the number of
    /// messages claimed; it is where the caller waits for new work when there was none.
    /// `done(engine, handled)` runs on the committer thread with each batch's results, in order.
    ///
    /// The first error stops the run. Claims not committed then stay in the journal, and the
    /// next start completes or rolls them back like any crash.
    pub fn run_overlapped(
        &self,
        mut next: impl FnMut(&Self, usize) -> Next,
        mut done: impl FnMut(&Self, Vec<Handled>) -> io::Result<()> + Send,
    ) -> io::Result<()> {
        let (claimed_tx, claimed_rx) = bounded::<(u64, Vec<ClaimRecord>)>(1);
        let (scanned_tx, scanned_rx) = bounded::<(u64, ScannedBatch)>(1);
        std::thread::scope(|s| {
            let scanners: Vec<_> = (0..SCANNERS)
                .map(|_| {
                    let (claimed_rx, scanned_tx) = (claimed_rx.clone(), scanned_tx.clone());
                    s.spawn(move || {
                        for (seq, batch) in claimed_rx {
                            if scanned_tx.send((seq, self.scan(batch))).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect();
            // Only the scanners' clones may keep the channels open.
            drop((claimed_rx, scanned_tx));
            let committer = s.spawn(move || -> io::Result<()> {
                // Scans finish out of order; batches are committed in the order they were claimed.
                let mut finished = BTreeMap::new();
                let mut expected = 0u64;
                for (seq, scanned) in scanned_rx {
                    finished.insert(seq, scanned);
                    while let Some(scanned) = finished.remove(&expected) {
                        let handled = self.commit(scanned)?;
                        done(self, handled)?;
                        expected += 1;
                    }
                }
                Ok(())
            });
            let intake = (|| -> io::Result<()> {
                let mut seq = 0u64;
                loop {
                    let batch = self.claim_batch()?;
                    let claimed = batch.len();
                    // A closed channel means the committer stopped: its error is the one to report.
                    if claimed > 0 {
                        if claimed_tx.send((seq, batch)).is_err() {
                            return Ok(());
                        }
                        seq += 1;
                    }
                    if next(self, claimed) == Next::Drain {
                        return Ok(());
                    }
                }
            })();
            drop(claimed_tx);
            for scanner in scanners {
                if let Err(panic) = scanner.join() {
                    std::panic::resume_unwind(panic);
                }
            }
            let committed = committer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            committed.and(intake)
        })
    }
}
