//! spoolsift beside a peer on one corpus and one clamd: rspamd (Debian's package, on loopback,
//! with only the checks spoolsift has: antivirus through the same clamd, ARC, DKIM, MIME types)
//! fed over `rspamc`, `spoolsift scan`, and the engine as `spoolsift watch` runs it, each next to
//! clamd alone. Run by `scripts/bench-peers.sh`, which starts the services; in two steps:
//!
//! * `peers corpus --dir D [--messages N]` writes the corpus: spool pairs in `D/spool` (70% small
//!   text, 25% 50–300 KB with an attachment, 5% 1–2 MB, 1% with the anti-virus test string
//!   attached, 10% with an ARC set), the same messages as `.eml` in `D/eml` (headers, blank line,
//!   body: the bytes both sides read), and the ARC key's DNS record in `D/txt-record` as
//!   `name=value`, for the peer's DNS server;
//! * `peers run --dir D --clamd unix:SOCK --clamd-pid PID --rspamd HOST:PORT --rspamd-pid PID`
//!   times each run over `--rounds` rounds (3), alternating, and prints one table of medians.
//!
//! Rows: clamd alone (the same bytes the clamav stage sends, from memory, on kept sessions over
//! as many connections as the stage opens: clamd's best, the ceiling); rspamd at each `rspamc -n`
//! concurrency; `spoolsift scan`; the engine (claim, all stages, re-queue into a spool, as
//! `watch`). For each: messages per second, the ratio to clamd alone in the same round, CPU per
//! message of the scanner's own processes, of the client (rspamc) and of clamd, and the infected
//! and ARC-pass counts, which must agree between the sides (the bench stops if they do not).

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cpu.rs"]
mod cpu;
#[allow(dead_code)]
#[path = "support/engine_run.rs"]
mod engine_run;
#[path = "support/keys.rs"]
mod keys;
#[path = "support/sealed.rs"]
mod sealed;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cpu::{cpu_children, cpu_seconds, proc_cpu_seconds, stat_fields};
use spoolsift::pipeline::PipelineConfig;
use spoolsift::spool::{DataFile, MessageId, MessageView};
use spoolsift::stages::net::Endpoint;

/// The corpus of the issue's measurements: sizes of the three kinds, and the test string in one
/// message of a hundred.
const MIX: corpus::Mix = corpus::Mix {
    small: (2_000, 10_000),
    attached: (50_000, 300_000),
    large: (1_000_000, 2_000_000),
    eicar_every: Some(100),
};

/// Connections to clamd on each side: the clamav stage's default, and rspamd's clamd upstream
/// takes one connection per scan.
const CONNECTIONS: usize = 4;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let what = args.next().unwrap_or_default();
    let mut opts: BTreeMap<String, String> = BTreeMap::new();
    while let Some(a) = args.next() {
        let Some(name) = a.strip_prefix("--") else { usage() };
        opts.insert(name.to_string(), args.next().unwrap_or_else(|| usage()));
    }
    let dir = PathBuf::from(opts.get("dir").unwrap_or_else(|| usage()));
    match what.as_str() {
        "corpus" => make_corpus(&dir, opts.get("messages").map_or(2_000, |n| n.parse().expect("--messages N"))),
        "run" => run(&dir, &opts),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: peers corpus --dir D [--messages N]");
    eprintln!(
        "       peers run --dir D --clamd unix:SOCK --clamd-pid PID --rspamd HOST:PORT --rspamd-pid PID \
         [--concurrency 4,8,16] [--rounds 3] [--rows clamd,rspamd,scan,watch]"
    );
    std::process::exit(2)
}

fn make_corpus(dir: &Path, n: usize) {
    let spool = dir.join("spool");
    let ids = corpus::generate_mix(&spool, n, MIX);
    let mut messages = sealed::load(&spool, &ids);
    let (records, sealed) = sealed::seal_some(dir, &mut messages);
    let eml = dir.join("eml");
    std::fs::create_dir_all(&eml).unwrap();
    for m in &messages {
        let data = DataFile::open(&m.data, &m.id).unwrap();
        let mut bytes = Vec::new();
        MessageView::new(&m.header, &data).reader().read_to_end(&mut bytes).unwrap();
        std::fs::write(eml.join(format!("{}.eml", m.id)), bytes).unwrap();
    }
    let list: String = ids.iter().map(|(id, size)| format!("{id} {size}\n")).collect();
    std::fs::write(dir.join("ids"), list).unwrap();
    let records: BTreeMap<String, String> = serde_json::from_slice(&std::fs::read(&records).unwrap()).unwrap();
    let (name, value) = records.iter().next().unwrap();
    std::fs::write(dir.join("txt-record"), format!("{name}={value}\n")).unwrap();
    let infected = (0..n).filter(|i| i % 100 == 50).count();
    println!("corpus: {n} messages in {}, {sealed} with an ARC set, {infected} with the test string", dir.display());
}

/// What one run came to.
#[derive(Clone, Default)]
struct Run {
    rate: f64,
    /// CPU ms per message: the scanner's own processes, its client (rspamc), clamd.
    own: f64,
    client: Option<f64>,
    clamd: f64,
    infected: usize,
    arc_pass: usize,
    p99_ms: Option<f64>,
}

fn run(dir: &Path, opts: &BTreeMap<String, String>) {
    let get = |k: &str| opts.get(k).cloned().unwrap_or_else(|| usage());
    let clamd = get("clamd");
    let clamd_pid = get("clamd-pid");
    let rspamd = get("rspamd");
    let rspamd_pid = get("rspamd-pid");
    let rounds: usize = opts.get("rounds").map_or(3, |r| r.parse().expect("--rounds N"));
    let concurrency: Vec<usize> = opts
        .get("concurrency")
        .map_or("4,8,16", String::as_str)
        .split(',')
        .map(|c| c.parse().expect("--concurrency N,N"))
        .collect();
    let ids: Vec<(MessageId, u64)> = std::fs::read_to_string(dir.join("ids"))
        .unwrap()
        .lines()
        .map(|l| {
            let (id, size) = l.split_once(' ').unwrap();
            (MessageId::parse(id.as_bytes()).unwrap(), size.parse().unwrap())
        })
        .collect();
    // Some rows only, to profile one of them (clamd alone is always run: it is the reference).
    let rows_wanted: Vec<String> =
        opts.get("rows").map_or("clamd,rspamd,scan,watch", String::as_str).split(',').map(String::from).collect();
    let want = |row: &str| rows_wanted.iter().any(|r| r == row);
    let n = ids.len();
    let spool = dir.join("spool");
    let messages = sealed::load(&spool, &ids);
    let framed: Vec<Vec<u8>> = messages.iter().map(sealed::instream_framed).collect();
    let endpoint = Endpoint::parse(&clamd).unwrap();
    let want_infected = (0..n).filter(|i| i % 100 == 50).count();
    let want_arc = n.div_ceil(10);
    let pipeline_file = dir.join("pipeline.toml");
    std::fs::write(&pipeline_file, pipeline_text(&clamd, &dir.join("txt-records.json"))).unwrap();
    let pipeline = PipelineConfig::parse(&std::fs::read_to_string(&pipeline_file).unwrap(), &pipeline_file).unwrap();
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mib = framed.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    println!(
        "peers: {n} messages ({mib:.0} MiB), {want_infected} with the test string, {want_arc} with an ARC set; \
         clamd {clamd}; rspamd {rspamd}; {cores} cores; medians of {rounds} rounds"
    );

    // Warm-up, not compared: a fresh clamd scans its first pass at a third of its later rate, and
    // rspamd compiles its maps on its first messages.
    clamd_alone(&endpoint, &framed, &clamd_pid);
    if want("rspamd") {
        rspamc(dir, &rspamd, 8, &rspamd_pid, &clamd_pid, n);
    }

    let mut rows: BTreeMap<(usize, String), Vec<(Run, f64)>> = BTreeMap::new();
    let mut add =
        |order: usize, name: String, run: Run, alone: f64| rows.entry((order, name)).or_default().push((run, alone));
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}");
        let alone = clamd_alone(&endpoint, &framed, &clamd_pid);
        let base = alone.rate;
        add(0, format!("clamd alone ({CONNECTIONS} sessions)"), alone, base);
        for &c in concurrency.iter().filter(|_| want("rspamd")) {
            let r = rspamc(dir, &rspamd, c, &rspamd_pid, &clamd_pid, n);
            check_counts(&format!("rspamd -n {c}"), &r, want_infected, want_arc);
            add(1 + c, format!("rspamd, rspamc -n {c}"), r, base);
        }
        if want("scan") {
            let r = scan(&pipeline_file, &spool, &clamd_pid, n);
            check_counts("spoolsift scan", &r, want_infected, want_arc);
            add(1_000_000, "spoolsift scan".into(), r, base);
        }
        if want("watch") {
            let r = engine(&spool, &ids, &dir.join(format!("engine-{round}")), &pipeline, &clamd_pid);
            check_counts("spoolsift watch", &r, want_infected, want_arc);
            add(1_000_001, "spoolsift watch (engine)".into(), r, base);
        }
    }

    println!(
        "{:<30} {:>8} {:>9} {:>9} {:>10} {:>9} {:>8} {:>8} {:>8}",
        "run", "msg/s", "× clamd", "own ms", "client ms", "clamd ms", "infected", "ARC pass", "p99 ms"
    );
    let mut medians: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for ((_, name), runs) in &rows {
        let med = |f: &dyn Fn(&(Run, f64)) -> f64| median(runs.iter().map(f).collect());
        let rate = med(&|(r, _)| r.rate);
        let ratio = med(&|(r, alone)| r.rate / alone);
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
        let client = runs[0].0.client.map(|_| med(&|(r, _)| r.client.unwrap_or(0.0)));
        let p99 = runs[0].0.p99_ms.map(|_| med(&|(r, _)| r.p99_ms.unwrap_or(0.0)));
        let last = &runs[runs.len() - 1].0;
        println!(
            "{name:<30} {rate:>8.0} {ratio:>9.2} {:>9.2} {:>10} {:>9.2} {:>8} {:>8} {:>8}",
            med(&|(r, _)| r.own),
            opt(client),
            med(&|(r, _)| r.clamd),
            last.infected,
            last.arc_pass,
            p99.map_or("-".to_string(), |p| format!("{p:.0}")),
        );
        medians.insert(name.clone(), (rate, ratio));
    }
    let best_rspamd = medians.iter().filter(|(k, _)| k.starts_with("rspamd")).map(|(_, v)| v.0).fold(0.0, f64::max);
    let engine = medians.get("spoolsift watch (engine)").copied().unwrap_or_default();
    let scan = medians.get("spoolsift scan").copied().unwrap_or_default();
    println!("goals (ratios of medians measured in the same rounds):");
    println!(
        "  spoolsift / rspamd at its best concurrency: watch {:.2}, scan {:.2} (goal >= 3)",
        engine.0 / best_rspamd,
        scan.0 / best_rspamd
    );
    // Both sides send every message to the same clamd, which alone goes no faster than its own
    // row: the ratio to rspamd cannot pass clamd alone's rate over rspamd's.
    let alone = medians.iter().find(|(k, _)| k.starts_with("clamd alone")).map_or(f64::NAN, |(_, v)| v.0);
    println!(
        "  bound: every message goes to the one clamd on both sides, so at most clamd alone / rspamd = {:.2}",
        alone / best_rspamd
    );
    println!("  spoolsift watch / clamd alone: {:.2} (goal >= 0.95)", engine.1);
    let cpu = rows.iter().find(|((o, _), _)| *o == 1_000_001).map(|(_, runs)| {
        let own = median(runs.iter().map(|(r, _)| r.own).collect());
        let clamd = median(runs.iter().map(|(r, _)| r.clamd).collect());
        let alone = median(runs.iter().map(|(_, a)| *a).collect());
        (own, clamd, alone)
    });
    if let Some((own, clamd, alone)) = cpu {
        println!(
            "  bound: with the engine's {own:.2} ms and clamd's {clamd:.2} ms of CPU per message on {cores} cores, \
             at most {:.2} × clamd alone even with every core busy all the time",
            cores as f64 * 1e3 / (own + clamd) / alone
        );
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn check_counts(what: &str, r: &Run, infected: usize, arc: usize) {
    assert_eq!((r.infected, r.arc_pass), (infected, arc), "{what}: (infected, ARC pass) differ from the corpus's");
}

/// The spoolsift side: the checks the peer runs, and the embedded pipeline's policy.
fn pipeline_text(clamd: &str, records: &Path) -> String {
    format!(
        r#"name = "peers"
authserv_id = "bench.localhost"

[stages.content]

[stages.clamav]
servers = ["{clamd}"]
max_connections_per_server = {CONNECTIONS}

[stages.arc]
txt_records = "{records}"

[stages.dkim]
txt_records = "{records}"

{policy}
"#,
        records = records.display(),
        policy = corpus::POLICY,
    )
}

/// clamd's own rate: each of `CONNECTIONS` threads keeps one `zIDSESSION` and sends the next
/// message on it when the last is answered.
fn clamd_alone(clamd: &Endpoint, framed: &[Vec<u8>], clamd_pid: &str) -> Run {
    let next = AtomicUsize::new(0);
    let infected = AtomicUsize::new(0);
    let before = (cpu_self(), cpu_pids(&[clamd_pid.to_string()]));
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..CONNECTIONS {
            s.spawn(|| {
                let mut conn = clamd.connect(Duration::from_secs(5)).unwrap();
                conn.set_read_timeout(Duration::from_secs(60)).unwrap();
                conn.write_all(b"zIDSESSION\0").unwrap();
                let mut scans = 0;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(message) = framed.get(i) else { return };
                    scans += 1;
                    conn.write_all(message).unwrap();
                    let reply = sealed::clamd_reply(&mut conn);
                    match reply.strip_prefix(&format!("{scans}: stream: ")) {
                        Some("OK") => {}
                        Some(r) if r.ends_with(" FOUND") => _ = infected.fetch_add(1, Ordering::Relaxed),
                        _ => panic!("clamd: {reply}"),
                    }
                }
            });
        }
    });
    let secs = start.elapsed().as_secs_f64();
    let n = framed.len() as f64;
    Run {
        rate: n / secs,
        own: (cpu_self() - before.0) * 1e3 / n,
        client: None,
        clamd: (cpu_pids(&[clamd_pid.to_string()]) - before.1) * 1e3 / n,
        infected: infected.into_inner(),
        arc_pass: 0,
        p99_ms: None,
    }
}

/// rspamd over `rspamc -n c` on the corpus's `.eml` files: the infected count is the messages
/// with the antivirus symbol, the ARC count those with `ARC_ALLOW`.
fn rspamc(dir: &Path, rspamd: &str, c: usize, rspamd_pid: &str, clamd_pid: &str, n: usize) -> Run {
    let before = (cpu_pids(&process_group(rspamd_pid)), cpu_pids(&[clamd_pid.to_string()]), cpu_children());
    let start = Instant::now();
    let out = Command::new("rspamc")
        .args(["-h", rspamd, "-n", &c.to_string(), "-t", "120", "-j", "--compact"])
        .arg(dir.join("eml"))
        .output()
        .expect("rspamc runs");
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "rspamc: {}", String::from_utf8_lossy(&out.stderr));
    let (results, infected, arc_pass) = count_rspamc(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(results, n, "rspamc answered for {results} of {n} messages");
    let nf = n as f64;
    Run {
        rate: nf / secs,
        own: (cpu_pids(&process_group(rspamd_pid)) - before.0) * 1e3 / nf,
        client: Some((cpu_children() - before.2) * 1e3 / nf),
        clamd: (cpu_pids(&[clamd_pid.to_string()]) - before.1) * 1e3 / nf,
        infected,
        arc_pass,
        p99_ms: None,
    }
}

/// rspamc's output: a JSON object per message (`"symbols": {"NAME": {...}}`); counts of the
/// messages answered, of those with the antivirus symbol and of those with `ARC_ALLOW`.
fn count_rspamc(out: &str) -> (usize, usize, usize) {
    let (mut results, mut infected, mut arc) = (0, 0, 0);
    for v in serde_json::Deserializer::from_str(out).into_iter::<serde_json::Value>() {
        let Ok(v) = v else { continue };
        let Some(symbols) = v.get("symbols").and_then(|s| s.as_object()) else { continue };
        results += 1;
        infected += usize::from(symbols.contains_key("CLAM_VIRUS"));
        arc += usize::from(symbols.contains_key("ARC_ALLOW"));
    }
    (results, infected, arc)
}

/// `spoolsift scan` over the spool pairs, its JSON lines counted.
fn scan(pipeline: &Path, spool: &Path, clamd_pid: &str, n: usize) -> Run {
    let report = spool.with_file_name("scan-report.jsonl");
    let before = (cpu_pids(&[clamd_pid.to_string()]), cpu_children());
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .arg("scan")
        .arg("--pipeline")
        .arg(pipeline)
        .arg("--report")
        .arg(&report)
        .arg(spool)
        .output()
        .expect("spoolsift scan runs");
    let secs = start.elapsed().as_secs_f64();
    // 1: something was found (the test string), which is expected.
    assert!(matches!(out.status.code(), Some(0 | 1)), "spoolsift scan: {}", String::from_utf8_lossy(&out.stderr));
    let (mut results, mut infected, mut arc_pass) = (0, 0, 0);
    for line in std::fs::read_to_string(&report).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        results += 1;
        let verdict = |stage: &str| {
            v["stages"].as_array().into_iter().flatten().find(|s| s["stage"] == stage).map(|s| s["verdict"].clone())
        };
        infected += usize::from(verdict("clamav").is_some_and(|v| v == "infected"));
        arc_pass += usize::from(verdict("arc").is_some_and(|v| v == "auth_pass"));
    }
    assert_eq!(results, n, "spoolsift scan reported {results} of {n} messages");
    let nf = n as f64;
    Run {
        rate: nf / secs,
        own: (cpu_children() - before.1) * 1e3 / nf,
        client: None,
        clamd: (cpu_pids(&[clamd_pid.to_string()]) - before.0) * 1e3 / nf,
        infected,
        arc_pass,
        p99_ms: None,
    }
}

/// The engine as `watch` runs it (support/engine_run.rs): dropped, claimed, scanned, re-queued.
fn engine(spool: &Path, ids: &[(MessageId, u64)], root: &Path, pipeline: &PipelineConfig, clamd_pid: &str) -> Run {
    let (mut infected, mut arc_pass) = (0, 0);
    let before = (cpu_self(), cpu_pids(&[clamd_pid.to_string()]));
    let run = engine_run::run_engine(spool, ids, root, pipeline.clone(), &mut |h| {
        infected += usize::from(h.stages.iter().any(|s| s.stage == "clamav" && s.text.starts_with("infected")));
        arc_pass += usize::from(h.stages.iter().any(|s| s.stage == "arc" && s.text == "auth pass"));
    });
    let nf = ids.len() as f64;
    Run {
        rate: run.rate,
        // The feeder's links are queuefile's work on a real host (Exim's CPU), not the engine's.
        own: (cpu_self() - before.0 - run.feeder_cpu.0 - run.feeder_cpu.1) * 1e3 / nf,
        client: None,
        clamd: (cpu_pids(&[clamd_pid.to_string()]) - before.1) * 1e3 / nf,
        infected,
        arc_pass,
        p99_ms: Some(run.p99.as_secs_f64() * 1e3),
    }
}

/// CPU seconds (user + system) of these processes so far.
fn cpu_pids(pids: &[String]) -> f64 {
    pids.iter().map(|p| proc_cpu_seconds(p)).sum()
}

fn cpu_self() -> f64 {
    let (u, s) = cpu_seconds();
    u + s
}

/// Every live process of the process group `pgid` (rspamd's main process and its workers: the
/// start script makes it a session leader).
fn process_group(pgid: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        .filter(|p| stat_fields(p).get(2).is_some_and(|g| g == pgid))
        .collect()
}
