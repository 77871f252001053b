//! A SHA-256 blocklist: digests of known-bad attachments, as shared between sites and feeds.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// A blocklist that cannot be loaded. A bad line is refused rather than skipped: a typo would
/// otherwise silently let that attachment through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {reason}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct BlocklistError {
    pub file: PathBuf,
    /// 1-based; `None` when the file as a whole could not be read.
    pub line: Option<usize>,
    pub reason: String,
}

/// SHA-256 digests to block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sha256Blocklist {
    digests: HashSet<[u8; 32]>,
}

impl Sha256Blocklist {
    /// Read a file of hex digests, one per line. Blank lines and `#` comments (whole-line or after
    /// the digest) are ignored; hex digits may be of either case.
    pub fn load(path: &Path) -> Result<Sha256Blocklist, BlocklistError> {
        let text = std::fs::read_to_string(path).map_err(|e| BlocklistError {
            file: path.to_path_buf(),
            line: None,
            reason: e.to_string(),
        })?;
        Sha256Blocklist::parse(&text, path)
    }

    /// Parse blocklist text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Sha256Blocklist, BlocklistError> {
        let mut digests = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let digest = parse_hex(entry).ok_or_else(|| BlocklistError {
                file: file.to_path_buf(),
                line: Some(i + 1),
                reason: format!("expected a SHA-256 digest (64 hex digits), found {:?}", shorten(entry)),
            })?;
            digests.insert(digest);
        }
        Ok(Sha256Blocklist { digests })
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    pub fn contains(&self, digest: &[u8; 32]) -> bool {
        self.digests.contains(digest)
    }
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks_exact(2)) {
        let hi = char::from(pair[0]).to_digit(16)?;
        let lo = char::from(pair[1]).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s.to_string(),
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Lowercase hex, as blocklists and rule names spell a digest.
pub fn hex(digest: &[u8; 32]) -> String {
    use std::fmt::Write;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
