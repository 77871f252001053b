//! The `spamd` stage: ask SpamAssassin's spamd how spammy a message is, over the SPAMC/1.5
//! protocol (SpamAssassin's `spamd/PROTOCOL`, and spamd(1p)).
//!
//! One connection per message, TCP (`address`, `host:port`) or a UNIX socket (`socket`). The
//! request is `SYMBOLS SPAMC/1.5`, a `Content-length` header with the message's exact length, a
//! `User` header when configured, a blank line, then the message: live headers, blank line and
//! body as stored (LF line ends, as spamc sends a file and Exim its spool; spamd reads either), so
//! it streams from the spool without a copy and its length is known before sending. The client
//! then half-closes its side, as spamc does. spamd answers and closes:
//!
//! ```text
//! SPAMD/1.1 0 EX_OK
//! Content-length: 55
//! Spam: True ; 1000.0 / 5.0
//!
//! GTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO
//! ```
//!
//! `SYMBOLS` rather than `REPORT`: the names of the rules that hit are what a log line and the
//! `X-Spam-Status` header need, and the list is far shorter than a report.
//!
//! The reply is read to EOF, at most [`MAX_REPLY_BYTES`], and parsed strictly: a status other than
//! `0 EX_OK` (spamd's sysexits codes, e.g. `76 Bad header line`), a missing or malformed `Spam`
//! header, a body whose length is not its `Content-length`, a rule name that is not one, a short
//! read, a timeout and a refused connection are all [`StageError::Temporary`]: the policy defers,
//! never "clean". Headers spamd may add that we do not know are ignored, as the protocol says.
//!
//! Mapping: `Spam: True` → [`Verdict::Spam`], `False` → [`Verdict::Clean`]; the score is spamd's.
//! A message over `max_message_bytes` is not sent (spamc's `-s`, 500 KB by default: spam is small,
//! and SpamAssassin's time grows with size): [`Verdict::Neutral`] with a `skipped` detail.
//!
//! The `timeout_ms` deadline covers the whole check: waiting for a free connection, connecting,
//! sending and spamd's scan. A TCP connect is also bounded by `connect_timeout_ms`; a UNIX-socket
//! connect cannot be bounded with the standard library (it returns at once unless the listener's
//! backlog is full), and [`Stage::timeout`] covers that case.

use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::net::{read_to_end_by, send_with_head, Endpoint, Semaphore, SendError};
use super::{spam_score, Stage, StageError, StageResult, Verdict};
use crate::outside::{Answer, Outside, RequestHasher};
use crate::spool::MessageView;

/// The longest reply we read. A `SYMBOLS` reply is a status line, two headers and a list of rule
/// names: a few hundred bytes, a few KiB when very many rules hit.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The longest rule name we accept (SpamAssassin's are words of a few dozen characters).
const MAX_RULE_NAME: usize = 128;

/// Settings of the `spamd` stage (`[stages.spamd]` in a pipeline definition).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpamdConfig {
    /// spamd's TCP address, `host:port` (`[::1]:783`); `127.0.0.1:783` when neither this nor
    /// `socket` is set.
    pub address: Option<String>,
    /// spamd's UNIX socket (its `--socketpath`), an absolute path; instead of `address`.
    pub socket: Option<PathBuf>,
    /// The `User` header: whose preferences spamd applies (spamc's `-u`); none by default.
    pub user: Option<String>,
    /// Bound on a TCP connect, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Bound on the whole check (a free connection, connect, send, spamd's scan), in milliseconds.
    pub timeout_ms: u64,
    /// Larger messages (headers and body as stored) are not sent: the result is neutral.
    pub max_message_bytes: u64,
    /// Add `X-Spam-Score` and `X-Spam-Status` to the message.
    pub headers: bool,
    /// Connections to spamd at once (spamd's own `--max-children` is 5 by default); further
    /// checks wait, within `timeout_ms`, for one to free up.
    pub max_connections: usize,
}

impl Default for SpamdConfig {
    fn default() -> Self {
        SpamdConfig {
            address: None,
            socket: None,
            user: None,
            connect_timeout_ms: 2_000,
            timeout_ms: 30_000,
            max_message_bytes: 512_000,
            headers: true,
            max_connections: 5,
        }
    }
}

/// spamd's answer, as parsed from its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct SpamdReply {
    pub spam: bool,
    /// The score and the threshold as spamd wrote them (`1000.0`, `-0.1`), checked to be numbers.
    pub score_text: String,
    pub required_text: String,
    pub score: f64,
    /// The rules that hit, in spamd's order.
    pub tests: Vec<String>,
}

/// Why an exchange with spamd gave no reply.
enum Trouble {
    /// spamd or the network: refused, timed out, closed early, too long. Recorded as its answer.
    Service(String),
    /// Our side: our own copy of the message could not be read, or no connection was free.
    Local(String),
}

/// The `spamd` stage.
pub struct SpamdStage {
    endpoint: Endpoint,
    user: Option<String>,
    connect_timeout: Duration,
    timeout: Duration,
    max_message_bytes: u64,
    headers: bool,
    slots: Semaphore,
    max_connections: usize,
    outside: Outside,
}

impl SpamdStage {
    pub fn new(config: SpamdConfig) -> Result<SpamdStage, String> {
        let endpoint = match (&config.address, &config.socket) {
            (Some(_), Some(_)) => return Err("set either address or socket, not both".into()),
            (None, Some(path)) if !path.is_absolute() => {
                return Err(format!("socket {:?}: the path must be absolute", path.display().to_string()))
            }
            (None, Some(path)) => Endpoint::Unix(path.clone()),
            (address, None) => {
                let address = address.as_deref().unwrap_or("127.0.0.1:783");
                Endpoint::parse(&format!("tcp:{address}"))
                    .map_err(|_| format!("address {address:?}: expected host:port"))?
            }
        };
        if let Some(user) = &config.user {
            // spamd refuses control characters; CR or LF would also end our header early.
            if user.is_empty() || user.chars().any(char::is_control) {
                return Err(format!("user {user:?}: must be a non-empty name without control characters"));
            }
        }
        for (key, value) in [
            ("connect_timeout_ms", config.connect_timeout_ms),
            ("timeout_ms", config.timeout_ms),
            ("max_connections", config.max_connections as u64),
        ] {
            if value == 0 {
                return Err(format!("{key} must be greater than zero"));
            }
        }
        Ok(SpamdStage {
            endpoint,
            user: config.user,
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            timeout: Duration::from_millis(config.timeout_ms),
            max_message_bytes: config.max_message_bytes,
            headers: config.headers,
            slots: Semaphore::new(config.max_connections),
            max_connections: config.max_connections,
            outside: Outside::default(),
        })
    }

    /// Record or replay spamd's answers.
    pub fn with_outside(mut self, outside: Outside) -> SpamdStage {
        self.outside = outside;
        self
    }

    /// The request up to the message: command, headers, blank line.
    fn request_head(&self, message_len: u64) -> Vec<u8> {
        let mut head = format!("SYMBOLS SPAMC/1.5\r\nContent-length: {message_len}\r\n");
        if let Some(user) = &self.user {
            head.push_str(&format!("User: {user}\r\n"));
        }
        head.push_str("\r\n");
        head.into_bytes()
    }

    /// Ask spamd: its raw reply, or how talking to it failed. `Err` only for our own trouble,
    /// which is not spamd's answer and is not recorded.
    fn ask(&self, head: &[u8], message: &MessageView<'_>) -> Result<Answer, StageError> {
        match self.exchange(head, message) {
            Ok(bytes) => Ok(Answer::Reply { from: self.endpoint.to_string(), bytes }),
            Err(Trouble::Service(reason)) => Ok(Answer::Failed { reason }),
            Err(Trouble::Local(why)) => Err(StageError::Temporary(why)),
        }
    }

    /// Send the request and read the whole reply, all before one deadline.
    fn exchange(&self, head: &[u8], message: &MessageView<'_>) -> Result<Vec<u8>, Trouble> {
        let deadline = Instant::now() + self.timeout;
        let _permit = self.slots.acquire(self.timeout).ok_or_else(|| {
            Trouble::Local(format!(
                "spamd: all {} connections busy for {} ms",
                self.max_connections,
                self.timeout.as_millis()
            ))
        })?;
        let timed_out = || Trouble::Service(format!("spamd: timed out after {} ms", self.timeout.as_millis()));
        let service = |what: &str, e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => timed_out(),
            _ => Trouble::Service(format!("spamd {what}: {e}")),
        };
        // Waiting for a connection of our own took it all: not spamd's answer.
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Trouble::Local("spamd: no time left after waiting for a free connection".into()))?;
        let mut conn = self
            .endpoint
            .connect(self.connect_timeout.min(left))
            .map_err(|e| Trouble::Service(format!("spamd connect to {}: {e}", self.endpoint)))?;

        match send_with_head(&mut conn, head.to_vec(), &mut message.reader(), deadline) {
            Ok(()) => {}
            Err(SendError::Reading(e)) => return Err(Trouble::Local(format!("reading the message: {e}"))),
            Err(SendError::Writing(e)) => {
                // spamd answers a request it refuses at once and closes, so our next write fails:
                // its reply, which says why, may be waiting behind that failure.
                return match read_to_end_by(&mut conn, deadline, MAX_REPLY_BYTES) {
                    Ok(reply) if !reply.is_empty() => Ok(reply),
                    _ => Err(service("write", e)),
                };
            }
        }
        conn.shutdown_write().map_err(|e| service("shutdown", e))?;
        read_to_end_by(&mut conn, deadline, MAX_REPLY_BYTES).map_err(|e| service("read", e))
    }

    /// The result for a parsed reply.
    fn result(&self, reply: SpamdReply, from: String) -> StageResult {
        let verdict = if reply.spam { Verdict::Spam } else { Verdict::Clean };
        let tests = if reply.tests.is_empty() { "none".to_string() } else { reply.tests.join(",") };
        let mut result = StageResult::new(verdict)
            .detail("score", reply.score_text.clone())
            .detail("required", reply.required_text.clone())
            .detail("tests", tests.clone())
            .detail("server", from);
        result.score = Some(reply.score);
        if self.headers {
            result.headers.extend(spam_score::headers(reply.spam, &reply.score_text, &reply.required_text, &tests));
        }
        result
    }
}

impl Stage for SpamdStage {
    fn name(&self) -> &str {
        "spamd"
    }

    fn parallelism(&self) -> usize {
        self.max_connections
    }

    fn check(&self, message: &MessageView<'_>) -> Result<StageResult, StageError> {
        let len = message.len();
        if let Some(skipped) = spam_score::skipped(len, self.max_message_bytes, "spamd") {
            return Ok(skipped);
        }
        let head = self.request_head(len);
        // Recording or replaying: the request is exactly what we send, head then message.
        let request = match self.outside.answers.is_live() {
            true => None,
            false => {
                let mut h = RequestHasher::default();
                h.update(&head);
                h.read_from(message.reader())
                    .map_err(|e| StageError::Temporary(format!("reading the message: {e}")))?;
                Some(h.finish())
            }
        };
        let ask = || self.ask(&head, message);
        match self.outside.answers.exchange(self.name(), message.header.id.as_str(), request, ask)? {
            Answer::Reply { from, bytes } => {
                let reply = parse_reply(&bytes).map_err(|e| StageError::Temporary(format!("spamd {from}: {e}")))?;
                Ok(self.result(reply, from))
            }
            Answer::Failed { reason } => Err(StageError::Temporary(reason)),
        }
    }

    fn timeout(&self) -> Duration {
        // The stage's own deadline should fire first.
        self.timeout + Duration::from_secs(1)
    }
}

/// Parse a complete spamd reply to `SYMBOLS` (read to EOF).
pub fn parse_reply(raw: &[u8]) -> Result<SpamdReply, String> {
    if raw.is_empty() {
        return Err("connection closed without a reply".into());
    }
    let mut rest = raw;
    let mut next_line = |what: &str| -> Result<&[u8], String> {
        let end = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| format!("reply ends inside its {what}"))?;
        let line = &rest[..end];
        rest = &rest[end + 2..];
        Ok(line)
    };
    check_status(next_line("status line")?)?;

    let (mut length, mut spam) = (None, None);
    loop {
        let line = next_line("headers")?;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(format!("header line without a colon: \"{}\"", printable(line, 80)));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"Content-length") {
            if length.is_some() {
                return Err("two Content-length headers".into());
            }
            length = Some(parse_length(value)?);
        } else if name.eq_ignore_ascii_case(b"Spam") {
            if spam.is_some() {
                return Err("two Spam headers".into());
            }
            spam = Some(parse_spam(value)?);
        }
    }
    let (is_spam, score_text, required_text, score) = spam.ok_or("reply has no Spam header")?;

    let body = rest;
    match length {
        Some(n) if (body.len() as u64) < n => return Err(format!("reply cut short: {} of {n} body bytes", body.len())),
        Some(n) if body.len() as u64 > n => return Err(format!("reply has more than its {n} body bytes")),
        _ => {}
    }
    let names = body.trim_ascii();
    let mut tests = Vec::new();
    if !names.is_empty() {
        for name in names.split(|&b| b == b',') {
            let valid = !name.is_empty()
                && name.len() <= MAX_RULE_NAME
                && name.iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
            if !valid {
                return Err(format!("not a rule name: \"{}\"", printable(name, 80)));
            }
            // Checked above: ASCII.
            tests.push(String::from_utf8_lossy(name).into_owned());
        }
    }
    Ok(SpamdReply { spam: is_spam, score_text, required_text, score, tests })
}

/// `SPAMD/1.x 0 EX_OK`; any other code is spamd refusing or failing (the error says how).
fn check_status(line: &[u8]) -> Result<(), String> {
    let bad = || format!("not a spamd status line: \"{}\"", printable(line, 80));
    let rest = line.strip_prefix(b"SPAMD/1.").ok_or_else(bad)?;
    let space = rest.iter().position(|&b| b == b' ').ok_or_else(bad)?;
    let (minor, rest) = (&rest[..space], &rest[space + 1..]);
    if minor.is_empty() || minor.len() > 3 || !minor.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let (code, message) = match rest.iter().position(|&b| b == b' ') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    if code.is_empty() || code.len() > 3 || !code.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    match (code, message) {
        (b"0", b"EX_OK") => Ok(()),
        (b"0", _) => Err(bad()),
        _ => Err(format!("spamd answered {} {}", printable(code, 3), printable(message, 200))),
    }
}

fn parse_length(value: &[u8]) -> Result<u64, String> {
    let bad = || format!("bad Content-length \"{}\"", printable(value, 40));
    if value.is_empty() || value.len() > 12 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).ok_or_else(bad)
}

/// `True ; 1000.0 / 5.0` → (spam, score text, threshold text, score).
fn parse_spam(value: &[u8]) -> Result<(bool, String, String, f64), String> {
    let bad = || format!("bad Spam header \"{}\"", printable(value, 80));
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (flag, numbers) = text.split_once(';').ok_or_else(bad)?;
    let (score, required) = numbers.split_once('/').ok_or_else(bad)?;
    let spam = match flag.trim() {
        f if f.eq_ignore_ascii_case("True") || f.eq_ignore_ascii_case("Yes") => true,
        f if f.eq_ignore_ascii_case("False") || f.eq_ignore_ascii_case("No") => false,
        _ => return Err(bad()),
    };
    let (score, required) = (score.trim(), required.trim());
    let value = number(score).ok_or_else(bad)?;
    number(required).ok_or_else(bad)?;
    Ok((spam, score.to_string(), required.to_string(), value))
}

/// A score as spamd writes one (`%2.1f`): an optional minus, digits, optionally a point and
/// digits. Nothing else (no `nan`, `inf`, exponent or sign plus), so it is always finite and fits
/// in a header as is.
fn number(text: &str) -> Option<f64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (int, frac) = match digits.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (digits, None),
    };
    let all_digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || frac.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Bytes for an error message: printable ASCII kept, anything else escaped, bounded.
fn printable(bytes: &[u8], max: usize) -> String {
    let s = bytes.escape_ascii().to_string();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GTUBE_REPLY: &[u8] = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 55\r\nSpam: True ; 1000.0 / 5.0\r\n\r\n\
        GTUBE,MSGID_SHORT,NO_RECEIVED,NO_RELAYS,TVD_SPACE_RATIO";

    fn err(raw: &[u8]) -> String {
        parse_reply(raw).expect_err(&String::from_utf8_lossy(raw))
    }

    #[test]
    fn replies_as_spamd_sends_them() {
        let r = parse_reply(GTUBE_REPLY).unwrap();
        assert_eq!((r.spam, r.score_text.as_str(), r.required_text.as_str(), r.score), (true, "1000.0", "5.0", 1000.0));
        assert_eq!(r.tests, ["GTUBE", "MSGID_SHORT", "NO_RECEIVED", "NO_RELAYS", "TVD_SPACE_RATIO"]);

        // Ham with a negative zero, as spamd 4.0.1 formats it.
        let r = parse_reply(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 11\r\nSpam: False ; -0.0 / 5.0\r\n\r\nNO_RELAYS,A")
            .unwrap();
        assert_eq!((r.spam, r.score_text.as_str(), r.tests.len()), (false, "-0.0", 2));
        // No rule hit; a list ending in CRLF (protocol 1.2); unknown headers; no Content-length.
        let r = parse_reply(b"SPAMD/1.5 0 EX_OK\r\nSpam: False ; -1.5 / 5.0\r\nX-New: 1\r\n\r\n").unwrap();
        assert_eq!((r.score, r.tests.len()), (-1.5, 0));
        let r = parse_reply(b"SPAMD/1.1 0 EX_OK\r\nspam:True;7/5\r\n\r\nA_B,C.D\r\n").unwrap();
        assert_eq!((r.spam, r.score, r.tests.len()), (true, 7.0, 2));
    }

    #[test]
    fn errors_and_hostile_replies_are_refused() {
        for (raw, why) in [
            (&b""[..], "connection closed without a reply"),
            (b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n", "spamd answered 76 Bad header line"),
            (b"SPAMD/1.0 69 Service Unavailable: x\r\n", "spamd answered 69 Service Unavailable: x"),
            (b"SPAMD/1.0 79 Timeout: (300 second timeout while trying to CHECK)\r\n", "spamd answered 79"),
            (b"SPAMD/1.1 0 PONG\r\n\r\n", "not a spamd status line"),
            (b"SPAMD/2.0 0 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\n", "not a spamd status line"),
            (b"SPAMD/1.1 00 EX_OK\r\nSpam: True ; 1 / 5\r\n\r\n", "spamd answered 00"),
            (b"HTTP/1.1 200 OK\r\n\r\n", "not a spamd status line"),
            (b"SPAMD/1.1 0 EX_OK", "reply ends inside its status line"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1000.0 / 5.0\r\n", "reply ends inside its headers"),
            (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\n\r\nGTUBE", "reply has no Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam True\r\n\r\n", "header line without a colon"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: Maybe ; 1.0 / 5.0\r\n\r\n", "bad Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; nan / 5.0\r\n\r\n", "bad Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; inf / 5.0\r\n\r\n", "bad Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1e9 / 5.0\r\n\r\n", "bad Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / \r\n\r\n", "bad Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 5.0\r\n\r\n", "bad Spam header"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\nSpam: False ; 0 / 5\r\n\r\n", "two Spam headers"),
            (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 50\r\nSpam: True ; 1.0 / 5.0\r\n\r\nGTUBE", "reply cut short"),
            (b"SPAMD/1.1 0 EX_OK\r\nContent-length: 1\r\nSpam: True ; 1.0 / 5.0\r\n\r\nGTUBE", "more than its 1"),
            (b"SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: True ; 1.0 / 5.0\r\n\r\n", "bad Content-length"),
            (
                b"SPAMD/1.1 0 EX_OK\r\nContent-length: 99999999999999999999\r\nSpam: True ; 1.0 / 5.0\r\n\r\n",
                "bad Content-length",
            ),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\nA,,B", "not a rule name"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\nA B", "not a rule name"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\nA\r\nBcc: x", "not a rule name"),
            (b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\nA\xff", "not a rule name"),
        ] {
            let e = err(raw);
            assert!(e.contains(why), "{:?}: {e:?} should say {why:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn garbage_and_huge_lines_do_not_panic_and_are_bounded_in_messages() {
        let huge = [b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 1.0 / 5.0\r\n\r\n".as_slice(), &[b'A'; 200_000]].concat();
        assert!(err(&huge).starts_with("not a rule name: \"AAAA"), "a name longer than {MAX_RULE_NAME}");
        assert!(err(&huge).len() < 200);
        let long_status = [b"SPAMD/1.1 64 ".as_slice(), &[0xffu8; 100_000], b"\r\n"].concat();
        assert!(err(&long_status).len() < 1000);
        let long_header = [b"SPAMD/1.1 0 EX_OK\r\nX: ".as_slice(), &[b'x'; 100_000]].concat();
        assert_eq!(err(&long_header), "reply ends inside its headers");
        // Every prefix of a good reply, and a few byte patterns, give an error or a reply, never a panic.
        for n in 0..GTUBE_REPLY.len() {
            let _ = parse_reply(&GTUBE_REPLY[..n]);
        }
        for b in 0..=255u8 {
            let _ = parse_reply(&[b; 64]);
            let mut r = GTUBE_REPLY.to_vec();
            r[30] = b;
            let _ = parse_reply(&r);
        }
    }

    #[test]
    fn scores_are_plain_decimal_numbers() {
        for (text, value) in [("0.0", Some(0.0)), ("-0.1", Some(-0.1)), ("1000.0", Some(1000.0)), ("15", Some(15.0))] {
            assert_eq!(number(text), value, "{text}");
        }
        for text in ["", "-", ".", "1.", ".5", "+1", "1e3", "NaN", "inf", "1.0.0", "--1", " 1", "1234567890.0"] {
            assert_eq!(number(text), None, "{text}");
        }
    }

    #[test]
    fn config() {
        let c: SpamdConfig = toml::from_str("address = \"127.0.0.1:7830\"\ntimeout_ms = 5").unwrap();
        assert_eq!((c.timeout_ms, c.max_message_bytes, c.headers), (5, 512_000, true));
        assert!(toml::from_str::<SpamdConfig>("adress = \"x\"").is_err());
        let stage = SpamdStage::new(SpamdConfig::default()).unwrap();
        assert_eq!(stage.endpoint, Endpoint::Tcp("127.0.0.1:783".into()));
        assert_eq!(
            stage.request_head(12),
            b"SYMBOLS SPAMC/1.5\r\nContent-length: 12\r\n\r\n",
            "the head spamd expects"
        );
        let with_user = SpamdStage::new(SpamdConfig { user: Some("filter".into()), ..Default::default() }).unwrap();
        assert_eq!(with_user.request_head(0), b"SYMBOLS SPAMC/1.5\r\nContent-length: 0\r\nUser: filter\r\n\r\n");
        let unix = SpamdStage::new(SpamdConfig { socket: Some("/run/spamd.sock".into()), ..Default::default() });
        assert_eq!(unix.unwrap().endpoint, Endpoint::Unix("/run/spamd.sock".into()));
        for bad in [
            SpamdConfig { address: Some("x".into()), socket: Some("/s".into()), ..Default::default() },
            SpamdConfig { socket: Some("rel.sock".into()), ..Default::default() },
            SpamdConfig { address: Some("localhost".into()), ..Default::default() },
            SpamdConfig { user: Some("a\r\nb".into()), ..Default::default() },
            SpamdConfig { timeout_ms: 0, ..Default::default() },
            SpamdConfig { max_connections: 0, ..Default::default() },
        ] {
            assert!(SpamdStage::new(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
