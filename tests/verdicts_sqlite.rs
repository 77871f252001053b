//! The stock-host mode with Debian's own Exims and the verdict database a stock Exim can read:
//! Debian's exim4-daemon-light receives (`queue_only`), spoolsift scans and re-queues into
//! Debian's exim4-daemon-heavy, which delivers and looks each message's verdict up in spoolsift's
//! SQLite file with its own `sqlite` lookup (bookworm's heavy Exim has no `lmdb` lookup), adding
//! it as a header. The verdict must be found under both ids.

mod support;

use std::time::Duration;

use support::debian_exim::{DebianExim, Role, HEAVY, RCPT};
use support::{poll, Daemon};

#[test]
fn debian_heavy_exim_reads_the_verdict_from_sqlite() {
    let incoming = DebianExim::new(Role::Incoming);
    let db = incoming.dir.path().join("spoolsift/verdicts.sqlite");
    let lookup = format!(
        "${{lookup sqlite{{{} select value from verdicts where id='${{quote_sqlite:$message_exim_id}}'}}}}",
        db.display()
    );
    let outgoing = DebianExim::with(Role::Outgoing, HEAVY, &format!("  headers_add = X-Spoolsift-Verdict: {lookup}\n"));
    let work = incoming.dir.path().join("spoolsift");
    let argv: Vec<String> = outgoing.argv().iter().map(|a| format!("{a:?}")).collect();
    let pipeline = incoming.dir.path().join("pipeline.toml");
    // The daemon runs as root here, outside any sandbox: it runs Exim itself.
    std::fs::write(
        &pipeline,
        format!(
            "name = \"stock\"\nauthserv_id = \"mx.test.example\"\n[stages.content]\n\
             [intake]\nincoming_spool_directory = {:?}\nwork_directory = {work:?}\nrescan_interval_ms = 100\n\
             [requeue]\nspool_directory = {:?}\nexim_command = [{}]\nsplit_spool_directory = false\nkick = \"inline\"\n\
             [verdicts]\ndatabase = {db:?}\nformat = \"sqlite\"\n",
            incoming.spool,
            outgoing.spool,
            argv.join(", "),
        ),
    )
    .unwrap();
    let log = incoming.dir.path().join("spoolsift.log");
    let out = std::fs::File::create(&log).unwrap();
    let _daemon = Daemon(
        std::process::Command::new(env!("CARGO_BIN_EXE_spoolsift"))
            .args(["watch", "--pipeline"])
            .arg(&pipeline)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let data = format!("From: sender@test.example\nTo: {RCPT}@test.example\nSubject: stock verdict\n\nhello\n");
    let original = incoming.submit("sender@test.example", &[&format!("{RCPT}@test.example")], data.as_bytes());

    let mbox = poll("delivery by the heavy Exim", Duration::from_secs(60), || {
        let m = outgoing.mailbox(RCPT);
        m.contains("Subject: stock verdict").then_some(m)
    });
    // Exim writes the delivery's log line after the mailbox: poll for it too.
    let requeued = poll("the heavy Exim's delivery log line", Duration::from_secs(30), || {
        outgoing
            .mainlog()
            .lines()
            .find(|l| l.contains(&format!(" => {RCPT} ")))
            .and_then(|l| l.split_whitespace().nth(2))
            .map(str::to_string)
    });
    let header = mbox.lines().find(|l| l.starts_with("X-Spoolsift-Verdict:")).unwrap_or_else(|| panic!("{mbox}"));
    let want = format!(
        "X-Spoolsift-Verdict: action=deliver verdict=\"clean\" original={original} requeued={requeued} expires="
    );
    assert!(header.starts_with(&want), "{header}\nwant {want}");
    // And under the original id, read by the same Exim's expansion test.
    let be = outgoing.exim(&[
        "-be",
        &format!("${{lookup sqlite{{{} select value from verdicts where id='{original}'}}}}", db.display()),
    ]);
    assert!(String::from_utf8_lossy(&be.stdout).starts_with("action=deliver verdict=\"clean\""), "{be:?}");
    assert!(outgoing.queued().is_empty() && incoming.queued().is_empty());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("ERROR"), "{log}");
}
