//! The engine behind `spoolsift watch`: claim complete pairs from the queuefile directory (here),
//! scan a batch in parallel into a plan per copy (`src/engine/plan.rs`), then act on each message and
//! re-queue with group commit ([`commit`], which also lists the durability steps). [`executor`]
//! overlaps the three; [`recovery`] finishes what a crash interrupted.

pub mod assemble;
pub mod commit;
pub mod executor;
pub mod isolation;
mod plan;
pub mod recovery;

pub use assemble::EngineBuilder;
pub use executor::Next;
pub(crate) use plan::Plan;

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

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rayon::prelude::*;

use crate::intake::queuefile::QueuefileDir;
use crate::outside::Clock;
use crate::pipeline::config::PipelineConfig;
use crate::pipeline::policy::Action;
use crate::pipeline::run::StageOutcome;
use crate::requeue::{self, KickQueue, TargetSpool, Transform};
use crate::sinks::quarantine::QuarantineStore;
use crate::spool::IdMinter;
use crate::stages::arc::Sealer;
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
        let mut looking = self.intake.looking();
        while out.len() + ready.len() < batch.max_messages && bytes < batch.max_bytes {
            let Some(pair) = looking.next_pair()? else { break };
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
