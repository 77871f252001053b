//! The content scanner's structure limits: MIME part bombs, nesting bombs and header-field bombs
//! are blocked with their own rule before any parser builds their tree, and the test string is
//! still found in them.

mod support;
use spoolsift::spool::{MessageView, SpoolHeader};
use spoolsift::stages::content::{ContentConfig, ContentScanner};
use spoolsift::stages::{Stage, StageResult, Verdict};
use support::made::eicar;

fn header(fields: &[String]) -> SpoolHeader {
    let mut h = String::from(
        "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\n-ident root\n\
         -received_protocol esmtp\nXX\n1\nbob@dest.example\n\n",
    );
    for field in fields {
        let text = format!("{field}\n");
        h.push_str(&format!("{:03}  {text}", text.len()));
    }
    SpoolHeader::parse(h.as_bytes(), None).unwrap()
}

fn scan(config: ContentConfig, fields: &[String], body: &[u8]) -> StageResult {
    let scanner = ContentScanner::new(config).unwrap();
    let h = header(fields);
    let body = body.to_vec();
    scanner.check(&MessageView::new(&h, &body)).unwrap()
}

fn mixed(boundary: &str) -> Vec<String> {
    vec!["Subject: bomb".into(), format!("Content-Type: multipart/mixed; boundary=\"{boundary}\"")]
}

fn details(r: &StageResult) -> Vec<(&str, &str)> {
    r.details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn blocked(rule: &str) -> Verdict {
    Verdict::Blocked { rule: rule.into() }
}

/// `n` empty parts: `--B` and a blank line, repeated.
fn part_bomb(n: usize) -> Vec<u8> {
    b"--B\n\n".repeat(n)
}

#[test]
fn a_part_bomb_is_blocked_before_it_is_parsed() {
    let config = ContentConfig { max_parts: 1_000, ..ContentConfig::default() };
    let r = scan(config.clone(), &mixed("B"), &part_bomb(100_000));
    assert_eq!(r.verdict, blocked("structure:parts"));
    assert_eq!(details(&r), [("part", "message"), ("rule", "structure:parts"), ("limit", "1000")]);
    // At the limit it is a message like any other: 999 parts and the container.
    let mut body = part_bomb(999);
    body.extend_from_slice(b"--B--\n");
    assert_eq!(scan(config.clone(), &mixed("B"), &body).verdict, Verdict::Clean);
    body.splice(0..0, b"--B\n\n".iter().copied());
    assert_eq!(scan(config, &mixed("B"), &body).verdict, blocked("structure:parts"));
}

#[test]
fn the_default_limit_takes_the_bomb_that_took_gigabytes() {
    // 9.5 million parts in 47.5 MB took 2.47 GB before this limit; a million is enough to show
    // the default stops it (the bench measures memory on the full size).
    let r = scan(ContentConfig::default(), &mixed("B"), &part_bomb(1_000_000));
    assert_eq!(details(&r), [("part", "message"), ("rule", "structure:parts"), ("limit", "10000")]);
}

#[test]
fn a_nesting_bomb_is_blocked() {
    let mut body = Vec::new();
    for i in 0..100 {
        body.extend_from_slice(
            format!("--b{i}\nContent-Type: multipart/mixed; boundary=\"b{}\"\n\n", i + 1).as_bytes(),
        );
    }
    let r = scan(ContentConfig::default(), &mixed("b0"), &body);
    assert_eq!(details(&r), [("part", "message"), ("rule", "structure:depth"), ("limit", "64")]);
    let r = scan(ContentConfig { max_depth: 200, ..ContentConfig::default() }, &mixed("b0"), &body);
    assert_ne!(r.verdict, blocked("structure:depth"));
}

#[test]
fn too_many_header_fields_in_the_message_or_a_part() {
    let mut fields: Vec<String> = (0..1_001).map(|i| format!("X-Field-{i}: v")).collect();
    let r = scan(ContentConfig::default(), &fields, b"hello\n");
    assert_eq!(
        details(&r),
        [("part", "message"), ("rule", "structure:header-fields"), ("found", "1001"), ("limit", "1000")]
    );
    fields.pop();
    assert_eq!(scan(ContentConfig::default(), &fields, b"hello\n").verdict, Verdict::Clean);
    // In a part.
    let mut body = b"--B\n".to_vec();
    for i in 0..1_001 {
        body.extend_from_slice(format!("X-{i}: v\n").as_bytes());
    }
    body.extend_from_slice(b"\ntext\n--B--\n");
    let r = scan(ContentConfig::default(), &mixed("B"), &body);
    assert_eq!(details(&r), [("part", "message"), ("rule", "structure:header-fields"), ("limit", "1000")]);
}

#[test]
fn a_bomb_inside_an_encoded_forwarded_message_is_found() {
    use base64::Engine;
    let mut inner = b"Content-Type: multipart/mixed; boundary=I\n\n".to_vec();
    inner.extend_from_slice(&b"--I\n\n".repeat(20_000));
    let enc = base64::engine::general_purpose::STANDARD.encode(&inner);
    let body = format!("--B\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n{enc}\n--B--\n");
    let r = scan(ContentConfig::default(), &mixed("B"), body.as_bytes());
    assert_eq!(r.verdict, blocked("structure:parts"));
}

#[test]
fn the_test_string_in_a_bomb_is_still_found() {
    let mut body = part_bomb(20_000);
    body.extend_from_slice(&eicar());
    let r = scan(ContentConfig::default(), &mixed("B"), &body);
    assert_eq!(r.verdict, Verdict::Infected { name: "Eicar-Test-Signature".into() });
    assert!(details(&r).contains(&("rule", "structure:parts")), "{:?}", r.details);
    let mut fields: Vec<String> = (0..2_000).map(|i| format!("X-{i}: v")).collect();
    fields.push("Subject: x".into());
    let r = scan(ContentConfig::default(), &fields, &eicar());
    assert_eq!(r.verdict, Verdict::Infected { name: "Eicar-Test-Signature".into() });
}

#[test]
fn header_fields_up_to_the_end_of_the_message_are_counted() {
    // A part header with no blank line after it: the parser still builds every field.
    let mut body = b"--B\n".to_vec();
    body.extend_from_slice(&b"a:\n".repeat(5_000));
    let r = scan(ContentConfig::default(), &mixed("B"), &body);
    assert_eq!(details(&r), [("part", "message"), ("rule", "structure:header-fields"), ("limit", "1000")]);
}

#[test]
fn an_encoded_message_is_counted_as_the_structure_parse_reads_it_too() {
    // Declared base64, but plain text: decoded it is noise, parsed in place (as the scanner's
    // structure parse, which ignores the encoding, does) it is a part bomb.
    let mut inner = b"Content-Type: multipart/mixed; boundary=C\n\n".to_vec();
    inner.extend_from_slice(&b"--C\n\n".repeat(20_000));
    let mut body = b"--B\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n".to_vec();
    body.extend_from_slice(&inner);
    body.extend_from_slice(b"\n--B--\n");
    let r = scan(ContentConfig::default(), &mixed("B"), &body);
    assert_eq!(r.verdict, blocked("structure:parts"));
}

#[test]
fn list_items_in_header_fields_are_counted_over_the_message() {
    // One field, but the address parser builds an entry per comma.
    let mut body = b"--B\nTo: ".to_vec();
    body.extend_from_slice(&b"a@b,".repeat(150_000));
    body.extend_from_slice(b"a@b\n\ntext\n--B--\n");
    let r = scan(ContentConfig::default(), &mixed("B"), &body);
    assert_eq!(details(&r), [("part", "message"), ("rule", "structure:header-items"), ("limit", "100000")]);
}

#[test]
fn nested_encoded_messages_decode_at_most_twice_the_message() {
    // Quoted-printable does not shrink plain text: each level would copy it again.
    let mut msg = b"Subject: inner\n\n".to_vec();
    msg.extend_from_slice(&b"plain text line\n".repeat(100_000));
    for _ in 0..6 {
        let mut outer = b"Content-Type: message/rfc822\nContent-Transfer-Encoding: quoted-printable\n\n".to_vec();
        outer.extend_from_slice(&msg);
        msg = outer;
    }
    let fields = vec!["Subject: nested".to_string(), "Content-Type: multipart/mixed; boundary=\"B\"".to_string()];
    let mut body = b"--B\n".to_vec();
    body.extend_from_slice(&msg);
    body.extend_from_slice(b"\n--B--\n");
    let r = scan(ContentConfig::default(), &fields, &body);
    assert_eq!(r.verdict, blocked("structure:decoded-size"), "{:?}", r.details);
}
