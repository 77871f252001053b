//! `spoolsift arc-verify [--txt-records FILE] [--json] FILE...`: validate the ARC chain of raw
//! RFC 5322 messages or spool `-H` files (their `-D` beside them). Exit 0 whatever the verdicts,
//! 2 on a usage or I/O error (the other files are still checked).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::exit;
use super::inspect::text;
use crate::dns::{DnsTxt, ResolverSettings, StaticTxt, TxtLookup};
use crate::spool::{DataFile, MessageId, MessageView, SpoolHeader, SpoolPair};
use crate::stages::arc::header_texts;
use crate::stages::arc::verify::{self, split_message, ArcResult};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Raw messages, or spool `-H` files.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Key records from a JSON file (name → TXT string, or array of strings concatenated) instead
    /// of DNS.
    #[arg(long)]
    txt_records: Option<PathBuf>,
    /// One JSON object per file.
    #[arg(long)]
    json: bool,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn check(path: &Path, dns: &dyn TxtLookup) -> Result<ArcResult, String> {
    let name = path.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
    if MessageId::from_file_name(name, b'H').is_some() {
        let header = SpoolHeader::read(path).map_err(|e| e.to_string())?;
        let pair =
            SpoolPair::from_header_path(path).ok_or_else(|| format!("{}: not a spool -H name", path.display()))?;
        let data = DataFile::open(&pair.data_path(), &header.id).map_err(|e| e.to_string())?;
        let view = MessageView::new(&header, &data);
        verify::verify(&header_texts(&header), &mut view.body_wire_reader(), dns, now_secs())
            .map_err(|e| format!("{}: {e}", pair.data_path().display()))
    } else {
        let raw = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let (headers, body) = split_message(&raw);
        let mut body = crate::spool::message::CrlfReader::new(body);
        verify::verify(&headers, &mut body as &mut dyn Read, dns, now_secs())
            .map_err(|e| format!("{}: {e}", path.display()))
    }
}

pub fn run(args: &Args) -> i32 {
    let dns: Box<dyn TxtLookup> = match &args.txt_records {
        Some(p) => match std::fs::read(p).map_err(|e| e.to_string()).and_then(|b| StaticTxt::from_json(&b)) {
            Ok(t) => Box::new(t),
            Err(e) => {
                crate::errln!("spoolsift arc-verify: {}: {e}", p.display());
                return exit::ERROR;
            }
        },
        None => {
            let settings = ResolverSettings { nameservers: Vec::new(), timeout: Duration::from_secs(5), attempts: 2 };
            match DnsTxt::new(&settings) {
                Ok(r) => Box::new(r),
                Err(e) => {
                    crate::errln!("spoolsift arc-verify: {e}");
                    return exit::ERROR;
                }
            }
        }
    };
    let mut status = exit::OK;
    for f in &args.files {
        match check(f, dns.as_ref()) {
            Ok(r) if args.json => {
                let line = json!({
                    "file": text(f.as_os_str().as_encoded_bytes()),
                    "result": r.result.as_str(),
                    "reason": r.reason,
                    "instances": r.instances,
                    "oldest_pass": r.oldest_pass,
                    "domains": r.domains,
                });
                crate::outln!("{line}");
            }
            Ok(r) => {
                let mut line = format!("{}: arc={}", f.display(), r.result.as_str());
                if r.instances > 0 {
                    line.push_str(&format!(" i={} domains={}", r.instances, r.domains.join(",")));
                }
                if r.result == verify::ArcStatus::Pass {
                    line.push_str(&format!(" oldest-pass={}", r.oldest_pass));
                }
                if !r.reason.is_empty() {
                    line.push_str(&format!(" ({})", r.reason));
                }
                crate::outln!("{line}");
            }
            Err(e) => {
                crate::errln!("spoolsift arc-verify: {e}");
                status = exit::ERROR;
            }
        }
    }
    status
}
