//! The `spoolsift` command as a user runs it: output, exit codes and error messages.

use std::process::{Command, Output};

fn spoolsift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spoolsift")).args(args).output().unwrap()
}

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
    assert_eq!(stderr(&o), format!("invalid: {}:2: unknown stage [stages.clamd]\n", p.display()));
    std::fs::write(&p, "name = \"bad\"\n[stages.content]\n\n[stages.clamav]\nservers = [\"bogus\"]\n").unwrap();
    let o = spoolsift(&["check-config", p.to_str().unwrap()]);
    assert_eq!(
        stderr(&o),
        format!(
            "invalid: {}:4: [stages.clamav]: clamav server \"bogus\": expected unix:/path or tcp:host:port\n",
            p.display()
        )
    );
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
