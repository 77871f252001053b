//! The benches' corpus: spool pairs (`-H`, `-D`) as Exim writes them, from a fixed seed, so every
//! bench and every run scans the same messages.

use std::path::Path;

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

/// Generate the corpus: 70% small text (2–10 KB), 25% with an attachment (10–200 KB), 5% large
/// (200 KB–2 MB); or only small ones.
pub fn generate(dir: &Path, n: usize, small_only: bool) -> Vec<(MessageId, u64)> {
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
        let (size, multipart) = match roll {
            _ if small_only => (rng.range(2_000, 4_000), false),
            0..=69 => (rng.range(2_000, 10_000), false),
            70..=94 => (rng.range(10_000, 200_000), true),
            _ => (rng.range(200_000, 2_000_000), true),
        };
        let mut body = String::with_capacity(size + 256);
        if multipart {
            body.push_str("--bench-b\nContent-Type: text/plain\n\n");
            body.push_str(line);
            body.push_str(
                "--bench-b\nContent-Type: application/pdf; name=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n",
            );
            while body.len() < size {
                body.push_str(b64);
            }
            body.push_str("--bench-b--\n");
        } else {
            while body.len() < size {
                body.push_str(line);
            }
        }
        let lines = body.matches('\n').count();
        std::fs::write(dir.join(format!("{id}-H")), header_file(&id, lines, &format!("bench {i}"), multipart)).unwrap();
        std::fs::write(dir.join(format!("{id}-D")), format!("{id}-D\n{body}")).unwrap();
        out.push((id, body.len() as u64));
    }
    out
}
