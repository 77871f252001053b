//! `spoolsift watch` with `[metrics]`: the daemon is handed clean fixture pairs and one EICAR
//! message through a queuefile directory, and its exposition — over HTTP and in the textfile —
//! must count exactly what it did: messages by action, stage results by verdict, one latency
//! observation per stage run, an empty queue at the end.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{free_port, poll, repo_root, standalone_pipeline, Daemon};

/// Clean single-copy fixtures the embedded content scanner delivers.
const CLEAN: [&str; 4] = ["b496-single", "b496-tree", "b496-utf8", "t498-single"];
const TOTAL: f64 = CLEAN.len() as f64 + 1.0;
const LIMIT: Duration = Duration::from_secs(60);

struct Setup {
    _dir: tempfile::TempDir,
    root: PathBuf,
    queuefile: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let queuefile = root.join("queuefile");
    std::fs::create_dir_all(&queuefile).unwrap();
    std::fs::create_dir_all(root.join("spool/input")).unwrap();
    Setup { _dir: dir, root, queuefile }
}

/// A pipeline like the embedded one, with explicit directories and the given `[metrics]` lines.
fn pipeline(s: &Setup, metrics: &str) -> PathBuf {
    let sections = format!(
        r#"[policy]
clean = "deliver"
infected = "quarantine"
blocked = "quarantine"
temporary_failure = "defer"
permanent_failure = "hold"

[metrics]
{metrics}"#
    );
    standalone_pipeline(&s.root, "metrics-test", &sections)
}

fn start(p: &Path) -> Daemon {
    Daemon(
        Command::new(env!("CARGO_BIN_EXE_spoolsift"))
            .arg("watch")
            .arg("--pipeline")
            .arg(p)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Hand over the clean fixtures and one EICAR message built here (never stored in the repository),
/// as queuefile would: each `-H` and `-D` under its final name.
fn drop_pairs(qf: &Path) {
    for name in CLEAN {
        let dir = repo_root().join("spool-fixtures").join(name);
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let file = p.file_name().unwrap().to_str().unwrap().to_string();
            if file.ends_with("-H") || file.ends_with("-D") {
                std::fs::copy(&p, qf.join(&file)).unwrap();
            }
        }
    }
    let id = "1zzzzz-0000000MTRX-0001";
    let subject = "Subject: metrics test with the EICAR test string";
    // Header lengths count bytes, the newline included.
    let header = format!(
        "{id}-H\nDebian-exim 102 105\n<metrics@example.org>\n1795895471 0\n-received_protocol local\n-body_linecount 1\nXX\n1\nuser@example.org\n\n{:03}  {subject}\n",
        subject.len() + 1
    );
    let mut data = format!("{id}-D\n").into_bytes();
    data.extend(spoolsift::stages::content::eicar::signature());
    data.push(b'\n');
    std::fs::write(qf.join(format!("{id}-D")), data).unwrap();
    std::fs::write(qf.join(format!("{id}-H")), header).unwrap();
}

/// Samples of an exposition by `name{labels}`; every line must be a comment or a sample.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line {line:?}"));
        let value = value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        assert!(out.insert(key.to_string(), value).is_none(), "duplicate sample {key}");
    }
    out
}

fn sum_of(s: &BTreeMap<String, f64>, family: &str) -> f64 {
    s.iter().filter(|(k, _)| k.starts_with(&format!("{family}{{"))).map(|(_, v)| v).sum()
}

/// One HTTP request; the status line, headers and body, or None while the daemon is not up yet.
fn http(port: u16, request: &str) -> Option<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.to_string(), body.to_string()))
}

fn scrape(port: u16) -> Option<String> {
    let (head, body) = http(port, "GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")?;
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    // Field names are case-insensitive (RFC 9110 §5.1).
    assert!(head.to_ascii_lowercase().contains("\r\ncontent-type: text/plain; version=0.0.4"), "{head}");
    Some(body)
}

/// Wait until every message is counted and the queue is empty, then check the counts exactly.
fn check_final(what: &str, mut read: impl FnMut() -> Option<String>) {
    let s = poll(what, LIMIT, || {
        let s = samples(&read()?);
        let total = sum_of(&s, "spoolsift_messages_total");
        assert!(total <= TOTAL, "more messages counted than handed over: {s:#?}");
        (total == TOTAL && s["spoolsift_queue_depth"] == 0.0).then_some(s)
    });
    let n = CLEAN.len() as f64;
    for (action, want) in [
        ("deliver", n),
        ("quarantine", 1.0),
        ("hold", 0.0),
        ("discard", 0.0),
        ("defer", 0.0),
        ("rejected", 0.0),
        ("nothing-owed", 0.0),
    ] {
        assert_eq!(s[&format!("spoolsift_messages_total{{action=\"{action}\"}}")], want, "{action}: {s:#?}");
    }
    assert_eq!(s["spoolsift_stage_results_total{stage=\"content\",verdict=\"clean\"}"], n);
    assert_eq!(s["spoolsift_stage_results_total{stage=\"content\",verdict=\"infected\"}"], 1.0);
    assert_eq!(sum_of(&s, "spoolsift_stage_results_total"), TOTAL, "{s:#?}");
    // One observation per stage run, in cumulative buckets ending at +Inf.
    assert_eq!(s["spoolsift_stage_duration_seconds_count{stage=\"content\"}"], TOTAL);
    assert_eq!(s["spoolsift_stage_duration_seconds_bucket{stage=\"content\",le=\"+Inf\"}"], TOTAL);
    let buckets: Vec<f64> =
        ["0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10"]
            .iter()
            .map(|le| s[&format!("spoolsift_stage_duration_seconds_bucket{{stage=\"content\",le=\"{le}\"}}")])
            .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]) && buckets[12] <= TOTAL, "{buckets:?}");
    assert!(s["spoolsift_stage_duration_seconds_sum{stage=\"content\"}"] >= 0.0);
    assert_eq!(s["spoolsift_backend_up{stage=\"content\"}"], 1.0);
    assert_eq!(s["spoolsift_queue_depth"], 0.0);
    assert_eq!(s["spoolsift_oldest_unprocessed_age_seconds"], 0.0);
}

#[test]
fn http_endpoint_counts_what_the_daemon_did() {
    let s = setup();
    let port = free_port();
    let daemon = start(&pipeline(&s, &format!("listen = \"127.0.0.1:{port}\"")));
    // Up, and nothing counted yet.
    let first = poll("the metrics endpoint", LIMIT, || scrape(port));
    let first = samples(&first);
    assert_eq!(sum_of(&first, "spoolsift_messages_total"), 0.0);
    assert_eq!(first["spoolsift_backend_up{stage=\"content\"}"], 1.0);
    assert_eq!(first["spoolsift_stage_duration_seconds_count{stage=\"content\"}"], 0.0);
    let (head, _) = http(port, "GET /other HTTP/1.1\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 404 "), "{head}");

    drop_pairs(&s.queuefile);
    check_final("all messages counted over HTTP", || scrape(port));
    // The messages really went where the counters say.
    assert_eq!(support::list(&s.root.join("spool/input")).len(), 2 * CLEAN.len());
    assert_eq!(std::fs::read_dir(s.root.join("work/quarantine")).unwrap().count(), 1);
    drop(daemon);
}

#[test]
fn textfile_counts_what_the_daemon_did() {
    let s = setup();
    let prom = s.root.join("textfile/spoolsift.prom");
    std::fs::create_dir_all(prom.parent().unwrap()).unwrap();
    let daemon = start(&pipeline(&s, &format!("textfile = \"{}\"", prom.display())));
    drop_pairs(&s.queuefile);
    check_final("all messages counted in the textfile", || std::fs::read_to_string(&prom).ok());
    drop(daemon);
}

#[test]
fn remote_listen_address_refused() {
    let s = setup();
    let out = Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .arg("watch")
        .arg("--pipeline")
        .arg(pipeline(&s, "listen = \"0.0.0.0:9465\""))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_remote"), "{err}");
}

#[test]
fn a_stuck_pair_shows_in_the_backlog_gauges() {
    let s = setup();
    let port = free_port();
    let _daemon = start(&pipeline(&s, &format!("listen = \"127.0.0.1:{port}\"")));
    // An -H whose -D never came: never complete, so never taken, and an hour old.
    let h = s.queuefile.join("1xXYfU-00034G-1x-H");
    std::fs::copy(repo_root().join("spool-fixtures/b496-single/1xXYfU-00034G-1x-H"), &h).unwrap();
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&h).unwrap().set_modified(hour_ago).unwrap();
    let s = poll("the stuck pair in the gauges", LIMIT, || {
        let s = samples(&scrape(port)?);
        (s["spoolsift_queue_depth"] == 1.0).then_some(s)
    });
    let age = s["spoolsift_oldest_unprocessed_age_seconds"];
    assert!((3600.0..3600.0 + LIMIT.as_secs_f64()).contains(&age), "{age}");
    assert_eq!(sum_of(&s, "spoolsift_messages_total"), 0.0);
}
