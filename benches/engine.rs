//! Engine benchmark: messages/s, drop-to-re-queue latency, memory and CPU per message (user and
//! system, which syscall savings show in even when the rate is noisy) of the engine with the
//! built-in scanner, on tmpfs and on the real disk, next to the same disk's raw rate for the same
//! write pattern. Run with `scripts/bench.sh` (or `cargo bench --bench engine -- --help`).
//! How the engine is fed and timed: support/engine_run.rs.

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/engine_run.rs"]
mod engine_run;

use std::path::{Path, PathBuf};
use std::time::Instant;

use corpus::generate;
use engine_run::{rss_kib, run_engine};
use spoolsift::pipeline::PipelineConfig;
use spoolsift::requeue::sync_dir;
use spoolsift::spool::MessageId;

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

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut n = 10_000;
    let mut places: Vec<(String, PathBuf)> = Vec::new();
    let mut corpora = vec![("mixed", false), ("small", true)];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => n = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--dir" => {
                let p = PathBuf::from(args.next().expect("--dir LABEL=PATH"));
                let s = p.to_string_lossy().into_owned();
                let (label, path) = s.split_once('=').expect("--dir LABEL=PATH");
                places.push((label.to_string(), PathBuf::from(path)));
            }
            "--corpus" => {
                let which = args.next().expect("--corpus mixed|small");
                corpora.retain(|(name, _)| *name == which);
                assert!(!corpora.is_empty(), "--corpus mixed|small");
            }
            "--help" | "-h" => {
                println!(
                    "engine [--messages N] [--dir LABEL=PATH]... [--corpus mixed|small]  (default: tmpfs=/dev/shm, disk=target, both corpora)"
                );
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
        "{:<7} {:<6} {:>8} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8} {:>8} {:>9} {:>9}",
        "where",
        "corpus",
        "msgs",
        "msg/s",
        "baseline",
        "ratio",
        "p50 ms",
        "p99 ms",
        "RSS1 MiB",
        "RSS2 MiB",
        "user µs",
        "sys µs"
    );
    for (label, base) in &places {
        for &(corpus_name, small) in &corpora {
            let root = tempfile::Builder::new().prefix("spoolsift-bench.").tempdir_in(base).unwrap();
            let corpus = root.path().join("corpus");
            let ids = generate(&corpus, n, small);
            let raw = baseline(&corpus, &ids, &root.path().join("baseline"));
            let mut pipeline = PipelineConfig::embedded();
            pipeline.batch.max_messages = 256;
            let run = run_engine(&corpus, &ids, &root.path().join("engine"), pipeline, &mut |_| {});
            println!(
                "{:<7} {:<6} {:>8} {:>10.0} {:>10.0} {:>9.2} {:>9.1} {:>10.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
                label,
                corpus_name,
                n,
                run.rate,
                raw,
                run.rate / raw,
                run.p50.as_secs_f64() * 1e3,
                run.p99.as_secs_f64() * 1e3,
                run.rss_first_half as f64 / 1024.0,
                run.rss_second_half as f64 / 1024.0,
                run.cpu.0 * 1e6 / n as f64,
                run.cpu.1 * 1e6 / n as f64
            );
        }
    }
    println!("cores: {cores}; peak RSS of the whole run: {:.1} MiB", rss_kib("VmHWM:") as f64 / 1024.0);
}
