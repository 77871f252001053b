//! The benches' corpus: spool pairs (`-H`, `-D`) as Exim writes them, from a fixed seed, so every
//! bench and every run scans the same messages.

use std::path::Path;

use base64::Engine;

use spoolsift::spool::{IdClock, IdFormat, IdMinter, MessageId};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

/// The -H of a corpus message, with correct header lengths.
fn header_file(id: &MessageId, body_lines: usize, subject: &str, multipart: bool) -> Vec<u8> {
    let mut headers = vec![
        ('P', format!("Received: from client.example.net ([192.0.2.10])\n\tby mx.example.org with esmtp id {id};\n\tSun, 29 Nov 2026 06:00:00 +0000\n")),
        ('F', "From: Alice <alice@example.net>\n".to_string()),
        ('T', "To: bob@example.org\n".to_string()),
        (' ', format!("Subject: {subject}\n")),
        ('I', format!("Message-ID: <{id}@example.net>\n")),
        (' ', "MIME-Version: 1.0\n".to_string()),
    ];
    if multipart {
        headers.push((' ', "Content-Type: multipart/mixed; boundary=\"bench-b\"\n".to_string()));
    }
    let mut out = format!(
        "{id}-H\nDebian-exim 102 105\n<alice@example.net>\n1795895471 0\n-received_time_usec .100000\n--helo_name client.example.net\n--host_address [192.0.2.10]:40000\n-received_protocol esmtp\n-body_linecount {body_lines}\n-max_received_linelength 76\n-deliver_firsttime\nXX\n1\nbob@example.org\n\n"
    );
    for (flag, text) in headers {
        out.push_str(&format!("{:03}{flag} {text}", text.len()));
    }
    out.into_bytes()
}

/// A spool file with Exim's mode, 0640 (SPOOL_MODE): with any other mode the engine takes a
/// dropped `-D` for one someone else could rewrite, and copies it before the scan.
fn spool_file(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Sizes of a corpus's messages: 70% small text, 25% with an attachment, 5% large (each a range
/// of body bytes); and every `eicar_every`-th message with the anti-virus test string attached.
#[derive(Clone, Copy)]
pub struct Mix {
    pub small: (usize, usize),
    pub attached: (usize, usize),
    pub large: (usize, usize),
    pub eicar_every: Option<usize>,
}

/// The `[policy]` section of the benches' pipelines: the embedded pipeline's actions.
#[allow(dead_code)]
pub const POLICY: &str = r#"[policy]
clean = "deliver"
infected = "quarantine"
blocked = "quarantine"
temporary_failure = "defer"
permanent_failure = "hold"
"#;

/// The engine and stage benches' mix: 2–10 KB, 10–200 KB, 200 KB–2 MB, no test string.
pub const MIXED: Mix =
    Mix { small: (2_000, 10_000), attached: (10_000, 200_000), large: (200_000, 2_000_000), eicar_every: None };

/// Generate the corpus: [`MIXED`], or only small ones (2–4 KB).
#[allow(dead_code)]
pub fn generate(dir: &Path, n: usize, small_only: bool) -> Vec<(MessageId, u64)> {
    let mix = match small_only {
        true => Mix { small: (2_000, 4_000), attached: (2_000, 4_000), large: (2_000, 4_000), ..MIXED },
        false => MIXED,
    };
    generate_mix(dir, n, mix)
}

/// Generate a corpus of `n` messages of `mix` into `dir`.
pub fn generate_mix(dir: &Path, n: usize, mix: Mix) -> Vec<(MessageId, u64)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut minter =
        IdMinter::new(IdFormat::New23).with_pid(4242).with_clock(IdClock::Fixed { secs: 1_795_895_471, micros: 0 });
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n";
    let b64 = "QmVuY2htYXJrIGF0dGFjaG1lbnQgZGF0YSBmb3Igc3Bvb2xzaWZ0IDAxMjM0NTY3ODlhYmNkZWZnaGlq\n";
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = minter.mint();
        let roll = rng.range(0, 100);
        let ((lo, hi), attached) = match roll {
            0..=69 => (mix.small, false),
            70..=94 => (mix.attached, true),
            _ => (mix.large, true),
        };
        let size = rng.range(lo, hi);
        // The only-small corpus (whose attached range is its small one) has no multipart
        // messages; every other mix has.
        let attached = attached && mix.attached != mix.small;
        let eicar = mix.eicar_every.is_some_and(|every| i % every == every / 2);
        let multipart = attached || eicar;
        let mut body = String::with_capacity(size + 256);
        if multipart {
            body.push_str("--bench-b\nContent-Type: text/plain\n\n");
            body.push_str(line);
        }
        if eicar {
            // The test string, made here and never stored in the repository, base64 in a part.
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(spoolsift::stages::content::eicar::signature());
            body.push_str(&format!(
                "--bench-b\nContent-Type: text/plain; name=\"notes.txt\"\nContent-Transfer-Encoding: base64\n\
                 Content-Disposition: attachment; filename=\"notes.txt\"\n\n{encoded}\n"
            ));
        }
        if attached {
            body.push_str(
                "--bench-b\nContent-Type: application/pdf; name=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n",
            );
            while body.len() < size {
                body.push_str(b64);
            }
        } else {
            if multipart {
                body.push_str("--bench-b\nContent-Type: text/plain\n\n");
            }
            while body.len() < size {
                body.push_str(line);
            }
        }
        if multipart {
            body.push_str("--bench-b--\n");
        }
        let lines = body.matches('\n').count();
        spool_file(&dir.join(format!("{id}-H")), &header_file(&id, lines, &format!("bench {i}"), multipart));
        spool_file(&dir.join(format!("{id}-D")), format!("{id}-D\n{body}").as_bytes());
        out.push((id, body.len() as u64));
    }
    out
}
