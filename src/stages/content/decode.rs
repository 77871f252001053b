//! Getting at a part's bytes: what mail-parser decoded, or our own lenient decoding where it gave
//! up, and the bytes as sent where it converted text to UTF-8.

use std::borrow::Cow;

use mail_parser::{Encoding, Message, MessagePart, MimeHeaders, PartType};

/// A part's content as scanned: decoded where mail-parser could decode it, else decoded leniently
/// by us from the raw text it kept. `declared`: the part's Content-Transfer-Encoding.
pub fn part_bytes<'a>(m: &'a Message<'_>, part: &'a MessagePart<'_>, declared: Encoding) -> Cow<'a, [u8]> {
    match &part.body {
        PartType::Message(inner) if part.encoding == Encoding::None => {
            // An unencoded nested message shares the outer raw bytes; its own span is the body.
            match m.raw_message().get(part.offset_body as usize..part.offset_end as usize) {
                Some(raw) => Cow::Borrowed(raw),
                None => Cow::Borrowed(inner.raw_message()),
            }
        }
        _ if part.is_encoding_problem && declared != Encoding::None => {
            Cow::Owned(lenient_decode(part.contents(), declared))
        }
        _ => Cow::Borrowed(part.contents()),
    }
}

/// The transfer-decoded bytes of a part from the raw message, before any charset conversion;
/// `encoding`: the one the parse undid.
pub fn transfer_decoded<'a>(m: &'a Message<'_>, part: &MessagePart<'_>, encoding: Encoding) -> Option<Cow<'a, [u8]>> {
    let raw = m.raw_message().get(part.offset_body as usize..part.offset_end as usize)?;
    Some(match encoding {
        Encoding::None => Cow::Borrowed(raw),
        enc => Cow::Owned(lenient_decode(raw, enc)),
    })
}

pub fn declared_encoding(part: &MessagePart<'_>) -> Encoding {
    encoding_named(part.content_transfer_encoding())
}

/// The encoding a Content-Transfer-Encoding value names, as far as we decode it.
pub fn encoding_named(cte: Option<&str>) -> Encoding {
    match cte {
        Some(e) if e.trim().eq_ignore_ascii_case("base64") => Encoding::Base64,
        Some(e) if e.trim().eq_ignore_ascii_case("quoted-printable") => Encoding::QuotedPrintable,
        _ => Encoding::None,
    }
}

/// Decoding that never fails: base64 skips what is not in its alphabet, quoted-printable keeps
/// what is not a valid escape. Malware senders rely on decoders that give up.
pub(super) fn lenient_decode(raw: &[u8], enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Base64 => {
            let mut out = Vec::with_capacity(raw.len() / 4 * 3);
            let (mut acc, mut n) = (0u32, 0u8);
            for v in raw.iter().filter_map(|&b| b64_value(b)) {
                acc = acc << 6 | u32::from(v);
                n += 1;
                if n == 4 {
                    out.extend_from_slice(&acc.to_be_bytes()[1..]);
                    (acc, n) = (0, 0);
                }
            }
            match n {
                2 => out.push((acc >> 4) as u8),
                3 => out.extend_from_slice(&((acc >> 2) as u16).to_be_bytes()),
                _ => {}
            }
            out
        }
        Encoding::QuotedPrintable => {
            let mut out = Vec::with_capacity(raw.len());
            let mut i = 0;
            while i < raw.len() {
                let b = raw[i];
                if b == b'=' {
                    let rest = &raw[i + 1..];
                    if rest.starts_with(b"\r\n") {
                        i += 3;
                        continue;
                    }
                    if rest.starts_with(b"\n") {
                        i += 2;
                        continue;
                    }
                    if let [h, l, ..] = rest {
                        if let (Some(h), Some(l)) = (char::from(*h).to_digit(16), char::from(*l).to_digit(16)) {
                            out.push((h * 16 + l) as u8);
                            i += 3;
                            continue;
                        }
                    }
                }
                out.push(b);
                i += 1;
            }
            out
        }
        Encoding::None => raw.to_vec(),
    }
}

fn b64_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_decoders_agree_with_valid_input_and_survive_junk() {
        let b64 = |s: &[u8]| lenient_decode(s, Encoding::Base64);
        assert_eq!(b64(b"aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(b64(b"aGVs\r\nbG8*gd29y!bGQ"), b"hello world");
        assert_eq!(b64(b"aGk="), b"hi");
        assert_eq!(b64(b"aA=="), b"h");
        assert_eq!(b64(b"a"), b"");
        let qp = |s: &[u8]| lenient_decode(s, Encoding::QuotedPrintable);
        assert_eq!(qp(b"a=3Db=\r\nc=\nd"), b"a=bcd");
        assert_eq!(qp(b"x=ZZ=4"), b"x=ZZ=4");
    }
}
