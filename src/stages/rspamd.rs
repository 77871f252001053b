//! The `rspamd` stage: ask rspamd for its verdict over its HTTP protocol, `POST /checkv2` to the
//! normal worker (rspamd's "Protocol" documentation).
//!
//! The request carries what an MTA tells rspamd in HTTP headers: `Queue-Id` (the Exim id),
//! `From` (the envelope sender, `<>` for the null sender), one `Rcpt` per pending recipient,
//! `IP` (from `-host_address`; none for a local submission), `Helo` (`-helo_name`), `Hostname`
//! (`-host_name`, the verified reverse name) and `User` (`-auth_id`) when Exim recorded them, an
//! optional `Password`, and a `Content-Length`. Bytes that would break a header (controls) are
//! removed from the envelope values. The body is the message as stored (live headers, blank
//! line, body, LF line ends, as Exim's own spam ACL sends its spool file), streamed without a
//! copy.
//!
//! The client is `ureq` (blocking, small, no TLS compiled in): connect and overall deadlines, no
//! redirects, no proxy from the environment (a loopback rspamd must not be reached through one),
//! and the reply body read with a bound. A status other than 200, a reply over
//! [`MAX_REPLY_BYTES`], a refused connection and a timeout are [`StageError::Temporary`], as is a
//! reply that is not rspamd's JSON: `score`, `required_score` (finite numbers), `action` (one of
//! rspamd's) and `symbols` (names and scores).
//!
//! Mapping the action (rspamd's protocol documentation says what each asks of an MTA), for a scan
//! that runs after Exim accepted the message:
//!
//! * `reject`, `add header`, `rewrite subject`, and the force actions `discard` and `quarantine`
//!   → [`Verdict::Spam`] (what becomes of spam is the policy's business, not rspamd's);
//! * `no action` and `greylist` → [`Verdict::Clean`]: greylisting is a delay asked of the
//!   sending server during SMTP, which is over when we scan;
//! * `soft reject` → [`Verdict::Clean`], with a `note` detail: rspamd asks for a temporary
//!   rejection (rate limit, greylisting) because of the sender's behaviour, not the content, and
//!   that SMTP session is over too. Deferring here would only hold mail already accepted;
//! * any other action (a custom one) → [`StageError::Temporary`]: we cannot tell what it means,
//!   and unknown must not pass as clean.
//!
//! A message over `max_message_bytes` is not sent: [`Verdict::Neutral`] with a `skipped` detail.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use serde::Deserialize;
use ureq::http::Uri;
use ureq::SendBody;

use super::net::Semaphore;
use super::{spam_score, Stage, StageError, StageResult, Verdict};
use crate::outside::{Answer, Outside, RequestHasher};
use crate::spool::{MessageView, SpoolHeader};

/// The longest reply body we read. A reply lists every symbol that hit with its options (URLs,
/// addresses): a few KiB, tens of KiB for a message full of links.
pub const MAX_REPLY_BYTES: u64 = 1024 * 1024;

/// The longest symbol name we accept (rspamd's are words of a few dozen characters).
const MAX_SYMBOL_NAME: usize = 128;

/// Settings of the `rspamd` stage (`[stages.rspamd]` in a pipeline definition).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RspamdConfig {
    /// The normal worker (or a proxy in front of it): `http://host:port`, optionally with a path
    /// prefix; `/checkv2` is appended. Plain HTTP only.
    pub url: String,
    /// Bound on connecting, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Bound on the whole check (a free connection, connect, send, rspamd's scan), in
    /// milliseconds. rspamd ends a scan itself at its `task_timeout` (8 s by default).
    pub timeout_ms: u64,
    /// Larger messages (headers and body as stored) are not sent: the result is neutral.
    pub max_message_bytes: u64,
    /// Sent as the `Password` header, for a proxy or controller that requires one.
    pub password: Option<String>,
    /// Add `X-Spam-Score`, `X-Spam-Status` and `X-Rspamd-Action` to the message.
    pub headers: bool,
    /// Requests to rspamd at once; further checks wait, within `timeout_ms`, for one to end.
    pub max_connections: usize,
}

impl Default for RspamdConfig {
    fn default() -> Self {
        RspamdConfig {
            url: "http://127.0.0.1:11333".into(),
            connect_timeout_ms: 2_000,
            timeout_ms: 20_000,
            // rspamd's own limit is 50 MB; mail this large is almost all attachments.
            max_message_bytes: 20 * 1024 * 1024,
            password: None,
            headers: true,
            max_connections: 4,
        }
    }
}

/// rspamd's answer, as parsed from its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct RspamdReply {
    pub score: f64,
    pub required: f64,
    pub action: String,
    /// What the action means to us, and a note on it for the details.
    pub verdict: Verdict,
    pub note: Option<&'static str>,
    /// The symbols that hit and their scores, by name.
    pub symbols: Vec<(String, f64)>,
}

/// The parts of a `/checkv2` reply we read; the rest is ignored.
#[derive(Deserialize)]
struct CheckReply {
    score: f64,
    required_score: f64,
    action: String,
    #[serde(default)]
    symbols: BTreeMap<String, SymbolReply>,
}

#[derive(Deserialize)]
struct SymbolReply {
    #[serde(default)]
    score: f64,
}

/// Why an exchange with rspamd gave no reply.
enum Trouble {
    /// rspamd or the network: refused, timed out, not 200, too long. Recorded as its answer.
    Service(String),
    /// Our side: our own copy of the message could not be read, or no connection was free.
    Local(String),
}

/// The `rspamd` stage.
pub struct RspamdStage {
    checkv2: String,
    agent: ureq::Agent,
    password: Option<String>,
    timeout: Duration,
    max_message_bytes: u64,
    headers: bool,
    slots: Semaphore,
    max_connections: usize,
    outside: Outside,
}

impl RspamdStage {
    pub fn new(config: RspamdConfig) -> Result<RspamdStage, String> {
        let checkv2 = checkv2_url(&config.url)?;
        if let Some(p) = &config.password {
            if p.chars().any(char::is_control) {
                return Err("password: must not contain control characters".into());
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
        let agent = ureq::Agent::config_builder()
            .proxy(None)
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_millis(config.connect_timeout_ms)))
            .user_agent(concat!("spoolsift/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(RspamdStage {
            checkv2,
            agent,
            password: config.password,
            timeout: Duration::from_millis(config.timeout_ms),
            max_message_bytes: config.max_message_bytes,
            headers: config.headers,
            slots: Semaphore::new(config.max_connections),
            max_connections: config.max_connections,
            outside: Outside::default(),
        })
    }

    /// Record or replay rspamd's answers.
    pub fn with_outside(mut self, outside: Outside) -> RspamdStage {
        self.outside = outside;
        self
    }

    /// Ask rspamd: its reply body, or how talking to it failed. `Err` only for our own trouble,
    /// which is not rspamd's answer and is not recorded.
    fn ask(&self, envelope: &[(&'static str, Vec<u8>)], message: &MessageView<'_>) -> Result<Answer, StageError> {
        match self.exchange(envelope, message) {
            Ok(bytes) => Ok(Answer::Reply { from: self.checkv2.clone(), bytes }),
            Err(Trouble::Service(reason)) => Ok(Answer::Failed { reason }),
            Err(Trouble::Local(why)) => Err(StageError::Temporary(why)),
        }
    }

    fn exchange(&self, envelope: &[(&'static str, Vec<u8>)], message: &MessageView<'_>) -> Result<Vec<u8>, Trouble> {
        let deadline = Instant::now() + self.timeout;
        let _permit = self.slots.acquire(self.timeout).ok_or_else(|| {
            Trouble::Local(format!(
                "rspamd: all {} connections busy for {} ms",
                self.max_connections,
                self.timeout.as_millis()
            ))
        })?;
        // Waiting for a connection of our own took it all: not rspamd's answer.
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Trouble::Local("rspamd: no time left after waiting for a free connection".into()))?;
        let mut request = self.agent.post(&self.checkv2).config().timeout_global(Some(left)).build();
        for (name, value) in envelope {
            request = request.header_raw(name, value);
        }
        if let Some(p) = &self.password {
            request = request.header_raw("Password", p.as_bytes());
        }
        // Without a length ureq sends a reader's bytes chunked; the length is known without
        // reading the message, and it is what rspamd's own clients send.
        request = request.header("Content-Length", message.len().to_string());
        let mut body = Remembering { inner: message.reader(), error: None };
        let sent = request.send(SendBody::from_reader(&mut body));
        if let Some(e) = body.error {
            return Err(Trouble::Local(format!("reading the message: {e}")));
        }
        let service = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => {
                Trouble::Service(format!("rspamd: timed out after {} ms", self.timeout.as_millis()))
            }
            ureq::Error::BodyExceedsLimit(_) => {
                Trouble::Service(format!("rspamd: reply longer than {MAX_REPLY_BYTES} bytes"))
            }
            e => Trouble::Service(format!("rspamd {}: {e}", self.checkv2)),
        };
        let mut response = sent.map_err(service)?;
        let status = response.status();
        let reply = response.body_mut().with_config().limit(MAX_REPLY_BYTES).read_to_vec().map_err(service)?;
        if status != 200 {
            return Err(Trouble::Service(format!("rspamd answered HTTP {status}: \"{}\"", printable(&reply, 200))));
        }
        Ok(reply)
    }

    /// The result for a parsed reply.
    fn result(&self, reply: RspamdReply) -> StageResult {
        let verdict = reply.verdict;
        let (score, required) = (two_places(reply.score), two_places(reply.required));
        let names = reply.symbols.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>();
        let tests = if names.is_empty() { "none".to_string() } else { names.join(",") };
        let symbols = reply.symbols.iter().map(|(n, s)| format!("{n}({})", two_places(*s))).collect::<Vec<_>>();
        let verdict_is_spam = verdict == Verdict::Spam;
        let mut result = StageResult::new(verdict)
            .detail("score", score.clone())
            .detail("required", required.clone())
            .detail("action", reply.action.clone())
            .detail("symbols", symbols.join(","));
        if let Some(note) = reply.note {
            result = result.detail("note", note);
        }
        result.score = Some(reply.score);
        if self.headers {
            result.headers.extend(spam_score::headers(verdict_is_spam, &score, &required, &tests));
            result.headers.push(("X-Rspamd-Action".into(), reply.action));
        }
        result
    }
}

impl Stage for RspamdStage {
    fn name(&self) -> &str {
        "rspamd"
    }

    fn parallelism(&self) -> usize {
        self.max_connections
    }

    fn check(&self, message: &MessageView<'_>) -> Result<StageResult, StageError> {
        let len = message.len();
        if let Some(skipped) = spam_score::skipped(len, self.max_message_bytes, "rspamd") {
            return Ok(skipped);
        }
        let envelope = envelope(message.header);
        // Recording or replaying: the request is the envelope headers in order, then the message
        // (the password is no part of it: changing it changes no answer).
        let request = match self.outside.answers.is_live() {
            true => None,
            false => {
                let mut h = RequestHasher::default();
                for (name, value) in &envelope {
                    h.update(name.as_bytes());
                    h.update(b": ");
                    h.update(value);
                    h.update(b"\r\n");
                }
                h.update(b"\r\n");
                h.read_from(message.reader())
                    .map_err(|e| StageError::Temporary(format!("reading the message: {e}")))?;
                Some(h.finish())
            }
        };
        let ask = || self.ask(&envelope, message);
        match self.outside.answers.exchange(self.name(), message.header.id.as_str(), request, ask)? {
            Answer::Reply { from, bytes } => {
                let reply = parse_reply(&bytes).map_err(|e| StageError::Temporary(format!("rspamd {from}: {e}")))?;
                Ok(self.result(reply))
            }
            Answer::Failed { reason } => Err(StageError::Temporary(reason)),
        }
    }

    fn timeout(&self) -> Duration {
        // The stage's own deadline should fire first.
        self.timeout + Duration::from_secs(1)
    }
}

/// `url` + `/checkv2`, for a plain `http://host[:port][/prefix]`.
fn checkv2_url(url: &str) -> Result<String, String> {
    let bad = |why: &str| format!("url {url:?}: {why}");
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("must start with http:// (no TLS support is built in; reach rspamd on loopback)"));
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(bad("must be http://host:port, without a user"));
    }
    if uri.query().is_some() {
        return Err(bad("must not have a query"));
    }
    Ok(format!("http://{authority}{}/checkv2", uri.path().trim_end_matches('/')))
}

/// The envelope headers rspamd takes from an MTA, in the order they are sent.
pub fn envelope(header: &SpoolHeader) -> Vec<(&'static str, Vec<u8>)> {
    let mut out = vec![("Queue-Id", header.id.as_str().as_bytes().to_vec())];
    let sender = clean(&header.sender);
    out.push(("From", if sender.is_empty() { b"<>".to_vec() } else { sender }));
    for (_, r) in header.pending_recipients() {
        let rcpt = clean(r.address());
        if !rcpt.is_empty() {
            out.push(("Rcpt", rcpt));
        }
    }
    if let Some(ip) = header.client_ip() {
        out.push(("IP", ip.to_string().into_bytes()));
    }
    for (name, option) in [("Helo", "helo_name"), ("Hostname", "host_name"), ("User", "auth_id")] {
        let value = clean(header.options.value(option).unwrap_or_default());
        if !value.is_empty() {
            out.push((name, value));
        }
    }
    out
}

/// A value without the bytes that would break an HTTP header (controls; bytes over 127 may stay).
fn clean(value: &[u8]) -> Vec<u8> {
    value.iter().copied().filter(|&b| b >= 0x20 && b != 0x7f).collect::<Vec<_>>().trim_ascii().to_vec()
}

/// Parse a `/checkv2` reply body.
pub fn parse_reply(body: &[u8]) -> Result<RspamdReply, String> {
    let reply: CheckReply = serde_json::from_slice(body)
        .map_err(|e| format!("reply is not rspamd's JSON ({})", printable(e.to_string().as_bytes(), 200)))?;
    let finite = |what: &str, v: f64| if v.is_finite() { Ok(v) } else { Err(format!("{what} is not a finite number")) };
    let score = finite("score", reply.score)?;
    let required = finite("required_score", reply.required_score)?;
    let (verdict, note) = verdict_for(&reply.action)?;
    let mut symbols = Vec::with_capacity(reply.symbols.len());
    for (name, symbol) in reply.symbols {
        let valid = !name.is_empty()
            && name.len() <= MAX_SYMBOL_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':'));
        if !valid {
            return Err(format!("not a symbol name: \"{}\"", printable(name.as_bytes(), 80)));
        }
        let s = finite("a symbol's score", symbol.score)?;
        symbols.push((name, s));
    }
    Ok(RspamdReply { score, required, action: reply.action, verdict, note, symbols })
}

/// The verdict for an rspamd action, and a note for the details (see the module documentation).
fn verdict_for(action: &str) -> Result<(Verdict, Option<&'static str>), String> {
    Ok(match action {
        "reject" | "add header" | "rewrite subject" | "discard" | "quarantine" => (Verdict::Spam, None),
        "no action" | "greylist" => (Verdict::Clean, None),
        "soft reject" => (
            Verdict::Clean,
            Some("soft reject is a temporary SMTP rejection (rate limit, greylisting), not a verdict on the content"),
        ),
        other => return Err(format!("an action this stage does not know: \"{}\"", printable(other.as_bytes(), 80))),
    })
}

/// A score as rspamd's own headers show one: two decimals, and never `-0.00`.
fn two_places(v: f64) -> String {
    let s = format!("{v:.2}");
    if s == "-0.00" {
        "0.00".into()
    } else {
        s
    }
}

/// Bytes for an error message: printable ASCII kept, anything else escaped, bounded.
fn printable(bytes: &[u8], max: usize) -> String {
    let s = bytes.escape_ascii().to_string();
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

/// A reader that remembers its error: ureq reports a failed body read as its own I/O error, and
/// our copy of the message failing is not rspamd's answer.
struct Remembering<R> {
    inner: R,
    error: Option<io::Error>,
}

impl<R: Read> Read for Remembering<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() != io::ErrorKind::Interrupted {
                self.error = Some(io::Error::new(e.kind(), e.to_string()));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// rspamd 3.4's reply for the GTUBE test message, as received.
    const GTUBE_REPLY: &str = r#"{"is_skipped":true,"score":15.0,"required_score":15.0,"action":"reject","symbols":{"GTUBE":{"name":"GTUBE","score":0.0,"metric_score":0.0}},"messages":{"smtp_message":"Gtube pattern"},"message-id":"1@example.org","time_real":0.098573}"#;

    fn reply(score: &str, action: &str, symbols: &str) -> String {
        format!(r#"{{"score":{score},"required_score":15.0,"action":"{action}","symbols":{{{symbols}}}}}"#)
    }

    fn stage(headers: bool) -> RspamdStage {
        RspamdStage::new(RspamdConfig { headers, ..Default::default() }).unwrap()
    }

    #[test]
    fn replies_as_rspamd_sends_them() {
        let r = parse_reply(GTUBE_REPLY.as_bytes()).unwrap();
        assert_eq!((r.score, r.required, r.action.as_str(), r.verdict.clone()), (15.0, 15.0, "reject", Verdict::Spam));
        assert_eq!(r.symbols, [("GTUBE".to_string(), 0.0)]);
        let result = stage(true).result(r);
        assert_eq!(result.score, Some(15.0));
        assert_eq!(
            result.headers,
            [
                ("X-Spam-Score".to_string(), "15.00".to_string()),
                ("X-Spam-Status".to_string(), "Yes, score=15.00 required=15.00 tests=GTUBE".to_string()),
                ("X-Rspamd-Action".to_string(), "reject".to_string()),
            ]
        );
        let details: Vec<_> = result.details.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(details, ["score=15.00", "required=15.00", "action=reject", "symbols=GTUBE(0.00)"]);

        // Symbols come sorted by name; negative and zero scores; no headers when off.
        let r =
            parse_reply(reply("-0.1", "no action", r#""MIME_GOOD":{"score":-0.1},"ARC_NA":{"score":0}"#).as_bytes());
        let result = stage(false).result(r.unwrap());
        assert_eq!((result.verdict.clone(), result.score, result.headers.len()), (Verdict::Clean, Some(-0.1), 0));
        assert_eq!(result.details[3].1, "ARC_NA(0.00),MIME_GOOD(-0.10)");
        // No symbols at all, and a -0 score shown as 0.00.
        let result =
            stage(true).result(parse_reply(br#"{"score":-0.0,"required_score":15,"action":"greylist"}"#).unwrap());
        assert_eq!(result.headers[1].1, "No, score=0.00 required=15.00 tests=none");
    }

    #[test]
    fn actions() {
        for (action, verdict, note) in [
            ("reject", Verdict::Spam, false),
            ("add header", Verdict::Spam, false),
            ("rewrite subject", Verdict::Spam, false),
            ("discard", Verdict::Spam, false),
            ("quarantine", Verdict::Spam, false),
            ("no action", Verdict::Clean, false),
            ("greylist", Verdict::Clean, false),
            ("soft reject", Verdict::Clean, true),
        ] {
            let r = parse_reply(reply("5.5", action, "").as_bytes()).unwrap();
            assert_eq!((&r.verdict, r.note.is_some()), (&verdict, note), "{action}");
            let status = &stage(true).result(r).headers[1].1;
            let yes = if verdict == Verdict::Spam { "Yes, " } else { "No, " };
            assert!(status.starts_with(yes), "{action}: {status}");
        }
        for action in ["", "REJECT", "add_header", "my custom action", r"reject\r\nX: y"] {
            let e = parse_reply(reply("1", action, "").as_bytes()).unwrap_err();
            assert!(e.starts_with("an action this stage does not know"), "{action:?}: {e}");
        }
    }

    #[test]
    fn hostile_replies_are_refused() {
        let huge_name = format!(r#""{}":{{"score":1}}"#, "A".repeat(100_000));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        for (body, why) in [
            ("", "reply is not rspamd's JSON"),
            ("garbage", "reply is not rspamd's JSON"),
            ("<html>502 Bad Gateway</html>", "reply is not rspamd's JSON"),
            (r#"{"score":1,"action":"reject"}"#, "missing field `required_score`"),
            (r#"{"required_score":15,"action":"reject"}"#, "missing field `score`"),
            (r#"{"score":1,"required_score":15}"#, "missing field `action`"),
            (r#"{"score":"1","required_score":15,"action":"reject"}"#, "invalid type"),
            (r#"{"score":NaN,"required_score":15,"action":"reject"}"#, "reply is not rspamd's JSON"),
            (r#"{"score":1e999,"required_score":15,"action":"reject"}"#, "reply is not rspamd's JSON"),
            (r#"{"score":1,"required_score":-1e999,"action":"reject"}"#, "reply is not rspamd's JSON"),
            (r#"{"score":1,"required_score":15,"action":"reject","symbols":[]}"#, "invalid type"),
            (&reply("1", "reject", r#""A B":{"score":1}"#), "not a symbol name: \"A B\""),
            (&reply("1", "reject", r#""":{"score":1}"#), "not a symbol name"),
            (&reply("1", "reject", r#""X\r\nBcc":{"score":1}"#), "not a symbol name: \"X\\r\\nBcc\""),
            (&reply("1", "reject", r#""A":{"score":"x"}"#), "invalid type"),
            (&reply("1", "reject", &huge_name), "not a symbol name"),
            (&deep, "reply is not rspamd's JSON"),
            (&format!("{GTUBE_REPLY} trailing"), "reply is not rspamd's JSON"),
        ] {
            let e = parse_reply(body.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{:.80}: {e:?} should say {why:?}", body);
            assert!(e.len() < 400, "the error is bounded: {e:.100}");
        }
        // Not UTF-8, and every prefix of a good reply: an error, never a panic.
        assert!(parse_reply(b"{\"score\":1,\"required_score\":15,\"action\":\"\xff\"}").is_err());
        for n in 0..GTUBE_REPLY.len() {
            assert!(parse_reply(&GTUBE_REPLY.as_bytes()[..n]).is_err());
        }
    }

    #[test]
    fn envelope_headers() {
        let text = "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\n\
                    -helo_name mx.sender\x01.example\n-host_address 192.0.2.10.4567\n-host_name mx.sender.example\n\
                    -auth_id alice\n-received_protocol esmtpsa\nXX\n2\nbob@dest.example\ncarol@dest.example\n\n\
                    014  Subject: test\n";
        let h = SpoolHeader::parse(text.as_bytes(), None).unwrap();
        let env: Vec<String> =
            envelope(&h).iter().map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v))).collect();
        assert_eq!(
            env,
            [
                "Queue-Id: 1xXORz-0000000058C-2p8L",
                "From: alice@sender.example",
                "Rcpt: bob@dest.example",
                "Rcpt: carol@dest.example",
                "IP: 192.0.2.10",
                "Helo: mx.sender.example",
                "Hostname: mx.sender.example",
                "User: alice",
            ]
        );
        // A local submission of a bounce: the null sender as <>, no client headers.
        let text = "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<>\n1795895471 0\n-received_protocol local\nXX\n1\n\
                    bob@dest.example\n\n014  Subject: test\n";
        let h = SpoolHeader::parse(text.as_bytes(), None).unwrap();
        let names: Vec<_> = envelope(&h).iter().map(|(n, v)| format!("{n}={}", String::from_utf8_lossy(v))).collect();
        assert_eq!(names, ["Queue-Id=1xXORz-0000000058C-2p8L", "From=<>", "Rcpt=bob@dest.example"]);
    }

    #[test]
    fn config() {
        let c: RspamdConfig = toml::from_str("url = \"http://[::1]:11333/\"\ntimeout_ms = 5").unwrap();
        assert_eq!((c.timeout_ms, c.headers, c.max_message_bytes), (5, true, 20 * 1024 * 1024));
        assert!(toml::from_str::<RspamdConfig>("uri = \"x\"").is_err());
        assert_eq!(checkv2_url("http://127.0.0.1:11333").unwrap(), "http://127.0.0.1:11333/checkv2");
        assert_eq!(checkv2_url("http://[::1]:11333/").unwrap(), "http://[::1]:11333/checkv2");
        assert_eq!(checkv2_url("http://proxy.local/rspamd/").unwrap(), "http://proxy.local/rspamd/checkv2");
        for bad in ["https://127.0.0.1:11333", "127.0.0.1:11333", "http://u:p@h:1", "http://h:1/?x=1", "", "http://"] {
            assert!(checkv2_url(bad).is_err(), "{bad}");
        }
        assert!(RspamdStage::new(RspamdConfig { password: Some("a\nb".into()), ..Default::default() }).is_err());
        assert!(RspamdStage::new(RspamdConfig { timeout_ms: 0, ..Default::default() }).is_err());
    }
}
