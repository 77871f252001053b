//! Rules through the engine, without Exim: each rule changes the outcome of the message it is
//! written for, and the same message without the rule comes to the pipeline's own outcome. The
//! message is the spec example (from alice@sender.example, client 192.0.2.10, to
//! bob@ and carol@dest.example), with a stage that calls a body spam when it says so.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use spoolsift::engine::{Engine, EngineBuilder, Handled, Outcome, WorkDirs};
use spoolsift::intake::queuefile::QueuefileDir;
use spoolsift::pipeline::{Action, PipelineConfig};
use spoolsift::requeue::TargetSpool;
use spoolsift::spool::{MessageView, OptionLine, Position, SpoolHeader};
use spoolsift::stages::{Stage, StageError, StageResult, Verdict};
use spoolsift::state::{open_env, ClaimRecord, StateDb};

/// Spam when the body says "SPAM-MARKER". It stands in for the pipeline's `content` stage, so
/// that rules may name it.
struct SpamStage;

impl Stage for SpamStage {
    fn name(&self) -> &str {
        "content"
    }
    fn check(&self, m: &MessageView<'_>) -> Result<StageResult, StageError> {
        let all = m.to_vec().unwrap();
        Ok(StageResult::new(if all.windows(11).any(|w| w == b"SPAM-MARKER") { Verdict::Spam } else { Verdict::Clean }))
    }
}

const ID: &str = "1xXORz-0000000058C-2p8L";

/// The pipeline: spam is quarantined, with `rules` (inline lines) on top.
fn pipeline(dir: &Path, rules: &[&str]) -> PipelineConfig {
    let lines: Vec<String> = rules.iter().map(|r| format!("{r:?}")).collect();
    let text = format!(
        "name = \"rules-test\"\nauthserv_id = \"mx.test.example\"\n[policy]\nspam = \"quarantine\"\n\
         [stages.content]\n[rules]\nlines = [{}]\n",
        lines.join(", ")
    );
    let path = dir.join("rules-test.toml");
    std::fs::write(&path, &text).unwrap();
    PipelineConfig::load(&path).unwrap()
}

/// Run one message (the spec example with `body`, and `edit` applied to its `-H`) through an
/// engine for `cfg`; what became of it, and the `-H` files queued.
fn run(root: &Path, cfg: PipelineConfig, body: &str, edit: impl FnOnce(&mut SpoolHeader)) -> (Handled, Vec<PathBuf>) {
    let (mut handled, queued) = run_all(root, cfg, body, edit);
    assert_eq!(handled.len(), 1, "{handled:?}");
    (handled.remove(0), queued)
}

/// [`run`], for a message that may become more than one copy.
fn run_all(
    root: &Path,
    cfg: PipelineConfig,
    body: &str,
    edit: impl FnOnce(&mut SpoolHeader),
) -> (Vec<Handled>, Vec<PathBuf>) {
    drop_message(root, body, edit);
    let handled = with_engine(root, cfg, |engine| {
        let batch = engine.claim_batch().unwrap();
        engine.process(batch).unwrap()
    });
    (handled, queued(root))
}

/// Drop the spec example with `body` into the queuefile directory.
fn drop_message(root: &Path, body: &str, edit: impl FnOnce(&mut SpoolHeader)) {
    let qf = root.join("qf");
    std::fs::create_dir_all(&qf).unwrap();
    std::fs::create_dir_all(root.join("spool/input")).unwrap();
    let mut h = SpoolHeader::read(Path::new("tests/data/spec-example/1xXORz-0000000058C-2p8L-H")).unwrap();
    h.options.set(OptionLine::with_value("body_linecount", body.matches('\n').count().to_string().as_bytes()));
    edit(&mut h);
    std::fs::write(qf.join(format!("{ID}-D")), format!("{ID}-D\n{body}")).unwrap();
    std::fs::write(qf.join(format!("{ID}-H")), h.to_bytes()).unwrap();
}

/// Run `f` with an engine for `cfg` over `root`'s directories (the journal stays on disk between
/// calls, as across a stop).
fn with_engine<T>(root: &Path, cfg: PipelineConfig, f: impl FnOnce(&mut Engine<'_>) -> T) -> T {
    with_stages(root, cfg, Some(vec![Box::new(SpamStage)]), f)
}

/// [`with_engine`] with `stages`, or with the pipeline's own (the built-in content scanner).
fn with_stages<T>(
    root: &Path,
    cfg: PipelineConfig,
    stages: Option<Vec<Box<dyn Stage>>>,
    f: impl FnOnce(&mut Engine<'_>) -> T,
) -> T {
    let dirs = WorkDirs::new(&root.join("work"));
    dirs.create().unwrap();
    let env = open_env(&dirs.state).unwrap();
    let target = TargetSpool::new(&root.join("spool"), None).unwrap();
    let intake = QueuefileDir::new(&root.join("qf"), Some(&target.input), Duration::from_secs(900));
    let mut builder = EngineBuilder::new(cfg, StateDb::new(&env).unwrap(), dirs, intake, target);
    if let Some(stages) = stages {
        builder = builder.stages(stages);
    }
    let mut engine = builder.build().unwrap();
    f(&mut engine)
}

/// The `-H` files in the target spool.
fn queued(root: &Path) -> Vec<PathBuf> {
    let input = root.join("spool/input");
    support::list(&input).into_iter().filter(|n| n.ends_with("-H")).map(|n| input.join(n)).collect()
}

const SPAM: &str = "Buy now. SPAM-MARKER\n";

/// The outcome and the rules named for it, with and without `rules`.
fn with_and_without(rules: &[&str], body: &str, edit: impl Fn(&mut SpoolHeader)) -> [(Outcome, Vec<String>); 2] {
    [rules, &[]].map(|rules| {
        let root = tempfile::tempdir().unwrap();
        let cfg = pipeline(root.path(), rules);
        let (h, _) = run(root.path(), cfg, body, &edit);
        (h.action, h.rules)
    })
}

#[test]
fn a_sender_allow_list_delivers_spam_from_the_listed_domains() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("trusted.list"), "# partners\nsender.example\n*@other.example\n").unwrap();
    let cfg = pipeline(root.path(), &["from=<trusted.list => policy.spam=deliver"]);
    let (h, queued) = run(root.path(), cfg, SPAM, |_| {});
    assert_eq!(h.action, Outcome::Acted(Action::Deliver));
    assert_eq!(h.rules, [format!("{}:7", root.path().join("rules-test.toml").display())]);
    assert_eq!(queued.len(), 1);
    // Not listed: the pipeline's quarantine.
    let [with, without] = with_and_without(&["from=*@elsewhere.example => policy.spam=deliver"], SPAM, |_| {});
    assert_eq!(with.0, Outcome::Acted(Action::Quarantine));
    assert_eq!(without.0, Outcome::Acted(Action::Quarantine));
    assert!(with.1.is_empty() && without.1.is_empty());
}

#[test]
fn a_client_cidr_rule_holds_what_its_network_sends() {
    let rule = ["client=192.0.2.0/28 => policy.clean=hold"];
    let [with, without] = with_and_without(&rule, "Hello.\n", |_| {});
    assert_eq!(with.0, Outcome::Acted(Action::Hold));
    assert_eq!(without.0, Outcome::Acted(Action::Deliver));
    // The same message from outside the network is not held.
    let [other, _] = with_and_without(&rule, "Hello.\n", |h| {
        h.options.set(OptionLine::with_value("host_address", b"[192.0.2.77]:40000"));
    });
    assert_eq!(other.0, Outcome::Acted(Action::Deliver));
}

#[test]
fn a_per_domain_size_limit_blocks_a_larger_message() {
    let rule = ["to=dest.example => max_message_bytes=1000"];
    let big = "x".repeat(2000) + "\n";
    let [with, without] = with_and_without(&rule, &big, |_| {});
    // Blocked for both recipients: the pipeline quarantines what is blocked.
    assert_eq!(with.0, Outcome::Acted(Action::Quarantine));
    assert_eq!(without.0, Outcome::Acted(Action::Deliver));
    let [small, _] = with_and_without(&rule, "small\n", |_| {});
    assert_eq!(small.0, Outcome::Acted(Action::Deliver));
}

#[test]
fn a_stage_turned_off_by_rule_is_not_counted() {
    let [with, without] = with_and_without(&["from=sender.example => stage.content=off"], SPAM, |_| {});
    assert_eq!(with.0, Outcome::Acted(Action::Deliver));
    assert_eq!(without.0, Outcome::Acted(Action::Quarantine));
}

/// A body with one attachment named `name`, for the built-in content scanner.
fn with_attachment(name: &str) -> String {
    format!(
        "--b\nContent-Type: text/plain\n\nSee the attachment.\n--b\nContent-Type: application/octet-stream\n\
         Content-Disposition: attachment; filename=\"{name}\"\nContent-Transfer-Encoding: base64\n\nAAAA\n--b--\n"
    )
}

/// Make the spec example's `-H` say its body is `multipart/mixed` with boundary `b`.
fn multipart(h: &mut SpoolHeader) {
    h.headers.add(b"MIME-Version", b"1.0", Position::Bottom).unwrap();
    h.headers.add(b"Content-Type", b"multipart/mixed; boundary=\"b\"", Position::Bottom).unwrap();
}

/// The spec example as a multipart message (its `-H` says so) with `body`, through the pipeline's
/// own content scanner: per recipient, the action of the copy it is in, and that copy's reasons.
fn content_outcomes(rules: &[&str], body: &str) -> Vec<(String, Outcome, Vec<String>)> {
    let root = tempfile::tempdir().unwrap();
    let cfg = pipeline(root.path(), rules);
    drop_message(root.path(), body, multipart);
    let handled = with_stages(root.path(), cfg, None, |engine| {
        let batch = engine.claim_batch().unwrap();
        engine.process(batch).unwrap()
    });
    let mut out: Vec<(String, Outcome, Vec<String>)> =
        handled.iter().flat_map(|h| h.recipients.iter().map(|r| (r.clone(), h.action, h.reasons.clone()))).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn a_recipients_own_content_lists_change_what_is_blocked_for_it_alone() {
    let quarantined = |rule: &str| (Outcome::Acted(Action::Quarantine), vec![format!("content: blocked ({rule})")]);
    let delivered = (Outcome::Acted(Action::Deliver), Vec::<String>::new());
    let as_pairs = |v: Vec<(String, Outcome, Vec<String>)>| -> Vec<(String, (Outcome, Vec<String>))> {
        v.into_iter().map(|(r, a, why)| (r, (a, why))).collect()
    };
    let exe = with_attachment("tool.exe");
    // Bob takes executables; carol gets the pipeline's list.
    let allow = ["to=bob@dest.example => content.allow_extensions=.EXE,scr"];
    assert_eq!(
        as_pairs(content_outcomes(&allow, &exe)),
        [
            ("bob@dest.example".to_string(), delivered.clone()),
            ("carol@dest.example".to_string(), quarantined("filename:extension:exe")),
        ]
    );
    assert_eq!(
        as_pairs(content_outcomes(&[], &exe)),
        [
            ("bob@dest.example".to_string(), quarantined("filename:extension:exe")),
            ("carol@dest.example".to_string(), quarantined("filename:extension:exe")),
        ]
    );
    // Carol's domain refuses macro documents, which the pipeline's list lets through.
    let docm = with_attachment("report.docm");
    let block = ["to=carol@dest.example => content.block_extensions=docm,xlsm"];
    assert_eq!(
        as_pairs(content_outcomes(&block, &docm)),
        [
            ("bob@dest.example".to_string(), delivered.clone()),
            ("carol@dest.example".to_string(), quarantined("filename:extension:docm")),
        ]
    );
    assert_eq!(
        as_pairs(content_outcomes(&[], &docm)),
        [("bob@dest.example".to_string(), delivered.clone()), ("carol@dest.example".to_string(), delivered.clone())]
    );
    // By declared type, from a list file: both recipients have the same changes, so one copy.
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("types.list"), "# no archives\napplication/zip\n").unwrap();
    let zip = with_attachment("notes.zip").replace("application/octet-stream", "application/zip");
    let cfg = pipeline(root.path(), &["to=dest.example => content.block_types=<types.list"]);
    drop_message(root.path(), &zip, multipart);
    let handled = with_stages(root.path(), cfg, None, |e| {
        let batch = e.claim_batch().unwrap();
        e.process(batch).unwrap()
    });
    assert_eq!(handled.len(), 1, "{handled:?}");
    assert_eq!(handled[0].action, Outcome::Acted(Action::Quarantine));
    assert_eq!(handled[0].reasons, ["content: blocked (mime:application/zip)"]);
}

/// Header settings are per copy: a recipient whose rules change them gets a copy of its own,
/// even of a clean message.
#[test]
fn a_recipients_header_settings_apply_to_its_copy_alone() {
    let root = tempfile::tempdir().unwrap();
    let cfg = pipeline(
        root.path(),
        &["to=bob@dest.example => headers.status=off headers.add=\"X-Route: sales ({action}, {verdict})\""],
    );
    let (handled, queued) = run_all(root.path(), cfg, "Hello.\n", |_| {});
    assert_eq!(handled.len(), 2, "{handled:?}");
    assert!(handled.iter().all(|h| h.action == Outcome::Acted(Action::Deliver)), "{handled:?}");
    let mut copies: Vec<(Vec<String>, Vec<String>)> = queued
        .iter()
        .map(|p| {
            let h = SpoolHeader::read(p).unwrap();
            let rcpts =
                h.pending_recipients().map(|(_, r)| String::from_utf8_lossy(r.address()).into_owned()).collect();
            let ours = h
                .headers
                .live()
                .map(|l| String::from_utf8_lossy(l.text()).into_owned())
                .filter(|t| t.starts_with("X-Spoolsift") || t.starts_with("X-Route"))
                .collect();
            (rcpts, ours)
        })
        .collect();
    copies.sort();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        copies,
        [
            (vec!["bob@dest.example".to_string()], vec!["X-Route: sales (deliver, clean)\n".to_string()]),
            (
                vec!["carol@dest.example".to_string()],
                vec![format!("X-Spoolsift-Status: clean (content=clean) spoolsift {version}\n")]
            ),
        ]
    );
    for (rule, why) in [
        ("headers.add=NoColon", "headers.add=\"NoColon\": a header is \"Name: value\" (the value a template)"),
        ("headers.status=maybe", "headers.status=maybe: on or off"),
        (
            "headers.subject=x",
            "headers.subject: the header settings a rule may change are headers.status, headers.virus, \
             headers.authentication_results, headers.add",
        ),
    ] {
        let text = format!(
            "name = \"t\"\nauthserv_id = \"mx.test.example\"\n[stages.content]\n[rules]\nlines = [\"all => {rule}\"]\n"
        );
        let path = root.path().join("t.toml");
        std::fs::write(&path, text).unwrap();
        let err = PipelineConfig::load(&path).unwrap_err().to_string();
        assert!(err.ends_with(&format!("t.toml:5: {why}")), "{rule}: {err}");
    }
}

/// `spoolsift scan` applies the rules as the daemon does, and lists the copies.
#[test]
fn scan_reports_each_copy_of_a_message_the_rules_split() {
    let root = tempfile::tempdir().unwrap();
    let _ = pipeline(root.path(), &["to=bob@dest.example => content.allow_extensions=exe"]);
    drop_message(root.path(), &with_attachment("tool.exe"), multipart);
    let o = support::spoolsift(&[
        "scan",
        "--pipeline",
        root.path().join("rules-test.toml").to_str().unwrap(),
        root.path().join("qf").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(line["action"], "quarantine");
    assert_eq!(line["reasons"], serde_json::json!(["content: blocked (filename:extension:exe)"]));
    let rule = format!("{}:7", root.path().join("rules-test.toml").display());
    assert_eq!(
        line["copies"],
        serde_json::json!([
            { "recipients": ["bob@dest.example"], "action": "deliver", "reasons": [], "rules": [rule] },
            { "recipients": ["carol@dest.example"], "action": "quarantine",
              "reasons": ["content: blocked (filename:extension:exe)"], "rules": [] },
        ])
    );
    // Without the rule, one outcome and no copies listed.
    let _ = pipeline(root.path(), &[]);
    let o = support::spoolsift(&[
        "scan",
        "--pipeline",
        root.path().join("rules-test.toml").to_str().unwrap(),
        root.path().join("qf").to_str().unwrap(),
    ]);
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((line["action"].as_str(), line.get("copies")), (Some("quarantine"), None));
}

#[test]
fn content_list_settings_are_checked_when_read() {
    let root = tempfile::tempdir().unwrap();
    for (rule, why) in [
        ("all => content.block_extensions=pdf.exe", "\"pdf.exe\": an extension is one word without dots (exe, docm)"),
        ("all => content.allow_types=zip", "\"zip\": a content type is type/subtype (application/zip)"),
        (
            "all => content.blocked=exe",
            "content.blocked: the content lists a rule may change are block_extensions, allow_extensions, \
             block_types, allow_types",
        ),
    ] {
        let lines = format!("{rule:?}");
        let text =
            format!("name = \"t\"\nauthserv_id = \"mx.test.example\"\n[stages.content]\n[rules]\nlines = [{lines}]\n");
        let path = root.path().join("t.toml");
        std::fs::write(&path, text).unwrap();
        let err = PipelineConfig::load(&path).unwrap_err().to_string();
        assert!(err.ends_with(&format!("t.toml:5: {why}")), "{rule}: {err}");
    }
    // Without the content stage there is no list to change.
    let text = "name = \"t\"\nauthserv_id = \"mx.test.example\"\n[stages.clamav]\n[rules]\nlines = [\"all => content.allow_extensions=exe\"]\n";
    let path = root.path().join("t.toml");
    std::fs::write(&path, text).unwrap();
    let err = PipelineConfig::load(&path).unwrap_err().to_string();
    assert!(err.ends_with("content.allow_extensions: the content stage is not enabled in this pipeline"), "{err}");
}

#[test]
fn recipients_who_want_different_things_get_a_copy_each() {
    let root = tempfile::tempdir().unwrap();
    let cfg = pipeline(root.path(), &["to=bob@dest.example => policy.spam=deliver subject_tag=\"[SPAM]\""]);
    let work = root.path().join("work");
    let (handled, queued) = run_all(root.path(), cfg, SPAM, |_| {});
    assert_eq!(handled.len(), 2, "{handled:?}");
    // Settled copies first, re-queued ones after their commit.
    let (second, first) = (&handled[0], &handled[1]);
    assert_eq!(first.action, Outcome::Acted(Action::Deliver));
    assert_eq!(second.action, Outcome::Acted(Action::Quarantine));
    assert_eq!(second.recipients, ["carol@dest.example"]);
    assert_eq!(second.reasons, ["content: spam"]);
    assert_eq!(first.recipients, ["bob@dest.example"]);
    assert_ne!(first.target_id.as_deref(), Some(ID), "a copy of a split never keeps the original id");
    assert_eq!(queued.len(), 1);
    let h = SpoolHeader::read(&queued[0]).unwrap();
    let pending: Vec<&[u8]> = h.pending_recipients().map(|(_, r)| r.address()).collect();
    assert_eq!(pending, [b"bob@dest.example".as_slice()]);
    let subject = h.headers.get(b"subject").next().unwrap().value();
    assert_eq!(String::from_utf8_lossy(&subject).trim_end(), "[SPAM] Test message with a folded subject");
    // Carol's copy is in the quarantine, holding her alone.
    let entries = support::list(&work.join("quarantine"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(entries[0].ends_with(&format!(".{ID}+2")), "{entries:?}");
    let entry = work.join("quarantine").join(&entries[0]);
    let verdict: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(verdict["recipients"], serde_json::json!(["carol@dest.example"]));
    let held = SpoolHeader::read(&entry.join(format!("{ID}-H"))).unwrap();
    let pending: Vec<&[u8]> = held.pending_recipients().map(|(_, r)| r.address()).collect();
    assert_eq!(pending, [b"carol@dest.example".as_slice()]);
    assert!(support::list(&work.join("work")).is_empty(), "nothing left in work/");
}

const SPLIT_RULE: &str = "to=bob@dest.example => policy.spam=deliver subject_tag=\"[SPAM]\"";

/// After a split, wherever it stopped: Bob's tagged copy queued once, Carol held once in the
/// quarantine, and nothing left in the work directory.
fn assert_split_outcome(root: &Path) {
    let queued = queued(root);
    assert_eq!(queued.len(), 1, "{queued:?}");
    let h = SpoolHeader::read(&queued[0]).unwrap();
    let pending: Vec<&[u8]> = h.pending_recipients().map(|(_, r)| r.address()).collect();
    assert_eq!(pending, [b"bob@dest.example".as_slice()]);
    let entries = support::list(&root.join("work/quarantine"));
    assert_eq!(entries.len(), 1, "{entries:?}");
    let verdict: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("work/quarantine").join(&entries[0]).join("verdict.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(verdict["recipients"], serde_json::json!(["carol@dest.example"]));
    assert!(support::list(&root.join("work/work")).is_empty(), "{:?}", support::list(&root.join("work/work")));
    assert!(support::list(&root.join("work/rejected")).is_empty());
}

/// The parts' pairs written, the journal not yet told: the claim is whole, the parts' files go,
/// and the message is split again.
#[test]
fn a_split_stopped_before_its_journal_write_is_done_again() {
    let root = tempfile::tempdir().unwrap();
    let cfg = pipeline(root.path(), &[SPLIT_RULE]);
    drop_message(root.path(), SPAM, |_| {});
    let key = with_engine(root.path(), cfg.clone(), |engine| {
        let batch = engine.claim_batch().unwrap();
        assert_eq!(batch.len(), 1);
        let key = batch[0].key.clone();
        let (h, d) = engine.dirs.files(&key);
        for n in [1, 2] {
            let (ph, pd) = engine.dirs.files(&format!("{key}+{n}"));
            std::fs::copy(&h, ph).unwrap();
            std::fs::hard_link(&d, pd).unwrap();
        }
        key
    });
    let handled = with_engine(root.path(), cfg, |engine| {
        let notes = engine.recover().unwrap();
        for n in [1, 2] {
            for s in ['D', 'H'] {
                let note = format!("{key}+{n}-{s}: left by a split that stopped; removed (a record holds the message)");
                assert!(notes.contains(&note), "{notes:?}");
            }
        }
        let mut all = Vec::new();
        loop {
            let batch = engine.claim_batch().unwrap();
            if batch.is_empty() {
                break all;
            }
            all.extend(engine.process(batch).unwrap());
        }
    });
    assert_eq!(handled.len(), 2, "{handled:?}");
    assert_split_outcome(root.path());
}

/// The journal says the parts own the message, the claim's own pair is still there: it goes,
/// and each part is handled as a claim of its own.
#[test]
fn a_split_stopped_after_its_journal_write_is_finished_by_its_parts() {
    let root = tempfile::tempdir().unwrap();
    let cfg = pipeline(root.path(), &[SPLIT_RULE]);
    drop_message(root.path(), SPAM, |_| {});
    let key = with_engine(root.path(), cfg.clone(), |engine| {
        let batch = engine.claim_batch().unwrap();
        let rec = batch[0].clone();
        let (h, d) = engine.dirs.files(&rec.key);
        let read = SpoolHeader::parse(&std::fs::read(&h).unwrap(), None).unwrap();
        let mut parts = Vec::new();
        for (n, other) in [(1, "carol@dest.example"), (2, "bob@dest.example")] {
            let part = format!("{}+{n}", rec.key);
            let (ph, pd) = engine.dirs.files(&part);
            let mut mine = read.clone();
            mine.non_recipients.insert(other.as_bytes());
            std::fs::write(ph, mine.to_bytes()).unwrap();
            std::fs::hard_link(&d, pd).unwrap();
            parts.push(ClaimRecord { key: part, scan_run: None, split_from: Some(rec.key.clone()), ..rec.clone() });
        }
        engine.db.replace(&[&rec.key], &parts).unwrap();
        rec.key
    });
    let handled = with_engine(root.path(), cfg, |engine| {
        let notes = engine.recover().unwrap();
        for s in ['D', 'H'] {
            let note = format!("{key}-{s}: left by a split that stopped; removed (a record holds the message)");
            assert!(notes.contains(&note), "{notes:?}");
        }
        let batch = engine.claim_batch().unwrap();
        assert_eq!(batch.len(), 2, "the two parts, nothing from the intake");
        engine.process(batch).unwrap()
    });
    assert_eq!(
        handled.iter().map(|h| (h.action, h.recipients.clone())).collect::<Vec<_>>(),
        [
            (Outcome::Acted(Action::Quarantine), vec!["carol@dest.example".to_string()]),
            (Outcome::Acted(Action::Deliver), vec!["bob@dest.example".to_string()]),
        ]
    );
    assert_split_outcome(root.path());
}

/// `spoolsift explain`: per recipient, the rules that matched, what they set, the action, and
/// the copies that result; the message stays where it is.
#[test]
fn explain_prints_each_recipients_rules_and_action() {
    let root = tempfile::tempdir().unwrap();
    let rules_dir = root.path().join("rules");
    std::fs::create_dir_all(&rules_dir).unwrap();
    std::fs::write(rules_dir.join("local.rules"), "# small mailboxes\nto=carol@dest.example => max_message_bytes=10\n")
        .unwrap();
    let p = root.path().join("p.toml");
    std::fs::write(&p, "name = \"p\"\n[stages.content]\n[rules]\nfiles = [\"rules/local.rules\"]\n").unwrap();
    let msg = root.path().join("msg");
    std::fs::create_dir_all(&msg).unwrap();
    let h = SpoolHeader::read(Path::new("tests/data/spec-example/1xXORz-0000000058C-2p8L-H")).unwrap();
    let hp = msg.join(format!("{ID}-H"));
    std::fs::write(&hp, h.to_bytes()).unwrap();
    std::fs::copy("tests/data/spec-example/1xXORz-0000000058C-2p8L-D", msg.join(format!("{ID}-D"))).unwrap();
    let before = support::list(&msg);
    let data = spoolsift::spool::DataFile::open(&msg.join(format!("{ID}-D")), &h.id).unwrap();
    let size = h.message_size(data.body_len());
    let out = support::spoolsift(&["explain", "--pipeline", p.to_str().unwrap(), hp.to_str().unwrap()]);
    let rule = format!("{}:2", rules_dir.join("local.rules").display());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{ID} <alice@sender.example> [192.0.2.10] S={size} ({hp})\n\
             \x20 stages: content=clean\n\
             \x20 bob@dest.example: deliver\n\
             \x20   rules matched: (none)\n\
             \x20 carol@dest.example: quarantine\n\
             \x20   rules matched: {rule}\n\
             \x20   max_message_bytes=10 ({rule})\n\
             \x20   reasons: rules: blocked (message size {size} over max_message_bytes 10)\n\
             \x20 2 copies: deliver (bob@dest.example); quarantine (carol@dest.example)\n",
            hp = hp.display()
        )
    );
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(support::list(&msg), before, "nothing moved");
    // A bad rule is reported by file and line, by explain as by check-config.
    std::fs::write(rules_dir.join("local.rules"), "\nto=carol@dest.example => max_message_bytes=lots\n").unwrap();
    let out = support::spoolsift(&["explain", "--pipeline", p.to_str().unwrap(), hp.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "spoolsift explain: {}:2: max_message_bytes=lots: a number of bytes above 0\n",
            rules_dir.join("local.rules").display()
        )
    );
    assert_eq!(out.status.code(), Some(2));
}

/// `check-config` counts the rules, and names a bad one by file and line.
#[test]
fn check_config_counts_rules_and_names_a_bad_line() {
    let root = tempfile::tempdir().unwrap();
    let p = root.path().join("p.toml");
    std::fs::write(
        &p,
        "name = \"p\"\n[stages.content]\n[rules]\nfiles = [\"r\"]\nlines = [\"all => policy.spam=hold\"]\n",
    )
    .unwrap();
    std::fs::write(root.path().join("r"), "client=10.0.0.0/8 => stage.content=off\n# done\n").unwrap();
    let out = support::spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("ok: {} (p): stages [content], 2 rules, scan/replay only\n", p.display())
    );
    std::fs::write(root.path().join("r"), "# ok\nclient=10.0.0.0/33 => stage.content=off\n").unwrap();
    let out = support::spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("invalid: {}:2: client=10.0.0.0/33: not an IP address or CIDR\n", root.path().join("r").display())
    );
}
