//! `spoolsift explain --pipeline P ID|FILE...`: for each recipient of a message, which rules
//! matched, what they set, and the action that results, without changing anything. The stages
//! run (read-only, as `scan` runs them), so the action is the one the daemon would take now.
//!
//! A FILE is a `-H` (its `-D` beside it, under any name the daemon gives it: `<id>-D`, or
//! `<key>-D` in the work directory). An ID is looked for where the pipeline's messages are: its
//! intake (the queuefile directory, or the incoming spool's `input/`), its work directory and its
//! quarantine.

use std::path::{Path, PathBuf};

use super::exit;
use super::inspect::text;
use crate::outside::Clock;
use crate::pipeline::decide;
use crate::pipeline::rules::MessageFacts;
use crate::pipeline::{self, PipelineConfig};
use crate::spool::{DataFile, MessageId, MessageView, SpoolHeader};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline definition (its rules, stages and policy).
    #[arg(long)]
    pipeline: PathBuf,
    /// Message ids, or `-H` files.
    #[arg(required = true)]
    messages: Vec<String>,
}

pub fn run(args: &Args) -> i32 {
    let cfg = match PipelineConfig::load(&args.pipeline) {
        Ok(c) => c,
        Err(e) => {
            crate::logging::fatal("explain", &e.to_string());
            return exit::ERROR;
        }
    };
    let stages = match pipeline::build::stages(&cfg) {
        Ok(s) => s,
        Err(e) => {
            crate::logging::fatal("explain", &e.to_string());
            return exit::ERROR;
        }
    };
    let mut status = exit::OK;
    for m in &args.messages {
        match find(&cfg, m).and_then(|h| explain(&cfg, &stages, &h)) {
            Ok(lines) => lines.iter().for_each(|l| crate::outln!("{l}")),
            Err(e) => {
                crate::errln!("spoolsift explain: {m}: {e}");
                status = exit::INVALID;
            }
        }
    }
    status
}

/// The `-H` a FILE or ID names.
fn find(cfg: &PipelineConfig, what: &str) -> Result<PathBuf, String> {
    let path = Path::new(what);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let id = MessageId::parse(what.as_bytes()).map_err(|_| "neither a file nor a message id".to_string())?;
    let intake = cfg.intake.as_ref().ok_or("the pipeline has no [intake] to look in; name the -H file")?;
    let mut places: Vec<PathBuf> = Vec::new();
    if let Some(q) = &intake.queuefile_directory {
        places.push(q.join(format!("{id}-H")));
    }
    if let Some(s) = &intake.incoming_spool_directory {
        places.push(s.join("input").join(id.split_char().to_string()).join(format!("{id}-H")));
        places.push(s.join("input").join(format!("{id}-H")));
    }
    let dirs = crate::engine::WorkDirs::new(&intake.work_directory);
    let suffix = format!(".{id}-H");
    for entry in std::fs::read_dir(&dirs.work).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with(&suffix) {
            places.push(entry.path());
        }
    }
    for entry in std::fs::read_dir(&dirs.quarantine).into_iter().flatten().flatten() {
        places.push(entry.path().join(format!("{id}-H")));
    }
    places
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| format!("not in the intake, the work directory or the quarantine of {}", cfg.source.display()))
}

/// What the pipeline would do with the message whose `-H` is at `h`, a line each.
fn explain(cfg: &PipelineConfig, stages: &[Box<dyn crate::stages::Stage>], h: &Path) -> Result<Vec<String>, String> {
    let bytes = std::fs::read(h).map_err(|e| format!("{}: {e}", h.display()))?;
    let header = SpoolHeader::parse(&bytes, None).map_err(|e| e.in_file(h).to_string())?;
    let name = h.file_name().unwrap_or_default().to_string_lossy();
    let d = h.with_file_name(format!("{}D", name.strip_suffix('H').unwrap_or(&name)));
    let data = DataFile::open(&d, &header.id).map_err(|e| e.to_string())?;
    let owed: Vec<Vec<u8>> = header.pending_recipients().map(|(_, r)| r.address().to_vec()).collect();
    let facts = MessageFacts::of(&header);
    let settings: Vec<_> = owed.iter().map(|r| cfg.ruleset.for_recipient(&cfg.policy, &facts, r)).collect();
    let view = MessageView::new(&header, &data);
    let outcomes = decide::run_for(stages, &settings, &view, Clock::System);
    let size = header.message_size(data.body_len());
    let decisions = decide::per_recipient(&owed, settings, &outcomes, size);
    let client = header.client_ip().map(|ip| format!(" [{ip}]")).unwrap_or_else(|| " (local)".into());
    let mut out = vec![format!("{} <{}>{client} S={size} ({})", header.id, text(&header.sender), h.display())];
    let words: Vec<String> = outcomes
        .all
        .iter()
        .map(|o| match &o.result {
            Ok(r) => format!("{}={}", o.stage, r.verdict),
            Err(e) => format!("{}={e}", o.stage),
        })
        .collect();
    out.push(format!("  stages: {}", if words.is_empty() { "(none)".into() } else { words.join(", ") }));
    for d in &decisions {
        out.push(format!("  {}: {}", text(&d.recipient), d.decision.action.name()));
        let matched: Vec<String> = d.settings.matched.iter().map(ToString::to_string).collect();
        out.push(format!(
            "    rules matched: {}",
            if matched.is_empty() { "(none)".into() } else { matched.join(" ") }
        ));
        for (setting, origin) in &d.settings.decided {
            out.push(format!("    {setting} ({origin})"));
        }
        if !d.decision.reasons.is_empty() {
            out.push(format!("    reasons: {}", d.decision.reasons.join("; ")));
        }
    }
    let tell = crate::sinks::notify::Tell { recipients: cfg.notify.recipients, sender: cfg.notify.sender };
    let groups = decide::group(decisions, tell);
    let copies: Vec<String> = groups
        .iter()
        .map(|g| {
            let who: Vec<String> = g.recipients.iter().map(|r| text(r)).collect();
            format!("{} ({})", g.decision.action.name(), who.join(" "))
        })
        .collect();
    out.push(match copies.len() {
        0 => "  nothing owed".to_string(),
        1 => format!("  one outcome: {}", copies[0]),
        n => format!("  {n} copies: {}", copies.join("; ")),
    });
    Ok(out)
}
