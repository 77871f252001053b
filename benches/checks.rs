//! What each check costs: messages per second and CPU per message of one stage at a time over the
//! bench corpus, from as many threads as there are cores, each message's files read into memory
//! first (no file-system work in the timed loop). Rows:
//! * content with the name and type-label rules only (the file kinds, the format mismatches and
//!   the archive walk off): what the scanner did before it looked at attachments' bytes;
//! * content as configured by default (plus file kinds, mismatches and archives);
//! * the same two over a corpus where every attachment is a zip (of a PDF-named file and a
//!   text), so the archive walk has work on every message that has one;
//! * dkim, with one message in ten signed (RSA-2048, relaxed/relaxed, its record from a file);
//! * spamd and rspamd, when their addresses are given (`scripts/bench.sh` starts both), over the
//!   first `--service-messages` messages (their rates are the daemons' own: tens per second).
//!
//! ```sh
//! cargo bench --bench checks -- [--messages N] [--spamd HOST:PORT] [--rspamd URL]
//! ```

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/keys.rs"]
mod keys;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use cpu::proc_cpu_seconds;
use spoolsift::spool::{HeaderLine, MessageId, MessageView, Position, SpoolHeader};
use spoolsift::stages::arc::canon::{self, BodyHasher, Canon};
use spoolsift::stages::arc::keys::PrivateKey;
use spoolsift::stages::arc::verify::signed_headers;
use spoolsift::stages::content::{
    ContentConfig, ContentScanner, BUILTIN_BLOCKED_CONTENT_TYPES, BUILTIN_BLOCKED_EXTENSIONS,
    BUILTIN_DOUBLE_EXTENSION_DOCUMENTS,
};
use spoolsift::stages::dkim::{DkimConfig, DkimStage};
use spoolsift::stages::{Stage, StageError};

/// One corpus message in memory: its `-H` and its body.
type Message = (SpoolHeader, Vec<u8>);

fn load(dir: &Path, ids: &[(MessageId, u64)]) -> Vec<Message> {
    ids.iter()
        .map(|(id, _)| {
            let h = std::fs::read(dir.join(format!("{id}-H"))).unwrap();
            let d = std::fs::read(dir.join(format!("{id}-D"))).unwrap();
            let body = d[d.iter().position(|&b| b == b'\n').unwrap() + 1..].to_vec();
            (SpoolHeader::parse(&h, Some(id)).unwrap(), body)
        })
        .collect()
}

/// Run `stage` over `messages` from `threads` threads; print a row. Every answer must be one
/// `ok` accepts: a rate over failed checks would mean nothing.
fn row(label: &str, stage: &dyn Stage, messages: &[Message], threads: usize) {
    let next = AtomicUsize::new(0);
    let cpu = proc_cpu_seconds("self");
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some((h, body)) = messages.get(i) else { return mine };
                        let t = Instant::now();
                        let r = stage.check(&MessageView::new(h, body));
                        mine.push(t.elapsed());
                        if let Err(
                            e @ (StageError::Temporary(_) | StageError::Permanent(_) | StageError::Panicked(_)),
                        ) = r
                        {
                            panic!("{label}: message {i}: {e}");
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let cpu = proc_cpu_seconds("self") - cpu;
    latencies.sort();
    let p = |q: usize| latencies.get(latencies.len() * q / 100).map_or(0.0, |d| d.as_secs_f64() * 1e3);
    println!(
        "{label:<48} {:>6} {:>9.0} {:>8.3} {:>8.3} {:>10.3}",
        messages.len(),
        messages.len() as f64 / wall,
        p(50),
        p(99),
        cpu * 1e3 / messages.len() as f64
    );
}

/// The content stage with only what it checked before it read attachments' bytes.
fn names_only() -> ContentConfig {
    let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    ContentConfig {
        replace_builtin: true,
        blocked_extensions: list(BUILTIN_BLOCKED_EXTENSIONS),
        double_extension_documents: list(BUILTIN_DOUBLE_EXTENSION_DOCUMENTS),
        blocked_content_types: list(BUILTIN_BLOCKED_CONTENT_TYPES),
        blocked_file_types: Vec::new(),
        block_type_mismatch: false,
        archives: false,
        ..ContentConfig::default()
    }
}

/// The corpus with each base64 PDF attachment replaced by a zip holding it and a text file.
fn zipped(messages: &[Message]) -> Vec<Message> {
    use std::io::Write;
    let b64 = base64::engine::general_purpose::STANDARD;
    messages
        .iter()
        .map(|(h, body)| {
            let text = String::from_utf8_lossy(body);
            let marker = "Content-Type: application/pdf; name=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n";
            let Some(at) = text.find(marker) else { return (h.clone(), body.clone()) };
            let start = at + marker.len();
            let end = text[start..].find("\n--").map_or(text.len(), |e| start + e);
            let pdf = b64.decode(text[start..end].replace('\n', "")).unwrap_or_default();
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let opts = zip::write::SimpleFileOptions::default();
            w.start_file("report.pdf", opts).unwrap();
            w.write_all(&pdf).unwrap();
            w.start_file("notes.txt", opts).unwrap();
            w.write_all(b"see the report\n").unwrap();
            let zip = w.finish().unwrap().into_inner();
            let encoded: Vec<String> =
                b64.encode(&zip).as_bytes().chunks(76).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
            let new = format!(
                "{}Content-Type: application/zip; name=\"report.zip\"\nContent-Transfer-Encoding: base64\n\n{}{}",
                &text[..at],
                encoded.join("\n"),
                &text[end..]
            );
            (h.clone(), new.into_bytes())
        })
        .collect()
}

/// Sign one message in ten with a DKIM signature of `d=bench.example` (relaxed/relaxed over the
/// usual fields), as a sender's MTA would.
fn dkim_sign_some(messages: &mut [Message], key: &PrivateKey) -> usize {
    let names: Vec<Vec<u8>> =
        ["from", "to", "subject", "date", "message-id"].iter().map(|n| n.as_bytes().to_vec()).collect();
    let mut signed = 0;
    for (h, body) in messages.iter_mut().step_by(10) {
        let mut hasher = BodyHasher::new(Canon::Relaxed, None);
        let mut wire = Vec::new();
        let empty = SpoolHeader::parse(
            b"1xXORz-0000000058C-2p8L-H\nroot 0 0\n<a@b.example>\n1795895471 0\nXX\n1\nc@d.example\n\n",
            None,
        )
        .unwrap();
        MessageView::new(&empty, body).body_wire_reader().read_to_end(&mut wire).unwrap();
        hasher.update(&wire);
        let bh = base64::engine::general_purpose::STANDARD.encode(hasher.finish().0);
        let unsigned = format!(
            "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=bench.example; s=sel; h=from:to:subject:date:message-id; bh={bh}; b=\n"
        );
        let texts: Vec<&[u8]> = h.headers.live().map(HeaderLine::text).collect();
        let mut data = Vec::new();
        signed_headers(&names, Canon::Relaxed, &texts, &mut data);
        canon::header(Canon::Relaxed, unsigned.as_bytes(), &mut data);
        data.truncate(data.len() - 2);
        let b = base64::engine::general_purpose::STANDARD.encode(key.sign(&data).unwrap());
        let value = unsigned["DKIM-Signature: ".len()..unsigned.len() - 1].to_string() + &b;
        h.headers.add(b"DKIM-Signature", value.as_bytes(), Position::Top).unwrap();
        signed += 1;
    }
    signed
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let (mut n, mut service_n) = (2_000, 200);
    let (mut spamd, mut rspamd) = (None, None);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => n = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--service-messages" => service_n = args.next().and_then(|v| v.parse().ok()).expect("--service-messages N"),
            "--spamd" => spamd = Some(args.next().expect("--spamd HOST:PORT")),
            "--rspamd" => rspamd = Some(args.next().expect("--rspamd URL")),
            other => panic!("unknown argument {other}"),
        }
    }
    let threads = std::thread::available_parallelism().map_or(1, |c| c.get());
    let dir = tempfile::tempdir().unwrap();
    let ids = corpus::generate(dir.path(), n, false);
    let mut messages = load(dir.path(), &ids);
    let zips = zipped(&messages);
    let with_zip = zips.iter().zip(&messages).filter(|(z, m)| z.1 != m.1).count();

    let (key_file, record) = keys::rsa_2048(dir.path());
    let key = PrivateKey::from_pem(&std::fs::read(&key_file).unwrap()).unwrap();
    let signed = dkim_sign_some(&mut messages, &key);
    let records = dir.path().join("records.json");
    std::fs::write(&records, serde_json::json!({ "sel._domainkey.bench.example": record }).to_string()).unwrap();

    println!(
        "checks: {n} messages of the bench corpus (70% small text, 25% with an attachment, 5% large), \
         {with_zip} of them with a zip in the zipped corpus, {signed} DKIM-signed; {threads} threads"
    );
    println!("{:<48} {:>6} {:>9} {:>8} {:>8} {:>10}", "check", "msgs", "msg/s", "p50 ms", "p99 ms", "CPU ms/msg");
    let before = ContentScanner::new(names_only()).unwrap();
    let now = ContentScanner::new(ContentConfig::default()).unwrap();
    row("content, names and labels only (before)", &before, &messages, threads);
    row("content, + file kinds, mismatches, archives", &now, &messages, threads);
    row("content on zips, names and labels only", &before, &zips, threads);
    row("content on zips, + kinds, mismatches, archives", &now, &zips, threads);
    let dkim_config = DkimConfig { txt_records: Some(records.clone()), ..DkimConfig::default() };
    let txt = spoolsift::pipeline::build::arc_dns(&dkim_config.dns()).unwrap();
    let dkim = DkimStage::new(txt, dkim_config, Duration::from_secs(30));
    row(&format!("dkim ({signed} of {n} signed)"), &dkim, &messages, threads);
    let some = &messages[..service_n.min(messages.len())];
    if let Some(address) = spamd {
        let cfg = toml::from_str(&format!("address = \"{address}\"\nmax_connections = {threads}\n")).unwrap();
        let stage = spoolsift::stages::spamd::SpamdStage::new(cfg).unwrap();
        row("spamd (SpamAssassin, local tests)", &stage, some, threads);
    }
    if let Some(url) = rspamd {
        let cfg = toml::from_str(&format!("url = \"{url}\"\nmax_connections = {threads}\n")).unwrap();
        let stage = spoolsift::stages::rspamd::RspamdStage::new(cfg).unwrap();
        row("rspamd (normal worker, no network)", &stage, some, threads);
    }
}
