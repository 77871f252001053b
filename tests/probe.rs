//! `spoolsift check-config --probe`: the shipped default pipeline, pointed at a real test Exim and
//! a real clamd, passes every check with no dccifd; each check is then made to fail by what it is
//! there to catch, and says so on its own line.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::clamd::Clamd;
use support::{Exim, EximOptions};

/// The shipped `pipelines/default.toml`, its paths replaced by the test's.
fn default_pipeline(exim: &Exim, clamd: &Clamd, work: &Path) -> String {
    let argv = exim.argv().iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    std::fs::read_to_string("pipelines/default.toml")
        .unwrap()
        .replace("\"/var/spool/spoolsift/queuefile\"", &format!("{:?}", exim.queuefile_dir()))
        .replace("\"/var/spool/spoolsift\"", &format!("{work:?}"))
        .replace("\"/var/spool/exim4\"", &format!("{:?}", exim.spool()))
        .replace("[\"/usr/sbin/exim4\"]", &format!("[{argv}]"))
        .replace("\"unix:/run/clamav/clamd.ctl\"", &format!("{:?}", clamd.address()))
}

/// Run the probe on `text`; (exit code, the check lines).
fn probe(dir: &Path, text: &str) -> (Option<i32>, Vec<String>) {
    let p = dir.join("probe.toml");
    std::fs::write(&p, text).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_spoolsift")).args(["check-config", "--probe"]).arg(&p).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    (o.status.code(), out.lines().skip(1).map(String::from).collect())
}

fn line<'a>(lines: &'a [String], what: &str) -> &'a str {
    lines.iter().find(|l| l.contains(&format!(" {what}: "))).unwrap_or_else(|| panic!("no {what} in {lines:#?}"))
}

#[test]
fn the_default_pipeline_passes_on_a_host_with_exim_and_clamd_and_each_check_can_fail() {
    let exim = Exim::start(EximOptions { series: "trixie", mode: "queuefile", split: false });
    let clamd = Clamd::start("25M");
    let tmp = tempfile::tempdir().unwrap();
    let work = exim.dir.path().join("spoolsift");
    let text = default_pipeline(&exim, &clamd, &work);
    let (code, lines) = probe(tmp.path(), &text);
    assert_eq!(code, Some(0), "{lines:#?}");
    let whats: Vec<&str> = lines.iter().map(|l| l.split(": ").nth(1).unwrap_or_default()).collect();
    assert_eq!(
        whats,
        [
            "Exim's spool",
            "the queuefile directory",
            "the work directory",
            "the Exim command",
            "Exim has the queuefile transport",
            "Exim's spool_directory is ours",
            "clamav finds the EICAR test file",
            "content finds the EICAR test file",
        ],
        "{lines:#?}"
    );
    assert!(lines.iter().all(|l| l.starts_with("ok: ")), "{lines:#?}");
    assert!(line(&lines, "clamav finds the EICAR test file").contains("Spoolsift.Test.Eicar.UNOFFICIAL"), "{lines:#?}");

    // Each check, made to fail.
    let fails = |text: &str, what: &str, why: &str| {
        let (code, lines) = probe(tmp.path(), text);
        assert_eq!(code, Some(1), "{what}: {lines:#?}");
        let l = line(&lines, what);
        assert!(l.starts_with("FAIL: ") && l.contains(why), "{what}: {l}");
    };
    // A queuefile directory every local account may write into.
    let qf = exim.queuefile_dir();
    let mode = std::fs::metadata(&qf).unwrap().permissions();
    std::fs::set_permissions(&qf, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    fails(&text, "the queuefile directory", "is writable by every local account");
    std::fs::set_permissions(&qf, mode).unwrap();
    // A spool_directory that is not there, and is not Exim's.
    let elsewhere = tmp.path().join("not-a-spool");
    let other = text.replace(&format!("{:?}", exim.spool()), &format!("{elsewhere:?}"));
    fails(&other, "Exim's spool", "not-a-spool: No such file or directory");
    fails(&other, "Exim's spool_directory is ours", "set [requeue] spool_directory to Exim's");
    // An Exim built without queuefile (Debian's packages are), as its -bV says.
    let fake = tmp.path().join("exim-without-queuefile");
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n-bV) printf 'Exim version 4.96 #2\\nTransports: appendfile/maildir pipe smtp\\n';;\n\
             -bP) echo 'spool_directory = {}';;\nesac\n",
            exim.spool().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let argv = exim.argv().iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ");
    let no_qf = text.replace(&format!("[{argv}]"), &format!("[{fake:?}]"));
    fails(&no_qf, "Exim has the queuefile transport", "built without EXPERIMENTAL_QUEUEFILE");
    // An Exim command that does not run.
    let missing = text.replace(&format!("[{argv}]"), "[\"/nonexistent/exim4\"]");
    fails(&missing, "the Exim command", "cannot run /nonexistent/exim4 (exim_command in");
    // clamd not there.
    let no_clamd = text.replace(&format!("{:?}", clamd.address()), "\"unix:/nonexistent/clamd.sock\"");
    fails(&no_clamd, "clamav finds the EICAR test file", "start the service, or point the stage at it");
    // dccifd switched on without one.
    let dcc = text.replace("[stages.dcc]\nenabled = false", "[stages.dcc]\nenabled = true");
    assert_ne!(dcc, text, "the default pipeline has dcc off");
    fails(&dcc, "dcc answers", "start dccifd, or set enabled = false in [stages.dcc]");
    // spamd switched on: with one it passes, without one it fails; rspamd without one.
    let spamd = support::spamd::Spamd::start();
    let on = text.replace("[stages.spamd]\nenabled = false", "[stages.spamd]\nenabled = true");
    assert_ne!(on, text, "the default pipeline has spamd off");
    let with = on.replace("\"127.0.0.1:783\"", &format!("{:?}", spamd.address()));
    let (code, lines) = probe(tmp.path(), &with);
    assert_eq!(code, Some(0), "{lines:#?}");
    assert!(line(&lines, "spamd scores the GTUBE test line as spam").starts_with("ok: "), "{lines:#?}");
    fails(
        &on.replace("\"127.0.0.1:783\"", "\"127.0.0.1:9\""),
        "spamd scores the GTUBE test line as spam",
        "start spamd, or set enabled = false in [stages.spamd]",
    );
    let rspamd = text
        .replace("[stages.rspamd]\nenabled = false", "[stages.rspamd]\nenabled = true")
        .replace("\"http://127.0.0.1:11333\"", "\"http://127.0.0.1:9\"");
    fails(
        &rspamd,
        "rspamd scores the GTUBE test line as spam",
        "start rspamd, or set enabled = false in [stages.rspamd]",
    );
}

#[test]
fn the_sealing_key_must_be_the_published_one() {
    let mut w = support::arc::World::new();
    let ours = w.rsa_key("seal.example", "mx", 2048);
    let text = |key: &PathBuf| {
        format!(
            "name = \"seal\"\n[stages.arc]\ntxt_records = {:?}\n[stages.arc.seal]\ndomain = \"seal.example\"\n\
             selector = \"mx\"\nkey_file = {key:?}\n",
            w.records
        )
    };
    let (code, lines) = probe(w.path(), &text(&ours.pkcs8));
    assert_eq!(
        (code, lines.as_slice()),
        (
            Some(0),
            &["ok: the ARC sealing key is published: mx._domainkey.seal.example publishes our rsa-sha256 key"
                .to_string()][..]
        )
    );
    // Another key than the one published there.
    let other = support::arc::Key::rsa(w.path(), "other", 2048);
    let (code, lines) = probe(w.path(), &text(&other.pkcs8));
    assert_eq!(code, Some(1));
    assert_eq!(
        lines,
        ["FAIL: the ARC sealing key is published: mx._domainkey.seal.example: no record there holds the public half \
          of our key; publish the public key of [stages.arc.seal] key_file there"]
    );
}
