//! Transfer decoding of our own beside mail-parser's structure.
//!
//! mail-parser decodes base64 bodies one byte at a time (some 36 instructions per encoded byte),
//! most of the content stage's CPU, and has no switch to leave bodies encoded. So the scanner first
//! parses with [`structure_parser`], which is mail-parser with its own header parsing except that
//! Content-Transfer-Encoding is skipped: every part is then framed as if unencoded, which costs a
//! plain boundary search, and [`decode`] undoes base64 (with `base64-simd`) and
//! quoted-printable (with mail-parser's own decoder) on the parts that declared them.
//!
//! The results must be exactly those of mail-parser's full parse, so [`decode`] only answers where
//! the two parses provably agree, and otherwise says [`Bail`], upon which the scanner does the full
//! parse instead. They agree when mail-parser's decoder would have succeeded on the part: its
//! decoder then stops at the same boundary as the plain search (base64 admits no `-`, and the
//! first `--` it meets must start the boundary or decoding fails), so framing, offsets and every
//! later part are the same. What it would have done differently on failure (an "encoding
//! problem": the part turned into raw text) or for encoded containers (a nested message decoded and
//! parsed again) is left to the full parse.

use std::borrow::Cow;

use mail_parser::decoders::charsets::map::charset_decoder;
use mail_parser::parsers::MessageStream;
use mail_parser::{Encoding, HeaderName, Message, MessageParser, MessagePart, MimeHeaders, PartType};

/// The fast path cannot vouch for this message; parse it fully instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bail;

/// mail-parser as `MessageParser::new()` is, except that it skips Content-Transfer-Encoding and so
/// decodes nothing. A parser with any header configured uses its map for every header, so the
/// default map is spelled out here, header by header as mail-parser 0.11 chooses them, so that
/// every other header (and where it ends) comes out the same.
pub fn structure_parser() -> MessageParser {
    use HeaderName::*;
    let mut p = MessageParser::new().ignore_header(ContentTransferEncoding);
    for h in [Subject, Comments, ContentDescription, ContentLocation] {
        p = p.header_text(h);
    }
    for h in [
        From,
        To,
        Cc,
        Bcc,
        ReplyTo,
        Sender,
        ResentTo,
        ResentFrom,
        ResentBcc,
        ResentCc,
        ResentSender,
        ListArchive,
        ListHelp,
        ListId,
        ListOwner,
        ListPost,
        ListSubscribe,
        ListUnsubscribe,
    ] {
        p = p.header_address(h);
    }
    for h in [Date, ResentDate] {
        p = p.header_date(h);
    }
    for h in [MessageId, References, InReplyTo, ReturnPath, ContentId, ResentMessageId] {
        p = p.header_id(h);
    }
    for h in [Keywords, ContentLanguage] {
        p = p.header_comma_separated(h);
    }
    p.header_received(Received)
        .header_raw(MimeVersion)
        .header_content_type(ContentType)
        .header_content_type(ContentDisposition)
}

/// The part's Content-Transfer-Encoding as mail-parser's full parse reads it (the last such
/// header, unstructured text), from the raw bytes the structure parse skipped (in the whole
/// buffer parsed: `raw_message()` is only part of it for a nested message).
pub fn transfer_encoding<'a>(m: &'a Message<'_>, part: &MessagePart<'_>) -> Result<Option<Cow<'a, str>>, Bail> {
    let Some(h) = part.headers.iter().rev().find(|h| h.name == HeaderName::ContentTransferEncoding) else {
        return Ok(None);
    };
    let raw = m.raw_message.get(h.offset_start() as usize..h.offset_end() as usize).ok_or(Bail)?;
    // An encoded word is read by its own decoder, which might end the field elsewhere than the
    // skipping did; no real mailer encodes this field.
    if memchr::memmem::find(raw, b"=?").is_some() {
        return Err(Bail);
    }
    Ok(MessageStream::new(raw).parse_unstructured().into_text())
}

/// Bail unless the message has no nested messages at all, the one thing about which the two parses
/// may disagree on framing: where mail-parser's full parse decodes an encoded message/rfc822 part
/// and parses the result, the structure parse reads the encoded text inline as a message, and
/// mail-parser's bookkeeping of nested messages can then even drop parts from the structure parse,
/// so that the part which caused it is no longer there to be seen. Up to the first part that is a
/// message (typed message/rfc822 or message/global, or untyped in a multipart/digest) the two parses
/// are the same and hold every part in the top message; so if the top message came back (its root
/// at offset 0) and none of its parts is typed message/rfc822, message/global or a digest, there
/// was none.
/// (At any other part a failed decoder looks for the end of the part exactly as the structure
/// parse did, so framing does not depend on whether decoding succeeds.)
pub fn same_framing(top: &Message<'_>) -> Result<(), Bail> {
    if top.parts.first().is_none_or(|p| p.offset_header != 0) {
        return Err(Bail);
    }
    for part in &top.parts {
        if let Some(ct) = part.content_type() {
            // The parser lowercases type and subtype; these are mail-parser's own tests.
            if is_message(ct.ctype(), ct.subtype()) || ct.subtype() == Some("digest") {
                return Err(Bail);
            }
        }
    }
    Ok(())
}

/// Whether mail-parser parses a part of this (lowercased) type as a nested message.
fn is_message(ctype: &str, subtype: Option<&str>) -> bool {
    ctype == "message" && matches!(subtype, Some("rfc822" | "global"))
}

/// The encoding mail-parser undoes for a Content-Transfer-Encoding value, if any.
fn decoded_as(cte: Option<&str>) -> Option<Encoding> {
    match cte {
        Some(t) if t.eq_ignore_ascii_case("base64") => Some(Encoding::Base64),
        Some(t) if t.eq_ignore_ascii_case("quoted-printable") => Some(Encoding::QuotedPrintable),
        _ => None,
    }
}

/// A part's content as mail-parser's full parse would have it.
pub struct Decoded {
    /// What `contents()` would return: the decoded bytes, or for text their conversion to UTF-8.
    pub contents: Vec<u8>,
    /// Whether the content is text that went through that conversion.
    pub is_text: bool,
    /// The transfer encoding that was undone.
    pub encoding: Encoding,
}

/// Undo the transfer encoding of `part` (a leaf of a structure parse, in the message framed by
/// `boundary`, empty at the top) if `cte` (from [`transfer_encoding`]) is one mail-parser decodes.
/// `Ok(None)`: mail-parser would not have decoded it either, so the part is as the full parse has it.
pub fn decode(
    m: &Message<'_>,
    part: &MessagePart<'_>,
    cte: Option<&str>,
    boundary: &[u8],
) -> Result<Option<Decoded>, Bail> {
    let Some(encoding) = decoded_as(cte) else {
        return Ok(None);
    };
    // Framing failed even unencoded (no closing boundary), or the part is something mail-parser
    // treats apart when encoded (containers, nested messages, untyped parts of a digest).
    let ct = part.content_type().ok_or(Bail)?;
    let container = ct.ctype() == "multipart" || is_message(ct.ctype(), ct.subtype());
    if part.is_encoding_problem
        || container
        || !matches!(part.body, PartType::Text(_) | PartType::Html(_) | PartType::Binary(_) | PartType::InlineBinary(_))
    {
        return Err(Bail);
    }
    // Offsets are into the whole buffer parsed, which `raw_message()` is not for a nested message.
    let (start, end) = (part.offset_body as usize, part.offset_end as usize);
    let raw = &m.raw_message[..];
    let bytes = match encoding {
        Encoding::Base64 => base64_body(raw.get(start..end).ok_or(Bail)?).ok_or(Bail)?,
        _ => {
            // mail-parser's own decoder, started where the full parse starts it: it is cheap, and
            // its handling of soft breaks and of the line before the boundary is its own.
            let (stop, out) = MessageStream::new(raw.get(start..).ok_or(Bail)?).decode_quoted_printable_mime(boundary);
            if stop == usize::MAX || start + stop != end {
                return Err(Bail);
            }
            out.into_owned()
        }
    };
    // As mail-parser converts a decoded text part (mime_type(): any `text/*`, by exact name).
    let is_text = ct.ctype() == "text";
    let contents = if !is_text {
        bytes
    } else if let Some(convert) = ct.attribute("charset").and_then(|c| charset_decoder(c.as_bytes())) {
        convert(&bytes).into_bytes()
    } else {
        match String::from_utf8(bytes) {
            Ok(s) => s.into_bytes(),
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned().into_bytes(),
        }
    };
    Ok(Some(Decoded { contents, is_text, encoding }))
}

/// A base64 body (without the line break before its boundary) decoded as mail-parser's
/// `decode_base64_mime` decodes it, or `None` where that would fail.
///
/// Lines of whole groups go through `base64-simd` (strict RFC 4648 with padding, vectorised), one
/// call per line, straight from the message (joining the lines first to decode them in one call
/// costs fewer instructions but more time, in the copy). It was 3.8 times as fast as the `base64`
/// crate on 76-character lines (120 KB: 28 µs against 108 µs), which was most of the content
/// stage's CPU on messages with attachments. At the first line that is not one (white space
/// inside, a group split across lines, padding in the middle, characters outside the alphabet,
/// trailing bits that are not zero, which mail-parser ignores) decoder state would carry across
/// lines or the strict decoder refuses, so the rest goes to mail-parser's own decoder, which
/// starts from the same empty state the lines before left. A `-` anywhere is refused: mail-parser skips a single one but
/// fails on a pair unless a boundary follows, which only the full parse can tell.
fn base64_body(body: &[u8]) -> Option<Vec<u8>> {
    if memchr::memchr(b'-', body).is_some() {
        return None;
    }
    let mut out = vec![0u8; body.len() / 4 * 3 + 3];
    let mut len = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &[][..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() % 4 != 0 {
            break;
        }
        match base64_simd::STANDARD.decode(line, base64_simd::Out::from_slice(&mut out[len..])) {
            Ok(decoded) => len += decoded.len(),
            Err(_) => break,
        }
        rest = next;
    }
    out.truncate(len);
    if !rest.is_empty() {
        let (stop, tail) = MessageStream::new(rest).decode_base64_mime(b"");
        if stop == usize::MAX {
            return None;
        }
        out.extend_from_slice(&tail);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mail_parser_base64(body: &[u8]) -> Option<Vec<u8>> {
        let (stop, out) = MessageStream::new(body).decode_base64_mime(b"");
        (stop != usize::MAX).then(|| out.into_owned())
    }

    #[test]
    fn base64_bodies() {
        for body in [
            &b""[..],
            b"aGVsbG8gd29ybGQ=",
            b"aGVs\r\nbG8g\r\nd29y\r\nbGQ=\r\n",
            b"aGVsbG8\nd29ybGQ",
            b"aGk=aGk=",
            b"aA==\naA==\n",
            b"a\n",
            b"aR==\naGVsbG8g d29ybGQ=\n",
            b"QUJD\r\r\nQUJD",
            b"QUJD\n\n\nQUJD\t\n",
            b"QUJD\nQU*D\n",
        ] {
            assert_eq!(base64_body(body), mail_parser_base64(body), "{:?}", String::from_utf8_lossy(body));
        }
        assert_eq!(base64_body(b"aGVs-bG8="), None, "a dash is left to the full parse");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn base64_bodies_decode_as_mail_parser_decodes_them(
            lines in proptest::collection::vec(("[A-Za-z0-9+/]{0,12}", "(={0,3})", "( |\t|\r|\r\r|\\*|)", "(\n|\r\n)"), 0..8)
        ) {
            let body: String = lines.iter().map(|(a, b, c, d)| format!("{a}{b}{c}{d}")).collect();
            prop_assert_eq!(base64_body(body.as_bytes()), mail_parser_base64(body.as_bytes()));
        }
    }
}
