//! DNS TXT lookups behind one small trait, so that a check that needs DNS (ARC's key records)
//! runs the same against the network, a records file (tests, `arc-verify --txt-records`) or the
//! answers recorded in a capture (replay).
//!
//! Names are compared lower-case and without a trailing dot (`sel._domainkey.example.org`).

use std::collections::BTreeMap;

pub mod recorded;
pub mod resolver;

pub use recorded::{RecordingTxt, ReplayingTxt, TxtAnswer, TxtAnswers};
pub use resolver::{DnsTxt, ResolverSettings};

/// Why a TXT lookup gave no records.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "error", content = "reason", rename_all = "snake_case")]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    #[error("no such name")]
    NoSuchName,
    /// The name exists but has no TXT record.
    #[error("no TXT record")]
    NoRecords,
    /// Timeout, SERVFAIL, no server reachable: asking again later may give an answer.
    #[error("temporary DNS failure: {0}")]
    Temporary(String),
    /// A replay has no recorded answer for the name: the check must not decide on it.
    #[error("no recorded answer for TXT {0}")]
    Unrecorded(String),
}

/// A source of TXT records.
pub trait TxtLookup: Send + Sync {
    /// Every TXT record of `name`, each one's character-strings concatenated (RFC 6376 §3.6.2.2).
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError>;
}

/// The canonical form of a name for lookups and record files: lower-case, no trailing dot.
pub fn normalize_name(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// TXT records held in memory: from a records file, or preloaded by a test.
#[derive(Debug, Clone, Default)]
pub struct StaticTxt {
    records: BTreeMap<String, Vec<Vec<u8>>>,
}

impl StaticTxt {
    pub fn new() -> StaticTxt {
        StaticTxt::default()
    }

    /// Add one TXT record for `name` (a name may have several).
    pub fn insert(&mut self, name: &str, record: impl Into<Vec<u8>>) {
        self.records.entry(normalize_name(name)).or_default().push(record.into());
    }

    /// Parse a records file: a JSON object mapping a DNS name to its TXT value, either a string
    /// or an array of strings that are concatenated (one record made of several
    /// character-strings). The error says which name is wrong and why.
    pub fn from_json(bytes: &[u8]) -> Result<StaticTxt, String> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let object = value.as_object().ok_or("the top level must be a JSON object (name → TXT value)")?;
        let mut out = StaticTxt::new();
        for (name, v) in object {
            let record = match v {
                serde_json::Value::String(s) => s.clone().into_bytes(),
                serde_json::Value::Array(parts) => {
                    let mut record = Vec::new();
                    for p in parts {
                        let s = p.as_str().ok_or_else(|| format!("{name}: array elements must be strings"))?;
                        record.extend_from_slice(s.as_bytes());
                    }
                    record
                }
                _ => return Err(format!("{name}: the value must be a string or an array of strings")),
            };
            out.insert(name, record);
        }
        Ok(out)
    }
}

impl TxtLookup for StaticTxt {
    fn txt(&self, name: &str) -> Result<Vec<Vec<u8>>, DnsError> {
        self.records.get(&normalize_name(name)).cloned().ok_or(DnsError::NoSuchName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_file_strings_and_arrays() {
        let t = StaticTxt::from_json(
            br#"{"Sel._domainkey.Example.org.": "v=DKIM1; p=AB", "b.example": ["v=DKIM1; ", "p=CD"]}"#,
        )
        .unwrap();
        assert_eq!(t.txt("sel._domainkey.example.org").unwrap(), vec![b"v=DKIM1; p=AB".to_vec()]);
        assert_eq!(t.txt("B.EXAMPLE.").unwrap(), vec![b"v=DKIM1; p=CD".to_vec()]);
        assert_eq!(t.txt("c.example"), Err(DnsError::NoSuchName));
        assert_eq!(
            StaticTxt::from_json(br#"{"a": 3}"#).unwrap_err(),
            "a: the value must be a string or an array of strings"
        );
        assert!(StaticTxt::from_json(b"[]").unwrap_err().contains("JSON object"));
    }
}
