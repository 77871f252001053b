//! The engine on real directories, without Exim: claims, actions, group commit, dedupe of
//! queuefile's once-per-recipient copies, rejects, and recovery from every journal state a crash
//! can leave. (The same engine against a real Exim is in `watch_e2e.rs`.)

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use spoolsift::engine::Next;
use spoolsift::engine::{Engine, EngineBuilder, WorkDirs};
use spoolsift::intake::queuefile::QueuefileDir;
use spoolsift::pipeline::config::IntakeConfig;
use spoolsift::pipeline::PipelineConfig;
use spoolsift::requeue::{Marker, TargetSpool};
use spoolsift::spool::{IdClock, IdFormat, IdMinter, MessageId, MessageView, SpoolHeader};
use spoolsift::stages::{Stage, StageError, StageResult, Verdict};
use spoolsift::state::{open_env, ClaimRecord, ClaimState, StateDb};

/// A stage that finds "VIRUS-MARKER" in the body, and fails while `down` is set.
struct MarkerStage {
    down: Arc<AtomicBool>,
}

impl Stage for MarkerStage {
    fn name(&self) -> &str {
        "marker"
    }
    fn check(&self, m: &MessageView<'_>) -> Result<StageResult, StageError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StageError::Temporary("scanner down".into()));
        }
        let all = m.to_vec().unwrap();
        if all.windows(12).any(|w| w == b"VIRUS-MARKER") {
            Ok(StageResult::new(Verdict::Infected { name: "Test.Marker".into() }))
        } else {
            let mut r = StageResult::clean();
            r.auth_results.push("x-marker=pass".into());
            Ok(r)
        }
    }
}

const PIPELINE: &str = r#"
name = "engine-test"
authserv_id = "mx.test.example"
[defer]
initial_secs = 0
max_interval_secs = 0
processing_attempts = 3
"#;

struct World {
    root: tempfile::TempDir,
    qf: PathBuf,
    spool: PathBuf,
    down: Arc<AtomicBool>,
    minter: IdMinter,
}

impl World {
    fn new() -> World {
        let root = tempfile::tempdir().unwrap();
        let qf = root.path().join("qf");
        let spool = root.path().join("spool");
        std::fs::create_dir_all(&qf).unwrap();
        std::fs::create_dir_all(spool.join("input")).unwrap();
        World {
            root,
            qf,
            spool,
            down: Arc::new(AtomicBool::new(false)),
            minter: IdMinter::new(IdFormat::New23)
                .with_pid(77)
                .with_clock(IdClock::Fixed { secs: 1_800_000_000, micros: 0 }),
        }
    }

    fn input(&self) -> PathBuf {
        self.spool.join("input")
    }

    /// Run `f` with an engine over this world's directories (the state stays on disk between calls,
    /// as it does across daemon restarts).
    fn with_engine<T>(&self, f: impl FnOnce(&mut Engine<'_>) -> T) -> T {
        let dirs = WorkDirs::new(&self.root.path().join("work"));
        dirs.create().unwrap();
        let env = open_env(&dirs.state).unwrap();
        let db = StateDb::new(&env).unwrap();
        let target = TargetSpool::new(&self.spool, None).unwrap();
        let mut engine = EngineBuilder::new(
            PipelineConfig::parse(PIPELINE, Path::new("test.toml")).unwrap(),
            db,
            dirs,
            QueuefileDir::new(&self.qf, Some(&target.input), Duration::from_secs(900)),
            target,
        )
        .stages(vec![Box::new(MarkerStage { down: Arc::clone(&self.down) })])
        .build()
        .unwrap();
        engine.retention_secs = 86400;
        f(&mut engine)
    }

    /// Drop a queuefile-style copy of the spec example with a fresh id (or `id`), the given tree
    /// entries and body. Returns its id.
    fn drop_copy(&mut self, id: Option<&MessageId>, delivered: &[&str], body: &str) -> MessageId {
        let mut h = SpoolHeader::read(Path::new("tests/data/spec-example/1xXORz-0000000058C-2p8L-H")).unwrap();
        h.id = id.cloned().unwrap_or_else(|| self.minter.mint());
        h.options.set(spoolsift::spool::OptionLine::with_value(
            "body_linecount",
            body.matches('\n').count().to_string().as_bytes(),
        ));
        for d in delivered {
            h.non_recipients.insert(d.as_bytes());
        }
        std::fs::write(self.qf.join(format!("{}-D", h.id)), format!("{}-D\n{body}", h.id)).unwrap();
        std::fs::write(self.qf.join(format!("{}-H", h.id)), h.to_bytes()).unwrap();
        h.id
    }

    /// Another copy of `id`, written into `dir` instead (the queuefile directory holds one copy
    /// of an id at a time).
    fn drop_copy_aside(&mut self, id: &MessageId, delivered: &[&str], body: &str, dir: &Path) {
        let held = self.root.path().join("held");
        std::fs::create_dir_all(&held).unwrap();
        move_pair(id, &self.qf, &held);
        self.drop_copy(Some(id), delivered, body);
        move_pair(id, &self.qf, dir);
        move_pair(id, &held, &self.qf);
    }

    fn queued(&self) -> Vec<SpoolHeader> {
        let mut out: Vec<SpoolHeader> = list(&self.input())
            .iter()
            .filter(|n| n.ends_with("-H"))
            .map(|n| SpoolHeader::read(&self.input().join(n)).unwrap())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

fn move_pair(id: &MessageId, from: &Path, to: &Path) {
    for s in ["D", "H"] {
        std::fs::rename(from.join(format!("{id}-{s}")), to.join(format!("{id}-{s}"))).unwrap();
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map_or(Vec::new(), |rd| rd.map(|e| e.unwrap().file_name().into_string().unwrap()).collect());
    v.sort();
    v
}

fn run_until_idle(e: &mut Engine<'_>) -> Vec<String> {
    let mut lines = Vec::new();
    loop {
        let batch = e.claim_batch().unwrap();
        if batch.is_empty() {
            return lines;
        }
        lines.extend(e.process(batch).unwrap().iter().map(|h| h.log_line()));
    }
}

#[test]
fn clean_message_is_requeued_under_its_id_with_our_headers() {
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "Hello Bob.\nThis is line two.\n");
    let lines = w.with_engine(run_until_idle);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!(
            "{id} <alice@sender.example> for bob@dest.example carol@dest.example S=441 \
             H=(client.example.net) [192.0.2.10] T=\"Test message with a folded subject\" action=deliver \
             stages=[marker=clean/"
        )),
        "{}",
        lines[0]
    );
    let q = w.queued();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].id, id, "the original is gone from the spool, so the id is kept");
    assert!(Marker::default().is_on(&q[0]));
    let ar: Vec<_> =
        q[0].headers.get(b"authentication-results").map(|h| String::from_utf8(h.value()).unwrap()).collect();
    assert_eq!(ar, ["mx.test.example; x-marker=pass"]);
    let status: Vec<_> =
        q[0].headers.get(b"x-spoolsift-status").map(|h| String::from_utf8(h.value()).unwrap()).collect();
    assert_eq!(status, [format!("clean (marker=clean) spoolsift {}", env!("CARGO_PKG_VERSION"))]);
    assert_eq!(
        std::fs::read(w.input().join(format!("{id}-D"))).unwrap(),
        format!("{id}-D\nHello Bob.\nThis is line two.\n").as_bytes()
    );
    assert!(list(&w.qf).is_empty());
    assert!(list(&w.root.path().join("work/work")).is_empty());
    w.with_engine(|e| assert!(e.db.all().unwrap().is_empty()));
}

#[test]
fn infected_message_is_quarantined_with_its_verdict() {
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "VIRUS-MARKER\n");
    let lines = w.with_engine(run_until_idle);
    assert!(lines[0].contains("action=quarantine"), "{lines:?}");
    assert!(w.queued().is_empty(), "nothing delivered");
    w.with_engine(|e| {
        let entries = e.quarantine.list().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, id);
        assert_eq!(entries[0].verdict["reasons"][0], "marker: infected (Test.Marker)");
        assert_eq!(std::fs::read(entries[0].data_path()).unwrap(), format!("{id}-D\nVIRUS-MARKER\n").as_bytes());
    });
}

#[test]
fn a_quarantine_stopped_halfway_is_undone_and_done_again_whole() {
    // A crash between the quarantine's two renames (-D, then -H) leaves the -D in the entry and
    // the -H in the work directory; a crash after both leaves a complete entry and the claim.
    for moved_header in [false, true] {
        let mut w = World::new();
        let id = w.drop_copy(None, &[], "VIRUS-MARKER\n");
        let (key, entry_dir) = w.with_engine(|e| {
            let rec = e.claim_batch().unwrap().pop().unwrap();
            let (wh, wd) = e.dirs.files(&rec.key);
            let dir = e.quarantine.dir.join(&rec.key);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("verdict.json"), b"{\"reasons\": [\"marker: infected (Test.Marker)\"]}\n").unwrap();
            std::fs::rename(&wd, dir.join(format!("{id}-D"))).unwrap();
            if moved_header {
                std::fs::rename(&wh, dir.join(format!("{id}-H"))).unwrap();
            }
            (rec.key, dir)
        });
        let notes = w.with_engine(|e| e.recover().unwrap());
        if moved_header {
            assert_eq!(notes, [format!("{key}: quarantined before the stop; its recipients are held there")]);
            assert_eq!(list(&entry_dir), [format!("{id}-D"), format!("{id}-H"), "verdict.json".into()]);
            assert!(w.with_engine(run_until_idle).is_empty());
            continue;
        }
        assert_eq!(
            notes,
            [
                format!("{key}: interrupted quarantine undone; will be processed again"),
                "1 claims left by a stopped daemon are scanned one at a time".into()
            ]
        );
        assert!(!entry_dir.exists(), "the partial entry is gone");
        assert_eq!(list(&w.root.path().join("work/work")), [format!("{key}-D"), format!("{key}-H")]);
        let lines = w.with_engine(run_until_idle);
        assert!(lines.len() == 1 && lines[0].contains("action=quarantine"), "{lines:?}");
        let entries = w.with_engine(|e| e.quarantine.list().unwrap());
        assert_eq!(entries.len(), 1);
        assert_eq!(std::fs::read(entries[0].data_path()).unwrap(), format!("{id}-D\nVIRUS-MARKER\n").as_bytes());
        assert!(entries[0].header_path().exists());
        assert!(list(&w.root.path().join("work/rejected")).is_empty(), "nothing moved aside as malformed");
    }
}

#[test]
fn scanner_outage_defers_then_delivers_once() {
    let mut w = World::new();
    w.drop_copy(None, &[], "body\n");
    w.down.store(true, Ordering::SeqCst);
    let first = w.with_engine(|e| {
        let batch = e.claim_batch().unwrap();
        e.process(batch).unwrap().iter().map(|h| h.log_line()).collect::<Vec<_>>()
    });
    assert!(first[0].contains("action=defer"), "{first:?}");
    assert!(w.queued().is_empty());
    let records = w.with_engine(|e| e.db.all().unwrap());
    assert_eq!((records.len(), records[0].state, records[0].attempts), (1, ClaimState::Claimed, 1));
    w.down.store(false, Ordering::SeqCst);
    let second = w.with_engine(run_until_idle);
    assert_eq!(second.len(), 1);
    assert!(second[0].contains("action=deliver"));
    assert_eq!(w.queued().len(), 1);
}

#[test]
fn once_per_recipient_copies_deliver_each_recipient_once() {
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "multi\n");
    // The original is still in Exim's spool (carol deferred): the re-queue must mint a new id.
    std::fs::copy(w.qf.join(format!("{id}-H")), w.input().join(format!("{id}-H"))).unwrap();
    std::fs::copy(w.qf.join(format!("{id}-D")), w.input().join(format!("{id}-D"))).unwrap();
    let lines = w.with_engine(run_until_idle);
    assert!(lines[0].contains(" -> "), "{lines:?}");
    // Exim retries carol: another copy of the same id, bob now in its tree.
    w.drop_copy(Some(&id), &["bob@dest.example"], "multi\n");
    let lines = w.with_engine(run_until_idle);
    assert!(lines[0].contains("action=nothing-owed"), "{lines:?}");
    let q: Vec<_> = w.queued().into_iter().filter(|h| h.id != id).collect();
    assert_eq!(q.len(), 1, "exactly one re-queued copy");
    assert_eq!(q[0].pending_recipients().count(), 2, "bob and carol, once");
    assert!(list(&w.qf).is_empty());
}

#[test]
fn a_header_file_over_the_limit_is_moved_aside_unread() {
    let mut w = World::new();
    let big = w.drop_copy(None, &[], "big\n");
    let size = std::fs::metadata(w.qf.join(format!("{big}-H"))).unwrap().len();
    let run_with_limit = |w: &World, limit: u64| {
        w.with_engine(|e| {
            e.pipeline.intake = Some(IntakeConfig {
                queuefile_directory: Some(w.qf.clone()),
                incoming_spool_directory: None,
                work_directory: w.root.path().join("work"),
                orphan_age_secs: 900,
                rescan_interval_ms: 1000,
                max_header_file_bytes: limit,
                trusted_uid: None,
            });
            run_until_idle(e)
        })
    };
    let lines = run_with_limit(&w, size - 1);
    assert!(lines.len() == 1 && lines[0].contains("action=rejected"), "{lines:?}");
    assert!(w.queued().is_empty());
    let rejected = w.root.path().join("work/rejected");
    let entry = list(&rejected).pop().unwrap();
    let reason = std::fs::read_to_string(rejected.join(&entry).join("reason")).unwrap();
    assert!(reason.ends_with(&format!("{big}-H (byte 0): file is larger than {} bytes\n", size - 1)), "{reason}");
    // At the limit it is taken.
    let ok = w.drop_copy(None, &[], "fits\n");
    run_with_limit(&w, size);
    assert_eq!(w.queued().iter().map(|h| h.id.clone()).collect::<Vec<_>>(), [ok]);
}

#[test]
fn malformed_pair_is_moved_aside_with_its_reason() {
    let mut w = World::new();
    let bad = MessageId::parse(b"1xXOQD-0004A8-22").unwrap();
    std::fs::write(
        w.qf.join(format!("{bad}-H")),
        format!("{bad}-H\nroot 0 0\r\n<a@b>\n1 0\nXX\n1\nx@y\n\n015  X-Header: yes\n"),
    )
    .unwrap();
    std::fs::write(w.qf.join(format!("{bad}-D")), format!("{bad}-D\nbody\n")).unwrap();
    let good = w.drop_copy(None, &[], "fine\n");
    let lines = w.with_engine(run_until_idle);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("action=rejected") && l.contains("CR byte")), "{lines:?}");
    assert_eq!(w.queued().iter().map(|h| h.id.clone()).collect::<Vec<_>>(), [good]);
    let rejected = w.root.path().join("work/rejected");
    let entry = list(&rejected).pop().unwrap();
    assert_eq!(list(&rejected.join(&entry)), [format!("{bad}-D"), format!("{bad}-H"), "reason".to_string()]);
    let reason = std::fs::read_to_string(rejected.join(&entry).join("reason")).unwrap();
    assert!(
        reason.ends_with(&format!(
            "000000000000.{bad}-H:2 (byte 27): CR byte in the file (CRLF line endings are a format error for Exim)\n"
        )),
        "names file, line and reason: {reason}"
    );
}

/// Put a claim into a given journal state, as a crash would leave it.
fn crashed_in(
    w: &mut World,
    state: ClaimState,
    target_has_d: bool,
    target_has_h: bool,
    target_has_temp_h: bool,
) -> (ClaimRecord, MessageId) {
    let id = w.drop_copy(None, &[], "crash\n");
    let target = w.minter.mint();
    let rec = w.with_engine(|e| {
        let mut batch = e.claim_batch().unwrap();
        let mut rec = batch.pop().unwrap();
        rec.state = state;
        rec.target_id = Some(target.to_string());
        e.db.put(std::slice::from_ref(&rec)).unwrap();
        rec
    });
    if target_has_d {
        std::fs::write(w.input().join(format!("{target}-D")), format!("{target}-D\ncrash\n")).unwrap();
    }
    if target_has_h {
        std::fs::write(w.input().join(format!("{target}-H")), b"placeholder").unwrap();
    }
    if target_has_temp_h {
        std::fs::write(w.input().join(format!("rq.{target}.H.tmp")), b"placeholder").unwrap();
    }
    let _ = id;
    (rec, target)
}

#[test]
fn recovery_rolls_back_an_uncommitted_requeue() {
    // (state, target -D, temporary -H): the rename of the -H never happened.
    for (state, has_d, has_temp) in [
        (ClaimState::Committing, false, false),
        (ClaimState::Committing, true, false),
        (ClaimState::Committing, true, true),
        (ClaimState::DataWritten, true, true),
        // The -D gone while the -H was never renamed: not a delivery (Exim never saw the
        // message), so it must be processed again, not counted as done.
        (ClaimState::DataWritten, false, true),
        // Renamed yet -H gone and -D there: not what Exim leaves; without a -H it is safe to redo.
        (ClaimState::DataWritten, true, false),
    ] {
        let mut w = World::new();
        let (rec, target) = crashed_in(&mut w, state, has_d, false, has_temp);
        let notes = w.with_engine(|e| e.recover().unwrap());
        assert_eq!(
            notes[0],
            format!("{}: interrupted re-queue rolled back; will be processed again", rec.key),
            "{state:?} {has_d} {has_temp}"
        );
        assert!(!w.input().join(format!("{target}-D")).exists(), "our partial -D is gone");
        assert!(!w.input().join(format!("rq.{target}.H.tmp")).exists(), "our temporary -H is gone");
        let lines = w.with_engine(run_until_idle);
        assert_eq!(lines.len(), 1);
        assert_eq!(w.queued().len(), 1, "{state:?} {has_d} {has_temp}: delivered exactly once");
    }
}

#[test]
fn a_roll_back_stopped_before_its_files_were_gone_is_finished() {
    // Recovery says "to be done again" in the journal before it removes a re-queue's files: a
    // crash in between leaves the claim with its target named and the target's -D and temporary
    // -H still there. (The other order once left `DataWritten` with both files gone, which reads
    // as "Exim delivered it", and the message was lost.)
    let mut w = World::new();
    let (rec, target) = crashed_in(&mut w, ClaimState::Claimed, true, false, true);
    let notes = w.with_engine(|e| e.recover().unwrap());
    assert_eq!(
        notes,
        [
            format!("{}: interrupted roll-back finished; will be processed again", rec.key),
            "1 claims left by a stopped daemon are scanned one at a time".into()
        ]
    );
    assert!(!w.input().join(format!("{target}-D")).exists(), "our partial -D is gone");
    assert!(!w.input().join(format!("rq.{target}.H.tmp")).exists(), "our temporary -H is gone");
    let left = w.with_engine(|e| e.db.all().unwrap());
    assert_eq!((left.len(), left[0].state, left[0].target_id.clone()), (1, ClaimState::Claimed, None));
    assert_eq!(w.with_engine(run_until_idle).len(), 1);
    assert_eq!(w.queued().len(), 1, "delivered exactly once");
}

#[test]
fn recovery_completes_a_committed_requeue() {
    // The -H landed (or Exim already delivered it: the temporary -H renamed, both files gone
    // after DataWritten).
    for (state, has_d, has_h) in [
        (ClaimState::DataWritten, true, true),
        (ClaimState::DataWritten, false, false),
        (ClaimState::Committed, false, false),
    ] {
        let mut w = World::new();
        let (mut rec, _) = crashed_in(&mut w, state, has_d, has_h, false);
        // The crash came before the transaction that records the recipients handed on.
        rec.handing_on = vec![b"bob@dest.example".to_vec()];
        w.with_engine(|e| e.db.put(std::slice::from_ref(&rec)).unwrap());
        let notes = w.with_engine(|e| e.recover().unwrap());
        let now = spoolsift::state::journal::now_secs();
        assert!(w.with_engine(|e| e.db.handed_on(&rec.original_id, b"bob@dest.example", now).unwrap()), "{state:?}");
        assert_eq!(notes.len(), 1);
        assert!(notes[0].starts_with(&format!("{}: re-queue as ", rec.key)), "{notes:?}");
        assert!(w.with_engine(|e| e.db.all().unwrap()).is_empty());
        assert!(list(&w.root.path().join("work/work")).is_empty(), "{state:?}: work files removed");
        assert!(w.with_engine(run_until_idle).is_empty(), "{state:?}: nothing processed a second time");
    }
}

#[test]
fn two_copies_of_one_message_in_one_batch_deliver_each_recipient_once() {
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "twice\n");
    w.down.store(true, Ordering::SeqCst);
    w.with_engine(|e| {
        let batch = e.claim_batch().unwrap();
        e.process(batch).unwrap();
    });
    // While the first copy waits (deferred), Exim hands over another copy of the same message.
    w.drop_copy(Some(&id), &["bob@dest.example"], "twice\n");
    w.down.store(false, Ordering::SeqCst);
    let lines = w.with_engine(run_until_idle);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let mut all: Vec<Vec<u8>> = Vec::new();
    for h in w.queued() {
        all.extend(h.pending_recipients().map(|(_, r)| r.address().to_vec()));
    }
    all.sort();
    assert_eq!(all, [b"bob@dest.example".to_vec(), b"carol@dest.example".to_vec()], "{lines:?}");
}

/// The executor scans a batch while the one before it commits. A second copy of a message,
/// claimed while the first is in flight, must neither re-claim the first nor deliver a recipient
/// the first hands on: what was owed at scan time is looked up again at commit.
#[test]
fn a_copy_scanned_before_the_other_commits_delivers_nothing_twice() {
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "overlap\n");
    // The original stays in Exim's spool (carol deferred), so each re-queue mints a new id.
    std::fs::copy(w.qf.join(format!("{id}-H")), w.input().join(format!("{id}-H"))).unwrap();
    std::fs::copy(w.qf.join(format!("{id}-D")), w.input().join(format!("{id}-D"))).unwrap();
    let retry = w.root.path().join("retry");
    std::fs::create_dir_all(&retry).unwrap();
    w.drop_copy_aside(&id, &["bob@dest.example"], "overlap\n", &retry);
    let lines = w.with_engine(|e| {
        let first = e.claim_batch().unwrap();
        assert_eq!(first.len(), 1);
        let first = e.scan(first);
        // Exim's retry for carol hands over the next copy before the first is committed.
        move_pair(&id, &retry, &w.qf);
        let second = e.claim_batch().unwrap();
        assert_eq!(second.len(), 1, "the claim in flight is not taken again");
        let second = e.scan(second);
        let mut lines: Vec<String> = e.commit(first).unwrap().iter().map(|h| h.log_line()).collect();
        lines.extend(e.commit(second).unwrap().iter().map(|h| h.log_line()));
        lines
    });
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].contains("for bob@dest.example carol@dest.example S=420 "), "{lines:?}");
    assert!(lines[1].contains("action=nothing-owed"), "{lines:?}");
    let requeued: Vec<_> = w.queued().into_iter().filter(|h| h.id != id).collect();
    assert_eq!(requeued.len(), 1, "one re-queued copy");
    let owed: Vec<_> = requeued[0].pending_recipients().map(|(_, r)| r.address().to_vec()).collect();
    assert_eq!(owed, [b"bob@dest.example".to_vec(), b"carol@dest.example".to_vec()]);
    assert!(list(&w.qf).is_empty());
    assert!(list(&w.root.path().join("work/work")).is_empty());
    w.with_engine(|e| assert!(e.db.all().unwrap().is_empty()));
}

/// The overlapped executor end to end: small batches, and every message's second copy dropped
/// as soon as its first was claimed, so copies of one message meet in consecutive batches.
#[test]
fn overlapped_batches_deliver_every_recipient_exactly_once() {
    let mut w = World::new();
    let second = w.root.path().join("second");
    std::fs::create_dir_all(&second).unwrap();
    let mut ids = Vec::new();
    for i in 0..24 {
        let id = w.drop_copy(None, &[], &format!("message {i}\n"));
        // The original stays in Exim's spool (carol deferred), so each re-queue mints a new id.
        std::fs::copy(w.qf.join(format!("{id}-H")), w.input().join(format!("{id}-H"))).unwrap();
        std::fs::copy(w.qf.join(format!("{id}-D")), w.input().join(format!("{id}-D"))).unwrap();
        // Exim's retry for carol, kept aside until the first copy has been claimed.
        w.drop_copy_aside(&id, &["bob@dest.example"], &format!("message {i}\n"), &second);
        ids.push(id);
    }
    let mut second_copies: Vec<MessageId> = ids.clone();
    let mut handled = Vec::new();
    let qf = w.qf.clone();
    w.with_engine(|e| {
        e.pipeline.batch.max_messages = 3;
        let e = &*e;
        let intake = |_: &Engine<'_>, claimed: usize| {
            // Each second copy as soon as its first has left the queuefile directory.
            let before = second_copies.len();
            second_copies.retain(|id| {
                if qf.join(format!("{id}-H")).exists() {
                    return true;
                }
                move_pair(id, &second, &qf);
                false
            });
            if claimed == 0 && before == 0 {
                Next::Drain
            } else {
                Next::Claim
            }
        };
        e.run_overlapped(intake, |_, h| {
            handled.extend(h);
            Ok(())
        })
        .unwrap();
    });
    assert!(second_copies.is_empty());
    assert_eq!(handled.len(), 48, "every copy handled once");
    // Each message's recipients, over every re-queued copy: bob and carol, once each.
    let mut delivered: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for h in w.queued().into_iter().filter(|h| !ids.contains(&h.id)) {
        let original = handled.iter().find(|x| x.target_id.as_deref() == Some(h.id.as_str())).unwrap();
        delivered
            .entry(original.original_id.clone())
            .or_default()
            .extend(h.pending_recipients().map(|(_, r)| String::from_utf8_lossy(r.address()).into_owned()));
    }
    assert_eq!(delivered.len(), ids.len());
    for (id, mut rcpts) in delivered {
        rcpts.sort();
        assert_eq!(rcpts, ["bob@dest.example", "carol@dest.example"], "{id}");
    }
    assert!(list(&w.qf).is_empty());
    assert!(list(&w.root.path().join("work/work")).is_empty());
    w.with_engine(|e| assert!(e.db.all().unwrap().is_empty()));
}

/// A stage the test keeps a handle on, to read what it saw after the engine is done with it.
struct Shared<S>(Arc<S>);

impl<S: Stage> Stage for Shared<S> {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn parallelism(&self) -> usize {
        self.0.parallelism()
    }
    fn check(&self, m: &MessageView<'_>) -> Result<StageResult, StageError> {
        self.0.check(m)
    }
}

/// A stage whose checks wait until `want` of them are running at once (or a deadline passes),
/// and which says it can use that many: the engine must scan that many messages at a time even
/// with fewer cores, as it does to keep clamd's connections busy.
struct RendezvousStage {
    want: usize,
    running: std::sync::Mutex<(usize, usize)>,
    cv: std::sync::Condvar,
}

impl Stage for RendezvousStage {
    fn name(&self) -> &str {
        "rendezvous"
    }
    fn parallelism(&self) -> usize {
        self.want
    }
    fn check(&self, _: &MessageView<'_>) -> Result<StageResult, StageError> {
        let mut g = self.running.lock().unwrap();
        g.0 += 1;
        g.1 = g.1.max(g.0);
        self.cv.notify_all();
        let (mut g, _) = self.cv.wait_timeout_while(g, Duration::from_secs(10), |g| g.1 < self.want).unwrap();
        g.0 -= 1;
        Ok(StageResult::clean())
    }
}

#[test]
fn a_stage_that_waits_on_a_service_gets_as_many_messages_at_once_as_it_can_use() {
    let mut w = World::new();
    let cores = std::thread::available_parallelism().unwrap().get();
    let want = cores + 2;
    for i in 0..want * 2 {
        w.drop_copy(None, &[], &format!("message {i}\n"));
    }
    let stage = Arc::new(RendezvousStage { want, running: Default::default(), cv: Default::default() });
    let lines = w.with_engine(|e| {
        e.stages = vec![Box::new(Shared(Arc::clone(&stage)))];
        run_until_idle(e)
    });
    assert_eq!(lines.iter().filter(|l| l.contains("action=deliver")).count(), want * 2, "{lines:?}");
    assert_eq!(stage.running.lock().unwrap().1, want, "checks running at once");
}

/// A panic in a scan outside the stages (here in the engine's question to a stage about its
/// width) stops the run with an error, instead of leaving a gap in the commit order.
#[test]
fn a_panic_in_a_scan_stops_the_run_with_an_error() {
    struct PanicsOnAsk;
    impl Stage for PanicsOnAsk {
        fn name(&self) -> &str {
            "panics"
        }
        fn parallelism(&self) -> usize {
            panic!("asked for its width")
        }
        fn check(&self, _: &MessageView<'_>) -> Result<StageResult, StageError> {
            Ok(StageResult::clean())
        }
    }
    let mut w = World::new();
    w.drop_copy(None, &[], "body\n");
    let result = w.with_engine(|e| {
        e.stages = vec![Box::new(PanicsOnAsk)];
        e.run_overlapped(|_, claimed| if claimed == 0 { Next::Drain } else { Next::Claim }, |_, _| Ok(()))
    });
    let err = result.unwrap_err().to_string();
    assert_eq!(err, "a scan panicked: asked for its width");
    // Not lost: the claim is still in the journal for the next start.
    assert_eq!(w.with_engine(|e| e.db.all().unwrap().len()), 1);
}

/// While one batch waits on a slow service, the batches after it may not pile up behind it in
/// the commit order: at most four batches (two scanning, one waiting for a scanner, one
/// committing) are claimed and not committed.
#[test]
fn a_slow_batch_holds_the_intake_back() {
    struct SlowFirst {
        seen: std::sync::Mutex<usize>,
        more: std::sync::Condvar,
        total: usize,
    }
    impl Stage for SlowFirst {
        fn name(&self) -> &str {
            "slow-first"
        }
        fn check(&self, m: &MessageView<'_>) -> Result<StageResult, StageError> {
            let mut seen = self.seen.lock().unwrap();
            *seen += 1;
            self.more.notify_all();
            if m.to_vec().unwrap().ends_with(b"message 0\n") {
                // Until every other message was scanned, or long enough to be sure they cannot be.
                let (s, _) = self.more.wait_timeout_while(seen, Duration::from_secs(3), |s| *s < self.total).unwrap();
                seen = s;
            }
            drop(seen);
            Ok(StageResult::clean())
        }
    }
    let mut w = World::new();
    let total = 20;
    for i in 0..total {
        w.drop_copy(None, &[], &format!("message {i}\n"));
    }
    let stage = SlowFirst { seen: Default::default(), more: Default::default(), total };
    let mut most_claimed = 0;
    let lines = w.with_engine(|e| {
        e.pipeline.batch.max_messages = 1;
        e.stages = vec![Box::new(stage)];
        let mut lines = Vec::new();
        e.run_overlapped(
            |e, claimed| {
                most_claimed = most_claimed.max(e.db.all().unwrap().len());
                if claimed == 0 {
                    Next::Drain
                } else {
                    Next::Claim
                }
            },
            |_, handled| {
                lines.extend(handled.iter().map(|h| h.log_line()));
                Ok(())
            },
        )
        .unwrap();
        lines
    });
    assert_eq!(lines.len(), total, "{lines:?}");
    assert!(most_claimed <= 4, "claimed and not committed at once: {most_claimed}");
}

/// The reasons in the `verdict.json` of the last quarantine entry (by key).
fn last_quarantine_reasons(w: &World) -> serde_json::Value {
    let quarantine = w.root.path().join("work/quarantine");
    let entry = list(&quarantine).pop().unwrap();
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(quarantine.join(&entry).join("verdict.json")).unwrap()).unwrap();
    verdict["reasons"].clone()
}

#[test]
fn a_message_that_stops_the_daemon_is_isolated_and_quarantined_and_the_others_go_through() {
    let mut w = World::new();
    let poison = w.drop_copy(None, &[], "poison\n");
    let innocent: Vec<MessageId> = (0..2).map(|i| w.drop_copy(None, &[], &format!("innocent {i}\n"))).collect();
    // The daemon claims all three in one batch and dies while scanning it.
    let first = w.with_engine(|e| e.claim_batch().unwrap());
    assert_eq!(first.len(), 3);
    // Each start recovers and scans the claims one at a time; scanning the poison kills it again.
    let mut starts = Vec::new();
    for _ in 0..6 {
        let (notes, lines, died) = w.with_engine(|e| {
            let notes = e.recover().unwrap();
            let mut lines = Vec::new();
            loop {
                let batch = e.claim_batch().unwrap();
                if batch.is_empty() {
                    return (notes, lines, false);
                }
                // Scanning it kills the daemon; quarantining it unscanned does not.
                if batch.len() == 1 && batch[0].original_id == poison.as_str() && batch[0].crashed_scans < 3 {
                    return (notes, lines, true);
                }
                lines.extend(e.process(batch).unwrap().iter().map(|h| h.log_line()));
            }
        });
        starts.push((notes, lines.clone(), died));
        if !died {
            break;
        }
    }
    // Start 1: the three have no lone scans yet, so they go in key order and the poison, first,
    // kills it (its first crashed scan, and the others'). Start 2: the innocents (fewer lone
    // scans) go first, alone, and are delivered; then the poison kills it again (its second).
    // Start 3: its third crash counted, the poison is quarantined unscanned.
    assert_eq!(starts.len(), 3, "{starts:#?}");
    let isolating = |n: usize| vec![format!("{n} claims left by a stopped daemon are scanned one at a time")];
    assert_eq!((&starts[0].0, starts[0].1.len(), starts[0].2), (&isolating(3), 0, true));
    assert_eq!((&starts[1].0, starts[1].1.len(), starts[1].2), (&isolating(3), 2, true));
    for (line, id) in starts[1].1.iter().zip(&innocent) {
        assert!(line.starts_with(&format!("{id} ")) && line.contains("action=deliver"), "{line}");
    }
    assert_eq!((&starts[2].0, starts[2].2), (&isolating(1), false));
    assert_eq!(starts[2].1.len(), 1);
    assert!(
        starts[2].1[0].starts_with(&format!("{poison} ")) && starts[2].1[0].contains("action=quarantine"),
        "{:?}",
        starts[2]
    );
    assert_eq!(
        last_quarantine_reasons(&w),
        serde_json::json!([
            "processing attempts exceeded: 3 scans of this message crashed (a stage panicked, or the daemon stopped during it)"
        ])
    );
    assert!(list(&w.root.path().join("work/rejected")).is_empty());
    let mut queued: Vec<MessageId> = w.queued().into_iter().map(|h| h.id).collect();
    queued.sort();
    assert_eq!(queued, innocent);
    assert!(w.with_engine(|e| e.db.all().unwrap()).is_empty(), "the journal is empty");
}

/// A daemon killed over and over before it gets to the lone scans (as by an admin's or a
/// supervisor's repeated kills right after each start) counts only the stop that found the
/// claims being scanned: the claims waiting for their lone scan are not quarantined for stops
/// during which nothing looked at them, and a stop during one lone scan counts against that
/// claim alone.
#[test]
fn stops_before_a_lone_scan_starts_do_not_count_against_the_claims_waiting_for_it() {
    let mut w = World::new();
    let ids: Vec<MessageId> = (0..3).map(|i| w.drop_copy(None, &[], &format!("waiting {i}\n"))).collect();
    assert_eq!(w.with_engine(|e| e.claim_batch().unwrap()).len(), 3);
    // More stops than processing_attempts (3), each right after recovery.
    for _ in 0..5 {
        w.with_engine(|e| e.recover().unwrap());
    }
    let crashed =
        |w: &World| w.with_engine(|e| e.db.all().unwrap()).iter().map(|r| r.crashed_scans).collect::<Vec<_>>();
    assert_eq!(crashed(&w), [1, 1, 1]);
    // A stop during the first lone scan: that claim's second crashed scan, the others' none.
    w.with_engine(|e| {
        e.recover().unwrap();
        let lone = e.claim_batch().unwrap();
        assert_eq!(lone.iter().map(|r| r.original_id.as_str()).collect::<Vec<_>>(), [ids[0].as_str()]);
    });
    w.with_engine(|e| e.recover().unwrap());
    assert_eq!(crashed(&w), [2, 1, 1]);
    let lines = w.with_engine(run_until_idle);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("action=deliver")), "{lines:?}");
    let mut queued: Vec<MessageId> = w.queued().into_iter().map(|h| h.id).collect();
    queued.sort();
    assert_eq!(queued, ids);
}

/// A stop while a work file was being rewritten leaves its temporary file; the next start
/// removes it (it would otherwise stay in the work directory for ever).
#[test]
fn temporary_files_of_an_interrupted_rewrite_are_removed_at_start() {
    let w = World::new();
    let work = w.root.path().join("work/work");
    std::fs::create_dir_all(&work).unwrap();
    for name in ["000000000010.1xZ2rX-000000007vQ-3Vfp+2-H.new.tmp", "000000000011.1xZ2rX-000000007vQ-3Vfq-D.own.tmp"] {
        std::fs::write(work.join(name), b"partial").unwrap();
    }
    let mut notes = w.with_engine(|e| e.recover().unwrap());
    notes.sort();
    assert_eq!(
        notes,
        [
            "000000000010.1xZ2rX-000000007vQ-3Vfp+2-H.new.tmp: a rewrite the stop interrupted; removed",
            "000000000011.1xZ2rX-000000007vQ-3Vfq-D.own.tmp: a rewrite the stop interrupted; removed",
        ]
    );
    assert!(list(&work).is_empty(), "{:?}", list(&work));
}

#[test]
fn deferred_claims_are_not_isolated_by_restarts() {
    let mut w = World::new();
    w.down.store(true, Ordering::SeqCst);
    let id = w.drop_copy(None, &[], "deferred\n");
    let lines = w.with_engine(|e| {
        let batch = e.claim_batch().unwrap();
        e.process(batch).unwrap().iter().map(|h| h.log_line()).collect::<Vec<_>>()
    });
    assert!(lines[0].contains("action=defer"), "{lines:?}");
    // Five restarts while it waits: it was not in flight at any of them.
    for _ in 0..5 {
        assert_eq!(w.with_engine(|e| e.recover().unwrap()), Vec::<String>::new());
    }
    let rec = w.with_engine(|e| e.db.all().unwrap()).pop().unwrap();
    assert_eq!((rec.lone_scans, rec.scan_run), (0, None));
    w.down.store(false, Ordering::SeqCst);
    let lines = w.with_engine(|e| {
        e.recover().unwrap();
        run_until_idle(e)
    });
    assert!(
        lines.len() == 1 && lines[0].starts_with(&format!("{id} ")) && lines[0].contains("action=deliver"),
        "{lines:?}"
    );
}

#[test]
fn an_infected_message_copied_once_per_recipient_makes_one_quarantine_entry() {
    use spoolsift::sinks::quarantine::QuarantineStore;
    let store = |w: &World| QuarantineStore::new(&w.root.path().join("work/quarantine")).list().unwrap();
    // Copies in separate batches: the first holds bob and carol, the second (queuefile's retry
    // after bob's attempt) carol only, whom the entry already holds.
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "VIRUS-MARKER\n");
    let first = w.with_engine(run_until_idle);
    assert!(first[0].contains("action=quarantine"), "{first:?}");
    w.drop_copy(Some(&id), &["bob@dest.example"], "VIRUS-MARKER\n");
    let second = w.with_engine(run_until_idle);
    assert!(second.len() == 1 && second[0].contains("action=nothing-owed"), "{second:?}");
    let entries = store(&w);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].verdict["recipients"], serde_json::json!(["bob@dest.example", "carol@dest.example"]));
    assert!(list(&w.root.path().join("work/work")).is_empty());

    // Both copies in one batch: the same, one entry.
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "VIRUS-MARKER\n");
    let aside = w.root.path().join("aside");
    std::fs::create_dir_all(&aside).unwrap();
    w.drop_copy_aside(&id, &["bob@dest.example"], "VIRUS-MARKER\n", &aside);
    let lines = w.with_engine(|e| {
        let mut batch = e.claim_batch().unwrap();
        move_pair(&id, &aside, &w.qf);
        batch.extend(e.claim_batch().unwrap());
        assert_eq!(batch.len(), 2);
        e.process(batch).unwrap().iter().map(|h| h.log_line()).collect::<Vec<_>>()
    });
    assert_eq!(lines.iter().filter(|l| l.contains("action=quarantine")).count(), 1, "{lines:?}");
    assert_eq!(lines.iter().filter(|l| l.contains("action=nothing-owed")).count(), 1, "{lines:?}");
    assert_eq!(store(&w).len(), 1);
}

#[test]
fn a_quarantined_copy_holds_only_the_recipients_it_owed() {
    use spoolsift::sinks::quarantine::QuarantineStore;
    let mut w = World::new();
    // Copy 1 (bob and carol pending) is deferred, and waits.
    w.down.store(true, Ordering::SeqCst);
    let id = w.drop_copy(None, &[], "VIRUS-MARKER\n");
    // One pass only: with no backoff here, a deferral is due again at once.
    let lines = w.with_engine(|e| {
        let batch = e.claim_batch().unwrap();
        e.process(batch).unwrap().iter().map(|h| h.log_line()).collect::<Vec<_>>()
    });
    assert!(lines[0].contains("action=defer"), "{lines:?}");
    let later = |w: &World, not_before: u64| {
        w.with_engine(|e| {
            let mut rec = e.db.all().unwrap().pop().unwrap();
            rec.not_before = not_before;
            e.db.put(&[rec]).unwrap();
        })
    };
    later(&w, u64::MAX);
    // Meanwhile copy 2 (carol done already) is clean: bob is delivered.
    w.down.store(false, Ordering::SeqCst);
    w.drop_copy(Some(&id), &["carol@dest.example"], "clean now\n");
    let lines = w.with_engine(run_until_idle);
    assert!(
        lines.len() == 1 && lines[0].contains("for bob@dest.example S=") && lines[0].contains(" action=deliver"),
        "{lines:?}"
    );
    // Copy 1 comes back, infected: it owes carol only, and its entry must not deliver bob again.
    later(&w, 0);
    let lines = w.with_engine(run_until_idle);
    assert!(
        lines.len() == 1
            && lines[0].contains("for carol@dest.example S=")
            && lines[0].contains(" action=quarantine stages=[marker=infected (Test.Marker)/")
            && lines[0].contains("ms] quarantine=000000000000."),
        "{lines:?}"
    );
    let entry = QuarantineStore::new(&w.root.path().join("work/quarantine")).list().unwrap().pop().unwrap();
    let h = SpoolHeader::read(&entry.header_path()).unwrap();
    let pending: Vec<&[u8]> = h.pending_recipients().map(|(_, r)| r.address()).collect();
    assert_eq!(pending, [b"carol@dest.example".as_slice()]);
    assert_eq!(entry.verdict["recipients"], serde_json::json!(["carol@dest.example"]));
}

#[test]
fn a_copy_arriving_after_a_finished_quarantine_is_not_taken_into_it() {
    use spoolsift::sinks::quarantine::QuarantineStore;
    let mut w = World::new();
    let id = w.drop_copy(None, &[], "VIRUS-MARKER\n");
    // The quarantine is complete; the stop came before the journal was told.
    let key = w.with_engine(|e| {
        let rec = e.claim_batch().unwrap().pop().unwrap();
        let (wh, wd) = e.dirs.files(&rec.key);
        let verdict = serde_json::json!({"id": id.as_str(), "recipients": ["bob@dest.example", "carol@dest.example"], "reasons": []});
        e.quarantine.store(&rec.key, &id, &wh, &wd, &verdict).unwrap();
        rec.key
    });
    // queuefile's next copy of the same message is waiting at the restart.
    w.drop_copy(Some(&id), &["bob@dest.example"], "VIRUS-MARKER\n");
    let notes = w.with_engine(|e| e.recover().unwrap());
    assert_eq!(notes, [format!("{key}: quarantined before the stop; its recipients are held there")]);
    let entries = QuarantineStore::new(&w.root.path().join("work/quarantine")).list().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(SpoolHeader::read(&entries[0].header_path()).unwrap().pending_recipients().count(), 2, "untouched");
    // The new copy owes nothing: its recipient is held already.
    let lines = w.with_engine(run_until_idle);
    assert!(lines.len() == 1 && lines[0].contains("action=nothing-owed"), "{lines:?}");
    assert_eq!(QuarantineStore::new(&w.root.path().join("work/quarantine")).list().unwrap().len(), 1);
}

/// A message on which a stage panics every time is deferred and tried again, each panic counted
/// against it; at `processing_attempts` (3 here) it is quarantined with that reason, while the
/// other messages are delivered on their first try.
#[test]
fn a_message_that_crashes_a_stage_every_time_is_quarantined_after_its_attempts() {
    struct PanicsOnPoison;
    impl Stage for PanicsOnPoison {
        fn name(&self) -> &str {
            "fragile"
        }
        fn check(&self, m: &MessageView<'_>) -> Result<StageResult, StageError> {
            if m.to_vec().unwrap().windows(6).any(|w| w == b"POISON") {
                panic!("a bug met on this message");
            }
            Ok(StageResult::clean())
        }
    }
    let mut w = World::new();
    let poison = w.drop_copy(None, &[], "POISON\n");
    let others: Vec<MessageId> = (0..3).map(|i| w.drop_copy(None, &[], &format!("fine {i}\n"))).collect();
    let passes = w.with_engine(|e| {
        e.stages = vec![Box::new(PanicsOnPoison)];
        let mut passes = Vec::new();
        loop {
            let batch = e.claim_batch().unwrap();
            if batch.is_empty() {
                break passes;
            }
            let mut lines: Vec<(String, String)> = e
                .process(batch)
                .unwrap()
                .iter()
                .map(|h| (h.original_id.clone(), h.action.name().to_string()))
                .collect();
            lines.sort();
            passes.push(lines);
        }
    });
    let mut first: Vec<(String, String)> = others.iter().map(|id| (id.to_string(), "deliver".to_string())).collect();
    first.push((poison.to_string(), "defer".to_string()));
    first.sort();
    assert_eq!(
        passes,
        [
            first,
            vec![(poison.to_string(), "defer".to_string())],
            vec![(poison.to_string(), "defer".to_string())],
            vec![(poison.to_string(), "quarantine".to_string())],
        ]
    );
    assert_eq!(
        last_quarantine_reasons(&w),
        serde_json::json!([
            "processing attempts exceeded: 3 scans of this message crashed (a stage panicked, or the daemon stopped during it)"
        ])
    );
    let mut queued: Vec<MessageId> = w.queued().into_iter().map(|h| h.id).collect();
    queued.sort();
    assert_eq!(queued, others);
}
