//! `spoolsift queue --pipeline FILE list|show|retry|hold|release`: every message in spoolsift's
//! own hands, as `exim -bp` shows Exim's. Mail that spoolsift defers or moves aside is in no
//! Exim queue, so without this an admin would not see it.
//!
//! What is listed (`kind`):
//! - `waiting`: a pair in the intake (queuefile directory or incoming spool), not yet taken;
//! - `in-flight`: taken and being scanned or re-queued (or was, when the daemon stopped: its
//!   next start finishes it);
//! - `deferred`: scanned and deferred by policy, with its attempts, next try and reasons;
//! - `held`: deferred and held by `queue hold` (not retried until `queue release`);
//! - `rejected`: moved aside unread, with the error that put it there (never deleted);
//! - `kick`: re-queued into Exim, its delivery kick not run yet.
//!
//! `retry`, `hold` and `release` change a deferred claim in the daemon's journal, in one
//! transaction that refuses a claim the daemon is scanning at that moment.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::exit;
use crate::engine::WorkDirs;
use crate::intake::queuefile::QueuefileDir;
use crate::outside::clock::rfc3339;
use crate::pipeline::PipelineConfig;
use crate::requeue::KickQueue;
use crate::spool::SpoolHeader;
use crate::state::journal::now_secs;
use crate::state::{open_env, ClaimRecord, ClaimState, StateDb};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline the daemon runs (its [intake] names the directories).
    #[arg(long)]
    pipeline: PathBuf,
    #[command(subcommand)]
    command: Sub,
}

#[derive(Debug, clap::Subcommand)]
enum Sub {
    /// One line per message: kind, age, id, sender, recipients, attempts, next try, reason.
    List {
        /// One JSON object per message instead.
        #[arg(long)]
        json: bool,
    },
    /// One message (by its Exim id, original or re-queued, or its claim key), as JSON.
    Show { id: String },
    /// Try deferred messages again now.
    Retry {
        ids: Vec<String>,
        /// Every deferred message that is not held.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
    },
    /// Keep deferred messages from being tried again until released.
    Hold {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages: they are tried again now.
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

pub fn run(args: &Args) -> i32 {
    match serve(args) {
        Ok(code) => code,
        Err(e) => {
            crate::errln!("spoolsift queue: {e}");
            exit::ERROR
        }
    }
}

/// One message in spoolsift's hands.
#[derive(Debug, Clone, Default)]
struct Item {
    kind: &'static str,
    key: String,
    id: String,
    requeued_id: Option<String>,
    since: u64,
    attempts: u32,
    next_try: Option<u64>,
    reason: Option<String>,
    header: Option<PathBuf>,
    data: Option<PathBuf>,
}

impl Item {
    fn json(&self, now: u64) -> serde_json::Value {
        // A work file is named by its claim key, not its id: the id is not checked here.
        let header = self.header.as_deref().and_then(|p| {
            let bytes =
                crate::spool::header_file::read_bytes(p, Some(crate::spool::header_file::MAX_HEADER_FILE)).ok()?;
            SpoolHeader::parse(&bytes, None).ok()
        });
        let size = self.data.as_deref().and_then(|p| std::fs::symlink_metadata(p).ok()).map(|m| m.len());
        let size = match (&header, size) {
            // The -D file starts with its `<id>-D` line, which is not part of the message.
            (Some(h), Some(d)) => Some(h.message_size(d.saturating_sub(h.id.as_str().len() as u64 + 3))),
            _ => None,
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let pending: Vec<String> =
            header.as_ref().map_or(Vec::new(), |h| h.pending_recipients().map(|(_, r)| text(r.address())).collect());
        let subject = header
            .as_ref()
            .and_then(|h| h.headers.get(b"subject").next().map(|l| l.value()))
            .map(|v| crate::spool::headers::sanitize(&String::from_utf8_lossy(&v), 120));
        json!({
            "kind": self.kind,
            "key": self.key,
            "id": self.id,
            "requeued_id": self.requeued_id,
            "since": rfc3339(self.since),
            "age_secs": now.saturating_sub(self.since),
            "attempts": self.attempts,
            "next_try": self.next_try.map(rfc3339),
            "reason": self.reason,
            "sender": header.as_ref().map(|h| text(&h.sender)),
            "recipients": pending,
            "size": size,
            "subject": subject,
        })
    }
}

fn age_text(secs: u64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Everything in spoolsift's hands, oldest first.
fn items(cfg: &PipelineConfig, db: Option<&StateDb<'_>>) -> Result<Vec<Item>, String> {
    let intake = cfg.intake.as_ref().ok_or("the pipeline has no [intake] section")?;
    let dirs = WorkDirs::new(&intake.work_directory);
    let now = now_secs();
    let mut out = Vec::new();
    let orphan_age = Duration::from_secs(intake.orphan_age_secs);
    let source = match (&intake.queuefile_directory, &intake.incoming_spool_directory) {
        (Some(qf), _) => Some(QueuefileDir::new(qf, None, orphan_age)),
        (None, Some(spool)) => Some(QueuefileDir::exim_spool(spool, orphan_age)),
        _ => None,
    };
    if let Some(source) = source {
        for pair in source.list().map_err(|e| format!("{}: {e}", source.dir.display()))? {
            let since = mtime_secs(&pair.header_path()).unwrap_or(now);
            out.push(Item {
                kind: "waiting",
                id: pair.id.to_string(),
                since,
                header: Some(pair.header_path()),
                data: Some(pair.data_path()),
                ..Item::default()
            });
        }
    }
    for rec in db.map(|db| db.all()).transpose().map_err(|e| e.to_string())?.unwrap_or_default() {
        let (h, d) = dirs.files(&rec.key);
        let kind = match &rec {
            r if r.held => "held",
            r if r.state == ClaimState::Claimed && r.scan_run.is_none() && r.attempts > 0 => "deferred",
            _ => "in-flight",
        };
        out.push(Item {
            kind,
            next_try: (kind == "deferred").then_some(rec.not_before.max(now)),
            reason: rec.deferred_because.clone(),
            key: rec.key,
            id: rec.original_id,
            requeued_id: rec.target_id,
            since: rec.claimed_at,
            attempts: rec.attempts,
            header: Some(h),
            data: Some(d),
        });
    }
    if let Ok(entries) = std::fs::read_dir(&dirs.rejected) {
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let since = mtime_secs(&path).unwrap_or(now);
            if path.is_dir() {
                let reason = std::fs::read_to_string(path.join("reason")).ok().map(|r| r.trim().to_string());
                // `<seq>.<id>`, or `<seq>.<id>+<n>` for a copy of a split message.
                let id = name.split_once('.').map_or(name.as_str(), |(_, id)| id);
                let id = id.split_once('+').map_or(id, |(id, _)| id).to_string();
                out.push(Item {
                    kind: "rejected",
                    header: Some(path.join(format!("{id}-H"))),
                    data: Some(path.join(format!("{id}-D"))),
                    key: name.clone(),
                    id,
                    since,
                    reason,
                    ..Item::default()
                });
            } else {
                // An orphan -D (its -H never came), or another stray file the intake set aside.
                let id = name.split('-').take(3).collect::<Vec<_>>().join("-");
                out.push(Item {
                    kind: "rejected",
                    key: name.clone(),
                    id,
                    since,
                    reason: Some("a file without its partner (an orphan) moved aside by the intake".into()),
                    data: Some(path),
                    ..Item::default()
                });
            }
        }
    }
    let kicks = KickQueue::new(&intake.work_directory);
    for r in kicks.requests().unwrap_or_default() {
        out.push(Item {
            kind: "kick",
            key: String::new(),
            id: r.id.to_string(),
            requeued_id: Some(r.id.to_string()),
            since: now.saturating_sub(r.age.as_secs()),
            attempts: 0,
            next_try: None,
            reason: Some("re-queued into Exim; `spoolsift kick` has not run its delivery yet".into()),
            ..Item::default()
        });
    }
    out.sort_by(|a, b| a.since.cmp(&b.since).then(a.id.cmp(&b.id)));
    Ok(out)
}

fn mtime_secs(p: &Path) -> Option<u64> {
    let m = std::fs::symlink_metadata(p).ok()?.modified().ok()?;
    Some(m.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs())
}

fn matches(item: &Item, wanted: &str) -> bool {
    (!item.key.is_empty() && item.key == wanted) || item.id == wanted || item.requeued_id.as_deref() == Some(wanted)
}

fn serve(args: &Args) -> Result<i32, String> {
    let cfg = PipelineConfig::load(&args.pipeline).map_err(|e| e.to_string())?;
    let intake = cfg.intake.as_ref().ok_or("the pipeline has no [intake] section")?;
    let dirs = WorkDirs::new(&intake.work_directory);
    // The journal is the daemon's: never created here (root would own it).
    let env = if dirs.state.join("data.mdb").exists() {
        Some(open_env(&dirs.state).map_err(|e| format!("{}: {e}", dirs.state.display()))?)
    } else {
        None
    };
    let db = env.as_ref().map(StateDb::new).transpose().map_err(|e| e.to_string())?;
    let now = now_secs();
    match &args.command {
        Sub::List { json } => {
            for item in items(&cfg, db.as_ref())? {
                let j = item.json(now);
                if *json {
                    crate::outln!("{j}");
                    continue;
                }
                let rcpts = j["recipients"].as_array().map_or(0, Vec::len);
                let mut line = format!(
                    "{:<9} {:>4} {} <{}> {} rcpt{}",
                    item.kind,
                    age_text(now.saturating_sub(item.since)),
                    item.id,
                    j["sender"].as_str().unwrap_or("?"),
                    rcpts,
                    if rcpts == 1 { "" } else { "s" }
                );
                if let Some(to) = item.requeued_id.as_deref().filter(|t| *t != item.id) {
                    line.push_str(&format!(" -> {to}"));
                }
                if item.attempts > 0 {
                    line.push_str(&format!(" attempts={}", item.attempts));
                }
                if let Some(next) = item.next_try {
                    line.push_str(&format!(" next=in {}", age_text(next.saturating_sub(now))));
                }
                if let Some(r) = item.reason.as_deref().filter(|r| !r.is_empty()) {
                    line.push_str(&format!(" reason: {r}"));
                }
                crate::outln!("{line}");
            }
            Ok(exit::OK)
        }
        Sub::Show { id } => {
            let found: Vec<Item> = items(&cfg, db.as_ref())?.into_iter().filter(|i| matches(i, id)).collect();
            if found.is_empty() {
                return Err(format!("no message {id} in spoolsift's hands (see `spoolsift queue list`)"));
            }
            for item in found {
                crate::outln!("{}", serde_json::to_string_pretty(&item.json(now)).unwrap_or_default());
            }
            Ok(exit::OK)
        }
        Sub::Retry { ids, all } => {
            let db = db.as_ref().ok_or("no journal yet: nothing is deferred")?;
            let all_claims = db.all().map_err(|e| e.to_string())?;
            let waiting = |r: &ClaimRecord| r.state == ClaimState::Claimed && r.scan_run.is_none();
            let targets: Vec<&ClaimRecord> = if *all {
                all_claims.iter().filter(|r| waiting(r) && !r.held).collect()
            } else {
                let named = claims_for(&all_claims, ids)?;
                if let Some(r) = named.iter().find(|r| r.held) {
                    return Err(format!("{} is held: `spoolsift queue release` it to try it again", r.key));
                }
                named
            };
            change(db, &targets, "retry", |r| r.not_before = 0)
        }
        Sub::Hold { ids } => {
            let db = db.as_ref().ok_or("no journal yet: nothing is deferred")?;
            let all_claims = db.all().map_err(|e| e.to_string())?;
            change(db, &claims_for(&all_claims, ids)?, "hold", |r| r.held = true)
        }
        Sub::Release { ids } => {
            let db = db.as_ref().ok_or("no journal yet: nothing is deferred")?;
            let all_claims = db.all().map_err(|e| e.to_string())?;
            change(db, &claims_for(&all_claims, ids)?, "release", |r| {
                r.held = false;
                r.not_before = 0;
            })
        }
    }
}

/// The claims of the given ids (an Exim id may name several copies of one message).
fn claims_for<'a>(all: &'a [ClaimRecord], ids: &[String]) -> Result<Vec<&'a ClaimRecord>, String> {
    let mut claims = Vec::new();
    for id in ids {
        let before = claims.len();
        claims.extend(
            all.iter().filter(|r| r.key == *id || r.original_id == *id || r.target_id.as_deref() == Some(id.as_str())),
        );
        if claims.len() == before {
            return Err(format!("no deferred or held message {id} (see `spoolsift queue list`)"));
        }
    }
    Ok(claims)
}

fn change(db: &StateDb<'_>, claims: &[&ClaimRecord], what: &str, f: impl Fn(&mut ClaimRecord)) -> Result<i32, String> {
    let mut code = exit::OK;
    for key in claims.iter().map(|c| &c.key) {
        match db.update_waiting(key, &f).map_err(|e| e.to_string())? {
            Some(true) => crate::outln!("{what}: {key}"),
            Some(false) => {
                crate::errln!("spoolsift queue: {key} is being scanned or re-queued now; try again when it is not");
                code = exit::INVALID;
            }
            None => {
                crate::errln!("spoolsift queue: {key} is gone (finished meanwhile)");
                code = exit::INVALID;
            }
        }
    }
    Ok(code)
}
