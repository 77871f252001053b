//! A census of a message's MIME structure, taken before mail-parser parses it.
//!
//! mail-parser builds the whole tree in memory: a part costs a few hundred bytes whatever its
//! size, so 47 MB of empty parts (`--B` and a blank line, repeated) became 9.5 million parts and
//! 2.5 GB. mail-parser has no limits of its own, so this walk goes first: it follows the same
//! framing as mail-parser's parse (a delimiter is `--` and the innermost boundary anywhere in the
//! text, a message/rfc822 part's body is a message, a part without a type in a multipart/digest is
//! a message, encoded nested messages are decoded and walked too), keeps only a stack of
//! boundaries, and stops at the first limit crossed. Its counts are meant to be at least
//! mail-parser's; `fuzz/fuzz_targets/content_structure.rs` checks that on arbitrary input.

use mail_parser::{MessageParser, MimeHeaders};
use memchr::memmem;

use super::decode::{encoding_named, lenient_decode};

/// Limits on a message's structure (`[stages.content]`), each crossing a finding of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StructureLimits {
    /// MIME parts, containers and nested messages included, at every level.
    pub max_parts: usize,
    /// Multipart and message levels, one inside the other.
    pub max_depth: usize,
    /// Header fields of any one part (the message's own header included).
    pub max_header_fields: usize,
}

/// The first limit a message crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breach {
    Parts {
        limit: usize,
    },
    Depth {
        limit: usize,
    },
    HeaderFields {
        limit: usize,
    },
    /// Header fields and the list items in them (`,` and `;`), over all parts: what the parser
    /// builds an object for.
    HeaderItems {
        limit: usize,
    },
    /// Bytes decoded from encoded nested messages, over all levels.
    Decoded {
        limit: usize,
    },
}

impl Breach {
    /// The rule name in findings.
    pub fn rule(&self) -> &'static str {
        match self {
            Breach::Parts { .. } => "structure:parts",
            Breach::Depth { .. } => "structure:depth",
            Breach::HeaderFields { .. } => "structure:header-fields",
            Breach::HeaderItems { .. } => "structure:header-items",
            Breach::Decoded { .. } => "structure:decoded-size",
        }
    }

    pub fn limit(&self) -> usize {
        match *self {
            Breach::Parts { limit }
            | Breach::Depth { limit }
            | Breach::HeaderFields { limit }
            | Breach::HeaderItems { limit }
            | Breach::Decoded { limit } => limit,
        }
    }
}

/// What a census counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub parts: usize,
    pub depth: usize,
}

/// How deep encoded nested messages are decoded and followed: mail-parser decodes three levels
/// itself, and the content scanner parses deeper ones to its `max_nesting` (at most 64).
const ENCODED_LEVELS: usize = 64;

/// Header items (fields and the list items in them) per allowed header field of one part, over
/// the whole message: 100,000 with the default 1,000 fields.
const ITEMS_PER_FIELD: usize = 100;

/// Count `data`'s structure, stopping at the first limit crossed. The content scanner parses a
/// message twice over (mail-parser's full parse, and a structure parse that ignores
/// Content-Transfer-Encoding, `src/stages/content/own.rs`), so both framings are counted: an
/// encoded nested message is a message decoded for the one and in place for the other.
///
/// The counts returned are the larger of the two framings'.
pub fn census(data: &[u8], limits: &StructureLimits) -> Result<Counts, Breach> {
    let mut most = Counts::default();
    for ignore_cte in [false, true] {
        let mut c = Counter {
            limits,
            counts: Counts::default(),
            items: 0,
            decoded: 0,
            decoded_limit: data.len().saturating_mul(2).saturating_add(1 << 20),
            ignore_cte,
        };
        c.message(data, 0, ENCODED_LEVELS)?;
        most = Counts { parts: most.parts.max(c.counts.parts), depth: most.depth.max(c.counts.depth) };
    }
    Ok(most)
}

struct Counter<'l> {
    limits: &'l StructureLimits,
    counts: Counts,
    /// Header items so far, over all parts.
    items: usize,
    /// Bytes decoded so far, and the most allowed: twice the message and a megabyte, which
    /// legitimate forwards nested a few levels deep stay under (base64 shrinks each level by a
    /// quarter), where 64 levels of quoted-printable would copy the message 64 times.
    decoded: usize,
    decoded_limit: usize,
    /// The structure parse's framing: encoded nested messages are parsed in place.
    ignore_cte: bool,
}

/// One open level of the walk: a multipart (its boundary) or a nested message (the boundary of the
/// multipart around it, handed back when it ends).
struct Level {
    boundary: Option<Vec<u8>>,
    message: bool,
    digest: bool,
}

/// What a part's header says about its structure.
#[derive(Default)]
struct PartHead {
    multipart_boundary: Option<Vec<u8>>,
    message: bool,
    digest: bool,
    has_type: bool,
    encoded: bool,
    cte: Option<String>,
}

impl Counter<'_> {
    fn part(&mut self, fields: usize, items: usize, depth: usize) -> Result<(), Breach> {
        self.items = self.items.saturating_add(items);
        let max_items = self.limits.max_header_fields.saturating_mul(ITEMS_PER_FIELD);
        if self.items > max_items {
            return Err(Breach::HeaderItems { limit: max_items });
        }
        self.counts.parts += 1;
        self.counts.depth = self.counts.depth.max(depth);
        if self.counts.parts > self.limits.max_parts {
            return Err(Breach::Parts { limit: self.limits.max_parts });
        }
        if depth > self.limits.max_depth {
            return Err(Breach::Depth { limit: self.limits.max_depth });
        }
        if fields > self.limits.max_header_fields {
            return Err(Breach::HeaderFields { limit: self.limits.max_header_fields });
        }
        Ok(())
    }

    /// One message's bytes, at nesting `base`, with `encoded` levels of encoded nested messages
    /// still to follow. Mirrors mail-parser 0.11's message parse loop, without storing.
    fn message(&mut self, data: &[u8], base: usize, encoded: usize) -> Result<(), Breach> {
        let mut pos = 0;
        let mut state = Level { boundary: None, message: true, digest: false };
        let mut stack: Vec<Level> = Vec::new();
        loop {
            let block = header_block(data, pos, self.limits.max_header_fields, self.ignore_cte);
            let Some(end) = block.end else {
                // Fields up to the end and no blank line: mail-parser parses them all and keeps
                // them as a part.
                if block.fields > 0 || data.get(pos..).is_some_and(|r| r.iter().any(|b| !b.is_ascii_whitespace())) {
                    self.part(block.fields, block.items, base + stack.len())?;
                }
                return Ok(());
            };
            let head = block.head;
            pos = end;
            self.part(block.fields, block.items, base + stack.len())?;
            if let Some(b) = head.multipart_boundary.filter(|b| !b.is_empty()) {
                if let Some(after) = find_delimiter(data, pos, &b) {
                    pos = skip_crlf(data, after);
                    let digest = head.digest;
                    stack.push(std::mem::replace(&mut state, Level { boundary: Some(b), message: false, digest }));
                    continue;
                }
            }
            let is_message = head.message || (!head.has_type && state.digest);
            if is_message && !head.encoded {
                let boundary = state.boundary.take();
                stack.push(std::mem::replace(&mut state, Level { boundary, message: true, digest: false }));
                continue;
            }
            // The part's body runs to the next delimiter of the innermost multipart.
            let body_start = pos;
            match state.boundary.as_deref() {
                None => pos = data.len(),
                Some(b) => match find_delimiter(data, pos, b) {
                    Some(after) => pos = after,
                    None => {
                        pos = data.len();
                        state.boundary = None;
                    }
                },
            }
            if is_message && encoded > 0 {
                let body_end =
                    if state.boundary.is_some() { pos - state.boundary.as_ref().map_or(0, Vec::len) - 2 } else { pos };
                let raw = &data[body_start..body_end];
                self.decoded = self.decoded.saturating_add(raw.len());
                if self.decoded > self.decoded_limit {
                    return Err(Breach::Decoded { limit: self.decoded_limit });
                }
                let decoded = lenient_decode(raw, encoding_named(head.cte.as_deref()));
                self.message(&decoded, base + stack.len() + 1, encoded - 1)?;
            }
            if state.boundary.is_none() {
                if pos >= data.len() {
                    return Ok(());
                }
                continue;
            }
            loop {
                if state.message {
                    let Some(mut prev) = stack.pop() else { return Ok(()) };
                    prev.boundary = state.boundary.take();
                    state = prev;
                }
                // mail-parser's `is_multipart_end`, with what it consumes.
                let end = match (data.get(pos), data.get(pos + 1)) {
                    (Some(b'\r'), Some(b'\n')) => {
                        pos += 2;
                        false
                    }
                    (Some(b'\n'), _) => {
                        pos += 1;
                        false
                    }
                    (Some(b'-'), Some(b'-')) => {
                        pos += 2;
                        true
                    }
                    (Some(&a), _) if a.is_ascii_whitespace() => {
                        pos = skip_crlf(data, pos + 1);
                        false
                    }
                    _ => false,
                };
                if end {
                    // The multipart ends: back to its parent, which looks for its own next part.
                    let Some(prev) = stack.pop() else { return Ok(()) };
                    state = prev;
                    if let Some(b) = state.boundary.clone() {
                        if let Some(after) = find_delimiter(data, pos, &b) {
                            pos = after;
                            continue;
                        }
                    }
                    return Ok(());
                }
                break;
            }
        }
    }
}

/// The offset after the next `--boundary`, anywhere from `from` (mail-parser does not require it
/// at the start of a line).
fn find_delimiter(data: &[u8], from: usize, boundary: &[u8]) -> Option<usize> {
    let mut needle = Vec::with_capacity(boundary.len() + 2);
    needle.extend_from_slice(b"--");
    needle.extend_from_slice(boundary);
    memmem::find(data.get(from..)?, &needle).map(|at| from + at + needle.len())
}

/// mail-parser's `skip_crlf`: white space up to and including one line end.
fn skip_crlf(data: &[u8], mut pos: usize) -> usize {
    while let Some(&b) = data.get(pos) {
        match b {
            b'\r' | b' ' | b'\t' => pos += 1,
            b'\n' => return pos + 1,
            _ => break,
        }
    }
    pos
}

/// What [`header_block`] found.
struct Block {
    /// Where the block ends (after its blank line); `None` when the data ends first.
    end: Option<usize>,
    fields: usize,
    /// Fields and the list items (`,` `;`) in them.
    items: usize,
    head: PartHead,
}

/// The header block at `pos`: its end, its field and item counts and what it says about
/// structure. Fields are counted by their first lines, so a block is judged after
/// `max_fields + 1` of them without reading more of their contents.
fn header_block(data: &[u8], mut pos: usize, max_fields: usize, ignore_cte: bool) -> Block {
    let (mut fields, mut items) = (0, 0usize);
    let (mut ctype, mut cte): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    loop {
        // As mail-parser: white space before a field is skipped; a line end there ends the block.
        while let Some(&b) = data.get(pos) {
            if b == b'\n' {
                let head = if fields > max_fields { PartHead::default() } else { part_head(ctype, cte, ignore_cte) };
                return Block { end: Some(pos + 1), fields, items, head };
            }
            if !b.is_ascii_whitespace() {
                break;
            }
            pos += 1;
        }
        if pos >= data.len() {
            return Block { end: None, fields, items, head: PartHead::default() };
        }
        let start = pos;
        // As mail-parser: the name runs to `:`; a line end before it drops the line, and what
        // follows (even indented) is read as a new field. A `:` before any name character is
        // skipped.
        let mut named = false;
        let Some(colon) = data[start..].iter().position(|&b| {
            named |= !b.is_ascii_whitespace() && b != b':';
            b == b'\n' || (b == b':' && named)
        }) else {
            return Block { end: None, fields, items, head: PartHead::default() };
        };
        if data[start + colon] == b'\n' {
            pos = start + colon + 1;
            continue;
        }
        // The value runs to a line end not followed by white space.
        let mut end = start + colon;
        loop {
            match memchr::memchr(b'\n', &data[end..]) {
                None => {
                    end = data.len();
                    break;
                }
                Some(nl) => {
                    end += nl + 1;
                    if !matches!(data.get(end), Some(b' ' | b'\t')) {
                        break;
                    }
                }
            }
        }
        fields += 1;
        items = items.saturating_add(1 + memchr::memchr2_iter(b',', b';', &data[start + colon..end]).count());
        if fields > max_fields {
            // Enough to refuse the part; find the block's end without looking at more fields.
            pos = end;
            continue;
        }
        let field = &data[start..end];
        // mail-parser drops white space inside a field name (`Con\ttent-Type` is Content-Type).
        let name: Vec<u8> =
            field[..colon].iter().filter(|&&b| !b.is_ascii_whitespace() && b != b':').copied().collect();
        if name.eq_ignore_ascii_case(b"content-type") {
            ctype = Some(field);
        } else if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            cte = Some(field);
        }
        pos = end;
    }
}

/// The structure a part's Content-Type and Content-Transfer-Encoding fields describe, read by
/// mail-parser itself so that boundaries (quoting, RFC 2231 continuations) come out as it reads
/// them.
fn part_head(ctype: Option<&[u8]>, cte: Option<&[u8]>, ignore_cte: bool) -> PartHead {
    let mut block = Vec::new();
    for f in [ctype, cte].into_iter().flatten() {
        block.extend_from_slice(f);
        if !f.ends_with(b"\n") {
            block.push(b'\n');
        }
    }
    block.push(b'\n');
    let mut head = PartHead::default();
    let parsed = std::panic::catch_unwind(|| MessageParser::new().parse_headers(&block[..]));
    let Some(m) = parsed.ok().flatten() else { return head };
    let Some(part) = m.parts.first() else { return head };
    let cte = part.content_transfer_encoding().map(str::to_string);
    head.encoded = !ignore_cte && encoding_named(cte.as_deref()) != mail_parser::Encoding::None;
    head.cte = cte;
    if let Some(ct) = part.content_type() {
        head.has_type = true;
        match ct.ctype() {
            "multipart" => {
                head.multipart_boundary = ct.attribute("boundary").map(|b| b.as_bytes().to_vec());
                head.digest = ct.subtype() == Some("digest");
            }
            "message" => head.message = matches!(ct.subtype(), Some("rfc822" | "global")),
            _ => {}
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: StructureLimits = StructureLimits { max_parts: 100, max_depth: 8, max_header_fields: 20 };

    /// mail-parser's own count of parts, nested messages' parts included.
    fn mail_parser_parts(data: &[u8]) -> usize {
        fn count(m: &mail_parser::Message<'_>) -> usize {
            m.parts
                .iter()
                .map(|p| match &p.body {
                    mail_parser::PartType::Message(inner) => 1 + count(inner),
                    _ => 1,
                })
                .sum()
        }
        MessageParser::new().parse(data).map_or(0, |m| count(&m))
    }

    fn parts(data: &[u8]) -> usize {
        census(data, &LIMITS).unwrap().parts
    }

    #[test]
    fn counts_as_mail_parser_does() {
        let cases: &[&[u8]] = &[
            b"Subject: x\n\nhello\n",
            b"Content-Type: multipart/mixed; boundary=B\n\npre\n--B\nContent-Type: text/plain\n\none\n--B\n\ntwo\n--B--\nepilogue\n",
            b"Content-Type: multipart/mixed; boundary=\"B B\"\n\n--B B\n\none\n--B B--\n",
            b"Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: message/rfc822\n\nSubject: in\n\nbody\n--B--\n",
            b"Content-Type: multipart/mixed; boundary=O\n\n--O\nContent-Type: multipart/alternative; boundary=I\n\n--I\n\na\n--I\n\nb\n--I--\n--O\n\nc\n--O--\n",
            b"Content-Type: multipart/digest; boundary=D\n\n--D\n\nSubject: one\n\n1\n--D\n\nSubject: two\n\n2\n--D--\n",
            b"Content-Type: message/rfc822\n\nContent-Type: message/rfc822\n\nSubject: deep\n\nx\n",
            b"Content-Type: multipart/mixed; boundary=B\n\n--B\n\nunterminated",
            b"Content-Type: multipart/mixed; boundary=B\n\nno delimiter at all\n",
            b"Content-Type: multipart/mixed; boundary=B\n\n--B\n\na==--B\n\nb\n--B--",
        ];
        for data in cases {
            assert_eq!(parts(data), mail_parser_parts(data), "{}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn an_encoded_nested_message_is_walked_too() {
        use base64::Engine;
        let inner = b"Content-Type: multipart/mixed; boundary=I\n\n--I\n\na\n--I\n\nb\n--I--\n";
        let enc = base64::engine::general_purpose::STANDARD.encode(inner);
        let data = format!(
            "Content-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: message/rfc822\n\
             Content-Transfer-Encoding: base64\n\n{enc}\n--B--\n"
        );
        assert_eq!(parts(data.as_bytes()), mail_parser_parts(data.as_bytes()));
        assert_eq!(parts(data.as_bytes()), 5);
    }

    #[test]
    fn each_limit_is_its_own_breach() {
        let mut bomb = b"Content-Type: multipart/mixed; boundary=B\n\n".to_vec();
        for _ in 0..200 {
            bomb.extend_from_slice(b"--B\n\n");
        }
        assert_eq!(census(&bomb, &LIMITS), Err(Breach::Parts { limit: 100 }));
        let mut nest = Vec::new();
        for i in 0..10 {
            nest.extend_from_slice(format!("Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n").as_bytes());
        }
        assert_eq!(census(&nest, &LIMITS), Err(Breach::Depth { limit: 8 }));
        let mut many = Vec::new();
        for i in 0..21 {
            many.extend_from_slice(format!("X-{i}: y\n").as_bytes());
        }
        many.extend_from_slice(b"\nbody\n");
        assert_eq!(census(&many, &LIMITS), Err(Breach::HeaderFields { limit: 20 }));
        assert_eq!(census(&many[7..], &LIMITS).map(|c| c.parts), Ok(1));
    }
}
