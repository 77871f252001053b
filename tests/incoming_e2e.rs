//! MailScanner's model, for distribution Exims built without queuefile: an incoming Exim with
//! `queue_only` receives; `spoolsift watch` takes each message out of its spool (split here) under
//! Exim's own lock, scans it, re-queues it into a second, outgoing Exim, which delivers. Every
//! recipient gets one copy; the incoming spool ends empty; EICAR is quarantined.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::smtp::{self, Envelope};
use support::{poll, start_daemon, Exim, EximOptions};

#[test]
fn two_instances_deliver_each_recipient_once() {
    let incoming = Exim::start(EximOptions { series: "bookworm", mode: "queue-only", split: true });
    let outgoing = Exim::start(EximOptions { series: "bookworm", mode: "plain", split: false });
    let work = incoming.dir.path().join("spoolsift");
    let argv: Vec<String> = outgoing.argv().iter().map(|a| format!("{a:?}")).collect();
    let pipeline = incoming.dir.path().join("incoming.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"incoming-e2e\"\nauthserv_id = \"mx.test.example\"\n[stages.content]\n\
             [intake]\nincoming_spool_directory = {:?}\nwork_directory = {work:?}\nrescan_interval_ms = 200\n\
             [requeue]\nspool_directory = {:?}\nexim_command = [{}]\n",
            incoming.spool(),
            outgoing.spool(),
            argv.join(", ")
        ),
    )
    .unwrap();
    let log = incoming.dir.path().join("spoolsift.log");
    let mut daemon = start_daemon(&pipeline, &log);
    // The default kick: a helper process runs `exim -Mc`, and the daemon checks the outcome.
    let kick_log = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    let _kicker = support::Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_spoolsift"))
            .args(["kick", "--pipeline"])
            .arg(&pipeline)
            .stdout(kick_log.try_clone().unwrap())
            .stderr(kick_log)
            .spawn()
            .unwrap(),
    );

    let eicar = String::from_utf8(spoolsift::stages::content::eicar::signature()).unwrap();
    let mut expected: BTreeMap<(String, String), usize> = BTreeMap::new();
    for i in 0..40 {
        let tag = format!("in-{i:03}");
        let rcpts: Vec<(&str, &str)> = if i % 4 == 0 {
            vec![("bob@test.example", ""), ("carol@test.example", ""), ("dave@test.example", "")]
        } else {
            vec![(["bob@test.example", "carol@test.example", "dave@test.example"][i % 3], "")]
        };
        let infected = i % 10 == 7;
        let body = if infected { format!("{eicar}\n") } else { format!("hello {tag}\n") };
        let data = format!("From: alice@test.example\nSubject: {tag}\n\n{body}");
        smtp::send(
            incoming.port,
            &Envelope { from: "alice@test.example", mail_params: "", rcpts: &rcpts },
            data.as_bytes(),
        );
        if !infected {
            for (r, _) in &rcpts {
                expected.insert((r.split('@').next().unwrap().to_string(), tag.clone()), 1);
            }
        }
    }

    let counts = poll("every clean message delivered by the outgoing Exim", Duration::from_secs(120), || {
        let mut counts: BTreeMap<(String, String), usize> = BTreeMap::new();
        for user in ["bob", "carol", "dave"] {
            for f in outgoing.delivered(user) {
                let text = String::from_utf8_lossy(&f).into_owned();
                let subject = text.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").to_string();
                *counts.entry((user.to_string(), subject)).or_insert(0) += 1;
            }
        }
        (counts.len() >= expected.len()).then_some(counts)
    });
    assert_eq!(counts, expected, "each recipient exactly once");
    poll("the incoming spool to empty", Duration::from_secs(30), || {
        (String::from_utf8_lossy(&incoming.exim(&["-bpc"]).stdout).trim() == "0").then_some(())
    });
    // Every re-queued message was kicked and its outcome said: 40 messages, 4 of them infected
    // (quarantined, not re-queued).
    let delivered = (0..40).filter(|i| i % 10 != 7).count();
    let said = poll("the daemon to report every kick", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap();
        // `delivered`, or `queued` when the outgoing Exim's queue runner held the message at
        // that moment (it then delivers it itself).
        let n = text.lines().filter(|l| l.contains(" INFO  delivery of ")).count();
        (n >= delivered).then_some(text)
    });
    assert!(!said.contains("ERROR"), "{said}");
    let quarantined = std::fs::read_dir(work.join("quarantine")).unwrap().count();
    assert_eq!(quarantined, (0..40).filter(|i| i % 10 == 7).count());
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    assert!(support::list(&work.join("work")).is_empty());
    incoming.assert_clean_logs();
    outgoing.assert_clean_logs();
}
