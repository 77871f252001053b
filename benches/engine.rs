//! Engine benchmark: messages/s, drop-to-re-queue latency and memory of the engine with the
//! built-in scanner, on tmpfs and on the real disk, next to the same disk's raw rate for the same
//! write pattern. Run with `scripts/bench.sh` (or `cargo bench --bench engine -- --help`).
//!
//! A feeder thread hard-links corpus pairs into a queuefile directory the way Exim's queuefile
//! transport does, stamping each drop; the engine claims, scans, and re-queues into an Exim-style
//! spool; a message's latency is from its drop to the end of the batch that committed it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spoolsift::intake::queuefile::QueuefileDir;
use spoolsift::pipeline::engine::{Engine, WorkDirs};
use spoolsift::pipeline::PipelineConfig;
use spoolsift::requeue::{sync_dir, TargetSpool};
use spoolsift::spool::{IdClock, IdFormat, IdMinter, MessageId};
use spoolsift::state::{open_env, StateDb};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo) as u64) as usize
    }
}

/// The -H of a corpus message, with correct header lengths.
fn header_file(id: &MessageId, body_lines: usize, subject: &str, multipart: bool) -> Vec<u8> {
    let mut headers = vec![
        ('P', format!("Received: from client.example.net ([192.0.2.10])\n\tby mx.example.org with esmtp id {id};\n\tSun, 29 Nov 2026 06:00:00 +0000\n")),
        ('F', "From: Alice <alice@example.net>\n".to_string()),
        ('T', "To: bob@example.org\n".to_string()),
        (' ', format!("Subject: {subject}\n")),
        ('I', format!("Message-ID: <{id}@example.net>\n")),
        (' ', "MIME-Version: 1.0\n".to_string()),
    ];
    if multipart {
        headers.push((' ', "Content-Type: multipart/mixed; boundary=\"bench-b\"\n".to_string()));
    }
    let mut out = format!(
        "{id}-H\nDebian-exim 102 105\n<alice@example.net>\n1795895471 0\n-received_time_usec .100000\n--helo_name client.example.net\n--host_address [192.0.2.10]:40000\n-received_protocol esmtp\n-body_linecount {body_lines}\n-max_received_linelength 76\n-deliver_firsttime\nXX\n1\nbob@example.org\n\n"
    );
    for (flag, text) in headers {
        out.push_str(&format!("{:03}{flag} {text}", text.len()));
    }
    out.into_bytes()
}

/// Generate the corpus: 70% small text (2–10 KB), 25% with an attachment (10–200 KB), 5% large
/// (200 KB–2 MB); or only small ones.
fn generate(dir: &Path, n: usize, small_only: bool) -> Vec<(MessageId, u64)> {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut minter =
        IdMinter::new(IdFormat::New23).with_pid(4242).with_clock(IdClock::Fixed { secs: 1_795_895_471, micros: 0 });
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n";
    let b64 = "QmVuY2htYXJrIGF0dGFjaG1lbnQgZGF0YSBmb3Igc3Bvb2xzaWZ0IDAxMjM0NTY3ODlhYmNkZWZnaGlq\n";
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = minter.mint();
        let roll = rng.range(0, 100);
        let (size, multipart) = match roll {
            _ if small_only => (rng.range(2_000, 4_000), false),
            0..=69 => (rng.range(2_000, 10_000), false),
            70..=94 => (rng.range(10_000, 200_000), true),
            _ => (rng.range(200_000, 2_000_000), true),
        };
        let mut body = String::with_capacity(size + 256);
        if multipart {
            body.push_str("--bench-b\nContent-Type: text/plain\n\n");
            body.push_str(line);
            body.push_str(
                "--bench-b\nContent-Type: application/pdf; name=\"report.pdf\"\nContent-Transfer-Encoding: base64\n\n",
            );
            while body.len() < size {
                body.push_str(b64);
            }
            body.push_str("--bench-b--\n");
        } else {
            while body.len() < size {
                body.push_str(line);
            }
        }
        let lines = body.matches('\n').count();
        std::fs::write(dir.join(format!("{id}-H")), header_file(&id, lines, &format!("bench {i}"), multipart)).unwrap();
        std::fs::write(dir.join(format!("{id}-D")), format!("{id}-D\n{body}")).unwrap();
        out.push((id, body.len() as u64));
    }
    out
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

/// The raw rate of the disk for the re-queue write pattern: `-D` written and synced, `-H` through
/// a temp name, synced, renamed; one directory sync per batch of 64.
fn baseline(corpus: &Path, ids: &[(MessageId, u64)], out: &Path) -> f64 {
    use std::io::Write;
    std::fs::create_dir_all(out).unwrap();
    let start = Instant::now();
    for (i, (id, _)) in ids.iter().enumerate() {
        let d = std::fs::read(corpus.join(format!("{id}-D"))).unwrap();
        let h = std::fs::read(corpus.join(format!("{id}-H"))).unwrap();
        let mut f = std::fs::File::create_new(out.join(format!("{id}-D"))).unwrap();
        f.write_all(&d).unwrap();
        f.sync_all().unwrap();
        let tmp = out.join(format!("rq.{id}.tmp"));
        let mut f = std::fs::File::create_new(&tmp).unwrap();
        f.write_all(&h).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, out.join(format!("{id}-H"))).unwrap();
        if i % 64 == 63 {
            sync_dir(out).unwrap();
        }
    }
    sync_dir(out).unwrap();
    ids.len() as f64 / start.elapsed().as_secs_f64()
}

struct EngineRun {
    rate: f64,
    p50: Duration,
    p99: Duration,
    rss_first_half: u64,
    rss_second_half: u64,
}

fn run_engine(corpus: &Path, ids: &[(MessageId, u64)], root: &Path) -> EngineRun {
    let qf = root.join("queuefile");
    let spool = root.join("spool");
    std::fs::create_dir_all(&qf).unwrap();
    std::fs::create_dir_all(spool.join("input")).unwrap();
    let dirs = WorkDirs::new(&root.join("spoolsift"));
    dirs.create().unwrap();
    let env = open_env(&dirs.state).unwrap();
    let target = TargetSpool::new(&spool, None).unwrap();
    let embedded = PipelineConfig::embedded();
    let stages = spoolsift::pipeline::build::stages(&embedded).unwrap();
    let intake = QueuefileDir::new(&qf, Some(&target.input), Duration::from_secs(900));
    let mut engine = Engine::new(embedded, stages, StateDb::new(&env).unwrap(), dirs, intake, target);
    engine.pipeline.batch.max_messages = 256;

    let dropped: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let processed = Arc::new(AtomicUsize::new(0));
    let feeding = Arc::new(AtomicBool::new(true));
    let feeder = {
        let (dropped, processed, feeding) = (Arc::clone(&dropped), Arc::clone(&processed), Arc::clone(&feeding));
        let (corpus, qf, ids) = (corpus.to_path_buf(), qf.clone(), ids.to_vec());
        std::thread::spawn(move || {
            for (i, (id, _)) in ids.iter().enumerate() {
                // Keep a bounded backlog, as a real queue would have.
                while i - processed.load(Ordering::Relaxed) > 1024 {
                    std::thread::yield_now();
                }
                std::fs::hard_link(corpus.join(format!("{id}-H")), qf.join(format!("{id}-H"))).unwrap();
                std::fs::hard_link(corpus.join(format!("{id}-D")), qf.join(format!("{id}-D"))).unwrap();
                dropped.lock().unwrap().insert(id.to_string(), Instant::now());
            }
            feeding.store(false, Ordering::Relaxed);
        })
    };
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(ids.len());
    let (mut rss_a, mut rss_b) = (0, 0);
    while processed.load(Ordering::Relaxed) < ids.len() {
        let batch = engine.claim_batch().unwrap();
        if batch.is_empty() {
            if !feeding.load(Ordering::Relaxed) && processed.load(Ordering::Relaxed) < ids.len() {
                panic!("feeder done but only {} of {} processed", processed.load(Ordering::Relaxed), ids.len());
            }
            std::thread::yield_now();
            continue;
        }
        let handled = engine.process(batch).unwrap();
        let now = Instant::now();
        let drops = dropped.lock().unwrap();
        for h in &handled {
            latencies.push(now - drops[&h.original_id]);
        }
        drop(drops);
        let done = processed.fetch_add(handled.len(), Ordering::Relaxed) + handled.len();
        let rss = rss_kib("VmRSS:");
        if done < ids.len() / 2 {
            rss_a = rss_a.max(rss);
        } else {
            rss_b = rss_b.max(rss);
        }
    }
    let rate = ids.len() as f64 / start.elapsed().as_secs_f64();
    feeder.join().unwrap();
    latencies.sort();
    EngineRun {
        rate,
        p50: latencies[latencies.len() / 2],
        p99: latencies[latencies.len() * 99 / 100],
        rss_first_half: rss_a,
        rss_second_half: rss_b,
    }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut n = 10_000;
    let mut places: Vec<(String, PathBuf)> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => n = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--dir" => {
                let p = PathBuf::from(args.next().expect("--dir LABEL=PATH"));
                let s = p.to_string_lossy().into_owned();
                let (label, path) = s.split_once('=').expect("--dir LABEL=PATH");
                places.push((label.to_string(), PathBuf::from(path)));
            }
            "--help" | "-h" => {
                println!("engine [--messages N] [--dir LABEL=PATH]...  (default: tmpfs=/dev/shm, disk=target)");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    if places.is_empty() {
        places.push(("tmpfs".into(), PathBuf::from("/dev/shm")));
        places.push(("disk".into(), PathBuf::from("target")));
    }
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!(
        "{:<7} {:<6} {:>8} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8} {:>8}",
        "where", "corpus", "msgs", "msg/s", "baseline", "ratio", "p50 ms", "p99 ms", "RSS1 MiB", "RSS2 MiB"
    );
    for (label, base) in &places {
        for (corpus_name, small) in [("mixed", false), ("small", true)] {
            let root = tempfile::Builder::new().prefix("spoolsift-bench.").tempdir_in(base).unwrap();
            let corpus = root.path().join("corpus");
            let ids = generate(&corpus, n, small);
            let raw = baseline(&corpus, &ids, &root.path().join("baseline"));
            let run = run_engine(&corpus, &ids, &root.path().join("engine"));
            println!(
                "{:<7} {:<6} {:>8} {:>10.0} {:>10.0} {:>9.2} {:>9.1} {:>10.1} {:>8.1} {:>8.1}",
                label,
                corpus_name,
                n,
                run.rate,
                raw,
                run.rate / raw,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
                run.rss_first_half as f64 / 1024.0,
                run.rss_second_half as f64 / 1024.0
            );
        }
    }
    println!("cores: {cores}; peak RSS of the whole run: {:.1} MiB", rss_kib("VmHWM:") as f64 / 1024.0);
}
