//! `spoolsift queue` against a running daemon: a deferred message (clamd is not there) and a
//! rejected one (an envelope Exim did not write) are listed with their reasons; `hold` keeps one
//! from being retried, `retry --all` retries the others now, `release` lets it go again.

mod support;

use std::time::Duration;

use support::{poll, standalone_pipeline, start_daemon, Daemon};

const LIMIT: Duration = Duration::from_secs(60);

fn header_text(id: &str, sender: &str) -> String {
    let subject = "Subject: queue view";
    format!(
        "{id}-H\nDebian-exim 102 105\n<{sender}>\n1795895471 0\n-received_protocol local\n-body_linecount 1\nXX\n1\nuser@example.org\n\n{:03}  {subject}\n",
        subject.len() + 1
    )
}

fn queue(pipeline: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .args(["queue", "--pipeline"])
        .arg(pipeline)
        .args(args)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn listed(pipeline: &std::path::Path) -> Vec<serde_json::Value> {
    let (code, out, err) = queue(pipeline, &["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    out.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn attempts(pipeline: &std::path::Path, id: &str) -> u64 {
    listed(pipeline).iter().find(|j| j["id"] == id).map_or(0, |j| j["attempts"].as_u64().unwrap())
}

#[test]
fn deferred_and_rejected_messages_are_listed_held_retried_and_released() {
    let w = support::Standalone::new();
    let (held, other, forged) = ("1zzzzz-00000000001-0006", "1zzzzz-00000000002-0006", "1zzzzz-00000000003-0006");
    for (id, sender) in [(held, "first@example.org"), (other, "second@example.org"), (forged, "forger@example.org")] {
        std::fs::write(w.qf.join(format!("{id}-D")), format!("{id}-D\nbody\n")).unwrap();
        std::fs::write(w.qf.join(format!("{id}-H")), header_text(id, sender)).unwrap();
    }
    std::os::unix::fs::chown(w.qf.join(format!("{forged}-H")), Some(65534), Some(65534)).unwrap();
    let sock = w.root.join("no-clamd.sock");
    let pipeline = standalone_pipeline(
        &w.root,
        "queue-view",
        &format!(
            "[stages.clamav]\nservers = [\"unix:{}\"]\nconnect_timeout_ms = 200\nretry_down_after_ms = 100\n\
             [defer]\ninitial_secs = 3600\nmax_interval_secs = 3600\n",
            sock.display()
        ),
    );
    let _daemon = Daemon(start_daemon(&pipeline, &w.log));
    poll("two deferrals and one rejection", LIMIT, || {
        let l = listed(&pipeline);
        let kinds: Vec<&str> = l.iter().map(|j| j["kind"].as_str().unwrap()).collect();
        (kinds.iter().filter(|k| **k == "deferred").count() == 2 && kinds.contains(&"rejected")).then_some(())
    });

    let (code, text, _) = queue(&pipeline, &["list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for (id, sender) in [(held, "first@example.org"), (other, "second@example.org")] {
        let line = lines.iter().find(|l| l.contains(id)).unwrap();
        assert!(line.starts_with("deferred "), "{line}");
        assert!(line.contains(&format!(" {id} <{sender}> 1 rcpt attempts=1 next=in ")), "{line}");
        assert!(line.contains(" reason: clamav: temporary failure"), "{line}");
    }
    let rejected = lines.iter().find(|l| l.contains(forged)).unwrap();
    assert!(rejected.starts_with("rejected "), "{rejected}");
    assert!(rejected.contains("owned by uid 65534, not by Exim's user"), "{rejected}");

    let (code, shown, _) = queue(&pipeline, &["show", held]);
    assert_eq!(code, 0);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["kind"], "deferred");
    assert_eq!(shown["sender"], "first@example.org");
    assert_eq!(shown["recipients"], serde_json::json!(["user@example.org"]));
    assert_eq!(shown["subject"], "queue view");
    assert_eq!(shown["attempts"], 1);
    assert!(shown["next_try"].as_str().unwrap().ends_with('Z'), "{shown}");
    let (code, _, err) = queue(&pipeline, &["show", "1zzzzz-00000000009-0006"]);
    assert_eq!(code, 2);
    assert!(err.contains("no message 1zzzzz-00000000009-0006 in spoolsift's hands"), "{err}");

    let (code, out, err) = queue(&pipeline, &["hold", held]);
    assert_eq!((code, out.starts_with("hold: "), err.as_str()), (0, true, ""));
    assert_eq!(listed(&pipeline).iter().find(|j| j["id"] == held).unwrap()["kind"], "held");

    // Retry everything not held: the other one is scanned again now (and deferred again, clamd
    // still being absent); the held one is not touched.
    let (code, out, _) = queue(&pipeline, &["retry", "--all"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    poll("the other one retried", LIMIT, || (attempts(&pipeline, other) == 2).then_some(()));
    assert_eq!(attempts(&pipeline, held), 1);

    let (code, _, _) = queue(&pipeline, &["release", held]);
    assert_eq!(code, 0);
    poll("the released one retried", LIMIT, || (attempts(&pipeline, held) == 2).then_some(()));
    assert_eq!(listed(&pipeline).iter().find(|j| j["id"] == held).unwrap()["kind"], "deferred");
    assert!(w.input.read_dir().unwrap().next().is_none(), "nothing delivered unscanned");
}
