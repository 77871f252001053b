//! `spoolsift capture` and `spoolsift replay` as a user runs them: a capture of the bundled
//! fixtures plus an EICAR message (built at run time) with a real clamd (scripts/clamd-test.sh)
//! and the dccifd double answering; then, with both gone, two replays that must write identical
//! bytes, `--expect` against an unchanged and a changed pipeline, and a capture with one recorded
//! answer removed.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use spoolsift::stages::content::eicar;
use support::clamd::Clamd;
use support::dccifd::{Double, Reply};

const EICAR_ID: &str = "1xXOQD-0004A8-22";
/// A clean fixture whose re-queued headers the tests look at.
const CLEAN_ID: &str = "1xXYfY-0003Lh-1j";
const DCC_REPLY: &str = "A\nA\nX-DCC-Test-Metrics: host 1; Body=1 Fuz1=2 Fuz2=many\n\n";

fn spoolsift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spoolsift")).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A queuefile-style directory: every fixture pair, plus (when asked) the EICAR message.
fn queue(dir: &Path, fixtures: bool, with_eicar: bool) {
    std::fs::create_dir_all(dir).unwrap();
    if fixtures {
        for e in std::fs::read_dir("spool-fixtures").unwrap() {
            let d = e.unwrap().path();
            if !d.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&d).unwrap() {
                let f = f.unwrap().path();
                let name = f.file_name().unwrap().to_str().unwrap().to_string();
                if name.ends_with("-H") || name.ends_with("-D") {
                    std::fs::copy(&f, dir.join(name)).unwrap();
                }
            }
        }
    }
    if with_eicar {
        let sig = text(&eicar::signature());
        std::fs::write(
            dir.join(format!("{EICAR_ID}-H")),
            format!(
                "{EICAR_ID}-H\nroot 0 0\n<a@b.example>\n1795895471 0\n-body_linecount 1\nXX\n1\nx@y.example\n\n\
                 014  Subject: test\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join(format!("{EICAR_ID}-D")), format!("{EICAR_ID}-D\n{sig}\n")).unwrap();
    }
}

fn pipeline(dir: &Path, name: &str, clamd: &str, dcc: &str, extra: &str) -> PathBuf {
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(
        &p,
        format!(
            "name = \"{name}\"\nauthserv_id = \"mx.example.org\"\n\n[stages.content]\n\n[stages.clamav]\n\
             servers = [\"{clamd}\"]\nread_timeout_ms = 10000\n\n[stages.dcc]\naddress = \"{dcc}\"\n\n[policy]\n\
             clean = \"deliver\"\ninfected = \"quarantine\"\nblocked = \"quarantine\"\nspam = \"deliver\"\n\
             temporary_failure = \"defer\"\npermanent_failure = \"hold\"\n{extra}"
        ),
    )
    .unwrap();
    p
}

/// A file's bytes and, when asked, its mode and mtime (seconds, nanoseconds).
type FileState = (Vec<u8>, Option<(u32, i64, i64)>);

/// Every file under `root` by relative path (directories end in `/`).
fn tree(root: &Path, meta: bool) -> BTreeMap<String, FileState> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), (Vec::new(), None));
                stack.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap();
                out.insert(rel, (std::fs::read(&p).unwrap(), meta.then(|| (m.mode(), m.mtime(), m.mtime_nsec()))));
            }
        }
    }
    out
}

fn actions(out: &Path) -> Vec<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(out.join("actions.json")).unwrap()).unwrap()
}

fn action_of(out: &Path, id: &str) -> String {
    actions(out).iter().find(|a| a["id"] == id).unwrap()["action"].as_str().unwrap().to_string()
}

#[test]
fn capture_replay_twice_identical_and_expect_shows_a_pipeline_change() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("queuefile");
    queue(&src, true, true);
    let messages = std::fs::read_dir(&src).unwrap().count() / 2;
    let mut clamd = Clamd::start("25M");
    let dcc = Double::unix(Reply::text(DCC_REPLY));
    let pipe = pipeline(tmp.path(), "replay", &clamd.address(), &dcc.address, "");

    let before = tree(&src, true);
    let cap = tmp.path().join("capture");
    let o = spoolsift(&["capture", s(&src), s(&cap), "--pipeline", s(&pipe)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(tree(&src, true), before, "capture changed the queue it copied");
    assert_eq!(dcc.requests().len(), messages, "dccifd asked once per message");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cap.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["messages"].as_array().unwrap().len(), messages);
    assert_eq!(manifest["tool"], format!("spoolsift {}", env!("CARGO_PKG_VERSION")));
    let answers: serde_json::Value = serde_json::from_slice(&std::fs::read(cap.join("answers.json")).unwrap()).unwrap();
    assert_eq!(answers["clock"], manifest["captured_at"]);
    assert_eq!(answers["services"]["clamav"].as_object().unwrap().len(), messages);
    assert_eq!(answers["services"]["dcc"].as_object().unwrap().len(), messages);

    // The outside world goes away: the replays must not need it.
    clamd.stop();
    let dcc_address = dcc.address.clone();
    drop(dcc);
    let cap_before = tree(&cap, true);
    let (r1, r2) = (tmp.path().join("r1"), tmp.path().join("r2"));
    for r in [&r1, &r2] {
        let o = spoolsift(&["replay", s(&cap), "--pipeline", s(&pipe), "--out", s(r)]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
        assert_eq!(text(&o.stdout), "");
    }
    assert_eq!(tree(&cap, true), cap_before, "replay changed the capture");
    let (t1, t2) = (tree(&r1, false), tree(&r2, false));
    assert_eq!(t1.keys().collect::<Vec<_>>(), t2.keys().collect::<Vec<_>>());
    for (k, v) in &t1 {
        assert!(t2[k] == *v, "{k} differs between two replays");
    }
    assert_eq!(t1.keys().filter(|k| k.starts_with("input/") && !k.ends_with('/')).count(), 2 * (messages - 1));

    // The EICAR message: quarantined, with both scanners' verdicts, at the capture's time.
    assert_eq!(action_of(&r1, EICAR_ID), "quarantine");
    let q: Vec<&String> = t1.keys().filter(|k| k.starts_with("quarantine/") && k.ends_with("/verdict.json")).collect();
    assert_eq!(q.len(), 1, "{q:?}");
    let verdict: serde_json::Value = serde_json::from_slice(&t1[q[0]].0).unwrap();
    assert_eq!(verdict["id"], EICAR_ID);
    let captured_at = manifest["captured_at"].as_u64().unwrap();
    assert_eq!(verdict["quarantined_at"], spoolsift::outside::clock::rfc3339(captured_at));
    assert_eq!(
        verdict["reasons"],
        serde_json::json!([
            "clamav: infected (Spoolsift.Test.Eicar.UNOFFICIAL)",
            "content: infected (Eicar-Test-Signature)"
        ])
    );
    assert!(t1.contains_key(&q[0].replace("verdict.json", &format!("{EICAR_ID}-H"))));

    // A clean message: re-queued under its id with our headers and dccifd's.
    assert_eq!(action_of(&r1, CLEAN_ID), "deliver");
    let h = text(&t1[&format!("input/{CLEAN_ID}-H")].0);
    assert!(h.contains("  X-DCC-Test-Metrics: host 1; Body=1 Fuz1=2 Fuz2=many\n"), "{h}");
    // (Folded by the header writer at its line length.)
    let status = format!(
        "  X-Spoolsift-Status: clean (clamav=clean content=clean dcc=clean) spoolsift\n {}\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(h.contains(&status), "{h}");

    // --expect with the same pipeline: no difference.
    let o =
        spoolsift(&["replay", s(&cap), "--pipeline", s(&pipe), "--out", s(&tmp.path().join("r3")), "--expect", s(&r1)]);
    assert_eq!((o.status.code(), text(&o.stdout).as_str()), (Some(0), ""), "{}", text(&o.stderr));

    // A changed pipeline: infected mail held instead of quarantined, and another status template.
    let changed = pipeline(
        tmp.path(),
        "changed",
        &clamd.address(),
        &dcc_address,
        "\n[headers]\nstatus_template = \"{verdict} spoolsift\"\n",
    );
    let changed = {
        let t = std::fs::read_to_string(&changed).unwrap().replace("infected = \"quarantine\"", "infected = \"hold\"");
        std::fs::write(&changed, t).unwrap();
        changed
    };
    let o = spoolsift(&[
        "replay",
        s(&cap),
        "--pipeline",
        s(&changed),
        "--out",
        s(&tmp.path().join("r4")),
        "--expect",
        s(&r1),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    let diff = text(&o.stdout);
    let block = |id: &str| -> String {
        let start = diff.find(&format!("--- expected {id}\n")).unwrap_or_else(|| panic!("no diff for {id}:\n{diff}"));
        let end = diff[start + 4..].find("--- expected ").map_or(diff.len(), |e| start + 4 + e);
        diff[start..end].to_string()
    };
    assert_eq!(
        block(CLEAN_ID),
        "--- expected 1xXYfY-0003Lh-1j\n+++ replayed 1xXYfY-0003Lh-1j\n@@ -14,3 +14,3 @@\n \
         header [ ] Date: Sun, 29 Nov 2026 06:45:52 +0000\n \
         header [ ] X-DCC-Test-Metrics: host 1; Body=1 Fuz1=2 Fuz2=many\n\
         -header [ ] X-Spoolsift-Status: clean (clamav=clean content=clean dcc=clean) spoolsift\\n 0.1.0\n\
         +header [ ] X-Spoolsift-Status: clean spoolsift\n"
    );
    // Held instead of quarantined: re-queued, so it now carries our headers.
    assert_eq!(
        block(EICAR_ID),
        "--- expected 1xXOQD-0004A8-22\n+++ replayed 1xXOQD-0004A8-22\n@@ -1,5 +1,9 @@\n\
         -action: quarantine\n\
         +action: hold\n \
         reason: clamav: infected (Spoolsift.Test.Eicar.UNOFFICIAL)\n \
         reason: content: infected (Eicar-Test-Signature)\n \
         recipient: x@y.example\n\
         +header [ ] Authentication-Results: mx.example.org; none\n \
         header [ ] Subject: test\n\
         +header [ ] X-DCC-Test-Metrics: host 1; Body=1 Fuz1=2 Fuz2=many\n\
         +header [ ] X-Spoolsift-Status: infected (Spoolsift.Test.Eicar.UNOFFICIAL) spoolsift\n\
         +header [ ] X-Spoolsift-Virus: Spoolsift.Test.Eicar.UNOFFICIAL, Eicar-Test-Signature\n"
    );
    assert_eq!(diff.matches("--- expected ").count(), messages, "every message's status header changed");
}

#[test]
fn a_missing_recorded_answer_is_named_and_nothing_is_made_up() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("queuefile");
    std::fs::create_dir_all(&src).unwrap();
    for suffix in ["H", "D"] {
        let name = format!("{CLEAN_ID}-{suffix}");
        std::fs::copy(Path::new("spool-fixtures/b496-bounce").join(&name), src.join(&name)).unwrap();
    }
    let mut clamd = Clamd::start("25M");
    let dcc = Double::unix(Reply::text(DCC_REPLY));
    let pipe = pipeline(tmp.path(), "replay", &clamd.address(), &dcc.address, "");
    let cap = tmp.path().join("capture");
    let o = spoolsift(&["capture", s(&src), s(&cap), "--pipeline", s(&pipe)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    clamd.stop();
    drop(dcc);

    let path = cap.join("answers.json");
    let mut answers: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let dcc_answers = answers["services"]["dcc"].as_object_mut().unwrap();
    assert_eq!(dcc_answers.len(), 1);
    let key = dcc_answers.keys().next().unwrap().clone();
    dcc_answers.remove(&key);
    std::fs::write(&path, serde_json::to_vec_pretty(&answers).unwrap()).unwrap();

    let out = tmp.path().join("out");
    let o = spoolsift(&["replay", s(&cap), "--pipeline", s(&pipe), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    let missing: Vec<&str> = stderr.lines().filter(|l| l.contains("missing answer")).collect();
    assert_eq!(
        missing,
        [format!("spoolsift replay: missing answer: stage dcc message {CLEAN_ID} request sha256 {key}")]
    );
    // Undecided: deferred, so neither re-queued nor quarantined.
    let a = actions(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0]["action"], "defer");
    assert_eq!(
        a[0]["stages"][2]["verdict"],
        format!("temporary failure: replay: no recorded dcc answer for message {CLEAN_ID} (request sha256 {key})")
    );
    assert_eq!(std::fs::read_dir(out.join("input")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(out.join("quarantine")).unwrap().count(), 0);
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 3, "no work area left behind: {names:?}");
}

#[test]
fn replay_refuses_a_capture_that_changed_and_a_non_empty_output() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("queuefile");
    queue(&src, false, true);
    let cap = tmp.path().join("capture");
    let o = spoolsift(&["capture", s(&src), s(&cap)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let pipe = Path::new("pipelines/audit.toml");
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("x"), b"").unwrap();
    let o = spoolsift(&["replay", s(&cap), "--pipeline", s(pipe), "--out", s(&out)]);
    assert_eq!(
        (o.status.code(), text(&o.stderr)),
        (Some(2), format!("spoolsift replay: {}: not empty\n", out.display()))
    );
    let data = cap.join("queue").join(format!("{EICAR_ID}-D"));
    std::fs::write(&data, format!("{EICAR_ID}-D\nchanged\n")).unwrap();
    let o = spoolsift(&["replay", s(&cap), "--pipeline", s(pipe), "--out", s(&tmp.path().join("o2"))]);
    assert_eq!(
        (o.status.code(), text(&o.stderr)),
        (Some(2), format!("spoolsift replay: {}: differs from the manifest\n", data.display()))
    );
    let o = spoolsift(&["capture", s(&src), s(&cap)]);
    assert_eq!(
        (o.status.code(), text(&o.stderr)),
        (Some(2), format!("spoolsift capture: {}: not empty\n", cap.display()))
    );
}

#[test]
fn a_recorded_transport_failure_replays_as_the_same_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("queuefile");
    queue(&src, false, true);
    let socket = tmp.path().join("no-dccifd-here");
    let pipe = tmp.path().join("p.toml");
    std::fs::write(
        &pipe,
        format!(
            "name = \"p\"\n[stages.dcc]\naddress = \"unix:{}\"\n[policy]\nclean = \"deliver\"\n\
             temporary_failure = \"defer\"\npermanent_failure = \"hold\"\n",
            socket.display()
        ),
    )
    .unwrap();
    let cap = tmp.path().join("capture");
    let o = spoolsift(&["capture", s(&src), s(&cap), "--pipeline", s(&pipe)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let refused = format!("dccifd connect to unix:{}: No such file or directory (os error 2)", socket.display());
    let answers: serde_json::Value = serde_json::from_slice(&std::fs::read(cap.join("answers.json")).unwrap()).unwrap();
    let recorded: Vec<&serde_json::Value> = answers["services"]["dcc"].as_object().unwrap().values().collect();
    assert_eq!(recorded, [&serde_json::json!({ "failed": refused })]);
    // A dccifd now listening there must not be asked: the replay gives the recorded refusal.
    let dcc = Double::unix(Reply::text(DCC_REPLY));
    std::os::unix::fs::symlink(dcc.address.strip_prefix("unix:").unwrap(), &socket).unwrap();
    let out = tmp.path().join("out");
    let o = spoolsift(&["replay", s(&cap), "--pipeline", s(&pipe), "--out", s(&out)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(dcc.requests().len(), 0);
    let a = actions(&out);
    assert_eq!(a[0]["action"], "defer");
    assert_eq!(a[0]["stages"][0]["verdict"], format!("temporary failure: {refused}"));
}

#[test]
fn an_unreadable_pair_is_reported_alike_by_two_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("queuefile");
    std::fs::create_dir_all(&src).unwrap();
    let fixture = Path::new("spool-fixtures/b496-bounce");
    let h = std::fs::read_to_string(fixture.join(format!("{CLEAN_ID}-H"))).unwrap();
    assert!(h.contains("\n-body_linecount 42\n"));
    std::fs::write(src.join(format!("{CLEAN_ID}-H")), h.replace("\n-body_linecount 42\n", "\n-body_linecount 042\n"))
        .unwrap();
    std::fs::copy(fixture.join(format!("{CLEAN_ID}-D")), src.join(format!("{CLEAN_ID}-D"))).unwrap();
    let cap = tmp.path().join("capture");
    let o = spoolsift(&["capture", s(&src), s(&cap), "--pipeline", "pipelines/audit.toml"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert_eq!(text(&o.stderr).lines().filter(|l| l.contains("not scanned")).count(), 1, "{}", text(&o.stderr));
    let (r1, r2) = (tmp.path().join("r1"), tmp.path().join("r2"));
    for r in [&r1, &r2] {
        let o = spoolsift(&["replay", s(&cap), "--pipeline", "pipelines/audit.toml", "--out", s(r)]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    }
    assert_eq!(tree(&r1, false), tree(&r2, false));
    let a = actions(&r1);
    assert_eq!(a[0]["action"], "rejected");
    assert_eq!(
        a[0]["reasons"],
        serde_json::json!([format!("queue/{CLEAN_ID}-H:9 (byte 169): option line: this option needs a decimal value")])
    );
}
