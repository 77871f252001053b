//! The delivery kick against Debian's packaged Exim (`exim4-daemon-light`: setuid root, delivering
//! to a mail spool file as the recipient), with spoolsift's two processes under the restrictions
//! of the shipped units (`systemd/spoolsift.service`, `systemd/spoolsift-kick.service`), emulated
//! with setpriv and a private mount namespace.
//!
//! The incoming side is the stock-host mode of docs/exim-incoming.md: a second packaged Exim with
//! `queue_only`, whose spool the daemon takes messages from.
//!
//! What a setuid Exim does under each restriction was seen first by hand: under no-new-privileges
//! it freezes the message and exits 0; with an empty bounding set it fails in setgroups(); with its
//! log directory read-only it delivers, dies writing the log, and leaves the message queued with a
//! -J journal. Each of these must be reported as an error and counted, not taken for a delivery.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::debian_exim::{DebianExim, Role, RCPT};
use support::units::Sandbox;
use support::Daemon;

const WAIT: Duration = Duration::from_secs(60);

struct Host {
    incoming: DebianExim,
    outgoing: DebianExim,
    work: PathBuf,
    pipeline: PathBuf,
    log: PathBuf,
}

impl Host {
    fn new(kick: &str) -> Host {
        Host::with_incoming(kick, DebianExim::new(Role::Incoming))
    }

    fn with_incoming(kick: &str, incoming: DebianExim) -> Host {
        let outgoing = DebianExim::new(Role::Outgoing);
        let root = incoming.dir.path();
        let work = root.join("spoolsift");
        std::fs::create_dir(&work).unwrap();
        let st = std::process::Command::new("chown").arg("Debian-exim:Debian-exim").arg(&work).status().unwrap();
        assert!(st.success());
        let argv: Vec<String> = outgoing.argv().iter().map(|a| format!("{a:?}")).collect();
        let pipeline = root.join("pipeline.toml");
        std::fs::write(
            &pipeline,
            format!(
                "name = \"debian-exim\"\nauthserv_id = \"mx.test.example\"\n[stages.content]\n\
                 [intake]\nincoming_spool_directory = {:?}\nwork_directory = {work:?}\nrescan_interval_ms = 100\n\
                 [requeue]\nspool_directory = {:?}\nexim_command = [{}]\nsplit_spool_directory = false\n\
                 kick = \"{kick}\"\n[metrics]\ntextfile = {:?}\n",
                incoming.spool,
                outgoing.spool,
                argv.join(", "),
                work.join("metrics.prom"),
            ),
        )
        .unwrap();
        Host { log: root.join("spoolsift.log"), incoming, outgoing, work, pipeline }
    }

    /// The restrictions of a shipped unit, with the outgoing Exim's directories standing for
    /// /var/log/exim4 and /var/mail.
    fn unit(&self, name: &str) -> Sandbox {
        Sandbox::from_unit(
            &support::repo_root().join("systemd").join(name),
            &[("/var/log/exim4", &self.outgoing.log), ("/var/mail", &self.outgoing.mail)],
            Path::new("/home"),
        )
    }

    fn start(&self, sandbox: &Sandbox, args: &[&str]) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).unwrap();
        let mut args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        args.extend([OsStr::new("--pipeline"), self.pipeline.as_os_str()]);
        let child = sandbox
            .command(Path::new(env!("CARGO_BIN_EXE_spoolsift")), &args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }

    fn send(&self, subject: &str) -> String {
        let data = format!("From: sender@test.example\nTo: {RCPT}@test.example\nSubject: {subject}\n\nhello\n");
        self.incoming.submit("sender@test.example", &[&format!("{RCPT}@test.example")], data.as_bytes())
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn metric(&self, line_start: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.work.join("metrics.prom")).ok()?;
        text.lines().find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
    }

    /// Wait until the daemon has said what became of `n` kicks with `outcome`.
    fn wait_for_kicks(&self, outcome: &str, n: u64) {
        let key = format!("spoolsift_kicks_total{{outcome=\"{outcome}\"}} ");
        let done = support::poll_until(WAIT, || self.metric(&key) == Some(n));
        assert!(
            done,
            "{n} kicks {outcome} not seen; log:\n{}\nmetrics:\n{}\noutgoing queue {:?}, mainlog:\n{}",
            self.log(),
            std::fs::read_to_string(self.work.join("metrics.prom")).unwrap_or_default(),
            self.outgoing.queued(),
            self.outgoing.mainlog()
        );
    }

    /// The outgoing Exim's queue: the one message spoolsift re-queued.
    fn only_requeued(&self) -> String {
        let q = self.outgoing.queued();
        assert_eq!(q.len(), 1, "outgoing queue {q:?}");
        q[0].clone()
    }
}

fn mbox_subjects(mbox: &str) -> Vec<String> {
    let mut s: Vec<String> = mbox.lines().filter_map(|l| l.strip_prefix("Subject: ")).map(str::to_string).collect();
    s.sort();
    s
}

#[test]
fn the_shipped_units_deliver_through_debian_exim() {
    let host = Host::new("helper");
    let scanner = host.unit("spoolsift.service");
    let kicker = host.unit("spoolsift-kick.service");
    // The scanner's sandbox is the hardened one; the kicker's is not, by design.
    assert!(scanner.no_new_privs && scanner.bounding_set == Some(vec![]), "{scanner:?}");
    assert_eq!(kicker.user.as_deref(), Some("Debian-exim"));
    assert!(!kicker.no_new_privs && kicker.bounding_set.is_none() && kicker.read_only.is_empty(), "{kicker:?}");
    assert!(kicker.hidden.is_empty(), "{kicker:?}");

    let _daemon = host.start(&scanner, &["watch"]);
    let _kick = host.start(&kicker, &["kick"]);
    for i in 0..3 {
        host.send(&format!("units-{i}"));
    }
    host.wait_for_kicks("delivered", 3);
    assert_eq!(mbox_subjects(&host.outgoing.mailbox(RCPT)), ["units-0", "units-1", "units-2"]);
    assert_eq!(host.outgoing.mailbox(RCPT).matches("\nFrom sender@test.example ").count() + 1, 3);
    assert!(host.outgoing.queued().is_empty(), "outgoing queue");
    assert!(host.incoming.queued().is_empty(), "incoming queue");
    assert_eq!(host.outgoing.mainlog().matches(&format!(" => {RCPT} <{RCPT}@test.example>")).count(), 3);
    for outcome in ["queued", "frozen", "interrupted", "failed", "not-run"] {
        assert_eq!(host.metric(&format!("spoolsift_kicks_total{{outcome=\"{outcome}\"}} ")), Some(0), "{outcome}");
    }
    assert!(!host.log().contains("ERROR"), "{}", host.log());
    assert_eq!(host.outgoing.paniclog(), "");
    assert!(support::poll_until(WAIT, || host.metric("spoolsift_exim_queue_depth ") == Some(0)), "exim queue depth");
}

/// The shipped unit of the incoming instance runs Debian's Exim as a listener: a message sent to
/// it over SMTP is queued there, taken by spoolsift and delivered by the outgoing Exim. The
/// example configuration the package ships is one Debian's Exim reads.
#[test]
fn the_incoming_unit_receives_over_smtp_and_the_mail_is_delivered() {
    let port = support::free_port();
    let incoming = DebianExim::listening(Role::Incoming, support::debian_exim::BIN, "", Some(port));
    let host = Host::with_incoming("helper", incoming);
    let unit = std::fs::read_to_string(support::repo_root().join("systemd/spoolsift-exim-in.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap();
    assert_eq!(exec, "/usr/sbin/exim4 -C /etc/exim4/exim-in.conf -bdf");
    assert!(!unit.lines().any(|l| l.starts_with("User=")), "the listener starts as root and drops privileges itself");
    let conf = host.incoming.conf.display().to_string();
    let argv: Vec<String> = exec
        .split_whitespace()
        .map(|a| if a == "/etc/exim4/exim-in.conf" { conf.clone() } else { a.to_string() })
        .collect();
    let _listener = Daemon(std::process::Command::new(&argv[0]).args(&argv[1..]).spawn().unwrap());
    assert!(
        support::poll_until(WAIT, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()),
        "the incoming Exim listens on {port}: {}",
        host.incoming.paniclog()
    );
    let _daemon = host.start(&host.unit("spoolsift.service"), &["watch"]);
    let _kick = host.start(&host.unit("spoolsift-kick.service"), &["kick"]);
    let rcpt = format!("{RCPT}@test.example");
    support::smtp::send(
        port,
        &support::smtp::Envelope { from: "sender@test.example", mail_params: "", rcpts: &[(rcpt.as_str(), "")] },
        b"From: sender@test.example\r\nSubject: over smtp\r\n\r\nhello\r\n",
    );
    host.wait_for_kicks("delivered", 1);
    assert_eq!(mbox_subjects(&host.outgoing.mailbox(RCPT)), ["over smtp"]);
    assert!(host.incoming.queued().is_empty() && host.outgoing.queued().is_empty());

    // The example configuration the package ships parses with Debian's Exim.
    let example = support::repo_root().join("docs/exim-in.conf");
    let v = std::process::Command::new(support::debian_exim::BIN).arg("-C").arg(&example).arg("-bV").output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

/// The design this replaces: the daemon ran `exim -Mc` itself, inside its sandbox, and took an
/// exit status for a delivery. Under that sandbox Exim cannot become the recipient (no new
/// privileges) nor write its log (a read-only /var/log/exim4), and dies mid-delivery.
#[test]
fn a_kick_inside_the_scanners_sandbox_fails_and_is_reported() {
    let host = Host::new("inline");
    let _daemon = host.start(&host.unit("spoolsift.service"), &["watch"]);
    host.send("inline");
    host.wait_for_kicks("interrupted", 1);
    let id = host.only_requeued();
    let log = host.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("ERROR delivery of {id}: interrupted: exit 1; Exim died during the delivery")))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("unable to set gid=8 or uid="), "{line}");
    assert!(host.outgoing.mailbox(RCPT).is_empty());
    assert_eq!(host.metric("spoolsift_kicks_total{outcome=\"delivered\"} "), Some(0));
}

/// The kicker under no-new-privileges (what any of a dozen hardening settings implies).
#[test]
fn a_kicker_without_new_privileges_is_reported_frozen() {
    let host = Host::new("helper");
    let _daemon = host.start(&host.unit("spoolsift.service"), &["watch"]);
    let _kick = host.start(&host.unit("spoolsift-kick.service").with(|s| s.no_new_privs = true), &["kick"]);
    host.send("nnp");
    host.wait_for_kicks("frozen", 1);
    let id = host.only_requeued();
    let header = std::fs::read_to_string(host.outgoing.spool.join(format!("input/{id}-H"))).unwrap();
    assert!(header.lines().any(|l| l.starts_with("-frozen ")), "{header}");
    // Exim's own queue, as the daemon sees it: the frozen message stays in it.
    assert!(support::poll_until(WAIT, || host.metric("spoolsift_exim_queue_depth ") == Some(1)), "exim queue depth");
    assert!(host.log().contains(&format!("ERROR delivery of {id}: frozen: exit 0; Exim froze it")), "{}", host.log());
}

/// The kicker with an empty capability bounding set: Exim stops in setgroups() and exits 1.
#[test]
fn a_kicker_without_capabilities_is_reported_failed() {
    let host = Host::new("helper");
    let _daemon = host.start(&host.unit("spoolsift.service"), &["watch"]);
    let _kick = host.start(&host.unit("spoolsift-kick.service").with(|s| s.bounding_set = Some(vec![])), &["kick"]);
    host.send("caps");
    host.wait_for_kicks("failed", 1);
    let id = host.only_requeued();
    assert!(
        host.log().contains(&format!(
            "ERROR delivery of {id}: failed: exit 1: exim: setgroups() failed: Operation not permitted"
        )),
        "{}",
        host.log()
    );
    assert!(host.outgoing.mailbox(RCPT).is_empty());
}

/// The kicker with Exim's log directory read-only (ProtectSystem=strict without it writable): the
/// message is delivered and stays queued; Exim's -J journal is what says so.
#[test]
fn a_kicker_with_a_read_only_exim_log_is_reported_interrupted() {
    let host = Host::new("helper");
    let log_dir = host.outgoing.log.clone();
    let _daemon = host.start(&host.unit("spoolsift.service"), &["watch"]);
    let _kick = host.start(&host.unit("spoolsift-kick.service").with(|s| s.read_only.push(log_dir)), &["kick"]);
    host.send("rolog");
    host.wait_for_kicks("interrupted", 1);
    let id = host.only_requeued();
    assert_eq!(mbox_subjects(&host.outgoing.mailbox(RCPT)), ["rolog"], "delivered once");
    assert!(host.outgoing.spool.join(format!("input/{id}-J")).exists());
    let log = host.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("ERROR delivery of {id}: interrupted")))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        line.contains(&format!(
            ": interrupted: exit 1; Exim delivered to {RCPT}@test.example and died before recording it"
        )),
        "{line}"
    );
    assert!(line.contains("Cannot open main log file"), "{line}");
}
