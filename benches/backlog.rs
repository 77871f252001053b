//! `spoolsift watch --once` over a backlog: a queuefile directory that already holds N small pairs
//! when the daemon starts, as after an outage of the daemon. Wall time and CPU per message, with
//! the pairs written in arrival order and reversed, and `[metrics]` off and on (the gauges list
//! the intake), so that a cost which grows with the backlog at every batch or claim shows as a
//! rate falling with N. Run with
//! `cargo bench --bench backlog -- [--messages N]... [--spoolsift PATH]` (default 3,000 and
//! 30,000, on tmpfs; `--spoolsift` runs another build, an earlier one say, on the same corpus).

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/cpu.rs"]
mod cpu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use cpu::cpu_children;
use spoolsift::spool::MessageId;

fn pipeline(root: &Path, metrics: bool) -> String {
    let metrics = if metrics {
        format!("[metrics]\ntextfile = \"{}\"\n", root.join("spoolsift.prom").display())
    } else {
        String::new()
    };
    format!(
        r#"name = "backlog"

[stages.content]

[intake]
queuefile_directory = "{q}"
work_directory = "{w}"

[requeue]
spool_directory = "{s}"
exim_command = ["true"]
split_spool_directory = false
kick = false

{policy}

{metrics}"#,
        q = root.join("queuefile").display(),
        w = root.join("work").display(),
        s = root.join("spool").display(),
        policy = corpus::POLICY,
    )
}

/// One `watch --once` over the corpus, hard-linked into a fresh queuefile directory: (seconds,
/// CPU seconds).
fn run(
    spoolsift: &Path,
    corpus: &Path,
    ids: &[(MessageId, u64)],
    root: &Path,
    metrics: bool,
    reversed: bool,
) -> (f64, f64) {
    let n = ids.len();
    if root.exists() {
        std::fs::remove_dir_all(root).unwrap();
    }
    for d in ["queuefile", "work", "spool/input"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    // In the order queuefile writes them as the mail arrives (by id, `-H` before `-D`), or the
    // other way round, as pairs copied from a queue in any order may come (a directory's listing
    // order follows the order of creation on tmpfs, and the engine claims the oldest ids first).
    let ordered: Vec<&(MessageId, u64)> = match reversed {
        false => ids.iter().collect(),
        true => ids.iter().rev().collect(),
    };
    for (id, _) in ordered {
        for suffix in ["H", "D"] {
            let name = format!("{id}-{suffix}");
            std::fs::hard_link(corpus.join(&name), root.join("queuefile").join(&name)).unwrap();
        }
    }
    let p = root.join("pipeline.toml");
    std::fs::write(&p, pipeline(root, metrics)).unwrap();
    let cpu = cpu_children();
    let start = Instant::now();
    let out = Command::new(spoolsift).args(["watch", "--once", "--pipeline"]).arg(&p).output().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let queued = std::fs::read_dir(root.join("spool/input")).unwrap().count();
    assert_eq!(queued, 2 * n, "every message re-queued, once");
    // The re-queued links go, so the corpus's link count is 1 again for the next run.
    std::fs::remove_dir_all(root).unwrap();
    (secs, cpu_children() - cpu)
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut sizes = Vec::new();
    let mut spoolsift = PathBuf::from(env!("CARGO_BIN_EXE_spoolsift"));
    let mut from: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--messages" => sizes.push(args.next().and_then(|v| v.parse().ok()).expect("--messages N")),
            "--spoolsift" => spoolsift = PathBuf::from(args.next().expect("--spoolsift PATH")),
            "--from" => from = Some(PathBuf::from(args.next().expect("--from DIR"))),
            "--help" | "-h" => {
                println!("backlog [--messages N]... [--spoolsift PATH]  (default 3000 and 30000; in /dev/shm)");
                return;
            }
            other => panic!("unknown argument {other}"),
        }
    }
    if sizes.is_empty() {
        sizes = vec![3_000, 30_000];
    }
    println!("{:>8} {:<9} {:<8} {:>9} {:>9} {:>12}", "backlog", "order", "metrics", "seconds", "msg/s", "CPU µs/msg");
    for n in sizes {
        let tmp = tempfile::Builder::new().prefix("spoolsift-backlog.").tempdir_in("/dev/shm").unwrap();
        let corpus = tmp.path().join("corpus");
        let ids = match &from {
            Some(dir) => {
                let mut ids: Vec<(MessageId, u64)> = std::fs::read_dir(dir)
                    .unwrap()
                    .filter_map(|e| MessageId::from_file_name(e.unwrap().file_name().as_encoded_bytes(), b'H'))
                    .map(|id| (id, 0))
                    .collect();
                ids.sort();
                ids.truncate(n);
                std::fs::create_dir_all(&corpus).unwrap();
                for (id, _) in &ids {
                    for suffix in ["H", "D"] {
                        let name = format!("{id}-{suffix}");
                        std::fs::copy(dir.join(&name), corpus.join(&name)).unwrap();
                    }
                }
                ids
            }
            None => corpus::generate(&corpus, n, true),
        };
        for reversed in [false, true] {
            for metrics in [false, true] {
                let (secs, cpu) = run(&spoolsift, &corpus, &ids, &tmp.path().join("run"), metrics, reversed);
                println!(
                    "{n:>8} {:<9} {:<8} {secs:>9.2} {:>9.0} {:>12.0}",
                    if reversed { "reversed" } else { "arrival" },
                    if metrics { "on" } else { "off" },
                    n as f64 / secs,
                    cpu * 1e6 / n as f64
                );
            }
        }
    }
}
