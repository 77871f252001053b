//! `spoolsift inspect PATH...`: one JSON object per message, or with `--check` only validation.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::exit;
use crate::spool::recipients::dsn;
use crate::spool::{DataFile, MessageId, SpoolError, SpoolHeader, SpoolOption, SpoolPair};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// `-H` or `-D` files, or directories holding them (a split spool's subdirectories included).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Only validate; report each invalid message on stderr.
    #[arg(long)]
    check: bool,
}

/// Bytes as JSON text: UTF-8 where valid, `\xNN` for every other byte, so nothing is lost or
/// silently replaced.
pub fn text(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        out.push_str(chunk.valid());
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02X}"));
        }
    }
    out
}

/// The `-H` files named by the arguments, in a stable order.
fn collect(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let at = |p: &std::path::Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))
    };
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found = Vec::new();
            for entry in std::fs::read_dir(p).map_err(at(p))? {
                let entry = entry.map_err(at(p))?;
                let name = entry.file_name();
                let bytes = name.as_encoded_bytes();
                if MessageId::from_file_name(bytes, b'H').is_some() {
                    found.push(entry.path());
                } else if bytes.len() == 1 && bytes[0].is_ascii_alphanumeric() && entry.path().is_dir() {
                    for sub in std::fs::read_dir(entry.path()).map_err(at(&entry.path()))? {
                        let sub = sub.map_err(at(&entry.path()))?;
                        if MessageId::from_file_name(sub.file_name().as_encoded_bytes(), b'H').is_some() {
                            found.push(sub.path());
                        }
                    }
                }
            }
            found.sort();
            if found.is_empty() {
                crate::errln!("spoolsift inspect: no spool files (<id>-H) under {}", p.display());
            }
            out.extend(found);
        } else {
            std::fs::metadata(p).map_err(at(p))?;
            let name = p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
            match MessageId::from_file_name(name, b'D') {
                Some(id) => out.push(p.with_file_name(format!("{id}-H"))),
                None => out.push(p.clone()),
            }
        }
    }
    Ok(out)
}

/// Read and cross-check one pair.
fn load(path: &Path) -> Result<(SpoolHeader, DataFile, Vec<String>), SpoolError> {
    let header = SpoolHeader::read(path)?;
    let pair = SpoolPair::from_header_path(path).expect("read() validated the name");
    let data = DataFile::open(&pair.data_path(), &header.id)?;
    let counts = data.counts()?;
    let mut problems = Vec::new();
    if !header.is_wireformat() {
        let recorded = header.body_linecount().unwrap_or(0);
        if u64::try_from(recorded).ok() != Some(counts.lines) {
            problems.push(format!(
                "{}: -body_linecount says {recorded} but the body has {} lines (BDAT would send the wrong size)",
                path.display(),
                counts.lines
            ));
        }
    }
    if !header.non_recipients.was_sorted_on_read() {
        problems.push(format!(
            "{}: the non-recipients tree is not sorted; Exim would miss entries and deliver them again",
            path.display()
        ));
    }
    Ok((header, data, problems))
}

fn notify_words(flags: u32) -> Vec<&'static str> {
    let mut w = Vec::new();
    for (bit, name) in [
        (dsn::NOTIFY_NEVER, "NEVER"),
        (dsn::NOTIFY_SUCCESS, "SUCCESS"),
        (dsn::NOTIFY_FAILURE, "FAILURE"),
        (dsn::NOTIFY_DELAY, "DELAY"),
    ] {
        if flags & bit != 0 {
            w.push(name);
        }
    }
    w
}

/// The JSON description of one message.
pub fn describe(path: &Path, h: &SpoolHeader, data: &DataFile) -> Result<Value, SpoolError> {
    let counts = data.counts()?;
    let recipients: Vec<Value> = h
        .recipients
        .iter()
        .map(|r| {
            let f = &r.fields;
            json!({
                "address": text(&f.address),
                "state": if h.non_recipients.contains(&f.address) { "delivered" } else { "pending" },
                "orcpt": f.orcpt.as_deref().map(text),
                "notify": notify_words(f.dsn_flags),
                "dsn_flags": f.dsn_flags,
                "errors_to": f.errors_to.as_deref().map(text),
                "pno": f.pno,
            })
        })
        .collect();
    let options: Vec<Value> = h
        .options
        .0
        .iter()
        .map(|o| match o {
            SpoolOption::Line(l) => json!({
                "name": text(&l.name),
                "value": l.value.as_deref().map(text),
                "tainted": l.tainted,
                "quoter": l.quoter.as_deref().map(text),
            }),
            SpoolOption::Acl(a) => json!({
                "name": a.exim_name(),
                "value": text(&a.value),
                "tainted": a.tainted,
                "quoter": a.quoter.as_deref().map(text),
            }),
        })
        .collect();
    let headers: Vec<Value> = h
        .headers
        .all()
        .iter()
        .map(|l| {
            json!({
                "flag": char::from(l.flag().byte()).to_string(),
                "name": text(l.name()),
                "length": l.text().len(),
                "text": text(l.text()),
            })
        })
        .collect();
    Ok(json!({
        "file": path.display().to_string(),
        "id": h.id,
        "format": match h.id.format() { crate::spool::IdFormat::Old16 => "old", crate::spool::IdFormat::New23 => "new" },
        "originator": { "login": text(&h.originator.login), "uid": h.originator.uid, "gid": h.originator.gid },
        "sender": text(&h.sender),
        "received_time": h.received_time,
        "warning_count": h.warning_count,
        "frozen": h.frozen_at(),
        "recipients": recipients,
        "non_recipients": h.non_recipients.iter().map(text).collect::<Vec<_>>(),
        "options": options,
        "headers": headers,
        "live_header_count": h.headers.live().count(),
        "body": {
            "size": counts.len,
            "line_count": counts.lines,
            "nul_count": counts.nuls,
            "max_line_length": counts.max_line_len,
            "wire_format": h.is_wireformat(),
        },
        "message_size": h.message_size(counts.len),
    }))
}

pub fn run(args: &Args) -> i32 {
    let files = match collect(&args.paths) {
        Ok(f) => f,
        Err(e) => {
            crate::errln!("spoolsift inspect: {e}");
            return exit::ERROR;
        }
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut invalid = 0usize;
    for path in &files {
        // --check only validates: the JSON (a value per header line) is not built.
        let loaded = load(path).and_then(|(h, d, problems)| {
            Ok((if args.check { Value::Null } else { describe(path, &h, &d)? }, problems))
        });
        match loaded {
            Ok((value, problems)) => {
                for p in &problems {
                    crate::errln!("invalid: {p}");
                }
                invalid += usize::from(!problems.is_empty());
                if !args.check {
                    if let Err(e) = crate::output::checked(writeln!(out, "{value}")) {
                        crate::errln!("spoolsift inspect: writing to standard output: {e}");
                        return exit::ERROR;
                    }
                }
            }
            Err(e) => {
                if matches!(e.reason, crate::spool::Reason::Io(_)) && e.line == 0 && !path.exists() {
                    crate::errln!("spoolsift inspect: {e}");
                    return exit::ERROR;
                }
                crate::errln!("invalid: {e}");
                invalid += 1;
            }
        }
    }
    if invalid > 0 {
        crate::errln!("{invalid} of {} messages invalid", files.len());
        exit::INVALID
    } else {
        exit::OK
    }
}
