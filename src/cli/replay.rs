//! `spoolsift replay CAPTURE --pipeline FILE --out DIR [--expect DIR]`: run a pipeline over a
//! capture as the daemon would (the same engine: claim, stages, policy, headers, re-queue or
//! quarantine), with the capture's recorded service answers, a fixed clock (the capture's time)
//! and ids minted from it, writing an Exim-style spool under DIR: `input/` (flat), `quarantine/`,
//! and `actions.json` (each message's action, reasons and stage verdicts). Two replays of one
//! capture with one pipeline write the same bytes, so a replay's output is a regression test for
//! pipeline changes: `--expect` compares with an earlier output (see [`super::replay_diff`]).
//!
//! CAPTURE is never written: its pairs are copied into a private work area inside DIR
//! (`DIR/.replay-work`, removed at the end) and handed to the engine from there.
//!
//! Exit status: 0 replayed (and, with `--expect`, the same), 1 differences from `--expect`,
//! 2 usage or I/O error, 3 the capture lacks answers the pipeline asked for (each one listed;
//! those messages are left undecided, never given a made-up answer).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::capture::fresh_dir;
use super::{exit, replay_diff};
use crate::engine::{EngineBuilder, Handled, WorkDirs};
use crate::intake::capture::{self, Manifest};
use crate::intake::queuefile::QueuefileDir;
use crate::outside::{AnswerBook, Answers, Clock, Outside};
use crate::pipeline::{self, PipelineConfig};
use crate::requeue::TargetSpool;
use crate::state::{open_env, StateDb};

pub const MISSING_ANSWERS: i32 = 3;
pub const ACTIONS: &str = "actions.json";
const WORK: &str = ".replay-work";

/// The pid field of the ids a replay mints: fixed, so the ids depend on the capture alone.
const REPLAY_PID: u64 = 1;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A directory written by `spoolsift capture`.
    capture: PathBuf,
    /// The pipeline to replay ([intake] is not used; of [requeue], only the marker variable).
    #[arg(long)]
    pipeline: PathBuf,
    /// Where the output spool goes; must not exist, or be empty.
    #[arg(long)]
    out: PathBuf,
    /// An earlier replay's output to compare with.
    #[arg(long)]
    expect: Option<PathBuf>,
}

pub fn run(args: &Args) -> i32 {
    match replay(args) {
        Ok(code) => code,
        Err(e) => {
            crate::errln!("spoolsift replay: {e}");
            exit::ERROR
        }
    }
}

fn replay(args: &Args) -> Result<i32, String> {
    let cfg = PipelineConfig::load(&args.pipeline).map_err(|e| e.to_string())?;
    let manifest = Manifest::read_verified(&args.capture)?;
    let (book, clock) = match &manifest.answers {
        Some(name) => {
            let path = args.capture.join(name);
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            AnswerBook::from_json(&bytes).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => (AnswerBook::new(), manifest.captured_at),
    };
    let book = Arc::new(book);
    let clock = Clock::Fixed(clock);
    let outside = Outside { clock, answers: Answers::Replay(Arc::clone(&book)) };
    let stages = pipeline::build::stages_with(&cfg, &outside).map_err(|e| e.to_string())?;
    if let Some(expect) = &args.expect {
        if !expect.join(ACTIONS).is_file() {
            return Err(format!("{}: not a replay's output (no {ACTIONS})", expect.display()));
        }
    }
    fresh_dir(&args.out)?;
    let work = args.out.join(WORK);
    let result = run_engine(args, &manifest, &work, cfg, stages, clock);
    // The work area holds only copies; whatever happened, it goes.
    let _ = std::fs::remove_dir_all(&work);
    let handled = result?;

    let mut entries: Vec<_> = handled.iter().map(|h| action_entry(h, &work.join("work"))).collect();
    entries
        .sort_by(|a, b| (a["id"].as_str(), a["target_id"].as_str()).cmp(&(b["id"].as_str(), b["target_id"].as_str())));
    let mut text = serde_json::to_vec_pretty(&entries).map_err(|e| e.to_string())?;
    text.push(b'\n');
    capture::write_atomically(&args.out.join(ACTIONS), &text).map_err(|e| format!("{}: {e}", args.out.display()))?;
    // Standard output is kept for the comparison.
    for h in &handled {
        crate::errln!("{}", h.log_line());
    }

    let mut code = exit::OK;
    if let Some(expect) = &args.expect {
        let diff = replay_diff::compare(expect, &args.out)?;
        if !diff.is_empty() {
            crate::out!("{diff}");
            code = exit::INVALID;
        }
    }
    let (missing, missing_txt) = (book.missing(), book.missing_txt());
    for m in &missing {
        crate::errln!(
            "spoolsift replay: missing answer: stage {} message {} request sha256 {}",
            m.stage,
            m.message_id,
            m.request
        );
    }
    for name in &missing_txt {
        crate::errln!("spoolsift replay: missing answer: DNS TXT {name}");
    }
    if !missing.is_empty() || !missing_txt.is_empty() {
        code = MISSING_ANSWERS;
    }
    Ok(code)
}

fn run_engine(
    args: &Args,
    manifest: &Manifest,
    work: &Path,
    cfg: PipelineConfig,
    stages: Vec<Box<dyn crate::stages::Stage>>,
    clock: Clock,
) -> Result<Vec<Handled>, String> {
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    // The intake is a private Exim-style spool: pairs there are complete by construction, and
    // the engine takes them under the same rules as an incoming spool.
    let incoming = work.join("incoming");
    let intake_input = incoming.join("input");
    std::fs::create_dir_all(&intake_input).map_err(|e| io(&intake_input, e))?;
    let queue = args.capture.join(capture::QUEUE);
    for m in &manifest.messages {
        for suffix in ["D", "H"] {
            let name = format!("{}-{suffix}", m.id);
            std::fs::copy(queue.join(&name), intake_input.join(&name)).map_err(|e| io(&queue.join(&name), e))?;
        }
    }
    let dirs = WorkDirs {
        work: work.join("work"),
        quarantine: args.out.join("quarantine"),
        rejected: work.join("rejected"),
        state: work.join("state"),
    };
    dirs.create().map_err(|e| io(work, e))?;
    let input = args.out.join("input");
    std::fs::create_dir_all(&input).map_err(|e| io(&input, e))?;
    let env = open_env(&dirs.state).map_err(|e| format!("{}: {e}", dirs.state.display()))?;
    let db = StateDb::new(&env).map_err(|e| e.to_string())?;
    let target = TargetSpool::new(&args.out, None).map_err(|e| io(&args.out, e))?.with_split(false);
    let intake = QueuefileDir::exim_spool(&incoming, Duration::from_secs(900));
    // Our ARC seal comes with the pipeline, as in `watch`; its signatures and `t=` (the fixed
    // clock) are deterministic.
    let engine =
        EngineBuilder::new(cfg, db, dirs, intake, target).stages(stages).clock(clock).minter_pid(REPLAY_PID).build()?;
    let mut handled = Vec::new();
    // Deferred messages are due again only later, and a fixed clock never gets there: the loop
    // ends when nothing new is claimed.
    loop {
        let batch = engine.claim_batch().map_err(|e| format!("intake: {e}"))?;
        if batch.is_empty() {
            break;
        }
        handled.extend(engine.process(batch).map_err(|e| format!("processing: {e}"))?);
    }
    Ok(handled)
}

/// One message's line in `actions.json`: no timings, and no paths of the work area, so two
/// replays agree.
fn action_entry(h: &Handled, work: &Path) -> serde_json::Value {
    json!({
        "id": h.original_id,
        "target_id": h.target_id,
        "action": h.action,
        "recipients": h.recipients,
        "reasons": h.reasons.iter().map(|r| capture_path(r, work)).collect::<Vec<_>>(),
        "stages": h.stages.iter().map(|s| json!({ "stage": s.stage, "verdict": s.text })).collect::<Vec<_>>(),
    })
}

/// A reason naming a work file (`<work>/000000000007.<id>-H:9 ...`, from a pair that cannot be
/// read) names the capture's file instead (`queue/<id>-H:9 ...`): the work area's path and the
/// claim's sequence number differ from one replay to the next.
fn capture_path(reason: &str, work: &Path) -> String {
    let prefix = format!("{}/", work.display());
    let (mut out, mut rest) = (String::new(), reason);
    while let Some(at) = rest.find(&prefix) {
        out.push_str(&rest[..at]);
        out.push_str(capture::QUEUE);
        out.push('/');
        rest = &rest[at + prefix.len()..];
        let b = rest.as_bytes();
        if b.len() > 13 && b[..12].iter().all(u8::is_ascii_digit) && b[12] == b'.' {
            rest = &rest[13..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn work_paths_become_capture_paths() {
        let work = std::path::Path::new("/srv/out/.replay-work/work");
        assert_eq!(
            super::capture_path("/srv/out/.replay-work/work/000000000012.1xXYfY-0003Lh-1j-H:9 (byte 169): bad", work),
            "queue/1xXYfY-0003Lh-1j-H:9 (byte 169): bad"
        );
        assert_eq!(super::capture_path("content: infected (X)", work), "content: infected (X)");
    }
}
