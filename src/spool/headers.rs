//! The header section of a `-H` file and the editing API every stage uses.
//!
//! Each header is stored as `NNNf text`: the byte length of the text (written `%03d`, so three
//! digits or more), a flag byte, a space, then the text itself including its continuation lines and
//! its final LF. Deleted headers keep their text with the flag `*`; Exim does not transmit them.

use std::fmt;

/// Why a header edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("header name {0:?} is not a valid field name (printable ASCII, no colon)")]
    BadName(String),
    #[error("header value for {0:?} contains CR, LF or NUL")]
    BadValue(String),
    #[error("header text must be `Name: value` ending in LF, without CR or NUL")]
    BadText,
}

/// The flag byte of a stored header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderFlag {
    /// ` `: no special meaning.
    Plain,
    /// `*`: deleted or replaced; not transmitted.
    Deleted,
    /// `P`: Received:, counted for loop detection.
    Received,
    /// `F`: From: / Resent-From:.
    From,
    /// `T`: To:.
    To,
    /// `C`: Cc:.
    Cc,
    /// `B`: Bcc:.
    Bcc,
    /// `R`: Reply-To:.
    ReplyTo,
    /// `S`: Sender:.
    Sender,
    /// `I`: the first Message-ID:.
    MessageId,
    /// Any other byte: Exim's reader accepts it, so we keep it.
    Other(u8),
}

impl HeaderFlag {
    pub fn from_byte(b: u8) -> HeaderFlag {
        match b {
            b' ' => HeaderFlag::Plain,
            b'*' => HeaderFlag::Deleted,
            b'P' => HeaderFlag::Received,
            b'F' => HeaderFlag::From,
            b'T' => HeaderFlag::To,
            b'C' => HeaderFlag::Cc,
            b'B' => HeaderFlag::Bcc,
            b'R' => HeaderFlag::ReplyTo,
            b'S' => HeaderFlag::Sender,
            b'I' => HeaderFlag::MessageId,
            other => HeaderFlag::Other(other),
        }
    }

    pub fn byte(self) -> u8 {
        match self {
            HeaderFlag::Plain => b' ',
            HeaderFlag::Deleted => b'*',
            HeaderFlag::Received => b'P',
            HeaderFlag::From => b'F',
            HeaderFlag::To => b'T',
            HeaderFlag::Cc => b'C',
            HeaderFlag::Bcc => b'B',
            HeaderFlag::ReplyTo => b'R',
            HeaderFlag::Sender => b'S',
            HeaderFlag::MessageId => b'I',
            HeaderFlag::Other(b) => b,
        }
    }

    /// The flag Exim gives a header of this name (its `header_names` table; `Resent-` counts for
    /// the address headers and Message-ID). `I` goes only to the first live Message-ID.
    pub fn for_name(name: &[u8], have_message_id: bool) -> HeaderFlag {
        let lower = name.to_ascii_lowercase();
        let base = lower.strip_prefix(b"resent-").unwrap_or(&lower);
        let resent = base.len() != lower.len();
        match base {
            b"received" if !resent => HeaderFlag::Received,
            b"reply-to" if !resent => HeaderFlag::ReplyTo,
            b"from" => HeaderFlag::From,
            b"to" => HeaderFlag::To,
            b"cc" => HeaderFlag::Cc,
            b"bcc" => HeaderFlag::Bcc,
            b"sender" => HeaderFlag::Sender,
            b"message-id" if !have_message_id => HeaderFlag::MessageId,
            _ => HeaderFlag::Plain,
        }
    }
}

/// One stored header: flag and full text (`Name: value\n`, with continuation lines).
#[derive(Clone, PartialEq, Eq)]
pub struct HeaderLine {
    flag: HeaderFlag,
    text: Vec<u8>,
}

impl fmt::Debug for HeaderLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}", char::from(self.flag.byte()), String::from_utf8_lossy(&self.text))
    }
}

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':')
}

/// Length at which we fold: RFC 5322's recommended 78 characters per line.
const FOLD_AT: usize = 78;

/// Fold `Name: value` at existing whitespace (a LF is inserted before a SP or HT, which is how
/// RFC 5322 folding preserves the value when unfolded). A word longer than a line stays whole.
fn fold(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 8);
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    let mut line_len = out.len();
    let mut i = 0;
    while i < value.len() {
        // The next word, with the whitespace in front of it.
        let ws_end = value[i..].iter().position(|&b| b != b' ' && b != b'\t').map_or(value.len(), |p| i + p);
        let word_end =
            value[ws_end..].iter().position(|&b| b == b' ' || b == b'\t').map_or(value.len(), |p| ws_end + p);
        let chunk = &value[i..word_end];
        if ws_end > i && line_len + chunk.len() > FOLD_AT && line_len > name.len() + 2 {
            out.push(b'\n');
            line_len = 0;
        }
        out.extend_from_slice(chunk);
        line_len += chunk.len();
        i = word_end;
    }
    out.push(b'\n');
    out
}

impl HeaderLine {
    /// A new header from a name and a value: checked, folded, and flagged by its name.
    pub fn new(name: &[u8], value: &[u8], have_message_id: bool) -> Result<HeaderLine, HeaderError> {
        if !valid_name(name) {
            return Err(HeaderError::BadName(String::from_utf8_lossy(name).into_owned()));
        }
        if value.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(HeaderError::BadValue(String::from_utf8_lossy(name).into_owned()));
        }
        Ok(HeaderLine { flag: HeaderFlag::for_name(name, have_message_id), text: fold(name, value) })
    }

    /// A header from stored text, checked the way the writer needs it: a field name, a colon, a
    /// final LF, continuation lines that start with SP or HT, no CR and no NUL.
    pub fn from_text(flag: HeaderFlag, text: &[u8]) -> Result<HeaderLine, HeaderError> {
        let ok = text.last() == Some(&b'\n')
            && !text.iter().any(|&b| b == b'\r' || b == 0)
            && text.iter().position(|&b| b == b':').is_some_and(|c| valid_name(&text[..c]))
            && text[..text.len() - 1]
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b'\n')
                .all(|(i, _)| matches!(text.get(i + 1), Some(b' ' | b'\t')));
        if !ok {
            return Err(HeaderError::BadText);
        }
        Ok(HeaderLine { flag, text: text.to_vec() })
    }

    /// As read from a spool file, where the reader already checked LF/CR/NUL. The name is not
    /// checked: Exim stores what it parsed, and we keep it.
    pub(crate) fn from_spool(flag: HeaderFlag, text: Vec<u8>) -> HeaderLine {
        HeaderLine { flag, text }
    }

    pub fn flag(&self) -> HeaderFlag {
        self.flag
    }

    pub fn is_deleted(&self) -> bool {
        self.flag == HeaderFlag::Deleted
    }

    /// The full stored text, including continuation lines and the final LF.
    pub fn text(&self) -> &[u8] {
        &self.text
    }

    /// The field name (bytes before the first colon, trailing whitespace trimmed).
    pub fn name(&self) -> &[u8] {
        let colon = self.text.iter().position(|&b| b == b':').unwrap_or(self.text.len());
        self.text[..colon].trim_ascii_end()
    }

    pub fn is_named(&self, name: &[u8]) -> bool {
        self.name().eq_ignore_ascii_case(name)
    }

    /// The value, unfolded (line breaks removed) and trimmed.
    pub fn value(&self) -> Vec<u8> {
        let colon = self.text.iter().position(|&b| b == b':').map_or(self.text.len(), |c| c + 1);
        let raw: Vec<u8> = self.text[colon..].iter().copied().filter(|&b| b != b'\n').collect();
        raw.trim_ascii().to_vec()
    }

    pub(crate) fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{:03}", self.text.len()).as_bytes());
        out.push(self.flag.byte());
        out.push(b' ');
        out.extend_from_slice(&self.text);
    }
}

/// Where to add a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Top,
    Bottom,
    /// Right after the first live Received: header (at the top if there is none), which is where
    /// trace-like headers of the receiving system belong.
    AfterFirstReceived,
}

/// How to remove a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Exim's way: keep the text, flag it `*`; it is not transmitted.
    MarkDeleted,
    /// Drop it from the file.
    Drop,
}

/// The ordered headers of a message, deleted ones included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderSection(pub(crate) Vec<HeaderLine>);

impl HeaderSection {
    pub fn new(lines: Vec<HeaderLine>) -> Self {
        HeaderSection(lines)
    }

    /// Every stored header, deleted ones included.
    pub fn all(&self) -> &[HeaderLine] {
        &self.0
    }

    /// The headers that will be transmitted.
    pub fn live(&self) -> impl Iterator<Item = &HeaderLine> {
        self.0.iter().filter(|h| !h.is_deleted())
    }

    /// Live headers with this name, in order.
    pub fn get<'a>(&'a self, name: &'a [u8]) -> impl Iterator<Item = &'a HeaderLine> + 'a {
        self.live().filter(move |h| h.is_named(name))
    }

    fn has_live_message_id(&self) -> bool {
        self.live().any(|h| h.flag == HeaderFlag::MessageId)
    }

    /// Add a header with a checked, folded value.
    pub fn add(&mut self, name: &[u8], value: &[u8], at: Position) -> Result<(), HeaderError> {
        let line = HeaderLine::new(name, value, self.has_live_message_id())?;
        self.insert(line, at);
        Ok(())
    }

    /// Insert an already built header.
    pub fn insert(&mut self, line: HeaderLine, at: Position) {
        let index = match at {
            Position::Top => 0,
            Position::Bottom => self.0.len(),
            Position::AfterFirstReceived => {
                self.0.iter().position(|h| !h.is_deleted() && h.is_named(b"received")).map_or(0, |i| i + 1)
            }
        };
        self.0.insert(index, line);
    }

    /// Remove every live header with this name; returns how many.
    pub fn remove(&mut self, name: &[u8], how: Removal) -> usize {
        self.remove_where(|h| h.is_named(name), how)
    }

    /// Remove every live header for which `pred` holds; returns how many.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&HeaderLine) -> bool, how: Removal) -> usize {
        let mut n = 0;
        match how {
            Removal::MarkDeleted => {
                for h in self.0.iter_mut().filter(|h| !h.is_deleted()) {
                    if pred(h) {
                        h.flag = HeaderFlag::Deleted;
                        n += 1;
                    }
                }
            }
            Removal::Drop => self.0.retain(|h| {
                let hit = !h.is_deleted() && pred(h);
                n += usize::from(hit);
                !hit
            }),
        }
        n
    }

    /// Replace every live header with this name by one new header, Exim's way: the old ones are
    /// marked `*`, the new one goes where the first was and takes over its flag. With no such
    /// header the new one is added at the bottom.
    pub fn replace(&mut self, name: &[u8], value: &[u8]) -> Result<(), HeaderError> {
        let Some(first) = self.0.iter().position(|h| !h.is_deleted() && h.is_named(name)) else {
            return self.add(name, value, Position::Bottom);
        };
        let flag = self.0[first].flag;
        let mut line = HeaderLine::new(name, value, false)?;
        line.flag = flag;
        self.remove(name, Removal::MarkDeleted);
        self.0.insert(first + 1, line);
        Ok(())
    }

    /// Rename every live header `old` to `new`, keeping its value and position. The flag follows
    /// the new name (renaming `To` to `X-Original-To` loses the `T`).
    pub fn rename(&mut self, old: &[u8], new: &[u8]) -> Result<usize, HeaderError> {
        if !valid_name(new) {
            return Err(HeaderError::BadName(String::from_utf8_lossy(new).into_owned()));
        }
        let mut n = 0;
        for i in 0..self.0.len() {
            let h = &self.0[i];
            if h.is_deleted() || !h.is_named(old) {
                continue;
            }
            // A line read from the spool without a colon has no field name to rename; replacing
            // "the name" would drop its whole text, final LF included.
            let Some(colon) = h.text.iter().position(|&b| b == b':') else { continue };
            let mut text = new.to_vec();
            text.extend_from_slice(&h.text[colon..]);
            let has_id =
                self.0.iter().enumerate().any(|(j, o)| j != i && !o.is_deleted() && o.flag == HeaderFlag::MessageId);
            let flag = HeaderFlag::for_name(new, has_id);
            self.0[i] = HeaderLine { flag, text };
            n += 1;
        }
        Ok(n)
    }

    /// The RFC 5322 header block: live headers in order, as stored (LF line ends).
    pub fn live_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.iter().map(|h| h.text.len()).sum());
        for h in self.live() {
            out.extend_from_slice(&h.text);
        }
        out
    }

    /// Sum of the lengths of the transmitted headers (part of Exim's `S=` size).
    pub fn live_len(&self) -> usize {
        self.live().map(|h| h.text.len()).sum()
    }
}

/// Make untrusted text safe as a header value: control characters (CR, LF and NUL among them)
/// become spaces, runs of white space collapse, and the length is bounded.
pub fn sanitize(value: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(value.len().min(max_bytes));
    let mut last_space = true;
    for c in value.chars() {
        let c = if c.is_control() || c.is_whitespace() { ' ' } else { c };
        if c == ' ' && last_space {
            continue;
        }
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        last_space = c == ' ';
        out.push(c);
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_strips_controls_and_bounds() {
        assert_eq!(sanitize("a\r\nBcc: x\0y", 100), "a Bcc: x y");
        assert_eq!(sanitize("  many   spaces\t", 100), "many spaces");
        assert_eq!(sanitize("ééé", 5), "éé");
    }

    fn section() -> HeaderSection {
        HeaderSection::new(vec![
            HeaderLine::from_text(HeaderFlag::Received, b"Received: from a\n\tby b\n").unwrap(),
            HeaderLine::from_text(HeaderFlag::To, b"To: bob@x\n").unwrap(),
            HeaderLine::from_text(HeaderFlag::MessageId, b"Message-ID: <1@x>\n").unwrap(),
            HeaderLine::from_text(HeaderFlag::Plain, b"Subject: hi\n").unwrap(),
        ])
    }

    #[test]
    fn flags_follow_exims_table() {
        assert_eq!(HeaderFlag::for_name(b"Received", false), HeaderFlag::Received);
        assert_eq!(HeaderFlag::for_name(b"resent-from", false), HeaderFlag::From);
        assert_eq!(HeaderFlag::for_name(b"Resent-Received", false), HeaderFlag::Plain);
        assert_eq!(HeaderFlag::for_name(b"Message-Id", true), HeaderFlag::Plain);
        assert_eq!(HeaderFlag::for_name(b"X-Spam", false), HeaderFlag::Plain);
    }

    #[test]
    fn add_positions() {
        let mut s = section();
        s.add(b"X-Top", b"1", Position::Top).unwrap();
        s.add(b"X-Trace", b"2", Position::AfterFirstReceived).unwrap();
        s.add(b"X-Bottom", b"3", Position::Bottom).unwrap();
        let names: Vec<_> = s.all().iter().map(|h| String::from_utf8_lossy(h.name()).into_owned()).collect();
        assert_eq!(names, ["X-Top", "Received", "X-Trace", "To", "Message-ID", "Subject", "X-Bottom"]);
    }

    #[test]
    fn replace_moves_the_flag_and_keeps_the_old_text() {
        let mut s = section();
        s.replace(b"to", b"carol@x").unwrap();
        assert_eq!(s.all()[1].flag(), HeaderFlag::Deleted);
        assert_eq!(s.all()[2].flag(), HeaderFlag::To);
        assert_eq!(s.all()[2].text(), b"to: carol@x\n");
        assert_eq!(s.get(b"TO").count(), 1);
    }

    #[test]
    fn remove_and_rename() {
        let mut s = section();
        assert_eq!(s.remove(b"subject", Removal::MarkDeleted), 1);
        assert_eq!(s.remove(b"subject", Removal::MarkDeleted), 0);
        assert_eq!(s.all().len(), 4);
        assert_eq!(s.remove(b"received", Removal::Drop), 1);
        assert_eq!(s.all().len(), 3);
        assert_eq!(s.rename(b"to", b"X-Original-To").unwrap(), 1);
        assert_eq!(s.all()[0].text(), b"X-Original-To: bob@x\n");
        assert_eq!(s.all()[0].flag(), HeaderFlag::Plain);
    }

    #[test]
    fn refuses_injection() {
        let mut s = section();
        assert!(s.add(b"X-A", b"ok\r\nBcc: evil@x", Position::Top).is_err());
        assert!(s.add(b"X-A", b"nul\0", Position::Top).is_err());
        assert!(s.add(b"X A", b"v", Position::Top).is_err());
        assert!(s.add(b"X:A", b"v", Position::Top).is_err());
    }

    #[test]
    fn folding_keeps_the_value() {
        let value = "word ".repeat(40);
        let line = HeaderLine::new(b"X-Long", value.trim_end().as_bytes(), false).unwrap();
        let text = line.text();
        assert!(text.split(|&b| b == b'\n').all(|l| l.len() <= 78), "{}", String::from_utf8_lossy(text));
        assert_eq!(line.value(), value.trim_end().as_bytes());
        assert!(text.windows(2).filter(|w| w[0] == b'\n').all(|w| w[1] == b' ' || w[1] == b'\t'));
    }

    #[test]
    fn long_word_is_not_broken() {
        let word = "x".repeat(120);
        let line = HeaderLine::new(b"X-Word", word.as_bytes(), false).unwrap();
        assert_eq!(line.text(), format!("X-Word: {word}\n").as_bytes());
    }
}
