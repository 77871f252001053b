//! Engine benchmark: messages/s, drop-to-re-queue latency, memory and CPU per message (user and
//! system, which syscall savings show in even when the rate is noisy) of the engine with the
//! built-in scanner, on tmpfs and on the real disk, next to the same disk's raw rate for the same
//! write pattern, and the file-system floor of one message (`floor`), per core. Run with
//! `scripts/bench.sh` (or `cargo bench --bench engine -- --help`).
//!
//! Two per-core figures stand beside the floor's (which is one thread, so its messages per second
//! are its messages per CPU-second): `/core`, the engine's messages per second over the cores, and
//! `/CPU-s`, its messages per CPU-second of its own threads. The engine's CPU columns leave out the
//! feeder thread (shown apart), whose links are queuefile's work, charged to Exim on a real host;
//! they are split by the engine's threads into claim (the intake: listing, locks, moves into
//! `work/`, journal), scan (reading and the stages) and commit (re-queue, journal, clean-up).
//! How the engine is fed and timed: support/engine_run.rs.

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cpu.rs"]
mod cpu;
#[path = "support/engine_run.rs"]
mod engine_run;

use std::path::{Path, PathBuf};
use std::time::Instant;

use corpus::generate;
use engine_run::{rss_kib, run_engine_with_backlog, BACKLOG};
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

/// The file-system floor of one message on this file system, single-threaded: only the calls
/// that taking a pair and re-queueing it by the spool procedure cannot do without, with no
/// parsing, scanning or journal — claim (lock the `-D`, rename the pair into a work directory),
/// read both files, re-queue under the same id (link the `-D`, `-H` through a synced temp name,
/// lock the target `-D`, rename without replacing), remove the work pair; one sync of each
/// directory per batch of 64. Every call is made relative to an open directory (`*at`), the
/// cheapest way to name a file, so the engine's CPU per message cannot go below this.
fn floor(corpus: &Path, ids: &[(MessageId, u64)], root: &Path) -> f64 {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (qf, work, input) = (root.join("qf"), root.join("work"), root.join("input"));
    for d in [&qf, &work, &input] {
        std::fs::create_dir_all(d).unwrap();
    }
    for (id, _) in ids {
        for s in ["H", "D"] {
            std::fs::hard_link(corpus.join(format!("{id}-{s}")), qf.join(format!("{id}-{s}"))).unwrap();
        }
    }
    let cstr = |s: &[u8]| CString::new(s).unwrap();
    // SAFETY (every block below): libc calls on descriptors opened here and NUL-terminated names;
    // each result is checked.
    let open_dir = |p: &Path| {
        let fd = unsafe { libc::open(cstr(p.as_os_str().as_bytes()).as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0);
        fd
    };
    let lock = |fd: libc::c_int, len: u64| {
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as _;
        fl.l_whence = libc::SEEK_SET as _;
        fl.l_len = len as _;
        assert_eq!(unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &fl) }, 0);
    };
    let (qf_fd, work_fd, input_fd) = (open_dir(&qf), open_dir(&work), open_dir(&input));
    let mut buf = vec![0u8; 1 << 16];
    let start = Instant::now();
    for (i, (id, _)) in ids.iter().enumerate() {
        let first_line = id.first_line_len() as u64;
        let (h, d, tmp) = (
            cstr(format!("{id}-H").as_bytes()),
            cstr(format!("{id}-D").as_bytes()),
            cstr(format!("rq.{id}.H.tmp").as_bytes()),
        );
        unsafe {
            let fd = libc::openat(qf_fd, d.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            assert!(fd >= 0);
            lock(fd, first_line);
            assert_eq!(libc::renameat(qf_fd, d.as_ptr(), work_fd, d.as_ptr()), 0);
            assert_eq!(libc::renameat(qf_fd, h.as_ptr(), work_fd, h.as_ptr()), 0);
            libc::close(fd);
            let mut header_len = 0;
            for name in [&h, &d] {
                let f = libc::openat(work_fd, name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                assert!(f >= 0);
                let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
                assert!(n > 0);
                if name == &h {
                    header_len = n as usize;
                }
                libc::close(f);
            }
            assert_eq!(libc::linkat(work_fd, d.as_ptr(), input_fd, d.as_ptr(), 0), 0);
            let t = libc::openat(
                input_fd,
                tmp.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o640,
            );
            assert!(t >= 0);
            assert!(libc::write(t, buf.as_ptr().cast(), header_len) > 0);
            assert_eq!(libc::fsync(t), 0);
            libc::close(t);
            let target = libc::openat(input_fd, d.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            assert!(target >= 0);
            lock(target, first_line);
            assert_eq!(libc::renameat2(input_fd, tmp.as_ptr(), input_fd, h.as_ptr(), libc::RENAME_NOREPLACE), 0);
            libc::close(target);
            assert_eq!(libc::unlinkat(work_fd, h.as_ptr(), 0), 0);
            assert_eq!(libc::unlinkat(work_fd, d.as_ptr(), 0), 0);
            if i % 64 == 63 || i + 1 == ids.len() {
                for dir in [qf_fd, work_fd, input_fd] {
                    assert_eq!(libc::fsync(dir), 0);
                }
            }
        }
    }
    let rate = ids.len() as f64 / start.elapsed().as_secs_f64();
    for dir in [qf_fd, work_fd, input_fd] {
        unsafe { libc::close(dir) };
    }
    // The re-queued links go, so the corpus has one link again when the engine is fed from it:
    // with more, the engine takes each `-D` for one someone else could rewrite, and copies it.
    std::fs::remove_dir_all(root).unwrap();
    rate
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut n = 10_000;
    let mut backlog = BACKLOG;
    let mut places: Vec<(String, PathBuf)> = Vec::new();
    let mut corpora = vec![("mixed", false), ("small", true)];
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => n = args.next().and_then(|v| v.parse().ok()).expect("--messages N"),
            "--backlog" => backlog = args.next().and_then(|v| v.parse().ok()).expect("--backlog N"),
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
                    "engine [--messages N] [--dir LABEL=PATH]... [--corpus mixed|small] [--backlog N]  (default: tmpfs=/dev/shm, disk=target, both corpora, backlog {BACKLOG})"
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
        "{:<7} {:<6} {:>8} {:>10} {:>10} {:>9} {:>9} {:>10} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>7} {:>7}",
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
        "anon1",
        "anon2",
        "user µs",
        "sys µs",
        "feeder µs",
        "claim µs",
        "scan µs",
        "commit µs",
        "floor/core",
        "/core",
        "/CPU-s"
    );
    let mut goals = Vec::new();
    for (label, base) in &places {
        for &(corpus_name, small) in &corpora {
            let root = tempfile::Builder::new().prefix("spoolsift-bench.").tempdir_in(base).unwrap();
            let corpus = root.path().join("corpus");
            let ids = generate(&corpus, n, small);
            let raw = baseline(&corpus, &ids, &root.path().join("baseline"));
            let least = floor(&corpus, &ids, &root.path().join("floor"));
            let mut pipeline = PipelineConfig::embedded();
            pipeline.batch.max_messages = 256;
            let run =
                run_engine_with_backlog(&corpus, &ids, &root.path().join("engine"), pipeline, backlog, &mut |_| {});
            // The engine's own CPU: the feeder's links are queuefile's work on a real host.
            let engine_cpu = run.cpu.0 + run.cpu.1 - run.feeder_cpu.0 - run.feeder_cpu.1;
            println!(
                "{:<7} {:<6} {:>8} {:>10.0} {:>10.0} {:>9.2} {:>9.1} {:>10.1} {:>8.1} {:>8.1} {:>6.1} {:>6.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>10.0} {:>7.0} {:>7.0}",
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
                run.anon_first_half as f64 / 1024.0,
                run.anon_second_half as f64 / 1024.0,
                (run.cpu.0 - run.feeder_cpu.0) * 1e6 / n as f64,
                (run.cpu.1 - run.feeder_cpu.1) * 1e6 / n as f64,
                (run.feeder_cpu.0 + run.feeder_cpu.1) * 1e6 / n as f64,
                (engine_cpu - run.scan_cpu - run.commit_cpu) * 1e6 / n as f64,
                run.scan_cpu * 1e6 / n as f64,
                run.commit_cpu * 1e6 / n as f64,
                least,
                run.rate / cores as f64,
                n as f64 / engine_cpu
            );
            if small {
                goals.push(format!(
                    "  {label} small: {:.2} x the floor per core, {:.2} per CPU-second (goal >= 0.6); bound: the \
                     engine's {:.0} µs of CPU per message against the floor's {:.0} allow at most {:.2} x the floor \
                     per core with every core busy all the time",
                    run.rate / cores as f64 / least,
                    n as f64 / engine_cpu / least,
                    engine_cpu * 1e6 / n as f64,
                    1e6 / least,
                    n as f64 / engine_cpu / least
                ));
            }
        }
    }
    println!("cores: {cores}; peak RSS of the whole run: {:.1} MiB", rss_kib("VmHWM:") as f64 / 1024.0);
    if !goals.is_empty() {
        println!("goal (issue 18), small messages against the file-system floor:");
        goals.iter().for_each(|g| println!("{g}"));
    }
}
