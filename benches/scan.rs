//! Offline scan benchmark: `spoolsift scan` (the release binary, the embedded pipeline with the
//! built-in scanner) over a generated corpus, with a cold and then a warm page cache, printing
//! messages/s, MB/s and the scan process's own peak RSS next to the largest message in the corpus.
//! Run with `scripts/bench.sh` (or `cargo bench --bench scan -- --help`).
//!
//! "Cold" drops the corpus files from the page cache with `posix_fadvise(DONTNEED)` (which needs no
//! privilege, unlike `/proc/sys/vm/drop_caches`); "warm" is the run right after, every file cached.

#[path = "support/corpus.rs"]
mod corpus;

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Drop every file under `dir` from the page cache.
fn evict(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let f = std::fs::File::open(entry.unwrap().path()).unwrap();
        // Dirty pages are not dropped; the corpus was written by this process, so flush it first.
        f.sync_all().unwrap();
        // SAFETY: a valid descriptor; advice only.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

struct ScanRun {
    secs: f64,
    max_rss_kib: i64,
    status: i32,
}

/// Run `spoolsift scan DIR` and take its peak RSS from the kernel's accounting of the child.
fn scan(dir: &Path, jobs: usize) -> ScanRun {
    let start = Instant::now();
    // Reaped by the wait4 below, which also gives the child's resource usage.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .arg("scan")
        .arg(dir)
        .args(["--jobs", &jobs.to_string(), "--report", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it in for this child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32, "wait4");
    ScanRun { secs: start.elapsed().as_secs_f64(), max_rss_kib: usage.ru_maxrss, status: libc::WEXITSTATUS(status) }
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut n = 10_000;
    let mut places: Vec<(String, PathBuf)> = Vec::new();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => n = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--dir" => {
                let s = args.next().expect("--dir LABEL=PATH");
                let (label, path) = s.split_once('=').expect("--dir LABEL=PATH");
                places.push((label.to_string(), PathBuf::from(path)));
            }
            "--help" | "-h" => {
                println!("scan [--messages N] [--dir LABEL=PATH]...  (default: disk=target)");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    if places.is_empty() {
        places.push(("disk".into(), PathBuf::from("target")));
    }
    let jobs = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("spoolsift scan, embedded pipeline (built-in scanner), --jobs {jobs}, mixed corpus 2 KB–2 MB");
    println!(
        "{:<7} {:<6} {:>8} {:>9} {:>9} {:>9} {:>13} {:>13}",
        "where", "cache", "msgs", "msg/s", "MB/s", "seconds", "peak RSS MiB", "largest MiB"
    );
    for (label, base) in &places {
        let root = tempfile::Builder::new().prefix("spoolsift-bench-scan.").tempdir_in(base).unwrap();
        let dir = root.path().join("corpus");
        let ids = corpus::generate(&dir, n, false);
        let bytes: u64 = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().metadata().unwrap().len()).sum();
        let largest = ids.iter().map(|(_, size)| *size).max().unwrap_or(0);
        evict(&dir);
        for cache in ["cold", "warm"] {
            let run = scan(&dir, jobs);
            // Exit 0: nothing found. The generated corpus is clean, so anything else is a failure.
            assert_eq!(run.status, 0, "spoolsift scan exited {}", run.status);
            println!(
                "{:<7} {:<6} {:>8} {:>9.0} {:>9.1} {:>9.2} {:>13.1} {:>13.1}",
                label,
                cache,
                ids.len(),
                ids.len() as f64 / run.secs,
                bytes as f64 / 1e6 / run.secs,
                run.secs,
                run.max_rss_kib as f64 / 1024.0,
                largest as f64 / (1 << 20) as f64
            );
        }
    }
}
