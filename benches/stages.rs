//! Network-stage benchmark: per-stage latency of the content, clamav (a real clamd), dcc (the
//! dccifd test double) and arc stages, and the engine's rate with all of them on next to clamd's
//! own rate on the same corpus. Every tenth corpus message carries an ARC set (RSA-2048, sealed
//! here with a key made by openssl, its record from a file), so the arc stage verifies some chains
//! and finds none on the rest. Run with `scripts/bench.sh`, which starts the clamd (or `cargo bench --bench
//! stages -- --clamd unix:/path/clamd.sock`).
//!
//! Rows of the table (after one untimed pass that warms clamd up; the clamd-alone and engine rows
//! are repeated over `--rounds` rounds, 3 by default, and the ratios given as median and range, since
//! one run's ratio moves by ±0.05 with the machine's other load):
//! * each stage alone: its `check` over the corpus from as many threads as clamav has connections
//!   per server;
//! * clamd alone: a plain zINSTREAM loop over the corpus as the clamav stage sends it (the
//!   headers and the stored body, two chunks), held in memory and written in one go, a new
//!   connection per message, with the same number of connections at once: what clamd itself can do, the ceiling for the engine; and the same
//!   loop over kept `zIDSESSION` connections (as the clamav stage sends), clamd's best;
//! * the real engine on tmpfs with all three stages (support/engine_run.rs), its drop-to-re-queue
//!   latency, and each stage's latency inside it as the engine measured it;
//! * the ratio of the engine's rate to clamd alone (the target is 0.95 or more), against both
//!   loops, each round's engine against the clamd-alone rows measured just before it;
//! * the highest ratio the CPU allows while the engine and clamd share the cores: every core busy
//!   all the time, each message costing what the engine, the dccifd double and clamd used.
//!
//! Every stage must answer clean for every message (the corpus has no test virus): an error or
//! another verdict stops the bench, since a rate over failed scans would mean nothing.
//!
//! The dccifd double runs in this process; the CPU it used in the engine run is printed apart
//! from the engine's (support/dccifd.rs).

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/dccifd.rs"]
mod dccifd;
#[path = "support/keys.rs"]
mod keys;
#[path = "support/sealed.rs"]
mod sealed;
// This bench takes its CPU figures itself (clamd's included), not from the engine run's.
#[allow(dead_code)]
#[path = "support/engine_run.rs"]
mod engine_run;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpu::proc_cpu_seconds;
use sealed::{load, seal_some, Message};
use spoolsift::engine::Outcome;
use spoolsift::pipeline::Action;
use spoolsift::pipeline::PipelineConfig;
use spoolsift::spool::{DataFile, MessageView};
use spoolsift::stages::clamav::ClamavConfig;
use spoolsift::stages::net::Endpoint;
use spoolsift::stages::{Stage, Verdict};

const DCC_REPLY: &str = "A\nA\nX-DCC-Bench-Metrics: bench 1; Body=1 Fuz1=1 Fuz2=1\n\n";

/// Rate and sorted per-message latencies of one run.
struct Timed {
    rate: f64,
    latencies: Vec<Duration>,
}

impl Timed {
    fn percentile_ms(&self, p: usize) -> f64 {
        percentile_ms(&self.latencies, p)
    }
}

fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    sorted.get(sorted.len() * p / 100).or(sorted.last()).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

/// Run `work` once per message index from `threads` threads, each taking the next index.
fn drive(threads: usize, n: usize, work: impl Fn(usize) + Sync) -> Timed {
    drive_with(threads, n, || (), |_, i| work(i))
}

/// [`drive`], each thread with state of its own made by `open` (a connection, say).
fn drive_with<S>(threads: usize, n: usize, open: impl Fn() -> S + Sync, work: impl Fn(&mut S, usize) + Sync) -> Timed {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut state = open();
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        let t = Instant::now();
                        work(&mut state, i);
                        mine.push(t.elapsed());
                    }
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let rate = n as f64 / start.elapsed().as_secs_f64();
    latencies.sort();
    Timed { rate, latencies }
}

/// One plain zINSTREAM exchange of a message framed as the clamav stage frames it
/// (support/sealed.rs), held in memory and sent in one write, clamd's best case; panics unless
/// clamd answers clean.
fn instream(clamd: &Endpoint, message: &[u8]) {
    let mut conn = clamd.connect(Duration::from_secs(5)).unwrap();
    conn.set_read_timeout(Duration::from_secs(60)).unwrap();
    exchange(&mut conn, message, "stream: OK");
}

/// Send one framed message and read the reply; panics unless it is `want`.
fn exchange(conn: &mut spoolsift::stages::net::Conn, message: &[u8], want: &str) {
    conn.write_all(message).unwrap();
    let reply = sealed::clamd_reply(conn);
    assert_eq!(reply, want, "clamd: {reply}");
}

/// The plain loop over kept sessions: each thread opens one `zIDSESSION` and sends its messages
/// on it one at a time, as the clamav stage does (closing it, as the stage does, without `zEND`).
fn session_loop(clamd: &Endpoint, wire: &[Vec<u8>], threads: usize) -> Timed {
    let open = || {
        let mut conn = clamd.connect(Duration::from_secs(5)).unwrap();
        conn.set_read_timeout(Duration::from_secs(60)).unwrap();
        conn.write_all(b"zIDSESSION\0").unwrap();
        (conn, 0usize)
    };
    drive_with(threads, wire.len(), open, |(conn, scans), i| {
        *scans += 1;
        exchange(conn, &wire[i], &format!("{scans}: stream: OK"));
    })
}

/// The pipeline under test: every stage on, the policy of the embedded pipeline.
/// With no `others` (the dccifd address and the ARC records file), the clamav stage alone: what
/// the engine itself costs around clamd.
fn pipeline(clamd: &str, connections: usize, others: Option<(&str, &Path)>) -> PipelineConfig {
    let (content, dcc) = match others {
        Some((address, records)) => (
            format!("[stages.content]\n\n[stages.arc]\ntxt_records = \"{}\"\n", records.display()),
            format!("[stages.dcc]\naddress = \"{address}\"\n"),
        ),
        None => (String::new(), String::new()),
    };
    let policy = corpus::POLICY;
    let text = format!(
        r#"name = "stage-bench"
authserv_id = "bench.localhost"

{content}
[stages.clamav]
servers = ["{clamd}"]
max_connections_per_server = {connections}

{dcc}

{policy}
"#
    );
    PipelineConfig::parse(&text, Path::new("stage-bench.toml")).unwrap()
}

fn stage_alone(stage: &dyn Stage, messages: &[Message], threads: usize) -> Timed {
    drive(threads, messages.len(), |i| {
        let m = &messages[i];
        let data = DataFile::open(&m.data, &m.id).unwrap();
        match stage.check(&MessageView::new(&m.header, &data)) {
            Ok(r) if r.verdict == expected(stage.name(), i) => {}
            other => panic!("{} on {}: {other:?}", stage.name(), m.id),
        }
    })
}

/// What a stage must find in corpus message `i`: a passing chain on the sealed ones (every
/// tenth), nothing to report on the others; clean everywhere else.
fn expected(stage: &str, i: usize) -> Verdict {
    match stage {
        "arc" if i.is_multiple_of(10) => Verdict::AuthPass,
        "arc" => Verdict::Neutral,
        _ => Verdict::Clean,
    }
}

/// CPU used by this process and by clamd during `f`.
fn with_cpu<T>(clamd_pid: Option<&str>, f: impl FnOnce() -> T) -> (T, f64, Option<f64>) {
    let (own, theirs) = (proc_cpu_seconds("self"), clamd_pid.map(proc_cpu_seconds));
    let out = f();
    (out, proc_cpu_seconds("self") - own, clamd_pid.map(proc_cpu_seconds).zip(theirs).map(|(b, a)| b - a))
}

/// A row for a run of `threads` loops over the corpus.
fn timed_row(what: &str, threads: usize, t: &Timed, cpu: (f64, Option<f64>)) {
    row(what, &threads.to_string(), Some(t.rate), t.percentile_ms(50), t.percentile_ms(99), Some(cpu));
}

/// A row for an engine run.
fn engine_row(what: &str, run: &engine_run::EngineRun, cpu: (f64, Option<f64>)) {
    row(what, "-", Some(run.rate), run.p50.as_secs_f64() * 1e3, run.p99.as_secs_f64() * 1e3, Some(cpu));
}

fn row(what: &str, threads: &str, rate: Option<f64>, p50: f64, p99: f64, cpu: Option<(f64, Option<f64>)>) {
    let rate = rate.map_or("-".to_string(), |r| format!("{r:.0}"));
    let (own, clamd) = match cpu {
        Some((own, clamd)) => (format!("{own:.1}"), clamd.map_or("-".to_string(), |c| format!("{c:.1}"))),
        None => ("-".to_string(), "-".to_string()),
    };
    println!("{what:<34} {threads:>6} {rate:>9} {p50:>9.2} {p99:>9.2} {own:>8} {clamd:>8}");
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut n = 2_000;
    let mut clamd: Option<String> = None;
    let mut clamd_pid: Option<String> = None;
    let mut base = PathBuf::from("/dev/shm");
    let mut connections = ClamavConfig::default().max_connections_per_server;
    let mut engine_only = false;
    let mut batch = spoolsift::pipeline::config::BatchConfig::default().max_messages;
    let mut rounds = 3;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => n = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--clamd" => clamd = Some(args.next().expect("--clamd unix:/path or tcp:host:port")),
            "--dir" => base = PathBuf::from(args.next().expect("--dir PATH")),
            "--clamd-pid" => clamd_pid = Some(args.next().expect("--clamd-pid PID")),
            "--connections" => connections = args.next().and_then(|v| v.parse().ok()).expect("--connections N"),
            "--engine-only" => engine_only = true,
            "--batch" => batch = args.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--rounds" => rounds = args.next().and_then(|v| v.parse().ok()).expect("--rounds N"),
            "--help" | "-h" => {
                println!(
                    "stages --clamd unix:/path|tcp:host:port [--clamd-pid PID] [--messages N] [--dir PATH] \
                     [--connections N] [--batch N] [--rounds N] [--engine-only]"
                );
                println!("  (defaults: 2000 messages, /dev/shm, the clamav stage's connections per server, the");
                println!("  pipeline's default batch size, 3 rounds of clamd alone and the engine runs;");
                println!("  --engine-only skips the runs without the engine, e.g. to profile the engine alone)");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    let Some(clamd) = clamd else {
        eprintln!("stages: needs --clamd unix:/path/clamd.sock (scripts/bench.sh starts a clamd and passes it)");
        std::process::exit(2);
    };
    let clamd_endpoint = Endpoint::parse(&clamd).expect("--clamd unix:/path or tcp:host:port");
    let dccifd = dccifd::Dccifd::unix(DCC_REPLY);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());

    let root = tempfile::Builder::new().prefix("spoolsift-stagebench.").tempdir_in(&base).unwrap();
    let corpus_dir = root.path().join("corpus");
    let ids = corpus::generate(&corpus_dir, n, false);
    let mut messages = load(&corpus_dir, &ids);
    let (records, sealed) = seal_some(root.path(), &mut messages);
    let wire: Vec<Vec<u8>> = messages.iter().map(sealed::instream_framed).collect();
    let wire_mib = wire.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;

    println!(
        "stages: {n} messages (default 2000, since clamd is slow), mixed corpus ({wire_mib:.0} MiB as sent to clamd), \
         {}, clamd {clamd}, {connections} connections per server, dccifd double, {sealed} messages with an ARC set, \
         engine batches of {batch}, {cores} cores",
        base.display()
    );
    println!("CPU: seconds used during the run by this process (stages, engine, dccifd double) and by clamd");
    println!(
        "{:<34} {:>6} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "run", "conc", "msg/s", "p50 ms", "p99 ms", "own CPU", "clamd CPU"
    );
    let pid = clamd_pid.as_deref();

    // A freshly started clamd scans its first pass over the corpus at a third of its later rate
    // (and several times the CPU), whichever run comes first; so one pass before any timed run.
    let (warm, own, clamd_cpu) = with_cpu(pid, || drive(connections, n, |i| instream(&clamd_endpoint, &wire[i])));
    timed_row("clamd warm-up (not compared)", connections, &warm, (own, clamd_cpu));

    let mut config = pipeline(&clamd, connections, Some((&dccifd.address, &records)));
    config.batch.max_messages = batch;
    let mut clamav_only = pipeline(&clamd, connections, None);
    clamav_only.batch.max_messages = batch;
    let stages = if engine_only { Vec::new() } else { spoolsift::pipeline::build::stages(&config).unwrap() };
    for stage in stages {
        let (t, own, clamd) = with_cpu(pid, || stage_alone(stage.as_ref(), &messages, connections));
        timed_row(&format!("{} stage alone", stage.name()), connections, &t, (own, clamd));
    }

    // clamd alone before and after the engine, the ratio against their mean: on a shared machine
    // the rate drifts with the other load.
    let clamd_alone = |when: &str| {
        let (alone, own, clamd) = with_cpu(pid, || drive(connections, n, |i| instream(&clamd_endpoint, &wire[i])));
        timed_row(&format!("clamd alone, {when} (zINSTREAM)"), connections, &alone, (own, clamd));
        let (kept, own, clamd) = with_cpu(pid, || session_loop(&clamd_endpoint, &wire, connections));
        timed_row(&format!("clamd alone, {when} (sessions)"), connections, &kept, (own, clamd));
        (alone.rate, kept.rate)
    };

    let index: std::collections::HashMap<String, usize> =
        ids.iter().enumerate().map(|(i, (id, _))| (id.to_string(), i)).collect();
    let mut in_engine: BTreeMap<String, Vec<Duration>> = BTreeMap::new();
    // Per round: the engine's rate over clamd alone's, measured just before it (the rate drifts
    // with the machine's other load), all stages and clamav only, against the plain loop and the
    // sessions loop; and CPU ms per message in the all-stages run (engine, dccifd double, clamd).
    let mut ratios: Vec<[f64; 4]> = Vec::new();
    let mut cpu: Vec<[f64; 3]> = Vec::new();
    let mut bounds: Vec<f64> = Vec::new();
    let mut rss: f64 = 0.0;
    let per_message = |cpu: f64| cpu * 1e3 / n as f64;
    for round in 1..=rounds {
        let alone = (!engine_only).then(|| clamd_alone(&format!("round {round}")));
        let mut check = |h: &spoolsift::engine::Handled| {
            assert_eq!(h.action, Outcome::Acted(Action::Deliver), "{}: {:?}", h.original_id, h);
            for s in &h.stages {
                let want = expected(&s.stage, index[&h.original_id]).to_string();
                assert_eq!(s.text, want, "{}: stage {}", h.original_id, s.stage);
                in_engine.entry(s.stage.clone()).or_default().push(s.elapsed);
            }
        };
        let double_before = dccifd.cpu_seconds();
        let dir = root.path().join(format!("engine-{round}"));
        let (run, own, clamd) =
            with_cpu(pid, || engine_run::run_engine(&corpus_dir, &ids, &dir, config.clone(), &mut check));
        let double = dccifd.cpu_seconds() - double_before;
        engine_row(&format!("engine, all stages, round {round}"), &run, (own, clamd));
        // The same engine with the clamav stage only: how much of the gap to clamd alone is the
        // engine's own work around clamd, and how much the other stages' CPU on the shared cores.
        let dir = root.path().join(format!("engine-clamav-{round}"));
        let (lone, lone_own, lone_clamd) = with_cpu(pid, || {
            engine_run::run_engine(&corpus_dir, &ids, &dir, clamav_only.clone(), &mut |h| {
                assert_eq!(h.action.name(), "deliver", "{}: {:?}", h.original_id, h)
            })
        });
        engine_row(&format!("engine, clamav stage only, round {round}"), &lone, (lone_own, lone_clamd));
        // Not the engine's alone: the corpus as sent to clamd lives in this process too (the engine
        // bench measures the engine's memory).
        rss = rss.max(run.rss_first_half.max(run.rss_second_half) as f64 / 1024.0);
        let used = [per_message(own - double), per_message(double), clamd.map_or(f64::NAN, per_message)];
        cpu.push(used);
        if let Some((plain, kept)) = alone {
            ratios.push([run.rate / plain, lone.rate / plain, run.rate / kept, lone.rate / kept]);
            // With the cores shared, the rate cannot pass every core busy all the time with the
            // CPU both sides used per message, whatever the overlap.
            bounds.push(cores as f64 * 1e3 / used.iter().sum::<f64>() / plain);
        }
    }
    for (stage, mut latencies) in in_engine {
        latencies.sort();
        row(
            &format!("  {stage} stage in the engine"),
            "-",
            None,
            percentile_ms(&latencies, 50),
            percentile_ms(&latencies, 99),
            None,
        );
    }
    let spread = |values: Vec<f64>| {
        let mut v = values;
        v.sort_by(f64::total_cmp);
        match (v.first(), v.get(v.len() / 2), v.last()) {
            (Some(lo), Some(mid), Some(hi)) => format!("{mid:.2} ({lo:.2}–{hi:.2})"),
            _ => "-".into(),
        }
    };
    let column = |rows: &[[f64; 4]], i: usize| spread(rows.iter().map(|r| r[i]).collect());
    if !ratios.is_empty() {
        println!("engine / clamd alone, median (lowest–highest) of {rounds} rounds:");
        println!(
            "  all stages:  {} against the plain loop (target >= 0.95), {} against sessions",
            column(&ratios, 0),
            column(&ratios, 2)
        );
        println!(
            "  clamav only: {} against the plain loop, {} against sessions",
            column(&ratios, 1),
            column(&ratios, 3)
        );
        println!("  at most, were both sides' CPU packed onto every core without a gap: {}", spread(bounds));
    }
    let cpu_column = |i: usize| spread(cpu.iter().map(|c| c[i]).collect());
    println!(
        "CPU ms per message in the all-stages runs: the engine {}, the dccifd double {}, clamd {}; process RSS peak {rss:.1} MiB",
        cpu_column(0),
        cpu_column(1),
        cpu_column(2)
    );
}
