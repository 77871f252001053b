//! `spoolsift watch`: the daemon. Watches the queuefile directory (inotify, plus a periodic full
//! rescan because events can be lost), and runs the engine on what arrives.
//!
//! SIGTERM/SIGINT: finish the batches in hand, commit them, exit (at most 5 s later, finished or
//! not: the journal keeps the rest for the next start). SIGHUP: reload the pipeline (stages,
//! policy, headers); a definition that does not load is reported and the old one kept.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::Watcher;

use super::exit;
use crate::engine::Next;
use crate::engine::{Engine, EngineBuilder, Handled, Outcome, WorkDirs};
use crate::intake::queuefile::QueuefileDir;
use crate::metrics::{self, Metrics};
use crate::pipeline::config::{IntakeConfig, RequeueConfig};
use crate::pipeline::{self, PipelineConfig};
use crate::requeue::{EximCommand, KickMode, KickQueue, TargetSpool};
use crate::state::{open_env, StateDb};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pipeline definition with [intake] and [requeue] sections (the embedded pipeline when
    /// absent; the directories then come from the options below).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Process what is there now (including deferred messages that are due), then exit.
    #[arg(long)]
    once: bool,
    /// Override [intake] queuefile_directory.
    #[arg(long)]
    queuefile_dir: Option<PathBuf>,
    /// Override [intake] work_directory.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Override [requeue] spool_directory (its `input/` must exist).
    #[arg(long)]
    spool_dir: Option<PathBuf>,
    /// Do not kick deliveries (`kick = "off"`), and do not ask Exim about split spool (flat).
    #[arg(long)]
    no_exim: bool,
}

/// Tell systemd (Type=notify) we are ready. Hand-written: it is one datagram to $NOTIFY_SOCKET,
/// not worth a dependency.
fn notify_systemd(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        let sock = std::os::unix::net::UnixDatagram::unbound();
        if let Ok(s) = sock {
            let path = PathBuf::from(path);
            let _ = if path.as_os_str().as_encoded_bytes().starts_with(b"@") {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(&path.as_os_str().as_encoded_bytes()[1..])
                    .and_then(|a| s.send_to_addr(state.as_bytes(), &a))
            } else {
                s.send_to(state.as_bytes(), &path)
            };
        }
    }
}

/// Only one daemon per work directory: its state and files are not shared.
fn lock_work_dir(root: &Path) -> std::io::Result<std::fs::File> {
    crate::private_files::create_dir(root)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(root.join("spoolsift.lock"))?;
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(crate::private_files::FILE_MODE))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(std::io::Error::other(format!("another spoolsift watch is running on {}", root.display())))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

type Loaded = (PipelineConfig, Vec<Box<dyn crate::stages::Stage>>, Option<crate::stages::arc::Sealer>);

fn load(args: &Args) -> Result<Loaded, String> {
    let mut cfg = match &args.pipeline {
        Some(path) => PipelineConfig::load(path).map_err(|e| e.to_string())?,
        None => PipelineConfig::embedded(),
    };
    cfg.warnings().iter().for_each(|w| tracing::warn!("{w}"));
    if let (None, Some(qf), Some(work)) = (&cfg.intake, &args.queuefile_dir, &args.work_dir) {
        cfg.intake = Some(IntakeConfig {
            queuefile_directory: Some(qf.clone()),
            incoming_spool_directory: None,
            work_directory: work.clone(),
            orphan_age_secs: 900,
            rescan_interval_ms: 1000,
            max_header_file_bytes: crate::spool::header_file::MAX_HEADER_FILE,
            trusted_uid: None,
        });
    }
    if let Some(i) = cfg.intake.as_mut() {
        if let Some(qf) = &args.queuefile_dir {
            i.queuefile_directory = Some(qf.clone());
            i.incoming_spool_directory = None;
        }
        i.work_directory = args.work_dir.clone().unwrap_or(i.work_directory.clone());
    }
    if let (None, Some(spool)) = (&cfg.requeue, &args.spool_dir) {
        cfg.requeue = Some(RequeueConfig {
            spool_directory: spool.clone(),
            exim_command: vec!["exim".into()],
            split_spool_directory: None,
            marker: "acl_m_scanned".into(),
            kick: KickMode::Inline,
            kick_batch: 30,
            dedupe_retention_secs: 7 * 86400,
        });
    }
    if let Some(r) = cfg.requeue.as_mut() {
        r.spool_directory = args.spool_dir.clone().unwrap_or(r.spool_directory.clone());
        if args.no_exim {
            r.kick = KickMode::Off;
            r.split_spool_directory.get_or_insert(false);
        }
    }
    // Again after the command line's directories, and now with the file systems compared.
    cfg.check_layout(true).map_err(|e| e.to_string())?;
    let stages = pipeline::build::stages(&cfg).map_err(|e| e.to_string())?;
    if cfg.intake.is_none() || cfg.requeue.is_none() {
        return Err(
            "watch needs [intake] and [requeue] sections (or --queuefile-dir, --work-dir and --spool-dir)".into()
        );
    }
    let sealer = pipeline::build::arc_sealer(&cfg).map_err(|e| e.to_string())?;
    Ok((cfg, stages, sealer))
}

/// Once a minute: orphan `-D` files aside, expired dedupe and verdict entries out.
fn housekeeping(engine: &Engine<'_>) {
    match engine.intake.move_orphans(&engine.dirs.rejected) {
        Ok(moved) => moved.iter().for_each(|p| tracing::warn!("orphan -D moved aside: {}", p.display())),
        Err(e) => tracing::error!("orphan sweep: {e}"),
    }
    let keep = Duration::from_secs(engine.pipeline.quarantine.keep_days.saturating_mul(86400));
    let now = engine.clock.now_secs();
    match engine.quarantine.expire(keep, std::time::UNIX_EPOCH + Duration::from_secs(now)) {
        Ok(gone) => gone.iter().for_each(|e| {
            tracing::info!("quarantine entry {} ({}) expired after {} days", e.key, e.id, keep.as_secs() / 86400)
        }),
        Err(e) => tracing::error!("quarantine expiry: {e}"),
    }
    let _ = engine.db.expire_dedupe(now);
    if let Some((v, _)) = &engine.verdicts {
        let _ = v.expire(now);
    }
}

/// How many of the intake's pairs, oldest ids first, the oldest-age gauge looks at.
const AGE_LOOKS: usize = 64;

/// The backlog gauges: pairs in the intake plus claims in the journal (deferred, or interrupted),
/// and the age of the oldest of them (intake pairs by their `-H`'s mtime, claims by when they
/// were claimed). Of the intake's pairs only the [`AGE_LOOKS`] with the oldest ids are looked at:
/// a pair that stays (one that never completes) keeps its place among them as newer mail
/// arrives, and a backlog of a hundred thousand pairs is not stat'ed whole each time.
fn update_gauges(engine: &Engine<'_>, metrics: &Metrics) {
    let now = std::time::SystemTime::now();
    let (mut depth, mut oldest) = (0u64, 0u64);
    if let Ok(pairs) = engine.intake.list() {
        depth += pairs.len() as u64;
        for p in pairs.iter().take(AGE_LOOKS) {
            if let Ok(mtime) = std::fs::symlink_metadata(p.header_path()).and_then(|m| m.modified()) {
                oldest = oldest.max(now.duration_since(mtime).map_or(0, |d| d.as_secs()));
            }
        }
    }
    if let Ok(claims) = engine.db.all() {
        depth += claims.len() as u64;
        let now = crate::state::journal::now_secs();
        // A held claim waits for an admin, not for the daemon: `spoolsift queue` lists it, and
        // it would otherwise hold the oldest age up until released.
        for c in claims.iter().filter(|c| !c.held) {
            oldest = oldest.max(now.saturating_sub(c.claimed_at));
        }
    }
    metrics.set_queue(depth, oldest);
    // Exim's queue can be large: listed at most every 30 s.
    static LAST_EXIM_LISTING: Mutex<Option<Instant>> = Mutex::new(None);
    let mut last = LAST_EXIM_LISTING.lock().unwrap_or_else(|p| p.into_inner());
    if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
        *last = Some(Instant::now());
        drop(last);
        let (exim_depth, exim_oldest) = exim_queue(&engine.target.input);
        metrics.set_exim_queue(exim_depth, exim_oldest);
    }
}

/// Exim's own queue: its `-H` files in `input/` and any split subdirectory, and the oldest by the
/// time in its id. A scan router that stops matching, or a delivery that never happens, shows
/// here as a growing depth or age, not in spoolsift's own gauges.
fn exim_queue(input: &Path) -> (u64, u64) {
    let now = crate::state::journal::now_secs();
    // The intake's own listing of an Exim spool: `input/` and its split subdirectories.
    let Some(spool) = input.parent() else { return (0, 0) };
    let pairs = QueuefileDir::exim_spool(spool, Duration::ZERO).list().unwrap_or_default();
    let oldest = pairs.iter().map(|p| now.saturating_sub(p.id.time())).max().unwrap_or(0);
    (pairs.len() as u64, oldest)
}

fn stage_names(engine: &Engine<'_>) -> String {
    engine.stages.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// How often the watchdog thread tells systemd the daemon is alive.
const WATCHDOG_EVERY: Duration = Duration::from_secs(5);
/// No progress for this long is a hung daemon: longer than any stage waits for its service with
/// the default timeouts (the clamav stage's add up to 122 s: queue, connect, write, read) and
/// shorter than the unit's WatchdogSec (300 s). Timeouts raised past it need both raised.
const WATCHDOG_STALL: Duration = Duration::from_secs(240);

/// How long a stop may wait for the batches in hand before the daemon exits anyway.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A stop must not wait on a scan that does not end (a service that stopped answering within its
/// timeouts, say): after [`STOP_GRACE`] the process exits. Nothing is lost by it: what was
/// claimed and not committed is in the journal, and the next start takes it again, exactly as
/// after a crash.
fn stop_within_grace() -> Result<(), String> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT])
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("stop-grace".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                std::thread::sleep(STOP_GRACE);
                tracing::warn!(
                    "stopping: the messages in hand were not finished {} s after the signal; \
                     exiting now, their claims stay in the journal for the next start",
                    STOP_GRACE.as_secs()
                );
                std::process::exit(exit::OK);
            }
        })
        .map(drop)
        .map_err(|e| e.to_string())
}

pub fn run(args: &Args) -> i32 {
    match serve(args) {
        Ok(()) => exit::OK,
        Err(e) => {
            crate::logging::fatal("watch", &e);
            exit::ERROR
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    // load() builds the stages and the sealer, checking the whole definition before anything
    // starts; the builder takes them and the rest from the same definition.
    let (cfg, stages, sealer) = load(args)?;
    let intake_cfg = cfg.intake.clone().expect("checked by load");
    let rq = cfg.requeue.clone().expect("checked by load");
    for (key, dir) in [
        ("queuefile_directory", &intake_cfg.queuefile_directory),
        ("incoming_spool_directory", &intake_cfg.incoming_spool_directory),
    ] {
        if let Some(dir) = dir {
            let why = match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => continue,
                Ok(_) => "not a directory".to_string(),
                Err(e) => e.to_string(),
            };
            let origin = if args.queuefile_dir.is_some() && key == "queuefile_directory" {
                "--queuefile-dir".to_string()
            } else {
                cfg.origin(&["intake", key])
            };
            return Err(format!("cannot take messages from {} ({origin}): {why}", dir.display()));
        }
    }
    let _lock = lock_work_dir(&intake_cfg.work_directory).map_err(|e| e.to_string())?;
    let dirs = WorkDirs::new(&intake_cfg.work_directory);
    dirs.create().map_err(|e| format!("{}: {e}", intake_cfg.work_directory.display()))?;
    let env = open_env(&dirs.state).map_err(|e| format!("{}: {e}", dirs.state.display()))?;
    let db = StateDb::new(&env).map_err(|e| e.to_string())?;
    let exim = EximCommand::new(rq.exim_command.clone()).configured_at(cfg.origin(&["requeue", "exim_command"]));
    if rq.kick == KickMode::Inline || rq.split_spool_directory.is_none() {
        exim.check_runnable().map_err(|e| e.to_string())?;
    }
    let split = match rq.split_spool_directory {
        Some(s) => s,
        None => exim.split_spool_directory().map_err(|e| e.to_string())?,
    };
    let target = TargetSpool::new(&rq.spool_directory, None)
        .map_err(|e| format!("{}: {e}", rq.spool_directory.display()))?
        .with_split(split);
    let orphan_age = Duration::from_secs(intake_cfg.orphan_age_secs);
    let intake = match (&intake_cfg.queuefile_directory, &intake_cfg.incoming_spool_directory) {
        (Some(qf), _) => QueuefileDir::new(qf, Some(&target.input), orphan_age),
        (None, Some(spool)) => QueuefileDir::exim_spool(spool, orphan_age),
        (None, None) => return Err("[intake] names no directory".into()),
    };
    let kicks = KickQueue::new(&intake_cfg.work_directory);
    kicks.create().map_err(|e| format!("{}: {e}", kicks.dir.display()))?;
    let verdicts_cfg = cfg.verdicts.clone();
    // Bound once at start: a reload (SIGHUP) does not move the endpoint or the file.
    let metrics_cfg = cfg.metrics.clone();
    let verdict_db = match &verdicts_cfg {
        Some(v) => {
            let db = crate::state::verdicts::VerdictDb::open_as(&v.database, v.format)?;
            // Exim reads it as the spool's owner (its delivery processes run as the Exim user).
            if let Some((uid, gid)) = target.owner {
                let lock = std::path::PathBuf::from(format!("{}-lock", v.database.display()));
                for p in [&v.database, &lock] {
                    let _ = std::os::unix::fs::chown(p, Some(uid), Some(gid));
                }
            }
            Some((db, v.retention_secs))
        }
        None => None,
    };
    let mut engine = EngineBuilder::new(cfg, db, dirs, intake, target)
        .built(stages, sealer)
        .kicks((rq.kick != KickMode::Off).then(|| kicks.clone()))
        .verdicts(verdict_db)
        .build()?;
    for note in engine.recover().map_err(|e| format!("recovery: {e}"))? {
        tracing::warn!("recovery: {note}");
    }

    let metrics = Arc::new(Metrics::new());
    // Without [metrics] nothing reads the gauges: skip the listing they cost.
    let gauges = |engine: &Engine<'_>, metrics: &Metrics| {
        if metrics_cfg.is_some() {
            update_gauges(engine, metrics);
        }
    };
    // After a batch, the gauges are taken again at most once a second: they list the intake and
    // read the journal, which under a backlog costs more than the batch did. Idle, they are
    // taken at every look, which is what shows a stuck intake.
    let last_gauges = Mutex::new(Instant::now());
    let gauges_after_batch = |engine: &Engine<'_>, metrics: &Metrics| {
        let mut last = last_gauges.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Duration::from_secs(1) {
            *last = Instant::now();
            drop(last);
            gauges(engine, metrics);
        }
    };
    engine.stages.iter().for_each(|s| metrics.register_stage(s.name()));
    gauges(&engine, &metrics);
    if let Some(addr) = metrics_cfg.as_ref().and_then(|m| m.listen) {
        let allow_remote = metrics_cfg.as_ref().is_some_and(|m| m.allow_remote);
        let listener = metrics::bind(addr, allow_remote).map_err(|e| format!("metrics listen {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        metrics::serve(listener, Arc::clone(&metrics)).map_err(|e| format!("metrics listen {addr}: {e}"))?;
        tracing::info!("metrics on http://{bound}/metrics");
    }
    let textfile = metrics_cfg.as_ref().and_then(|m| m.textfile.clone());
    let write_textfile = |metrics: &Metrics| {
        if let Some(path) = &textfile {
            // Metrics are for observing; failing to write them loses no mail.
            if let Err(e) = metrics.write_textfile(path) {
                tracing::error!("metrics textfile {}: {e}", path.display());
            }
        }
    };
    write_textfile(&metrics);

    let stop = Arc::new(AtomicBool::new(false));
    let reload = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).map_err(|e| e.to_string())?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&reload)).map_err(|e| e.to_string())?;
    stop_within_grace()?;
    // The kicker stops after the daemon's last commit, so that its last requests are run.
    let kicker_stop = Arc::new(AtomicBool::new(false));
    let kicker = match rq.kick {
        KickMode::Inline => Some(
            super::kick::spawn_kicker(kicks.clone(), exim, rq.kick_batch, Arc::clone(&kicker_stop), false)
                .map_err(|e| format!("{}: {e}", kicks.dir.display()))?,
        ),
        KickMode::Helper | KickMode::Off => None,
    };
    let reports = Mutex::new(super::kick::Reports::new(kicks));
    let collect_reports = |engine: &Engine<'_>| {
        if rq.kick != KickMode::Off {
            reports.lock().unwrap_or_else(|p| p.into_inner()).collect(&engine.target, &metrics);
        }
    };
    // systemd's watchdog (WatchdogSec=): pinged from a thread of its own while the engine gets
    // somewhere, busy or idle (the idle loop counts, every rescan). A daemon stuck longer than
    // any stage's timeout allows is restarted, and takes its claims back from the journal.
    crate::engine::progressed();
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(|| loop {
            if crate::engine::stalled_for() < WATCHDOG_STALL {
                notify_systemd("WATCHDOG=1");
            }
            std::thread::sleep(WATCHDOG_EVERY);
        })
        .map_err(|e| e.to_string())?;
    // The intake's own turns count only while nothing is in flight: a batch stuck in a scan must
    // not be hidden by an intake that goes on rescanning beside it.
    let watchdog = |engine: &Engine<'_>| {
        if !engine.busy() {
            crate::engine::progressed();
        }
    };
    let (tx, rx) = crossbeam_channel::bounded::<()>(1);
    let mut watcher = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        // A full channel already holds a wake-up; nothing is lost by dropping this one.
        let _ = tx.try_send(());
    })
    .map_err(|e| e.to_string())?;
    // An Exim spool's input/ may not exist yet, and has split subdirectories: watch the spool.
    let (watched, mode) = match &intake_cfg.incoming_spool_directory {
        Some(spool) => (spool.clone(), notify::RecursiveMode::Recursive),
        None => (engine.intake.dir.clone(), notify::RecursiveMode::NonRecursive),
    };
    watcher.watch(&watched, mode).map_err(|e| format!("{}: {e}", watched.display()))?;
    notify_systemd("READY=1");
    tracing::info!(
        "spoolsift {} started: pipeline {} ({}), stages [{}], intake {}, work {}, re-queue into {}, kick {}",
        env!("CARGO_PKG_VERSION"),
        engine.pipeline.name,
        args.pipeline.as_ref().map_or("embedded".into(), |p| p.display().to_string()),
        stage_names(&engine),
        watched.display(),
        intake_cfg.work_directory.display(),
        rq.spool_directory.display(),
        rq.kick,
    );

    let rescan = Duration::from_millis(intake_cfg.rescan_interval_ms);
    let last_textfile = Mutex::new(Instant::now());
    let mut last_housekeeping = Instant::now();
    loop {
        // Claiming, scanning and committing overlap; a stop or a reload first drains what was
        // claimed, so a new pipeline never meets a batch the old one half handled.
        let intake_side = |engine: &Engine<'_>, claimed: usize| {
            watchdog(engine);
            if stop.load(Ordering::Relaxed) || reload.load(Ordering::Relaxed) {
                return Next::Drain;
            }
            if claimed == 0 {
                collect_reports(engine);
                // Idle, or waiting for pairs that are not complete yet: keep the backlog gauges
                // current (the oldest age is what shows a stuck intake), the file every second
                // (so that it has them soon after a busy spell, when they were taken less often).
                gauges(engine, &metrics);
                let mut last = last_textfile.lock().unwrap_or_else(|p| p.into_inner());
                if args.once || last.elapsed() >= Duration::from_secs(1) {
                    write_textfile(&metrics);
                    *last = Instant::now();
                }
                drop(last);
                if args.once {
                    return Next::Drain;
                }
                let _ = rx.recv_timeout(rescan);
                // Let a burst of arrivals gather into one batch.
                let window = Duration::from_millis(engine.pipeline.batch.max_wait_ms);
                while rx.recv_timeout(window).is_ok() {}
            }
            if last_housekeeping.elapsed() > Duration::from_secs(60) {
                last_housekeeping = Instant::now();
                housekeeping(engine);
            }
            Next::Claim
        };
        let committer_side = |engine: &Engine<'_>, handled: Vec<Handled>| {
            for h in &handled {
                // Mail that is not delivered now is worth a priority an admin filters on.
                match h.action {
                    Outcome::Rejected => tracing::error!("{}", h.log_line()),
                    Outcome::Acted(crate::pipeline::Action::Defer) => tracing::warn!("{}", h.log_line()),
                    _ => tracing::info!("{}", h.log_line()),
                }
            }
            metrics.record(&handled);
            collect_reports(engine);
            crate::engine::progressed();
            gauges_after_batch(engine, &metrics);
            write_textfile(&metrics);
            *last_textfile.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            Ok(())
        };
        engine.run_overlapped(intake_side, committer_side).map_err(|e| format!("processing: {e}"))?;
        if stop.load(Ordering::Relaxed) || args.once {
            break;
        }
        if reload.swap(false, Ordering::Relaxed) {
            match load(args) {
                Ok((cfg, stages, sealer)) => {
                    engine.pipeline = cfg;
                    engine.stages = stages;
                    engine.sealer = sealer;
                    engine.stages.iter().for_each(|s| metrics.register_stage(s.name()));
                    tracing::info!("reloaded the pipeline {}: stages [{}]", engine.pipeline.name, stage_names(&engine));
                }
                Err(e) => tracing::error!("reload failed, keeping the running pipeline: {e}"),
            }
        }
    }
    notify_systemd("STOPPING=1");
    tracing::info!("stopping: every claimed message is committed or in the journal");
    if let Some(k) = kicker {
        // The runs in hand finish; requests not started yet wait for the next start (or Exim's
        // queue runner), and reports not read yet are read then.
        kicker_stop.store(true, Ordering::Relaxed);
        let _ = k.join();
    }
    Ok(())
}
