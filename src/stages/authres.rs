//! The structured start of Authentication-Results values (RFC 8601 §2.2) and of
//! ARC-Authentication-Results (RFC 8617 §4.1.1), read by their grammar.
//!
//! Which incoming Authentication-Results claim our authserv-id decides what we remove as forged
//! and what we copy into an ARC set, so the authserv-id must be read as every consumer downstream
//! reads it: after any CFWS (RFC 5322 §3.2.2: folding white space and comments, which nest and
//! hold quoted-pairs), as a token or a quoted-string (RFC 2045 `value`). A scanner that stops at
//! the first `)` or does not know quoted strings lets `(a (b) c) ours; arc=pass` or `"ours";
//! arc=pass` through as somebody else's. mail-parser reads these headers as unstructured text,
//! so the few productions needed are written here.

use std::fmt;

/// Why a value does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub &'static str);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The authserv-id an Authentication-Results value claims, and where its results start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The id's semantic value: a token as written, or a quoted-string's content with its
    /// quoted-pairs resolved and its folding removed.
    pub id: Vec<u8>,
    /// Offset in the value of what follows the id and its optional `authres-version`: the `;`
    /// of the first resinfo (or `no-result`), after optional CFWS. `None` when something else
    /// follows: the field is malformed, yet a reader downstream may still take its first word
    /// for the authserv-id, so the id is given all the same.
    pub rest: Option<usize>,
}

impl Claim {
    /// Whether this is `ours`: case-insensitive (a domain name), white space at either end of a
    /// quoted id ignored, and one trailing dot (the root, `mx.example.net.`) ignored on both
    /// sides — all forms a reader downstream may take as the same host.
    pub fn is(&self, ours: &str) -> bool {
        fn norm(s: &[u8]) -> &[u8] {
            let s = s.trim_ascii();
            s.strip_suffix(b".").unwrap_or(s)
        }
        let (a, b) = (norm(&self.id), norm(ours.as_bytes()));
        !a.is_empty() && a.eq_ignore_ascii_case(b)
    }

    /// The resinfo text after the id and version, without the leading `;` and surrounding white
    /// space: what an ARC-Authentication-Results copies from it.
    pub fn results<'a>(&self, value: &'a [u8]) -> &'a [u8] {
        let Some(rest) = self.rest else { return b"" };
        let rest = &value[rest..];
        rest.strip_prefix(b";").unwrap_or(rest).trim_ascii()
    }
}

fn is_wsp(b: u8) -> bool {
    // CR and LF stand for the line breaks of folding: a spool keeps them as LF.
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Skip `[CFWS]` from `at`: white space and comments, which nest and may hold quoted-pairs.
pub fn skip_cfws(v: &[u8], mut at: usize) -> Result<usize, SyntaxError> {
    loop {
        while at < v.len() && is_wsp(v[at]) {
            at += 1;
        }
        if v.get(at) != Some(&b'(') {
            return Ok(at);
        }
        let mut depth = 0usize;
        loop {
            match v.get(at) {
                None => return Err(SyntaxError("unterminated comment")),
                Some(b'\\') => {
                    if at + 1 >= v.len() {
                        return Err(SyntaxError("quoted-pair at the end of the value"));
                    }
                    at += 2;
                    continue;
                }
                Some(b'(') => depth += 1,
                Some(b')') => {
                    depth -= 1;
                    if depth == 0 {
                        at += 1;
                        break;
                    }
                }
                Some(_) => {}
            }
            at += 1;
        }
    }
}

/// RFC 2045 token characters; bytes above 127 are allowed as RFC 6532 (UTF-8 headers) does.
fn is_token_char(b: u8) -> bool {
    b > 0x20 && b != 0x7f && !b"()<>@,;:\\\"/[]?=".contains(&b)
}

/// A quoted-string starting at `at` (on its `"`): its content and the offset after it.
fn quoted_string(v: &[u8], mut at: usize) -> Result<(Vec<u8>, usize), SyntaxError> {
    let mut out = Vec::new();
    at += 1;
    loop {
        match v.get(at) {
            None => return Err(SyntaxError("unterminated quoted-string")),
            Some(b'"') => return Ok((out, at + 1)),
            Some(b'\\') => {
                let &c = v.get(at + 1).ok_or(SyntaxError("quoted-pair at the end of the value"))?;
                out.push(c);
                at += 2;
            }
            // Folding inside a quoted-string: the line break goes, the white space stays.
            Some(b'\r' | b'\n') => at += 1,
            Some(&c) => {
                out.push(c);
                at += 1;
            }
        }
    }
}

/// A `value` (token or quoted-string) at `at`, after optional CFWS.
fn value(v: &[u8], at: usize) -> Result<(Vec<u8>, usize), SyntaxError> {
    let at = skip_cfws(v, at)?;
    match v.get(at) {
        Some(b'"') => quoted_string(v, at),
        Some(&c) if is_token_char(c) => {
            let end = v[at..].iter().position(|&b| !is_token_char(b)).map_or(v.len(), |p| at + p);
            Ok((v[at..end].to_vec(), end))
        }
        _ => Err(SyntaxError("no authserv-id")),
    }
}

/// The authserv-id an Authentication-Results value claims (RFC 8601 §2.2:
/// `[CFWS] authserv-id [CFWS authres-version] ( no-result / 1*resinfo )`). An error means no
/// authserv-id can be read at all.
pub fn claim(v: &[u8]) -> Result<Claim, SyntaxError> {
    let (id, end) = value(v, 0)?;
    let mut rest = skip_cfws(v, end)?;
    // authres-version: digits, only after CFWS (a token would have taken digits glued to the id).
    if rest > end && v.get(rest).is_some_and(u8::is_ascii_digit) {
        let digits = v[rest..].iter().take_while(|b| b.is_ascii_digit()).count();
        rest = skip_cfws(v, rest + digits)?;
    }
    let rest = (rest == v.len() || v[rest] == b';').then_some(rest);
    Ok(Claim { id, rest })
}

/// The instance of an ARC-Authentication-Results value (RFC 8617 §4.1.1:
/// `[CFWS] "i" [CFWS] "=" [CFWS] 1*DIGIT [CFWS] ";"`): its digits and the offset after the `;`.
pub fn aar_instance(v: &[u8]) -> Result<(&[u8], usize), SyntaxError> {
    let at = skip_cfws(v, 0)?;
    if v.get(at) != Some(&b'i') {
        return Err(SyntaxError("no i= at the start"));
    }
    let at = skip_cfws(v, at + 1)?;
    if v.get(at) != Some(&b'=') {
        return Err(SyntaxError("no i= at the start"));
    }
    let start = skip_cfws(v, at + 1)?;
    let end = start + v[start..].iter().take_while(|b| b.is_ascii_digit()).count();
    let semi = skip_cfws(v, end)?;
    if v.get(semi) != Some(&b';') {
        return Err(SyntaxError("no `;` after i="));
    }
    Ok((&v[start..end], semi + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(v: &str) -> Result<String, SyntaxError> {
        claim(v.as_bytes()).map(|c| String::from_utf8(c.id).unwrap())
    }

    #[test]
    fn every_form_of_the_authserv_id() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("mx.example.net; spf=pass", Ok("mx.example.net")),
            ("mx.example.net;spf=pass", Ok("mx.example.net")),
            ("mx.example.net", Ok("mx.example.net")),
            ("  mx.example.net ; none", Ok("mx.example.net")),
            ("\n\tmx.example.net\n\t; none", Ok("mx.example.net")),
            ("(c) mx.example.net; arc=pass", Ok("mx.example.net")),
            ("(outer (inner) comment) mx.example.net; arc=pass", Ok("mx.example.net")),
            ("(a \\) b) mx.example.net; arc=pass", Ok("mx.example.net")),
            ("(a \\( b) mx.example.net; arc=pass", Ok("mx.example.net")),
            ("(one)(two) (three\n\t(four)) mx.example.net; none", Ok("mx.example.net")),
            ("(a;b) mx.example.net; arc=pass", Ok("mx.example.net")),
            ("mx.example.net(c); none", Ok("mx.example.net")),
            ("mx.example.net (c) 1; none", Ok("mx.example.net")),
            ("mx.example.net 1 (c); none", Ok("mx.example.net")),
            ("mx.example.net 1; none", Ok("mx.example.net")),
            ("\"mx.example.net\"; arc=pass", Ok("mx.example.net")),
            ("\"mx.example.net\" 1; arc=pass", Ok("mx.example.net")),
            ("(c) \"mx.exa\\mple.net\"; arc=pass", Ok("mx.example.net")),
            ("\"mx.example;net\"; arc=pass", Ok("mx.example;net")),
            ("\"mx.example.\n\tnet\"; arc=pass", Ok("mx.example.\tnet")),
            ("mx.example.net.; arc=pass", Ok("mx.example.net.")),
            ("MX.Example.NET; arc=pass", Ok("MX.Example.NET")),
            ("mx.exämple.net; arc=pass", Ok("mx.exämple.net")),
            ("(unterminated mx.example.net; arc=pass", Err("unterminated comment")),
            ("\"mx.example.net; arc=pass", Err("unterminated quoted-string")),
            ("; arc=pass", Err("no authserv-id")),
            ("", Err("no authserv-id")),
            ("(only a comment)", Err("no authserv-id")),
        ];
        for (value, want) in cases {
            assert_eq!(id(value), want.map(String::from).map_err(SyntaxError), "{value:?}");
        }
        // Malformed after the id: the id is still read (and may be taken for ours), no results.
        for v in ["mx.example.net garbage; arc=pass", "mx.example.net 1 2; arc=pass", "mx.example.net=1; x"] {
            let c = claim(v.as_bytes()).unwrap();
            assert_eq!(
                (c.id.as_slice(), c.rest, c.results(v.as_bytes())),
                (&b"mx.example.net"[..], None, &b""[..]),
                "{v}"
            );
        }
        assert_eq!(claim(b"mx 1; none").unwrap().rest, Some(4));
        assert_eq!(claim(b"mx").unwrap().rest, Some(2));
    }

    #[test]
    fn ours_ignores_case_a_root_dot_and_padding_in_quotes() {
        let c = |v: &str| claim(v.as_bytes()).unwrap();
        for v in
            ["mx.example.net;", "MX.EXAMPLE.NET;", "mx.example.net.;", "\" mx.example.net \";", "\"mx.example.net.\";"]
        {
            assert!(c(v).is("mx.example.net"), "{v}");
            assert!(c(v).is("mx.example.net."), "{v}");
        }
        for v in ["mx.example.org;", "mx.example.net.evil;", "x.mx.example.net;", "\"mx.example .net\";", "\".\";"] {
            assert!(!c(v).is("mx.example.net"), "{v}");
        }
    }

    #[test]
    fn results_follow_the_id_and_version() {
        let v = b"(x;y) \"mx.example.net\" 1 ; arc=pass; spf=none ";
        assert_eq!(claim(v).unwrap().results(v), b"arc=pass; spf=none");
        let v = b"mx.example.net";
        assert_eq!(claim(v).unwrap().results(v), b"");
    }

    #[test]
    fn aar_instance_allows_cfws() {
        let ok = |v: &str, i: &str| assert_eq!(aar_instance(v.as_bytes()).map(|(d, _)| d), Ok(i.as_bytes()), "{v}");
        ok("i=1; mx.example.net; none", "1");
        ok(" i = 12 ; mx", "12");
        ok("(c) i\n\t=(d)3(e);", "3");
        ok("i=; x", "");
        assert_eq!(aar_instance(b"j=1; x"), Err(SyntaxError("no i= at the start")));
        assert_eq!(aar_instance(b"i 1; x"), Err(SyntaxError("no i= at the start")));
        assert_eq!(aar_instance(b"i=1 x;"), Err(SyntaxError("no `;` after i=")));
        assert_eq!(aar_instance(b"i=1"), Err(SyntaxError("no `;` after i=")));
    }
}
