//! DKIM interop with dkimpy (`dkim.sign` / `dkim.verify`): messages dkimpy signs (relaxed and
//! simple, RSA and Ed25519, with and without `l=`, folded header fields) are judged by our
//! verifier and by dkimpy, and must get the same verdict; one changed byte fails both.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use spoolsift::spool::message::CrlfReader;
use spoolsift::stages::arc::verify::split_message;
use spoolsift::stages::dkim::{verify_all, DkimResult, DkimStatus};
use support::arc::*;

fn dkimpy(args: &[&str], input: &[u8]) -> Vec<u8> {
    let mut child = Command::new(PYTHON)
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dkimpy_dkim.py"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python runs");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkimpy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn sign(msg: &[u8], key: &Key, domain: &str, canon: &str, length: bool) -> Vec<u8> {
    let pem = if key.record.contains("k=ed25519") { &key.pkcs8 } else { &key.pkcs1 };
    dkimpy(&["sign", pem.to_str().unwrap(), domain, "sel", canon, if length { "1" } else { "0" }], msg)
}

fn theirs(w: &World, msg: &[u8]) -> bool {
    let v: serde_json::Value = serde_json::from_slice(&dkimpy(&["verify", w.records.to_str().unwrap()], msg)).unwrap();
    v["pass"].as_bool().unwrap()
}

fn ours(w: &World, msg: &[u8]) -> Vec<DkimResult> {
    let (headers, body) = split_message(msg);
    verify_all(&headers, &mut CrlfReader::new(body), &w.txt, T + 60, 8).unwrap()
}

/// A message with a folded Subject and a trailing-white-space body, so both canonicalizations
/// have work to do.
fn folded() -> Vec<u8> {
    replace_once(&message(), "Subject: ARC interop", "Subject: DKIM interop,\n\tfolded over\n  two lines")
}

#[test]
fn every_combination_passes_both_and_one_changed_byte_fails_both() {
    require_dkimpy();
    let mut w = World::new();
    let rsa = w.rsa_key("origin.example", "sel", 2048);
    let mut ed = World::new();
    let ed_key = ed.ed25519_key("origin.example", "sel");
    for (world, key) in [(&w, &rsa), (&ed, &ed_key)] {
        for canon in ["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"] {
            for length in [false, true] {
                let what = format!("{} {canon} l={length}", &key.record[..16]);
                let msg = sign(&folded(), key, "origin.example", canon, length);
                assert!(theirs(world, &msg), "dkimpy: {what}");
                let r = ours(world, &msg);
                assert_eq!(r.len(), 1, "{what}");
                assert_eq!((r[0].status, r[0].reason.as_str()), (DkimStatus::Pass, ""), "{what}");
                assert_eq!((r[0].domain.as_str(), r[0].selector.as_str()), ("origin.example", "sel"));
                // One byte of the body changed: both fail, ours with its reason.
                let body = replace_once(&msg, "Hello Bob", "Hello Bo!");
                assert!(!theirs(world, &body), "dkimpy: {what}, body changed");
                assert_eq!(ours(world, &body)[0].status, DkimStatus::Fail, "{what}, body changed");
                assert_eq!(ours(world, &body)[0].reason, "body hash mismatch");
                // One byte of a signed header changed.
                let head = replace_once(&msg, "To: bob@dest.example", "To: bob@dest.exampl!");
                assert!(!theirs(world, &head), "dkimpy: {what}, header changed");
                let r = ours(world, &head);
                assert_eq!(
                    (r[0].status, r[0].reason.as_str()),
                    (DkimStatus::Fail, "signature does not verify"),
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn a_body_grown_past_l_still_passes_and_a_crlf_copy_too() {
    require_dkimpy();
    let mut w = World::new();
    let key = w.rsa_key("origin.example", "sel", 2048);
    let msg = sign(&folded(), &key, "origin.example", "relaxed/relaxed", true);
    // Text appended after the signed length (what l= allows, and why it is risky).
    let mut grown = msg.clone();
    grown.extend_from_slice(b"Appended by a list.\n");
    assert!(theirs(&w, &grown));
    assert_eq!(ours(&w, &grown)[0].status, DkimStatus::Pass);
    let crlf = String::from_utf8(msg).unwrap().replace('\n', "\r\n").into_bytes();
    assert_eq!(ours(&w, &crlf)[0].status, DkimStatus::Pass);
}

#[test]
fn keys_that_are_missing_or_revoked_are_permerrors() {
    require_dkimpy();
    let mut w = World::new();
    let key = w.rsa_key("origin.example", "sel", 2048);
    let msg = sign(&folded(), &key, "origin.example", "relaxed/relaxed", false);
    let elsewhere = replace_once(&msg, "s=sel", "s=gone");
    let r = ours(&w, &elsewhere);
    assert_eq!(r[0].status, DkimStatus::PermError);
    assert_eq!(r[0].reason, "key gone._domainkey.origin.example: no such name");
    assert!(!theirs(&w, &elsewhere));
    w.publish("sel._domainkey.origin.example", "v=DKIM1; k=rsa; p=");
    let r = ours(&w, &msg);
    assert_eq!(
        (r[0].status, r[0].reason.as_str()),
        (DkimStatus::PermError, "key sel._domainkey.origin.example: key revoked (empty p=)")
    );
    assert!(!theirs(&w, &msg));
}

/// The stage on a raw message: its verdict and its Authentication-Results clauses.
fn stage_on(w: &World, msg: &[u8], require: bool) -> (spoolsift::stages::Verdict, Vec<String>) {
    use spoolsift::spool::{MessageView, SpoolHeader};
    use spoolsift::stages::dkim::{DkimConfig, DkimStage};
    use spoolsift::stages::Stage;
    let (headers, body) = split_message(msg);
    let mut h = String::from(
        "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@origin.example>\n1795895471 0\nXX\n1\nbob@dest.example\n\n",
    );
    for f in &headers {
        let text = String::from_utf8_lossy(f);
        h.push_str(&format!("{:03}  {text}", text.len()));
    }
    let header = SpoolHeader::parse(h.as_bytes(), None).unwrap();
    let body = body.to_vec();
    let config = DkimConfig { require_from_domain: require, ..DkimConfig::default() };
    let stage = DkimStage::new(std::sync::Arc::new(w.txt.clone()), config, std::time::Duration::from_secs(5))
        .with_clock(spoolsift::outside::Clock::Fixed(T + 60));
    let r = stage.check(&MessageView::new(&header, &body)).unwrap();
    (r.verdict, r.auth_results)
}

#[test]
fn the_verdict_is_about_the_from_domain() {
    use spoolsift::stages::Verdict;
    require_dkimpy();
    let mut w = World::new();
    let origin = w.rsa_key("origin.example", "sel", 2048);
    let esp = w.rsa_key("esp.example", "sel", 2048);
    let b = |msg: &[u8]| {
        let f = field(msg, "DKIM-Signature:");
        let at = f.find(" b=").unwrap() + 3;
        f[at..at + 8].to_string()
    };
    // Signed by the From domain: pass.
    let own = sign(&folded(), &origin, "origin.example", "relaxed/relaxed", false);
    assert_eq!(
        stage_on(&w, &own, false),
        (Verdict::AuthPass, vec![format!("dkim=pass header.d=origin.example header.s=sel header.b={}", b(&own))])
    );
    // Signed only by a mailing service: neutral, unless the From domain's signature is required.
    let theirs_only = sign(&folded(), &esp, "esp.example", "relaxed/relaxed", false);
    assert_eq!(stage_on(&w, &theirs_only, false).0, Verdict::Neutral);
    assert_eq!(stage_on(&w, &theirs_only, true).0, Verdict::AuthFail);
    // The From domain signed and the signature broke: fail.
    let broken = replace_once(&own, "Hello Bob", "Hello Eve");
    let (verdict, clauses) = stage_on(&w, &broken, false);
    assert_eq!(verdict, Verdict::AuthFail);
    assert_eq!(
        clauses,
        [format!("dkim=fail (body hash mismatch) header.d=origin.example header.s=sel header.b={}", b(&own))]
    );
    // Unsigned: none.
    assert_eq!(stage_on(&w, &folded(), false), (Verdict::Neutral, vec!["dkim=none".to_string()]));
}

#[test]
fn key_flags_strict_and_testing() {
    use spoolsift::stages::Verdict;
    require_dkimpy();
    let mut w = World::new();
    let key = w.rsa_key("origin.example", "sel", 2048);
    let msg = sign(&folded(), &key, "origin.example", "relaxed/relaxed", false);
    // t=s: i= must be d= itself.
    w.publish("sel._domainkey.origin.example", &key.record.replace("k=rsa;", "k=rsa; t=s;"));
    assert_eq!(ours(&w, &msg)[0].status, DkimStatus::Pass);
    let sub = replace_once(&msg, "i=@origin.example", "i=@sub.origin.example");
    let r = ours(&w, &sub);
    assert_eq!((r[0].status, r[0].reason.as_str()), (DkimStatus::PermError, "key has t=s and i= is a subdomain of d="));
    // t=y: the domain is testing; a broken signature is reported, but the message counts as
    // unsigned.
    w.publish("sel._domainkey.origin.example", &key.record.replace("k=rsa;", "k=rsa; t=y;"));
    let broken = replace_once(&msg, "Hello Bob", "Hello Eve");
    assert_eq!(ours(&w, &broken)[0].status, DkimStatus::Fail);
    assert_eq!(stage_on(&w, &broken, false).0, Verdict::Neutral);
    assert_eq!(stage_on(&w, &msg, false).0, Verdict::Neutral, "a testing domain's pass does not vouch either");
}
