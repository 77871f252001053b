//! The content scanner's own transfer decoding against mail-parser's full parse: the same verdict,
//! details and part count for every message, whichever path scanned it.
//!
//! Messages: every spool pair of spool-fixtures/ and tests/data/, and generated ones that stress
//! what the two parses could disagree on: nested multiparts and message/rfc822 (plain and
//! encoded), base64 with odd line lengths, white space, missing or misplaced padding and invalid
//! characters, CRLF and LF, quoted-printable with bad escapes, empty parts, unusual
//! Content-Transfer-Encoding fields, and messages cut off anywhere. (tests/content_scanner.rs runs
//! the same comparison on each of its messages.) `DIFF_N` and `DIFF_SEED` in the environment
//! generate more messages, or others, than the 600 of a normal run.

mod support;

use std::path::{Path, PathBuf};

use spoolsift::spool::{MessageView, SpoolHeader};
use spoolsift::stages::content::{ContentConfig, ContentScanner, Sha256Blocklist};
use support::made::{eicar, sha256_hex};

/// Payloads the generator attaches; the blocklist below lists some of them.
const FILES: &[&[u8]] = &[b"MZ\x90\0 not really a program", b"%PDF-1.4 a report", b"plain words\r\nover lines\n", b""];

/// The default scanner, and one that hashes parts and limits their size, so that every kind of
/// finding shows up in some message.
fn scanners() -> Vec<ContentScanner> {
    let default = ContentScanner::new(ContentConfig::default()).unwrap();
    let list: String = FILES[..3].iter().chain([&eicar()[..]].iter()).map(|f| sha256_hex(f) + "\n").collect();
    let strict = ContentScanner::new(ContentConfig { max_part_size: 120, max_nesting: 3, ..ContentConfig::default() })
        .unwrap()
        .with_blocklist(Sha256Blocklist::parse(&list, Path::new("generated")).unwrap());
    vec![default, strict]
}

/// Both paths over one message; whether our own decoding (rather than its fallback) scanned it.
fn compare(scanners: &[ContentScanner], data: &[u8], body_at: usize, what: &str) -> bool {
    for s in scanners {
        let own = s.scan_message(data, body_at, false);
        let full = s.scan_message(data, body_at, true);
        assert_eq!(own, full, "{what}:\n{}", String::from_utf8_lossy(data));
    }
    scanners[0].decodes_itself(data)
}

fn spool_pairs(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            spool_pairs(&p, out);
        } else if p.to_string_lossy().ends_with("-H") {
            out.push(p);
        }
    }
}

#[test]
fn every_spool_fixture_scans_the_same() {
    let scanners = scanners();
    let mut pairs = Vec::new();
    spool_pairs(Path::new("spool-fixtures"), &mut pairs);
    spool_pairs(Path::new("tests/data"), &mut pairs);
    assert!(pairs.len() > 30, "fixtures found: {}", pairs.len());
    for h in pairs {
        let header = SpoolHeader::parse(&std::fs::read(&h).unwrap(), None).unwrap();
        let d = std::fs::read(h.with_file_name(h.file_name().unwrap().to_string_lossy().replace("-H", "-D"))).unwrap();
        let body = d[d.iter().position(|&b| b == b'\n').map_or(d.len(), |i| i + 1)..].to_vec();
        let data = MessageView::new(&header, &body).to_vec().unwrap();
        compare(&scanners, &data, data.len() - body.len(), &h.display().to_string());
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn one<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

fn base64(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut text = support::base64(data, None).into_bytes();
    if rng.chance(15) {
        while text.last() == Some(&b'=') {
            text.pop();
        }
    }
    let width = *rng.one(&[76, 76, 64, 4, 3, 77, 13, 1000]);
    let mut out = Vec::new();
    for (i, line) in text.chunks(width).enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(line);
        match rng.below(60) {
            0 => out.push(b' '),
            1 => out.push(b'\t'),
            2 => out.push(b'\r'),
            3 => out.extend_from_slice(b"=="),
            4 => out.push(*rng.one(b"*-!.~")),
            5 => out.extend_from_slice(b"\n"),
            _ => {}
        }
    }
    out
}

fn quoted_printable(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, &b) in data.iter().enumerate() {
        if i % 30 == 29 {
            out.extend_from_slice(b"=\n");
        }
        match b {
            b'=' => out.extend_from_slice(b"=3D"),
            b'\n' | b'\r' => out.push(b),
            33..=126 | b' ' => out.push(b),
            _ => out.extend_from_slice(format!("={b:02X}").as_bytes()),
        }
        match rng.below(80) {
            0 => out.extend_from_slice(b"=ZZ"),
            1 => out.extend_from_slice(b"=="),
            2 => out.extend_from_slice(b"  \n"),
            3 => out.push(b'='),
            _ => {}
        }
    }
    out
}

/// Something to put in a part.
fn payload(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => eicar(),
        1 => [&b"Hello,\n\n"[..], &eicar(), b"\nbye\n"].concat(),
        2 => (0..rng.below(400)).map(|_| rng.next() as u8).collect(),
        3 => "caf\u{e9} na\u{ef}ve \u{fc}ber\n".repeat(1 + rng.below(5)).into_bytes(),
        _ => rng.one(FILES).to_vec(),
    }
}

/// One MIME entity: its header lines and body, `depth` containers deep at most.
fn entity(rng: &mut Rng, depth: usize) -> (Vec<String>, Vec<u8>) {
    let kind = if depth == 0 { rng.below(4) } else { rng.below(7) };
    match kind {
        0 | 1 => {
            let ct = rng.one(&[
                "application/octet-stream; name=\"report.pdf.exe\"",
                "application/pdf",
                "text/plain; charset=utf-8",
                "text/plain; charset=iso-8859-1",
                "text/plain",
                "TEXT/Plain; charset=windows-1252",
                "text/html",
                "image/png",
                "application/x-msdownload",
                "message/delivery-status",
                "Message/RFC822",
                "multipart/mixed",
                "",
            ]);
            let cte = rng.one(&[
                "base64",
                "base64",
                "BASE64",
                " Base64 ",
                "quoted-printable",
                "Quoted-Printable",
                "7bit",
                "x-uuencode",
                "=?utf-8?q?base64?=",
                "base64\n (comment)",
            ]);
            let data = payload(rng);
            let body = if cte.to_ascii_lowercase().contains("base64") {
                base64(rng, &data)
            } else if cte.to_ascii_lowercase().contains("quoted") {
                quoted_printable(rng, &data)
            } else {
                data
            };
            let mut head = Vec::new();
            if !ct.is_empty() {
                head.push(format!("Content-Type: {ct}"));
            }
            if rng.chance(30) {
                head.push("Content-Disposition: attachment; filename=\"invoice.doc.js\"".into());
            }
            head.push(format!("Content-Transfer-Encoding: {cte}"));
            (head, body)
        }
        2 => (vec!["Content-Type: text/plain".into()], Vec::new()),
        3 => (vec![], b"just text, no MIME headers\n".to_vec()),
        4 | 5 => {
            let sub = rng.one(&["mixed", "alternative", "digest", "related"]);
            let boundary = format!("b{}-{}", depth, rng.below(1000));
            let mut body = Vec::new();
            if rng.chance(30) {
                body.extend_from_slice(b"preamble\n");
            }
            for _ in 0..rng.below(4) {
                let (head, content) = entity(rng, depth - 1);
                body.extend_from_slice(format!("--{boundary}\n").as_bytes());
                for h in head {
                    body.extend_from_slice(format!("{h}\n").as_bytes());
                }
                body.push(b'\n');
                body.extend_from_slice(&content);
                body.push(b'\n');
            }
            if !rng.chance(10) {
                body.extend_from_slice(format!("--{boundary}--\n").as_bytes());
            }
            (vec![format!("Content-Type: multipart/{sub}; boundary=\"{boundary}\"")], body)
        }
        _ => {
            let (head, content) = entity(rng, depth - 1);
            let mut inner = b"From: carol@example.net\nSubject: forwarded\n".to_vec();
            for h in head {
                inner.extend_from_slice(format!("{h}\n").as_bytes());
            }
            inner.push(b'\n');
            inner.extend_from_slice(&content);
            if rng.chance(25) {
                let body = base64(rng, &inner);
                (vec!["Content-Type: message/rfc822".into(), "Content-Transfer-Encoding: base64".into()], body)
            } else {
                (vec!["Content-Type: message/rfc822".into()], inner)
            }
        }
    }
}

fn message(rng: &mut Rng) -> Vec<u8> {
    let (head, body) = entity(rng, 3);
    let mut m = b"From: alice@example.net\nTo: bob@example.org\nSubject: generated\nMIME-Version: 1.0\n".to_vec();
    for h in head {
        m.extend_from_slice(format!("{h}\n").as_bytes());
    }
    m.push(b'\n');
    m.extend_from_slice(&body);
    if rng.chance(15) {
        m.truncate(rng.below(m.len() + 1));
    }
    match rng.below(3) {
        0 => m.iter().flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] }).collect(),
        _ => m,
    }
}

#[test]
fn generated_messages_scan_the_same() {
    let scanners = scanners();
    let mut rng = Rng(std::env::var("DIFF_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x2545_f491_4f6c_dd1d));
    let (mut own, total) = (0, std::env::var("DIFF_N").ok().and_then(|v| v.parse().ok()).unwrap_or(600));
    for i in 0..total {
        let m = message(&mut rng);
        let at = m.windows(2).position(|w| w == b"\n\n").map_or(m.len(), |p| p + 2).min(m.len());
        if compare(&scanners, &m, at, &format!("generated message {i}")) {
            own += 1;
        }
    }
    // The comparison means something only if our own decoding scanned most of them.
    assert!(own * 2 > total, "our own decoding scanned {own} of {total}");
}
