//! Adding our ARC set, RFC 8617 §5.1: after every change to the message, with `cv` from our own
//! validation of the chain as received.

use std::io::{self, Read};
use std::path::PathBuf;

use base64::Engine;
use serde::Deserialize;

use super::canon::{BodyHasher, Canon};
use super::keys::{PrivateKey, PublicKey};
use super::verify::{self, ArcStatus, Kind, MAX_INSTANCE};

/// `[stages.arc.seal]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealConfig {
    /// `d=`: the domain whose `<selector>._domainkey` record holds the public key.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    /// PEM PKCS#8 private key: RSA of 2048 bits or more, or Ed25519.
    pub key_file: PathBuf,
    /// Header fields the ARC-Message-Signature covers (each occurrence present is signed).
    #[serde(default = "default_signed_headers")]
    pub headers: Vec<String>,
    /// A fixed `t=` (for reproducible tests); the current time when absent.
    pub timestamp: Option<u64>,
}

fn default_signed_headers() -> Vec<String> {
    [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "reply-to",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "dkim-signature",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub struct Sealer {
    domain: String,
    selector: String,
    key: PrivateKey,
    headers: Vec<Vec<u8>>,
    timestamp: Option<u64>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer({} {}._domainkey.{})", self.key.algorithm().name(), self.selector, self.domain)
    }
}

fn token(what: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
        return Err(format!("seal {what} {v:?} is not a domain name"));
    }
    Ok(())
}

/// The three new header fields, in the order they are prepended (the ARC-Seal ends on top).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSet {
    /// `Name: value\n` texts with LF line ends, folded.
    pub aar: Vec<u8>,
    pub ams: Vec<u8>,
    pub seal: Vec<u8>,
}

impl Sealer {
    /// Whether the key published at `<selector>._domainkey.<domain>` is the one we sign with: a
    /// test string signed with ours must verify with the record's. Says which record.
    pub fn check_published(&self, dns: &dyn crate::dns::TxtLookup) -> Result<String, String> {
        let name = format!("{}._domainkey.{}", self.selector, self.domain);
        let records = dns.txt(&name).map_err(|e| format!("{name}: {e}"))?;
        if records.is_empty() {
            return Err(format!("{name}: no TXT record"));
        }
        let data = b"spoolsift check-config --probe";
        let sig = self.key.sign(data)?;
        for r in &records {
            if let Ok(key) = PublicKey::from_record(r) {
                if key.verify(self.key.algorithm(), data, &sig).is_ok() {
                    return Ok(format!("{name} publishes our {} key", self.key.algorithm().name()));
                }
            }
        }
        Err(format!("{name}: no record there holds the public half of our key"))
    }

    pub fn new(config: &SealConfig, key_pem: &[u8]) -> Result<Sealer, String> {
        token("domain", &config.domain)?;
        token("selector", &config.selector)?;
        let key = PrivateKey::from_pem(key_pem).map_err(|e| format!("{}: {e}", config.key_file.display()))?;
        let mut headers = Vec::new();
        for h in &config.headers {
            let lower = h.to_ascii_lowercase();
            // RFC 8617 §4.1.2 forbids ARC-Seal in an AMS `h=` and Authentication-Results are
            // deleted downstream (RFC 8601 §5), which would break the AMS. The other ARC fields
            // are allowed, but the ARC-Seal already covers every set, so we sign none of them.
            if lower.starts_with("arc-") || lower == "authentication-results" {
                return Err(format!(
                    "seal headers must not include {h}: an ARC-Seal may not be signed by an \
                     ARC-Message-Signature (RFC 8617 §4.1.2), Authentication-Results are removed by \
                     receivers (RFC 8601 §5), and the ARC-Seal covers the other ARC fields"
                ));
            }
            if lower.is_empty() || lower.bytes().any(|b| !(33..=126).contains(&b) || b == b':') {
                return Err(format!("seal headers: {h:?} is not a field name"));
            }
            headers.push(lower.into_bytes());
        }
        if !headers.iter().any(|h| h == b"from") {
            return Err("seal headers must include From".into());
        }
        Ok(Sealer {
            domain: config.domain.to_ascii_lowercase(),
            selector: config.selector.to_ascii_lowercase(),
            key,
            headers,
            timestamp: config.timestamp,
        })
    }

    /// The new set for a message whose final header fields are `headers` (each as stored) and
    /// whose body (CRLF) is `body`; `aar_payload` is `<authserv-id>; <resinfo>...`. `Ok(Err)`
    /// says why this message cannot be sealed (the newest seal says `cv=fail`, or 50 sets).
    pub fn seal(
        &self,
        headers: &[&[u8]],
        body: &mut dyn Read,
        cv: ArcStatus,
        aar_payload: &str,
        now: u64,
    ) -> io::Result<Result<NewSet, String>> {
        let (n, previous, cv) = match verify::collect(headers) {
            Ok(map) => {
                let n = map.keys().next_back().copied().unwrap_or(0);
                let newest_fail = map.get(&n).is_some_and(|fs| {
                    fs.iter()
                        .any(|f| f.kind == Kind::Seal && f.tags.as_ref().and_then(|t| t.get("cv")) == Some(b"fail"))
                });
                if newest_fail {
                    return Ok(Err(format!("not sealed: the newest ARC-Seal (i={n}) has cv=fail")));
                }
                let mut previous = Vec::new();
                if cv == ArcStatus::Pass {
                    for i in 1..=n {
                        let fields = map.get(&i).map(Vec::as_slice).unwrap_or_default();
                        let find = |k| fields.iter().find(|f| f.kind == k).map(|f| f.text);
                        match (find(Kind::Aar), find(Kind::Ams), find(Kind::Seal)) {
                            (Some(a), Some(m), Some(s)) => previous.push((a, m, s)),
                            _ => return Ok(Err(format!("not sealed: cv=pass but set i={i} is incomplete"))),
                        }
                    }
                }
                // A chain we did not validate cannot be vouched for.
                let cv = if n > 0 && cv == ArcStatus::None { ArcStatus::Fail } else { cv };
                (n, previous, cv)
            }
            Err(_) => (verify::highest_instance(headers), Vec::new(), ArcStatus::Fail),
        };
        let i = n + 1;
        if i > MAX_INSTANCE {
            return Ok(Err(format!("not sealed: the chain already has {MAX_INSTANCE} sets")));
        }
        let t = self.timestamp.unwrap_or(now);
        let alg = self.key.algorithm().name();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);

        let aar_value = format!("i={i}; {}", aar_payload.trim());
        let aar = crate::spool::HeaderLine::new(b"ARC-Authentication-Results", aar_value.as_bytes(), false)
            .map_err(io::Error::other)?
            .text()
            .to_vec();

        let mut hasher = BodyHasher::new(Canon::Relaxed, None);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match body.read(&mut buf) {
                Ok(0) => break,
                Ok(got) => hasher.update(&buf[..got]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let bh = b64(&hasher.finish().0);
        let mut names: Vec<Vec<u8>> = Vec::new();
        for h in &self.headers {
            let present = headers.iter().filter(|t| field_name(t).eq_ignore_ascii_case(h)).count();
            names.extend(std::iter::repeat_n(h.clone(), present.max(usize::from(h == b"from"))));
        }
        let h_tag = names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect::<Vec<_>>().join(":");
        let ams_tags = [
            format!("i={i}"),
            format!("a={alg}"),
            "c=relaxed/relaxed".into(),
            format!("d={}", self.domain),
            format!("s={}", self.selector),
            format!("t={t}"),
            format!("h={h_tag}"),
            format!("bh={bh}"),
        ];
        let unsigned = fold("ARC-Message-Signature", &ams_tags, "");
        let mut data = Vec::new();
        verify::signed_headers(&names, Canon::Relaxed, headers, &mut data);
        data.extend(canonical_unsigned(&unsigned));
        let ams = fold("ARC-Message-Signature", &ams_tags, &b64(&self.key.sign(&data).map_err(io::Error::other)?));

        let seal_tags = [
            format!("i={i}"),
            format!("a={alg}"),
            format!("cv={}", cv.as_str()),
            format!("d={}", self.domain),
            format!("s={}", self.selector),
            format!("t={t}"),
        ];
        let unsigned = fold("ARC-Seal", &seal_tags, "");
        let mut scope = previous;
        scope.push((&aar, &ams, &unsigned));
        let end = unsigned.len() - 1;
        let data = verify::seal_data(&scope, (end, end));
        let seal = fold("ARC-Seal", &seal_tags, &b64(&self.key.sign(&data).map_err(io::Error::other)?));
        Ok(Ok(NewSet { aar, ams, seal }))
    }
}

fn field_name(text: &[u8]) -> &[u8] {
    text[..verify::value_start(text).saturating_sub(1)].trim_ascii_end()
}

/// The unsigned field (ending in `b=`) as the signature covers it: relaxed, no final CRLF.
fn canonical_unsigned(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    super::canon::header(Canon::Relaxed, text, &mut out);
    out.truncate(out.len() - 2);
    out
}

/// `Name: tag; tag; ... b=` folded below 78 columns at the spaces between tags, the `b=` value
/// broken into folded pieces (white space in `b=` is ignored).
fn fold(name: &str, parts: &[String], b: &str) -> Vec<u8> {
    let mut out = format!("{name}:");
    let mut line = out.len();
    for item in parts.iter().map(|p| format!("{p};")) {
        if line + 1 + item.len() > 78 && line > name.len() + 1 {
            out.push_str("\n\t");
            line = 1;
        } else {
            out.push(' ');
            line += 1;
        }
        out.push_str(&item);
        line += item.len();
    }
    out.push_str(" b=");
    let first = b.len().min(76usize.saturating_sub(line + 3));
    out.push_str(&b[..first]);
    let mut rest = &b[first..];
    while !rest.is_empty() {
        let take = rest.len().min(72);
        out.push_str("\n\t");
        out.push_str(&rest[..take]);
        rest = &rest[take..];
    }
    out.push('\n');
    out.into_bytes()
}
