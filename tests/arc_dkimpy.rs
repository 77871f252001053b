//! Interop with dkimpy (`dkim.arc_sign` / `dkim.arc_verify`): chains dkimpy signs are judged by our
//! verifier and by dkimpy, and must get the same verdict; where dkimpy departs from RFC 8617 the
//! test says so and asserts the RFC's answer. Our seals must pass dkimpy's verifier.

mod support;

use spoolsift::stages::arc::ArcStatus;
use support::arc::*;

/// Three hops, each its own ADMD, each vouching with dkimpy's own validation (cv=auto).
fn hops(w: &mut World, n: usize) -> Vec<u8> {
    let mut msg = message();
    for hop in 1..=n {
        let domain = format!("hop{hop}.example");
        let key = w.rsa_key(&domain, "arc", 2048);
        let cv = if hop == 1 { "none" } else { "auto" };
        msg = w.dkimpy_sign(&msg, &key, &domain, "arc", &format!("mx.{domain}"), cv);
    }
    msg
}

#[test]
fn chains_of_one_to_three_pass_both() {
    require_dkimpy();
    for n in 1..=3u32 {
        let mut w = World::new();
        let msg = hops(&mut w, n as usize);
        let domains: Vec<String> = (1..=n).map(|i| format!("hop{i}.example")).collect();
        let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
        assert_eq!(w.ours(&msg), pass(n, 0, &domains), "{n} hops:\n{}", String::from_utf8_lossy(&msg));
        assert_eq!(w.dkimpy_verify(&msg).0.as_deref(), Some("pass"), "{n} hops");
        // The same message with CRLF line ends (as on the wire) gives the same verdict.
        let crlf = String::from_utf8(msg.clone()).unwrap().replace('\n', "\r\n").into_bytes();
        assert_eq!(w.ours(&crlf), pass(n, 0, &domains));
    }
}

fn both_fail(w: &World, msg: &[u8], expected: spoolsift::stages::arc::ArcResult) {
    assert_eq!(w.ours(msg), expected, "\n{}", String::from_utf8_lossy(msg));
    let (cv, reason) = w.dkimpy_verify(msg);
    assert_eq!(cv.as_deref(), Some("fail"), "dkimpy: {reason}");
}

#[test]
fn tampered_body_fails() {
    require_dkimpy();
    let mut w = World::new();
    let msg = replace_once(&hops(&mut w, 2), "Hello Bob", "Hello Eve");
    both_fail(&w, &msg, failed(2, "i=2 AMS body hash mismatch", &["hop1.example", "hop2.example"]));
}

#[test]
fn tampered_signed_header_fails() {
    require_dkimpy();
    let mut w = World::new();
    let msg = replace_once(&hops(&mut w, 2), "Subject: ARC interop", "Subject: ARC interop!");
    both_fail(&w, &msg, failed(2, "i=2 AMS signature does not verify", &["hop1.example", "hop2.example"]));
}

#[test]
fn broken_seal_fails() {
    require_dkimpy();
    let mut w = World::new();
    let msg = hops(&mut w, 1);
    let seal = field(&msg, "ARC-Seal: i=1");
    let msg = replace_once(&msg, &seal, &seal.replace("t=1750000000", "t=1750000001"));
    both_fail(&w, &msg, failed(1, "i=1 ARC-Seal signature does not verify", &["hop1.example"]));
    // A changed older seal breaks the newer seal, which covers it.
    let msg = hops(&mut w, 2);
    let seal = field(&msg, "ARC-Seal: i=1");
    let msg = replace_once(&msg, &seal, &seal.replace("t=1750000000", "t=1750000001"));
    both_fail(&w, &msg, failed(2, "i=2 ARC-Seal signature does not verify", &["hop1.example", "hop2.example"]));
}

#[test]
fn newest_cv_fail_fails() {
    require_dkimpy();
    let mut w = World::new();
    let msg = replace_once(&hops(&mut w, 1), "Hello Bob", "Hello Eve");
    let key = w.rsa_key("hop2.example", "arc", 2048);
    let msg = w.dkimpy_sign(&msg, &key, "hop2.example", "arc", "mx.hop2.example", "auto");
    assert!(field(&msg, "ARC-Seal: i=2").contains("cv=fail"));
    assert_eq!(w.ours(&msg), failed(2, "i=2 ARC-Seal cv=fail", &["hop1.example", "hop2.example"]));
    // dkimpy deviates: it answers None ("the chain is terminated") where RFC 8617 §5.2 step 2
    // says the chain fails. We assert the RFC's answer above and document dkimpy's here.
    let (cv, reason) = w.dkimpy_verify(&msg);
    assert_eq!((cv, reason.as_str()), (None, "ARC-Seal[2] reported failure, the chain is terminated"));
}

#[test]
fn missing_and_duplicate_instances_fail() {
    require_dkimpy();
    let mut w = World::new();
    let two = hops(&mut w, 2);
    let domains = ["hop1.example", "hop2.example"];
    let mut gone = two.clone();
    for prefix in ["ARC-Seal: i=1", "ARC-Message-Signature: i=1", "ARC-Authentication-Results: i=1"] {
        gone = remove_field(&gone, prefix);
    }
    both_fail(&w, &gone, failed(2, "i=1 missing ARC-Authentication-Results", &["hop2.example"]));
    // Only the AMS missing (mail-auth 0.13 called this `none`).
    let no_ams = remove_field(&two, "ARC-Message-Signature: i=1");
    both_fail(&w, &no_ams, failed(2, "i=1 missing ARC-Message-Signature", &domains));
    let aar = field(&two, "ARC-Authentication-Results: i=1");
    let mut dup = aar.clone().into_bytes();
    dup.extend_from_slice(&two);
    both_fail(&w, &dup, failed(2, "i=1 duplicate ARC-Authentication-Results", &domains));
    let seal = field(&two, "ARC-Seal: i=2");
    let mut dup = seal.into_bytes();
    dup.extend_from_slice(&two);
    both_fail(&w, &dup, failed(2, "i=2 duplicate ARC-Seal", &domains));
}

#[test]
fn fifty_sets_pass_and_a_fifty_first_fails() {
    require_dkimpy();
    let mut w = World::new();
    let key = w.rsa_key("relay.example", "arc", 2048);
    let mut msg = message();
    for hop in 1..=50 {
        let cv = if hop == 1 { "none" } else { "pass" };
        msg = w.dkimpy_sign(&msg, &key, "relay.example", "arc", &format!("mx{hop}.relay.example"), cv);
    }
    let domains = vec!["relay.example"; 50];
    assert_eq!(w.ours(&msg), pass(50, 0, &domains));
    assert_eq!(w.dkimpy_verify(&msg).0.as_deref(), Some("pass"));
    // dkimpy refuses to sign a 51st set; copy the 50th under i=51.
    let mut over = Vec::new();
    for prefix in ["ARC-Seal: i=50", "ARC-Message-Signature: i=50", "ARC-Authentication-Results: i=50"] {
        over.extend_from_slice(field(&msg, prefix).replacen("i=50", "i=51", 1).as_bytes());
    }
    over.extend_from_slice(&msg);
    // The unreadable i=51 fields do not count as an instance, so N is the 50 readable ones.
    both_fail(&w, &over, failed(50, "ARC-Seal: instance i=51 above 50", &[]));
}

/// RFC 8617 §4.1.2 forbids only ARC-Seal in an AMS `h=`. Real signers list their own instance's
/// ARC-Authentication-Results and sometimes earlier ARC-Message-Signature fields; such chains are
/// valid, and a listed ARC-Seal fails the AMS (dkimpy agrees on both).
#[test]
fn ams_listing_arc_fields() {
    require_dkimpy();
    let mut w = World::new();
    let hop1 = w.rsa_key("hop1.example", "arc", 2048);
    let hop2 = w.rsa_key("hop2.example", "arc", 2048);
    let domains = ["hop1.example", "hop2.example"];
    // Hop 1 signs its own AAR (the only one in the block when it signs).
    let aar = "from:to:subject:arc-authentication-results";
    let one = w.dkimpy_sign_listing(&message(), &hop1, "hop1.example", "arc", "mx.hop1.example", "none", Some(aar));
    assert!(field(&one, "ARC-Message-Signature: i=1").contains("arc-authentication-results"), "{one:?}");
    assert_eq!(w.ours(&one), pass(1, 0, &domains[..1]));
    assert_eq!(w.dkimpy_verify(&one).0.as_deref(), Some("pass"));
    // Hop 2 lists both AARs and hop 1's AMS; every AMS still verifies, so oldest-pass stays 0.
    let both = "from:to:subject:arc-authentication-results:arc-authentication-results:arc-message-signature";
    let two = w.dkimpy_sign_listing(&one, &hop2, "hop2.example", "arc", "mx.hop2.example", "auto", Some(both));
    assert!(field(&two, "ARC-Seal: i=2").contains("cv=pass"));
    assert_eq!(w.ours(&two), pass(2, 0, &domains));
    assert_eq!(w.dkimpy_verify(&two).0.as_deref(), Some("pass"));
    // An AMS that lists ARC-Seal fails, for ours and for dkimpy.
    let seal = "from:to:subject:arc-seal";
    let bad = w.dkimpy_sign_listing(&one, &hop2, "hop2.example", "arc", "mx.hop2.example", "auto", Some(seal));
    both_fail(&w, &bad, failed(2, "i=2 AMS h= lists arc-seal", &domains));
}

#[test]
fn our_seals_verify_under_dkimpy() {
    require_dkimpy();
    let mut w = World::new();
    let rsa = w.rsa_key("seal.example", "rsa", 2048);
    let ed = w.ed25519_key("seal.example", "ed");
    // A new chain, RSA-2048.
    let msg = w.our_seal(&message(), &rsa, "seal.example", "rsa", ArcStatus::None, "mx.seal.example; none");
    assert_eq!(w.ours(&msg), pass(1, 0, &["seal.example"]));
    assert_eq!(w.dkimpy_verify(&msg), (Some("pass".into()), "success".into()));
    // dkimpy continues our chain, and we continue dkimpy's.
    let hop2 = w.rsa_key("hop2.example", "arc", 2048);
    let msg2 = w.dkimpy_sign(&msg, &hop2, "hop2.example", "arc", "mx.hop2.example", "auto");
    assert_eq!(w.ours(&msg2), pass(2, 0, &["seal.example", "hop2.example"]));
    let msg3 = w.our_seal(&msg2, &rsa, "seal.example", "rsa", ArcStatus::Pass, "mx.seal.example; arc=pass");
    assert_eq!(w.ours(&msg3), pass(3, 0, &["seal.example", "hop2.example", "seal.example"]));
    assert_eq!(w.dkimpy_verify(&msg3).0.as_deref(), Some("pass"));
    // Ed25519 (RFC 8463): ours verifies it; dkimpy 1.1.4 does not support Ed25519 for ARC at all
    // (its ARC_HASH_ALGORITHMS holds rsa-sha256 only, and arc_sign hard-wires rsa-sha256), so it
    // fails the chain for the algorithm, not for the signature.
    let msg = w.our_seal(&message(), &ed, "seal.example", "ed", ArcStatus::None, "mx.seal.example; none");
    assert_eq!(w.ours(&msg), pass(1, 0, &["seal.example"]));
    let (cv, reason) = w.dkimpy_verify(&msg);
    assert_eq!((cv.as_deref(), reason.as_str()), (Some("fail"), "unknown signature algorithm: b'ed25519-sha256'"));
}
