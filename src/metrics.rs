//! Prometheus metrics: what the daemon did (messages by action, stage results and latencies),
//! whether its backends answer, and how far behind it is (queue depth, oldest unprocessed age).
//!
//! Exposed in the text exposition format (version 0.0.4) on a loopback HTTP port, and/or written
//! atomically to a file for node_exporter's textfile collector (`[metrics]` in the pipeline).
//!
//! Hand-written rather than `prometheus-client`: the registry is a handful of fixed families fed
//! from one thread after each batch, so a Mutex'd map and a formatter are ~200 lines, while the
//! crate would add a dependency tree (and its own HTTP story still has to be written) for
//! nothing we use. The exposition text is pinned byte for byte by the tests below.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::engine::{Handled, Outcome};

/// Upper bounds (seconds) of the stage latency histogram.
pub const BUCKETS: [f64; 13] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Non-cumulative counts per bucket; the cumulative `le` values are summed when rendering.
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_micros: u128,
}

impl Histogram {
    fn observe(&mut self, micros: u128) {
        let secs = micros as f64 / 1e6;
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum_micros += micros;
    }
}

#[derive(Debug, Default)]
struct Inner {
    messages: BTreeMap<String, u64>,
    stage_results: BTreeMap<(String, &'static str), u64>,
    durations: BTreeMap<String, Histogram>,
    backend_up: BTreeMap<String, bool>,
    queue_depth: u64,
    oldest_age_secs: u64,
    kicks: BTreeMap<String, u64>,
    kick_waiting: u64,
    exim_queue_depth: u64,
    exim_oldest_age_secs: u64,
}

/// The registry. Cheap to share (`Arc`); every method takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let inner = Inner {
            // Every outcome a message can end a batch with, exposed from the start.
            messages: Outcome::ALL.iter().map(|a| (a.name().to_string(), 0)).collect(),
            kicks: crate::requeue::kick::OUTCOMES.iter().map(|a| (a.to_string(), 0)).collect(),
            ..Inner::default()
        };
        Metrics { inner: Mutex::new(inner) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves counters that are still meaningful.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Make a stage's histogram and `backend_up` visible before its first message.
    pub fn register_stage(&self, stage: &str) {
        let mut m = self.lock();
        m.durations.entry(stage.to_string()).or_default();
        m.backend_up.entry(stage.to_string()).or_insert(true);
    }

    /// Count what a batch did.
    pub fn record(&self, handled: &[Handled]) {
        let mut m = self.lock();
        for h in handled {
            *m.messages.entry(h.action.name().to_string()).or_default() += 1;
            for s in &h.stages {
                *m.stage_results.entry((s.stage.clone(), s.class.name())).or_default() += 1;
                m.durations.entry(s.stage.clone()).or_default().observe(s.elapsed.as_micros());
                m.backend_up.insert(s.stage.clone(), !s.temporary_failure);
            }
        }
    }

    /// Set the backlog gauges.
    pub fn set_queue(&self, depth: u64, oldest_age_secs: u64) {
        let mut m = self.lock();
        m.queue_depth = depth;
        m.oldest_age_secs = oldest_age_secs;
    }

    /// Count what became of one kicked message (`KickOutcome::label`).
    pub fn record_kick(&self, outcome: &str) {
        *self.lock().kicks.entry(outcome.to_string()).or_default() += 1;
    }

    /// Set the gauges of Exim's own queue (the spool spoolsift re-queues into).
    pub fn set_exim_queue(&self, depth: u64, oldest_age_secs: u64) {
        let mut m = self.lock();
        m.exim_queue_depth = depth;
        m.exim_oldest_age_secs = oldest_age_secs;
    }

    /// Set the number of kick requests no kicker has run yet.
    pub fn set_kick_waiting(&self, n: u64) {
        self.lock().kick_waiting = n;
    }

    /// The text exposition (format version 0.0.4).
    pub fn render(&self) -> String {
        let m = self.lock();
        let mut o = String::new();
        family(&mut o, "spoolsift_messages_total", "counter", "Messages handled, by the action taken.");
        for (action, n) in &m.messages {
            let _ = writeln!(o, "spoolsift_messages_total{{action=\"{}\"}} {n}", esc(action));
        }
        family(&mut o, "spoolsift_stage_results_total", "counter", "Stage results, by stage and verdict.");
        for ((stage, verdict), n) in &m.stage_results {
            let _ = writeln!(
                o,
                "spoolsift_stage_results_total{{stage=\"{}\",verdict=\"{}\"}} {n}",
                esc(stage),
                esc(verdict)
            );
        }
        family(&mut o, "spoolsift_stage_duration_seconds", "histogram", "Time a stage took on one message.");
        for (stage, h) in &m.durations {
            let stage = esc(stage);
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let _ = writeln!(
                    o,
                    "spoolsift_stage_duration_seconds_bucket{{stage=\"{stage}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let _ = writeln!(o, "spoolsift_stage_duration_seconds_bucket{{stage=\"{stage}\",le=\"+Inf\"}} {}", h.count);
            let _ =
                writeln!(o, "spoolsift_stage_duration_seconds_sum{{stage=\"{stage}\"}} {}", h.sum_micros as f64 / 1e6);
            let _ = writeln!(o, "spoolsift_stage_duration_seconds_count{{stage=\"{stage}\"}} {}", h.count);
        }
        family(
            &mut o,
            "spoolsift_backend_up",
            "gauge",
            "1 unless the last result of the stage was a temporary failure.",
        );
        for (stage, up) in &m.backend_up {
            let _ = writeln!(o, "spoolsift_backend_up{{stage=\"{}\"}} {}", esc(stage), u8::from(*up));
        }
        family(
            &mut o,
            "spoolsift_queue_depth",
            "gauge",
            "Messages waiting: complete or partial pairs in the intake plus claims in the journal.",
        );
        let _ = writeln!(o, "spoolsift_queue_depth {}", m.queue_depth);
        family(
            &mut o,
            "spoolsift_oldest_unprocessed_age_seconds",
            "gauge",
            "Age of the oldest message not yet handled (0 when none).",
        );
        let _ = writeln!(o, "spoolsift_oldest_unprocessed_age_seconds {}", m.oldest_age_secs);
        family(
            &mut o,
            "spoolsift_kicks_total",
            "counter",
            "Re-queued messages by what the delivery kick left: delivered, queued (deferred), frozen, \
             interrupted (a -J left), failed, not-run (no kicker).",
        );
        for (outcome, n) in &m.kicks {
            let _ = writeln!(o, "spoolsift_kicks_total{{outcome=\"{}\"}} {n}", esc(outcome));
        }
        family(&mut o, "spoolsift_kick_requests_waiting", "gauge", "Delivery kicks requested and not run yet.");
        let _ = writeln!(o, "spoolsift_kick_requests_waiting {}", m.kick_waiting);
        family(
            &mut o,
            "spoolsift_exim_queue_depth",
            "gauge",
            "Messages in the Exim spool spoolsift re-queues into (its input/ -H files).",
        );
        let _ = writeln!(o, "spoolsift_exim_queue_depth {}", m.exim_queue_depth);
        family(
            &mut o,
            "spoolsift_exim_oldest_message_age_seconds",
            "gauge",
            "Age of the oldest message in that spool, by its id's time (0 when none).",
        );
        let _ = writeln!(o, "spoolsift_exim_oldest_message_age_seconds {}", m.exim_oldest_age_secs);
        o
    }

    /// Write the exposition to `path` for node_exporter: a temporary file beside it, then rename,
    /// so the collector never reads half a file.
    pub fn write_textfile(&self, path: &Path) -> io::Result<()> {
        let name = path.file_name().ok_or_else(|| io::Error::other("textfile path names no file"))?;
        // node_exporter only reads `*.prom`; the temporary name must not end so.
        let tmp = path.with_file_name(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
        let result = std::fs::write(&tmp, self.render()).and_then(|()| std::fs::rename(&tmp, path));
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn family(o: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
}

/// A label value as the exposition format quotes it.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Bind the metrics endpoint. A non-loopback address is refused unless `allow_remote`.
pub fn bind(addr: SocketAddr, allow_remote: bool) -> io::Result<TcpListener> {
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(io::Error::other(format!(
            "metrics listen address {addr} is not loopback (set allow_remote = true to allow it)"
        )));
    }
    TcpListener::bind(addr)
}

/// How long a client has to send its request head. A scrape's arrives at once; a client that
/// connects and sends nothing, or trickles, is dropped after this, without holding up others.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest a whole exchange may take, answer included (a client that does not read).
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest request head read; a scrape's is a few hundred bytes.
pub const MAX_REQUEST: usize = 8192;
/// Connections served at once; more are closed at once (the endpoint is local and scrapes are
/// rare, so this only bounds what a misbehaving local client can hold).
const MAX_CONNECTIONS: usize = 64;

/// Answer `GET /metrics` on `listener` from a background thread. hyper serves each connection
/// concurrently with a header timeout and a size limit, so an idle or slow client costs nothing
/// to a scrape beside it.
pub fn serve(listener: TcpListener, metrics: Arc<Metrics>) -> io::Result<std::thread::JoinHandle<()>> {
    serve_with(listener, metrics, HEADER_TIMEOUT)
}

/// [`serve`] with another header timeout (the tests lengthen it, so that an idle connection is
/// certainly still open while they scrape beside it).
pub fn serve_with(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    header_timeout: Duration,
) -> io::Result<std::thread::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    std::thread::Builder::new().name("metrics-http".into()).spawn(move || {
        runtime.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return tracing::error!("metrics http: {e}"),
            };
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::error!("metrics http accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { continue };
                let metrics = Arc::clone(&metrics);
                tokio::spawn(async move {
                    let _slot = slot;
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(header_timeout)
                        .max_buf_size(MAX_REQUEST)
                        .keep_alive(false)
                        .serve_connection(
                            hyper_util::rt::TokioIo::new(stream),
                            hyper::service::service_fn(move |req| {
                                let answer = answer(&req, &metrics);
                                async move { Ok::<_, std::convert::Infallible>(answer) }
                            }),
                        );
                    // Timeouts and clients that go away are not worth a log line.
                    let _ = tokio::time::timeout(EXCHANGE_TIMEOUT, conn).await;
                });
            }
        })
    })
}

fn answer<B>(req: &hyper::Request<B>, metrics: &Metrics) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, ctype, body) = if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
        (hyper::StatusCode::OK, CONTENT_TYPE, metrics.render())
    } else {
        (hyper::StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found; try /metrics\n".to_string())
    };
    let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(ctype));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::StageLine;
    use crate::pipeline::run::StageOutcome;
    use crate::pipeline::Action;
    use crate::stages::{StageError, StageResult, Verdict};
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;
    use std::time::Instant;

    fn handled(action: Outcome, stages: &[(&str, Result<Verdict, StageError>, u64)]) -> Handled {
        Handled {
            original_id: "1xXYfU-00034G-1x".into(),
            target_id: None,
            action,
            sender: String::new(),
            recipients: Vec::new(),
            reasons: Vec::new(),
            stages: stages
                .iter()
                .map(|(stage, result, us)| {
                    StageLine::of(&StageOutcome {
                        stage: stage.to_string(),
                        result: result.clone().map(StageResult::new),
                        elapsed: Duration::from_micros(*us),
                    })
                })
                .collect(),
            ..Handled::default()
        }
    }

    #[test]
    fn empty_registry_exposition() {
        let expected = "\
# HELP spoolsift_messages_total Messages handled, by the action taken.
# TYPE spoolsift_messages_total counter
spoolsift_messages_total{action=\"defer\"} 0
spoolsift_messages_total{action=\"deliver\"} 0
spoolsift_messages_total{action=\"discard\"} 0
spoolsift_messages_total{action=\"hold\"} 0
spoolsift_messages_total{action=\"nothing-owed\"} 0
spoolsift_messages_total{action=\"quarantine\"} 0
spoolsift_messages_total{action=\"rejected\"} 0
# HELP spoolsift_stage_results_total Stage results, by stage and verdict.
# TYPE spoolsift_stage_results_total counter
# HELP spoolsift_stage_duration_seconds Time a stage took on one message.
# TYPE spoolsift_stage_duration_seconds histogram
# HELP spoolsift_backend_up 1 unless the last result of the stage was a temporary failure.
# TYPE spoolsift_backend_up gauge
# HELP spoolsift_queue_depth Messages waiting: complete or partial pairs in the intake plus claims in the journal.
# TYPE spoolsift_queue_depth gauge
spoolsift_queue_depth 0
# HELP spoolsift_oldest_unprocessed_age_seconds Age of the oldest message not yet handled (0 when none).
# TYPE spoolsift_oldest_unprocessed_age_seconds gauge
spoolsift_oldest_unprocessed_age_seconds 0
# HELP spoolsift_kicks_total Re-queued messages by what the delivery kick left: delivered, queued (deferred), frozen, interrupted (a -J left), failed, not-run (no kicker).
# TYPE spoolsift_kicks_total counter
spoolsift_kicks_total{outcome=\"delivered\"} 0
spoolsift_kicks_total{outcome=\"failed\"} 0
spoolsift_kicks_total{outcome=\"frozen\"} 0
spoolsift_kicks_total{outcome=\"interrupted\"} 0
spoolsift_kicks_total{outcome=\"not-run\"} 0
spoolsift_kicks_total{outcome=\"queued\"} 0
# HELP spoolsift_kick_requests_waiting Delivery kicks requested and not run yet.
# TYPE spoolsift_kick_requests_waiting gauge
spoolsift_kick_requests_waiting 0
# HELP spoolsift_exim_queue_depth Messages in the Exim spool spoolsift re-queues into (its input/ -H files).
# TYPE spoolsift_exim_queue_depth gauge
spoolsift_exim_queue_depth 0
# HELP spoolsift_exim_oldest_message_age_seconds Age of the oldest message in that spool, by its id's time (0 when none).
# TYPE spoolsift_exim_oldest_message_age_seconds gauge
spoolsift_exim_oldest_message_age_seconds 0
";
        assert_eq!(Metrics::new().render(), expected);
    }

    #[test]
    fn small_registry_exposition_exact() {
        let m = Metrics::new();
        m.register_stage("clamav");
        m.record(&[
            handled(Outcome::Acted(Action::Deliver), &[("clamav", Ok(Verdict::Clean), 1500)]),
            handled(
                Outcome::Acted(Action::Quarantine),
                &[("clamav", Ok(Verdict::Infected { name: "Eicar".into() }), 20_000)],
            ),
            handled(
                Outcome::Acted(Action::Defer),
                &[("clamav", Err(StageError::Temporary("connection refused".into())), 12_000_000)],
            ),
            handled(Outcome::Rejected, &[]),
        ]);
        m.set_queue(3, 42);
        m.record_kick("delivered");
        m.record_kick("frozen");
        m.record_kick("delivered");
        m.set_kick_waiting(5);
        m.set_exim_queue(7, 3600);
        let expected = "\
# HELP spoolsift_messages_total Messages handled, by the action taken.
# TYPE spoolsift_messages_total counter
spoolsift_messages_total{action=\"defer\"} 1
spoolsift_messages_total{action=\"deliver\"} 1
spoolsift_messages_total{action=\"discard\"} 0
spoolsift_messages_total{action=\"hold\"} 0
spoolsift_messages_total{action=\"nothing-owed\"} 0
spoolsift_messages_total{action=\"quarantine\"} 1
spoolsift_messages_total{action=\"rejected\"} 1
# HELP spoolsift_stage_results_total Stage results, by stage and verdict.
# TYPE spoolsift_stage_results_total counter
spoolsift_stage_results_total{stage=\"clamav\",verdict=\"clean\"} 1
spoolsift_stage_results_total{stage=\"clamav\",verdict=\"error\"} 1
spoolsift_stage_results_total{stage=\"clamav\",verdict=\"infected\"} 1
# HELP spoolsift_stage_duration_seconds Time a stage took on one message.
# TYPE spoolsift_stage_duration_seconds histogram
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.001\"} 0
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.0025\"} 1
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.005\"} 1
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.01\"} 1
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.025\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.05\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.1\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.25\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"0.5\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"1\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"2.5\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"5\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"10\"} 2
spoolsift_stage_duration_seconds_bucket{stage=\"clamav\",le=\"+Inf\"} 3
spoolsift_stage_duration_seconds_sum{stage=\"clamav\"} 12.0215
spoolsift_stage_duration_seconds_count{stage=\"clamav\"} 3
# HELP spoolsift_backend_up 1 unless the last result of the stage was a temporary failure.
# TYPE spoolsift_backend_up gauge
spoolsift_backend_up{stage=\"clamav\"} 0
# HELP spoolsift_queue_depth Messages waiting: complete or partial pairs in the intake plus claims in the journal.
# TYPE spoolsift_queue_depth gauge
spoolsift_queue_depth 3
# HELP spoolsift_oldest_unprocessed_age_seconds Age of the oldest message not yet handled (0 when none).
# TYPE spoolsift_oldest_unprocessed_age_seconds gauge
spoolsift_oldest_unprocessed_age_seconds 42
# HELP spoolsift_kicks_total Re-queued messages by what the delivery kick left: delivered, queued (deferred), frozen, interrupted (a -J left), failed, not-run (no kicker).
# TYPE spoolsift_kicks_total counter
spoolsift_kicks_total{outcome=\"delivered\"} 2
spoolsift_kicks_total{outcome=\"failed\"} 0
spoolsift_kicks_total{outcome=\"frozen\"} 1
spoolsift_kicks_total{outcome=\"interrupted\"} 0
spoolsift_kicks_total{outcome=\"not-run\"} 0
spoolsift_kicks_total{outcome=\"queued\"} 0
# HELP spoolsift_kick_requests_waiting Delivery kicks requested and not run yet.
# TYPE spoolsift_kick_requests_waiting gauge
spoolsift_kick_requests_waiting 5
# HELP spoolsift_exim_queue_depth Messages in the Exim spool spoolsift re-queues into (its input/ -H files).
# TYPE spoolsift_exim_queue_depth gauge
spoolsift_exim_queue_depth 7
# HELP spoolsift_exim_oldest_message_age_seconds Age of the oldest message in that spool, by its id's time (0 when none).
# TYPE spoolsift_exim_oldest_message_age_seconds gauge
spoolsift_exim_oldest_message_age_seconds 3600
";
        assert_eq!(m.render(), expected);
        // The backend comes back with its next good answer.
        m.record(&[handled(Outcome::Acted(Action::Deliver), &[("clamav", Ok(Verdict::Clean), 10)])]);
        assert!(m.render().contains("spoolsift_backend_up{stage=\"clamav\"} 1\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        let m = Metrics::new();
        m.register_stage("a\"b\\c\nd");
        assert!(m.render().contains("spoolsift_backend_up{stage=\"a\\\"b\\\\c\\nd\"} 1\n"));
    }

    #[test]
    fn non_loopback_refused_without_allow_remote() {
        let e = bind("0.0.0.0:0".parse().unwrap(), false).unwrap_err();
        assert!(e.to_string().contains("allow_remote"), "{e}");
        assert!(bind("127.0.0.1:0".parse().unwrap(), false).is_ok());
    }

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    /// The status line and the body of a response.
    fn status_and_body(r: &str) -> (&str, &str) {
        let status = r.split("\r\n").next().unwrap_or_default();
        (status, r.split_once("\r\n\r\n").map_or("", |(_, b)| b))
    }

    fn header<'a>(r: &'a str, name: &str) -> Option<&'a str> {
        let head = r.split_once("\r\n\r\n")?.0;
        head.split("\r\n")
            .find_map(|l| l.split_once(": ").filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v))
    }

    fn endpoint(header_timeout: Duration) -> (SocketAddr, Arc<Metrics>) {
        let l = bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = l.local_addr().unwrap();
        let m = Arc::new(Metrics::new());
        serve_with(l, Arc::clone(&m), header_timeout).unwrap();
        (addr, m)
    }

    #[test]
    fn http_endpoint() {
        let (addr, m) = endpoint(HEADER_TIMEOUT);
        let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        let body = m.render();
        assert_eq!(status_and_body(&r), ("HTTP/1.1 200 OK", body.as_str()));
        assert_eq!(header(&r, "content-type"), Some(CONTENT_TYPE));
        assert_eq!(header(&r, "content-length"), Some(body.len().to_string().as_str()));
        assert_eq!(header(&r, "connection"), Some("close"));
        assert_eq!(status_and_body(&get(addr, "GET / HTTP/1.1\r\n\r\n")).0, "HTTP/1.1 404 Not Found");
        assert_eq!(status_and_body(&get(addr, "POST /metrics HTTP/1.1\r\n\r\n")).0, "HTTP/1.1 404 Not Found");
        assert_eq!(status_and_body(&get(addr, "garbage\r\n\r\n")).0, "HTTP/1.1 400 Bad Request");
        // Oversized heads are refused, not buffered.
        // The server closes with the rest of the head unread, so the client may see a reset
        // instead of the 431; what it must never see is an answer.
        let big = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(4 * MAX_REQUEST));
        let mut s = TcpStream::connect(addr).unwrap();
        let mut out = Vec::new();
        let _ = s.write_all(big.as_bytes()).and_then(|()| s.read_to_end(&mut out));
        let out = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{out}");
    }

    /// Whether the server has closed `s` (EOF) rather than kept it open (nothing to read yet).
    fn closed(s: &TcpStream) -> bool {
        s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 1];
        let r = (&*s).read(&mut b);
        s.set_nonblocking(false).unwrap();
        match r {
            Ok(0) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn idle_and_trickling_clients_do_not_hold_up_a_scrape() {
        // A long header timeout: the idle clients are certainly still connected while we scrape,
        // so a server that served one connection at a time would still be waiting on the first.
        let (addr, m) = endpoint(Duration::from_secs(600));
        let idle: Vec<TcpStream> = (0..12).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut trickle = TcpStream::connect(addr).unwrap();
        trickle.write_all(b"GET /met").unwrap();
        for _ in 0..3 {
            let r = get(addr, "GET /metrics HTTP/1.1\r\n\r\n");
            assert_eq!(status_and_body(&r), ("HTTP/1.1 200 OK", m.render().as_str()));
        }
        assert!(idle.iter().all(|s| !closed(s)), "the idle connections are still open");
        assert!(!closed(&trickle));
        // The trickling client finishes its request and gets its answer too.
        trickle.write_all(b"rics HTTP/1.1\r\n\r\n").unwrap();
        let mut out = String::new();
        trickle.read_to_string(&mut out).unwrap();
        assert_eq!(status_and_body(&out).0, "HTTP/1.1 200 OK");
    }

    #[test]
    fn a_client_that_sends_no_request_is_dropped_after_the_header_timeout() {
        let (addr, _) = endpoint(Duration::from_millis(200));
        let idle = TcpStream::connect(addr).unwrap();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(closed(&idle) && closed(&slow)) {
            assert!(Instant::now() < deadline, "the server never closed the idle connections");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[test]
    fn textfile_is_replaced_atomically() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("spoolsift.prom");
        let m = Metrics::new();
        m.set_queue(7, 1);
        m.write_textfile(&p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), m.render());
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("spoolsift.prom")]);
    }
}
