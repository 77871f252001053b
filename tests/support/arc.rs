//! Shared by the ARC tests: keys made at test time with openssl, a records file both sides read,
//! dkimpy through tests/support/dkimpy_arc.py, our verifier and sealer on raw messages.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use spoolsift::dns::StaticTxt;
use spoolsift::spool::message::CrlfReader;
use spoolsift::stages::arc::verify::{self, split_message, ArcResult, ArcStatus};
use spoolsift::stages::arc::{SealConfig, Sealer};

pub const PYTHON: &str = "/usr/bin/python3";
/// A fixed time for every signature, so x= checks and t= are reproducible.
pub const T: u64 = 1_750_000_000;

pub fn have_dkimpy() -> bool {
    Command::new(PYTHON).args(["-c", "import dkim, authres, nacl"]).status().is_ok_and(|s| s.success())
}

/// The interop tests need dkimpy (scripts/install-test-deps.sh installs it); say so loudly.
pub fn require_dkimpy() {
    assert!(
        have_dkimpy(),
        "dkimpy missing: run scripts/install-test-deps.sh (python3-dkim, python3-authres, python3-nacl)"
    );
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

fn b64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// One signing key: PKCS#8 PEM (ours), PKCS#1 PEM (dkimpy's), and its key record.
pub struct Key {
    pub pkcs8: PathBuf,
    pub pkcs1: PathBuf,
    pub record: String,
}

impl Key {
    pub fn rsa(dir: &Path, name: &str, bits: u32) -> Key {
        let pkcs8 = dir.join(format!("{name}.pem"));
        let pkcs1 = dir.join(format!("{name}.rsa.pem"));
        let p8 = pkcs8.to_str().unwrap();
        openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", &format!("rsa_keygen_bits:{bits}"), "-out", p8]);
        openssl(&["pkey", "-in", p8, "-traditional", "-out", pkcs1.to_str().unwrap()]);
        let spki = openssl(&["pkey", "-in", p8, "-pubout", "-outform", "DER"]);
        Key { pkcs8, pkcs1, record: format!("v=DKIM1; k=rsa; p={}", b64(&spki)) }
    }

    pub fn ed25519(dir: &Path, name: &str) -> Key {
        let pkcs8 = dir.join(format!("{name}.pem"));
        let p8 = pkcs8.to_str().unwrap();
        openssl(&["genpkey", "-algorithm", "ed25519", "-out", p8]);
        let spki = openssl(&["pkey", "-in", p8, "-pubout", "-outform", "DER"]);
        let raw = &spki[spki.len() - 32..];
        Key { pkcs1: pkcs8.clone(), pkcs8, record: format!("v=DKIM1; k=ed25519; p={}", b64(raw)) }
    }
}

/// A scratch directory with keys for a few domains and the records file naming them.
pub struct World {
    pub dir: tempfile::TempDir,
    pub records: PathBuf,
    pub txt: StaticTxt,
    entries: serde_json::Map<String, serde_json::Value>,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records.json");
        let mut w = World { dir, records, txt: StaticTxt::new(), entries: serde_json::Map::new() };
        w.write();
        w
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Publish a TXT record (as an array of 200-byte strings, like a long DNS TXT record).
    pub fn publish(&mut self, name: &str, record: &str) {
        let parts: Vec<serde_json::Value> = record
            .as_bytes()
            .chunks(200)
            .map(|c| serde_json::Value::String(String::from_utf8(c.to_vec()).unwrap()))
            .collect();
        self.entries.insert(name.to_string(), serde_json::Value::Array(parts));
        self.write();
    }

    /// A new RSA key published at `<selector>._domainkey.<domain>`.
    pub fn rsa_key(&mut self, domain: &str, selector: &str, bits: u32) -> Key {
        let k = Key::rsa(self.path(), &format!("{selector}.{domain}"), bits);
        self.publish(&format!("{selector}._domainkey.{domain}"), &k.record);
        k
    }

    pub fn ed25519_key(&mut self, domain: &str, selector: &str) -> Key {
        let k = Key::ed25519(self.path(), &format!("{selector}.{domain}"));
        self.publish(&format!("{selector}._domainkey.{domain}"), &k.record);
        k
    }

    fn write(&mut self) {
        let text = serde_json::to_vec(&self.entries).unwrap();
        std::fs::write(&self.records, &text).unwrap();
        self.txt = StaticTxt::from_json(&text).unwrap();
    }

    fn dkimpy(&self, args: &[&str], input: &[u8]) -> Vec<u8> {
        let mut child = Command::new(PYTHON)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/dkimpy_arc.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "dkimpy {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    /// dkimpy adds an ARC set (with an Authentication-Results of `srv_id` carrying `cv`).
    pub fn dkimpy_sign(&self, msg: &[u8], key: &Key, domain: &str, selector: &str, srv_id: &str, cv: &str) -> Vec<u8> {
        self.dkimpy_sign_listing(msg, key, domain, selector, srv_id, cv, None)
    }

    /// As [`World::dkimpy_sign`], with the AMS `h=` list given (colon-separated) instead of
    /// dkimpy's default.
    #[allow(clippy::too_many_arguments)]
    pub fn dkimpy_sign_listing(
        &self,
        msg: &[u8],
        key: &Key,
        domain: &str,
        selector: &str,
        srv_id: &str,
        cv: &str,
        h: Option<&str>,
    ) -> Vec<u8> {
        let t = T.to_string();
        let mut args =
            vec!["sign", self.records.to_str().unwrap(), key.pkcs1.to_str().unwrap(), domain, selector, srv_id, cv, &t];
        args.extend(h);
        self.dkimpy(&args, msg)
    }

    /// dkimpy's verdict: (cv or None, reason).
    pub fn dkimpy_verify(&self, msg: &[u8]) -> (Option<String>, String) {
        let out = self.dkimpy(&["verify", self.records.to_str().unwrap()], msg);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        (v["cv"].as_str().map(String::from), v["reason"].as_str().unwrap_or_default().to_string())
    }

    /// Our verdict on a raw message, at time T.
    pub fn ours(&self, msg: &[u8]) -> ArcResult {
        let (headers, body) = split_message(msg);
        verify::verify(&headers, &mut CrlfReader::new(body), &self.txt, T + 60).unwrap()
    }

    /// Our sealer's new set prepended to a raw message (AS, AMS, AAR on top).
    pub fn our_seal(
        &self,
        msg: &[u8],
        key: &Key,
        domain: &str,
        selector: &str,
        cv: ArcStatus,
        payload: &str,
    ) -> Vec<u8> {
        let config = SealConfig {
            domain: domain.into(),
            selector: selector.into(),
            key_file: key.pkcs8.clone(),
            headers: vec!["from".into(), "to".into(), "subject".into(), "date".into(), "message-id".into()],
            timestamp: Some(T),
        };
        let sealer = Sealer::new(&config, &std::fs::read(&key.pkcs8).unwrap()).unwrap();
        let (headers, body) = split_message(msg);
        let set = sealer.seal(&headers, &mut CrlfReader::new(body), cv, payload, T).unwrap().unwrap();
        let mut out = Vec::new();
        for t in [&set.seal, &set.ams, &set.aar] {
            out.extend_from_slice(t);
        }
        out.extend_from_slice(msg);
        out
    }
}

/// A plain message with LF line ends, as on the spool.
pub fn message() -> Vec<u8> {
    [
        "From: Alice <alice@origin.example>",
        "To: bob@dest.example",
        "Subject: ARC interop",
        "Date: Sun, 15 Jun 2025 12:00:00 +0000",
        "Message-ID: <arc-1@origin.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain",
        "",
        "Hello Bob,  ",
        "  \tthis body has white space  to relax ",
        "",
        " ",
        "",
    ]
    .join("\n")
    .into_bytes()
}

/// Replace the one occurrence of `from` (asserting it occurs exactly once).
pub fn replace_once(msg: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = String::from_utf8(msg.to_vec()).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from:?} must occur once in:\n{text}");
    text.replacen(from, to, 1).into_bytes()
}

/// The header field (with continuation lines) starting with `prefix`, as text.
pub fn field(msg: &[u8], prefix: &str) -> String {
    let (headers, _) = split_message(msg);
    let f = headers.iter().find(|h| h.starts_with(prefix.as_bytes())).unwrap_or_else(|| panic!("no {prefix}"));
    String::from_utf8(f.to_vec()).unwrap()
}

/// Remove the field starting with `prefix`.
pub fn remove_field(msg: &[u8], prefix: &str) -> Vec<u8> {
    let f = field(msg, prefix);
    replace_once(msg, &f, "")
}

pub fn pass(n: u32, oldest: u32, domains: &[&str]) -> ArcResult {
    ArcResult {
        result: ArcStatus::Pass,
        reason: String::new(),
        instances: n,
        oldest_pass: oldest,
        domains: domains.iter().map(|d| d.to_string()).collect(),
        dns_trouble: Default::default(),
    }
}

pub fn failed(n: u32, reason: &str, domains: &[&str]) -> ArcResult {
    ArcResult {
        result: ArcStatus::Fail,
        reason: reason.into(),
        instances: n,
        oldest_pass: 0,
        domains: domains.iter().map(|d| d.to_string()).collect(),
        dns_trouble: Default::default(),
    }
}

/// A spool header carrying `msg`'s header fields (envelope from the spec example, client
/// 192.0.2.10), and the body.
pub fn spool_message(msg: &[u8]) -> (spoolsift::spool::SpoolHeader, Vec<u8>) {
    use spoolsift::spool::{HeaderFlag, HeaderLine, HeaderSection, OptionLine, SpoolHeader};
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/spec-example/1xXORz-0000000058C-2p8L-H");
    let mut h = SpoolHeader::read(Path::new(fixture)).unwrap();
    let (fields, body) = split_message(msg);
    let mut have_id = false;
    let lines = fields
        .iter()
        .map(|t| {
            let text = String::from_utf8_lossy(t).replace("\r\n", "\n");
            let name = &text[..text.find(':').unwrap()];
            let flag = HeaderFlag::for_name(name.as_bytes(), have_id);
            have_id |= flag == HeaderFlag::MessageId;
            HeaderLine::from_text(flag, text.as_bytes()).unwrap()
        })
        .collect();
    h.headers = HeaderSection::new(lines);
    let body = body.to_vec();
    h.options.set(OptionLine::with_value(
        "body_linecount",
        body.iter().filter(|&&b| b == b'\n').count().to_string().as_bytes(),
    ));
    (h, body)
}
