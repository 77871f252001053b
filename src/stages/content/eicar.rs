//! The EICAR anti-virus test file, and where in a message we count it as present.
//!
//! The 68-byte string is assembled at run time from two pieces, the second stored reversed, so
//! that neither the repository nor the compiled binary contains it and no scanner quarantines
//! them.
//!
//! The rule. EICAR's own convention is "the file starts with the string, optionally followed by
//! white space (SP, HT, CR, LF, ^Z), 128 bytes at most". A mail part is not a file: MIME framing
//! and transfer encodings add line breaks around it, and a part cut from a broken message may
//! carry text before it. So we count the string as present when
//!
//! * a decoded part, trimmed of that white space at both ends, is exactly the string (the file
//!   convention, with the padding limit dropped since transfer encoding makes it meaningless); or
//! * it stands on a line of its own: only that white space between it and the line's start and
//!   end, and the whole line (without its LF) at most 128 bytes, EICAR's own bound.
//!
//! The line form is what scanning undecoded bytes (the raw body, or a part mail-parser could not
//! frame) can check, and it is a superset of the first for every realistic part. The string inside
//! a sentence, or inside an archive or other binary container, is not a detection: a zip is not
//! unpacked, which matches scanners that treat EICAR as a whole-file signature.

use memchr::memmem::Finder;

use crate::spool::BodySource;

const HEAD: &[u8] = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$";
const TAIL_REVERSED: &[u8] = b"*H+H$!ELIF-TSET-SURIVITNA-DRADNATS-RACIE";

/// The signature name scanners report for the test file.
pub const NAME: &str = "Eicar-Test-Signature";

/// Longest line (LF excluded) that may carry the string: EICAR's 128-byte file bound.
const MAX_LINE: usize = 128;

/// How much of the previous chunk a streamed scan keeps: enough to see a whole bounded line on
/// either side of a match.
const KEEP: usize = 2 * MAX_LINE;

/// Bytes read from a body per round when streaming.
const CHUNK: usize = 64 * 1024;

/// The test string, assembled.
pub fn signature() -> Vec<u8> {
    let mut s = HEAD.to_vec();
    s.extend(TAIL_REVERSED.iter().rev());
    s
}

fn is_pad(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | 0x1a)
}

fn is_space(b: u8) -> bool {
    is_pad(b) || b == b'\n'
}

/// A compiled matcher for the test string.
#[derive(Clone)]
pub struct Eicar {
    sig: Vec<u8>,
    finder: Finder<'static>,
}

impl Default for Eicar {
    fn default() -> Self {
        let sig = signature();
        let finder = Finder::new(&sig).into_owned();
        Eicar { sig, finder }
    }
}

impl Eicar {
    /// Whether a decoded part carries the string (either form of the rule).
    pub fn in_part(&self, bytes: &[u8]) -> bool {
        self.trimmed_equal(bytes) || self.on_own_line(bytes, true, true)
    }

    fn trimmed_equal(&self, bytes: &[u8]) -> bool {
        let start = bytes.iter().position(|&b| !is_space(b)).unwrap_or(bytes.len());
        let end = bytes.iter().rposition(|&b| !is_space(b)).map_or(start, |e| e + 1);
        bytes[start..end] == self.sig[..]
    }

    /// The line form over `buf`. `starts_line`/`ends_line`: whether `buf`'s edges are the edges
    /// of the scanned data (as opposed to a window of it, where the caller keeps enough context).
    fn on_own_line(&self, buf: &[u8], starts_line: bool, ends_line: bool) -> bool {
        self.finder.find_iter(buf).any(|at| self.line_ok(buf, at, starts_line, ends_line))
    }

    fn line_ok(&self, buf: &[u8], at: usize, starts_line: bool, ends_line: bool) -> bool {
        let mut start = at;
        while start > 0 && is_pad(buf[start - 1]) && at - start <= MAX_LINE {
            start -= 1;
        }
        let begins = if start == 0 { starts_line } else { buf[start - 1] == b'\n' };
        let mut end = at + self.sig.len();
        while end < buf.len() && is_pad(buf[end]) && end - start <= MAX_LINE {
            end += 1;
        }
        let finishes = if end == buf.len() { ends_line } else { buf[end] == b'\n' };
        begins && finishes && end - start <= MAX_LINE
    }

    /// Scan a body where it lives, in chunks, feeding every byte to `each` exactly once (for
    /// hashing). Returns whether the string was found, under the part rule when the whole body
    /// fits one chunk and the line rule otherwise.
    pub fn scan_body(&self, body: &dyn BodySource, mut each: impl FnMut(&[u8])) -> std::io::Result<bool> {
        let total = body.body_len();
        let first = usize::try_from(total).unwrap_or(usize::MAX).min(CHUNK);
        let mut buf: Vec<u8> = Vec::with_capacity(first + KEEP);
        // Body offset of buf[0], and how much of buf has been searched for match starts.
        let mut base: u64 = 0;
        let mut searched = 0usize;
        let mut found = false;
        loop {
            let old = buf.len();
            buf.resize(old + CHUNK.min(first.max(1)), 0);
            let mut filled = old;
            while filled < buf.len() {
                let n = body.read_body_at(&mut buf[filled..], base + filled as u64)?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            let eof = filled < buf.len() || base + filled as u64 >= total;
            buf.truncate(filled);
            each(&buf[old..]);
            if found {
                if eof {
                    return Ok(true);
                }
            } else if base == 0 && eof {
                return Ok(self.in_part(&buf));
            } else {
                // Only match starts with a full line's context after them are judged now; the rest
                // are judged next round, when the kept tail has more after it.
                let limit = if eof { buf.len() } else { buf.len().saturating_sub(KEEP) };
                found = self
                    .finder
                    .find_iter(&buf[searched..])
                    .map(|m| searched + m)
                    .take_while(|&at| at < limit)
                    .any(|at| self.line_ok(&buf, at, base == 0, eof));
                searched = limit;
                if eof {
                    return Ok(found);
                }
            }
            let drop = searched.saturating_sub(KEEP);
            buf.drain(..drop);
            base += drop as u64;
            searched -= drop;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assembled_string_is_the_eicar_file() {
        let sig = signature();
        assert_eq!(sig.len(), 68);
        let digest = ring::digest::digest(&ring::digest::SHA256, &sig);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f");
    }

    #[test]
    fn part_and_line_rules() {
        let e = Eicar::default();
        let s = signature();
        let with = |pre: &[u8], post: &[u8]| [pre, &s[..], post].concat();
        assert!(e.in_part(&s));
        assert!(e.in_part(&with(b"\r\n\r\n  ", b" \x1a\r\n")));
        assert!(e.in_part(&with(&[b'\n'; 500], &[b' '; 300])), "padding beyond 128 bytes, trimmed");
        assert!(e.in_part(&with(b"Hello,\n\n", b"\r\nBye\n")), "own line among text");
        assert!(!e.in_part(&with(b"the string is ", b"\n")), "inside a sentence");
        assert!(!e.in_part(&with(b"", b" and more")));
        assert!(!e.in_part(&with(b"PK\x03\x04\x0a\0\0\0", b"PK\x01\x02")), "inside a zip");
        assert!(!e.in_part(&with(&[b"x\n", &[b' '; 100][..]].concat(), b"\n")), "line over 128 bytes");
        assert!(e.in_part(&with(&[b"x\n", &[b' '; 60][..]].concat(), b"\n")), "line of exactly 128 bytes");
        assert!(!e.in_part(&s[..67]));
    }

    fn streamed(body: &[u8]) -> (bool, Vec<u8>) {
        let mut seen = Vec::new();
        let found = Eicar::default().scan_body(&body.to_vec(), |c| seen.extend_from_slice(c)).unwrap();
        (found, seen)
    }

    #[test]
    fn streaming_sees_every_byte_once_and_matches_across_chunks() {
        let s = signature();
        for at in [0, 10, CHUNK - 200, CHUNK - 34, CHUNK - 1, CHUNK, CHUNK + 5, 3 * CHUNK - 40] {
            let mut body = vec![b'a'; 3 * CHUNK + 17];
            for i in (79..body.len()).step_by(80) {
                body[i] = b'\n';
            }
            body.splice(at..at, b"\n".iter().chain(&s).chain(b"\n").copied());
            let (found, seen) = streamed(&body);
            assert!(found, "string at {at}");
            assert_eq!(seen, body);
            body[at + 4] = b'x';
            assert!(!streamed(&body).0, "damaged string at {at}");
        }
        assert_eq!(streamed(b""), (false, Vec::new()));
    }
}
