//! `spoolsift watch` between a real Exim (unpatched queuefile) and its maildirs: mixed traffic
//! over SMTP — single and multi-recipient, DSN, 8-bit, large, EICAR-bearing — must end with every
//! recipient holding exactly one copy of each clean message (our headers added, body unchanged),
//! every EICAR message quarantined, one success DSN per NOTIFY=SUCCESS recipient (not two), and
//! nothing left in any queue or work directory. The crash test sends the same traffic while the
//! daemon is SIGKILLed again and again, and expects the same end state.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use support::made::eicar_text;
use support::smtp::{self, Envelope};
use support::{poll, start_daemon, Exim, EximOptions};

const USERS: [&str; 4] = ["bob", "carol", "dave", "eve"];

/// Incoming Authentication-Results: three forgeries of the daemon's authserv-id (a nested comment,
/// a quoted-string, the root's trailing dot) and one of another host, in every message.
const FORGED_RESULTS: &str = "Authentication-Results: (outer (inner) comment) mx.test.example; arc=pass\n\
                              Authentication-Results: \"mx.test.example\"; arc=pass\n\
                              Authentication-Results: mx.test.example.; arc=pass\n\
                              Authentication-Results: other.example; spf=pass\n";

/// One message of the traffic mix and what must become of it.
struct Sent {
    tag: String,
    rcpts: Vec<String>,
    body: Vec<u8>,
    infected: bool,
    notify_success: usize,
}

fn traffic(n: usize) -> Vec<(Sent, Envelope<'static>, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..n {
        let tag = format!("e2e-{i:04}");
        let kind = i % 10;
        let rcpts: Vec<String> = match kind {
            0 | 5 => vec!["bob@test.example".into(), "carol@test.example".into(), "dave@test.example".into()],
            _ => vec![format!("{}@test.example", USERS[i % USERS.len()])],
        };
        let (ctype, body): (&str, Vec<u8>) = match kind {
            1 => {
                let b = format!(
                    "--b1\nContent-Type: text/plain\n\nSee attachment.\n--b1\nContent-Type: application/octet-stream; name=\"t.com\"\nContent-Transfer-Encoding: base64\n\n{}\n--b1--\n",
                    support::base64(eicar_text().as_bytes(), None)
                );
                ("multipart/mixed; boundary=\"b1\"", b.into_bytes())
            }
            2 => ("text/plain; charset=utf-8", format!("Grüße aus Köln, {tag}.\nÆØÅ ñ €\n").into_bytes()),
            3 => {
                let mut b = Vec::new();
                for l in 0..6000 {
                    b.extend_from_slice(format!("{tag} large line {l:05} {}\n", "y".repeat(40)).as_bytes());
                }
                ("text/plain", b)
            }
            _ => ("text/plain", format!("Hello, this is {tag}.\n.dot line\n").into_bytes()),
        };
        let data = format!(
            "From: alice@test.example\nTo: {}\nSubject: {tag}\nMessage-ID: <{tag}@client.test>\nMIME-Version: 1.0\nContent-Type: {ctype}\nContent-Transfer-Encoding: 8bit\n{FORGED_RESULTS}\n",
            rcpts.join(", ")
        );
        let mut data = data.into_bytes();
        data.extend_from_slice(&body);
        let leaked: &'static [(&'static str, &'static str)] = Box::leak(
            rcpts
                .iter()
                .enumerate()
                .map(|(j, r)| {
                    let params: &'static str =
                        if kind == 5 && j == 0 { "NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Test.Example" } else { "" };
                    (&*Box::leak(r.clone().into_boxed_str()), params)
                })
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        );
        let env = Envelope {
            from: "alice@test.example",
            mail_params: if kind == 5 { "RET=HDRS ENVID=env-e2e" } else { "" },
            rcpts: leaked,
        };
        let sent = Sent { tag, rcpts, body, infected: kind == 1, notify_success: usize::from(kind == 5) };
        out.push((sent, env, data));
    }
    out
}

fn pipeline(exim: &Exim, work: &Path) -> PathBuf {
    let argv: Vec<String> = exim.argv().iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        r#"name = "watch-e2e"
authserv_id = "mx.test.example"

[stages.content]

[intake]
queuefile_directory = {qf:?}
work_directory = {work:?}
rescan_interval_ms = 200

[requeue]
spool_directory = {spool:?}
exim_command = [{argv}]
kick = "inline"

[verdicts]
database = {verdicts:?}
"#,
        qf = exim.queuefile_dir(),
        work = work,
        spool = exim.spool(),
        argv = argv.join(", "),
        verdicts = work.join("verdicts.mdb")
    );
    let path = work.with_extension("toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// (user, subject) → number of copies in the user's maildir, and the files by subject.
/// Copies per (user, subject), and one delivered file per subject.
type Mailboxes = (BTreeMap<(String, String), usize>, BTreeMap<String, Vec<u8>>);

fn mailboxes(exim: &Exim) -> Mailboxes {
    let mut counts = BTreeMap::new();
    let mut files = BTreeMap::new();
    for user in USERS.iter().chain(["alice"].iter()) {
        for f in exim.delivered(user) {
            let head_end = f.windows(2).position(|w| w == b"\n\n").unwrap_or(f.len());
            let head = String::from_utf8_lossy(&f[..head_end]).into_owned();
            let subject = head.lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").to_string();
            *counts.entry((user.to_string(), subject.clone())).or_insert(0) += 1;
            files.insert(subject, f);
        }
    }
    (counts, files)
}

/// SIGKILLs the daemon at pseudo-random moments (20–170 ms apart) and starts it again.
struct Killer {
    rng: u64,
    next: Instant,
    done: usize,
}

impl Killer {
    fn kill_and_restart(&mut self, mut daemon: Child, pipeline: &Path, log: &Path) -> Child {
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        self.done += 1;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.next = Instant::now() + Duration::from_millis(20 + self.rng % 150);
        start_daemon(pipeline, log)
    }
}

fn run_traffic(n: usize, kills: usize) {
    run_traffic_in(n, kills, "queuefile", "trixie");
}

/// `mode`: the test Exim's scan router, `queuefile` (every recipient to queuefile: copies 2..n
/// are deferred with EEXIST and retried) or `queuefile-single` (a redirect to one pseudo-address
/// per message: one copy). Prints the Exim deferrals and forced queue runs it took.
fn run_traffic_in(n: usize, kills: usize, mode: &'static str, series: &'static str) {
    // spoolsift's directory comes first, so that the Exim's router can be told where the verdict
    // database will be.
    let work_root = tempfile::Builder::new().prefix("spoolsift-work.").tempdir().unwrap();
    std::fs::set_permissions(work_root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let work = work_root.path().join("spoolsift");
    let verdict_db = work.join("verdicts.mdb");
    let exim =
        Exim::start_with(EximOptions { series, mode, split: false }, &["--verdict-db", verdict_db.to_str().unwrap()]);
    let pipeline = pipeline(&exim, &work);
    let log = exim.dir.path().join("spoolsift.log");
    let mut daemon = start_daemon(&pipeline, &log);
    // A malformed pair among the traffic: moved aside with its reason, and the daemon goes on.
    let bad = "1xXOQD-0004A8-22";
    std::fs::write(exim.queuefile_dir().join(format!("{bad}-D")), format!("{bad}-D\nbody\n")).unwrap();
    std::fs::write(
        exim.queuefile_dir().join(format!("{bad}-H")),
        format!("{bad}-H\nroot 0 0\n<a@b>\n1 0\nXX\n1\nx@y\n\n099  Subject: short\n"),
    )
    .unwrap();
    // As Exim's own would be (an -H of another owner is moved aside before it is read).
    {
        use std::os::unix::fs::MetadataExt;
        let owner = std::fs::metadata(exim.spool()).unwrap();
        for suffix in ['D', 'H'] {
            let p = exim.queuefile_dir().join(format!("{bad}-{suffix}"));
            std::os::unix::fs::chown(&p, Some(owner.uid()), Some(owner.gid())).unwrap();
        }
    }
    let messages = traffic(n);
    let started = Instant::now();

    // Send everything; meanwhile kill the daemon at pseudo-random moments and restart it.
    let mut killer = Killer { rng: 0x2545_f491_4f6c_dd1d, next: Instant::now() + Duration::from_millis(100), done: 0 };
    let mut ids = Vec::new();
    for (_, env, data) in &messages {
        ids.push(smtp::send(exim.port, env, data));
        if killer.done < kills && Instant::now() >= killer.next {
            daemon = killer.kill_and_restart(daemon, &pipeline, &log);
        }
    }
    eprintln!("sent {n} messages in {:?}", started.elapsed());
    assert!(kills == 0 || killer.done > 0 || n < 20, "kills happen while traffic flows");
    while killer.done < kills {
        poll("the daemon to make progress before the next kill", Duration::from_secs(30), || {
            (Instant::now() >= killer.next).then_some(())
        });
        daemon = killer.kill_and_restart(daemon, &pipeline, &log);
    }

    let expected: BTreeMap<(String, String), usize> = messages
        .iter()
        .filter(|(s, _, _)| !s.infected)
        .flat_map(|(s, _, _)| {
            s.rcpts.iter().map(move |r| ((r.split('@').next().unwrap().to_string(), s.tag.clone()), 1))
        })
        .collect();
    let dsns: usize = messages.iter().map(|(s, _, _)| s.notify_success).sum();
    let qf = exim.queuefile_dir();
    let settled = |counts: &BTreeMap<(String, String), usize>| {
        let tagged: BTreeMap<_, _> =
            counts.iter().filter(|((_, s), _)| s.starts_with("e2e-")).map(|(k, v)| (k.clone(), *v)).collect();
        tagged == expected
            && support::list(&qf).is_empty()
            // A copy the daemon has taken but not finished (one that owes nothing) is still
            // in its work directory.
            && support::list(&work.join("work")).is_empty()
            && String::from_utf8_lossy(&exim.exim(&["-bpc"]).stdout).trim() == "0"
    };
    let sent_at = Instant::now();
    let mut queue_runs = 0;
    let deadline = Instant::now() + Duration::from_secs(600);
    let (counts, files) = loop {
        let (counts, files) = mailboxes(&exim);
        if settled(&counts) {
            let deferrals = exim.mainlog().lines().filter(|l| l.contains(" == ")).count();
            eprintln!(
                "{series} {mode}: settled {:?} after sending {n} messages: {deferrals} Exim deferrals ({:.2} per message), \
                 {queue_runs} forced queue runs",
                sent_at.elapsed(),
                deferrals as f64 / n as f64
            );
            if mode == "queuefile-single" {
                // One copy per message: nothing deferred, no queue run needed, and one delivery
                // to the pseudo-address in Exim's log per message, whatever its recipients.
                assert_eq!((deferrals, queue_runs), (0, 0), "single copy mode");
                let log = exim.mainlog();
                let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
                for l in log.lines().filter(|l| l.contains(" => scan-") && l.contains(" T=to_queuefile ")) {
                    *copies.entry(l.split_whitespace().nth(3).unwrap_or("")).or_default() += 1;
                }
                // The test's messages, and the success DSNs Exim generates, which are scanned too.
                assert!(copies.len() >= n, "{} messages copied", copies.len());
                assert!(copies.values().all(|c| *c == 1), "a message copied more than once: {copies:?}");
            }
            break (counts, files);
        }
        let extra: Vec<_> =
            counts.iter().filter(|(k, v)| k.1.starts_with("e2e-") && expected.get(*k) != Some(v)).collect();
        assert!(
            extra.iter().all(|(k, v)| expected.contains_key(*k) && **v < 2),
            "duplicate or unexpected delivery: {extra:?}"
        );
        // A clean message quarantined (by the processing attempts guard, say) never arrives: say
        // so now, with its reasons, rather than at the deadline.
        let infected = messages.iter().filter(|(s, _, _)| s.infected).count();
        let entries = support::list(&work.join("quarantine"));
        if entries.len() > infected {
            let reasons: std::collections::BTreeSet<String> = entries
                .iter()
                .filter_map(|e| std::fs::read(work.join("quarantine").join(e).join("verdict.json")).ok())
                .filter_map(|v| serde_json::from_slice::<serde_json::Value>(&v).ok())
                .map(|v| v["reasons"].to_string())
                .collect();
            panic!("{} quarantine entries for {infected} infected messages: {reasons:?}", entries.len());
        }
        assert!(
            Instant::now() < deadline,
            "traffic did not settle; missing: {:?}",
            expected.keys().filter(|k| !counts.contains_key(*k)).take(10).collect::<Vec<_>>()
        );
        // Let the daemon take what queuefile handed over and finish it (a queue run holds the
        // originals' locks, and a copy whose original is locked waits for it), then force the
        // retry of the deferred recipients (queuefile's once-per-recipient EEXIST). Forcing runs
        // back to back while a copy waits would keep its original locked most of the time.
        poll("the daemon to take and finish the queuefile copies", Duration::from_secs(120), || {
            (support::list(&qf).is_empty() && support::list(&work.join("work")).is_empty()).then_some(())
        });
        if mode == "queuefile-single" {
            // Nothing is deferred in this mode: only wait for the deliveries in progress.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        exim.exim(&["-qf"]);
        queue_runs += 1;
    };
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    for (s, _, _) in messages.iter().filter(|(s, _, _)| !s.infected) {
        let f = &files[&s.tag];
        let at = f.windows(2).position(|w| w == b"\n\n").unwrap();
        assert_eq!(&f[at + 2..], s.body.as_slice(), "{}: body must be byte-identical", s.tag);
        let head = String::from_utf8_lossy(&f[..at]);
        assert_eq!(head.matches("\nX-Spoolsift-Status: clean").count(), 1, "{}: {head}", s.tag);
        assert_eq!(head.matches("\nAuthentication-Results: mx.test.example;").count(), 1, "{}", s.tag);
        // Of the incoming Authentication-Results, only the one that is not a forgery of ours is left.
        assert_eq!(head.matches("\nAuthentication-Results:").count(), 2, "{}: {head}", s.tag);
        assert_eq!(head.matches("\nAuthentication-Results: other.example; spf=pass\n").count(), 1, "{}", s.tag);
        // Added by the Exim's router from the verdict database (recorded before the commit point,
        // so present even for messages re-queued just before a SIGKILL).
        assert_eq!(head.lines().filter(|l| *l == "X-Spoolsift-Verdict: clean").count(), 1, "{}: {head}", s.tag);
    }
    let quarantined: Vec<String> = std::fs::read_dir(work.join("quarantine"))
        .unwrap()
        .map(|e| {
            let v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.unwrap().path().join("verdict.json")).unwrap()).unwrap();
            v["reasons"][0].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(quarantined.len(), messages.iter().filter(|(s, _, _)| s.infected).count());
    assert!(quarantined.iter().all(|r| r == "content: infected (Eicar-Test-Signature)"), "{quarantined:?}");
    let success_dsns =
        counts.iter().filter(|((u, s), _)| u == "alice" && !s.starts_with("e2e-")).map(|(_, n)| n).sum::<usize>();
    assert_eq!(success_dsns, dsns, "one success DSN per NOTIFY=SUCCESS recipient, not two");
    assert!(support::list(&work.join("work")).is_empty(), "work directory is empty");
    let rejected = support::list(&work.join("rejected"));
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let aside = work.join("rejected").join(&rejected[0]);
    assert_eq!(support::list(&aside), [format!("{bad}-D"), format!("{bad}-H"), "reason".to_string()]);
    let reason = std::fs::read_to_string(aside.join("reason")).unwrap();
    assert!(
        reason.ends_with(&format!("{bad}-H:9 (byte 48): header length 99 runs past the end of the file\n")),
        "{reason}"
    );
    // Exim's own lmdb lookup reads the verdicts, by original id. A re-queue's verdict is recorded
    // before its commit point, so it survives a crash; a quarantined message's verdict is in its
    // verdict.json, and the crash test does not ask the database for those.
    let lookup = |id: &str, key: &str| {
        let db = work.join("verdicts.mdb");
        let expr = format!("${{extract{{{key}}}{{${{lookup{{{id}}}lmdb{{{}}}}}}}}}", db.display());
        String::from_utf8(exim.exim(&["-be", &expr]).stdout).unwrap().trim().to_string()
    };
    for ((s, _, _), id) in messages.iter().zip(&ids).take(12).filter(|((s, _, _), _)| kills == 0 || !s.infected) {
        let (action, verdict) =
            if s.infected { ("quarantine", "content: infected (Eicar-Test-Signature)") } else { ("deliver", "clean") };
        assert_eq!(lookup(id, "action"), action, "{}", s.tag);
        assert_eq!(lookup(id, "verdict"), verdict, "{}", s.tag);
    }
    exim.assert_clean_logs();
}

#[test]
fn two_hundred_messages_each_delivered_exactly_once() {
    run_traffic(200, 0);
}

#[test]
fn two_hundred_messages_in_single_copy_mode() {
    run_traffic_in(200, 0, "queuefile-single", "trixie");
}

/// The same configuration on Exim 4.96 (16-character ids), with the per-recipient mode beside it
/// for the counts.
#[test]
fn single_copy_and_per_recipient_modes_on_bookworm() {
    run_traffic_in(60, 0, "queuefile-single", "bookworm");
    run_traffic_in(60, 0, "queuefile", "bookworm");
}

#[test]
fn sigkilled_daemon_loses_and_duplicates_nothing() {
    run_traffic(200, 25);
}
