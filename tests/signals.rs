//! `spoolsift watch` and its signals, as an admin uses them: SIGHUP reloads the pipeline between
//! batches (a definition that does not load is reported and the running one kept); SIGTERM
//! finishes the batches already claimed, commits them and exits 0, leaving nothing half done.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use spoolsift::spool::SpoolHeader;
use spoolsift::state::{open_env, StateDb};
use support::{poll, standalone_pipeline, start_daemon, Daemon};

const LIMIT: Duration = Duration::from_secs(60);

fn signal(daemon: &Daemon, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid, which it still is until it is reaped.
    assert_eq!(unsafe { libc::kill(daemon.0.id() as libc::pid_t, sig) }, 0);
}

/// The standalone daemon's directories, with this file's helpers.
struct World(support::Standalone);

impl std::ops::Deref for World {
    type Target = support::Standalone;
    fn deref(&self) -> &support::Standalone {
        &self.0
    }
}

impl World {
    fn new() -> World {
        World(support::Standalone::new())
    }

    /// The pipeline file: the built-in scanner only, batches of `batch`, our status header named
    /// `status_header`.
    fn write_pipeline(&self, status_header: &str, batch: usize) -> PathBuf {
        let sections = format!("[batch]\nmax_messages = {batch}\n\n[headers]\nstatus_header = \"{status_header}\"");
        standalone_pipeline(&self.root, "signals-test", &sections)
    }

    /// Hand over message `n` as queuefile would: `-D`, then `-H`, under their final names.
    fn drop_message(&self, n: usize) -> String {
        let id = format!("1zzzzz-{n:011}-0001");
        let subject = format!("Subject: signals test {n}");
        // Header lengths count bytes, the newline included.
        let header = format!(
            "{id}-H\nDebian-exim 102 105\n<signals@example.org>\n1795895471 0\n-received_protocol local\n-body_linecount 1\nXX\n1\nuser@example.org\n\n{:03}  {subject}\n",
            subject.len() + 1
        );
        std::fs::write(self.qf.join(format!("{id}-D")), format!("{id}-D\nbody {n}\n")).unwrap();
        std::fs::write(self.qf.join(format!("{id}-H")), header).unwrap();
        id
    }

    fn requeued(&self, id: &str) -> Option<SpoolHeader> {
        let path = self.input.join(format!("{id}-H"));
        path.exists().then(|| SpoolHeader::read(&path).unwrap())
    }

    fn wait_requeued(&self, id: &str) -> SpoolHeader {
        poll(&format!("{id} re-queued"), LIMIT, || self.requeued(id))
    }

    fn wait_log(&self, text: &str) {
        poll(&format!("\"{text}\" in the daemon's log"), LIMIT, || {
            std::fs::read_to_string(&self.log).unwrap_or_default().contains(text).then_some(())
        })
    }

    fn wait_exit(&self, daemon: &mut Daemon) -> std::process::ExitStatus {
        poll("the daemon to exit", LIMIT, || daemon.0.try_wait().unwrap())
    }
}

fn header_names(h: &SpoolHeader) -> Vec<String> {
    h.headers.live().map(|l| String::from_utf8_lossy(l.name()).into_owned()).collect()
}

#[test]
fn sighup_reloads_the_pipeline_and_keeps_it_when_the_new_one_is_broken() {
    let w = World::new();
    let pipeline = w.write_pipeline("X-Before-Reload", 64);
    let mut daemon = Daemon(start_daemon(&pipeline, &w.log));

    let first = w.drop_message(1);
    let names = header_names(&w.wait_requeued(&first));
    assert!(names.iter().any(|n| n == "X-Before-Reload"), "{names:?}");

    w.write_pipeline("X-After-Reload", 64);
    signal(&daemon, libc::SIGHUP);
    w.wait_log(" INFO  reloaded the pipeline signals-test: stages [content]");
    let second = w.drop_message(2);
    let names = header_names(&w.wait_requeued(&second));
    assert!(names.iter().any(|n| n == "X-After-Reload"), "{names:?}");
    assert!(!names.iter().any(|n| n == "X-Before-Reload"), "{names:?}");

    std::fs::write(&pipeline, "name = \"broken\"\n[policy]\nclean = \"explode\"\n").unwrap();
    signal(&daemon, libc::SIGHUP);
    w.wait_log(" ERROR reload failed, keeping the running pipeline:");
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(log.contains("pipeline.toml"), "the failure names the file: {log}");
    let third = w.drop_message(3);
    let names = header_names(&w.wait_requeued(&third));
    assert!(names.iter().any(|n| n == "X-After-Reload"), "the running pipeline is kept: {names:?}");

    signal(&daemon, libc::SIGTERM);
    assert!(w.wait_exit(&mut daemon).success());
}

#[test]
fn sigterm_commits_what_was_claimed_and_exits_cleanly() {
    const N: usize = 400;
    let w = World::new();
    let pipeline = w.write_pipeline("X-Spoolsift-Status", 8);
    let ids: Vec<String> = (0..N).map(|n| w.drop_message(n)).collect();
    let mut daemon = Daemon(start_daemon(&pipeline, &w.log));
    // Stop it in the middle of the work, once something has been re-queued.
    poll("a first re-queue", LIMIT, || ids.iter().any(|id| w.requeued(id).is_some()).then_some(()));
    signal(&daemon, libc::SIGTERM);
    let status = w.wait_exit(&mut daemon);
    assert!(status.success(), "{status:?}");

    // Every claimed batch was committed: nothing in the work directory, nothing in the journal,
    // and each message either re-queued or still waiting in the queuefile directory — not both.
    let work = w.root.join("work");
    assert_eq!(std::fs::read_dir(work.join("work")).unwrap().count(), 0);
    {
        let env = open_env(&work.join("state")).unwrap();
        let claims = StateDb::new(&env).unwrap().all().unwrap();
        assert!(claims.is_empty(), "{claims:?}");
    }
    let waiting = |id: &str| w.qf.join(format!("{id}-H")).exists();
    for id in &ids {
        assert!(w.requeued(id).is_some() != waiting(id), "{id}: re-queued xor waiting");
    }
    let requeued_before = ids.iter().filter(|id| w.requeued(id).is_some()).count();

    // A restart takes the rest; every message ends up re-queued once.
    let rest = std::process::Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .args(["watch", "--once", "--pipeline"])
        .arg(&pipeline)
        .output()
        .unwrap();
    assert!(rest.status.success(), "{}", String::from_utf8_lossy(&rest.stderr));
    // The log (one line per message among them) is on standard error.
    let lines = String::from_utf8(rest.stderr).unwrap();
    assert_eq!(lines.lines().filter(|l| l.contains("action=deliver")).count(), N - requeued_before, "{lines}");
    for id in &ids {
        assert!(w.requeued(id).is_some(), "{id}");
        assert!(!waiting(id), "{id}");
    }
}

/// The rule files are read again with the pipeline: a rule that held a sender's mail is gone
/// after SIGHUP, and a rule file with a bad line keeps the running rules.
#[test]
fn sighup_reads_the_rule_files_again() {
    let w = World::new();
    let rules = w.root.join("local.rules");
    std::fs::write(&rules, "from=signals@example.org => policy.clean=hold\n").unwrap();
    let pipeline = standalone_pipeline(&w.root, "signals-test", "[rules]\nfiles = [\"local.rules\"]");
    let mut daemon = Daemon(start_daemon(&pipeline, &w.log));
    let frozen = |h: &SpoolHeader| h.options.get("frozen").is_some();

    let first = w.drop_message(1);
    assert!(frozen(&w.wait_requeued(&first)), "held by the rule");

    std::fs::write(&rules, "# nothing held\n").unwrap();
    signal(&daemon, libc::SIGHUP);
    w.wait_log(" INFO  reloaded the pipeline signals-test: stages [content]");
    let second = w.drop_message(2);
    assert!(!frozen(&w.wait_requeued(&second)), "the rule is gone");

    std::fs::write(&rules, "from=signals@example.org => policy.clean=hold\nto=x => nonsense\n").unwrap();
    signal(&daemon, libc::SIGHUP);
    w.wait_log(&format!(" ERROR reload failed, keeping the running pipeline: {}:2:", rules.display()));
    let third = w.drop_message(3);
    assert!(!frozen(&w.wait_requeued(&third)), "the running rules are kept");

    signal(&daemon, libc::SIGTERM);
    assert!(w.wait_exit(&mut daemon).success());
}
