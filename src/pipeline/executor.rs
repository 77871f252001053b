//! The overlapped executor behind `spoolsift watch`: intake, scanning and commit on three threads
//! joined by bounded channels, so that batch N+1 is scanned while batch N commits and the intake
//! claims batch N+2.
//!
//! ```text
//! intake (calling thread) ──claimed──▶ scanner (rayon pool) ──scanned──▶ committer
//! ```
//!
//! Each channel holds one batch: a slow committer stops the scanner, which stops the intake, so
//! the backlog stays in the queuefile directory rather than in memory. Batches are committed one
//! at a time, in claim order. The two hazards of overlapping are handled in the engine: a claim
//! in flight is not claimed again (`Engine::claim_batch`), and the recipients a scan found owed
//! are checked again against the dedupe store when the batch commits, because a copy of the same
//! message may have been committed in between.

use std::io;

use crossbeam_channel::bounded;

use super::engine::{Engine, Handled, ScannedBatch};
use crate::state::ClaimRecord;

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
        let (claimed_tx, claimed_rx) = bounded::<Vec<ClaimRecord>>(1);
        let (scanned_tx, scanned_rx) = bounded::<ScannedBatch>(1);
        std::thread::scope(|s| {
            let scanner = s.spawn(move || {
                for batch in claimed_rx {
                    if scanned_tx.send(self.scan(batch)).is_err() {
                        break;
                    }
                }
            });
            let committer = s.spawn(move || -> io::Result<()> {
                for scanned in scanned_rx {
                    let handled = self.commit(scanned)?;
                    done(self, handled)?;
                }
                Ok(())
            });
            let intake = (|| -> io::Result<()> {
                loop {
                    let batch = self.claim_batch()?;
                    let claimed = batch.len();
                    // A closed channel means the committer stopped: its error is the one to report.
                    if claimed > 0 && claimed_tx.send(batch).is_err() {
                        return Ok(());
                    }
                    if next(self, claimed) == Next::Drain {
                        return Ok(());
                    }
                }
            })();
            drop(claimed_tx);
            if let Err(panic) = scanner.join() {
                std::panic::resume_unwind(panic);
            }
            let committed = committer.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            committed.and(intake)
        })
    }
}
