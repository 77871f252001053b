//! The overlapped executor behind `spoolsift watch`: intake, scanning and commit on threads of
//! their own, joined by bounded channels, so that batch N+1 is scanned while batch N commits and
//! the intake claims batch N+2.
//!
//! ```text
//! intake (calling thread) ──claimed──▶ 2 scanners (one thread pool) ──scanned──▶ committer
//! ```
//!
//! Each channel holds one batch, and at most `BATCHES_OUT` batches are claimed and not yet
//! committed: a slow committer or a slow batch stops the intake, so the backlog stays in the
//! queuefile directory rather than in memory. Two batches are scanned at
//! once, so that one batch's slowest message does not leave the pool and clamd idle; batches are
//! still committed one at a time, in claim order. The two hazards of overlapping are handled in
//! the engine: a claim in flight is not claimed again (`Engine::claim_batch`), and the recipients
//! a scan found owed are checked again against the dedupe store when the batch commits, because a
//! copy of the same message may have been committed in between.

use std::collections::BTreeMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;

use crossbeam_channel::bounded;

use super::{Engine, Handled, ScannedBatch};
use crate::state::ClaimRecord;

/// Batches scanned at once: the second keeps the scan threads and the services busy while the
/// first waits for its slowest message.
const SCANNERS: usize = 2;

/// Batches claimed and not yet committed, at most: one per scanner, one waiting for a scanner and
/// one being committed. Without a bound, a batch stuck on a slow service would let the others
/// pile up behind it in the commit order, and the whole backlog move into memory.
const BATCHES_OUT: usize = SCANNERS + 2;

/// What the intake does after a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Claim,
    /// Claim nothing more: finish the batches in hand and return.
    Drain,
}

/// Counts the batches out, and tells the intake when the committer has stopped.
#[derive(Default)]
struct Gate {
    /// Batches out; whether the committer has stopped (after an error, a panic or the end).
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for room for one more batch; false once the committer has stopped.
    fn enter(&self) -> bool {
        let guard = self.lock();
        let mut state =
            self.changed.wait_while(guard, |s| s.0 >= BATCHES_OUT && !s.1).unwrap_or_else(|p| p.into_inner());
        if state.1 {
            return false;
        }
        state.0 += 1;
        true
    }

    fn leave(&self) {
        self.lock().0 -= 1;
        self.changed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.lock().1
    }
}

/// Marks the committer stopped when it ends, however it ends, so the intake claims no more.
struct Stopping<'g>(&'g Gate);

impl Drop for Stopping<'_> {
    fn drop(&mut self) {
        self.0.lock().1 = true;
        self.0.changed.notify_all();
    }
}

impl Engine<'_> {
    /// Run until `next` says [`Next::Drain`], then finish every batch claimed so far.
    ///
    /// `next(engine, claimed)` runs on the calling thread after each claim, with the number of
    /// messages claimed; it is where the caller waits for new work when there was none.
    /// `done(engine, handled)` runs on the committer thread with each batch's results, in order.
    ///
    /// The first error stops the run, a panic in a scan included: the intake claims nothing more
    /// once the committer has stopped (at its next claim, so after `next` returns). Claims not
    /// committed stay in the journal, and the next start completes or rolls them back like any
    /// crash.
    pub fn run_overlapped(
        &self,
        mut next: impl FnMut(&Self, usize) -> Next,
        mut done: impl FnMut(&Self, Vec<Handled>) -> io::Result<()> + Send,
    ) -> io::Result<()> {
        let (claimed_tx, claimed_rx) = bounded::<(u64, Vec<ClaimRecord>)>(1);
        let (scanned_tx, scanned_rx) = bounded::<(u64, thread::Result<ScannedBatch>)>(1);
        let gate = Gate::default();
        let gate = &gate;
        thread::scope(|s| {
            let scanners: Vec<_> = (0..SCANNERS)
                .map(|_| {
                    let (claimed_rx, scanned_tx) = (claimed_rx.clone(), scanned_tx.clone());
                    // Named, as the scan pool's threads are, so that `top -H` and a profile show
                    // which part of the engine a thread's CPU went to.
                    thread::Builder::new().name("spoolsift-batch".into()).spawn_scoped(s, move || {
                        for (seq, batch) in claimed_rx {
                            // A panic outside the stages (which catch their own) goes to the
                            // committer, which stops the run, rather than leave a gap in the
                            // commit order that nothing would ever fill.
                            let scanned = catch_unwind(AssertUnwindSafe(|| self.scan(batch)));
                            if scanned_tx.send((seq, scanned)).is_err() {
                                break;
                            }
                        }
                    })
                })
                .collect::<io::Result<Vec<_>>>()?;
            // Only the scanners' clones may keep the channels open.
            drop((claimed_rx, scanned_tx));
            let committer =
                thread::Builder::new().name("spoolsift-commit".into()).spawn_scoped(s, move || -> io::Result<()> {
                    let _stopping = Stopping(gate);
                    // Scans finish out of order; batches are committed in the order they were claimed.
                    let mut finished = BTreeMap::new();
                    let mut expected = 0u64;
                    for (seq, scanned) in scanned_rx {
                        finished.insert(seq, scanned);
                        while let Some(scanned) = finished.remove(&expected) {
                            let scanned = scanned.map_err(|panic| {
                                io::Error::other(format!("a scan panicked: {}", panic_text(&*panic)))
                            })?;
                            let handled = self.commit(scanned)?;
                            gate.leave();
                            done(self, handled)?;
                            expected += 1;
                        }
                    }
                    if !finished.is_empty() {
                        return Err(io::Error::other(format!("{} scanned batches left uncommitted", finished.len())));
                    }
                    Ok(())
                })?;
            let intake = (|| -> io::Result<()> {
                let mut seq = 0u64;
                loop {
                    if !gate.enter() {
                        return Ok(()); // the committer stopped: its error is the one to report
                    }
                    let batch = match self.claim_batch() {
                        Ok(b) => b,
                        Err(e) => {
                            gate.leave();
                            return Err(e);
                        }
                    };
                    let claimed = batch.len();
                    if claimed == 0 {
                        gate.leave();
                    } else {
                        if claimed_tx.send((seq, batch)).is_err() {
                            return Ok(());
                        }
                        seq += 1;
                    }
                    if gate.stopped() || next(self, claimed) == Next::Drain {
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

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}
