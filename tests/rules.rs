//! Rules through the engine, without Exim: each rule changes the outcome of the message it is
//! written for, and the same message without the rule comes to the pipeline's own outcome. The
//! message is the spec example (from alice@sender.example, client 192.0.2.10, to
//! bob@ and carol@dest.example), with a stage that calls a body spam when it says so.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use spoolsift::engine::{EngineBuilder, Handled, Outcome, WorkDirs};
use spoolsift::intake::queuefile::QueuefileDir;
use spoolsift::pipeline::{Action, PipelineConfig};
use spoolsift::requeue::TargetSpool;
use spoolsift::spool::{MessageView, OptionLine, SpoolHeader};
use spoolsift::stages::{Stage, StageError, StageResult, Verdict};
use spoolsift::state::{open_env, StateDb};

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
    let qf = root.join("qf");
    let spool = root.join("spool");
    std::fs::create_dir_all(&qf).unwrap();
    std::fs::create_dir_all(spool.join("input")).unwrap();
    let mut h = SpoolHeader::read(Path::new("tests/data/spec-example/1xXORz-0000000058C-2p8L-H")).unwrap();
    h.options.set(OptionLine::with_value("body_linecount", body.matches('\n').count().to_string().as_bytes()));
    edit(&mut h);
    std::fs::write(qf.join(format!("{ID}-D")), format!("{ID}-D\n{body}")).unwrap();
    std::fs::write(qf.join(format!("{ID}-H")), h.to_bytes()).unwrap();
    let dirs = WorkDirs::new(&root.join("work"));
    dirs.create().unwrap();
    let env = open_env(&dirs.state).unwrap();
    let target = TargetSpool::new(&spool, None).unwrap();
    let intake = QueuefileDir::new(&qf, Some(&target.input), Duration::from_secs(900));
    let engine = EngineBuilder::new(cfg, StateDb::new(&env).unwrap(), dirs, intake, target)
        .stages(vec![Box::new(SpamStage)])
        .build()
        .unwrap();
    let batch = engine.claim_batch().unwrap();
    let mut handled = engine.process(batch).unwrap();
    assert_eq!(handled.len(), 1);
    let queued = support::list(&spool.join("input"))
        .into_iter()
        .filter(|n| n.ends_with("-H"))
        .map(|n| spool.join("input").join(n))
        .collect();
    (handled.remove(0), queued)
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
