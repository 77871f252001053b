//! Each chain-fail condition of RFC 8617 §5.2 (and the RFC 6376 / 8301 rules it borrows), on a
//! chain our sealer signs at test time and then breaks in exactly one way. The reason says which
//! check caught it, so a check that stopped working cannot hide behind a later one.

mod support;

use spoolsift::dns::{DnsError, TxtLookup};
use spoolsift::spool::message::CrlfReader;
use spoolsift::stages::arc::verify::{self, split_message};
use spoolsift::stages::arc::ArcStatus;
use support::arc::*;

const D: &[&str] = &["seal.example"];

/// One set, RSA-2048, sealed by us.
fn sealed(w: &mut World) -> (Vec<u8>, Key) {
    let key = w.rsa_key("seal.example", "s1", 2048);
    let msg = w.our_seal(&message(), &key, "seal.example", "s1", ArcStatus::None, "mx.seal.example; none");
    assert_eq!(w.ours(&msg), pass(1, 0, D));
    (msg, key)
}

/// Change the field starting with `prefix`: `from` → `to` inside it.
fn edit(msg: &[u8], prefix: &str, from: &str, to: &str) -> Vec<u8> {
    let f = field(msg, prefix);
    assert!(f.contains(from), "{from:?} not in {f}");
    replace_once(msg, &f, &f.replacen(from, to, 1))
}

#[test]
fn no_chain_is_none() {
    let w = World::new();
    let r = w.ours(&message());
    assert_eq!((r.result, r.instances, r.reason.as_str()), (ArcStatus::None, 0, ""));
}

#[test]
fn algorithm_rules() {
    let mut w = World::new();
    let (msg, _) = sealed(&mut w);
    let f = |prefix, from, to, reason: &str| {
        assert_eq!(w.ours(&edit(&msg, prefix, from, to)), failed(1, reason, D), "{prefix} {from} -> {to}");
    };
    f("ARC-Seal", "a=rsa-sha256", "a=rsa-sha1", "i=1 ARC-Seal a=rsa-sha1 is not allowed (RFC 8301)");
    f("ARC-Message-Signature", "a=rsa-sha256", "a=rsa-sha1", "i=1 AMS a=rsa-sha1 is not allowed (RFC 8301)");
    f("ARC-Message-Signature", " a=rsa-sha256;", "", "i=1 AMS a= missing");
    f("ARC-Seal", "a=rsa-sha256", "a=", "i=1 ARC-Seal a= empty");
    f("ARC-Seal", "a=rsa-sha256", "a=rsa-sha512", "i=1 ARC-Seal unknown algorithm a=rsa-sha512");
    // A valid algorithm that is not the key's.
    f("ARC-Message-Signature", "a=rsa-sha256", "a=ed25519-sha256", "i=1 AMS key type does not match a=ed25519-sha256");
}

#[test]
fn tag_list_syntax() {
    let mut w = World::new();
    let (msg, _) = sealed(&mut w);
    let f = |prefix, from, to, reason: &str| {
        let r = w.ours(&edit(&msg, prefix, from, to));
        // A field that does not parse has no instance to group by: the chain's domains are unknown.
        assert_eq!((r.result, r.reason.as_str()), (ArcStatus::Fail, reason), "{prefix} {from} -> {to}");
    };
    f("ARC-Message-Signature", "c=relaxed", "c=relaxed; d=other.example", "ARC-Message-Signature: duplicate tag `d`");
    f(
        "ARC-Message-Signature",
        "c=relaxed",
        "C=relaxed",
        "ARC-Message-Signature: upper-case tag name \"C\" (tag names are case-sensitive)",
    );
    f("ARC-Seal", "i=1;", "i=1;;", "ARC-Seal: stray `;`");
    f("ARC-Seal", "cv=none;", "cv=none; x-y=1;", "ARC-Seal: invalid tag name \"x-y\"");
    f("ARC-Seal", "i=1;", "i=x;", "ARC-Seal: invalid instance i=x");
    f("ARC-Seal", "i=1;", "i=0;", "ARC-Seal: invalid instance i=0");
    f("ARC-Seal", "i=1;", "i=;", "ARC-Seal: invalid instance i=");
    f("ARC-Authentication-Results", "i=1;", "i=51;", "ARC-Authentication-Results: instance i=51 above 50");
}

#[test]
fn field_rules() {
    let mut w = World::new();
    let (msg, _) = sealed(&mut w);
    let f = |prefix, from, to, reason: &str| {
        assert_eq!(w.ours(&edit(&msg, prefix, from, to)), failed(1, reason, D), "{prefix} {from} -> {to}");
    };
    f("ARC-Seal", "cv=none", "cv=pass", "i=1 ARC-Seal cv=pass, expected none");
    f("ARC-Seal", " cv=none;", "", "i=1 ARC-Seal cv= missing");
    f("ARC-Seal", "cv=none", "cv=", "i=1 ARC-Seal invalid cv=");
    f("ARC-Seal", "cv=none", "cv=bogus", "i=1 ARC-Seal invalid cv=bogus");
    f("ARC-Seal", "cv=none;", "cv=none; h=from;", "i=1 ARC-Seal h= is not allowed in an ARC-Seal");
    f("ARC-Message-Signature", "h=from", "h=arc-seal:from", "i=1 AMS h= lists arc-seal");
    f("ARC-Message-Signature", "h=from", "h=ARC-Seal:from", "i=1 AMS h= lists arc-seal");
    // Other ARC fields may be listed (RFC 8617 §4.1.2): the AMS is then judged by its signature,
    // which this edit of h= breaks, not by the list.
    f("ARC-Message-Signature", "h=from", "h=ARC-Authentication-Results:from", "i=1 AMS signature does not verify");
    f("ARC-Message-Signature", "h=from", "h=arc-message-signature:from", "i=1 AMS signature does not verify");
    f("ARC-Message-Signature", "h=from:", "h=", "i=1 AMS h= does not list From");
    f("ARC-Message-Signature", "t=1750000000", "t=1750000000; x=1700000000", "i=1 AMS expired (x=1700000000)");
    f("ARC-Message-Signature", " d=seal.example;", "", "i=1 AMS d= missing");
    f("ARC-Seal", " s=s1;", "", "i=1 ARC-Seal s= missing");
    f("ARC-Message-Signature", "bh=", "bh=!", "i=1 AMS bh= is not base64");
    f("ARC-Message-Signature", "b=", "b=!", "i=1 AMS b= is not base64");
    f("ARC-Message-Signature", "c=relaxed/relaxed", "c=loose/relaxed", "i=1 AMS unknown canonicalization \"loose\"");
    // A new AAR, AMS or AS field for an instance: exactly one of each is allowed.
    let mut extra = field(&msg, "ARC-Message-Signature").into_bytes();
    extra.extend_from_slice(&msg);
    assert_eq!(w.ours(&extra), failed(1, "i=1 duplicate ARC-Message-Signature", D));
    // A gap: i=2 without i=1.
    let two = edit(
        &edit(&edit(&msg, "ARC-Seal", "i=1", "i=2"), "ARC-Message-Signature", "i=1", "i=2"),
        "ARC-Authentication-Results",
        "i=1",
        "i=2",
    );
    assert_eq!(w.ours(&two), failed(2, "i=1 missing ARC-Authentication-Results", D));
}

#[test]
fn key_rules() {
    let mut w = World::new();
    let (msg, key) = sealed(&mut w);
    let name = "s1._domainkey.seal.example";
    w.publish(name, "v=DKIM1; k=rsa; p=");
    assert_eq!(w.ours(&msg), failed(1, &format!("i=1 AMS key lookup {name}: key revoked (empty p=)"), D));
    w.publish(name, &key.record.replace("k=rsa", "k=ed25519"));
    assert_eq!(
        w.ours(&msg),
        failed(1, &format!("i=1 AMS key lookup {name}: key record: Ed25519 p= is not 32 bytes"), D)
    );
    w.publish("other._domainkey.seal.example", &key.record);
    let moved = edit(&msg, "ARC-Message-Signature", "s=s1", "s=gone");
    assert_eq!(w.ours(&moved), failed(1, "i=1 AMS key lookup gone._domainkey.seal.example: no such name", D));
}

#[test]
fn small_rsa_keys() {
    require_dkimpy();
    let mut w = World::new();
    // 1024 bits is still allowed (RFC 8301), through ring's legacy verifier.
    let k1024 = w.rsa_key("legacy.example", "arc", 1024);
    let msg = w.dkimpy_sign(&message(), &k1024, "legacy.example", "arc", "mx.legacy.example", "none");
    assert_eq!(w.ours(&msg), pass(1, 0, &["legacy.example"]));
    let k512 = w.rsa_key("weak.example", "arc", 512);
    let msg = w.dkimpy_sign(&message(), &k512, "weak.example", "arc", "mx.weak.example", "none");
    assert_eq!(
        w.ours(&msg),
        failed(
            1,
            "i=1 AMS key lookup arc._domainkey.weak.example: RSA key of 512 bits is below 1024 (RFC 8301)",
            &["weak.example"]
        )
    );
    // dkimpy agrees (its minkey is 1024 too).
    assert_eq!(w.dkimpy_verify(&msg).0.as_deref(), Some("fail"));
}

#[test]
fn ed25519_chains() {
    let mut w = World::new();
    let ed = w.ed25519_key("ed.example", "ed");
    let rsa = w.rsa_key("rsa.example", "rsa", 2048);
    let one = w.our_seal(&message(), &ed, "ed.example", "ed", ArcStatus::None, "mx.ed.example; none");
    let two = w.our_seal(&one, &rsa, "rsa.example", "rsa", ArcStatus::Pass, "mx.rsa.example; arc=pass");
    assert_eq!(w.ours(&two), pass(2, 0, &["ed.example", "rsa.example"]));
    let broken = replace_once(&two, "Hello Bob", "Hello Eve");
    assert_eq!(w.ours(&broken), failed(2, "i=2 AMS body hash mismatch", &["ed.example", "rsa.example"]));
}

#[test]
fn oldest_pass_names_the_first_set_that_still_verifies() {
    let mut w = World::new();
    let k1 = w.rsa_key("one.example", "a", 2048);
    let k2 = w.rsa_key("two.example", "b", 2048);
    let k3 = w.rsa_key("three.example", "c", 2048);
    let one = w.our_seal(&message(), &k1, "one.example", "a", ArcStatus::None, "mx.one.example; none");
    // The second hop tags the subject, which breaks AMS(1) but not the chain.
    let changed = replace_once(&one, "Subject: ARC interop", "Subject: [list] ARC interop");
    let two = w.our_seal(&changed, &k2, "two.example", "b", ArcStatus::Pass, "mx.two.example; arc=pass");
    assert_eq!(w.ours(&two), pass(2, 2, &["one.example", "two.example"]));
    let three = w.our_seal(&two, &k3, "three.example", "c", ArcStatus::Pass, "mx.three.example; arc=pass");
    assert_eq!(w.ours(&three), pass(3, 2, &["one.example", "two.example", "three.example"]));
}

#[test]
fn sealing_a_failed_chain_signs_only_the_new_set() {
    let mut w = World::new();
    let (msg, key) = sealed(&mut w);
    let broken = replace_once(&msg, "Hello Bob", "Hello Eve");
    let r = w.ours(&broken);
    assert_eq!(r.reason, "i=1 AMS body hash mismatch");
    let resealed = w.our_seal(&broken, &key, "seal.example", "s1", ArcStatus::Fail, "mx.seal.example; arc=fail");
    assert_eq!(w.ours(&resealed), failed(2, "i=2 ARC-Seal cv=fail", &["seal.example", "seal.example"]));
    // Its seal signs the new set alone (RFC 8617 §5.1.2); the verifier stops at cv=fail, so check
    // the signature directly.
    let (headers, _) = split_message(&resealed);
    let seal = headers.iter().find(|h| h.starts_with(b"ARC-Seal: i=2")).unwrap();
    let ams = headers.iter().find(|h| h.starts_with(b"ARC-Message-Signature: i=2")).unwrap();
    let aar = headers.iter().find(|h| h.starts_with(b"ARC-Authentication-Results: i=2")).unwrap();
    let b_at = seal.windows(4).position(|x| x == b"; b=").map(|p| p + 4).unwrap();
    let data = verify::seal_data(&[(aar, ams, seal)], (b_at, seal.len()));
    let sig: String = String::from_utf8_lossy(&seal[b_at..]).split_whitespace().collect();
    use base64::Engine;
    let sig = base64::engine::general_purpose::STANDARD.decode(sig).unwrap();
    let record = w.txt.txt("s1._domainkey.seal.example").unwrap().remove(0);
    let pk = spoolsift::stages::arc::keys::PublicKey::from_record(&record).unwrap();
    assert_eq!(pk.verify(spoolsift::stages::arc::keys::Algorithm::RsaSha256, &data, &sig), Ok(()));
    // No seal on top of a chain whose newest seal says cv=fail.
    let sealer_cfg = spoolsift::stages::arc::SealConfig {
        domain: "seal.example".into(),
        selector: "s1".into(),
        key_file: key.pkcs8.clone(),
        headers: vec!["from".into()],
        timestamp: Some(T),
    };
    let sealer = spoolsift::stages::arc::Sealer::new(&sealer_cfg, &std::fs::read(&key.pkcs8).unwrap()).unwrap();
    let (headers, body) = split_message(&resealed);
    let refused = sealer.seal(&headers, &mut CrlfReader::new(body), ArcStatus::Fail, "x; arc=fail", T).unwrap();
    assert_eq!(refused, Err("not sealed: the newest ARC-Seal (i=2) has cv=fail".into()));
}

/// Temporary DNS failures fail the chain (RFC 8617 §5.2.1) and are flagged so the stage can
/// defer instead when configured to.
#[test]
fn dns_trouble_fails_and_is_flagged() {
    struct Down;
    impl TxtLookup for Down {
        fn txt(&self, _: &str) -> Result<Vec<Vec<u8>>, DnsError> {
            Err(DnsError::Temporary("timed out".into()))
        }
    }
    let mut w = World::new();
    let (msg, _) = sealed(&mut w);
    let (headers, body) = split_message(&msg);
    let r = verify::verify(&headers, &mut CrlfReader::new(body), &Down, T).unwrap();
    let mut expected = failed(1, "i=1 AMS key lookup s1._domainkey.seal.example: temporary DNS failure", D);
    expected.dns_trouble = spoolsift::stages::arc::DnsTrouble::Temporary;
    assert_eq!(r, expected);
}
