//! The built-in content scanner on messages built in memory: a `-H` parsed from bytes and a body.
//!
//! Messages carrying the EICAR test file are generated here at run time from pieces of the string;
//! no file in the repository contains it.

mod support;

use std::path::Path;

use proptest::prelude::*;
use spoolsift::spool::{MessageView, SpoolHeader};
use spoolsift::stages::content::{ContentConfig, ContentScanner, Sha256Blocklist};
use spoolsift::stages::{Stage, StageResult, Verdict};
use support::made::{eicar, sha256_hex, stored_zip};

const DATA: &str = "tests/data/content";

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_test_string_is_assembled_correctly() {
    assert_eq!(eicar().len(), 68);
    assert_eq!(sha256_hex(&eicar()), "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f");
}

/// A `-H` with the given header fields (each may hold continuation lines), all live.
fn header(fields: &[&str]) -> SpoolHeader {
    header_flagged(&fields.iter().map(|f| (' ', *f)).collect::<Vec<_>>())
}

fn header_flagged(fields: &[(char, &str)]) -> SpoolHeader {
    let mut h = String::from(
        "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\n-ident root\n\
         -received_protocol esmtp\nXX\n1\nbob@dest.example\n\n",
    );
    for (flag, field) in fields {
        let text = format!("{field}\n");
        h.push_str(&format!("{:03}{flag} {text}", text.len()));
    }
    SpoolHeader::parse(h.as_bytes(), None).unwrap()
}

fn scan_with(scanner: &ContentScanner, fields: &[&str], body: &[u8]) -> StageResult {
    let h = header(fields);
    let body = body.to_vec();
    let view = MessageView::new(&h, &body);
    // Every message here is also a case of tests/content_differential.rs: the scanner's own
    // transfer decoding and mail-parser's full parse find the same.
    let data = view.to_vec().unwrap();
    let at = data.len() - body.len();
    assert_eq!(scanner.scan_message(&data, at, false), scanner.scan_message(&data, at, true), "own vs full parse");
    scanner.check(&view).unwrap()
}

fn scan(fields: &[&str], body: &[u8]) -> StageResult {
    scan_with(&ContentScanner::new(ContentConfig::default()).unwrap(), fields, body)
}

const MIXED: &str = "Content-Type: multipart/mixed; boundary=\"b1\"";

fn base_fields<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["From: alice@sender.example", "To: bob@dest.example", "Subject: test", "MIME-Version: 1.0"];
    v.extend_from_slice(extra);
    v
}

/// A multipart body with boundary `b1`: each part is its header lines, a blank line, content.
fn multipart(parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = b"This is a multi-part message in MIME format.\n".to_vec();
    for (head, content) in parts {
        body.extend_from_slice(format!("--b1\n{head}\n\n").as_bytes());
        body.extend_from_slice(content);
        body.push(b'\n');
    }
    body.extend_from_slice(b"--b1--\n");
    body
}

const TEXT: &str = "Content-Type: text/plain; charset=us-ascii";

fn details(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn infected() -> Verdict {
    Verdict::Infected { name: "Eicar-Test-Signature".into() }
}

fn blocked(rule: &str) -> Verdict {
    Verdict::Blocked { rule: rule.into() }
}

#[test]
fn stage_name() {
    assert_eq!(ContentScanner::new(ContentConfig::default()).unwrap().name(), "content");
}

#[test]
fn clean_text_message() {
    let r = scan(&base_fields(&[TEXT]), b"Hello Bob.\nNothing to see here.\n");
    assert_eq!(r.verdict, Verdict::Clean);
    assert_eq!(r.details, details(&[("parts", "1")]));
    let r = scan(&["Subject: no MIME headers at all"], b"Hello.\n");
    assert_eq!((r.verdict, r.details), (Verdict::Clean, details(&[("parts", "1")])));
}

#[test]
fn eicar_in_a_plain_body() {
    let body = [b"\n".as_slice(), &eicar(), b"\n"].concat();
    let r = scan(&base_fields(&[TEXT]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details, details(&[("part", "1"), ("virus", "Eicar-Test-Signature"), ("parts", "1")]));
    // On a line of its own among other text, too; not when it is quoted inside a sentence.
    let body = [b"Test file follows:\n\n".as_slice(), &eicar(), b"\r\n\nBye.\n"].concat();
    assert_eq!(scan(&base_fields(&[]), &body).verdict, infected());
    let body = [b"The test string is ".as_slice(), &eicar(), b" as everyone knows.\n"].concat();
    assert_eq!(scan(&base_fields(&[]), &body).verdict, Verdict::Clean);
}

#[test]
fn eicar_in_a_large_plain_body_across_read_chunks() {
    let mut body = b"line of filler text that goes on a while\n".repeat(4000);
    let at = 64 * 1024 - 30;
    body.splice(at..at, [b"\n".as_slice(), &eicar(), b"\n"].concat());
    let r = scan(&base_fields(&[TEXT]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details, details(&[("part", "1"), ("virus", "Eicar-Test-Signature"), ("parts", "1")]));
}

#[test]
fn eicar_in_a_base64_attachment() {
    let att = support::base64(&eicar(), Some(76));
    let body = multipart(&[
        (TEXT, b"See the attachment."),
        (
            "Content-Type: application/octet-stream; name=\"eicar.bin\"\nContent-Transfer-Encoding: base64\n\
             Content-Disposition: attachment; filename=\"eicar.bin\"",
            att.as_bytes(),
        ),
    ]);
    assert!(!contains(&body, &eicar()));
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(
        r.details,
        details(&[("part", "2"), ("filename", "eicar.bin"), ("virus", "Eicar-Test-Signature"), ("parts", "2")])
    );
}

#[test]
fn a_virus_outranks_a_blocked_name_and_both_are_listed() {
    let body = multipart(&[(
        "Content-Type: application/octet-stream; name=\"eicar.com\"\nContent-Transfer-Encoding: base64",
        support::base64(&eicar(), Some(76)).as_bytes(),
    )]);
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(
        r.details,
        details(&[
            ("part", "1"),
            ("filename", "eicar.com"),
            ("virus", "Eicar-Test-Signature"),
            ("part", "1"),
            ("filename", "eicar.com"),
            ("rule", "filename:extension:com"),
            ("parts", "1"),
        ])
    );
}

#[test]
fn eicar_in_a_quoted_printable_part() {
    // Every `$` and `!` escaped, so only a decoder sees the string.
    let mut qp = String::from("=\n");
    for &b in &eicar() {
        match b {
            b'$' | b'!' => qp.push_str(&format!("={b:02X}")),
            _ => qp.push(char::from(b)),
        }
    }
    let body = multipart(&[
        (TEXT, b"Hello"),
        ("Content-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable", qp.as_bytes()),
    ]);
    assert!(!contains(&body, &eicar()));
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details, details(&[("part", "2"), ("virus", "Eicar-Test-Signature"), ("parts", "2")]));
    // A single-part quoted-printable message takes the parsing path rather than the in-place one.
    let r = scan(&base_fields(&[TEXT, "Content-Transfer-Encoding: quoted-printable"]), qp.as_bytes());
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details, details(&[("part", "1"), ("virus", "Eicar-Test-Signature"), ("parts", "1")]));
}

#[test]
fn eicar_inside_a_forwarded_message() {
    let inner = [
        "From: carol@example.org\nSubject: fwd\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"in\"\n\n\
         --in\nContent-Type: text/plain\n\nhi\n--in\nContent-Type: application/octet-stream; name=\"t.bin\"\n\
         Content-Transfer-Encoding: base64\n\n",
        &support::base64(&eicar(), Some(76)),
        "\n--in--\n",
    ]
    .concat();
    let body = multipart(&[
        (TEXT, b"Forwarding this."),
        ("Content-Type: message/rfc822\nContent-Disposition: attachment", inner.as_bytes()),
    ]);
    assert!(!contains(&body, &eicar()));
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(
        r.details,
        details(&[("part", "2.2"), ("filename", "t.bin"), ("virus", "Eicar-Test-Signature"), ("parts", "3")])
    );
}

/// A top-level message/rfc822 holding `levels` messages nested in each other, each base64-encoded;
/// the innermost carries EICAR as an attachment.
fn nested_message(levels: usize) -> (Vec<&'static str>, Vec<u8>) {
    let mut msg = format!(
        "Subject: innermost\nContent-Type: application/octet-stream; name=\"e.bin\"\n\
         Content-Transfer-Encoding: base64\n\n{}\n",
        support::base64(&eicar(), Some(76))
    );
    for _ in 1..levels {
        msg = format!(
            "Subject: wrapper\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n{}\n",
            support::base64(msg.as_bytes(), Some(76))
        );
    }
    let fields = base_fields(&["Content-Type: message/rfc822", "Content-Transfer-Encoding: base64"]);
    (fields, format!("{}\n", support::base64(msg.as_bytes(), Some(76))).into_bytes())
}

#[test]
fn nesting_is_followed_to_the_configured_depth_and_no_further() {
    // mail-parser decodes three encoded levels itself; the scanner parses the rest.
    // Ten messages inside the top one: the innermost attachment is section 1 followed by ten .1s.
    let (fields, body) = nested_message(10);
    let r = scan(&fields, &body);
    assert_eq!(r.verdict, infected());
    let section = ["1"; 11].join(".");
    assert_eq!(
        r.details,
        details(&[("part", &section), ("filename", "e.bin"), ("virus", "Eicar-Test-Signature"), ("parts", "1")])
    );

    let (fields, body) = nested_message(11);
    let r = scan(&fields, &body);
    assert_eq!(r.verdict, Verdict::Clean);
    let section = ["1"; 11].join(".");
    assert_eq!(r.details, details(&[("parts", "1"), ("note", &format!("message nesting over 10 at {section}"))]));
}

#[test]
fn a_zip_is_unpacked_and_the_test_file_inside_found() {
    // Stored uncompressed, the string is also in the zip's own bytes; only the member counts.
    let zip = stored_zip("eicar.txt", &eicar());
    assert!(contains(&zip, &eicar()));
    let body = multipart(&[
        (TEXT, b"Archive attached."),
        (
            "Content-Type: application/zip; name=\"test.zip\"\nContent-Transfer-Encoding: base64",
            support::base64(&zip, Some(76)).as_bytes(),
        ),
    ]);
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected(), "{r:?}");
    assert_eq!(
        r.details,
        details(&[
            ("part", "2"),
            ("filename", "test.zip/eicar.txt"),
            ("virus", "Eicar-Test-Signature"),
            ("parts", "2")
        ])
    );
}

const LISTED: &[u8] = b"spoolsift blocklist test attachment\n";
const LISTED_SHA256: &str = "e4ce216d69ff2b4b4533e89eb089b7f1690e09e63a99dfd776f67287d5298537";

#[test]
fn blocklisted_sha256_of_an_attachment() {
    assert_eq!(sha256_hex(LISTED), LISTED_SHA256);
    let cfg =
        ContentConfig { sha256_blocklist: Some(Path::new(DATA).join("blocklist.txt")), ..ContentConfig::default() };
    let scanner = ContentScanner::new(cfg).unwrap();
    let body = multipart(&[
        (TEXT, b"Hello"),
        (
            "Content-Type: application/pdf; name=\"report.pdf\"\nContent-Transfer-Encoding: base64",
            support::base64(LISTED, Some(76)).as_bytes(),
        ),
    ]);
    let r = scan_with(&scanner, &base_fields(&[MIXED]), &body);
    let rule = format!("sha256:{LISTED_SHA256}");
    assert_eq!(r.verdict, blocked(&rule));
    assert_eq!(r.details, details(&[("part", "2"), ("filename", "report.pdf"), ("rule", &rule), ("parts", "2")]));

    // A text attachment in another charset is hashed as sent, not as converted to UTF-8.
    let latin1 = b"caf\xe9 au lait\n";
    let list = Sha256Blocklist::parse(&sha256_hex(latin1), Path::new("inline")).unwrap();
    let scanner = ContentScanner::new(ContentConfig::default()).unwrap().with_blocklist(list);
    let body = multipart(&[(
        "Content-Type: text/plain; charset=iso-8859-1; name=\"menu.txt\"\nContent-Transfer-Encoding: base64",
        support::base64(latin1, Some(76)).as_bytes(),
    )]);
    let r = scan_with(&scanner, &base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, blocked(&format!("sha256:{}", sha256_hex(latin1))));

    // A single-part message is hashed while it is streamed.
    let r = scan_with(
        &ContentScanner::new(ContentConfig::default())
            .unwrap()
            .with_blocklist(Sha256Blocklist::parse(LISTED_SHA256, Path::new("inline")).unwrap()),
        &base_fields(&["Content-Type: application/octet-stream"]),
        LISTED,
    );
    assert_eq!(r.details, details(&[("part", "1"), ("rule", &rule), ("parts", "1")]));
}

#[test]
fn blocklist_file_with_a_bad_line_names_file_and_line() {
    let path = Path::new(DATA).join("blocklist-bad-line.txt");
    let cfg = ContentConfig { sha256_blocklist: Some(path.clone()), ..ContentConfig::default() };
    let err = ContentScanner::new(cfg).err().unwrap();
    assert_eq!((err.file.as_path(), err.line), (path.as_path(), Some(3)));
    assert_eq!(
        err.to_string(),
        "tests/data/content/blocklist-bad-line.txt:3: expected a SHA-256 digest (64 hex digits), found \
         \"e4ce216d69ff2b4b4533e89eb089b7f1690e09e63a99dfd776f67287d529853\""
    );
    let err = Sha256Blocklist::parse("# ok\n\nnot-a-digest # comment\n", Path::new("x.txt")).unwrap_err();
    assert_eq!(err.to_string(), "x.txt:3: expected a SHA-256 digest (64 hex digits), found \"not-a-digest\"");
    let err = Sha256Blocklist::load(Path::new("tests/data/content/missing.txt")).unwrap_err();
    assert_eq!(err.line, None);
    assert!(err.to_string().starts_with("tests/data/content/missing.txt: "), "{err}");
    let ok = Sha256Blocklist::load(&Path::new(DATA).join("blocklist.txt")).unwrap();
    assert_eq!(ok.len(), 2);
}

#[test]
fn double_extension_is_blocked_by_name() {
    let body = multipart(&[
        (TEXT, b"Your invoice."),
        (
            "Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=\"invoice.pdf.exe\"\n\
             Content-Transfer-Encoding: base64",
            support::base64(b"MZ not really", Some(76)).as_bytes(),
        ),
    ]);
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, blocked("filename:double-extension:pdf.exe"));
    assert_eq!(
        r.details,
        details(&[
            ("part", "2"),
            ("filename", "invoice.pdf.exe"),
            ("rule", "filename:double-extension:pdf.exe"),
            ("parts", "2"),
        ])
    );
}

#[test]
fn single_part_attachment_is_checked_in_place() {
    let fields = base_fields(&[
        "Content-Type: application/octet-stream",
        "Content-Disposition: attachment;\n\tfilename=\"SETUP.EXE\"",
        "Content-Transfer-Encoding: binary",
    ]);
    let r = scan(&fields, b"MZ\x90\0");
    assert_eq!(r.verdict, blocked("filename:extension:exe"));
    assert_eq!(
        r.details,
        details(&[("part", "1"), ("filename", "SETUP.EXE"), ("rule", "filename:extension:exe"), ("parts", "1")])
    );
}

#[test]
fn encoded_filenames_are_decoded_before_the_rules() {
    let body = multipart(&[
        (
            "Content-Type: application/octet-stream\nContent-Disposition: attachment;\n\
             \tfilename*=utf-8''Rechnung%20f%C3%BCr%20Mai.pdf.exe",
            b"x",
        ),
        ("Content-Type: application/octet-stream; name=\"=?utf-8?B?w5xiZXJ3ZWlzdW5nLmpz?=\"", b"x"),
        (
            "Content-Type: application/octet-stream\nContent-Disposition: attachment;\n\
             \tfilename*0*=utf-8''Pay%20me;\n\tfilename*1=\".scr\"",
            b"x",
        ),
        ("Content-Type: application/octet-stream; name=\"=?iso-8859-1?Q?r=E9sum=E9.doc?=\"", b"x"),
    ]);
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, blocked("filename:double-extension:pdf.exe"));
    assert_eq!(
        r.details,
        details(&[
            ("part", "1"),
            ("filename", "Rechnung für Mai.pdf.exe"),
            ("rule", "filename:double-extension:pdf.exe"),
            ("part", "2"),
            ("filename", "Überweisung.js"),
            ("rule", "filename:extension:js"),
            ("part", "3"),
            ("filename", "Pay me.scr"),
            ("rule", "filename:extension:scr"),
            ("parts", "4"),
        ])
    );
}

#[test]
fn blocked_content_type() {
    let body = multipart(&[
        (TEXT, b"Update attached."),
        (
            "Content-Type: Application/X-MSDownload; name=\"update.dat\"\nContent-Transfer-Encoding: base64",
            support::base64(b"MZ", Some(76)).as_bytes(),
        ),
    ]);
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, blocked("mime:application/x-msdownload"));
    assert_eq!(
        r.details,
        details(&[
            ("part", "2"),
            ("filename", "update.dat"),
            ("rule", "mime:application/x-msdownload"),
            ("parts", "2")
        ])
    );
}

#[test]
fn part_and_message_size_limits() {
    let scanner = ContentScanner::new(ContentConfig { max_part_size: 1000, ..ContentConfig::default() }).unwrap();
    let body = multipart(&[
        (TEXT, b"small"),
        (
            "Content-Type: image/png; name=\"big.png\"\nContent-Transfer-Encoding: base64",
            support::base64(&[7u8; 5000], Some(76)).as_bytes(),
        ),
    ]);
    let r = scan_with(&scanner, &base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, blocked("size:part"));
    assert_eq!(
        r.details,
        details(&[
            ("part", "2"),
            ("filename", "big.png"),
            ("rule", "size:part"),
            ("size", "5000"),
            ("limit", "1000"),
            ("parts", "2"),
        ])
    );
    // The limit is on the decoded part; the in-place path applies it too.
    let r = scan_with(&scanner, &base_fields(&[]), &[b'a'; 1001]);
    assert_eq!(
        r.details,
        details(&[("part", "1"), ("rule", "size:part"), ("size", "1001"), ("limit", "1000"), ("parts", "1")])
    );

    let scanner = ContentScanner::new(ContentConfig { max_message_size: 300, ..ContentConfig::default() }).unwrap();
    let fields = base_fields(&[TEXT]);
    let h = header(&fields);
    let body = vec![b'a'; 300];
    let view = MessageView::new(&h, &body);
    let r = scanner.check(&view).unwrap();
    assert_eq!(r.verdict, blocked("size:message"));
    let size = view.len().to_string();
    assert_eq!(r.details, details(&[("part", "message"), ("rule", "size:message"), ("size", &size), ("limit", "300")]));
}

#[test]
fn unterminated_boundary_still_finds_eicar() {
    let mut body = multipart(&[
        (TEXT, b"Hello"),
        (
            "Content-Type: application/octet-stream; name=\"e.bin\"\nContent-Transfer-Encoding: base64",
            support::base64(&eicar(), Some(76)).as_bytes(),
        ),
    ]);
    body.truncate(body.len() - b"--b1--\n".len());
    assert!(!contains(&body, &eicar()));
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(
        r.details,
        details(&[("part", "2"), ("filename", "e.bin"), ("virus", "Eicar-Test-Signature"), ("parts", "2")])
    );
}

#[test]
fn broken_base64_is_decoded_leniently() {
    // Junk characters inside the base64 make a strict decoder give up on the part.
    let b64 = support::base64(&eicar(), Some(76));
    let junk = format!("{}*{}", &b64[..20], &b64[20..]);
    let body =
        multipart(&[("Content-Type: application/octet-stream\nContent-Transfer-Encoding: base64", junk.as_bytes())]);
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details, details(&[("part", "1"), ("virus", "Eicar-Test-Signature"), ("parts", "1")]));
}

#[test]
fn boundary_never_declared_falls_back_to_the_raw_body() {
    // The Content-Type names a boundary the body never uses: no parts, but the string stands on
    // its own line in the body.
    let body = [b"--other\nContent-Type: text/plain\n\n".as_slice(), &eicar(), b"\n--other--\n"].concat();
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details[..2], details(&[("part", "1"), ("virus", "Eicar-Test-Signature")])[..]);
}

#[test]
fn eicar_outside_every_part_is_found_in_the_raw_body() {
    // In the preamble, which no MIME part holds: only the search of the undecoded body sees it.
    let mut body = multipart(&[(TEXT, b"Hello")]);
    body.splice(0..0, [eicar().as_slice(), b"\n"].concat());
    let r = scan(&base_fields(&[MIXED]), &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details, details(&[("part", "raw"), ("virus", "Eicar-Test-Signature"), ("parts", "1")]));
}

#[test]
fn multipart_nesting_is_bounded_and_the_raw_search_covers_the_rest() {
    let mut body = [b"Content-Type: text/plain\n\n".as_slice(), &eicar(), b"\n"].concat();
    for level in (0..70).rev() {
        let head = format!("Content-Type: multipart/mixed; boundary=\"l{level}\"\n\n--l{level}\n");
        body = [head.as_bytes(), &body, format!("--l{level}--\n").as_bytes()].concat();
    }
    let fields = base_fields(&["Content-Type: multipart/mixed; boundary=\"top\""]);
    let body = [b"--top\n".as_slice(), &body, b"--top--\n"].concat();
    // By default the structure census stops it before any parse (tests/content_structure.rs).
    let r = scan(&fields, &body);
    assert_eq!(r.verdict, infected());
    assert_eq!(
        r.details,
        details(&[
            ("part", "raw"),
            ("virus", "Eicar-Test-Signature"),
            ("part", "message"),
            ("rule", "structure:depth"),
            ("limit", "64")
        ])
    );
    // With that limit raised, the walk's own bound holds.
    let deep = ContentScanner::new(ContentConfig { max_depth: 100, ..ContentConfig::default() }).unwrap();
    let r = scan_with(&deep, &fields, &body);
    assert_eq!(r.verdict, infected());
    let section = ["1"; 64].join(".");
    assert_eq!(
        r.details,
        details(&[
            ("part", "raw"),
            ("virus", "Eicar-Test-Signature"),
            ("note", &format!("multipart nesting over 64 at {section}")),
        ])
    );
}

#[test]
fn a_message_with_no_live_headers_is_still_scanned() {
    let h = header_flagged(&[('*', "Subject: gone"), ('*', "Content-Type: multipart/mixed; boundary=x")]);
    let body = [b"\n\n".as_slice(), &eicar(), b"\n"].concat();
    let r = ContentScanner::new(ContentConfig::default()).unwrap().check(&MessageView::new(&h, &body)).unwrap();
    assert_eq!(r.verdict, infected());
    assert_eq!(r.details, details(&[("part", "1"), ("virus", "Eicar-Test-Signature"), ("parts", "1")]));
}

#[test]
fn eicar_switched_off() {
    let scanner = ContentScanner::new(ContentConfig { eicar: false, ..ContentConfig::default() }).unwrap();
    assert_eq!(scan_with(&scanner, &base_fields(&[]), &eicar()).verdict, Verdict::Clean);
}

#[test]
fn config_from_toml() {
    let cfg: ContentConfig = toml::from_str("").unwrap();
    assert_eq!(cfg, ContentConfig::default());
    assert!(cfg.blocked_extensions.is_empty() && !cfg.replace_builtin, "the built-in lists apply");
    assert_eq!((cfg.max_nesting, cfg.max_part_size, cfg.eicar), (10, 0, true));
    let cfg: ContentConfig =
        toml::from_str("blocked_extensions = [\".EXE\"]\nmax_part_size = 10\nsha256_blocklist = \"/x\"").unwrap();
    assert_eq!(cfg.blocked_extensions, [".EXE"]);
    assert_eq!(cfg.sha256_blocklist.as_deref(), Some(Path::new("/x")));
    assert!(toml::from_str::<ContentConfig>("max_part_sise = 10").is_err(), "a typo must not pass");
    let deep = ContentScanner::new(ContentConfig { max_nesting: 1000, ..ContentConfig::default() }).unwrap();
    assert_eq!(deep.config().max_nesting, 64, "capped");
    let scanner =
        ContentScanner::new(ContentConfig { blocked_extensions: vec![".EXE".into()], ..ContentConfig::default() })
            .unwrap();
    let r = scan_with(&scanner, &base_fields(&["Content-Type: text/plain; name=a.exe"]), b"x");
    assert_eq!(r.verdict, blocked("filename:extension:exe"));
    // A list given extends the built-in one: blocking zip too keeps the disguised executable
    // blocked. Replacing the built-in list takes `replace_builtin`.
    let extended: ContentConfig = toml::from_str("blocked_extensions = [\"zip\"]").unwrap();
    let replaced: ContentConfig = toml::from_str("blocked_extensions = [\"zip\"]\nreplace_builtin = true").unwrap();
    for (cfg, exe, zip) in [
        (extended, Some("filename:double-extension:pdf.exe"), Some("filename:extension:zip")),
        (replaced, None, Some("filename:extension:zip")),
    ] {
        let scanner = ContentScanner::new(cfg).unwrap();
        let rule = |name: &str| match scan_with(
            &scanner,
            &base_fields(&[&format!("Content-Type: text/plain; name={name}")]),
            b"x",
        )
        .verdict
        {
            Verdict::Blocked { rule } => Some(rule),
            _ => None,
        };
        assert_eq!((rule("invoice.pdf.exe").as_deref(), rule("notes.zip").as_deref()), (exe, zip));
    }
    let err = toml::from_str::<ContentConfig>("blocked_file_types = [\"executables\"]").unwrap_err().to_string();
    assert!(err.contains("unknown variant `executables`, expected one of `executable`, `macro-document`"), "{err}");
}

fn mime_ish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"--b1\n".to_vec()),
        Just(b"--b1--\n".to_vec()),
        Just(b"--in\n".to_vec()),
        Just(b"Content-Type: multipart/mixed; boundary=in\n".to_vec()),
        Just(b"Content-Type: message/rfc822\n".to_vec()),
        Just(b"Content-Transfer-Encoding: base64\n".to_vec()),
        Just(b"Content-Transfer-Encoding: quoted-printable\n".to_vec()),
        Just(b"Content-Disposition: attachment; filename*0*=utf-8''%E2; filename*1=x\n".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"=\n".to_vec()),
        Just(b"=?utf-8?B?".to_vec()),
        Just(support::base64(b"hello", Some(76)).into_bytes()),
        Just(eicar()),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever the body, the stage answers (never an error, never a panic out of `check`).
    #[test]
    fn any_body_gets_an_answer(body in mime_ish(), top in 0usize..4) {
        let ct = ["Content-Type: multipart/mixed; boundary=\"b1\"", "Content-Type: message/rfc822",
                  "Content-Type: text/plain", "Content-Transfer-Encoding: base64"][top];
        let scanner = ContentScanner::new(ContentConfig::default()).unwrap();
        let r = scan_with(&scanner, &base_fields(&[ct]), &body);
        prop_assert!(!matches!(r.verdict, Verdict::Spam | Verdict::AuthFail | Verdict::AuthPass | Verdict::Neutral));
    }
}
