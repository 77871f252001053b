//! The arc stage inside the engine: a message arriving with a passing chain gets our
//! Authentication-Results with `arc=pass`, and with sealing on, the re-queued `-H` carries our new
//! set on top, which dkimpy and our verifier both accept.

mod support;

use std::path::Path;
use std::time::Duration;

use spoolsift::engine::{EngineBuilder, WorkDirs};
use spoolsift::intake::queuefile::QueuefileDir;
use spoolsift::pipeline::PipelineConfig;
use spoolsift::requeue::TargetSpool;
use spoolsift::spool::{DataFile, MessageView, SpoolHeader};
use spoolsift::state::{open_env, StateDb};
use support::arc::*;
use support::spoolsift;

/// Run the engine once over `qf` with `pipeline`, re-queueing into `spool/input`.
fn run_engine(root: &Path, pipeline: &str) -> Vec<String> {
    let cfg = PipelineConfig::parse(pipeline, Path::new("arc.toml")).unwrap();
    let dirs = WorkDirs::new(&root.join("work"));
    dirs.create().unwrap();
    let env = open_env(&dirs.state).unwrap();
    let target = TargetSpool::new(&root.join("spool"), None).unwrap();
    let intake = QueuefileDir::new(&root.join("qf"), Some(&target.input), Duration::from_secs(900));
    let engine = EngineBuilder::new(cfg, StateDb::new(&env).unwrap(), dirs, intake, target).build().unwrap();
    let batch = engine.claim_batch().unwrap();
    assert_eq!(batch.len(), 1);
    engine.process(batch).unwrap().iter().map(|h| h.log_line()).collect()
}

/// The one re-queued message: its header and its RFC 5322 bytes.
fn requeued(root: &Path) -> (SpoolHeader, Vec<u8>) {
    let input = root.join("spool/input");
    let h_name = the_h_file(&input);
    let header = SpoolHeader::read(&input.join(&h_name)).unwrap();
    let data = DataFile::open(&input.join(h_name.replace("-H", "-D")), &header.id).unwrap();
    let bytes = MessageView::new(&header, &data).to_vec().unwrap();
    (header, bytes)
}

fn drop_pair(root: &Path, msg: &[u8]) {
    let (header, body) = spool_message(msg);
    let qf = root.join("qf");
    std::fs::create_dir_all(&qf).unwrap();
    std::fs::create_dir_all(root.join("spool/input")).unwrap();
    let mut data = format!("{}-D\n", header.id).into_bytes();
    data.extend_from_slice(&body);
    std::fs::write(qf.join(format!("{}-D", header.id)), data).unwrap();
    std::fs::write(qf.join(format!("{}-H", header.id)), header.to_bytes()).unwrap();
}

fn value_of(h: &SpoolHeader, name: &str) -> Vec<String> {
    h.headers.get(name.as_bytes()).map(|l| String::from_utf8(l.value()).unwrap()).collect()
}

#[test]
fn passing_chain_is_reported_and_sealed() {
    sealed_with(false);
}

/// With forged fields kept (remove_forged_results = false), a forged Authentication-Results of
/// ours is still not what our ARC-Authentication-Results vouches for: that is built from this
/// run's own results.
#[test]
fn a_kept_forgery_is_not_sealed_into_our_aar() {
    sealed_with(true);
}

fn sealed_with(forgery_kept: bool) {
    require_dkimpy();
    let mut w = World::new();
    let hop1 = w.rsa_key("hop1.example", "arc", 2048);
    let ours = w.rsa_key("seal.example", "mx", 2048);
    let mut incoming = w.dkimpy_sign(&message(), &hop1, "hop1.example", "arc", "mx.hop1.example", "none");
    let forged = "mx.test.example; dkim=pass header.d=bank.example";
    if forgery_kept {
        incoming.splice(0..0, format!("Authentication-Results: {forged}\n").bytes());
    }
    let root = w.path().join("engine");
    drop_pair(&root, &incoming);
    let headers = if forgery_kept { "[headers]\nremove_forged_results = false\n" } else { "" };
    let pipeline = format!(
        r#"
name = "arc-engine"
authserv_id = "mx.test.example"
{headers}
[stages.arc]
txt_records = "{}"
[stages.arc.seal]
domain = "seal.example"
selector = "mx"
key_file = "{}"
timestamp = {T}
"#,
        w.records.display(),
        ours.pkcs8.display()
    );
    let lines = run_engine(&root, &pipeline);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("action=deliver stages=[arc=auth pass/"), "{}", lines[0]);

    let (header, bytes) = requeued(&root);
    let ours_ar = "mx.test.example; arc=pass (i=1) header.oldest-pass=0 smtp.remote-ip=192.0.2.10";
    let mut all_ar = vec![ours_ar];
    if forgery_kept {
        all_ar.push(forged);
    }
    all_ar.push("mx.hop1.example; none");
    assert_eq!(value_of(&header, "Authentication-Results"), all_ar);
    assert_eq!(value_of(&header, "ARC-Authentication-Results")[0], format!("i=2; {ours_ar}"));
    // Prepended in the order AAR, AMS, AS: the seal ends on top.
    let top: Vec<String> =
        header.headers.live().take(4).map(|l| String::from_utf8_lossy(l.name()).into_owned()).collect();
    assert_eq!(top, ["ARC-Seal", "ARC-Message-Signature", "ARC-Authentication-Results", "Authentication-Results"]);
    assert!(value_of(&header, "ARC-Seal")[0]
        .starts_with("i=2; a=rsa-sha256; cv=pass; d=seal.example; s=mx; t=1750000000; b="));

    assert_eq!(w.ours(&bytes), pass(2, 0, &["hop1.example", "seal.example"]));
    assert_eq!(w.dkimpy_verify(&bytes), (Some("pass".into()), "success".into()));
}

#[test]
fn verify_only_reports_without_sealing() {
    require_dkimpy();
    let mut w = World::new();
    let hop1 = w.rsa_key("hop1.example", "arc", 2048);
    let incoming = w.dkimpy_sign(&message(), &hop1, "hop1.example", "arc", "mx.hop1.example", "none");
    let root = w.path().join("engine");
    drop_pair(&root, &replace_once(&incoming, "Hello Bob", "Hello Eve"));
    let pipeline = format!(
        "name = \"arc-engine\"\nauthserv_id = \"mx.test.example\"\n[stages.arc]\ntxt_records = \"{}\"\n",
        w.records.display()
    );
    let lines = run_engine(&root, &pipeline);
    assert!(lines[0].contains("action=deliver stages=[arc=auth fail/"), "{}", lines[0]);
    let (header, _) = requeued(&root);
    assert_eq!(
        value_of(&header, "Authentication-Results")[0],
        "mx.test.example; arc=fail (i=1 AMS body hash mismatch) smtp.remote-ip=192.0.2.10"
    );
    assert_eq!(value_of(&header, "ARC-Seal").len(), 1, "no new seal without [stages.arc.seal]");
}

/// The key lookups of a capture are recorded and a replay answers from them: the replay's arc
/// stage has no records file and a name server nobody answers, and still sees the chain pass. A
/// replay missing that answer names it and decides nothing.
#[test]
fn capture_records_the_key_lookups_and_replay_answers_from_them() {
    require_dkimpy();
    let mut w = World::new();
    let hop1 = w.rsa_key("hop1.example", "arc", 2048);
    let ours = w.rsa_key("seal.example", "mx", 2048);
    let incoming = w.dkimpy_sign(&message(), &hop1, "hop1.example", "arc", "mx.hop1.example", "none");
    let root = w.path().join("capture");
    drop_pair(&root, &incoming);
    let head = "name = \"arc-replay\"\nauthserv_id = \"mx.test.example\"\n[stages.arc]\n";
    let capture_pipeline = root.join("capture.toml");
    std::fs::write(&capture_pipeline, format!("{head}txt_records = \"{}\"\n", w.records.display())).unwrap();
    // Port 9 (discard) on loopback: nothing answers DNS there, so a live lookup could only fail.
    // The replay also seals, as watch would: on the capture's clock, so two replays sign alike.
    let seal = format!(
        "[stages.arc.seal]\ndomain = \"seal.example\"\nselector = \"mx\"\nkey_file = \"{}\"\n",
        ours.pkcs8.display()
    );
    let replay_pipeline = root.join("replay.toml");
    std::fs::write(
        &replay_pipeline,
        format!("{head}nameservers = [\"127.0.0.1:9\"]\ndns_timeout_ms = 200\ndns_attempts = 1\n{seal}"),
    )
    .unwrap();
    let cap = root.join("cap");
    let out = spoolsift(&[
        "capture",
        root.join("qf").to_str().unwrap(),
        cap.to_str().unwrap(),
        "--pipeline",
        capture_pipeline.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let answers: serde_json::Value = serde_json::from_slice(&std::fs::read(cap.join("answers.json")).unwrap()).unwrap();
    let recorded: Vec<&String> = answers["txt"].as_object().unwrap().keys().collect();
    assert_eq!(recorded, ["arc._domainkey.hop1.example"]);

    let replay = |out_dir: &Path| {
        spoolsift(&[
            "replay",
            cap.to_str().unwrap(),
            "--pipeline",
            replay_pipeline.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ])
    };
    let out_dir = root.join("out");
    let out = replay(&out_dir);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let input = out_dir.join("input");
    let h_name = the_h_file(&input);
    let header = SpoolHeader::read(&input.join(&h_name)).unwrap();
    assert_eq!(
        value_of(&header, "Authentication-Results")[0],
        "mx.test.example; arc=pass (i=1) header.oldest-pass=0 smtp.remote-ip=192.0.2.10"
    );
    let clock = answers["clock"].as_u64().unwrap();
    let seal = &value_of(&header, "ARC-Seal")[0];
    assert!(
        seal.starts_with(&format!("i=2; a=rsa-sha256; cv=pass; d=seal.example; s=mx; t={clock}; b=")),
        "{seal}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = root.join("out-again");
    assert_eq!(replay(&again).status.code(), Some(0));
    assert_eq!(
        std::fs::read(again.join("input").join(&h_name)).unwrap(),
        std::fs::read(input.join(&h_name)).unwrap(),
        "two replays seal alike"
    );

    // Without the recorded answer: named, exit 3, and no verdict made up (the message is deferred).
    let mut stripped = answers.clone();
    stripped["txt"] = serde_json::json!({});
    std::fs::write(cap.join("answers.json"), serde_json::to_vec_pretty(&stripped).unwrap()).unwrap();
    let out_dir = root.join("out-missing");
    let out = replay(&out_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("spoolsift replay: missing answer: DNS TXT arc._domainkey.hop1.example\n"), "{stderr}");
    assert!(h_files(&out_dir.join("input")).is_empty(), "nothing re-queued on a made-up answer");
}

/// The `-H` files in a spool directory (none when it does not exist).
fn h_files(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with("-H")).collect(),
        Err(_) => Vec::new(),
    }
}

/// The one `-H` file in a spool directory.
fn the_h_file(dir: &Path) -> String {
    let names = h_files(dir);
    assert_eq!(names.len(), 1, "{names:?}");
    names[0].clone()
}
