//! `spoolsift kick`: the delivery helper. Runs `exim -Mc` on the messages the daemon re-queued
//! (the requests in `<work>/kick/`), outside the daemon's sandbox, and leaves what Exim said for
//! the daemon to check (see `src/requeue/kick/mod.rs` for why this is a process of its own).
//!
//! Also here: the daemon's side, [`Reports`], which reads those reports, looks at Exim's spool
//! and logs and counts what became of each message.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;

use super::exit;
use crate::metrics::Metrics;
use crate::pipeline::PipelineConfig;
use crate::requeue::kick::{KickOutcome, KickQueue, HEARTBEAT_EVERY, HELPER_SILENT};
use crate::requeue::{EximCommand, TargetSpool};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The daemon's pipeline definition: its [intake] work_directory and [requeue] exim_command.
    #[arg(long)]
    pipeline: PathBuf,
    /// Run what is requested now, then exit.
    #[arg(long)]
    once: bool,
}

/// At most this many Exim runs at once.
const PARALLEL: usize = 4;
/// How often the requests are listed even without a file-system event (events can be lost).
const RESCAN: Duration = Duration::from_secs(1);

pub fn run(args: &Args) -> i32 {
    match serve(args) {
        Ok(()) => exit::OK,
        Err(e) => {
            crate::logging::fatal("kick", &e);
            exit::ERROR
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    let cfg = PipelineConfig::load(&args.pipeline).map_err(|e| e.to_string())?;
    let (Some(intake), Some(rq)) = (&cfg.intake, &cfg.requeue) else {
        return Err(format!("{}: kick needs [intake] and [requeue] sections", args.pipeline.display()));
    };
    if rq.kick != crate::requeue::KickMode::Helper {
        // The daemon runs its kicks itself, or none: a second kicker would race it. Exit 0, so
        // that a unit that wants this one (spoolsift.service) does not restart it for ever.
        tracing::info!(
            "nothing to do: {} says kick = \"{}\", not \"helper\"",
            cfg.origin(&["requeue", "kick"]),
            rq.kick
        );
        return Ok(());
    }
    let exim = EximCommand::new(rq.exim_command.clone()).configured_at(cfg.origin(&["requeue", "exim_command"]));
    exim.check_runnable().map_err(|e| e.to_string())?;
    let queue = KickQueue::new(&intake.work_directory);
    queue.create().map_err(|e| format!("{}: {e}", queue.dir.display()))?;
    let batch = rq.kick_batch;
    if args.once {
        queue.heartbeat().map_err(|e| e.to_string())?;
        let n =
            queue.run_requests(&exim, "-Mc", batch, PARALLEL, &AtomicBool::new(false)).map_err(|e| e.to_string())?;
        tracing::info!("ran Exim on {n} messages");
        return Ok(());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    spawn_kicker(queue.clone(), exim, batch, stop, true)
        .map_err(|e| e.to_string())?
        .join()
        .map_err(|_| "the kick loop panicked".to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// The kick loop: watch the requests and run Exim on them until `stop`; say it is alive every
/// [`HEARTBEAT_EVERY`], busy or not. `spoolsift kick` runs it; so does the daemon with
/// `kick = "inline"`.
pub fn spawn_kicker(
    queue: KickQueue,
    exim: EximCommand,
    batch: usize,
    stop: Arc<AtomicBool>,
    announce: bool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        // A full channel already holds a wake-up.
        let _ = tx.try_send(());
    })
    .map_err(std::io::Error::other)?;
    watcher.watch(&queue.dir, notify::RecursiveMode::NonRecursive).map_err(std::io::Error::other)?;
    let beat = queue.clone();
    let beat_stop = Arc::clone(&stop);
    std::thread::Builder::new().name("kick-heartbeat".into()).spawn(move || {
        let step = Duration::from_millis(250);
        let mut since = HEARTBEAT_EVERY;
        while !beat_stop.load(Ordering::Relaxed) {
            if since >= HEARTBEAT_EVERY {
                if let Err(e) = beat.heartbeat() {
                    tracing::error!("{}: {e}", beat.ran.display());
                }
                since = Duration::ZERO;
            }
            std::thread::sleep(step);
            since += step;
        }
    })?;
    if announce {
        tracing::info!(
            "spoolsift {} kick: running Exim on the requests in {}",
            env!("CARGO_PKG_VERSION"),
            queue.dir.display()
        );
    }
    std::thread::Builder::new().name("kick".into()).spawn(move || {
        let _watcher = watcher;
        while !stop.load(Ordering::Relaxed) {
            // A stop lets the runs in hand finish (Exim killed mid-delivery leaves a -J and may
            // deliver again) and starts no new one.
            if let Err(e) = queue.run_requests(&exim, "-Mc", batch, PARALLEL, &stop) {
                tracing::error!("{}: {e}", queue.dir.display());
            }
            let _ = rx.recv_timeout(RESCAN);
        }
    })
}

/// The daemon's side: what became of each kicked message.
#[derive(Debug)]
pub struct Reports {
    pub queue: KickQueue,
    /// Requests already reported as not run (each is said once).
    said_not_run: HashSet<String>,
    /// The kicker starts after the daemon: requests left from before are not reported as not
    /// run until it has had [`HELPER_SILENT`] to say it is there.
    started: std::time::Instant,
}

impl Reports {
    pub fn new(queue: KickQueue) -> Reports {
        Reports { queue, said_not_run: HashSet::new(), started: std::time::Instant::now() }
    }

    /// Read every report, say and count its outcome, forget it; then report requests that no
    /// kicker has taken for [`HELPER_SILENT`] while none was heard of. Returns the outcomes.
    pub fn collect(&mut self, target: &TargetSpool, metrics: &Metrics) -> Vec<(String, KickOutcome)> {
        let mut seen = Vec::new();
        match self.queue.reports() {
            Ok(reports) => {
                for (r, report) in reports {
                    let outcome = crate::requeue::kick::classify(target, &r.id, &report);
                    say(r.id.as_str(), &outcome);
                    metrics.record_kick(outcome.label());
                    if let Err(e) = self.queue.remove_report(&r.name) {
                        tracing::error!("{}: {e}", self.queue.ran.display());
                    }
                    self.said_not_run.remove(&r.name);
                    seen.push((r.id.as_str().to_string(), outcome));
                }
            }
            Err(e) => tracing::error!("{}: {e}", self.queue.ran.display()),
        }
        let requests = self.queue.requests().unwrap_or_default();
        metrics.set_kick_waiting(requests.len() as u64);
        let silent = self.started.elapsed() >= HELPER_SILENT
            && self.queue.helper_silent_for().is_none_or(|d| d >= HELPER_SILENT);
        let live: HashSet<&str> = requests.iter().map(|r| r.name.as_str()).collect();
        self.said_not_run.retain(|name| live.contains(name.as_str()));
        if silent {
            for r in requests.iter().filter(|r| r.age >= HELPER_SILENT) {
                if self.said_not_run.insert(r.name.clone()) {
                    let outcome = KickOutcome::NotRun(format!(
                        "waiting {} s and no `spoolsift kick` is running (start spoolsift-kick.service); \
                         Exim's queue runner will deliver it",
                        r.age.as_secs()
                    ));
                    say(r.id.as_str(), &outcome);
                    metrics.record_kick(outcome.label());
                    seen.push((r.id.as_str().to_string(), outcome));
                }
            }
        }
        seen
    }
}

fn say(id: &str, outcome: &KickOutcome) {
    let detail = match outcome.detail() {
        "" => String::new(),
        d => format!(": {d}"),
    };
    if outcome.is_error() {
        tracing::error!("delivery of {id}: {}{detail}", outcome.label());
    } else {
        tracing::info!("delivery of {id}: {}{detail}", outcome.label());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::MessageId;

    fn age(path: &std::path::Path, by: Duration) {
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_request_nobody_runs_is_reported_once_and_only_without_a_kicker() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("spool/input")).unwrap();
        let target = TargetSpool::new(&t.path().join("spool"), None).unwrap();
        let queue = KickQueue::new(&t.path().join("work"));
        queue.create().unwrap();
        let id = MessageId::parse(b"1xYmS1-0001Cb-2Q").unwrap();
        queue.request(std::slice::from_ref(&id)).unwrap();
        let metrics = Metrics::new();
        let mut reports = Reports::new(queue.clone());
        reports.started -= HELPER_SILENT;
        assert!(reports.collect(&target, &metrics).is_empty(), "a fresh request waits");

        let name = queue.requests().unwrap()[0].name.clone();
        age(&queue.dir.join(&name), HELPER_SILENT + Duration::from_secs(1));
        // A kicker that said it is alive: the request is only waiting for it.
        queue.heartbeat().unwrap();
        assert!(reports.collect(&target, &metrics).is_empty());

        age(&queue.ran.join(".kicker-alive"), HELPER_SILENT);
        let seen = reports.collect(&target, &metrics);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].0, id.as_str());
        assert_eq!(seen[0].1.label(), "not-run");
        assert!(seen[0].1.detail().contains("no `spoolsift kick` is running"), "{:?}", seen[0].1);
        assert!(reports.collect(&target, &metrics).is_empty(), "said once");
        assert!(metrics.render().contains("spoolsift_kicks_total{outcome=\"not-run\"} 1\n"));
        assert!(metrics.render().contains("spoolsift_kick_requests_waiting 1\n"));
        assert_eq!(queue.requests().unwrap().len(), 1, "the request stays for a kicker that starts later");

        // The kicker starts and runs it; the message has left Exim's queue.
        let pending = queue.requests().unwrap();
        queue
            .record(
                &pending,
                &crate::requeue::kick::ExitReport {
                    status: "exit 0".into(),
                    success: true,
                    started: 0,
                    stderr: String::new(),
                },
            )
            .unwrap();
        let seen = reports.collect(&target, &metrics);
        assert_eq!(seen, vec![(id.as_str().to_string(), KickOutcome::Delivered)]);
        assert!(metrics.render().contains("spoolsift_kick_requests_waiting 0\n"));
    }
}
