//! Keys: DKIM key records (RFC 6376 §3.6.1) for verifying, PEM PKCS#8 private keys for sealing,
//! and the two algorithms ARC allows here, `rsa-sha256` (RFC 8301: no sha1, at least 1024 bits)
//! and `ed25519-sha256` (RFC 8463: Ed25519 over the SHA-256 of the canonicalized data).
//!
//! ring verifies RSA with a DER `RSAPublicKey`, while DKIM records usually hold a
//! SubjectPublicKeyInfo around it; ring has no SPKI parser, so the few DER steps to unwrap it are
//! written here rather than pulling in an ASN.1 crate for two nested sequences.

use base64::Engine;
use ring::{digest, rand, signature};

use super::tags::TagList;

/// A signature algorithm (`a=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RsaSha256,
    Ed25519Sha256,
}

impl Algorithm {
    /// `a=` as the signature says it. rsa-sha1 is refused (RFC 8301), like anything unknown.
    pub fn parse(value: Option<&[u8]>) -> Result<Algorithm, String> {
        match value {
            None => Err("a= missing".into()),
            Some(b"rsa-sha256") => Ok(Algorithm::RsaSha256),
            Some(b"ed25519-sha256") => Ok(Algorithm::Ed25519Sha256),
            Some(b"rsa-sha1") => Err("a=rsa-sha1 is not allowed (RFC 8301)".into()),
            Some(b"") => Err("a= empty".into()),
            Some(v) => Err(format!("unknown algorithm a={}", String::from_utf8_lossy(v))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RsaSha256 => "rsa-sha256",
            Algorithm::Ed25519Sha256 => "ed25519-sha256",
        }
    }
}

/// A public key from a key record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// DER RSAPublicKey and the modulus size in bits.
    Rsa {
        der: Vec<u8>,
        bits: usize,
    },
    Ed25519([u8; 32]),
}

impl PublicKey {
    /// Parse a key record (`v=DKIM1; k=rsa; p=...`). Every error is a reason for the chain to fail.
    pub fn from_record(record: &[u8]) -> Result<PublicKey, String> {
        let tags = TagList::parse(record).map_err(|e| format!("key record: {e}"))?;
        if let Some(v) = tags.get("v") {
            if v != b"DKIM1" || tags.tags()[0].name != "v" {
                return Err("key record: v= must be DKIM1 and come first".into());
            }
        }
        if let Some(h) = tags.get("h") {
            if !h.split(|&b| b == b':').any(|a| a.trim_ascii() == b"sha256") {
                return Err("key record: h= does not allow sha256".into());
            }
        }
        if let Some(s) = tags.get("s") {
            if !s.split(|&b| b == b':').any(|t| matches!(t.trim_ascii(), b"*" | b"email")) {
                return Err("key record: s= does not allow email".into());
            }
        }
        let p = tags.get_compact("p").ok_or("key record: p= missing")?;
        if p.is_empty() {
            return Err("key revoked (empty p=)".into());
        }
        let raw = base64::engine::general_purpose::STANDARD.decode(&p).map_err(|_| "key record: p= is not base64")?;
        match tags.get("k").unwrap_or(b"rsa") {
            b"rsa" => {
                let der = rsa_public_key(&raw).ok_or("key record: p= is not an RSA public key")?;
                let bits = modulus_bits(&der).ok_or("key record: p= is not an RSA public key")?;
                if bits < 1024 {
                    return Err(format!("RSA key of {bits} bits is below 1024 (RFC 8301)"));
                }
                Ok(PublicKey::Rsa { der, bits })
            }
            b"ed25519" => {
                let key: [u8; 32] = raw.try_into().map_err(|_| "key record: Ed25519 p= is not 32 bytes")?;
                Ok(PublicKey::Ed25519(key))
            }
            k => Err(format!("key record: unknown key type k={}", String::from_utf8_lossy(k))),
        }
    }

    /// Check `sig` over `data` (the canonicalized header fields).
    pub fn verify(&self, alg: Algorithm, data: &[u8], sig: &[u8]) -> Result<(), String> {
        let ok = match (alg, self) {
            (Algorithm::RsaSha256, PublicKey::Rsa { der, bits }) => {
                let params: &dyn signature::VerificationAlgorithm = if *bits < 2048 {
                    &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                };
                signature::UnparsedPublicKey::new(params, der).verify(data, sig).is_ok()
            }
            (Algorithm::Ed25519Sha256, PublicKey::Ed25519(key)) => {
                let hash = digest::digest(&digest::SHA256, data);
                signature::UnparsedPublicKey::new(&signature::ED25519, key).verify(hash.as_ref(), sig).is_ok()
            }
            _ => return Err(format!("key type does not match a={}", alg.name())),
        };
        if ok {
            Ok(())
        } else {
            Err("signature does not verify".into())
        }
    }
}

/// A sealing key, read from PEM PKCS#8 (`-----BEGIN PRIVATE KEY-----`).
pub enum PrivateKey {
    Rsa(signature::RsaKeyPair),
    Ed25519(signature::Ed25519KeyPair),
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm().name())
    }
}

impl PrivateKey {
    pub fn from_pem(pem: &[u8]) -> Result<PrivateKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file")?;
        let begin = "-----BEGIN PRIVATE KEY-----";
        let start = text.find(begin).ok_or("no `BEGIN PRIVATE KEY` block (PKCS#8 PEM expected)")? + begin.len();
        let end = start + text[start..].find("-----END PRIVATE KEY-----").ok_or("unterminated PEM block")?;
        let b64: String = text[start..end].chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| "PEM body is not base64")?;
        match signature::RsaKeyPair::from_pkcs8(&der) {
            Ok(k) if k.public().modulus_len() * 8 >= 2048 => return Ok(PrivateKey::Rsa(k)),
            // ring refuses to sign with smaller RSA keys, which is right for new signatures.
            Ok(_) => return Err("RSA sealing keys must have at least 2048 bits".into()),
            Err(e) if e.to_string() == "TooSmall" => return Err("RSA sealing keys must have at least 2048 bits".into()),
            Err(_) => {}
        }
        signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
            .map(PrivateKey::Ed25519)
            .map_err(|_| "not an RSA (2048 bits or more) or Ed25519 PKCS#8 key".into())
    }

    pub fn algorithm(&self) -> Algorithm {
        match self {
            PrivateKey::Rsa(_) => Algorithm::RsaSha256,
            PrivateKey::Ed25519(_) => Algorithm::Ed25519Sha256,
        }
    }

    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            PrivateKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &rand::SystemRandom::new(), data, &mut sig)
                    .map_err(|_| "RSA signing failed")?;
                Ok(sig)
            }
            PrivateKey::Ed25519(k) => Ok(k.sign(digest::digest(&digest::SHA256, data).as_ref()).as_ref().to_vec()),
        }
    }
}

/// One DER TLV: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |a, &b| (a << 8) | usize::from(b)), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const RSA_ENCRYPTION_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The DER RSAPublicKey in `raw`: a SubjectPublicKeyInfo for rsaEncryption, or already an
/// RSAPublicKey (both occur in published DKIM records).
fn rsa_public_key(raw: &[u8]) -> Option<Vec<u8>> {
    let (0x30, inner, []) = der(raw)? else { return None };
    let (tag, first, rest) = der(inner)?;
    match tag {
        0x02 => Some(raw.to_vec()),
        0x30 => {
            let (0x06, oid, _) = der(first)? else { return None };
            if oid != RSA_ENCRYPTION_OID {
                return None;
            }
            let (0x03, bits, []) = der(rest)? else { return None };
            let (0, key) = bits.split_first()? else { return None };
            Some(key.to_vec())
        }
        _ => None,
    }
}

fn modulus_bits(rsa_public_key: &[u8]) -> Option<usize> {
    let (0x30, inner, _) = der(rsa_public_key)? else { return None };
    let (0x02, n, _) = der(inner)? else { return None };
    let n = &n[n.iter().position(|&b| b != 0)?..];
    Some(n.len() * 8 - n[0].leading_zeros() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithms() {
        assert_eq!(Algorithm::parse(Some(b"rsa-sha256")), Ok(Algorithm::RsaSha256));
        assert_eq!(Algorithm::parse(Some(b"ed25519-sha256")), Ok(Algorithm::Ed25519Sha256));
        assert_eq!(Algorithm::parse(Some(b"rsa-sha1")).unwrap_err(), "a=rsa-sha1 is not allowed (RFC 8301)");
        assert_eq!(Algorithm::parse(None).unwrap_err(), "a= missing");
        assert_eq!(Algorithm::parse(Some(b"")).unwrap_err(), "a= empty");
    }

    #[test]
    fn key_records() {
        assert_eq!(PublicKey::from_record(b"v=DKIM1; k=rsa; p=").unwrap_err(), "key revoked (empty p=)");
        assert_eq!(PublicKey::from_record(b"k=rsa").unwrap_err(), "key record: p= missing");
        assert_eq!(
            PublicKey::from_record(b"p=AAAA; v=DKIM1").unwrap_err(),
            "key record: v= must be DKIM1 and come first"
        );
        assert_eq!(PublicKey::from_record(b"p=!!").unwrap_err(), "key record: p= is not base64");
        assert_eq!(PublicKey::from_record(b"k=dsa; p=AAAA").unwrap_err(), "key record: unknown key type k=dsa");
        assert_eq!(PublicKey::from_record(b"h=sha1; p=AAAA").unwrap_err(), "key record: h= does not allow sha256");
        let ed = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            PublicKey::from_record(format!("v=DKIM1; k=ed25519; p={ed}").as_bytes()),
            Ok(PublicKey::Ed25519([7; 32]))
        );
        // A 512-bit RSAPublicKey: SEQUENCE { INTEGER (64 bytes, top bit set), INTEGER 65537 }.
        let mut n = vec![0x02, 0x41, 0x00, 0xc0];
        n.extend([1u8; 63]);
        let mut seq = vec![0x30, (n.len() + 5) as u8];
        seq.extend(n);
        seq.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let p = base64::engine::general_purpose::STANDARD.encode(&seq);
        assert_eq!(
            PublicKey::from_record(format!("p={p}").as_bytes()).unwrap_err(),
            "RSA key of 512 bits is below 1024 (RFC 8301)"
        );
    }
}
