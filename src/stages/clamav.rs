//! ClamAV: send the whole message, as stored, to one of a list of clamd servers over `zINSTREAM`
//! and map the reply to a verdict (clamd(8), "COMMANDS").
//!
//! As stored means the live headers, the blank line and the `-D` body with its newline line
//! ends, the bytes Exim's own `malware` condition has clamd scan (the `.eml` copy Exim writes of
//! its spool, Exim's documentation, "Content scanning at ACL time"). ClamAV's mail parser reads
//! either line end alike; sending the body unchanged lets the kernel copy it from the file.
//!
//! Our own small client rather than the `clamav-client` crate:
//!
//! * it has no timeouts at all (a blocking `read_to_end` until clamd closes), so a hung clamd would
//!   hang the stage; we put connect, write and read deadlines on the socket;
//! * its `clean()` is `contains("OK") && !contains("FOUND")`, which calls an `ERROR` reply (the
//!   size-limit one included) "not clean", indistinguishable from infected; we parse every reply
//!   strictly and anything unexpected is a temporary failure, never clean and never infected;
//! * its writes use `?`, so when clamd closes on `StreamMaxLength` the EPIPE/ECONNRESET of the next
//!   write hides clamd's `INSTREAM size limit exceeded. ERROR` reply; we read the reply after a
//!   failed write.
//!
//! Connections are kept between scans as `zIDSESSION` sessions (clamd(8), IDSESSION), one scan at a
//! time on each, so a scan costs neither side a connect: measured here (the stages bench), clamd
//! alone scans 4–17% more messages per second that way. clamd ends a session idle for its `ReadTimeout`
//! (120 s by default; it first sends `COMMAND READ TIMED OUT` with a newline, not a NUL), and a
//! restart ends them all. A scan on a kept session that ends without a complete reply is therefore
//! sent once more on a new connection, and only that one failing counts against the server. In a
//! session the same timeout also bounds the scan itself, so messages over 1 MiB get a plain
//! connection, and a new session that ends without a reply is followed by a plain `zINSTREAM`.
//! `session_idle_ms` (10 s by default) should stay well under clamd's `ReadTimeout`; 0 is one
//! connection per scan.
//!
//! Servers are used round-robin. A server that fails at the transport level (connect, I/O, timeout,
//! garbage) is marked down and the message goes to the next one; once its retry time has passed, a
//! `zPING` run lazily by the next check that picks it puts it back. Each server has a bounded number
//! of connections (a counting semaphore), so a slow clamd slows only this stage, not the host.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::net::{Conn, Endpoint, Semaphore};
use super::{Stage, StageError, StageResult, Verdict};
use crate::outside::{Answer, Outside, RequestHasher};
use crate::spool::MessageView;

/// The reply clamd sends when the stream is longer than its `StreamMaxLength`.
const SIZE_LIMIT_REPLY: &str = "INSTREAM size limit exceeded. ERROR";

/// Longest reply we accept; clamd's are a signature name or a short error.
const MAX_REPLY: usize = 4096;

/// Larger messages get a connection of their own, not a session: in a session clamd also ends a
/// scan that outlasts its `ReadTimeout` (it watches the socket for the next command; observed with
/// a real clamd: a 42 MB message, 2 s of scanning, ReadTimeout 1 s). A connect is nothing next to
/// a large message's transfer and scan; below this a scan takes milliseconds.
const SESSION_MAX_BYTES: u64 = 1 << 20;

/// Configuration of the `clamav` stage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClamavConfig {
    /// clamd servers, each `unix:/path/to/clamd.sock` or `tcp:host:port`, used round-robin.
    pub servers: Vec<String>,
    /// Connecting to a TCP server (a UNIX socket connect only blocks when its backlog is full).
    pub connect_timeout_ms: u64,
    /// How long one write of the stream may block (clamd not reading).
    pub write_timeout_ms: u64,
    /// How long, after the stream is sent, we wait for the whole reply (the scan time).
    pub read_timeout_ms: u64,
    /// clamd's `StreamMaxLength` (bytes of the message as stored). A longer message is not sent:
    /// it is a permanent failure, which the pipeline policy turns into an action (never a pass).
    pub stream_max_length: u64,
    /// Bytes per write of a body that is not in a file (a body in a file is copied by the kernel).
    pub chunk_size: usize,
    /// Concurrent connections per server; further checks wait for one to free up.
    pub max_connections_per_server: usize,
    /// How long a check waits for a free connection to a server before trying the next one.
    pub queue_timeout_ms: u64,
    /// How long a failed server is skipped before a `PING` may put it back.
    pub retry_down_after_ms: u64,
    /// How long a connection may stay open and unused for the next scan (a `zIDSESSION`); 0 opens
    /// a new connection for every scan.
    pub session_idle_ms: u64,
}

impl Default for ClamavConfig {
    fn default() -> Self {
        ClamavConfig {
            servers: vec!["unix:/run/clamav/clamd.ctl".into()],
            connect_timeout_ms: 2_000,
            write_timeout_ms: 30_000,
            read_timeout_ms: 60_000,
            stream_max_length: 25 * 1024 * 1024,
            chunk_size: 64 * 1024,
            max_connections_per_server: 4,
            queue_timeout_ms: 30_000,
            retry_down_after_ms: 10_000,
            session_idle_ms: 10_000,
        }
    }
}

struct Server {
    label: String,
    addr: Endpoint,
    slots: Semaphore,
    /// `Some(t)`: marked down; not used before `t`, and then only after a successful `PING`.
    down_until: Mutex<Option<Instant>>,
    /// Open sessions not in use, the most recently used last.
    idle: Mutex<Vec<Session>>,
}

/// A connection in `zIDSESSION` mode.
struct Session {
    conn: Conn,
    /// Scans sent on it so far: clamd numbers its replies from 1 in a session.
    scans: u64,
    idle_since: Instant,
}

/// What went wrong reading a reply.
struct ReplyError {
    why: String,
    /// The connection ended (EOF or reset) before a complete reply.
    ended: bool,
}

/// What one attempt on one server came to.
enum Outcome {
    /// clamd answered a scan (clean, infected, or a reported error): the raw reply, NUL included.
    Reply(Vec<u8>),
    /// The transport failed (connect, I/O, timeout, a reply that is not clamd's): try elsewhere.
    Failed(String),
    /// The message could not be read (a `-D` cut short under us): not the server's fault.
    Unreadable(String),
}

/// Why a stream was not sent whole.
enum Send {
    /// Reading the message failed: nothing more is sent, and clamd discards the stream when the
    /// connection is dropped without its terminator.
    Read(io::Error),
    /// Writing to clamd failed; its reply may still say why (a size limit).
    Write(io::Error),
}

/// A chunk's length as INSTREAM frames it (at most `u32::MAX`, which the callers keep to).
fn chunk_len(len: u64) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

/// The ClamAV stage.
pub struct ClamavStage {
    config: ClamavConfig,
    servers: Vec<Server>,
    next: AtomicUsize,
    outside: Outside,
}

impl ClamavStage {
    pub fn new(config: ClamavConfig) -> Result<ClamavStage, String> {
        if config.servers.is_empty() {
            return Err("servers: none configured".into());
        }
        if config.chunk_size == 0 || config.chunk_size > u32::MAX as usize {
            return Err("chunk_size must be between 1 and 2^32-1".into());
        }
        if config.max_connections_per_server == 0 {
            return Err("max_connections_per_server must be at least 1".into());
        }
        let servers = config
            .servers
            .iter()
            .map(|s| {
                Ok(Server {
                    label: s.clone(),
                    addr: Endpoint::parse(s).map_err(|why| format!("servers: {s:?}: {why}"))?,
                    slots: Semaphore::new(config.max_connections_per_server),
                    down_until: Mutex::new(None),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ClamavStage { config, servers, next: AtomicUsize::new(0), outside: Outside::default() })
    }

    /// Record or replay clamd's answers, and take time from this clock.
    pub fn with_outside(mut self, outside: Outside) -> ClamavStage {
        self.outside = outside;
        self
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms.max(1))
    }

    fn connect(&self, addr: &Endpoint) -> io::Result<Conn> {
        let conn = addr.connect(Self::ms(self.config.connect_timeout_ms))?;
        conn.set_write_timeout(Self::ms(self.config.write_timeout_ms))?;
        conn.set_read_timeout(Self::ms(self.config.read_timeout_ms))?;
        Ok(conn)
    }

    /// Read one NUL-terminated reply, within `read_timeout_ms` overall; the bytes as sent, up to
    /// and including the NUL.
    fn read_reply(&self, conn: &mut Conn) -> Result<Vec<u8>, ReplyError> {
        let deadline = Instant::now() + Self::ms(self.config.read_timeout_ms);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        let fail = |why: String| Err(ReplyError { why, ended: false });
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return fail("timed out waiting for the reply".into());
            }
            if let Err(e) = conn.set_read_timeout(left) {
                return fail(format!("setting the read timeout: {e}"));
            }
            let n = match conn.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return fail("timed out waiting for the reply".into())
                }
                Err(e) => {
                    let ended = matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted);
                    return Err(ReplyError { why: format!("reading the reply: {e}"), ended });
                }
            };
            if n == 0 {
                let why = match buf.is_empty() {
                    true => "connection closed without a reply".into(),
                    false => format!("reply not NUL-terminated: {:?}", String::from_utf8_lossy(&buf)),
                };
                return Err(ReplyError { why, ended: true });
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.iter().position(|&b| b == 0) {
                buf.truncate(end + 1);
                return Ok(buf);
            }
            if buf.len() > MAX_REPLY {
                return fail(format!("reply longer than {MAX_REPLY} bytes"));
            }
        }
    }

    /// `zPING` → `PONG`.
    fn ping(&self, addr: &Endpoint) -> Result<(), String> {
        let mut conn = self.connect(addr).map_err(|e| format!("connect: {e}"))?;
        conn.write_all(b"zPING\0").map_err(|e| format!("sending PING: {e}"))?;
        match decode_reply(&self.read_reply(&mut conn).map_err(|e| e.why)?)? {
            r if r == "PONG" => Ok(()),
            r => Err(format!("PING answered {r:?}")),
        }
    }

    /// Scan on `server`: a small message on a kept session when there is one, else on a new
    /// connection; a session that ends without a reply is followed by one plain `zINSTREAM`.
    fn scan_on(&self, server: &Server, view: &MessageView<'_>) -> Outcome {
        let mut in_session = self.config.session_idle_ms > 0 && view.len() <= SESSION_MAX_BYTES;
        if let Some(mut session) = in_session.then(|| self.kept_session(server)).flatten() {
            match self.instream(&mut session, false, view) {
                // Ended while kept (clamd restarted, or timed it out): not the server failing now.
                (_, true) => in_session = false,
                (outcome, false) => return self.finish(server, session, outcome),
            }
        }
        match self.scan_new(server, in_session, view) {
            // A new session ended without a reply: clamd also ends one whose scan outlasts its
            // ReadTimeout (a plain INSTREAM's scan has no such limit), so once more without.
            (_, true) if in_session => self.scan_new(server, false, view).0,
            (outcome, _) => outcome,
        }
    }

    /// Scan on a new connection, in a session begun on it when `open`; also says whether the
    /// connection ended before a complete reply.
    fn scan_new(&self, server: &Server, open: bool, view: &MessageView<'_>) -> (Outcome, bool) {
        let conn = match self.connect(&server.addr) {
            Ok(c) => c,
            Err(e) => return (Outcome::Failed(format!("connect: {e}")), false),
        };
        let mut session = Session { conn, scans: 0, idle_since: Instant::now() };
        let (outcome, ended) = self.instream(&mut session, open, view);
        (self.finish(server, session, outcome), ended)
    }

    /// The newest idle session of `server` that has not been idle too long (older ones are closed).
    fn kept_session(&self, server: &Server) -> Option<Session> {
        let max_idle = Duration::from_millis(self.config.session_idle_ms);
        let mut idle = server.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|s| s.idle_since.elapsed() <= max_idle);
        idle.pop()
    }

    /// Keep a session for the next scan if this one ended in a verdict (after anything else, an
    /// error or a size limit, clamd may be closing it). A plain connection is closed.
    fn finish(&self, server: &Server, mut session: Session, outcome: Outcome) -> Outcome {
        let verdict =
            matches!(&outcome, Outcome::Reply(raw) if decode_reply(raw).is_ok_and(|r| parse_reply(&r).is_ok()));
        if verdict && session.scans > 0 {
            session.idle_since = Instant::now();
            server.idle.lock().unwrap_or_else(|e| e.into_inner()).push(session);
        }
        outcome
    }

    /// Stream the message with `zINSTREAM` and read the reply; `open` starts a session first. In
    /// a session the reply's number is checked and taken off, so the reply is clamd's plain one.
    /// Also says whether the connection ended before a complete reply (a kept one clamd closed).
    fn instream(&self, session: &mut Session, open: bool, view: &MessageView<'_>) -> (Outcome, bool) {
        let in_session = open || session.scans > 0;
        let command: &[u8] = if open { b"zIDSESSION\0zINSTREAM\0" } else { b"zINSTREAM\0" };
        let write_err = match self.send_stream(&mut session.conn, command, view) {
            Ok(()) => None,
            Err(Send::Read(e)) => return (Outcome::Unreadable(format!("reading the message: {e}")), false),
            Err(Send::Write(e)) => Some(e),
        };
        if in_session {
            session.scans += 1;
        }
        // Read the reply even after a failed write: clamd closing on its StreamMaxLength shows up
        // here as EPIPE/ECONNRESET, and its reply saying so may still be waiting in our buffer.
        match (self.read_reply(&mut session.conn), write_err) {
            (Ok(reply), _) if !in_session => (Outcome::Reply(reply), false),
            (Ok(reply), _) => match reply.strip_prefix(format!("{}: ", session.scans).as_bytes()) {
                Some(plain) => (Outcome::Reply(plain.to_vec()), false),
                None => (
                    Outcome::Failed(format!(
                        "reply not numbered {}: {:?}",
                        session.scans,
                        String::from_utf8_lossy(&reply)
                    )),
                    false,
                ),
            },
            (Err(e), None) => (Outcome::Failed(e.why), e.ended),
            (Err(e), Some(w)) => (Outcome::Failed(format!("sending the message: {w}; {}", e.why)), e.ended),
        }
    }

    /// Send the command and the message as INSTREAM chunks: the headers as one chunk, the body as
    /// one more (two past 4 GiB), then the zero-length terminator. The body goes from its `-D`
    /// file by `sendfile`, never through a buffer here; a body in memory is written in
    /// `chunk_size` pieces. So a message costs three writes whatever its size, where it cost one
    /// per 64 KiB chunk and a copy of every byte (benches/stages.rs, benches/peers.rs).
    fn send_stream(&self, conn: &mut Conn, command: &[u8], view: &MessageView<'_>) -> Result<(), Send> {
        let head = view.head();
        if head.len() as u64 > u64::from(u32::MAX) {
            return Err(Send::Read(io::Error::other("headers longer than one INSTREAM chunk")));
        }
        let body_len = view.body.body_len();
        let mut first = Vec::with_capacity(command.len() + 8 + head.len());
        first.extend_from_slice(command);
        first.extend_from_slice(&chunk_len(head.len() as u64).to_be_bytes());
        first.extend_from_slice(&head);
        let mut sent = 0u64;
        while sent < body_len {
            let len = (body_len - sent).min(u64::from(u32::MAX));
            first.extend_from_slice(&chunk_len(len).to_be_bytes());
            conn.write_all(&first).map_err(Send::Write)?;
            first.clear();
            match view.body.body_file() {
                Some((file, offset)) => conn.send_file(file, offset + sent, len).map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => Send::Read(e),
                    _ => Send::Write(e),
                })?,
                None => self.write_from_memory(conn, view, sent, len)?,
            }
            sent += len;
        }
        // A zero-length chunk ends the stream.
        first.extend_from_slice(&0u32.to_be_bytes());
        conn.write_all(&first).map_err(Send::Write)
    }

    /// `len` body bytes from body offset `from`, read into a buffer and written in `chunk_size`
    /// pieces (a body that is not in a file: replays, tests, the offline tools).
    fn write_from_memory(&self, conn: &mut Conn, view: &MessageView<'_>, from: u64, len: u64) -> Result<(), Send> {
        let mut buf = vec![0u8; self.config.chunk_size.min(usize::try_from(len).unwrap_or(usize::MAX)).max(1)];
        let mut done = 0u64;
        while done < len {
            let want = buf.len().min(usize::try_from(len - done).unwrap_or(usize::MAX));
            let n = match view.body.read_body_at(&mut buf[..want], from + done) {
                Ok(0) => return Err(Send::Read(io::Error::new(io::ErrorKind::UnexpectedEof, "the body ended early"))),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Send::Read(e)),
            };
            conn.write_all(&buf[..n]).map_err(Send::Write)?;
            done += n as u64;
        }
        Ok(())
    }

    fn mark_down(&self, server: &Server) {
        // Its other sessions are most likely dead too.
        server.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
        *server.down_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + Duration::from_millis(self.config.retry_down_after_ms));
    }

    /// `Ok(true)`: usable now; `Ok(false)`: down and not due for a retry; `Err`: the retry PING
    /// failed (the server stays down).
    fn usable(&self, server: &Server) -> Result<bool, String> {
        let due = match *server.down_until.lock().unwrap_or_else(|e| e.into_inner()) {
            None => return Ok(true),
            Some(t) => Instant::now() >= t,
        };
        if !due {
            return Ok(false);
        }
        match self.ping(&server.addr) {
            Ok(()) => {
                *server.down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(true)
            }
            Err(e) => {
                self.mark_down(server);
                Err(format!("health check: {e}"))
            }
        }
    }
}

/// A raw reply (up to and including its NUL) as text.
fn decode_reply(raw: &[u8]) -> Result<String, String> {
    let Some(end) = raw.iter().position(|&b| b == 0) else {
        return Err(format!("reply not NUL-terminated: {:?}", String::from_utf8_lossy(raw)));
    };
    String::from_utf8(raw[..end].to_vec()).map_err(|e| format!("reply not UTF-8: {:?}", e.as_bytes()))
}

/// Map a clamd reply to a verdict (clamd(8): `stream: OK`, `stream: NAME FOUND`, `... ERROR`).
fn parse_reply(reply: &str) -> Result<Verdict, StageError> {
    if reply == "stream: OK" {
        return Ok(Verdict::Clean);
    }
    if reply == SIZE_LIMIT_REPLY {
        return Err(StageError::Permanent(format!("message larger than StreamMaxLength (clamd: {reply})")));
    }
    if reply.ends_with(" ERROR") {
        return Err(StageError::Temporary(format!("clamd error: {reply}")));
    }
    if let Some(name) = reply.strip_prefix("stream: ").and_then(|r| r.strip_suffix(" FOUND")) {
        // ExtendedDetectionInfo would append "(<md5>:<size>)"; not emitted for INSTREAM in 1.4.6.
        let name = match name.rsplit_once(" (") {
            Some((n, extra)) if extra.ends_with(')') && extra.contains(':') => n,
            _ => name,
        };
        if !name.trim().is_empty() && name.trim() == name && !name.chars().any(char::is_control) {
            return Ok(Verdict::Infected { name: name.to_string() });
        }
    }
    Err(StageError::Temporary(format!("unexpected reply from clamd: {reply:?}")))
}

impl Stage for ClamavStage {
    fn name(&self) -> &str {
        "clamav"
    }

    fn parallelism(&self) -> usize {
        self.servers.len() * self.config.max_connections_per_server
    }

    fn check(&self, view: &MessageView<'_>) -> Result<StageResult, StageError> {
        let started = Instant::now();
        let max = self.config.stream_max_length;
        // The stream is exactly the message as stored.
        if view.len() > max {
            return Err(StageError::Permanent(format!(
                "message larger than StreamMaxLength ({} > {max} bytes)",
                view.len()
            )));
        }
        // Recording or replaying: the request is the stream's content, hashed in a pass of its
        // own (a live check does not pay for it).
        let request = match self.outside.answers.is_live() {
            true => None,
            false => {
                let mut h = RequestHasher::default();
                h.read_from(view.reader()).map_err(|e| StageError::Temporary(format!("reading the message: {e}")))?;
                Some(h.finish())
            }
        };
        let answer = self.outside.answers.exchange(self.name(), view.header.id.as_str(), request, || self.ask(view))?;
        match answer {
            Answer::Reply { from, bytes } => {
                let reply = decode_reply(&bytes).map_err(|e| StageError::Temporary(format!("{from}: {e}")))?;
                let verdict = parse_reply(&reply)?;
                Ok(StageResult::new(verdict)
                    .detail("server", from)
                    .detail("reply", reply)
                    .detail("elapsed_ms", self.outside.clock.elapsed(started).as_millis().to_string()))
            }
            Answer::Failed { reason } => Err(StageError::Temporary(format!("clamd unavailable: {reason}"))),
        }
    }

    fn timeout(&self) -> Duration {
        // One full attempt per server, plus a wait for a connection; the stage's own deadlines
        // should fire before the executor's.
        let c = &self.config;
        let per = c.connect_timeout_ms + c.write_timeout_ms + c.read_timeout_ms + c.queue_timeout_ms;
        Duration::from_millis(per.saturating_mul(self.servers.len() as u64).max(30_000))
    }
}

impl ClamavStage {
    /// Ask the servers in turn until one answers the scan: its raw reply, or every failure.
    fn ask(&self, view: &MessageView<'_>) -> Result<Answer, StageError> {
        let n = self.servers.len();
        let first = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        for server in (0..n).map(|i| &self.servers[(first + i) % n]) {
            // A server that is down and not yet due for a retry is skipped without queueing for it.
            if server.down_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| Instant::now() < t) {
                failures.push(format!("{}: marked down", server.label));
                continue;
            }
            let Some(_permit) = server.slots.acquire(Self::ms(self.config.queue_timeout_ms)) else {
                failures.push(format!("{}: all connections busy", server.label));
                continue;
            };
            match self.usable(server) {
                Ok(true) => {}
                Ok(false) => {
                    failures.push(format!("{}: marked down", server.label));
                    continue;
                }
                Err(e) => {
                    failures.push(format!("{}: {e}", server.label));
                    continue;
                }
            }
            match self.scan_on(server, view) {
                // A reply that is not text is not clamd talking: that server failed.
                Outcome::Reply(raw) => match decode_reply(&raw) {
                    Ok(_) => return Ok(Answer::Reply { from: server.label.clone(), bytes: raw }),
                    Err(e) => {
                        self.mark_down(server);
                        failures.push(format!("{}: {e}", server.label));
                    }
                },
                Outcome::Unreadable(e) => return Err(StageError::Temporary(e)),
                Outcome::Failed(e) => {
                    self.mark_down(server);
                    failures.push(format!("{}: {e}", server.label));
                }
            }
        }
        Ok(Answer::Failed { reason: failures.join("; ") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(parse_reply("stream: OK"), Ok(Verdict::Clean));
        assert_eq!(
            parse_reply("stream: Foo.Bar.UNOFFICIAL FOUND"),
            Ok(Verdict::Infected { name: "Foo.Bar.UNOFFICIAL".into() })
        );
        assert_eq!(
            parse_reply("stream: Foo.Bar (0123abcd:68) FOUND"),
            Ok(Verdict::Infected { name: "Foo.Bar".into() })
        );
        assert!(matches!(parse_reply(SIZE_LIMIT_REPLY), Err(StageError::Permanent(_))));
        for r in [
            "",
            "stream: ",
            "stream: FOUND",
            "stream:  FOUND",
            "OK",
            "stream: Can't open ERROR",
            "PONG",
            "stream:  x FOUND",
            "stream: x\u{1}y FOUND",
        ] {
            assert!(matches!(parse_reply(r), Err(StageError::Temporary(_))), "{r:?}");
        }
    }

    #[test]
    fn addresses_and_config() {
        let c: ClamavConfig = toml::from_str("servers = [\"tcp:localhost:3310\"]\nread_timeout_ms = 5").unwrap();
        assert_eq!(c.read_timeout_ms, 5);
        assert_eq!(c.stream_max_length, 25 * 1024 * 1024);
        assert!(toml::from_str::<ClamavConfig>("server = []").is_err());
        assert!(ClamavStage::new(ClamavConfig { servers: vec![], ..Default::default() }).is_err());
    }
}
