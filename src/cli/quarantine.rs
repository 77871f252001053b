//! `spoolsift quarantine --pipeline FILE list|show|release|delete`: the quarantine store.
//! `release` re-queues the message into Exim's spool by the same procedure as `watch`.

use std::path::PathBuf;

use super::exit;
use crate::engine::WorkDirs;
use crate::pipeline::PipelineConfig;
use crate::requeue::{self, BodyPlan, EximCommand, IdDecision, KickMode, Kicker, Marker, TargetSpool, Transform};
use crate::sinks::quarantine::{Entry, QuarantineStore};
use crate::spool::{DataFile, IdMinter, Position, SpoolHeader};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline the daemon runs (its [intake] names the store, its [requeue] the target).
    #[arg(long)]
    pipeline: PathBuf,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// One line per entry: key, id, date, size, sender, recipients, subject, reasons.
    List {
        /// One JSON object per entry instead (docs/quarantine.md).
        #[arg(long)]
        json: bool,
    },
    /// The verdict of one entry (by its key or the message's Exim id), as JSON.
    Show { key: String },
    /// Re-queue the message for delivery, once, and remove the entry.
    Release { key: String },
    /// Remove the entry for good.
    Delete { key: String },
    /// Delete the entries older than `[quarantine] keep_days` now (the daemon does it once a
    /// minute).
    Expire,
}

pub fn run(args: &Args) -> i32 {
    match serve(args) {
        Ok(code) => code,
        Err(e) => {
            crate::errln!("spoolsift quarantine: {e}");
            exit::ERROR
        }
    }
}

/// What `list` says of an entry (docs/quarantine.md): from its verdict and its files.
fn listed(e: &Entry) -> serde_json::Value {
    let header = SpoolHeader::read(&e.header_path()).ok();
    let subject = header
        .as_ref()
        .and_then(|h| h.headers.get(b"subject").next().map(|l| l.value()))
        .map(|v| crate::spool::headers::sanitize(&String::from_utf8_lossy(&v), 120))
        .unwrap_or_default();
    let size = std::fs::metadata(e.data_path()).map(|m| m.len()).unwrap_or(0)
        + header.as_ref().map_or(0, |h| h.headers.live_len() as u64);
    // Entries made before the time was written in RFC 3339 hold Unix seconds.
    let when = match &e.verdict["quarantined_at"] {
        serde_json::Value::Number(n) => serde_json::json!(n.as_u64().map(crate::outside::clock::rfc3339)),
        other => other.clone(),
    };
    serde_json::json!({
        "key": e.key,
        "id": e.id.as_str(),
        "quarantined_at": when,
        "size": size,
        "sender": e.verdict["sender"],
        "recipients": e.verdict["recipients"],
        "subject": subject,
        "reasons": e.verdict["reasons"],
        "releasing": e.releasing(),
    })
}

/// The one entry `key` names: an entry's key, or a quarantined message's Exim id.
fn entry(store: &QuarantineStore, key: &str) -> Result<Entry, String> {
    let mut found = store.find(key).map_err(|e| e.to_string())?;
    match found.len() {
        0 => Err(format!("no quarantine entry {key:?}")),
        1 => Ok(found.remove(0)),
        _ => Err(format!(
            "{key} is quarantined in {} entries ({}); name one by its key",
            found.len(),
            found.iter().map(|e| e.key.as_str()).collect::<Vec<_>>().join(", ")
        )),
    }
}

fn serve(args: &Args) -> Result<i32, String> {
    let cfg = PipelineConfig::load(&args.pipeline).map_err(|e| e.to_string())?;
    let intake = cfg.intake.as_ref().ok_or("the pipeline has no [intake] section")?;
    let store = QuarantineStore::new(&WorkDirs::new(&intake.work_directory).quarantine);
    match &args.command {
        Sub::List { json } => {
            for e in store.list().map_err(|e| e.to_string())? {
                let item = listed(&e);
                if *json {
                    crate::outln!("{item}");
                    continue;
                }
                let words = |k: &str| -> Vec<String> {
                    item[k]
                        .as_array()
                        .map(|a| a.iter().filter_map(|r| r.as_str().map(String::from)).collect())
                        .unwrap_or_default()
                };
                let releasing = match &item["releasing"] {
                    serde_json::Value::String(id) if id.is_empty() => " (being released)".to_string(),
                    serde_json::Value::String(id) => format!(" (released as {id})"),
                    _ => String::new(),
                };
                crate::outln!(
                    "{} {} {} {} <{}> -> {} {:?}: {}{releasing}",
                    e.key,
                    e.id,
                    item["quarantined_at"].as_str().unwrap_or("?"),
                    item["size"],
                    item["sender"].as_str().unwrap_or_default(),
                    words("recipients").join(","),
                    item["subject"].as_str().unwrap_or_default(),
                    words("reasons").join("; ")
                );
            }
        }
        Sub::Expire => {
            let keep = std::time::Duration::from_secs(cfg.quarantine.keep_days.saturating_mul(86400));
            for e in store.expire(keep, std::time::SystemTime::now()).map_err(|e| e.to_string())? {
                crate::outln!("expired {} {}", e.key, e.id);
            }
        }
        Sub::Show { key } => {
            let e = entry(&store, key)?;
            crate::outln!("{}", serde_json::to_string_pretty(&e.verdict).map_err(|e| e.to_string())?);
        }
        Sub::Delete { key } => {
            let e = entry(&store, key)?;
            store.delete(&e).map_err(|e| e.to_string())?;
            crate::errln!("deleted {} ({})", e.key, e.id);
        }
        Sub::Release { key } => {
            let e = entry(&store, key)?;
            let rq = cfg.requeue.as_ref().ok_or("the pipeline has no [requeue] section")?;
            let exim = EximCommand::new(rq.exim_command.clone());
            let split = match rq.split_spool_directory {
                Some(s) => s,
                None => exim.split_spool_directory().map_err(|e| e.to_string())?,
            };
            let target = TargetSpool::new(&rq.spool_directory, None).map_err(|e| e.to_string())?.with_split(split);
            let transform = Transform { marker: Marker::named(&rq.marker, "yes")?, ..Transform::default() };
            let mut header = SpoolHeader::read(&e.header_path()).map_err(|e| e.to_string())?;
            let data = DataFile::open(&e.data_path(), &header.id).map_err(|e| e.to_string())?;
            transform.apply(&mut header);
            let when = crate::state::journal::now_secs().to_string();
            header
                .headers
                .add(b"X-Spoolsift-Released", format!("from quarantine at {when}").as_bytes(), Position::Bottom)
                .map_err(|e| e.to_string())?;
            match requeue::decide(&target, &header.id, &transform.marker).map_err(|e| e.to_string())? {
                IdDecision::KeepId => {}
                IdDecision::Busy => return Err(format!("{} is busy in Exim's spool; try again", header.id)),
                IdDecision::MintId | IdDecision::AlreadyRequeued => {
                    let new = IdMinter::new(header.id.format()).mint();
                    transform.change_id(&mut header, new);
                }
            }
            // Once only: a second release, at once or later, must not deliver it again. The
            // claim names the id before the commit, so a release that stopped after it is found
            // and not repeated.
            let Some(mut claim) = store.claim_release(&e).map_err(|e| e.to_string())? else {
                return Err(match e.releasing().filter(|id| !id.is_empty()) {
                    Some(id) => format!(
                        "{} was released already, as {id}: see `exim -bp`; delete the entry once that is \
                         settled",
                        e.key
                    ),
                    None => format!("a release of {} has begun already", e.key),
                });
            };
            {
                use std::io::Write;
                writeln!(claim, "{}", header.id).and_then(|()| claim.sync_all()).map_err(|e| e.to_string())?;
            }
            let done = requeue::commit(&target, &header, BodyPlan::Copy(&data)).map_err(|err| {
                format!(
                    "releasing {} as {}: {err}; if `exim -bp` does not list {}, remove {} and release it again",
                    e.key,
                    header.id,
                    header.id,
                    e.dir.join("releasing").display()
                )
            })?;
            drop(data);
            store.delete(&e).map_err(|e| e.to_string())?;
            crate::errln!("released {} as {}", e.key, done.id);
            // Run by an admin, outside the daemon's sandbox: Exim can be run here directly,
            // whether the daemon hands its kicks to a helper or runs them itself.
            if rq.kick != KickMode::Off {
                for (id, outcome) in Kicker::new(exim).kick(&target, &[done.id]) {
                    let detail = match outcome.detail() {
                        "" => String::new(),
                        d => format!(": {d}"),
                    };
                    if outcome.is_error() {
                        // Released all the same (it is in Exim's queue: releasing again would
                        // say so); the exit status says that Exim's side needs a look.
                        crate::errln!("warning: released, but the delivery of {id}: {}{detail}", outcome.label());
                        return Ok(exit::INVALID);
                    }
                    crate::errln!("delivery of {id}: {}{detail}", outcome.label());
                }
            }
        }
    }
    Ok(exit::OK)
}
