//! The commit half of the engine: a scanned batch is journaled, re-queued with group commit,
//! quarantined, discarded or deferred, and cleaned up.
//!
//! It runs in two halves. First each message is settled on its own ([`Engine::settle`]): what
//! is owed is looked at again, a quarantine entry is made, a pair moved aside or removed, a
//! deferral noted, or a copy prepared for the spool. Then the copies for the spool go through
//! the durability sequence together ([`Engine::requeue_durably`]), each journal write one LMDB
//! transaction for the whole batch (step 1 is `Engine::claim_batch`):
//! 1. journal `Claimed`, then rename the pair into `work/` (same file system);
//! 2. journal `Committing(target id)`, write every target `-D` and every `-H` under its temporary
//!    name (`requeue::header_temp_path`), sync their directories;
//! 3. journal `DataWritten`, rename every `-H` into place (the commit point), sync directories;
//! 4. journal `Committed` with the recipients handed on (dedupe), remove the work files, forget.
//!
//! [`super::recovery`] completes or rolls back whatever a crash left between those steps, so a
//! message is neither lost nor delivered twice.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::Path;

use super::{text, verdict_of, Engine, Handled, Outcome, Plan, ScannedBatch};
use crate::pipeline::Action;
use crate::requeue::{self, BodyPlan, IdDecision, SpoolLook};
use crate::sinks::notify;
use crate::spool::{DataFile, MessageId, SpoolHeader};
use crate::state::verdicts::VerdictEntry;
use crate::state::{ClaimRecord, ClaimState};

/// Envelope recipients, as the spool holds them.
type Recipients = Vec<Vec<u8>>;

/// A copy on its way into Exim's spool: its journal record (which names the target id and the
/// recipients it hands on), the `-H` it will have there, and what is said of it.
struct Requeuing {
    rec: ClaimRecord,
    header: SpoolHeader,
    handled: Handled,
}

/// A copy whose `-H` is in place under `id`: Exim owns it now.
struct Published {
    rec: ClaimRecord,
    id: MessageId,
    handled: Handled,
}

/// What the settling of a batch's messages leaves for the rest of its commit.
#[derive(Default)]
struct Settled {
    /// Claims that are finished: forgotten by the batch's last journal write.
    done: Vec<String>,
    /// Recipients held by the quarantine entries made, remembered as handed on in that write.
    quarantined: Vec<(String, Recipients)>,
    /// Claims that wait (deferred, or their target id busy), written before the re-queue.
    waiting: Vec<ClaimRecord>,
    /// Copies for Exim's spool.
    requeuing: Vec<Requeuing>,
    handled: Vec<Handled>,
    /// Recipients each original message hands on in this batch: two copies of one message
    /// (queuefile's per-recipient retries) must not both deliver the same recipient.
    taken: HashMap<String, BTreeSet<Vec<u8>>>,
}

impl Settled {
    /// `key` is finished, as `handled` says.
    fn finish(&mut self, key: String, handled: Handled) {
        self.done.push(key);
        self.handled.push(handled);
    }
}

impl Engine<'_> {
    /// Act on a scanned batch: journal, re-queue with group commit, quarantine, defer, clean up.
    /// Batches must be committed one at a time, in the order they were claimed.
    pub fn commit(&self, scanned: ScannedBatch) -> io::Result<Vec<Handled>> {
        let keys: Vec<String> = scanned.claims.iter().map(|r| r.key.clone()).collect();
        let handled = self.commit_plans(scanned.claims, scanned.plans)?;
        // Only after the batch's last journal write (see `claim_batch`).
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter().for_each(|k| {
            in_flight.remove(k);
        });
        drop(in_flight);
        self.in_flight_done.notify_all();
        Ok(handled)
    }

    fn commit_plans(&self, batch: Vec<ClaimRecord>, plans: Vec<Plan>) -> io::Result<Vec<Handled>> {
        let now = self.clock.now_secs();
        let mut settled = Settled::default();
        let mut spool = SpoolLook::for_batch(&self.target);
        for (rec, plan) in batch.into_iter().zip(plans) {
            self.settle(&mut settled, &mut spool, rec, plan, now)?;
        }
        let Settled { mut done, quarantined, mut waiting, requeuing, mut handled, taken: _ } = settled;

        waiting.extend(requeuing.iter().map(|c| c.rec.clone()));
        self.db.put(&waiting)?;
        // Before the commit point, so that Exim never delivers a re-queued message whose verdict
        // it cannot look up. A commit that rolls back is processed again and recorded again.
        self.record_verdicts(requeuing.iter().map(|c| &c.handled), now);
        let published = self.requeue_durably(requeuing, now)?;

        // Step 4: cleanup.
        let mut kick = Vec::new();
        for Published { rec, id, handled: h } in published {
            let (hp, dp) = self.dirs.files(&rec.key);
            remove_pair(&hp, &dp)?;
            done.push(rec.key);
            kick.push(id);
            handled.push(h);
        }
        requeue::sync_dir(&self.dirs.work)?;
        // The re-queued ones were recorded before their commit point; these are the rest.
        self.record_verdicts(handled.iter().filter(|h| h.target_id.is_none()), now);
        let keys: Vec<&str> = done.iter().map(String::as_str).collect();
        self.db.finish(&keys, &quarantined, now + self.retention_secs)?;
        // Their outcomes are durable now (see `sinks::notify` for why after, not before).
        for h in &mut handled {
            kick.extend(self.send_notices(h, now));
        }
        if let Some(k) = &self.kicks {
            if let Err(e) = k.request(&kick) {
                // Nothing is lost: the messages stay queued for Exim's next queue run.
                tracing::error!("asking for the delivery of {} messages: {e}", kick.len());
            }
        }
        Ok(handled)
    }

    /// Settle one message of the batch by its plan: everything but the re-queue's durable steps,
    /// which the batch's copies take together.
    fn settle(
        &self,
        b: &mut Settled,
        spool: &mut SpoolLook<'_>,
        mut rec: ClaimRecord,
        plan: Plan,
        now: u64,
    ) -> io::Result<()> {
        let (hp, dp) = self.dirs.files(&rec.key);
        match plan {
            Plan::Rejected { error } => {
                self.reject(&rec, &error)?;
                let handled = Handled {
                    original_id: rec.original_id.clone(),
                    action: Outcome::Rejected,
                    reasons: vec![error],
                    ..Handled::default()
                };
                b.finish(rec.key, handled);
            }
            Plan::NothingOwed { handled } | Plan::Discard { handled } => {
                remove_pair(&hp, &dp)?;
                b.finish(rec.key, handled);
            }
            Plan::Quarantine { header, owed, mut handled, mut verdict } => {
                // One entry per message: queuefile hands over a copy per recipient attempt, each
                // with the recipients still pending, and releasing one entry per copy delivered
                // the same recipients again. The recipients an entry holds count as handed on (as
                // a re-queue's do), so a later copy owes only the others.
                let Some((_, still_owed)) = self.still_owed(b, &rec, owed, now)? else {
                    return self.owes_nothing(b, rec, handled);
                };
                // As it will be released: every pending recipient it does not hold is done, those
                // handed on before this scan as well as those found now.
                let done: Vec<Vec<u8>> = header
                    .pending_recipients()
                    .map(|(_, r)| r.address().to_vec())
                    .filter(|r| !still_owed.contains(r))
                    .collect();
                if !done.is_empty() {
                    let mut header = *header;
                    for r in &done {
                        header.non_recipients.insert(r);
                    }
                    rewrite_work_header(&hp, &header)?;
                    handled.recipients = still_owed.iter().map(|r| text(r)).collect();
                    verdict["recipients"] = serde_json::json!(handled.recipients);
                }
                b.taken.entry(rec.original_id.clone()).or_default().extend(still_owed.iter().cloned());
                let id = MessageId::parse(rec.original_id.as_bytes()).map_err(io::Error::other)?;
                self.quarantine.store(&rec.key, &id, &hp, &dp, &verdict)?;
                b.quarantined.push((rec.original_id.clone(), still_owed));
                handled.quarantine_key = Some(rec.key.clone());
                b.finish(rec.key, handled);
            }
            Plan::Split { read, parts } => return self.settle_split(b, spool, rec, &read, parts, now),
            Plan::Defer { mut handled } => {
                if handled.stages.iter().any(|s| s.panicked) {
                    rec.crashed_scans += 1;
                }
                rec.attempts += 1;
                rec.deferred_because = Some(handled.reasons.join("; "));
                rec.not_before = now + self.pipeline.defer.backoff(rec.attempts);
                handled.next_try = Some(rec.not_before);
                rec.scan_finished();
                b.waiting.push(rec);
                b.handled.push(handled);
            }
            Plan::Requeue { mut header, owed, mut handled } => {
                // Owed was decided at scan time; an earlier batch may have handed a recipient on
                // since (its copy was scanned alongside this one), so look again.
                let Some((dup, owed)) = self.still_owed(b, &rec, owed, now)? else {
                    return self.owes_nothing(b, rec, handled);
                };
                for r in &dup {
                    header.non_recipients.insert(r);
                }
                handled.recipients = owed.iter().map(|r| text(r)).collect();
                let id = header.id.clone();
                // A copy of a split never keeps the original id: the others could not tell their
                // sibling's re-queue from their own (`IdDecision::AlreadyRequeued`).
                let choice = match rec.split_from {
                    Some(_) => IdDecision::MintId,
                    None => spool.decide(&id, &self.transform.marker)?,
                };
                match choice {
                    IdDecision::Busy => {
                        rec.not_before = now + 1;
                        rec.scan_finished();
                        b.waiting.push(rec);
                    }
                    IdDecision::AlreadyRequeued => {
                        remove_pair(&hp, &dp)?;
                        b.done.push(rec.key);
                    }
                    choice => {
                        let mut header = *header;
                        if choice == IdDecision::MintId {
                            let slot = usize::from(id.format() == crate::spool::IdFormat::New23);
                            let new_id = self.minters.lock().unwrap_or_else(|p| p.into_inner())[slot].mint();
                            self.transform.change_id(&mut header, new_id);
                        }
                        b.taken.entry(rec.original_id.clone()).or_default().extend(owed.iter().cloned());
                        rec.state = ClaimState::Committing;
                        // Its scan is over: a stop from here on is not the message's doing (the
                        // commit is the same file work for every message), so it owes no lone
                        // scans.
                        rec.lone_scans = 0;
                        rec.target_id = Some(header.id.to_string());
                        rec.handing_on = owed;
                        handled.target_id = rec.target_id.clone();
                        b.requeuing.push(Requeuing { rec, header, handled });
                    }
                }
            }
        }
        Ok(())
    }

    /// Settle a message whose recipients came to different outcomes: each part becomes a claim
    /// of its own, with its own work pair (the `-D` a second name of the claimed one, the `-H` as
    /// read with every other part's recipients marked done), and is then settled as any claim.
    ///
    /// The part pairs are written and synced first, then one journal transaction replaces the
    /// claim with its parts: stopped before it, the claim is whole and scanned again (the part
    /// files, unrecorded, are removed at the next start); after it, each part is a claim that
    /// recovery completes or rolls back on its own, and the dedupe store keeps a recipient from
    /// being handed on twice whatever a part is scanned again to.
    fn settle_split(
        &self,
        b: &mut Settled,
        spool: &mut SpoolLook<'_>,
        rec: ClaimRecord,
        read: &SpoolHeader,
        parts: Vec<Plan>,
        now: u64,
    ) -> io::Result<()> {
        let (hp, dp) = self.dirs.files(&rec.key);
        let pending: Vec<Vec<u8>> = read.pending_recipients().map(|(_, r)| r.address().to_vec()).collect();
        let mut records = Vec::with_capacity(parts.len());
        for (n, part) in parts.iter().enumerate() {
            let key = format!("{}+{}", rec.key, n + 1);
            let (ph, pd) = self.dirs.files(&key);
            for p in [&ph, &pd] {
                remove_if_present(p)?;
            }
            std::fs::hard_link(&dp, &pd)?;
            let mine = part.recipients();
            let mut header = read.clone();
            for r in pending.iter().filter(|r| !mine.contains(r)) {
                header.non_recipients.insert(r);
            }
            write_work_header(&ph, &header, &hp)?;
            records.push(ClaimRecord {
                key,
                state: ClaimState::Claimed,
                not_before: 0,
                target_id: None,
                handing_on: Vec::new(),
                lone_scans: 0,
                scan_run: None,
                awaiting_lone_scan: false,
                held: false,
                deferred_because: None,
                split_from: Some(rec.key.clone()),
                ..rec.clone()
            });
        }
        requeue::sync_dir(&self.dirs.work)?;
        self.db.replace(&[&rec.key], &records)?;
        remove_pair(&hp, &dp)?;
        tracing::info!(
            "{}: its recipients came to {} different outcomes: one copy each ({})",
            rec.original_id,
            records.len(),
            records.iter().map(|r| r.key.as_str()).collect::<Vec<_>>().join(" ")
        );
        for (part, plan) in records.into_iter().zip(parts) {
            self.settle(b, spool, part, plan, now)?;
        }
        Ok(())
    }

    /// `owed` (decided at scan time) split again into the recipients handed on since, by an
    /// earlier batch or by a copy of the same message earlier in this one, and those still owed;
    /// `None` when none is still owed.
    fn still_owed(
        &self,
        b: &Settled,
        rec: &ClaimRecord,
        owed: Recipients,
        now: u64,
    ) -> io::Result<Option<(Recipients, Recipients)>> {
        let already = b.taken.get(&rec.original_id);
        let (mut handed_on, mut still_owed) = (Vec::new(), Vec::new());
        for r in owed {
            if already.is_some_and(|a| a.contains(&r)) || self.db.handed_on(&rec.original_id, &r, now)? {
                handed_on.push(r);
            } else {
                still_owed.push(r);
            }
        }
        Ok((!still_owed.is_empty()).then_some((handed_on, still_owed)))
    }

    /// A copy found to owe nothing after all: its work pair goes, and it is said so.
    fn owes_nothing(&self, b: &mut Settled, rec: ClaimRecord, mut handled: Handled) -> io::Result<()> {
        let (hp, dp) = self.dirs.files(&rec.key);
        remove_pair(&hp, &dp)?;
        handled.action = Outcome::NothingOwed;
        b.finish(rec.key, handled);
        Ok(())
    }

    /// Steps 2 and 3 of the durability sequence for the batch's copies, and the journal write
    /// that ends step 3. A copy that fails on the way goes back to `Claimed` (to be tried again);
    /// the others are returned, published.
    fn requeue_durably(&self, requeuing: Vec<Requeuing>, now: u64) -> io::Result<Vec<Published>> {
        // Step 2: every -D and every -H under its temporary name, then one sync per directory.
        let mut dirs = BTreeSet::new();
        let mut written = Vec::new();
        for Requeuing { rec, header, handled } in requeuing {
            let (_, dp) = self.dirs.files(&rec.key);
            let result = if header.id.as_str() == rec.original_id {
                requeue::write_data(&self.target, &header.id, BodyPlan::Link(&dp))
            } else {
                DataFile::open(&dp, &MessageId::parse(rec.original_id.as_bytes()).map_err(io::Error::other)?)
                    .map_err(requeue::RequeueError::from)
                    .and_then(|d| requeue::write_data(&self.target, &header.id, BodyPlan::Copy(&d)))
            };
            let result = result.and_then(|data| {
                requeue::prepare_header(&self.target, &header).inspect_err(|_| {
                    let _ = std::fs::remove_file(&data);
                })
            });
            match result {
                Ok(_) => {
                    dirs.insert(self.target.dir_for(&header.id));
                    written.push(Requeuing { rec, header, handled });
                }
                // Still `Committing`: a crash here is rolled back whatever is on disk.
                Err(e) => self.back_to_claimed(rec, &format!("writing into the spool: {e}"))?,
            }
        }
        for d in &dirs {
            requeue::sync_dir(d)?;
        }
        let mut data_written: Vec<ClaimRecord> = written.iter().map(|w| w.rec.clone()).collect();
        data_written.iter_mut().for_each(|r| r.state = ClaimState::DataWritten);
        self.db.put(&data_written)?;

        // Step 3: rename every -H into place (the commit points), then the directory syncs.
        let mut published = Vec::new();
        for Requeuing { mut rec, header, handled } in written {
            match requeue::publish_header(&self.target, &header.id) {
                Ok(c) => {
                    rec.state = ClaimState::Committed;
                    published.push(Published { rec, id: c.id, handled });
                }
                Err(e) => {
                    // The -D goes first and the temporary -H last, after the journal says
                    // `Claimed`: until then recovery finds the temporary -H and rolls back. The
                    // other order could leave `DataWritten` with neither file, which recovery
                    // must read as "renamed, and Exim delivered it".
                    let _ = std::fs::remove_file(self.target.dir_for(&header.id).join(format!("{}-D", header.id)));
                    self.back_to_claimed(rec, &format!("renaming -H into place: {e}"))?;
                    let _ = std::fs::remove_file(requeue::header_temp_path(&self.target, &header.id));
                }
            }
        }
        for d in &dirs {
            requeue::sync_dir(d)?;
        }
        let records: Vec<ClaimRecord> = published.iter().map(|c| c.rec.clone()).collect();
        self.db.commit_with_dedupe(&records, now + self.retention_secs)?;
        Ok(published)
    }

    /// The notices `[notify]` and the rules ask for of a quarantined or held message, written
    /// into Exim's spool; their ids, to be kicked with the batch's. A notice that cannot be
    /// written is logged and not retried (its message is safe either way).
    fn send_notices(&self, h: &mut Handled, now: u64) -> Vec<MessageId> {
        let cfg = &self.pipeline.notify;
        let action = match h.action {
            Outcome::Acted(Action::Quarantine) => "quarantined",
            Outcome::Acted(Action::Hold) => "held",
            _ => return Vec::new(),
        };
        if !cfg.is_on() {
            return Vec::new();
        }
        let about = notify::About {
            id: h.original_id.clone(),
            sender: h.sender.clone(),
            recipients: h.recipients.clone(),
            subject: h.subject.clone().unwrap_or_default(),
            action,
            reasons: h.reasons.clone(),
            key: h.quarantine_key.clone(),
        };
        let from =
            if cfg.from.is_empty() { format!("MAILER-DAEMON@{}", self.pipeline.authserv_id) } else { cfg.from.clone() };
        let mut sent = Vec::new();
        for n in cfg.notices(&about, h.tell) {
            match self.db.count_notice(&n.to, now, cfg.per_address_per_hour) {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(
                        "{}: no notice to {}: {} sent this hour already",
                        h.original_id,
                        n.to,
                        cfg.per_address_per_hour
                    );
                    continue;
                }
                // Notices are at most once: without a count, none goes.
                Err(e) => {
                    tracing::error!("{}: no notice to {}: {e}", h.original_id, n.to);
                    continue;
                }
            }
            // In the format of the message's own id: the one this Exim reads.
            let new23 =
                MessageId::parse(h.original_id.as_bytes()).is_ok_and(|i| i.format() == crate::spool::IdFormat::New23);
            let id = self.minters.lock().unwrap_or_else(|p| p.into_inner())[usize::from(new23)].mint();
            match notify::write(&self.target, &self.transform, id, &n, &from, &self.pipeline.authserv_id, now) {
                Ok(c) => {
                    h.notices.push(format!("{}:{}", c.id, n.to));
                    sent.push(c.id);
                }
                Err(e) => tracing::error!("{}: notice to {}: {e}", h.original_id, n.to),
            }
        }
        sent
    }

    /// Record verdicts for Exim's lookup. A deferral is not a verdict yet, and a copy that owed
    /// nothing must not overwrite the verdict of the copy that delivered. Failing to record one
    /// loses no mail, so it is reported, not fatal.
    fn record_verdicts<'h>(&self, handled: impl Iterator<Item = &'h Handled>, now: u64) {
        let Some((db, retention)) = &self.verdicts else { return };
        let entries: Vec<VerdictEntry> = handled
            .filter(|h| !matches!(h.action, Outcome::Acted(Action::Defer) | Outcome::NothingOwed))
            .map(|h| VerdictEntry {
                original_id: h.original_id.clone(),
                requeued_id: h.target_id.clone(),
                action: h.action.name().to_string(),
                verdict: verdict_of(h),
                expires: now + retention,
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        if let Err(e) = db.record(&entries) {
            tracing::error!("verdict database: {e}");
        }
    }

    fn back_to_claimed(&self, mut rec: ClaimRecord, why: &str) -> io::Result<()> {
        tracing::error!("{}: re-queue failed, will retry: {why}", rec.original_id);
        rec.state = ClaimState::Claimed;
        rec.target_id = None;
        rec.not_before = self.clock.now_secs() + 5;
        Ok(self.db.put(&[rec])?)
    }

    /// Move an unreadable pair aside with a reason file. Never delete it.
    fn reject(&self, rec: &ClaimRecord, error: &str) -> io::Result<()> {
        let (hp, dp) = self.dirs.files(&rec.key);
        let dir = self.dirs.rejected.join(&rec.key);
        crate::private_files::create_dir(&dir)?;
        crate::private_files::write_file(
            &dir.join("reason"),
            format!("{error}\n").as_bytes(),
            crate::private_files::FILE_MODE,
        )?;
        for (from, suffix) in [(&dp, 'D'), (&hp, 'H')] {
            match std::fs::rename(from, dir.join(format!("{}-{suffix}", rec.original_id))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        requeue::sync_dir(&dir)?;
        requeue::sync_dir(&self.dirs.rejected)?;
        requeue::sync_dir(&self.dirs.work)
    }
}

/// Replace a work `-H` with `header`, durably: a temporary file with the old one's owner (so
/// that, read again after a stop, it is still Exim's), then a rename over it.
fn rewrite_work_header(path: &Path, header: &crate::spool::SpoolHeader) -> io::Result<()> {
    write_work_header(path, header, path)
}

/// Write `header` as the work `-H` at `path`, with the owner of the `-H` at `like`: a temporary
/// file, then a rename (over any file there), then a sync of the directory.
fn write_work_header(path: &Path, header: &crate::spool::SpoolHeader, like: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let bytes = header.to_checked_bytes().map_err(io::Error::other)?;
    let old = std::fs::symlink_metadata(like)?;
    let tmp = path.with_file_name(format!("{}.new.tmp", path.file_name().unwrap_or_default().to_string_lossy()));
    crate::private_files::write_file(&tmp, &bytes, crate::private_files::FILE_MODE)?;
    std::os::unix::fs::chown(&tmp, Some(old.uid()), Some(old.gid()))?;
    std::fs::rename(&tmp, path)?;
    match path.parent() {
        Some(dir) => requeue::sync_dir(dir),
        None => Ok(()),
    }
}

/// Remove a file if it is there.
pub(super) fn remove_if_present(p: &Path) -> io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Remove a work pair (`-H` first, so a half-removed pair is never taken for a message).
pub fn remove_pair(h: &Path, d: &Path) -> io::Result<()> {
    remove_if_present(h)?;
    remove_if_present(d)
}
