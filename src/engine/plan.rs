//! One claimed copy from its files to a [`Plan`]: read and check the pair, run the stages, let
//! the rules and the policy decide per recipient, and prepare each copy's header. Nothing is
//! written to the spool here (the work `-D` may be replaced by a copy only Exim's user can
//! write); `src/engine/commit.rs` carries the plans out.

use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::json;

use super::{progressed, text, Engine, Handled, Outcome, StageLine};
use crate::pipeline::decide::{self, Outcomes, RecipientGroup};
use crate::pipeline::policy::Action;
use crate::pipeline::rules::MessageFacts;
use crate::pipeline::run::StageOutcome;
use crate::requeue;
use crate::spool::header_file::MAX_HEADER_FILE;
use crate::spool::{DataFile, MessageId, MessageView, OptionLine, SpoolError, SpoolHeader};
use crate::stages::arc::cv_of;
use crate::state::ClaimRecord;

impl Plan {
    /// The recipients this plan hands on, holds or drops.
    pub(super) fn recipients(&self) -> &[Vec<u8>] {
        match self {
            Plan::Requeue { owed, .. } | Plan::Quarantine { owed, .. } => owed,
            _ => &[],
        }
    }
}

/// The evaluation of one claimed copy.
pub(crate) enum Plan {
    /// Re-queue this header (already transformed and annotated); `hold` freezes it.
    Requeue {
        header: Box<SpoolHeader>,
        owed: Vec<Vec<u8>>,
        handled: Handled,
    },
    Quarantine {
        /// The copy's header as read, and the recipients it owed when scanned.
        header: Box<SpoolHeader>,
        owed: Vec<Vec<u8>>,
        handled: Handled,
        verdict: serde_json::Value,
    },
    Discard {
        handled: Handled,
    },
    Defer {
        handled: Handled,
    },
    /// Every pending recipient was handed on from an earlier copy of this message.
    NothingOwed {
        handled: Handled,
    },
    /// The pair cannot be read: moved aside with the reason, never deleted.
    Rejected {
        error: String,
    },
    /// Its recipients came to different outcomes: one copy each, each a claim of its own from
    /// the commit on (`src/engine/commit.rs`, `settle_split`). `read` is the header as read; every part's
    /// recipients are its own and no two parts share one.
    Split {
        read: Box<SpoolHeader>,
        parts: Vec<Plan>,
    },
}

impl Engine<'_> {
    pub(super) fn evaluate(&self, rec: &ClaimRecord) -> Plan {
        match self.try_evaluate(rec) {
            Ok(p) => p,
            Err(e) => Plan::Rejected { error: e.to_string() },
        }
    }

    /// Exim's user: `[intake] trusted_uid`, or the owner of the target spool's `input/`.
    fn trusted_uid(&self) -> Option<u32> {
        self.pipeline.intake.as_ref().and_then(|i| i.trusted_uid).or(self.target.owner.map(|o| o.0))
    }

    /// The work `-D` as a file only Exim's user can write, before anything reads it. A dropped
    /// `-D` that is owned by someone else, has another mode than Exim's 0640, or more links than
    /// the original and its copy, could be rewritten after the scan, and in link mode that very
    /// inode would be queued: such a file is copied into a new one with the spool's owner and
    /// mode, which replaces it in the work directory. The copy is what is scanned and queued.
    fn own_data(&self, data: DataFile, dp: &Path, id: &MessageId) -> Result<DataFile, SpoolError> {
        let io = |e: io::Error| SpoolError::io(dp, &e);
        let meta = data.metadata().clone();
        let foreign = self.trusted_uid().is_some_and(|uid| meta.uid() != uid)
            || meta.mode() & 0o7777 != self.target.mode
            || meta.nlink() > 2;
        if !foreign {
            return Ok(data);
        }
        let tmp = dp.with_file_name(format!("{}.own.tmp", dp.file_name().unwrap_or_default().to_string_lossy()));
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let mut src = data.file().try_clone().map_err(io)?;
        src.seek(io::SeekFrom::Start(0)).map_err(io)?;
        crate::requeue::commit::create_filled(&self.target, &tmp, |f| {
            io::copy(&mut (&mut src).take(meta.len()), f).map(drop)
        })
        .map_err(|e| SpoolError::io(&tmp, &io::Error::other(e.to_string())))?;
        std::fs::rename(&tmp, dp).map_err(io)?;
        requeue::sync_dir(&self.dirs.work).map_err(io)?;
        DataFile::open(dp, id)
    }

    fn try_evaluate(&self, rec: &ClaimRecord) -> Result<Plan, SpoolError> {
        let (hp, dp) = self.dirs.files(&rec.key);
        let attempts = self.pipeline.defer.processing_attempts;
        // Even quarantining it crashed: whatever stops the daemon is in reading it.
        if rec.crashed_scans > attempts {
            return Ok(Plan::Rejected {
                error: format!(
                    "{} scans of this message crashed, and so did quarantining it; moved aside unscanned",
                    rec.crashed_scans
                ),
            });
        }
        let id = MessageId::parse(rec.original_id.as_bytes())
            .map_err(|e| SpoolError::whole_file(crate::spool::Reason::BadFileName(e.to_string())).in_file(&hp))?;
        let limit = self.pipeline.intake.as_ref().map_or(MAX_HEADER_FILE, |i| i.max_header_file_bytes);
        let (bytes, meta) = crate::spool::header_file::read_file(&hp, Some(limit))?;
        // The envelope is taken as it is, so only Exim may have written it: an -H of another
        // owner (a local account writing into the queuefile directory) would re-queue any sender
        // and recipients past Exim's ACLs.
        if let Some(uid) = self.trusted_uid().filter(|&uid| meta.uid() != uid) {
            return Ok(Plan::Rejected {
                error: format!(
                    "{}: owned by uid {}, not by Exim's user (uid {uid}): an envelope Exim did not write is not queued",
                    hp.display(),
                    meta.uid()
                ),
            });
        }
        let header = SpoolHeader::parse(&bytes, Some(&id)).map_err(|e| e.in_file(&hp))?;
        let data = self.own_data(DataFile::open(&dp, &id)?, &dp, &id)?;
        let now = self.clock.now_secs();
        let pending: Vec<Vec<u8>> = header.pending_recipients().map(|(_, r)| r.address().to_vec()).collect();
        let owed: Vec<Vec<u8>> =
            pending.iter().filter(|r| !self.db.handed_on(&rec.original_id, r, now).unwrap_or(false)).cloned().collect();
        let mut handled = Handled {
            original_id: rec.original_id.clone(),
            target_id: None,
            action: Outcome::NothingOwed,
            sender: text(&header.sender),
            recipients: owed.iter().map(|r| text(r)).collect(),
            size: Some(header.message_size(data.body_len())),
            client: header.client_ip().map(|ip| ip.to_string()),
            helo: header.options.value("helo_name").map(|h| crate::spool::headers::sanitize(&text(h), 80)),
            subject: header
                .headers
                .get(b"subject")
                .next()
                .map(|l| crate::spool::headers::sanitize(&String::from_utf8_lossy(&l.value()), 80)),
            ..Handled::default()
        };
        if owed.is_empty() {
            handled.action = Outcome::NothingOwed;
            return Ok(Plan::NothingOwed { handled });
        }
        if rec.crashed_scans >= attempts {
            // MailScanner's "processing attempts": one message must not stop the mail flow.
            let reason = format!(
                "processing attempts exceeded: {} scans of this message crashed (a stage panicked, or the \
                 daemon stopped during it)",
                rec.crashed_scans
            );
            handled.action = Outcome::Acted(Action::Quarantine);
            handled.reasons = vec![reason.clone()];
            handled.tell = crate::pipeline::decide::Tell {
                recipients: self.pipeline.notify.recipients,
                sender: self.pipeline.notify.sender,
            };
            let verdict = json!({
                "id": rec.original_id,
                "sender": handled.sender,
                "recipients": handled.recipients,
                "reasons": [reason],
                "stages": [],
                "quarantined_at": crate::outside::clock::rfc3339(now),
            });
            return Ok(Plan::Quarantine { header: Box::new(header), owed, handled, verdict });
        }
        let settings = decide::settings_for(&self.pipeline, || MessageFacts::of(&header), &owed);
        let view = MessageView::new(&header, &data);
        let outcomes = decide::run_for(&self.stages, &settings, &view, self.clock);
        progressed();
        let mut groups = decide::groups(&self.pipeline, &owed, settings, &outcomes, handled.size.unwrap_or(0));
        // A deferral is about the scan, not about a recipient: the message is tried again whole
        // (with the most severe outcome, so never less checked than any recipient asked for).
        if groups.iter().any(|g| g.decision.action == Action::Defer) {
            groups = decide::merged(groups).into_iter().collect();
        }
        handled.stages = outcomes.all.iter().map(StageLine::of).collect();
        let deferred_for = now.saturating_sub(rec.claimed_at);
        let max_age = self.pipeline.defer.max_age_secs;
        if let [group] = groups.as_mut_slice() {
            decide::hold_if_deferred_too_long(&mut group.decision, deferred_for, max_age);
            return self.plan_copy(rec, header, &data, &outcomes, group, &pending, handled, now);
        }
        let mut parts = Vec::with_capacity(groups.len());
        for mut group in groups {
            decide::hold_if_deferred_too_long(&mut group.decision, deferred_for, max_age);
            let copy = header.clone();
            parts.push(self.plan_copy(rec, copy, &data, &outcomes, &group, &pending, handled.clone(), now)?);
        }
        Ok(Plan::Split { read: Box::new(header), parts })
    }

    /// The plan for one group of recipients: the whole message's, or one copy of a split.
    #[allow(clippy::too_many_arguments)]
    fn plan_copy(
        &self,
        rec: &ClaimRecord,
        header: SpoolHeader,
        data: &DataFile,
        outcomes: &Outcomes,
        group: &RecipientGroup,
        pending: &[Vec<u8>],
        mut handled: Handled,
        now: u64,
    ) -> Result<Plan, SpoolError> {
        let own;
        let outcomes: &[StageOutcome] = if group.lists.is_empty() {
            &outcomes.all
        } else {
            // Checked with these recipients' own lists: their copy says what those found.
            own = outcomes.for_lists(&group.lists);
            handled.stages = own.iter().map(StageLine::of).collect();
            &own
        };
        let decision = &group.decision;
        handled.action = Outcome::Acted(decision.action);
        handled.reasons = decision.reasons.clone();
        handled.rules = group.rules.iter().map(ToString::to_string).collect();
        handled.recipients = group.recipients.iter().map(|r| text(r)).collect();
        handled.tell = group.tell;
        let owed = group.recipients.clone();
        Ok(match decision.action {
            Action::Deliver | Action::Hold => {
                let header = self.annotate(header, data, outcomes, group, pending)?;
                Plan::Requeue { header: Box::new(header), owed, handled }
            }
            Action::Quarantine => {
                let verdict = json!({
                    "id": rec.original_id,
                    "sender": handled.sender,
                    "recipients": handled.recipients,
                    "reasons": decision.reasons,
                    "stages": outcomes,
                    "quarantined_at": crate::outside::clock::rfc3339(now),
                });
                Plan::Quarantine { header: Box::new(header), owed, handled, verdict }
            }
            Action::Discard => Plan::Discard { handled },
            Action::Defer => Plan::Defer { handled },
        })
    }

    /// The header to re-queue for `copy`'s recipients: the re-queue transform, our headers,
    /// every other pending recipient marked done (so Exim skips them), and frozen when holding.
    fn annotate(
        &self,
        mut h: SpoolHeader,
        body: &DataFile,
        outcomes: &[StageOutcome],
        copy: &RecipientGroup,
        pending: &[Vec<u8>],
    ) -> Result<SpoolHeader, SpoolError> {
        let decision = &copy.decision;
        self.transform.apply(&mut h);
        let headers = if copy.subject_tag.is_none() && copy.headers.is_empty() {
            std::borrow::Cow::Borrowed(&self.pipeline.headers)
        } else {
            std::borrow::Cow::Owned(self.pipeline.headers.for_copy(copy.subject_tag.as_deref(), &copy.headers))
        };
        headers
            .apply(&mut h, &self.pipeline.authserv_id, outcomes, decision)
            .map_err(|e| SpoolError::whole_file(crate::spool::Reason::Io(e.to_string())))?;
        if let Some(sealer) = &self.sealer {
            // The seal covers the message as it leaves us, so it comes last; `cv` is what the arc
            // stage found on the message as received. Without that stage's answer there is no cv.
            let arc = outcomes.iter().find(|o| o.stage == "arc").and_then(|o| o.result.as_ref().ok());
            let sealed = match arc {
                Some(r) => sealer.seal_spool(
                    &mut h,
                    body,
                    cv_of(&r.verdict),
                    &self.pipeline.authserv_id,
                    &self.pipeline.headers.results_of(outcomes),
                    self.clock.now_secs(),
                ),
                None => Err("not sealed: no result from the arc stage".into()),
            };
            // An unsealed message is still a good message; say why and deliver it.
            if let Err(why) = sealed {
                tracing::error!("{}: ARC {why}", h.id);
            }
        }
        for r in pending.iter().filter(|r| !copy.recipients.contains(r)) {
            h.non_recipients.insert(r);
        }
        if decision.action == Action::Hold {
            h.options.set(OptionLine::with_value("frozen", self.clock.now_secs().to_string().as_bytes()));
        }
        Ok(h)
    }
}
