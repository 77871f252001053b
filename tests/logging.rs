//! The daemon's log under systemd and elsewhere: with standard error on journald's stream (a
//! socket named by `JOURNAL_STREAM`), every line starts with its syslog priority, so that
//! `journalctl -p err` shows the errors alone; elsewhere, with its UTC time and level. A line
//! stays one line whatever a sender put in the message.

mod support;

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};

/// One message whose subject carries a bell and an escape sequence (a `-H` can hold neither a
/// newline, a carriage return nor a NUL in a header, but these it can).
fn world() -> support::Standalone {
    let w = support::Standalone::new();
    let id = "1zzzzz-00000000001-0007";
    let subject = "Subject: evil\x07\x1b[31m<3>forged";
    std::fs::write(
        w.qf.join(format!("{id}-H")),
        format!(
            "{id}-H\nDebian-exim 102 105\n<log@example.org>\n1795895471 0\n-received_protocol local\n-body_linecount 1\nXX\n1\nuser@example.org\n\n{:03}  {subject}\n",
            subject.len() + 1
        ),
    )
    .unwrap();
    std::fs::write(w.qf.join(format!("{id}-D")), format!("{id}-D\nbody\n")).unwrap();
    w
}

fn watch_once(w: &support::Standalone) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spoolsift"));
    c.args(["watch", "--once", "--no-exim", "--queuefile-dir"])
        .arg(&w.qf)
        .arg("--work-dir")
        .arg(w.root.join("work"))
        .arg("--spool-dir")
        .arg(w.root.join("spool"))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    c
}

#[test]
fn under_journald_each_line_carries_its_priority() {
    let w = world();
    let (ours, theirs) = UnixStream::pair().unwrap();
    let meta = std::fs::File::from(std::os::fd::OwnedFd::from(theirs.try_clone().unwrap())).metadata().unwrap();
    let mut child = watch_once(&w)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .stderr(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    drop(child);
    let mut text = String::new();
    ours.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    (&ours).take(1 << 20).read_to_string(&mut text).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("<6>spoolsift 0.1.0 started: pipeline embedded"), "{text}");
    let message = lines.iter().find(|l| l.contains(" action=deliver ")).unwrap_or_else(|| panic!("{text}"));
    assert!(message.starts_with("<6>1zzzzz-00000000001-0007 <log@example.org> for user@example.org S="), "{message}");
    assert!(lines.iter().all(|l| l.starts_with('<')), "every line has a priority: {text}");
    assert_eq!(lines.last(), Some(&"<6>stopping: every claimed message is committed or in the journal"));
}

#[test]
fn elsewhere_each_line_carries_its_time_and_level_and_stays_one_line() {
    let w = world();
    // JOURNAL_STREAM inherited from a parent does not make a redirected standard error the journal.
    let out = watch_once(&w).env("JOURNAL_STREAM", "1:1").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let time_and_level = |l: &str| {
        let b = l.as_bytes();
        l.len() > 30 && b[4] == b'-' && b[10] == b'T' && &l[23..25] == "Z " && l[25..].starts_with("INFO  ")
    };
    assert!(lines.iter().all(|l| time_and_level(l)), "{text}");
    let message = lines.iter().find(|l| l.contains(" action=deliver ")).unwrap_or_else(|| panic!("{text}"));
    // The subject's control characters are not written: the forged priority stays inside the line.
    assert!(!message.contains('\x1b') && !message.contains('\x07'), "{message:?}");
    assert!(message.contains("<3>forged\" action=deliver"), "{message}");
}
