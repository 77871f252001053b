//! Driving the real engine over a corpus, as Exim's queuefile transport would feed it: a feeder
//! thread hard-links corpus pairs into a queuefile directory, stamping each drop; the engine claims,
//! scans and re-queues into an Exim-style spool, batches overlapped as in `spoolsift watch`; a
//! message's latency is from its drop to the end of the batch that committed it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use spoolsift::engine::Next;
use spoolsift::engine::{Engine, EngineBuilder, Handled, WorkDirs};
use spoolsift::intake::queuefile::QueuefileDir;
use spoolsift::pipeline::PipelineConfig;
use spoolsift::requeue::TargetSpool;
use spoolsift::spool::MessageId;
use spoolsift::state::{open_env, StateDb};

use crate::cpu::{cpu_seconds, proc_cpu_seconds, thread_cpu_seconds};

pub fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

/// CPU seconds (user + system) of each of this process's threads, by thread id, with its role,
/// from `/proc/self/task`: the engine names its threads (`spoolsift-scan-N`, the scan pool;
/// `spoolsift-batch`, which hands a batch to it; `spoolsift-commit`); anything else is `other`
/// (the intake runs on the caller's thread, and the feeder is measured apart).
pub fn thread_cpu() -> HashMap<String, (&'static str, f64)> {
    let mut threads = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return threads };
    for t in tasks.filter_map(|t| t.ok()) {
        let tid = t.file_name().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let cpu = proc_cpu_seconds(&format!("self/task/{tid}"));
        let role = match comm.trim() {
            c if c.starts_with("spoolsift-scan") || c == "spoolsift-batch" => "scan",
            // The kernel keeps 15 bytes of a thread's name.
            "spoolsift-commi" => "commit",
            _ => "other",
        };
        threads.insert(tid, (role, cpu));
    }
    threads
}

/// CPU seconds spent by the threads of `role` between two [`thread_cpu`] readings.
fn cpu_between(
    before: &HashMap<String, (&'static str, f64)>,
    after: &HashMap<String, (&'static str, f64)>,
    role: &str,
) -> f64 {
    after
        .iter()
        .filter(|(_, (r, _))| *r == role)
        .map(|(tid, (_, cpu))| cpu - before.get(tid).map_or(0.0, |b| b.1))
        .sum()
}

/// What the feeder and the engine loop share.
#[derive(Default)]
struct Feed {
    /// When each message not yet handled was dropped, by id (removed when handled, so that the
    /// bench's own memory does not grow with the run and show as the engine's).
    dropped: HashMap<String, Instant>,
    /// Messages dropped so far.
    dropped_count: usize,
    processed: usize,
    feeding: bool,
}

pub struct EngineRun {
    pub rate: f64,
    /// CPU seconds (user, system) of the whole process while the engine ran, the feeder included.
    pub cpu: (f64, f64),
    /// CPU seconds (user, system) of the feeder thread alone: the links queuefile would make,
    /// which on a real host are Exim's work, not the engine's.
    pub feeder_cpu: (f64, f64),
    /// CPU seconds of the scan threads and of the committer thread, taken as the last batch is
    /// handed back; the rest of the engine's CPU is the intake's (claims, journal).
    pub scan_cpu: f64,
    pub commit_cpu: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub rss_first_half: u64,
    pub rss_second_half: u64,
    /// The same for anonymous memory alone (`RssAnon`: the heap and stacks, without the pages of
    /// the state store's memory map, which grow with the dedupe entries kept for their retention).
    pub anon_first_half: u64,
    pub anon_second_half: u64,
}

/// Messages dropped and not yet handled, at most, unless asked otherwise: the engine's own
/// bound on claims in hand (four batches of 256).
pub const BACKLOG: usize = 1024;

/// Run the real engine over the corpus with `pipeline` (its stages built from it), feeding the
/// queuefile directory from another thread; `on_handled` sees every message's outcome.
#[allow(dead_code)] // the peers and stages benches' (the engine bench sets the backlog)
pub fn run_engine(
    corpus: &Path,
    ids: &[(MessageId, u64)],
    root: &Path,
    pipeline: PipelineConfig,
    on_handled: &mut (dyn FnMut(&Handled) + Send),
) -> EngineRun {
    run_engine_with_backlog(corpus, ids, root, pipeline, BACKLOG, on_handled)
}

/// [`run_engine`] with at most `backlog` messages dropped and not yet handled: a larger one
/// leaves pairs waiting in the queuefile directory, as after an outage.
pub fn run_engine_with_backlog(
    corpus: &Path,
    ids: &[(MessageId, u64)],
    root: &Path,
    pipeline: PipelineConfig,
    backlog: usize,
    on_handled: &mut (dyn FnMut(&Handled) + Send),
) -> EngineRun {
    let qf = root.join("queuefile");
    let spool = root.join("spool");
    std::fs::create_dir_all(&qf).unwrap();
    std::fs::create_dir_all(spool.join("input")).unwrap();
    let dirs = WorkDirs::new(&root.join("spoolsift"));
    dirs.create().unwrap();
    let env = open_env(&dirs.state).unwrap();
    let target = TargetSpool::new(&spool, None).unwrap();
    let intake = QueuefileDir::new(&qf, Some(&target.input), Duration::from_secs(900));
    // Stages, ARC sealer and all, as the daemon builds them.
    let engine = EngineBuilder::new(pipeline, StateDb::new(&env).unwrap(), dirs, intake, target).build().unwrap();

    let feed: Arc<(Mutex<Feed>, Condvar)> = Arc::default();
    feed.0.lock().unwrap().feeding = true;
    let feeder = {
        let feed = Arc::clone(&feed);
        let (corpus, qf, ids) = (corpus.to_path_buf(), qf.clone(), ids.to_vec());
        std::thread::spawn(move || {
            let cpu_start = thread_cpu_seconds();
            let (lock, cv) = &*feed;
            for (i, (id, _)) in ids.iter().enumerate() {
                // Keep a bounded backlog, as a real queue would have. Waiting on the condition
                // variable, not spinning: a spinning feeder takes a core from the engine and clamd.
                drop(cv.wait_while(lock.lock().unwrap(), |f| i - f.processed > backlog).unwrap());
                std::fs::hard_link(corpus.join(format!("{id}-H")), qf.join(format!("{id}-H"))).unwrap();
                std::fs::hard_link(corpus.join(format!("{id}-D")), qf.join(format!("{id}-D"))).unwrap();
                let mut f = lock.lock().unwrap();
                f.dropped.insert(id.to_string(), Instant::now());
                f.dropped_count += 1;
                cv.notify_all();
            }
            lock.lock().unwrap().feeding = false;
            cv.notify_all();
            let cpu_end = thread_cpu_seconds();
            (cpu_end.0 - cpu_start.0, cpu_end.1 - cpu_start.1)
        })
    };
    let (lock, cv) = &*feed;
    let start = Instant::now();
    let cpu_start = cpu_seconds();
    let mut latencies = Vec::with_capacity(ids.len());
    let (mut rss_a, mut rss_b, mut anon_a, mut anon_b) = (0, 0, 0, 0);
    let threads_before = thread_cpu();
    let mut threads_after = HashMap::new();
    let mut claimed_total = 0;
    // The engine as `spoolsift watch` runs it: claiming, scanning and committing overlapped.
    let intake_side = |_: &Engine<'_>, claimed: usize| {
        claimed_total += claimed;
        if claimed_total >= ids.len() {
            return Next::Drain;
        }
        if claimed == 0 {
            let f = lock.lock().unwrap();
            if !f.feeding && f.dropped_count == claimed_total {
                panic!("feeder done but only {claimed_total} of {} claimed", ids.len());
            }
            // Until the feeder drops something new; the timeout re-polls the directory in case
            // a dropped pair was not complete yet when it was last listed.
            drop(cv.wait_timeout_while(f, Duration::from_millis(10), |f| f.dropped_count == claimed_total).unwrap());
        }
        Next::Claim
    };
    let committer_side = |_: &Engine<'_>, handled: Vec<Handled>| {
        let now = Instant::now();
        let mut f = lock.lock().unwrap();
        for h in &handled {
            latencies.push(now - f.dropped.remove(&h.original_id).expect("handled once, after its drop"));
            on_handled(h);
        }
        f.processed += handled.len();
        let processed = f.processed;
        cv.notify_all();
        drop(f);
        if processed == ids.len() {
            // The engine's threads end with the run: their CPU is read before they do.
            threads_after = thread_cpu();
        }
        let (rss, anon) = (rss_kib("VmRSS:"), rss_kib("RssAnon:"));
        if processed < ids.len() / 2 {
            rss_a = rss_a.max(rss);
            anon_a = anon_a.max(anon);
        } else {
            rss_b = rss_b.max(rss);
            anon_b = anon_b.max(anon);
        }
        Ok(())
    };
    engine.run_overlapped(intake_side, committer_side).unwrap();
    assert_eq!(lock.lock().unwrap().processed, ids.len(), "every claimed message handled once");
    let rate = ids.len() as f64 / start.elapsed().as_secs_f64();
    let cpu_end = cpu_seconds();
    let feeder_cpu = feeder.join().unwrap();
    // The re-queued copies are links to the corpus: gone, the corpus's link count is 1 again for
    // the next run, as a freshly dropped pair's is (more links would make the engine copy each
    // `-D` before the scan as one someone else could rewrite).
    std::fs::remove_dir_all(root).unwrap();
    latencies.sort();
    EngineRun {
        rate,
        cpu: (cpu_end.0 - cpu_start.0, cpu_end.1 - cpu_start.1),
        feeder_cpu,
        scan_cpu: cpu_between(&threads_before, &threads_after, "scan"),
        commit_cpu: cpu_between(&threads_before, &threads_after, "commit"),
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
        rss_first_half: rss_a,
        rss_second_half: rss_b,
        anon_first_half: anon_a,
        anon_second_half: anon_b,
    }
}
