//! The `dcc` stage: ask a dccifd (Distributed Checksum Clearinghouse daemon) how bulky a
//! message is, over its ASCII "dccif" protocol (dccifd(8), "Protocol").
//!
//! One connection per message, to a UNIX socket (`unix:/path`) or TCP (`tcp:host:port`). The
//! request is, line by line (LF ends):
//!
//! 1. the option words (default `header grey-off`: we scan copies Exim already accepted, so we
//!    cannot greylist; the X-DCC header comes back after the result lines);
//! 2. the client: `IP\rhostname` from `-host_address` (`[ip]:port`, or older `ip.port`) and
//!    `-host_name`, `IP` alone when there is no name. `$acl_m_dcc_override_client_ip`, when set
//!    to an IP address, replaces the IP as it does in Exim (sent without a name, since the name
//!    belongs to the real peer). A message with no `-host_address` (local submission, or a copy
//!    re-injected by a local filter) gets an **empty** line, which tells dccifd to take the client
//!    from the first `Received:` header (dccifd(8)). Exim sends `127.0.0.1` there instead,
//!    which would make every such message count as coming from the local host, including
//!    re-injected mail whose real origin is recorded in `Received:`;
//! 3. the HELO name from `-helo_name`, possibly empty (Exim sends the fixed `HELO localhost`; we
//!    send the real value, which is what dccifd wants);
//! 4. the envelope sender, `<>` for the null sender (as Exim sends);
//! 5. one line per pending recipient (address only, no `\ruser`), then a blank line;
//! 6. the message: live headers, blank line, body, exactly as stored (LF line ends). Exim's own
//!    client sends the same bytes (its header lines from memory, LF-terminated, then the `-D`
//!    content as stored). dccifd's Body checksum skips CR, LF, blanks and TABs, and its MIME
//!    boundary matching allows a CR before the LF (DCC 2.3.167 `dcclib/ckbody.c`), so CRLF would
//!    change no checksum and only cost a conversion. A `-spool_file_wireformat` body (CRLF) is
//!    sent as stored too, for the same reason.
//!
//! Bytes that would break the line framing (CR, LF, NUL and other controls) are removed from the
//! envelope values. The client then half-closes its side (`shutdown(Write)`): dccifd answers only
//! after EOF. The reply is read to EOF: line 1 the overall letter, line 2 one letter per recipient,
//! then (with `header`) the X-DCC header, folded with TAB continuations, up to a blank line.
//!
//! Mapping: `A` → `Clean`; `R` → `Spam` (the policy decides what bulk means for delivery); `S`
//! (obsolete "some recipients") → `Clean`; `G` (cannot happen with `grey-off`), `T`, any other
//! letter, a reply without its two result lines, a refused connection and a timeout →
//! [`StageError::Temporary`]. A per-recipient vector of the wrong length is reported in the
//! details, not an error: a post-acceptance scan uses the overall letter.
//!
//! The X-DCC header is returned as a header to add, under the name dccifd gave it
//! (`X-DCC-<brand>-Metrics`), unfolded (continuations joined with one space), with control
//! characters removed and the value bounded to [`DccConfig::max_header_bytes`]. Details: `result`
//! (the overall letter), `recipients` (the per-recipient letters), `recipients_expected` when
//! their number differs from ours, and `body`, `fuz1`, `fuz2`, `rep` when the header has them.
//!
//! Timeouts: connecting to TCP is bounded by `connect_timeout_ms`; writing the request and reading
//! the reply share one deadline of `timeout_ms`. A UNIX-socket connect cannot be bounded with the
//! standard library (it returns at once unless the listener's backlog is full); the executor's
//! [`Stage::timeout`] covers that case.

use std::io::{self, Read};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::net::{send_with_head, Conn, Endpoint, Semaphore, SendError};
use super::{Stage, StageError, StageResult, Verdict};
use crate::outside::{Answer, Outside, RequestHasher};
use crate::spool::headers::sanitize;
use crate::spool::{AclScope, MessageView, SpoolHeader};

/// Option words dccifd knows (dccif.h). `body` is left out on purpose: it makes dccifd send the
/// whole message back, which this stage does not read.
const KNOWN_OPTIONS: &[&str] = &[
    "header",
    "cksums",
    "query",
    "spam",
    "grey-off",
    "no-grey",
    "grey-query",
    "no-reject",
    "log",
    "rcvd-nxt",
    "rcvd-next",
];

/// The longest reply we read: header mode sends two letters lines and one header, `cksums` a few
/// more lines. Anything beyond this is not a dccifd talking.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// Settings of the `dcc` stage (`[stages.dcc]` in a pipeline definition).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DccConfig {
    /// Where dccifd listens: `unix:/path/to/dccifd` or `tcp:host:port` (`tcp:[::1]:10045`).
    pub address: String,
    /// The option words of the request's first line, separated by blanks. Known words only
    /// (dccifd drops a job with an unknown one); `body` is refused.
    pub options: String,
    /// Bound on a TCP connect, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Bound on writing the request and reading the whole reply together, in milliseconds.
    pub timeout_ms: u64,
    /// Longest X-DCC header value we return (Exim truncates the whole header at 120 bytes; we
    /// keep more, but bounded).
    pub max_header_bytes: usize,
    /// Connections to dccifd at once; further checks wait (within `timeout_ms`) for one to free
    /// up, so a slow dccifd slows this stage, not the host.
    pub max_connections: usize,
}

impl Default for DccConfig {
    fn default() -> Self {
        DccConfig {
            address: "unix:/var/dcc/dccifd".into(),
            options: "header grey-off".into(),
            connect_timeout_ms: 5_000,
            timeout_ms: 10_000,
            max_header_bytes: 1024,
            max_connections: 4,
        }
    }
}

/// A configuration the stage cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DccConfigError {
    #[error("address {0:?}: expected unix:/path or tcp:host:port")]
    Address(String),
    #[error("options: {0:?} is not an option word dccifd knows (or is `body`, which this stage cannot read)")]
    Option(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// Why an exchange with dccifd gave no reply.
enum Trouble {
    /// dccifd or the network: refused, timed out, closed early, too long. Recorded as its answer.
    Service(String),
    /// Our own copy of the message could not be read.
    Local(String),
}

/// The `dcc` stage.
#[derive(Debug, Clone)]
pub struct DccStage {
    address: Endpoint,
    options: String,
    connect_timeout: Duration,
    timeout: Duration,
    max_header_bytes: usize,
    slots: std::sync::Arc<Semaphore>,
    max_connections: usize,
    outside: Outside,
}

impl DccStage {
    pub fn new(config: DccConfig) -> Result<DccStage, DccConfigError> {
        let address = Endpoint::parse(&config.address).map_err(|_| DccConfigError::Address(config.address.clone()))?;
        let mut words = Vec::new();
        for word in config.options.split_ascii_whitespace() {
            if !KNOWN_OPTIONS.iter().any(|k| k.eq_ignore_ascii_case(word)) {
                return Err(DccConfigError::Option(word.to_string()));
            }
            words.push(word);
        }
        if config.connect_timeout_ms == 0 {
            return Err(DccConfigError::Zero("connect_timeout_ms"));
        }
        if config.timeout_ms == 0 {
            return Err(DccConfigError::Zero("timeout_ms"));
        }
        if config.max_header_bytes == 0 {
            return Err(DccConfigError::Zero("max_header_bytes"));
        }
        if config.max_connections == 0 {
            return Err(DccConfigError::Zero("max_connections"));
        }
        Ok(DccStage {
            address,
            options: words.join(" "),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            timeout: Duration::from_millis(config.timeout_ms),
            max_header_bytes: config.max_header_bytes,
            slots: std::sync::Arc::new(Semaphore::new(config.max_connections)),
            max_connections: config.max_connections,
            outside: Outside::default(),
        })
    }

    /// Record or replay dccifd's answers.
    pub fn with_outside(mut self, outside: Outside) -> DccStage {
        self.outside = outside;
        self
    }

    /// The request's envelope part: everything before the message bytes.
    pub fn envelope(&self, header: &SpoolHeader) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(self.options.as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&client_line(header));
        out.push(b'\n');
        push_clean(&mut out, header.options.value("helo_name").unwrap_or_default());
        out.push(b'\n');
        if header.sender.is_empty() {
            out.extend_from_slice(b"<>");
        } else {
            push_clean(&mut out, &header.sender);
        }
        out.push(b'\n');
        for (_, r) in header.pending_recipients() {
            push_clean(&mut out, r.address());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }

    fn connect(&self) -> Result<Conn, Trouble> {
        self.address
            .connect(self.connect_timeout)
            .map_err(|e| Trouble::Service(format!("dccifd connect to {}: {e}", self.address)))
    }

    /// Ask dccifd: its reply, or how talking to it failed. `Err` only when our own copy of the
    /// message could not be read (that is not dccifd's answer, and is not recorded).
    fn ask(&self, message: &MessageView<'_>) -> Result<Answer, StageError> {
        match self.exchange(message) {
            Ok(bytes) => Ok(Answer::Reply { from: self.address.to_string(), bytes }),
            Err(Trouble::Service(reason)) => Ok(Answer::Failed { reason }),
            Err(Trouble::Local(why)) => Err(StageError::Temporary(why)),
        }
    }

    /// Send the request and read the whole reply.
    fn exchange(&self, message: &MessageView<'_>) -> Result<Vec<u8>, Trouble> {
        // Waiting for our own connection limit is not dccifd's answer: not recorded.
        let _permit = self.slots.acquire(self.timeout).ok_or_else(|| {
            Trouble::Local(format!(
                "dccifd: all {} connections busy for {} ms",
                self.max_connections,
                self.timeout.as_millis()
            ))
        })?;
        let mut conn = self.connect()?;
        let deadline = Instant::now() + self.timeout;
        let io_err = |what: &str, e: io::Error| {
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                Trouble::Service(format!("dccifd {what}: timed out after {} ms", self.timeout.as_millis()))
            } else {
                Trouble::Service(format!("dccifd {what}: {e}"))
            }
        };
        let timed_out = || Trouble::Service(format!("dccifd: timed out after {} ms", self.timeout.as_millis()));

        // The envelope goes out in one write with the start of the message.
        send_with_head(&mut conn, self.envelope(message.header), &mut message.reader(), deadline).map_err(
            |e| match e {
                SendError::Reading(e) => Trouble::Local(format!("reading the message: {e}")),
                SendError::Writing(e) => io_err("write", e),
            },
        )?;
        let mut buf = vec![0u8; 64 * 1024];
        conn.shutdown_write().map_err(|e| io_err("shutdown", e))?;

        let mut reply = Vec::new();
        loop {
            let left =
                deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()).ok_or_else(timed_out)?;
            conn.set_read_timeout(left).map_err(|e| io_err("read", e))?;
            match conn.read(&mut buf) {
                Ok(0) => return Ok(reply),
                Ok(n) => {
                    reply.extend_from_slice(&buf[..n]);
                    if reply.len() > MAX_REPLY_BYTES {
                        return Err(Trouble::Service(format!("dccifd reply longer than {MAX_REPLY_BYTES} bytes")));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("read", e)),
            }
        }
    }
}

impl Stage for DccStage {
    fn name(&self) -> &str {
        "dcc"
    }

    fn parallelism(&self) -> usize {
        self.max_connections
    }

    fn check(&self, message: &MessageView<'_>) -> Result<StageResult, StageError> {
        // Recording or replaying: the request is exactly what we send, envelope then message.
        let request = match self.outside.answers.is_live() {
            true => None,
            false => {
                let mut h = RequestHasher::default();
                h.update(&self.envelope(message.header));
                h.read_from(message.reader())
                    .map_err(|e| StageError::Temporary(format!("reading the message: {e}")))?;
                Some(h.finish())
            }
        };
        let ask = || self.ask(message);
        let reply = match self.outside.answers.exchange(self.name(), message.header.id.as_str(), request, ask)? {
            Answer::Reply { bytes, .. } => bytes,
            Answer::Failed { reason } => return Err(StageError::Temporary(reason)),
        };
        let expected = message.header.pending_recipients().count();
        interpret(&reply, expected, self.max_header_bytes)
    }

    fn timeout(&self) -> Duration {
        self.connect_timeout + self.timeout + Duration::from_secs(1)
    }
}

/// Turn a complete dccifd reply into a result. `recipients` is how many we sent.
pub fn interpret(reply: &[u8], recipients: usize, max_header_bytes: usize) -> Result<StageResult, StageError> {
    let temp = |why: String| Err(StageError::Temporary(why));
    let mut lines = reply.split_inclusive(|&b| b == b'\n');
    let strip = |l: &[u8]| -> Vec<u8> {
        let l = l.strip_suffix(b"\n").unwrap_or(l);
        l.strip_suffix(b"\r").unwrap_or(l).to_vec()
    };
    let Some(first) = lines.next().filter(|l| l.ends_with(b"\n")) else {
        return temp(if reply.is_empty() {
            "dccifd closed the connection without a reply".into()
        } else {
            "dccifd reply has no complete result line".into()
        });
    };
    let Some(second) = lines.next().filter(|l| l.ends_with(b"\n")) else {
        return temp("dccifd reply has no per-recipient line".into());
    };
    let (overall, per_rcpt) = (strip(first), strip(second));
    let letter = printable(&overall, 16);
    let verdict = match overall.as_slice() {
        b"A" | b"S" => Verdict::Clean,
        b"R" => Verdict::Spam,
        b"G" => return temp("dccifd answered G (greylist) although grey-off should prevent it".into()),
        b"T" => return temp("dccifd answered T (temporary failure of the DCC system)".into()),
        _ => return temp(format!("dccifd answered an unknown result \"{letter}\"")),
    };
    let mut result = StageResult::new(verdict).detail("result", letter);
    result = result.detail("recipients", printable(&per_rcpt, 256));
    if per_rcpt.len() != recipients {
        result = result.detail("recipients_expected", recipients.to_string());
    }

    // The X-DCC header: a line starting with `X-DCC`, then its TAB (or blank) continuations.
    let mut field: Option<Vec<u8>> = None;
    for line in lines {
        let line = strip(line);
        match &mut field {
            None if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"X-DCC") => field = Some(line),
            Some(f) if matches!(line.first(), Some(b'\t' | b' ')) => {
                f.push(b' ');
                f.extend_from_slice(line.trim_ascii_start());
            }
            _ => break,
        }
    }
    if let Some(f) = field {
        if let Some((name, value)) = split_field(&f) {
            let value = sanitize(&String::from_utf8_lossy(value), max_header_bytes);
            for (key, count) in counts(&value) {
                result = result.detail(key, count);
            }
            result.headers.push((name, value));
        }
    }
    Ok(result)
}

/// `Name: value` with a field name of printable ASCII (RFC 5322 `ftext`), at most 76 bytes.
fn split_field(field: &[u8]) -> Option<(String, &[u8])> {
    let colon = field.iter().position(|&b| b == b':')?;
    let name = &field[..colon];
    if name.is_empty() || name.len() > 76 || !name.iter().all(|&b| (33..=126).contains(&b)) {
        return None;
    }
    Some((String::from_utf8_lossy(name).into_owned(), &field[colon + 1..]))
}

/// `Body=`, `Fuz1=`, `Fuz2=` counts and `rep=` from an X-DCC value, as sent (`many`, a number).
fn counts(value: &str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for word in value.split([' ', ';']) {
        let Some((k, v)) = word.split_once('=') else { continue };
        let key = match k.to_ascii_lowercase().as_str() {
            "body" => "body",
            "fuz1" => "fuz1",
            "fuz2" => "fuz2",
            "rep" => "rep",
            _ => continue,
        };
        if !v.is_empty() && !out.iter().any(|(seen, _)| *seen == key) {
            out.push((key, v.to_string()));
        }
    }
    out
}

/// Bytes for a log detail: printable ASCII kept, anything else escaped, bounded.
fn printable(bytes: &[u8], max: usize) -> String {
    let s: String = bytes.escape_ascii().to_string();
    if s.len() > max {
        format!("{}...", &s[..max])
    } else {
        s
    }
}

/// Append a value without the bytes that would break dccifd's line framing.
fn push_clean(out: &mut Vec<u8>, value: &[u8]) {
    out.extend(value.iter().copied().filter(|&b| b >= 0x20 && b != 0x7f));
}

/// The client line: `IP\rname`, `IP`, or empty (see the module documentation).
fn client_line(header: &SpoolHeader) -> Vec<u8> {
    let over = header
        .options
        .acl(AclScope::Message, b"_dcc_override_client_ip")
        .and_then(|v| std::str::from_utf8(&v.value).ok())
        .and_then(|s| s.trim().parse::<IpAddr>().ok());
    if let Some(ip) = over {
        return ip.to_string().into_bytes();
    }
    let Some(ip) = header.client_ip() else {
        return Vec::new();
    };
    let mut out = ip.to_string().into_bytes();
    if let Some(name) = header.options.value("host_name").filter(|n| !n.is_empty()) {
        out.push(b'\r');
        push_clean(&mut out, name);
    }
    out
}
