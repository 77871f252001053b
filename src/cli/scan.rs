//! `spoolsift scan PATH...`: run a pipeline over archived spool pairs, read-only, and report what
//! it would do with each message: its rules applied per recipient as the daemon applies them, and
//! `copies` listed where recipients would get different outcomes.
//!
//! Exit status: 0 nothing found (every message would be delivered), 1 something found (some
//! message would be quarantined, held, deferred or discarded), 2 usage or I/O error,
//! 3 some pairs could not be read (reported; found-or-not is then secondary).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde_json::{json, Value};

use super::exit;
use super::inspect::text;
use crate::intake::archive::{self, Shard};
use crate::output::checked;
use crate::outside::Clock;
use crate::pipeline::decide;
use crate::pipeline::rules::MessageFacts;
use crate::pipeline::{self, Action, PipelineConfig};
use crate::spool::{DataFile, MessageView, SpoolHeader, SpoolPair};
use crate::stages::Stage;

pub const FOUND: i32 = 1;
pub const UNREADABLE: i32 = 3;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Spool trees, queuefile directories, or any directories of `<id>-H`/`<id>-D` pairs.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Pipeline definition; the embedded one (built-in scanner only) when absent.
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Write the JSON lines here instead of standard output.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// Only the messages of shard `i/n` (by message id), to split an archive between machines.
    #[arg(long, value_parser = Shard::parse)]
    shard: Option<Shard>,
}

/// One message's report line, or why it could not be scanned.
fn scan_one(pair: &SpoolPair, stages: &[Box<dyn Stage>], cfg: &PipelineConfig) -> Result<(Value, Action), String> {
    let start = Instant::now();
    let header = SpoolHeader::read(&pair.header_path()).map_err(|e| e.to_string())?;
    let data = DataFile::open(&pair.data_path(), &header.id).map_err(|e| e.to_string())?;
    let view = MessageView::new(&header, &data);
    // As the daemon decides: each pending recipient under the rules, grouped by outcome; the
    // message's action is the most severe of its copies'.
    let pending: Vec<Vec<u8>> = header.pending_recipients().map(|(_, r)| r.address().to_vec()).collect();
    let settings = decide::settings_for(cfg, || MessageFacts::of(&header), &pending);
    let outcomes = decide::run_for(stages, &settings, &view, Clock::System);
    let groups = decide::groups(cfg, &pending, settings, &outcomes, view.len());
    let copies: Vec<Value> = groups
        .iter()
        .map(|g| {
            json!({
                "recipients": g.recipients.iter().map(|r| text(r)).collect::<Vec<_>>(),
                "action": g.decision.action,
                "reasons": g.decision.reasons,
                "rules": g.rules.iter().map(ToString::to_string).collect::<Vec<_>>(),
            })
        })
        .collect();
    let decision = decide::merged(groups).map(|g| g.decision).unwrap_or_else(|| cfg.policy.decide(&outcomes.all));
    let stage_json: Vec<Value> = outcomes
        .all
        .iter()
        .map(|o| {
            let mut v = match &o.result {
                Ok(r) => serde_json::to_value(r).unwrap_or(Value::Null),
                Err(e) => json!({ "error": e }),
            };
            v["stage"] = json!(o.stage);
            v["elapsed_us"] = json!(o.elapsed.as_micros() as u64);
            v
        })
        .collect();
    let mut line = json!({
        "file": pair.header_path().display().to_string(),
        "id": header.id,
        "sender": text(&header.sender),
        "recipients": header.pending_recipients().map(|(_, r)| text(r.address())).collect::<Vec<_>>(),
        "size": view.len(),
        "stages": stage_json,
        "action": decision.action,
        "reasons": decision.reasons,
        "elapsed_us": start.elapsed().as_micros() as u64,
    });
    // Only where the rules gave recipients different outcomes: what each copy would be.
    if copies.len() > 1 {
        line["copies"] = Value::Array(copies);
    }
    Ok((line, decision.action))
}

fn error_line(path: &Path, why: &str) -> Value {
    json!({ "file": path.display().to_string(), "error": why })
}

pub fn run(args: &Args) -> i32 {
    let cfg = match &args.pipeline {
        Some(p) => PipelineConfig::load(p),
        None => Ok(PipelineConfig::embedded()),
    };
    let stages = cfg.and_then(|c| pipeline::build::stages(&c).map(|s| (c, s)));
    let (cfg, stages) = match stages {
        Ok(x) => x,
        Err(e) => {
            crate::errln!("spoolsift scan: {e}");
            return exit::ERROR;
        }
    };
    let found = match archive::walk(&args.paths, args.shard) {
        Ok(f) => f,
        Err(e) => {
            crate::errln!("spoolsift scan: {e}");
            return exit::ERROR;
        }
    };
    for root in &found.empty_roots {
        crate::errln!("spoolsift scan: no spool files (<id>-H and <id>-D) under {}", root.display());
    }
    let mut sink: Box<dyn Write> = match &args.report {
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                crate::errln!("spoolsift scan: {}: {e}", p.display());
                return exit::ERROR;
            }
        },
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    let pool = match rayon::ThreadPoolBuilder::new().num_threads(args.jobs.unwrap_or(0)).build() {
        Ok(p) => p,
        Err(e) => {
            crate::errln!("spoolsift scan: {e}");
            return exit::ERROR;
        }
    };

    let start = Instant::now();
    let progress = Progress::new(found.pairs.len() as u64);
    let mut counts: std::collections::BTreeMap<&'static str, usize> = Default::default();
    let mut verdicts: std::collections::BTreeMap<String, usize> = Default::default();
    let mut unreadable = found.incomplete.len();
    let mut bytes = 0u64;
    let report_failed = |e: std::io::Error| {
        let to = args.report.as_ref().map_or("standard output".to_string(), |p| p.display().to_string());
        crate::errln!("spoolsift scan: writing the report to {to}: {e}");
        exit::ERROR
    };
    for (path, why) in &found.incomplete {
        if let Err(e) = checked(writeln!(sink, "{}", error_line(path, why))) {
            return report_failed(e);
        }
    }
    // Chunks keep memory flat on a large archive while the output stays in path order.
    for chunk in found.pairs.chunks(256) {
        let lines: Vec<_> = pool.install(|| chunk.par_iter().map(|p| (p, scan_one(p, &stages, &cfg))).collect());
        for (pair, r) in lines {
            let line = match r {
                Ok((line, action)) => {
                    *counts.entry(action.name()).or_default() += 1;
                    for st in line["stages"].as_array().into_iter().flatten() {
                        let what = st["verdict"].as_str().map_or_else(|| "error".to_string(), str::to_string);
                        *verdicts.entry(format!("{} {what}", st["stage"].as_str().unwrap_or("?"))).or_default() += 1;
                    }
                    bytes += line["size"].as_u64().unwrap_or(0);
                    line
                }
                Err(why) => {
                    unreadable += 1;
                    error_line(&pair.header_path(), &why)
                }
            };
            if let Err(e) = checked(writeln!(sink, "{line}")) {
                return report_failed(e);
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    if let Err(e) = checked(sink.flush()) {
        return report_failed(e);
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let scanned: usize = counts.values().sum();
    crate::errln!(
        "scanned {scanned} messages ({:.1} MB) in {secs:.2} s: {:.0} msg/s, {:.1} MB/s",
        bytes as f64 / 1e6,
        scanned as f64 / secs,
        bytes as f64 / 1e6 / secs
    );
    crate::errln!("  {:<32} {:>8}", "action", "messages");
    for (action, n) in &counts {
        crate::errln!("  {action:<32} {n:>8}");
    }
    crate::errln!("  {:<32} {:>8}", "stage verdict", "messages");
    for (verdict, n) in &verdicts {
        crate::errln!("  {verdict:<32} {n:>8}");
    }
    if unreadable > 0 {
        crate::errln!("  {:<32} {unreadable:>8}", "unreadable pairs");
        return UNREADABLE;
    }
    if counts.iter().any(|(a, n)| *a != crate::pipeline::Action::Deliver.name() && *n > 0) {
        FOUND
    } else {
        exit::OK
    }
}

/// A progress bar with rate and ETA on a terminal; a plain line every few seconds otherwise (a
/// log file should not fill with bar redraws).
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    total: u64,
    done: std::cell::Cell<u64>,
    started: Instant,
    last_line: std::cell::Cell<Instant>,
}

impl Progress {
    fn new(total: u64) -> Progress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {per_sec} ETA {eta} {elapsed_precise}")
            {
                b.set_style(style);
            }
            b
        });
        let now = Instant::now();
        Progress { bar, total, done: 0.into(), started: now, last_line: now.into() }
    }

    fn advance(&self, n: u64) {
        self.done.set(self.done.get() + n);
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_line.get().elapsed() >= std::time::Duration::from_secs(5) => {
                self.last_line.set(Instant::now());
                let rate = self.done.get() as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
                crate::errln!("scanned {}/{} ({rate:.0} msg/s)", self.done.get(), self.total);
            }
            None => {}
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
