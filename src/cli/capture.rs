//! `spoolsift capture QUEUE_DIR OUT_DIR [--pipeline FILE]`: copy a live queue's complete pairs
//! without disturbing it (see [`crate::intake::capture`]). With `--pipeline`, the pipeline's
//! stages then run over the copies (read-only, as `scan` runs them) with recording on, so the
//! capture holds the service answers a replay needs.
//!
//! Exit status: 0 captured (pairs that were not complete are listed on stderr and left out),
//! 2 usage or I/O error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;

use super::exit;
use crate::intake::capture::{self, Manifest};
use crate::outside::{AnswerBook, Answers, Clock, Outside};
use crate::pipeline::{self, PipelineConfig};
use crate::spool::{DataFile, MessageId, MessageView, SpoolHeader, SpoolPair};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A queuefile directory or an Exim spool's `input/` (flat or split).
    queue_dir: PathBuf,
    /// Where the capture goes; must not exist, or be empty.
    out_dir: PathBuf,
    /// Run this pipeline's stages over the copies and record what the services answered.
    #[arg(long)]
    pipeline: Option<PathBuf>,
}

pub fn run(args: &Args) -> i32 {
    match capture(args) {
        Ok(()) => exit::OK,
        Err(e) => {
            crate::errln!("spoolsift capture: {e}");
            exit::ERROR
        }
    }
}

/// An output directory that is new or empty, so a capture never mixes with other files.
pub fn fresh_dir(dir: &Path) -> Result<(), String> {
    match std::fs::read_dir(dir).map(|mut rd| rd.next().is_none()) {
        Ok(false) => Err(format!("{}: not empty", dir.display())),
        Ok(true) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
        }
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

fn capture(args: &Args) -> Result<(), String> {
    // Load the pipeline before touching anything: a bad definition must not leave half a capture.
    let cfg = args.pipeline.as_ref().map(|p| PipelineConfig::load(p).map_err(|e| e.to_string())).transpose()?;
    if !args.queue_dir.is_dir() {
        return Err(format!("{}: not a directory", args.queue_dir.display()));
    }
    fresh_dir(&args.out_dir)?;
    let now = Clock::System.now_secs();
    let snap = capture::snapshot(&args.queue_dir, &args.out_dir, now).map_err(|e| e.to_string())?;
    for (path, why) in &snap.skipped {
        crate::errln!("spoolsift capture: not copied: {}: {why}", path.display());
    }
    let mut manifest = Manifest {
        format: capture::FORMAT,
        tool: format!("spoolsift {}", env!("CARGO_PKG_VERSION")),
        captured_at: now,
        answers: None,
        pipeline: None,
        messages: snap.messages,
    };
    if let Some(cfg) = cfg {
        let book = Arc::new(AnswerBook::new());
        let outside = Outside { clock: Clock::System, answers: Answers::Record(Arc::clone(&book)) };
        let stages = pipeline::build::stages_with(&cfg, &outside).map_err(|e| e.to_string())?;
        let queue = args.out_dir.join(capture::QUEUE);
        // Our own copies: the live queue is read once, by the snapshot.
        let failures: Vec<String> = manifest
            .messages
            .par_iter()
            .filter_map(|m| {
                let id = MessageId::parse(m.id.as_bytes()).ok()?;
                let pair = SpoolPair::new(&queue, id);
                let header = SpoolHeader::read(&pair.header_path()).map_err(|e| e.to_string());
                let run = header.and_then(|h| {
                    let data = DataFile::open(&pair.data_path(), &h.id).map_err(|e| e.to_string())?;
                    pipeline::run_stages(&stages, &MessageView::new(&h, &data));
                    Ok(())
                });
                // An unreadable pair is captured all the same: a replay shows what the pipeline
                // does with it (it is moved aside with its reason).
                run.err().map(|e| format!("{}: {e}", m.id))
            })
            .collect();
        for f in failures {
            crate::errln!("spoolsift capture: not scanned: {f}");
        }
        capture::write_atomically(&args.out_dir.join(capture::ANSWERS), &book.to_json(now))
            .map_err(|e| format!("{}: {e}", args.out_dir.display()))?;
        manifest.answers = Some(capture::ANSWERS.into());
        manifest.pipeline = Some(cfg.name.clone());
        let (services, txt) = book.len();
        crate::errln!("recorded {services} service answers and {txt} DNS TXT answers");
    }
    // The manifest last: its presence says the capture is complete.
    capture::write_atomically(&args.out_dir.join(capture::MANIFEST), &manifest.to_json())
        .map_err(|e| format!("{}: {e}", args.out_dir.display()))?;
    crate::errln!(
        "captured {} messages into {} ({} not copied)",
        manifest.messages.len(),
        args.out_dir.display(),
        snap.skipped.len()
    );
    Ok(())
}
