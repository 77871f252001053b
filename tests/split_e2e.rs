//! A message whose recipients want different things, between a real Exim (unpatched queuefile,
//! one copy per recipient attempt) and its maildirs: the pipeline quarantines spam, and a rule
//! has Bob's spam delivered tagged. Every message is spam (the dccifd double says so), to Bob and
//! Carol: Bob must get exactly one tagged copy of each, Carol none, and the quarantine exactly one
//! entry per message holding Carol alone; also while the daemon is SIGKILLed again and again.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::dccifd::{Double, Reply};
use support::smtp::{self, Envelope};
use support::{start_daemon, Exim, EximOptions};

const SPAM_REPLY: &str = "R\nRR\nX-DCC-Test-Metrics: host 1; bulk Body=many\n\n";

fn pipeline(exim: &Exim, work: &Path, dcc: &Double) -> PathBuf {
    let argv: Vec<String> = exim.argv().iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        r#"name = "split-e2e"
authserv_id = "mx.test.example"

[stages.dcc]
address = "{dcc}"

[policy]
spam = "quarantine"

[rules]
lines = ['to=bob@test.example => policy.spam=deliver subject_tag="[SPAM]"']

[notify]
postmaster = "dave@test.example"

[intake]
queuefile_directory = {qf:?}
work_directory = {work:?}
rescan_interval_ms = 200

[requeue]
spool_directory = {spool:?}
exim_command = [{argv}]
kick = "inline"
"#,
        dcc = dcc.address,
        qf = exim.queuefile_dir(),
        work = work,
        spool = exim.spool(),
        argv = argv.join(", "),
    );
    let path = work.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Subject → copies in `user`'s maildir.
fn subjects(exim: &Exim, user: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for f in exim.delivered(user) {
        let head_end = f.windows(2).position(|w| w == b"\n\n").unwrap_or(f.len());
        let head = String::from_utf8_lossy(&f[..head_end]).into_owned();
        let subject = head.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").to_string();
        *out.entry(subject).or_insert(0) += 1;
    }
    out
}

/// The recipients each quarantine entry holds, by the message's subject tag.
fn quarantined(work: &Path) -> BTreeMap<String, Vec<Vec<String>>> {
    let mut out: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for e in std::fs::read_dir(work.join("quarantine")).into_iter().flatten() {
        let dir = e.unwrap().path();
        let Ok(text) = std::fs::read(dir.join("verdict.json")) else { continue };
        let v: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let id = v["id"].as_str().unwrap().to_string();
        let Ok(header) = std::fs::read(dir.join(format!("{id}-H"))) else { continue };
        let header = String::from_utf8_lossy(&header);
        let tag = header.lines().find_map(|l| l.split("Subject: ").nth(1)).unwrap_or("").to_string();
        let rcpts = v["recipients"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()).collect();
        out.entry(tag).or_default().push(rcpts);
    }
    out
}

fn run(n: usize, kills: usize) {
    let dcc = Double::unix(Reply::text(SPAM_REPLY));
    let work_root = tempfile::Builder::new().prefix("spoolsift-work.").tempdir().unwrap();
    let work = work_root.path().join("spoolsift");
    let exim = Exim::start(EximOptions { series: "trixie", mode: "queuefile", split: false });
    let pipeline = pipeline(&exim, &work, &dcc);
    let log = exim.dir.path().join("spoolsift.log");
    let mut daemon = start_daemon(&pipeline, &log);
    let rcpts = [("bob@test.example", ""), ("carol@test.example", "")];
    let env = Envelope { from: "alice@test.example", mail_params: "", rcpts: &rcpts };
    let tags: Vec<String> = (0..n).map(|i| format!("split-{i:03}")).collect();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next_kill = Instant::now() + Duration::from_millis(50);
    let mut killed = 0;
    for tag in &tags {
        let data = format!(
            "From: alice@test.example\nTo: bob@test.example, carol@test.example\nSubject: {tag}\n\
             Message-ID: <{tag}@client.test>\n\nBuy now, {tag}.\n"
        );
        smtp::send(exim.port, &env, data.as_bytes());
        if killed < kills && Instant::now() >= next_kill {
            daemon.kill().unwrap();
            daemon.wait().unwrap();
            killed += 1;
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            next_kill = Instant::now() + Duration::from_millis(20 + rng % 120);
            daemon = start_daemon(&pipeline, &log);
        }
    }
    assert!(kills == 0 || killed > 0, "kills happen while traffic flows");

    let tagged: BTreeMap<String, usize> = tags.iter().map(|t| (format!("[SPAM] {t}"), 1)).collect();
    let held: BTreeMap<String, Vec<Vec<String>>> =
        tags.iter().map(|t| (t.clone(), vec![vec!["carol@test.example".to_string()]])).collect();
    let qf = exim.queuefile_dir();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let bob = subjects(&exim, "bob");
        let carol = subjects(&exim, "carol");
        assert!(carol.is_empty(), "Carol's spam is quarantined, never delivered: {carol:?}");
        assert!(bob.values().all(|&c| c == 1), "a duplicate for Bob: {bob:?}");
        let q = quarantined(&work);
        assert!(q.values().all(|e| e.len() == 1), "a message quarantined twice: {q:?}");
        if bob == tagged
            && q == held
            && support::list(&qf).is_empty()
            && support::list(&work.join("work")).is_empty()
            && String::from_utf8_lossy(&exim.exim(&["-bpc"]).stdout).trim() == "0"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not settle: Bob has {} of {n}, the quarantine {} of {n}",
            bob.len(),
            q.len()
        );
        let settled = support::poll_until(Duration::from_secs(120), || {
            support::list(&qf).is_empty() && support::list(&work.join("work")).is_empty()
        });
        assert!(
            settled,
            "the daemon did not take and finish the queuefile copies in 120 s: queuefile {:?}, work {:?}, \
             `spoolsift queue`: {}\nlog:\n{}",
            support::list(&qf),
            support::list(&work.join("work")),
            String::from_utf8_lossy(&support::spoolsift(&["queue", "--pipeline", pipeline.to_str().unwrap()]).stdout),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        // queuefile's once-per-recipient EEXIST deferrals: Carol's attempt is retried.
        exim.exim(&["-qf"]);
    }
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // The postmaster is told of each quarantined copy, with its key; the sender (a spammer, most
    // likely forged) is told nothing. A stop between a quarantine and its notice loses the
    // notice, never sends two.
    let keys: BTreeMap<String, String> = std::fs::read_dir(work.join("quarantine"))
        .unwrap()
        .map(|e| {
            let dir = e.unwrap().path();
            let key = dir.file_name().unwrap().to_string_lossy().into_owned();
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(dir.join("verdict.json")).unwrap()).unwrap();
            (v["id"].as_str().unwrap().to_string(), key)
        })
        .collect();
    let notices = exim.delivered("dave");
    assert!(notices.len() <= n && (kills > 0 || notices.len() == n), "{} notices for {n} messages", notices.len());
    let mut told = std::collections::BTreeSet::new();
    for f in &notices {
        let text = String::from_utf8_lossy(f);
        let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").to_string();
        assert_eq!(field("Auto-Submitted: "), "auto-replied", "{text}");
        assert_eq!(field("Return-path: "), "<>", "{text}");
        let id = field("Message id: ");
        assert_eq!(field("Quarantine key: "), keys[&id], "{text}");
        assert!(field("Subject: ").starts_with("Message quarantined: split-"), "{text}");
        assert!(told.insert(id), "two notices of one message: {text}");
    }
    assert!(exim.delivered("alice").is_empty(), "no notice to the sender");
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("came to 2 different outcomes: one copy each"), "{log_text}");
    exim.assert_clean_logs();
}

#[test]
fn one_copy_delivered_tagged_to_bob_and_one_quarantined_for_carol() {
    run(8, 0);
}

#[test]
fn a_sigkilled_daemon_splits_without_loss_or_duplicate() {
    run(40, 6);
}
