//! A scanner outage, end to end: `spoolsift watch` with the clamav stage between the real
//! queuefile Exim and its maildirs, while clamd is down. Messages are deferred (none delivered
//! unscanned); once clamd comes up they are delivered, each exactly once.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::smtp::{self, Envelope};
use support::{poll, start_daemon, Exim, EximOptions};

fn clamd(args: &[&str], dir: &Path) {
    let out = Command::new("bash")
        .arg(support::repo_root().join("scripts/clamd-test.sh"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "clamd-test.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn clamd_down_defers_then_delivers_once() {
    let exim = Exim::start(EximOptions { series: "trixie", mode: "queuefile", split: false });
    let clam_dir = exim.dir.path().join("clamd");
    std::fs::create_dir_all(&clam_dir).unwrap();
    let work = exim.dir.path().join("spoolsift");
    let argv: Vec<String> = exim.argv().iter().map(|a| format!("{a:?}")).collect();
    let pipeline = exim.dir.path().join("outage.toml");
    std::fs::write(
        &pipeline,
        format!(
            "name = \"outage\"\nauthserv_id = \"mx.test.example\"\n\
             [stages.clamav]\nservers = [\"unix:{}\"]\nconnect_timeout_ms = 500\nretry_down_after_ms = 200\n\
             [intake]\nqueuefile_directory = {:?}\nwork_directory = {work:?}\nrescan_interval_ms = 200\n\
             [requeue]\nspool_directory = {:?}\nexim_command = [{}]\n\
             [defer]\ninitial_secs = 1\nmax_interval_secs = 1\n",
            clam_dir.join("clamd.sock").display(),
            exim.queuefile_dir(),
            exim.spool(),
            argv.join(", ")
        ),
    )
    .unwrap();
    let mut daemon = start_daemon(&pipeline, &exim.dir.path().join("spoolsift.log"));

    let users = ["bob", "carol", "dave", "eve"];
    for (i, u) in users.iter().enumerate() {
        let rcpt = format!("{u}@test.example");
        let data = format!("From: alice@test.example\nSubject: outage-{i}\n\nscanned only once clamd is back\n");
        smtp::send(
            exim.port,
            &Envelope { from: "alice@test.example", mail_params: "", rcpts: &[(rcpt.as_str(), "")] },
            data.as_bytes(),
        );
    }
    // All four claimed and deferred: in the work directory, the queuefile directory empty.
    poll("the daemon to take and defer all four", Duration::from_secs(60), || {
        let log = std::fs::read_to_string(exim.dir.path().join("spoolsift.log")).unwrap_or_default();
        let deferred = log.lines().filter(|l| l.contains("action=defer")).count();
        (deferred >= 4 && support::list(&exim.queuefile_dir()).is_empty()).then_some(())
    });
    assert_eq!(support::list(&work.join("work")).len(), 8, "four pairs waiting");
    for u in users {
        assert!(exim.delivered(u).is_empty(), "nothing delivered unscanned");
    }

    clamd(&["start"], &clam_dir);
    for u in users {
        let files = poll(&format!("delivery to {u} after clamd came back"), Duration::from_secs(60), || {
            let f = exim.delivered(u);
            (!f.is_empty()).then_some(f)
        });
        assert_eq!(files.len(), 1, "{u}");
        let text = String::from_utf8_lossy(&files[0]);
        assert!(text.contains("\nX-Spoolsift-Status: clean (clamav=clean)"), "{text}");
    }
    poll("the work directory to empty", Duration::from_secs(30), || {
        support::list(&work.join("work")).is_empty().then_some(())
    });
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    clamd(&["stop"], &clam_dir);
    for u in users {
        assert_eq!(exim.delivered(u).len(), 1, "{u}: still exactly one copy");
    }
    exim.assert_clean_logs();
}
