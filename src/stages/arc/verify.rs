//! ARC chain validation, RFC 8617 §5.2, strictly: every error is a `fail` (§5.2.1), including DNS
//! trouble (the stage can be told to defer on that instead; see [`ArcResult::dns_trouble`]).
//!
//! Order: collect the sets (none → `none`); newest `cv=fail` → fail; structure (one AAR, AMS and
//! AS per instance 1..N, `cv` right for its position, every tag valid); AMS(N) against the body
//! and its key; the older AMSs for oldest-pass (informational); AS(N)..AS(1); pass.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};

use base64::Engine;

use super::canon::{self, BodyHasher, Canon};
use super::keys::{Algorithm, PublicKey};
use super::tags::TagList;
use crate::dns::{DnsError, TxtLookup};
use crate::stages::authres;

/// RFC 8617 §4.2.1: instances run from 1 to 50.
pub const MAX_INSTANCE: u32 = 50;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArcStatus {
    None,
    Pass,
    Fail,
}

impl ArcStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ArcStatus::None => "none",
            ArcStatus::Pass => "pass",
            ArcStatus::Fail => "fail",
        }
    }
}

/// The outcome of validating a message's chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ArcResult {
    pub result: ArcStatus,
    /// Why it failed (`i=2 AMS body hash mismatch`); empty for pass and none.
    pub reason: String,
    /// The highest instance found (N).
    pub instances: u32,
    /// RFC 8617 §5.2 step 5: 0 when every AMS verifies, else M+1 for the newest failing AMS(M).
    /// Only computed for a passing chain.
    pub oldest_pass: u32,
    /// The ARC-Seal `d=` of each instance, in instance order.
    pub domains: Vec<String>,
    /// Whether the failure came from a key lookup that may give another answer later.
    #[serde(skip)]
    pub dns_trouble: DnsTrouble,
}

/// What kind of key lookup trouble failed a chain, if any.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DnsTrouble {
    /// None: the verdict is about the chain itself.
    #[default]
    None,
    /// A temporary DNS error: asking later might give another answer.
    Temporary,
    /// A replay had no recorded answer for a key: the result says nothing about the chain.
    Unrecorded,
}

/// The three kinds of ARC header field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Aar,
    Ams,
    Seal,
}

impl Kind {
    pub fn of(text: &[u8]) -> Option<Kind> {
        let colon = text.iter().position(|&b| b == b':')?;
        let name = text[..colon].trim_ascii_end();
        [("arc-authentication-results", Kind::Aar), ("arc-message-signature", Kind::Ams), ("arc-seal", Kind::Seal)]
            .into_iter()
            .find(|(n, _)| name.eq_ignore_ascii_case(n.as_bytes()))
            .map(|(_, k)| k)
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Aar => "ARC-Authentication-Results",
            Kind::Ams => "ARC-Message-Signature",
            Kind::Seal => "ARC-Seal",
        }
    }
}

/// Where a field's value starts (after the colon).
pub fn value_start(text: &[u8]) -> usize {
    text.iter().position(|&b| b == b':').map_or(text.len(), |c| c + 1)
}

fn parse_instance(v: &[u8]) -> Result<u32, String> {
    let shown = String::from_utf8_lossy(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) || v.len() > 3 {
        return Err(format!("invalid instance i={shown}"));
    }
    match shown.parse::<u32>() {
        Ok(i @ 1..=MAX_INSTANCE) => Ok(i),
        Ok(0) => Err("invalid instance i=0".into()),
        _ => Err(format!("instance i={shown} above {MAX_INSTANCE}")),
    }
}

/// One ARC field, parsed as far as its kind allows (an AAR only has its `i=` prefix).
#[derive(Debug, Clone)]
pub struct Field<'a> {
    pub kind: Kind,
    pub instance: u32,
    pub text: &'a [u8],
    pub tags: Option<TagList>,
}

pub fn parse_field(kind: Kind, text: &[u8]) -> Result<Field<'_>, String> {
    let value = &text[value_start(text)..];
    if kind == Kind::Aar {
        // `i=N;` then Authentication-Results content (RFC 8617 §4.1.1), not a tag list; CFWS
        // may surround each part of `i=N`.
        let (digits, _) = authres::aar_instance(value).map_err(|e| format!("{}: {e}", kind.name()))?;
        let instance = parse_instance(digits).map_err(|e| format!("{}: {e}", kind.name()))?;
        return Ok(Field { kind, instance, text, tags: None });
    }
    let tags = TagList::parse(value).map_err(|e| format!("{}: {e}", kind.name()))?;
    let i = tags.get("i").ok_or_else(|| format!("{}: i= missing", kind.name()))?;
    let instance = parse_instance(i).map_err(|e| format!("{}: {e}", kind.name()))?;
    Ok(Field { kind, instance, text, tags: Some(tags) })
}

/// Every ARC field of a header block, by instance. Errors name the field and the reason.
pub fn collect<'a>(headers: &[&'a [u8]]) -> Result<BTreeMap<u32, Vec<Field<'a>>>, String> {
    let mut out: BTreeMap<u32, Vec<Field<'a>>> = BTreeMap::new();
    for text in headers {
        if let Some(kind) = Kind::of(text) {
            let f = parse_field(kind, text)?;
            out.entry(f.instance).or_default().push(f);
        }
    }
    Ok(out)
}

/// The highest `i=` of any ARC field that can be read, for a sealer facing a broken chain.
pub fn highest_instance(headers: &[&[u8]]) -> u32 {
    headers
        .iter()
        .filter_map(|t| Kind::of(t).and_then(|k| parse_field(k, t).ok()))
        .map(|f| f.instance)
        .max()
        .unwrap_or(0)
}

/// A signature's parsed tags (AMS or AS).
#[derive(Debug, Clone)]
struct Sig<'a> {
    text: &'a [u8],
    alg: Algorithm,
    d: String,
    s: String,
    b: Vec<u8>,
    /// Where the `b=` value is in `text`, emptied when hashing.
    b_range: (usize, usize),
    header_canon: Canon,
    body_canon: Canon,
    bh: Vec<u8>,
    h: Vec<Vec<u8>>,
    l: Option<u64>,
    cv: Option<ArcStatus>,
}

pub(crate) fn b64(tags: &TagList, name: &str) -> Result<Vec<u8>, String> {
    let v = tags.get_compact(name).ok_or_else(|| format!("{name}= missing"))?;
    if v.is_empty() {
        return Err(format!("{name}= empty"));
    }
    base64::engine::general_purpose::STANDARD.decode(&v).map_err(|_| format!("{name}= is not base64"))
}

pub(crate) fn name_tag(tags: &TagList, name: &str) -> Result<String, String> {
    let v = tags.get(name).ok_or_else(|| format!("{name}= missing"))?;
    let ok = !v.is_empty() && v.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !ok {
        return Err(format!("{name}= invalid"));
    }
    Ok(String::from_utf8_lossy(v).to_ascii_lowercase())
}

pub(crate) fn number(tags: &TagList, name: &str) -> Result<Option<u64>, String> {
    match tags.get(name) {
        None => Ok(None),
        Some(v) if !v.is_empty() && v.len() <= 12 && v.iter().all(u8::is_ascii_digit) => {
            Ok(Some(String::from_utf8_lossy(v).parse().expect("digits")))
        }
        Some(_) => Err(format!("{name}= is not a number")),
    }
}

fn parse_sig<'a>(f: &Field<'a>, now: u64) -> Result<Sig<'a>, String> {
    let tags = f.tags.as_ref().expect("AMS and AS have tags");
    let alg = Algorithm::parse(tags.get("a"))?;
    let d = name_tag(tags, "d")?;
    let s = name_tag(tags, "s")?;
    let b = b64(tags, "b")?;
    let tag = tags.tag("b").expect("b= checked");
    let start = value_start(f.text);
    let b_range = (start + tag.after_eq, start + tag.spec_end);
    let t = number(tags, "t")?;
    let mut sig = Sig {
        text: f.text,
        alg,
        d,
        s,
        b,
        b_range,
        header_canon: Canon::Relaxed,
        body_canon: Canon::Relaxed,
        bh: Vec::new(),
        h: Vec::new(),
        l: None,
        cv: None,
    };
    if f.kind == Kind::Seal {
        if tags.get("h").is_some() {
            return Err("h= is not allowed in an ARC-Seal".into());
        }
        sig.cv = Some(match tags.get("cv") {
            Some(b"none") => ArcStatus::None,
            Some(b"pass") => ArcStatus::Pass,
            Some(b"fail") => ArcStatus::Fail,
            None => return Err("cv= missing".into()),
            Some(v) => return Err(format!("invalid cv={}", String::from_utf8_lossy(v))),
        });
        return Ok(sig);
    }
    (sig.header_canon, sig.body_canon) = canon::parse_c(tags.get("c"))?;
    sig.bh = b64(tags, "bh")?;
    sig.l = number(tags, "l")?;
    let h = tags.get("h").ok_or("h= missing")?;
    sig.h = h.split(|&b| b == b':').map(|n| n.trim_ascii().to_ascii_lowercase()).collect();
    // RFC 8617 §4.1.2 forbids only ARC-Seal here. Signers routinely list their own instance's
    // ARC-Authentication-Results and earlier ARC-Message-Signature fields; those are selected
    // bottom-up like any other field and verified normally.
    if sig.h.iter().any(|n| n == b"arc-seal") {
        return Err("h= lists arc-seal".into());
    }
    if !sig.h.iter().any(|n| n == b"from") {
        return Err("h= does not list From".into());
    }
    if let Some(x) = number(tags, "x")? {
        if x < now {
            return Err(format!("expired (x={x})"));
        }
        if t.is_some_and(|t| x < t) {
            return Err("x= is before t=".into());
        }
    }
    Ok(sig)
}

impl Sig<'_> {
    /// The signature field itself, canonicalized with `b=` emptied and no final CRLF.
    fn own_canon(&self, out: &mut Vec<u8>) {
        let mut text = self.text[..self.b_range.0].to_vec();
        text.extend_from_slice(&self.text[self.b_range.1..]);
        canon::header(self.header_canon, &text, out);
        out.truncate(out.len() - 2);
    }
}

/// Append the fields `names` select, canonicalized: each name takes the lowest field of that name
/// not yet used (RFC 6376 §5.4.2); a name with none left adds nothing.
pub fn signed_headers(names: &[Vec<u8>], canon: Canon, headers: &[&[u8]], out: &mut Vec<u8>) {
    let mut used = vec![false; headers.len()];
    for name in names {
        let pick = (0..headers.len()).rev().find(|&i| {
            !used[i] && {
                let t = headers[i];
                t[..value_start(t).saturating_sub(1)].trim_ascii_end().eq_ignore_ascii_case(name)
            }
        });
        if let Some(i) = pick {
            used[i] = true;
            canon::header(canon, headers[i], out);
        }
    }
}

/// The data an AMS signs: its `h=` fields, then the AMS itself.
fn ams_data(sig: &Sig<'_>, headers: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    signed_headers(&sig.h, sig.header_canon, headers, &mut out);
    sig.own_canon(&mut out);
    out
}

/// The data AS(i) signs: AAR, AMS, AS of each instance from 1 (or `first`) to i, relaxed, with
/// AS(i)'s `b=` emptied and no final CRLF.
pub fn seal_data(sets: &[(&[u8], &[u8], &[u8])], seal_b_range: (usize, usize)) -> Vec<u8> {
    let mut out = Vec::new();
    for (n, (aar, ams, seal)) in sets.iter().enumerate() {
        canon::header(Canon::Relaxed, aar, &mut out);
        canon::header(Canon::Relaxed, ams, &mut out);
        if n + 1 < sets.len() {
            canon::header(Canon::Relaxed, seal, &mut out);
        } else {
            let mut text = seal[..seal_b_range.0].to_vec();
            text.extend_from_slice(&seal[seal_b_range.1..]);
            canon::header(Canon::Relaxed, &text, &mut out);
            out.truncate(out.len() - 2);
        }
    }
    out
}

struct Verifier<'h> {
    headers: &'h [&'h [u8]],
    dns: &'h dyn TxtLookup,
    keys: HashMap<String, Result<PublicKey, (String, DnsTrouble)>>,
}

impl Verifier<'_> {
    fn key(&mut self, d: &str, s: &str) -> Result<PublicKey, (String, DnsTrouble)> {
        let name = format!("{s}._domainkey.{d}");
        let dns = self.dns;
        self.keys
            .entry(name.clone())
            .or_insert_with(|| {
                let lookup = |e: &str, temp| (format!("key lookup {name}: {e}"), temp);
                match dns.txt(&name) {
                    Ok(records) if records.is_empty() => Err(lookup("no TXT record", DnsTrouble::None)),
                    Ok(records) => {
                        let parsed: Vec<_> = records.iter().map(|r| PublicKey::from_record(r)).collect();
                        let first_err = parsed.iter().find_map(|p| p.clone().err()).unwrap_or_default();
                        parsed.into_iter().find_map(Result::ok).ok_or_else(|| lookup(&first_err, DnsTrouble::None))
                    }
                    Err(DnsError::Temporary(_)) => Err(lookup("temporary DNS failure", DnsTrouble::Temporary)),
                    Err(DnsError::Unrecorded(_)) => Err(lookup("no recorded answer", DnsTrouble::Unrecorded)),
                    Err(e) => Err(lookup(&e.to_string(), DnsTrouble::None)),
                }
            })
            .clone()
    }

    /// Check an AMS: body hash, then signature. Err(reason, temporary).
    fn check_ams(
        &mut self,
        sig: &Sig<'_>,
        body_hashes: &HashMap<(Canon, Option<u64>), Vec<u8>>,
    ) -> Result<(), (String, DnsTrouble)> {
        if body_hashes.get(&(sig.body_canon, sig.l)) != Some(&sig.bh) {
            return Err(("AMS body hash mismatch".into(), DnsTrouble::None));
        }
        let key = self.key(&sig.d, &sig.s).map_err(|(e, t)| (format!("AMS {e}"), t))?;
        let data = ams_data(sig, self.headers);
        key.verify(sig.alg, &data, &sig.b).map_err(|e| (format!("AMS {e}"), DnsTrouble::None))
    }

    fn check_seal(&mut self, seal: &Sig<'_>, data: &[u8]) -> Result<(), (String, DnsTrouble)> {
        let key = self.key(&seal.d, &seal.s).map_err(|(e, t)| (format!("ARC-Seal {e}"), t))?;
        key.verify(seal.alg, data, &seal.b).map_err(|e| (format!("ARC-Seal {e}"), DnsTrouble::None))
    }
}

fn fail(reason: String, instances: u32, domains: Vec<String>, dns_trouble: DnsTrouble) -> ArcResult {
    ArcResult { result: ArcStatus::Fail, reason, instances, oldest_pass: 0, domains, dns_trouble }
}

/// Validate the chain of a message: its header fields in order (each as stored, LF or CRLF) and
/// its body with CRLF line ends, read once and only when the chain's structure is sound.
pub fn verify(headers: &[&[u8]], body: &mut dyn Read, dns: &dyn TxtLookup, now: u64) -> io::Result<ArcResult> {
    let by_instance = match collect(headers) {
        Ok(m) => m,
        Err(reason) => return Ok(fail(reason, highest_instance(headers), Vec::new(), DnsTrouble::None)),
    };
    let Some(&n) = by_instance.keys().next_back() else {
        return Ok(ArcResult {
            result: ArcStatus::None,
            reason: String::new(),
            instances: 0,
            oldest_pass: 0,
            domains: Vec::new(),
            dns_trouble: DnsTrouble::None,
        });
    };
    let domain_of =
        |f: &Field<'_>| f.tags.as_ref().and_then(|t| t.get("d")).map(|d| String::from_utf8_lossy(d).into_owned());
    let domains: Vec<String> = by_instance
        .values()
        .flat_map(|fs| fs.iter().filter(|f| f.kind == Kind::Seal).take(1).filter_map(domain_of))
        .collect();
    let newest_fail = by_instance[&n]
        .iter()
        .any(|f| f.kind == Kind::Seal && f.tags.as_ref().and_then(|t| t.get("cv")) == Some(b"fail"));
    if newest_fail {
        return Ok(fail(format!("i={n} ARC-Seal cv=fail"), n, domains, DnsTrouble::None));
    }

    // Structure: instances 1..N, each exactly one AAR, AMS and AS, every tag valid.
    let mut sets: Vec<(&[u8], Sig<'_>, Sig<'_>)> = Vec::new();
    for i in 1..=n {
        let fields = by_instance.get(&i).map(Vec::as_slice).unwrap_or_default();
        let one = |kind: Kind| -> Result<&Field<'_>, String> {
            let mut it = fields.iter().filter(|f| f.kind == kind);
            match (it.next(), it.next()) {
                (Some(f), None) => Ok(f),
                (None, _) => Err(format!("i={i} missing {}", kind.name())),
                (Some(_), Some(_)) => Err(format!("i={i} duplicate {}", kind.name())),
            }
        };
        let checked = (|| {
            let aar = one(Kind::Aar)?;
            let ams = one(Kind::Ams)?;
            let seal = one(Kind::Seal)?;
            let ams = parse_sig(ams, now).map_err(|e| format!("i={i} AMS {e}"))?;
            let seal = parse_sig(seal, now).map_err(|e| format!("i={i} ARC-Seal {e}"))?;
            let expected = if i == 1 { ArcStatus::None } else { ArcStatus::Pass };
            if seal.cv != Some(expected) {
                let cv = seal.cv.map_or("?", ArcStatus::as_str);
                return Err(format!("i={i} ARC-Seal cv={cv}, expected {}", expected.as_str()));
            }
            Ok((aar.text, ams, seal))
        })();
        match checked {
            Ok(set) => sets.push(set),
            Err(reason) => return Ok(fail(reason, n, domains, DnsTrouble::None)),
        }
    }

    // Every body hash any AMS needs, in one pass over the body.
    let mut hashers: Vec<((Canon, Option<u64>), BodyHasher)> = Vec::new();
    for (_, ams, _) in &sets {
        let key = (ams.body_canon, ams.l);
        if !hashers.iter().any(|(k, _)| *k == key) {
            hashers.push((key, BodyHasher::new(key.0, key.1)));
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let got = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(got) => got,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for (_, h) in &mut hashers {
            h.update(&buf[..got]);
        }
    }
    let mut body_hashes = HashMap::new();
    for ((key, h), _) in hashers.into_iter().zip(0..) {
        let (digest, len) = h.finish();
        if key.1.is_some_and(|l| len < l) {
            // l= longer than the body: the signature cannot be for this body.
            continue;
        }
        body_hashes.insert(key, digest);
    }

    let mut v = Verifier { headers, dns, keys: HashMap::new() };
    if let Err((e, temp)) = v.check_ams(&sets[n as usize - 1].1, &body_hashes) {
        return Ok(fail(format!("i={n} {e}"), n, domains, temp));
    }
    let mut oldest_pass = 0;
    for i in (1..n).rev() {
        if v.check_ams(&sets[i as usize - 1].1, &body_hashes).is_err() {
            oldest_pass = i + 1;
            break;
        }
    }
    for i in (1..=n).rev() {
        let scope: Vec<(&[u8], &[u8], &[u8])> =
            sets[..i as usize].iter().map(|(aar, ams, seal)| (*aar, ams.text, seal.text)).collect();
        let seal = &sets[i as usize - 1].2;
        let data = seal_data(&scope, seal.b_range);
        if let Err((e, temp)) = v.check_seal(seal, &data) {
            return Ok(fail(format!("i={i} {e}"), n, domains, temp));
        }
    }
    Ok(ArcResult {
        result: ArcStatus::Pass,
        reason: String::new(),
        instances: n,
        oldest_pass,
        domains,
        dns_trouble: DnsTrouble::None,
    })
}

/// Split a raw RFC 5322 message (LF or CRLF) into its header fields, each with its continuation
/// lines and line end, and its body (after the empty line; empty if there is none).
pub fn split_message(raw: &[u8]) -> (Vec<&[u8]>, &[u8]) {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    let mut body = &raw[raw.len()..];
    while pos < raw.len() {
        let end = raw[pos..].iter().position(|&b| b == b'\n').map_or(raw.len(), |p| pos + p + 1);
        let line = &raw[pos..end];
        if line == b"\n" || line == b"\r\n" {
            body = &raw[end..];
            break;
        }
        match (line.first(), ranges.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.1 = end,
            _ => ranges.push((pos, end)),
        }
        pos = end;
    }
    (ranges.into_iter().map(|(a, b)| &raw[a..b]).collect(), body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_raw_messages() {
        let (h, b) = split_message(b"A: 1\r\n\tcont\r\nB: 2\r\n\r\nbody\r\n");
        assert_eq!(h, [&b"A: 1\r\n\tcont\r\n"[..], b"B: 2\r\n"]);
        assert_eq!(b, b"body\r\n");
        let (h, b) = split_message(b"A: 1\nB: 2\n");
        assert_eq!((h.len(), b), (2, &b""[..]));
    }

    #[test]
    fn instances() {
        assert_eq!(parse_instance(b"1"), Ok(1));
        assert_eq!(parse_instance(b"50"), Ok(50));
        assert_eq!(parse_instance(b"51").unwrap_err(), "instance i=51 above 50");
        assert_eq!(parse_instance(b"0").unwrap_err(), "invalid instance i=0");
        assert_eq!(parse_instance(b"").unwrap_err(), "invalid instance i=");
        assert_eq!(parse_instance(b"x1").unwrap_err(), "invalid instance i=x1");
        assert_eq!(parse_instance(b"9999").unwrap_err(), "invalid instance i=9999");
    }
}
