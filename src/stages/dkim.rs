//! The `dkim` stage: every `DKIM-Signature` of the message as received (RFC 6376 §6), checked
//! with the ARC stage's machinery (its tag lists, canonicalization, key records and signature
//! checks, `src/stages/arc/`), which is where DKIM and ARC are the same algorithm.
//!
//! Each signature gets one of RFC 8601's results, `pass`, `fail` (the body hash or the signature
//! does not verify), `neutral` (not checked: past [`DkimConfig::max_signatures`]), `temperror`
//! (its key could not be looked up now) or `permerror` (it cannot ever verify: bad tags, no key,
//! a revoked key, `rsa-sha1`, an `l=` longer than the body, expired), reported with
//! `header.d`, `header.s` and `header.b` (RFC 6008) in our Authentication-Results.
//!
//! The verdict is about the author's domain, the one a reader sees: `AuthPass` when a signature
//! of the From domain (or of a parent of it: relaxed alignment) passes; `AuthFail` when the From
//! domain signed and none of its signatures passes, or when `require_from_domain` is set and
//! no passing signature is the From domain's; otherwise `Neutral` (unsigned, or signed only by
//! others, such as a mailing service); signatures whose key says the domain is testing DKIM
//! (`t=y`) do not count. A key lookup that fails for now makes the stage a
//! temporary failure only where it decides the verdict, and only with `on_dns_failure = "defer"`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::arc::canon::{self, BodyHasher, Canon};
use super::arc::keys::{Algorithm, PublicKey};
use super::arc::tags::TagList;
use super::arc::verify::{signed_headers, value_start};
use super::arc::{header_texts, ArcConfig, OnDnsFailure};
use super::{Stage, StageError, StageResult, Verdict};
use crate::dns::{DnsError, TxtLookup};
use crate::outside::Clock;
use crate::spool::MessageView;

/// `[stages.dkim]`: where keys are looked up (as `[stages.arc]`), and the verdict's rule.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkimConfig {
    /// A JSON records file (name → TXT value) instead of DNS: for tests and offline scans.
    pub txt_records: Option<std::path::PathBuf>,
    pub nameservers: Vec<String>,
    pub dns_timeout_ms: u64,
    pub dns_attempts: usize,
    pub on_dns_failure: OnDnsFailure,
    /// A message without a passing signature of its From domain is `AuthFail`, not `Neutral`.
    pub require_from_domain: bool,
    /// Signatures checked per message; the rest are `neutral` (each costs a key lookup and a
    /// pass over the body for its own canonicalization and length).
    pub max_signatures: usize,
}

impl Default for DkimConfig {
    fn default() -> Self {
        DkimConfig {
            txt_records: None,
            nameservers: Vec::new(),
            dns_timeout_ms: 5000,
            dns_attempts: 2,
            on_dns_failure: OnDnsFailure::Fail,
            require_from_domain: false,
            max_signatures: 8,
        }
    }
}

impl DkimConfig {
    /// Its DNS settings as the ARC stage's, which the pipeline knows how to build a resolver for.
    pub fn dns(&self) -> ArcConfig {
        ArcConfig {
            txt_records: self.txt_records.clone(),
            nameservers: self.nameservers.clone(),
            dns_timeout_ms: self.dns_timeout_ms,
            dns_attempts: self.dns_attempts,
            on_dns_failure: self.on_dns_failure,
            seal: None,
        }
    }
}

/// RFC 8601's DKIM results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DkimStatus {
    Pass,
    Fail,
    Neutral,
    TempError,
    PermError,
}

impl DkimStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DkimStatus::Pass => "pass",
            DkimStatus::Fail => "fail",
            DkimStatus::Neutral => "neutral",
            DkimStatus::TempError => "temperror",
            DkimStatus::PermError => "permerror",
        }
    }
}

/// One signature's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimResult {
    pub status: DkimStatus,
    /// Why, when it did not pass.
    pub reason: String,
    /// `d=`, `s=` and the first 8 characters of `b=`, where the signature had them.
    pub domain: String,
    pub selector: String,
    pub b_prefix: String,
    /// Its key says the domain is testing DKIM (`t=y`): RFC 6376 §3.6.1 says to treat the
    /// message as unsigned whatever the result, so it does not count for the verdict.
    pub testing: bool,
}

impl DkimResult {
    /// The `dkim=` clause for Authentication-Results.
    pub fn clause(&self) -> String {
        let mut c = format!("dkim={}", self.status.as_str());
        if !self.reason.is_empty() {
            c.push_str(&format!(" {}", super::arc::comment(&self.reason)));
        }
        for (k, v) in [("header.d", &self.domain), ("header.s", &self.selector), ("header.b", &self.b_prefix)] {
            if !v.is_empty() {
                c.push_str(&format!(" {k}={v}"));
            }
        }
        c
    }
}

/// A signature's tags, checked (RFC 6376 §3.5 and §6.1.1).
struct Signature<'a> {
    text: &'a [u8],
    alg: Algorithm,
    d: String,
    s: String,
    b: Vec<u8>,
    b_range: (usize, usize),
    header_canon: Canon,
    body_canon: Canon,
    bh: Vec<u8>,
    h: Vec<Vec<u8>>,
    l: Option<u64>,
    /// The domain of `i=`, lowercase; `d=` when there is no `i=`.
    i_domain: String,
}

fn tag_str(tags: &TagList, name: &str) -> Option<String> {
    tags.get(name).map(|v| String::from_utf8_lossy(v).into_owned())
}

/// What can be read of a signature even when it is not valid: `d=`, `s=`, `b=`'s start.
fn labels(text: &[u8]) -> (String, String, String) {
    let Ok(tags) = TagList::parse(&text[value_start(text)..]) else { return Default::default() };
    let clean = |v: Option<String>| -> String {
        v.map(|v| v.chars().filter(|c| c.is_ascii_graphic() && !matches!(c, ';' | '(' | ')' | '"')).take(253).collect())
            .unwrap_or_default()
    };
    let b: String =
        tags.get_compact("b").map(|b| String::from_utf8_lossy(&b).chars().take(8).collect()).unwrap_or_default();
    (clean(tag_str(&tags, "d")).to_ascii_lowercase(), clean(tag_str(&tags, "s")), clean(Some(b)))
}

fn parse(text: &[u8], now: u64) -> Result<Signature<'_>, String> {
    use super::arc::verify::{b64, name_tag, number};
    let start = value_start(text);
    let tags = TagList::parse(&text[start..])?;
    if tags.get("v") != Some(b"1") {
        return Err("v= is not 1".into());
    }
    let alg = match tags.get("a") {
        Some(b"rsa-sha1") => return Err("rsa-sha1 is not accepted (RFC 8301)".into()),
        a => Algorithm::parse(a)?,
    };
    let d = name_tag(&tags, "d")?;
    let s = name_tag(&tags, "s")?;
    let b = b64(&tags, "b")?;
    let tag = tags.tag("b").ok_or("b= missing")?;
    let b_range = (start + tag.after_eq, start + tag.spec_end);
    let (header_canon, body_canon) = canon::parse_c(tags.get("c"))?;
    let bh = b64(&tags, "bh")?;
    let h: Vec<Vec<u8>> =
        tags.get("h").ok_or("h= missing")?.split(|&c| c == b':').map(|n| n.trim_ascii().to_ascii_lowercase()).collect();
    if !h.iter().any(|n| n == b"from") {
        return Err("h= does not list From".into());
    }
    let mut i_domain = d.clone();
    if let Some(i) = tags.get("i") {
        let domain = i.rsplit(|&c| c == b'@').next().unwrap_or_default().to_ascii_lowercase();
        let inside = domain == d.as_bytes() || domain.ends_with(format!(".{d}").as_bytes());
        if !i.contains(&b'@') || !inside {
            return Err("i= is not in the d= domain".into());
        }
        i_domain = String::from_utf8_lossy(&domain).into_owned();
    }
    if tags.get("q").is_some_and(|q| !q.split(|&c| c == b':').any(|m| m.trim_ascii() == b"dns/txt")) {
        return Err("q= has no dns/txt".into());
    }
    let t = number(&tags, "t")?;
    if let Some(x) = number(&tags, "x")? {
        if x < now {
            return Err(format!("expired (x={x})"));
        }
        if t.is_some_and(|t| x < t) {
            return Err("x= is before t=".into());
        }
    }
    Ok(Signature { text, alg, d, s, b, b_range, header_canon, body_canon, bh, h, l: number(&tags, "l")?, i_domain })
}

/// Check every `DKIM-Signature` of a message (its header fields as stored, its body as a CRLF
/// stream, read once).
pub fn verify_all(
    headers: &[&[u8]],
    body: &mut dyn std::io::Read,
    dns: &dyn TxtLookup,
    now: u64,
    max: usize,
) -> std::io::Result<Vec<DkimResult>> {
    let fields: Vec<&[u8]> = headers
        .iter()
        .copied()
        .filter(|t| t[..value_start(t).saturating_sub(1)].trim_ascii_end().eq_ignore_ascii_case(b"dkim-signature"))
        .collect();
    let parsed: Vec<Result<Signature<'_>, String>> = fields.iter().take(max).map(|t| parse(t, now)).collect();
    // One pass over the body for every (canonicalization, length) the signatures ask for.
    let mut hashers: Vec<((Canon, Option<u64>), BodyHasher)> = Vec::new();
    for sig in parsed.iter().flatten() {
        let key = (sig.body_canon, sig.l);
        if !hashers.iter().any(|(k, _)| *k == key) {
            hashers.push((key, BodyHasher::new(sig.body_canon, sig.l)));
        }
    }
    if !hashers.is_empty() {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = body.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            hashers.iter_mut().for_each(|(_, h)| h.update(&chunk[..n]));
        }
    }
    let hashes: HashMap<(Canon, Option<u64>), (Vec<u8>, u64)> =
        hashers.into_iter().map(|(k, h)| (k, h.finish())).collect();
    let mut keys: HashMap<String, KeyAnswer> = HashMap::new();
    let mut out = Vec::with_capacity(fields.len());
    for (i, text) in fields.iter().enumerate() {
        let (domain, selector, b_prefix) = labels(text);
        let result = |status, reason: String| DkimResult {
            status,
            reason,
            domain: domain.clone(),
            selector: selector.clone(),
            b_prefix: b_prefix.clone(),
            testing: false,
        };
        let Some(sig) = parsed.get(i) else {
            out.push(result(DkimStatus::Neutral, format!("not checked: more than {max} signatures")));
            continue;
        };
        let sig = match sig {
            Ok(s) => s,
            Err(e) => {
                out.push(result(DkimStatus::PermError, e.clone()));
                continue;
            }
        };
        let (bh, len) = &hashes[&(sig.body_canon, sig.l)];
        if sig.l.is_some_and(|l| l > *len) {
            out.push(result(DkimStatus::PermError, "l= is longer than the body".into()));
            continue;
        }
        let name = format!("{}._domainkey.{}", sig.s, sig.d);
        let key = keys.entry(name.clone()).or_insert_with(|| lookup(dns, &name)).clone();
        let (key, flags) = match key {
            Ok(k) => k,
            Err((status, why)) => {
                out.push(result(status, why));
                continue;
            }
        };
        // `t=s`: the key signs for d= itself, not for its subdomains in i=.
        if flags.strict && sig.i_domain != sig.d {
            out.push(result(DkimStatus::PermError, "key has t=s and i= is a subdomain of d=".into()));
            continue;
        }
        let result = |status, reason: String| DkimResult { testing: flags.testing, ..result(status, reason) };
        if *bh != sig.bh {
            out.push(result(DkimStatus::Fail, "body hash mismatch".into()));
            continue;
        }
        let mut data = Vec::new();
        signed_headers(&sig.h, sig.header_canon, headers, &mut data);
        let mut own = sig.text[..sig.b_range.0].to_vec();
        own.extend_from_slice(&sig.text[sig.b_range.1..]);
        canon::header(sig.header_canon, &own, &mut data);
        data.truncate(data.len() - 2);
        match key.verify(sig.alg, &data, &sig.b) {
            Ok(()) => out.push(result(DkimStatus::Pass, String::new())),
            Err(e) => out.push(result(DkimStatus::Fail, e)),
        }
    }
    Ok(out)
}

/// A key record's `t=` flags (RFC 6376 §3.6.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct KeyFlags {
    testing: bool,
    strict: bool,
}

fn flags(record: &[u8]) -> KeyFlags {
    let t = TagList::parse(record).ok().and_then(|tags| tags.get("t").map(<[u8]>::to_vec)).unwrap_or_default();
    let has = |f: &[u8]| t.split(|&c| c == b':').any(|x| x.trim_ascii() == f);
    KeyFlags { testing: has(b"y"), strict: has(b"s") }
}

/// A key and its flags, or the result a signature gets without one.
type KeyAnswer = Result<(PublicKey, KeyFlags), (DkimStatus, String)>;

fn lookup(dns: &dyn TxtLookup, name: &str) -> KeyAnswer {
    let perm = |e: String| (DkimStatus::PermError, format!("key {name}: {e}"));
    match dns.txt(name) {
        Ok(records) if records.is_empty() => Err(perm("no TXT record".into())),
        Ok(records) => {
            let parsed: Vec<_> = records.iter().map(|r| PublicKey::from_record(r).map(|k| (k, flags(r)))).collect();
            let first_err = parsed.iter().find_map(|p| p.clone().err()).unwrap_or_default();
            parsed.into_iter().find_map(Result::ok).ok_or_else(|| perm(first_err))
        }
        Err(DnsError::Temporary(e)) => Err((DkimStatus::TempError, format!("key {name}: {e}"))),
        Err(DnsError::Unrecorded(e)) => Err((DkimStatus::TempError, format!("key {name}: no recorded answer: {e}"))),
        Err(e) => Err(perm(e.to_string())),
    }
}

/// The From domain: of the first address of the first From field, lowercase.
pub fn from_domain(headers: &[&[u8]]) -> Option<String> {
    let from = headers
        .iter()
        .find(|t| t[..value_start(t).saturating_sub(1)].trim_ascii_end().eq_ignore_ascii_case(b"from"))?;
    let value = String::from_utf8_lossy(&from[value_start(from)..]).into_owned();
    let addr = match (value.rfind('<'), value.rfind('>')) {
        (Some(a), Some(b)) if a < b => value[a + 1..b].to_string(),
        _ => value.split(',').next().unwrap_or_default().to_string(),
    };
    let domain = addr.rsplit_once('@')?.1.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

/// Whether a signature of `d` speaks for `from` (the same domain or a parent of it).
fn aligned(d: &str, from: &str) -> bool {
    from == d || from.ends_with(&format!(".{d}"))
}

pub struct DkimStage {
    dns: Arc<dyn TxtLookup>,
    config: DkimConfig,
    timeout: Duration,
    clock: Clock,
}

impl DkimStage {
    pub fn new(dns: Arc<dyn TxtLookup>, config: DkimConfig, timeout: Duration) -> DkimStage {
        DkimStage { dns, config, timeout, clock: Clock::System }
    }

    pub fn with_clock(mut self, clock: Clock) -> DkimStage {
        self.clock = clock;
        self
    }
}

impl Stage for DkimStage {
    fn name(&self) -> &str {
        "dkim"
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn check(&self, message: &MessageView<'_>) -> Result<StageResult, StageError> {
        let headers = header_texts(message.header);
        let now = self.clock.now_secs();
        let results = verify_all(
            &headers,
            &mut message.body_wire_reader(),
            self.dns.as_ref(),
            now,
            self.config.max_signatures.max(1),
        )
        .map_err(|e| StageError::Temporary(format!("reading the body: {e}")))?;
        let from = from_domain(&headers);
        let theirs: Vec<&DkimResult> =
            results.iter().filter(|r| !r.testing && from.as_deref().is_some_and(|f| aligned(&r.domain, f))).collect();
        let passed = theirs.iter().any(|r| r.status == DkimStatus::Pass);
        let pending = theirs.iter().any(|r| r.status == DkimStatus::TempError);
        let verdict = if passed {
            Verdict::AuthPass
        } else if pending && self.config.on_dns_failure == OnDnsFailure::Defer {
            return Err(StageError::Temporary("DKIM key lookup failed for now".into()));
        } else if !theirs.is_empty() || self.config.require_from_domain {
            Verdict::AuthFail
        } else {
            Verdict::Neutral
        };
        let failed = verdict == Verdict::AuthFail;
        let mut r = StageResult::new(verdict);
        r.auth_results = if results.is_empty() {
            vec!["dkim=none".to_string()]
        } else {
            results.iter().map(DkimResult::clause).collect()
        };
        if failed {
            let domain = from.unwrap_or_else(|| "(none)".into());
            r = r.detail("reason", format!("no valid signature from the From domain ({domain})"));
        }
        for res in &results {
            r = r.detail("signature", res.clause());
        }
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_domains() {
        let f = |t: &str| from_domain(&[t.as_bytes()]);
        assert_eq!(f("From: Alice <alice@Mail.Example.COM>\n").as_deref(), Some("mail.example.com"));
        assert_eq!(f("from: bob@example.org\n").as_deref(), Some("example.org"));
        assert_eq!(f("From: \"a@b\" <c@d.example>\n").as_deref(), Some("d.example"));
        assert_eq!(f("From: nobody\n"), None);
        assert!(aligned("example.com", "mail.example.com") && aligned("example.com", "example.com"));
        assert!(!aligned("ample.com", "example.com") && !aligned("mail.example.com", "example.com"));
    }

    #[test]
    fn clauses() {
        let r = DkimResult {
            status: DkimStatus::Fail,
            reason: "body hash mismatch".into(),
            domain: "example.com".into(),
            selector: "sel".into(),
            b_prefix: "AbCdEfGh".into(),
            testing: false,
        };
        assert_eq!(r.clause(), "dkim=fail (body hash mismatch) header.d=example.com header.s=sel header.b=AbCdEfGh");
    }

    #[test]
    fn bad_tags_are_permerrors() {
        let check = |field: &str| parse(field.as_bytes(), 0).err();
        let good = "DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from:to; bh=AAAA; b=AAAA\n";
        assert_eq!(check(good), None);
        assert_eq!(check(&good.replace("v=1", "v=2")).as_deref(), Some("v= is not 1"));
        assert_eq!(
            check(&good.replace("rsa-sha256", "rsa-sha1")).as_deref(),
            Some("rsa-sha1 is not accepted (RFC 8301)")
        );
        assert_eq!(check(&good.replace("h=from:to", "h=to")).as_deref(), Some("h= does not list From"));
        assert_eq!(
            check(&good.replace("h=from", "i=a@other.example; h=from")).as_deref(),
            Some("i= is not in the d= domain")
        );
        assert_eq!(check(&good.replace("h=from", "x=10; h=from")).as_deref(), None, "x= in the future at 0");
        assert_eq!(
            parse(good.replace("h=from", "x=10; h=from").as_bytes(), 11).err().as_deref(),
            Some("expired (x=10)")
        );
    }
}
