//! The engine behind `spoolsift watch`: claim complete pairs from the queuefile directory, scan a
//! batch in parallel (here), then act on each message and re-queue with group commit
//! ([`commit`], which also lists the durability steps). [`executor`] overlaps the
//! three; [`recovery`] finishes what a crash interrupted.

pub mod assemble;
pub mod commit;
pub mod executor;
pub mod isolation;
pub mod recovery;

pub use assemble::EngineBuilder;
pub use executor::Next;

/// When the engine last got anywhere (a message scanned, a batch committed, an idle rescan with
/// nothing in flight), in seconds of a monotonic clock: the daemon tells systemd's watchdog it is
/// alive only while this moves.
static LAST_PROGRESS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static CLOCK_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn monotonic_secs() -> u64 {
    CLOCK_START.get_or_init(std::time::Instant::now).elapsed().as_secs()
}

/// Say that the engine got somewhere.
pub fn progressed() {
    LAST_PROGRESS.store(monotonic_secs(), std::sync::atomic::Ordering::Relaxed);
}

/// How long since the engine last got anywhere.
pub fn stalled_for() -> std::time::Duration {
    let last = LAST_PROGRESS.load(std::sync::atomic::Ordering::Relaxed);
    std::time::Duration::from_secs(monotonic_secs().saturating_sub(last))
}

use crate::spool::header_file::MAX_HEADER_FILE;
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Seek};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rayon::prelude::*;
use serde_json::json;

use crate::intake::queuefile::QueuefileDir;
use crate::outside::Clock;
use crate::pipeline::config::PipelineConfig;
use crate::pipeline::decide::{self, Outcomes, RecipientGroup};
use crate::pipeline::policy::Action;
use crate::pipeline::rules::MessageFacts;
use crate::pipeline::run::StageOutcome;
use crate::requeue::{self, KickQueue, TargetSpool, Transform};
use crate::sinks::quarantine::QuarantineStore;
use crate::spool::{DataFile, IdMinter, MessageId, MessageView, OptionLine, SpoolError, SpoolHeader};
use crate::stages::arc::{cv_of, Sealer};
use crate::stages::{Stage, StageError, Verdict, VerdictClass};
use crate::state::verdicts::VerdictDb;
use crate::state::{ClaimRecord, ClaimState, StateDb};
pub use commit::remove_pair;

/// spoolsift's own directories, all on the queuefile directory's file system.
#[derive(Debug, Clone)]
pub struct WorkDirs {
    pub work: PathBuf,
    pub quarantine: PathBuf,
    pub rejected: PathBuf,
    pub state: PathBuf,
}

impl WorkDirs {
    pub fn new(root: &Path) -> WorkDirs {
        WorkDirs {
            work: root.join("work"),
            quarantine: root.join("quarantine"),
            rejected: root.join("rejected"),
            state: root.join("state"),
        }
    }

    /// Make the directories (0750, see [`crate::private_files`]); existing ones get that mode
    /// too, whatever an earlier version or umask left them with.
    pub fn create(&self) -> io::Result<()> {
        for d in [&self.work, &self.quarantine, &self.rejected, &self.state] {
            crate::private_files::create_dir(d)?;
            crate::private_files::set_mode(d, crate::private_files::DIR_MODE)?;
        }
        Ok(())
    }

    /// The work files of a claim: `<key>-H`, `<key>-D` (names Exim would never take for its own).
    pub fn files(&self, key: &str) -> (PathBuf, PathBuf) {
        (self.work.join(format!("{key}-H")), self.work.join(format!("{key}-D")))
    }
}

/// What the engine did with one claimed copy: the policy's action, or one of the two ends that
/// come before any policy (the pair could not be read; every recipient was handed on already).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Outcome {
    Acted(Action),
    /// Moved aside unread, with the reason (`rejected/`).
    Rejected,
    /// Nothing owed: an earlier copy handed every pending recipient on. Also what a copy is said
    /// to have had before it is decided.
    #[default]
    NothingOwed,
}

impl Outcome {
    /// Every outcome, in the order the metrics list them.
    pub const ALL: [Outcome; 7] = [
        Outcome::Acted(Action::Deliver),
        Outcome::Acted(Action::Quarantine),
        Outcome::Acted(Action::Hold),
        Outcome::Acted(Action::Discard),
        Outcome::Acted(Action::Defer),
        Outcome::Rejected,
        Outcome::NothingOwed,
    ];

    /// The name in log lines, reports, metrics and the verdict database.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Acted(a) => a.name(),
            Outcome::Rejected => "rejected",
            Outcome::NothingOwed => "nothing-owed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What happened to one message, for the log line and reports.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Handled {
    pub original_id: String,
    pub target_id: Option<String>,
    pub action: Outcome,
    pub sender: String,
    pub recipients: Vec<String>,
    pub reasons: Vec<String>,
    pub stages: Vec<StageLine>,
    /// Exim's message size (`S=`).
    pub size: Option<u64>,
    /// The sending host's address and HELO name, from the `-H` (`-host_address`, `-helo_name`).
    pub client: Option<String>,
    pub helo: Option<String>,
    /// Sanitised and truncated, for the log line.
    pub subject: Option<String>,
    /// The quarantine entry's key (what `quarantine release` takes).
    pub quarantine_key: Option<String>,
    /// When a deferred message is tried again (Unix seconds).
    pub next_try: Option<u64>,
    /// The rules that decided a setting for it (`FILE:LINE`).
    pub rules: Vec<String>,
    /// Who is sent a notice of it, if it was quarantined or held.
    pub tell: crate::pipeline::decide::Tell,
    /// The notices sent of it (their ids).
    pub notices: Vec<String>,
}

/// What one stage said of a message, as the log line and the metrics need it.
#[derive(Debug, Clone, PartialEq)]
pub struct StageLine {
    pub stage: String,
    pub class: VerdictClass,
    /// The stage could not answer now: its service counts as down.
    pub temporary_failure: bool,
    /// The stage panicked: the scan counts as crashed.
    pub panicked: bool,
    /// The verdict or the failure in words.
    pub text: String,
    pub elapsed: Duration,
}

impl StageLine {
    pub fn of(o: &StageOutcome) -> StageLine {
        let (class, text) = match &o.result {
            Ok(r) => (r.verdict.class(), r.verdict.to_string()),
            Err(e) => (VerdictClass::Error, e.to_string()),
        };
        StageLine {
            stage: o.stage.clone(),
            class,
            temporary_failure: matches!(o.result, Err(StageError::Temporary(_))),
            panicked: matches!(o.result, Err(StageError::Panicked(_))),
            text,
            elapsed: o.elapsed,
        }
    }
}

impl Handled {
    /// One line per message, in the spirit of Exim's mainlog.
    pub fn log_line(&self) -> String {
        let ids = match &self.target_id {
            Some(t) if *t != self.original_id => format!("{} -> {t}", self.original_id),
            _ => self.original_id.clone(),
        };
        let stages: Vec<String> =
            self.stages.iter().map(|s| format!("{}={}/{}ms", s.stage, s.text, s.elapsed.as_millis())).collect();
        let mut line = format!("{ids} <{}> for {}", self.sender, self.recipients.join(" "));
        // Exim's own mainlog tags, so the line reads like the `<=` line it follows.
        if let Some(size) = self.size {
            line.push_str(&format!(" S={size}"));
        }
        match (&self.helo, &self.client) {
            (Some(h), Some(c)) => line.push_str(&format!(" H=({h}) [{c}]")),
            (None, Some(c)) => line.push_str(&format!(" H=[{c}]")),
            (Some(h), None) => line.push_str(&format!(" H=({h})")),
            (None, None) => {}
        }
        if let Some(subject) = &self.subject {
            line.push_str(&format!(" T=\"{}\"", subject.replace('"', "'")));
        }
        line.push_str(&format!(" action={} stages=[{}]", self.action, stages.join(" ")));
        if let Some(key) = &self.quarantine_key {
            line.push_str(&format!(" quarantine={key}"));
        }
        if let Some(next) = self.next_try {
            line.push_str(&format!(" next_try={}", crate::outside::clock::rfc3339(next)));
        }
        if !self.reasons.is_empty() {
            line.push_str(&format!(" reasons=[{}]", self.reasons.join("; ")));
        }
        if !self.rules.is_empty() {
            line.push_str(&format!(" rules=[{}]", self.rules.join(" ")));
        }
        if !self.notices.is_empty() {
            line.push_str(&format!(" notices=[{}]", self.notices.join(" ")));
        }
        line
    }
}

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
pub(super) enum Plan {
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
    /// the commit on (`commit.rs`, `settle_split`). `read` is the header as read; every part's
    /// recipients are its own and no two parts share one.
    Split {
        read: Box<SpoolHeader>,
        parts: Vec<Plan>,
    },
}

/// A claimed batch, evaluated but not yet acted on.
pub struct ScannedBatch {
    pub(super) claims: Vec<ClaimRecord>,
    pub(super) plans: Vec<Plan>,
}

impl ScannedBatch {
    pub fn len(&self) -> usize {
        self.claims.len()
    }

    pub fn is_empty(&self) -> bool {
        self.claims.is_empty()
    }
}

pub struct Engine<'e> {
    pub pipeline: PipelineConfig,
    pub stages: Vec<Box<dyn Stage>>,
    pub db: StateDb<'e>,
    pub dirs: WorkDirs,
    pub intake: QueuefileDir,
    pub target: TargetSpool,
    pub transform: Transform,
    /// One minter per id format: a new id is minted in the format of the id it replaces, which
    /// is the format the Exim that wrote it reads.
    pub minters: Mutex<[IdMinter; 2]>,
    /// Where committed messages are handed over for their delivery kick (`None`: Exim's queue
    /// runner finds them).
    pub kicks: Option<KickQueue>,
    pub retention_secs: u64,
    pub quarantine: QuarantineStore,
    /// Where verdicts go for Exim's `lmdb` lookup, and for how long.
    pub verdicts: Option<(VerdictDb, u64)>,
    /// Adds our ARC set to each re-queued message, after every other change (`[stages.arc.seal]`).
    pub sealer: Option<Sealer>,
    /// "Now" for claims, deferrals, frozen times, verdicts and stage timings: the system clock,
    /// or a fixed one for a replay (whose minters then take a fixed clock too).
    pub clock: Clock,
    /// Keys of claims taken but not yet committed.
    pub(super) in_flight: Mutex<HashSet<String>>,
    /// Signalled when a batch's keys leave `in_flight`.
    pub(super) in_flight_done: std::sync::Condvar,
    /// Claims a stopped daemon left, scanned one at a time (`src/engine/isolation.rs`).
    pub(super) isolation: Mutex<isolation::Isolation>,
    /// This daemon run's number in the journal (set by `recover`), marked on the claims it scans.
    pub(super) run: u64,
    pub(super) scan_pool: Mutex<Option<Arc<rayon::ThreadPool>>>,
    /// Notices sent, per address and hour (`[notify]`).
    pub(super) notifier: crate::sinks::notify::Notifier,
}

pub(super) fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl<'e> Engine<'e> {
    /// Whether any claimed message is still being scanned or committed.
    pub fn busy(&self) -> bool {
        !self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    /// Take up to a batch of complete pairs from the intake, plus deferred claims that are due.
    /// Claims still being scanned or committed (the executor overlaps batches) are not taken
    /// again: the in-flight set is held while the journal is read, and a batch's keys leave it
    /// only after its last journal write, so a claim is seen either in flight or as it ended.
    pub fn claim_batch(&self) -> io::Result<Vec<ClaimRecord>> {
        if let Some(lone) = self.claim_lone()? {
            return Ok(lone);
        }
        let now = self.clock.now_secs();
        let batch = &self.pipeline.batch;
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        // Deferred claims taken again: marked as in this run's hands (see `src/engine/isolation.rs`).
        let mut out = self.db.take_due(now, batch.max_messages, &in_flight, self.run)?;
        in_flight.extend(out.iter().map(|r| r.key.clone()));
        drop(in_flight);
        let mut bytes: u64 = out
            .iter()
            .map(|r| self.dirs.files(&r.key).1)
            .filter_map(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| m.len())
            .sum();
        let mut ready = Vec::new();
        for pair in self.intake.list()? {
            if out.len() + ready.len() >= batch.max_messages || bytes >= batch.max_bytes {
                break;
            }
            if let Ok((r, lock)) = self.intake.check(&pair)? {
                bytes += r.size;
                ready.push((r, lock));
            }
        }
        if ready.is_empty() {
            return Ok(out);
        }
        let first = self.db.reserve_seq(ready.len() as u64)?;
        let records: Vec<ClaimRecord> = ready
            .iter()
            .enumerate()
            .map(|(i, (r, _))| ClaimRecord {
                key: format!("{:012}.{}", first + i as u64, r.pair.id),
                original_id: r.pair.id.to_string(),
                state: ClaimState::Claimed,
                claimed_at: now,
                attempts: 0,
                not_before: 0,
                target_id: None,
                handing_on: Vec::new(),
                lone_scans: 0,
                scan_run: Some(self.run),
                held: false,
                deferred_because: None,
                split_from: None,
                crashed_scans: 0,
                awaiting_lone_scan: false,
            })
            .collect();
        self.db.put(&records)?;
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner()).extend(records.iter().map(|r| r.key.clone()));
        for ((r, _lock), rec) in ready.iter().zip(&records) {
            let (wh, wd) = self.dirs.files(&rec.key);
            // -D first: a half-moved pair then leaves an -H in the intake, which is re-examined,
            // never an -H without its -D in work/.
            std::fs::rename(r.pair.data_path(), &wd)?;
            std::fs::rename(r.pair.header_path(), &wh)?;
            self.intake.forget(&r.pair.id)?;
        }
        let mut synced = BTreeSet::new();
        for (r, _) in &ready {
            if synced.insert(r.pair.dir.clone()) {
                requeue::sync_dir(&r.pair.dir)?;
            }
        }
        requeue::sync_dir(&self.dirs.work)?;
        out.extend(records);
        Ok(out)
    }

    fn evaluate(&self, rec: &ClaimRecord) -> Plan {
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
        let meta = data.file().metadata().map_err(io)?;
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

    /// Scan and act on a batch. Returns what happened to each message.
    pub fn process(&self, batch: Vec<ClaimRecord>) -> io::Result<Vec<Handled>> {
        self.commit(self.scan(batch))
    }

    /// Evaluate every claim of a batch, in parallel: read, run the stages, decide, annotate.
    /// Nothing is written here, so a scan can run while an earlier batch commits.
    pub fn scan(&self, claims: Vec<ClaimRecord>) -> ScannedBatch {
        let evaluate = || claims.par_iter().map(|r| self.evaluate(r)).collect();
        let plans = match self.scan_pool() {
            Some(pool) => pool.install(evaluate),
            // Without threads of our own, the global pool (one per core) still scans.
            None => evaluate(),
        };
        ScannedBatch { claims, plans }
    }

    /// The scan's threads: as many messages as the most parallel stage can have waiting on its
    /// service (clamd's connections, say), plus one per core. A thread waiting on a socket uses no
    /// core; the extra ones prepare the next messages (read, decode, the quicker stages), so a
    /// connection that frees up gets its next message at once instead of the service idling
    /// (measured with a real clamd: a few per cent more messages per second, about the spread
    /// between runs here). Rebuilt when a reload of the stages changes the number.
    fn scan_pool(&self) -> Option<Arc<rayon::ThreadPool>> {
        // Asked once: the answer reads the scheduler's affinity and the cgroup's quota.
        static CORES: OnceLock<usize> = OnceLock::new();
        let cores = *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let want = self.stages.iter().map(|s| s.parallelism()).max().unwrap_or(1) + cores;
        let mut pool = self.scan_pool.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = pool.as_ref().filter(|p| p.current_num_threads() == want) {
            return Some(Arc::clone(p));
        }
        match rayon::ThreadPoolBuilder::new().num_threads(want).thread_name(|i| format!("spoolsift-scan-{i}")).build() {
            Ok(built) => Some(Arc::clone(pool.insert(Arc::new(built)))),
            Err(e) => {
                tracing::error!("scan threads: {e}");
                None
            }
        }
    }
}

/// A message's verdict in words, for the verdict database.
pub fn verdict_of(h: &Handled) -> String {
    if h.reasons.is_empty() {
        Verdict::Clean.to_string()
    } else {
        h.reasons.join("; ")
    }
}
