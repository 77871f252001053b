//! The captured fixtures, and `exim -bpr` output parsed for comparison with our own reading.

use std::path::{Path, PathBuf};

use spoolsift::spool::{DataFile, SpoolHeader};

/// Each fixture directory and the `-H` in it.
pub fn fixtures() -> Vec<(PathBuf, PathBuf)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("spool-fixtures").unwrap() {
        let dir = e.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        let headers: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with("-H"))
            .collect();
        assert_eq!(headers.len(), 1, "{}: one pair per fixture", dir.display());
        out.push((dir, headers[0].clone()));
    }
    out.sort();
    out
}

/// Exim's `string_format_size`, as `-bp` prints sizes.
pub fn exim_size(size: u64) -> String {
    match size {
        0 => "     ".into(),
        s if s < 1024 => format!("{s:5}"),
        s if s < 10 * 1024 => format!("{:4.1}K", s as f64 / 1024.0),
        s if s < 1024 * 1024 => format!("{:4}K", (s + 512) / 1024),
        s if s < 10 * 1024 * 1024 => format!("{:4.1}M", s as f64 / (1024.0 * 1024.0)),
        s => format!("{:4}M", (s + 512 * 1024) / (1024 * 1024)),
    }
}

/// What `exim -bpr` says of one message: size, id, sender, frozen, recipients with their D mark.
#[derive(Debug, PartialEq, Eq)]
pub struct BprEntry {
    pub size: String,
    pub id: String,
    pub sender: String,
    pub frozen: bool,
    pub recipients: Vec<(bool, String)>,
}

pub fn parse_bpr(text: &str) -> Vec<BprEntry> {
    let mut out: Vec<BprEntry> = Vec::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("        ") {
            let (delivered, addr) = match rest.strip_prefix("D ") {
                Some(a) => (true, a),
                None => (false, rest.trim_start()),
            };
            out.last_mut().expect("recipient before message line").recipients.push((delivered, addr.to_string()));
            continue;
        }
        // `<age> <size> <id> <sender> [*** frozen ***]`; the size is right-aligned in 5 columns.
        let t = line.trim_start();
        let (_age, rest) = t.split_once(' ').unwrap();
        let size = rest[..5].to_string();
        let rest = rest[6..].to_string();
        let (id, rest) = rest.split_once(' ').unwrap();
        let frozen = rest.ends_with("*** frozen ***");
        let sender = rest.trim_end_matches("*** frozen ***").trim();
        let sender = sender.strip_prefix('<').and_then(|s| s.strip_suffix('>')).unwrap_or(sender).to_string();
        out.push(BprEntry { size, id: id.to_string(), sender, frozen, recipients: Vec::new() });
    }
    out
}

/// The same description, from our reading of the pair.
pub fn describe(header: &Path) -> BprEntry {
    let h = SpoolHeader::read(header).unwrap();
    let d = DataFile::open(&header.with_file_name(format!("{}-D", h.id)), &h.id).unwrap();
    BprEntry {
        size: exim_size(h.message_size(d.body_len())),
        id: h.id.to_string(),
        sender: String::from_utf8(h.sender.clone()).unwrap(),
        frozen: h.frozen_at().is_some(),
        recipients: h
            .recipients
            .iter()
            .map(|r| (h.non_recipients.contains(r.address()), String::from_utf8(r.address().to_vec()).unwrap()))
            .collect(),
    }
}
