//! The `-H` file: envelope, status and headers, read into a model that keeps everything and
//! written back byte for byte when nothing changed.
//!
//! Numbers are accepted only in the canonical form Exim writes (`%d`), so every file we accept is
//! one we can reproduce exactly: `write(parse(bytes)) == bytes` holds for all accepted input, and
//! the fuzz target checks that.

use std::collections::BTreeSet;
use std::path::Path;

use super::error::{Reason, SpoolError};
use super::headers::{HeaderFlag, HeaderLine, HeaderSection};
use super::id::MessageId;
use super::options::{AclScope, AclVariable, OptionLine, SpoolOption, SpoolOptions};
use super::recipients::RecipientLine;
use super::tree::{parse_node, NonRecipients};

/// Exim rejects a line longer than 4 × BIG_BUFFER_SIZE.
pub const MAX_LINE: usize = 4 * 16384;
/// Exim rejects more recipients than this in one file.
pub const MAX_RECIPIENTS: usize = 16384;
/// The default limit on a `-H` file's size; larger ones are refused unread (the daemon's is
/// `[intake] max_header_file_bytes`). Exim's own limits make a real one far smaller: its header
/// section is at most `header_maxsize` (1 MB by default) and recipients are short lines.
pub const MAX_HEADER_FILE: u64 = 64 * 1024 * 1024;

/// Exclusive lower and upper bounds for the keys of a subtree still to be read.
type KeyBounds = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Line 2: who submitted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originator {
    /// Login name, truncated by Exim to 63 bytes; may contain spaces.
    pub login: Vec<u8>,
    pub uid: i64,
    pub gid: i64,
}

/// A parsed `-H` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolHeader {
    pub id: MessageId,
    pub originator: Originator,
    /// The envelope sender without its angle brackets; empty for `<>` (bounces).
    pub sender: Vec<u8>,
    /// Line 4: receive time (seconds) and the number of delay warnings sent.
    pub received_time: i64,
    pub warning_count: i64,
    pub options: SpoolOptions,
    pub non_recipients: NonRecipients,
    pub recipients: Vec<RecipientLine>,
    pub headers: HeaderSection,
}

/// Walks a byte buffer line by line, knowing the line number and offset of each line.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn err(&self, line: usize, offset: usize, reason: Reason) -> SpoolError {
        SpoolError::new(line, offset as u64, reason)
    }

    /// The next line without its LF, with its line number and start offset.
    fn line(&mut self) -> Result<(usize, usize, &'a [u8]), SpoolError> {
        let start = self.pos;
        let rest = &self.bytes[start..];
        let Some(len) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err(self.line + 1, start, Reason::MissingFinalLf));
        };
        self.line += 1;
        if len > MAX_LINE {
            return Err(self.err(self.line, start, Reason::LineTooLong { limit: MAX_LINE }));
        }
        let text = &rest[..len];
        if let Some(p) = text.iter().position(|&b| b == b'\r') {
            return Err(self.err(self.line, start + p, Reason::CarriageReturn));
        }
        if let Some(p) = text.iter().position(|&b| b == 0) {
            return Err(self.err(self.line, start + p, Reason::Nul));
        }
        self.pos = start + len + 1;
        Ok((self.line, start, text))
    }

    /// Exactly `n` raw bytes (an ACL value), then a LF.
    fn counted(&mut self, n: usize) -> Option<&'a [u8]> {
        let v = self.bytes.get(self.pos..self.pos.checked_add(n)?)?;
        if self.bytes.get(self.pos + n) != Some(&b'\n') {
            return None;
        }
        self.line += v.iter().filter(|&&b| b == b'\n').count() + 1;
        self.pos += n + 1;
        Some(v)
    }
}

/// A canonical decimal as Exim's `%d` writes it: optional `-`, no leading zeros, no `+`.
fn decimal(s: &[u8]) -> Option<i64> {
    let digits = s.strip_prefix(b"-").unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && s != b"-0";
    if !canonical {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

fn number(s: &[u8], line: usize, offset: usize) -> Result<i64, SpoolError> {
    decimal(s)
        .ok_or_else(|| SpoolError::new(line, offset as u64, Reason::BadNumber(String::from_utf8_lossy(s).into_owned())))
}

/// Split an option line (without LF) into taint, quoter and the rest.
/// What precedes an option's name: the taint marker and a lookup quoter.
type OptionPrefix<'a> = (bool, Option<Vec<u8>>, &'a [u8]);

fn option_prefix(text: &[u8]) -> Result<OptionPrefix<'_>, &'static str> {
    let tainted = text.get(1) == Some(&b'-');
    let mut rest = &text[if tainted { 2 } else { 1 }..];
    let mut quoter = None;
    if rest.first() == Some(&b'(') {
        let close = rest.iter().position(|&b| b == b')').ok_or("`(quoter` without `)`")?;
        let q = &rest[1..close];
        if q.is_empty() || !q.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err("quoter must be a lookup type name");
        }
        quoter = Some(q.to_vec());
        rest = &rest[close + 1..];
    }
    if rest.is_empty() {
        return Err("option line without a name");
    }
    Ok((tainted, quoter, rest))
}

/// The bytes of a `-H` file, refused when larger than `limit`: one open, and its size from the open
/// file, up to which it is read. No read past that size looks for the end: Exim never changes an
/// `-H` in place (it renames a new one over it), and neither do we.
pub fn read_bytes(path: &Path, limit: Option<u64>) -> Result<Vec<u8>, SpoolError> {
    read_file(path, limit).map(|(bytes, _)| bytes)
}

/// [`read_bytes`], with the metadata of the file read (from the same open descriptor).
pub fn read_file(path: &Path, limit: Option<u64>) -> Result<(Vec<u8>, std::fs::Metadata), SpoolError> {
    let io = |e: std::io::Error| SpoolError::io(path, &e);
    let (file, meta) = super::open::open_regular_with_metadata(path, false).map_err(io)?;
    let len = meta.len();
    if let Some(limit) = limit.filter(|&l| len > l) {
        return Err(SpoolError::whole_file(Reason::FileTooLarge { limit }).in_file(path));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, len), &mut bytes).map_err(io)?;
    Ok((bytes, meta))
}

/// The few option values Exim's reader itself insists on (it fails the file otherwise).
pub(crate) fn check_known_value(name: &[u8], value: Option<&[u8]>) -> Result<(), &'static str> {
    match name {
        b"frozen" | b"body_linecount" | b"body_zerocount" | b"max_received_linelength" | b"dsn_ret" => {
            value.and_then(decimal).map(|_| ()).ok_or("this option needs a decimal value")
        }
        b"received_time_usec" => match value {
            Some([b'.', rest @ ..]) if !rest.is_empty() && rest.iter().all(u8::is_ascii_digit) => Ok(()),
            _ => Err("-received_time_usec needs `.` and digits"),
        },
        _ => Ok(()),
    }
}

impl SpoolHeader {
    /// The sending host's IP address, from `-host_address` (none for local submissions).
    pub fn client_ip(&self) -> Option<std::net::IpAddr> {
        self.options.value("host_address").and_then(super::options::host_address_ip)
    }

    /// Read a `-H` file. Its name must be `<id>-H`, and its first line must say so.
    pub fn read(path: &Path) -> Result<SpoolHeader, SpoolError> {
        let name = path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
        let Some(id) = MessageId::from_file_name(name, b'H') else {
            return Err(
                SpoolError::whole_file(Reason::BadFileName(String::from_utf8_lossy(name).into_owned())).in_file(path)
            );
        };
        let bytes = read_bytes(path, Some(MAX_HEADER_FILE))?;
        SpoolHeader::parse(&bytes, Some(&id)).map_err(|e| e.in_file(path))
    }

    /// Parse `-H` bytes. With `expected`, line 1 must name that id.
    pub fn parse(bytes: &[u8], expected: Option<&MessageId>) -> Result<SpoolHeader, SpoolError> {
        let mut c = Cursor { bytes, pos: 0, line: 0 };

        // L1: `<id>-H`
        let (ln, off, l1) = c.line()?;
        let mismatch = |found: &[u8]| {
            SpoolError::new(
                ln,
                off as u64,
                Reason::FirstLineMismatch {
                    expected: expected.map_or_else(|| "<id>-H".to_string(), |id| format!("{id}-H")),
                    found: String::from_utf8_lossy(found).into_owned(),
                },
            )
        };
        let id = MessageId::from_file_name(l1, b'H').ok_or_else(|| mismatch(l1))?;
        if expected.is_some_and(|e| *e != id) {
            return Err(mismatch(l1));
        }

        // L2: `login uid gid`, split from the right.
        let (ln, off, l2) = c.line()?;
        let mut parts = l2.rsplitn(3, |&b| b == b' ');
        let (gid, uid, login) = match (parts.next(), parts.next(), parts.next()) {
            (Some(g), Some(u), Some(l)) => (g, u, l),
            _ => return Err(SpoolError::new(ln, off as u64, Reason::BadOwnerLine)),
        };
        let originator = Originator { login: login.to_vec(), uid: number(uid, ln, off)?, gid: number(gid, ln, off)? };

        // L3: `<sender>`
        let (ln, off, l3) = c.line()?;
        if l3.len() < 2 || l3[0] != b'<' || l3[l3.len() - 1] != b'>' {
            return Err(SpoolError::new(ln, off as u64, Reason::BadSenderLine));
        }
        let sender = l3[1..l3.len() - 1].to_vec();

        // L4: `time warnings`
        let (ln, off, l4) = c.line()?;
        let mut parts = l4.splitn(2, |&b| b == b' ');
        let (Some(t), Some(w)) = (parts.next(), parts.next()) else {
            return Err(SpoolError::new(ln, off as u64, Reason::BadReceivedLine));
        };
        let (received_time, warning_count) = (number(t, ln, off)?, number(w, ln, off)?);

        // Options, up to the first line not starting with `-`, which is the tree line.
        let mut options = Vec::new();
        let (tree_ln, tree_off, first_tree_line) = loop {
            let (ln, off, text) = c.line()?;
            if text.first() != Some(&b'-') {
                break (ln, off, text);
            }
            let bad = |r: &'static str| SpoolError::new(ln, off as u64, Reason::BadOption(r));
            let (tainted, quoter, rest) = option_prefix(text).map_err(bad)?;
            let (name, value) = match rest.iter().position(|&b| b == b' ') {
                Some(sp) => (&rest[..sp], Some(&rest[sp + 1..])),
                None => (rest, None),
            };
            let scope = match name {
                b"aclc" => Some(AclScope::Connection),
                b"aclm" => Some(AclScope::Message),
                b"acl" => Some(AclScope::Numbered),
                _ => None,
            };
            if let Some(scope) = scope {
                let bad = |r: &'static str| SpoolError::new(ln, off as u64, Reason::BadAclVariable(r));
                let spec = value.ok_or_else(|| bad("missing name and length"))?;
                let sp = spec.iter().rposition(|&b| b == b' ').ok_or_else(|| bad("missing length"))?;
                let (var, len) = (&spec[..sp], &spec[sp + 1..]);
                if var.is_empty() || var.contains(&b' ') {
                    return Err(bad("variable name must be one word"));
                }
                let len =
                    decimal(len).and_then(|l| usize::try_from(l).ok()).ok_or_else(|| bad("length is not a number"))?;
                let value = c.counted(len).ok_or_else(|| bad("value shorter than its length, or no LF after it"))?;
                options.push(SpoolOption::Acl(AclVariable {
                    tainted,
                    quoter,
                    scope,
                    name: var.to_vec(),
                    value: value.to_vec(),
                }));
            } else {
                check_known_value(name, value).map_err(bad)?;
                options.push(SpoolOption::Line(OptionLine {
                    tainted,
                    quoter,
                    name: name.to_vec(),
                    value: value.map(<[u8]>::to_vec),
                }));
            }
        };

        // Non-recipients tree: `XX`, or pre-order nodes read with an explicit stack (a hostile
        // degenerate tree must not exhaust the call stack).
        let tree_start = tree_off;
        let non_recipients = if first_tree_line == b"XX" {
            NonRecipients::from_read(BTreeSet::new(), b"XX\n".to_vec(), true)
        } else {
            let mut set = BTreeSet::new();
            let mut sorted = true;
            // Each pending subtree carries the exclusive bounds its keys must lie in.
            let mut pending: Vec<KeyBounds> = vec![(None, None)];
            let mut line = (tree_ln, tree_off, first_tree_line);
            loop {
                let (ln, off, text) = line;
                let node = parse_node(text).map_err(|r| SpoolError::new(ln, off as u64, Reason::BadTree(r)))?;
                let (lo, hi) = pending.pop().unwrap_or((None, None));
                let key = node.address.to_vec();
                if lo.as_ref().is_some_and(|l| *l >= key) || hi.as_ref().is_some_and(|h| *h <= key) {
                    sorted = false;
                }
                if node.right {
                    pending.push((Some(key.clone()), hi));
                }
                if node.left {
                    pending.push((lo, Some(key.clone())));
                }
                set.insert(key);
                if pending.is_empty() {
                    break;
                }
                line = c.line()?;
            }
            NonRecipients::from_read(set, bytes[tree_start..c.pos].to_vec(), sorted)
        };

        // Recipients.
        let (ln, off, count) = c.line()?;
        let count =
            decimal(count).and_then(|n| usize::try_from(n).ok()).filter(|&n| n <= MAX_RECIPIENTS).ok_or_else(|| {
                SpoolError::new(ln, off as u64, Reason::BadRecipientCount(String::from_utf8_lossy(count).into_owned()))
            })?;
        let mut recipients = Vec::with_capacity(count);
        for i in 0..count {
            let (ln, off, text) = c.line().map_err(|e| match e.reason {
                Reason::MissingFinalLf if c.pos == bytes.len() => {
                    SpoolError::new(e.line, e.offset, Reason::MissingRecipients { expected: count, found: i })
                }
                _ => e,
            })?;
            if text.is_empty() {
                return Err(SpoolError::new(ln, off as u64, Reason::MissingRecipients { expected: count, found: i }));
            }
            recipients.push(
                RecipientLine::parse(text).map_err(|r| SpoolError::new(ln, off as u64, Reason::BadRecipient(r)))?,
            );
        }

        // The blank line, then `NNNf text` until EOF.
        let (ln, off, blank) = c.line()?;
        if !blank.is_empty() {
            return Err(SpoolError::new(ln, off as u64, Reason::MissingBlankLine));
        }
        let mut headers = Vec::new();
        let mut line_no = ln;
        let mut pos = c.pos;
        while pos < bytes.len() {
            line_no += 1;
            let bad = |r: &'static str| SpoolError::new(line_no, pos as u64, Reason::BadHeader(r));
            let digits = bytes[pos..].iter().take_while(|b| b.is_ascii_digit()).count();
            if digits == 0 {
                return Err(bad("expected a decimal length where a header starts"));
            }
            let len_text = &bytes[pos..pos + digits];
            let length = std::str::from_utf8(len_text)
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .ok_or_else(|| bad("length too large"))?;
            if format!("{length:03}").as_bytes() != len_text {
                return Err(bad("length is not written as Exim's %03d"));
            }
            let flag = *bytes.get(pos + digits).ok_or_else(|| bad("file ends after a header length"))?;
            if flag.is_ascii_whitespace() && flag != b' ' {
                return Err(bad("flag byte is a control character"));
            }
            if bytes.get(pos + digits + 1) != Some(&b' ') {
                return Err(bad("expected one space after the flag byte"));
            }
            let start = pos + digits + 2;
            let text = bytes
                .get(start..start.saturating_add(length))
                .ok_or_else(|| SpoolError::new(line_no, pos as u64, Reason::HeaderPastEof { length }))?;
            if let Some(p) = text.iter().position(|&b| b == 0) {
                return Err(SpoolError::new(line_no, (start + p) as u64, Reason::Nul));
            }
            if let Some(p) = text.iter().position(|&b| b == b'\r') {
                return Err(SpoolError::new(line_no, (start + p) as u64, Reason::CarriageReturn));
            }
            if text.last() != Some(&b'\n') {
                return Err(SpoolError::new(line_no, pos as u64, Reason::HeaderWithoutLf));
            }
            if text.is_empty() || text[0] == b' ' || text[0] == b'\t' || text[0] == b'\n' {
                return Err(bad("header text starts with whitespace (wrong length before it?)"));
            }
            // Exim folds what it writes: a line break inside a header is followed by white space.
            // One that is not would be re-queued, and delivered, as two header fields.
            if let Some(p) = text[..text.len() - 1]
                .iter()
                .enumerate()
                .position(|(i, &b)| b == b'\n' && !matches!(text[i + 1], b' ' | b'\t'))
            {
                return Err(SpoolError::new(
                    line_no + text[..p].iter().filter(|&&b| b == b'\n').count(),
                    (start + p) as u64,
                    Reason::BadHeader(
                        "line break inside a header not followed by white space (Exim folds every line it writes)",
                    ),
                ));
            }
            headers.push(HeaderLine::from_spool(HeaderFlag::from_byte(flag), text.to_vec()));
            line_no += text.iter().filter(|&&b| b == b'\n').count() - 1;
            pos = start + length;
        }

        Ok(SpoolHeader {
            id,
            originator,
            sender,
            received_time,
            warning_count,
            options: SpoolOptions(options),
            non_recipients,
            recipients,
            headers: HeaderSection::new(headers),
        })
    }

    /// Serialize. Unchanged parts are written as read; edited parts as Exim writes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(4096);
        out.extend_from_slice(self.id.as_bytes());
        out.extend_from_slice(b"-H\n");
        out.extend_from_slice(&self.originator.login);
        out.extend_from_slice(format!(" {} {}\n", self.originator.uid, self.originator.gid).as_bytes());
        out.push(b'<');
        out.extend_from_slice(&self.sender);
        out.extend_from_slice(b">\n");
        out.extend_from_slice(format!("{} {}\n", self.received_time, self.warning_count).as_bytes());
        for o in &self.options.0 {
            o.write(&mut out);
        }
        self.non_recipients.write(&mut out);
        out.extend_from_slice(format!("{}\n", self.recipients.len()).as_bytes());
        for r in &self.recipients {
            r.write(&mut out);
        }
        out.push(b'\n');
        for h in self.headers.all() {
            h.write(&mut out);
        }
        out
    }

    /// Recipients not yet in the non-recipients tree, with their index in the list.
    pub fn pending_recipients(&self) -> impl Iterator<Item = (usize, &RecipientLine)> {
        self.recipients.iter().enumerate().filter(|(_, r)| !self.non_recipients.contains(r.address()))
    }

    /// `-body_linecount`, absent when the file is in wire format (Exim then takes 0).
    pub fn body_linecount(&self) -> Option<i64> {
        self.options.number("body_linecount")
    }

    pub fn is_wireformat(&self) -> bool {
        self.options.has("spool_file_wireformat")
    }

    pub fn frozen_at(&self) -> Option<i64> {
        self.options.number("frozen")
    }

    /// Exim's message size (`S=`): body bytes + 1 + the transmitted headers.
    pub fn message_size(&self, body_len: u64) -> u64 {
        body_len + 1 + self.headers.live_len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_bytes_reads_the_whole_file_and_refuses_one_over_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x-H");
        let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&p, &body).unwrap();
        assert_eq!(read_bytes(&p, None).unwrap(), body);
        assert_eq!(read_bytes(&p, Some(100_000)).unwrap(), body);
        let e = read_bytes(&p, Some(99_999)).unwrap_err();
        assert!(e.to_string().contains("x-H"), "{e}");
        std::fs::write(&p, b"").unwrap();
        assert!(read_bytes(&p, None).unwrap().is_empty());
        assert!(read_bytes(&dir.path().join("nope-H"), None).is_err());
    }
}
