//! The `spoolsift` command as a user runs it: output, exit codes and error messages.

mod support;
use std::process::{Command, Output};
use support::spoolsift;

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[test]
fn every_bundled_pipeline_is_valid() {
    let mut files: Vec<String> = std::fs::read_dir("pipelines")
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    assert!(files.contains(&"pipelines/replay.toml".to_string()), "{files:?}");
    let mut args = vec!["check-config"];
    args.extend(files.iter().map(String::as_str));
    let o = spoolsift(&args);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().filter(|l| l.starts_with("ok: ")).count(), files.len());
}

#[test]
fn check_config_names_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "name = \"bad\"\n\n[policy]\ntemporary_failure = \"deliver\"\n").unwrap();
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "invalid: {}:3: a stage failure may not lead to `deliver`: that would deliver mail unscanned\n",
            p.display()
        )
    );
    std::fs::write(&p, "name = \"bad\"\n[stages.clamd]\n").unwrap();
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "invalid: {}:2: unknown stage [stages.clamd]; the stages are arc, clamav, content, dcc, dkim, rspamd, spamd\n",
            p.display()
        )
    );
    // A constructor's complaint points at the key it names, not at the section.
    std::fs::write(&p, "name = \"bad\"\n[stages.content]\n\n[stages.clamav]\nchunk_size = 5\nservers = [\"bogus\"]\n")
        .unwrap();
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(
        stderr(&o),
        format!(
            "invalid: {}:6: [stages.clamav]: servers: \"bogus\": expected unix:/path or tcp:host:port\n",
            p.display()
        )
    );
}

/// Check `text` as a pipeline file; (exit code, stdout, stderr with the file's path as `P`).
fn check(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, text).unwrap();
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    let path = p.display().to_string();
    (o.status.code(), stdout(&o).replace(&path, "P"), stderr(&o).replace(&path, "P"))
}

#[test]
fn a_boolean_must_be_a_boolean() {
    for bad in ["\"no\"", "\"false\"", "0", "1", "\"true\""] {
        let text = format!("name = \"b\"\n\n[stages.content]\neicar = true\nenabled = {bad}\n");
        assert_eq!(
            check(&text),
            (
                Some(1),
                String::new(),
                "invalid: P:5: [stages.content] enabled must be true or false (a TOML boolean, unquoted)\n".into()
            ),
            "{bad}"
        );
    }
    // Booleans inside a stage's settings and elsewhere are typed too.
    let text = "name = \"b\"\n[stages.content]\neicar = \"yes\"\n";
    assert_eq!(check(text).2, "invalid: P:3: [stages.content]: invalid type: string \"yes\", expected a boolean\n");
    let text = "name = \"b\"\n[stages.content]\n[metrics]\nlisten = \"127.0.0.1:1\"\nallow_remote = \"no\"\n";
    assert_eq!(check(text).2, "invalid: P:5: invalid type: string \"no\", expected a boolean\n");
    // `enabled = false` really turns the stage off; `true` keeps it.
    let (code, out, _) = check("name = \"b\"\n[stages.content]\nenabled = false\n[stages.arc]\nenabled = true\n");
    assert_eq!((code, out.as_str()), (Some(0), "ok: P (b): stages [arc], scan/replay only\n"));
}

#[test]
fn errors_in_a_stage_table_point_at_the_key() {
    // A comment that mentions the section's name comes first; the error is on the key's line.
    let text = "name = \"b\"\n# [stages.dcc] is set up below\n\n[stages.dcc]\naddress = \"tcp:127.0.0.1:1\"\n\
                # timeout_ms is in milliseconds\ntimeout_ms = \"slow\"\n";
    assert_eq!(check(text).2, "invalid: P:7: [stages.dcc]: invalid type: string \"slow\", expected u64\n");
    let text = "name = \"b\"\n# [stages.dcc]\n[stages.dcc]\naddress = \"tcp:127.0.0.1:1\"\nbogus_key = 1\n";
    let (code, _, err) = check(text);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("invalid: P:5: [stages.dcc]: unknown field `bogus_key`"), "{err}");
    let text = "name = \"b\"\n# [stages.dcc]\n[stages.dcc]\naddress = \"tcp:127.0.0.1:1\"\ntimeout_ms = 0\n";
    assert_eq!(check(text).2, "invalid: P:5: [stages.dcc]: timeout_ms must be greater than zero\n");
    // A missing key: the table's header.
    let text = "name = \"b\"\n# [stages.arc.seal]\n[stages.arc]\n\n[stages.arc.seal]\ndomain = \"x.example\"\n";
    let (_, _, err) = check(text);
    assert!(err.starts_with("invalid: P:5: [stages.arc]: missing field `selector`"), "{err}");
    // A comment mentioning [policy] before the real section.
    let text = "name = \"b\"\n# [policy] below\n[stages.content]\n[policy]\ntemporary_failure = \"deliver\"\n";
    assert!(check(text).2.starts_with("invalid: P:4: a stage failure may not lead to `deliver`"));
}

#[test]
fn a_pipeline_without_stages_warns() {
    let (code, out, err) = check("name = \"empty\"\n");
    assert_eq!(code, Some(0));
    assert_eq!(out, "ok: P (empty): stages [], scan/replay only\n");
    assert_eq!(err, "warning: P: pipeline \"empty\" has no enabled stage: every message is delivered unchecked\n");
    let (_, _, err) = check("name = \"off\"\n[stages.content]\nenabled = false\n");
    assert!(err.contains("has no enabled stage"), "{err}");
    assert_eq!(check("name = \"on\"\n[stages.content]\n").2, "");
}

#[test]
fn inspect_prints_one_object_per_message_and_checks() {
    let o = spoolsift(&["inspect", "tests/data/spec-example"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["id"], "1xXORz-0000000058C-2p8L");
    assert_eq!(v["format"], "new");
    assert_eq!(v["sender"], "alice@sender.example");
    assert_eq!(v["recipients"][0]["notify"], serde_json::json!(["SUCCESS", "FAILURE"]));
    assert_eq!(v["recipients"][1]["state"], "pending");
    assert_eq!(v["live_header_count"], 8);
    assert_eq!(v["body"]["line_count"], 2);
    assert_eq!(v["message_size"], 441);
    let o = spoolsift(&["inspect", "--check", "tests/data/spec-example/1xXORz-0000000058C-2p8L-D"]);
    assert_eq!((o.status.code(), stdout(&o).as_str()), (Some(0), ""));
}

#[test]
fn inspect_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let id = "1xXOQD-0004A8-22";
    std::fs::write(
        dir.path().join(format!("{id}-H")),
        format!("{id}-H\nroot 0 0\n<a@b>\n1 0\n-body_linecount 5\nXX\n1\nx@y\n\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join(format!("{id}-D")), format!("{id}-D\nonly one line\n")).unwrap();
    let o = spoolsift(&["inspect", "--check", dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("-body_linecount says 5 but the body has 1 lines"), "{}", stderr(&o));
    let o = spoolsift(&["inspect", "/nonexistent/spool"]);
    assert_eq!(o.status.code(), Some(2));
    let o = spoolsift(&["inspect"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn scan_reports_and_exits_by_what_it_found() {
    let o = spoolsift(&["scan", "tests/data/spec-example"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["action"], "deliver");
    assert_eq!(v["stages"][0]["stage"], "content");
    assert_eq!(v["stages"][0]["verdict"], "clean");
    assert!(stderr(&o).contains("scanned 1 messages"));

    let dir = tempfile::tempdir().unwrap();
    let id = "1xXOQD-0004A8-22";
    let eicar = String::from_utf8(spoolsift::stages::content::eicar::signature()).unwrap();
    std::fs::write(
        dir.path().join(format!("{id}-H")),
        format!("{id}-H\nroot 0 0\n<a@b>\n1 0\n-body_linecount 1\nXX\n1\nx@y\n\n014  Subject: test\n"),
    )
    .unwrap();
    std::fs::write(dir.path().join(format!("{id}-D")), format!("{id}-D\n{eicar}\n")).unwrap();
    let report = dir.path().join("report.jsonl");
    let o = spoolsift(&["scan", "--report", report.to_str().unwrap(), dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim()).unwrap();
    assert_eq!(v["action"], "quarantine");
    assert_eq!(v["reasons"][0], "content: infected (Eicar-Test-Signature)");

    std::fs::write(dir.path().join("1xXOQE-0004A8-22-H"), b"").unwrap();
    let o = spoolsift(&["scan", "--report", report.to_str().unwrap(), dir.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "an unreadable pair outranks a finding");
}

/// Run with standard output a pipe whose reader has gone (as under `| head -1`); standard error
/// is kept apart, to see that nothing panicked.
fn into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    // The reading end is closed before the command starts: every write it makes fails, however
    // little it writes and however fast.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let child = Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .args(args)
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    (o.status, String::from_utf8_lossy(&o.stderr).into_owned())
}

#[test]
fn a_closed_pipe_ends_each_command_quietly() {
    use std::os::unix::process::ExitStatusExt;
    for args in [
        &["scan", "spool-fixtures"][..],
        &["inspect", "spool-fixtures/b496-single"],
        &["check-config", "pipelines/default.toml"],
        &["arc-verify", "spool-fixtures/b496-single/1xXYfU-00034G-1x-H"],
    ] {
        let (status, err) = into_closed_pipe(args);
        // Ended by SIGPIPE, as a Unix tool is; not a panic (exit 101), not an error message.
        assert_eq!(status.signal(), Some(libc::SIGPIPE), "{args:?}: {status:?} {err}");
        assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{args:?}: {err}");
    }
}

#[test]
fn errors_name_what_was_being_done_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = spoolsift(&["scan", "/nonexistent-spool"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(stderr(&o), "spoolsift scan: /nonexistent-spool: No such file or directory (os error 2)\n");
    // A file that is not a spool file is said to be one, not counted as nothing found.
    let eml = d.join("m.eml");
    std::fs::write(&eml, "From: a@b.example\nSubject: x\n\nhi\n").unwrap();
    let o = spoolsift(&["scan", eml.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let line: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(line["error"], "not an Exim spool file: its name is not <id>-H or <id>-D");
    assert!(stderr(&o).contains("unreadable pairs                        1"), "{}", stderr(&o));
    // A directory without spool files.
    let o = spoolsift(&["scan", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stderr(&o).starts_with(&format!("spoolsift scan: no spool files (<id>-H and <id>-D) under {}\n", d.display()))
    );
    let o = spoolsift(&["inspect", d.to_str().unwrap()]);
    assert_eq!(stderr(&o), format!("spoolsift inspect: no spool files (<id>-H) under {}\n", d.display()));
    let o = spoolsift(&["inspect", "/nonexistent-spool"]);
    assert_eq!(stderr(&o), "spoolsift inspect: /nonexistent-spool: No such file or directory (os error 2)\n");

    // watch: a missing Exim binary and a missing queuefile directory, each with its setting.
    for sub in ["qf", "spool/input"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    let p = d.join("p.toml");
    let write = |qf: &str| {
        let text = format!(
            "name = \"w\"\n[stages.content]\n\n[intake]\nqueuefile_directory = \"{}\"\nwork_directory = \"{}\"\n\n\
             [requeue]\nspool_directory = \"{}\"\nexim_command = [\"/nonexistent/exim4\", \"-C\", \"/etc/x.conf\"]\n",
            d.join(qf).display(),
            d.join("work").display(),
            d.join("spool").display()
        );
        std::fs::write(&p, text).unwrap();
    };
    write("qf-missing");
    let o = spoolsift(&["watch", "--pipeline", p.to_str().unwrap(), "--once"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "spoolsift watch: cannot take messages from {} (queuefile_directory in {}:5): No such file or directory (os error 2)\n",
            d.join("qf-missing").display(),
            p.display()
        )
    );
    write("qf");
    let o = spoolsift(&["watch", "--pipeline", p.to_str().unwrap(), "--once"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!(
            "spoolsift watch: cannot run Exim at /nonexistent/exim4 (exim_command in {}:10): No such file or directory (os error 2)\n",
            p.display()
        )
    );
}

/// A daemon pipeline with these directories (TOML string values, `{root}` replaced).
fn layout(root: &std::path::Path, qf: &str, work: &str, spool: &str) -> String {
    let r = root.display().to_string();
    format!(
        "name = \"l\"\n[stages.content]\n\n[intake]\nqueuefile_directory = \"{}\"\nwork_directory = \"{}\"\n\n\
         [requeue]\nspool_directory = \"{}\"\nexim_command = [\"true\"]\nsplit_spool_directory = false\nkick = false\n",
        qf.replace("{root}", &r),
        work.replace("{root}", &r),
        spool.replace("{root}", &r)
    )
}

#[test]
fn layouts_that_lose_mail_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("spool/input")).unwrap();
    let ok = layout(root, "{root}/spoolsift/queuefile", "{root}/spoolsift", "{root}/spool");
    assert_eq!(check(&ok).0, Some(0), "{:?}", check(&ok));
    let r = root.display();
    let cases = [
        // The queuefile directory is Exim's own input/: every message would be taken again and
        // deleted as owing nothing.
        (
            layout(root, "{root}/spool/input", "{root}/spoolsift", "{root}/spool"),
            format!("P:5: the queuefile directory ({r}/spool/input) is inside Exim's spool ({r}/spool)"),
        ),
        (
            layout(root, "{root}/spoolsift/queuefile", "{root}/spoolsift", "/"),
            "P:9: spool_directory / is a system directory, not an Exim spool".to_string(),
        ),
        (
            layout(root, "{root}/spoolsift/queuefile", "{root}/spoolsift", "/etc"),
            "P:9: spool_directory /etc is a system directory, not an Exim spool".to_string(),
        ),
        (
            layout(root, "spoolsift/queuefile", "{root}/spoolsift", "{root}/spool"),
            "P:5: queuefile_directory must be an absolute path: spoolsift/queuefile".to_string(),
        ),
        (
            layout(root, "{root}/spoolsift/queuefile", "{root}/spool", "{root}/spool"),
            format!("P:6: the work directory's work/ ({r}/spool/work) is inside Exim's spool ({r}/spool)"),
        ),
        (
            layout(root, "{root}/spoolsift/work", "{root}/spoolsift", "{root}/spool"),
            format!(
                "P:5: the queuefile directory ({r}/spoolsift/work) is the same directory as the work directory's work/ ({r}/spoolsift/work)"
            ),
        ),
        (
            layout(root, "{root}/spoolsift/x/../../spool/input", "{root}/spoolsift", "{root}/spool"),
            format!("P:5: the queuefile directory ({r}/spool/input) is inside Exim's spool ({r}/spool)"),
        ),
    ];
    for (text, want) in cases {
        let (code, _, err) = check(&text);
        assert_eq!((code, err.trim_end()), (Some(1), format!("invalid: {want}").as_str()), "{text}");
    }
    // Another file system than Exim's spool: every re-queue would fail with EXDEV.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_ne!(std::fs::metadata(shm.path()).unwrap().dev(), std::fs::metadata(root).unwrap().dev());
    let text =
        layout(root, "{root}/spoolsift/queuefile", &format!("{}/spoolsift", shm.path().display()), "{root}/spool");
    let (code, _, err) = check(&text);
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(&format!(
            "invalid: P:6: work_directory {}/spoolsift is on another file system than the intake {r}/spoolsift/queuefile",
            shm.path().display()
        )),
        "{err}"
    );
    // watch refuses it too, with the command line's directories.
    let o = spoolsift(&[
        "watch",
        "--queuefile-dir",
        &format!("{r}/spool/input"),
        "--work-dir",
        &format!("{r}/spoolsift"),
        "--spool-dir",
        &format!("{r}/spool"),
        "--no-exim",
        "--once",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("is inside Exim's spool"), "{}", stderr(&o));
}

#[test]
fn a_layout_through_a_link_is_compared_where_it_really_is() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("spool/input")).unwrap();
    // `alias` is Exim's spool by another name; the queuefile directory under it does not exist
    // yet, and would still be Exim's input/.
    std::os::unix::fs::symlink(root.join("spool"), root.join("alias")).unwrap();
    let text = layout(root, "{root}/alias/input/new", "{root}/spoolsift", "{root}/spool");
    let (code, _, err) = check(&text);
    let r = root.canonicalize().unwrap();
    let r = r.display();
    assert_eq!(
        (code, err.trim_end()),
        (
            Some(1),
            format!("invalid: P:5: the queuefile directory ({r}/spool/input/new) is inside Exim's spool ({r}/spool)")
                .as_str()
        )
    );
}
