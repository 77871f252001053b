//! DKIM tag lists (RFC 6376 §3.2), the syntax of ARC-Seal, ARC-Message-Signature and key records.
//!
//! Parsed strictly, because a lenient parser is how verifiers come to disagree about a chain:
//! a duplicate tag, a tag name that is not `ALPHA *(ALPHA / DIGIT / "_")`, an upper-case tag name
//! (tag names are case-sensitive and every defined one is lower-case), an empty tag-spec (a stray
//! `;`), a tag without `=` or a value byte outside VALCHAR are all errors. A single `;` after the
//! last tag is allowed, as the grammar says. White space (SP, HT, and the CR/LF of folding) may
//! surround names and values and separate the words of a value.

/// One `name=value` of a tag list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub name: String,
    /// The value with surrounding white space trimmed; inner white space is kept.
    pub value: Vec<u8>,
    /// Offsets in the parsed input of the byte after `=` and of the end of this tag-spec (the `;`
    /// or the end of input): the range a signer empties for `b=` (RFC 6376 §3.7: the value
    /// "including all surrounding whitespace").
    pub after_eq: usize,
    pub spec_end: usize,
}

/// A parsed tag list, in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagList {
    tags: Vec<Tag>,
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn trim_ws(s: &[u8]) -> (usize, &[u8]) {
    let start = s.iter().position(|&b| !is_ws(b)).unwrap_or(s.len());
    let end = s.iter().rposition(|&b| !is_ws(b)).map_or(start, |p| p + 1);
    (start, &s[start..end])
}

impl TagList {
    pub fn parse(input: &[u8]) -> Result<TagList, String> {
        let mut tags: Vec<Tag> = Vec::new();
        let pieces: Vec<&[u8]> = input.split(|&b| b == b';').collect();
        let mut offset = 0;
        for (n, piece) in pieces.iter().enumerate() {
            let spec_end = offset + piece.len();
            let (_, trimmed) = trim_ws(piece);
            if trimmed.is_empty() {
                if n + 1 == pieces.len() && n > 0 {
                    break; // the optional `;` after the last tag
                }
                return Err(if pieces.len() == 1 { "empty tag list".into() } else { "stray `;`".into() });
            }
            let eq = piece
                .iter()
                .position(|&b| b == b'=')
                .ok_or_else(|| format!("tag-spec without `=`: {:?}", String::from_utf8_lossy(trimmed)))?;
            let (_, name) = trim_ws(&piece[..eq]);
            let name = check_name(name)?;
            let (_, value) = trim_ws(&piece[eq + 1..]);
            if let Some(&bad) = value.iter().find(|&&b| !(is_ws(b) || (0x21..=0x7e).contains(&b))) {
                return Err(format!("tag `{name}`: invalid byte 0x{bad:02x} in value"));
            }
            if tags.iter().any(|t| t.name == name) {
                return Err(format!("duplicate tag `{name}`"));
            }
            tags.push(Tag { name, value: value.to_vec(), after_eq: offset + eq + 1, spec_end });
            offset = spec_end + 1;
        }
        Ok(TagList { tags })
    }

    pub fn tags(&self) -> &[Tag] {
        &self.tags
    }

    pub fn tag(&self, name: &str) -> Option<&Tag> {
        self.tags.iter().find(|t| t.name == name)
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.tag(name).map(|t| t.value.as_slice())
    }

    /// A value with every white space byte removed (base64 values may be folded anywhere).
    pub fn get_compact(&self, name: &str) -> Option<Vec<u8>> {
        self.get(name).map(|v| v.iter().copied().filter(|&b| !is_ws(b)).collect())
    }
}

fn check_name(name: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(name).into_owned();
    let valid = name.first().is_some_and(u8::is_ascii_alphabetic)
        && name.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        return Err(format!("invalid tag name {text:?}"));
    }
    if name.iter().any(u8::is_ascii_uppercase) {
        return Err(format!("upper-case tag name {text:?} (tag names are case-sensitive)"));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folded_list_with_trailing_semicolon() {
        let input = b"i=1; a=rsa-sha256;\r\n\td=example.org; s=sel; b=ab cd\r\n ef ;";
        let t = TagList::parse(input).unwrap();
        let names: Vec<&str> = t.tags().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["i", "a", "d", "s", "b"]);
        assert_eq!(t.get("b"), Some(&b"ab cd\r\n ef"[..]));
        assert_eq!(t.get_compact("b"), Some(b"abcdef".to_vec()));
        let b = t.tag("b").unwrap();
        assert_eq!(&input[b.after_eq..b.spec_end], b"ab cd\r\n ef ");
        assert_eq!(t.get("x"), None);
    }

    #[test]
    fn empty_values_are_allowed() {
        let t = TagList::parse(b"b=; bh=").unwrap();
        assert_eq!(t.get("b"), Some(&b""[..]));
        assert_eq!(t.get("bh"), Some(&b""[..]));
    }

    #[test]
    fn strict_errors() {
        let err = |s: &[u8]| TagList::parse(s).unwrap_err();
        assert_eq!(err(b"a=1; a=2"), "duplicate tag `a`");
        assert_eq!(err(b"a=1;; b=2"), "stray `;`");
        assert_eq!(err(b"; a=1"), "stray `;`");
        assert_eq!(err(b""), "empty tag list");
        assert_eq!(err(b"a=1;;"), "stray `;`");
        assert_eq!(err(b"A=1"), "upper-case tag name \"A\" (tag names are case-sensitive)");
        assert_eq!(err(b"1a=1"), "invalid tag name \"1a\"");
        assert_eq!(err(b"a-b=1"), "invalid tag name \"a-b\"");
        assert_eq!(err(b"=1"), "invalid tag name \"\"");
        assert_eq!(err(b"a=1; junk"), "tag-spec without `=`: \"junk\"");
        assert_eq!(err(b"a=\xc3\xa9"), "tag `a`: invalid byte 0xc3 in value");
        assert_eq!(err(b"a=x\0"), "tag `a`: invalid byte 0x00 in value");
    }
}
