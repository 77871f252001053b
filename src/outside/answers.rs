//! What the network services said: live, recorded while a capture runs the stages, or replayed
//! from a capture.
//!
//! The layer sits where the bytes cross the process boundary, so a replay still runs our reply
//! parsers: a stage hands over the digest of the request it would send and a closure that talks to
//! the service and returns the raw reply bytes (or the transport failure, as text); the layer
//! calls the closure (live), calls it and keeps the answer (recording), or looks the answer up
//! (replay). Answers are keyed by stage name and the SHA-256 of the request bytes, so the order
//! and parallelism in which messages are checked do not matter. A replay never invents an answer:
//! a miss is an error naming the stage, the message and the request, and is remembered for the
//! replay's report.
//!
//! The book is (de)serialised as JSON here; reading and writing the file is the caller's business.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use serde_json::{json, Map, Value};

use crate::dns::{DnsError, RecordingTxt, ReplayingTxt, TxtAnswers, TxtLookup};

/// The answers file format; a reader refuses any other.
pub const FORMAT: u64 = 1;

/// One service exchange's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The service's raw reply, and which server (endpoint as configured) sent it.
    Reply { from: String, bytes: Vec<u8> },
    /// No usable reply: refused, timed out, closed early. The reason as the stage words it.
    Failed { reason: String },
}

/// SHA-256 of a request's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RequestDigest(pub [u8; 32]);

impl fmt::Display for RequestDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// Builds a [`RequestDigest`] from the request's pieces, in the order they are sent.
pub struct RequestHasher {
    ctx: ring::digest::Context,
}

impl Default for RequestHasher {
    fn default() -> Self {
        RequestHasher { ctx: ring::digest::Context::new(&ring::digest::SHA256) }
    }
}

impl RequestHasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
    }

    /// Add everything `r` yields.
    pub fn read_from(&mut self, mut r: impl Read) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => self.update(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The digest.
    pub fn finish(self) -> RequestDigest {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        RequestDigest(out)
    }
}

/// A replay asked for an answer the capture does not hold.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct MissingAnswer {
    pub stage: String,
    pub message_id: String,
    pub request: RequestDigest,
}

impl fmt::Display for MissingAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no recorded {} answer for message {} (request sha256 {})", self.stage, self.message_id, self.request)
    }
}

/// Recorded answers: the service exchanges and the DNS TXT answers.
#[derive(Default)]
pub struct AnswerBook {
    services: Mutex<BTreeMap<(String, RequestDigest), Answer>>,
    txt: Arc<Mutex<TxtAnswers>>,
    missing: Mutex<BTreeSet<MissingAnswer>>,
    missing_txt: Arc<Mutex<BTreeSet<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// How the stages reach the outside world.
#[derive(Clone, Default)]
pub enum Answers {
    #[default]
    Live,
    /// Ask the services and keep their answers in the book.
    Record(Arc<AnswerBook>),
    /// Answer from the book only.
    Replay(Arc<AnswerBook>),
}

impl fmt::Debug for Answers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Answers::Live => "Live",
            Answers::Record(_) => "Record",
            Answers::Replay(_) => "Replay",
        })
    }
}

impl Answers {
    /// Live: the stage need not compute request digests.
    pub fn is_live(&self) -> bool {
        matches!(self, Answers::Live)
    }

    /// One exchange with a service (see the module documentation). `request` is only looked at
    /// when recording or replaying.
    ///
    /// `live` may also fail locally (`Err`, e.g. the message could not be read): that is no
    /// answer of the service's and is not recorded.
    pub fn exchange<E: From<MissingAnswer>>(
        &self,
        stage: &str,
        message_id: &str,
        request: Option<RequestDigest>,
        live: impl FnOnce() -> Result<Answer, E>,
    ) -> Result<Answer, E> {
        match (self, request) {
            (Answers::Record(book), Some(digest)) => {
                let answer = live()?;
                // The first answer wins: two identical requests are one recorded exchange.
                lock(&book.services).entry((stage.to_string(), digest)).or_insert_with(|| answer.clone());
                Ok(answer)
            }
            (Answers::Replay(book), Some(digest)) => {
                if let Some(a) = lock(&book.services).get(&(stage.to_string(), digest)) {
                    return Ok(a.clone());
                }
                let miss =
                    MissingAnswer { stage: stage.to_string(), message_id: message_id.to_string(), request: digest };
                lock(&book.missing).insert(miss.clone());
                Err(miss.into())
            }
            _ => live(),
        }
    }

    /// The TXT lookup a stage should use: `live` itself, or wrapped to record or to replay.
    pub fn txt_lookup(&self, live: Arc<dyn TxtLookup>) -> Arc<dyn TxtLookup> {
        match self {
            Answers::Live => live,
            Answers::Record(book) => Arc::new(RecordingTxt::new(live, Arc::clone(&book.txt))),
            Answers::Replay(book) => {
                Arc::new(ReplayingTxt::new(lock(&book.txt).clone(), Arc::clone(&book.missing_txt)))
            }
        }
    }
}

impl AnswerBook {
    pub fn new() -> AnswerBook {
        AnswerBook::default()
    }

    /// How many service answers and TXT answers the book holds.
    pub fn len(&self) -> (usize, usize) {
        (lock(&self.services).len(), lock(&self.txt).len())
    }

    /// Service answers a replay asked for and did not find, in a stable order.
    pub fn missing(&self) -> Vec<MissingAnswer> {
        lock(&self.missing).iter().cloned().collect()
    }

    /// TXT names a replay asked for and did not find.
    pub fn missing_txt(&self) -> Vec<String> {
        lock(&self.missing_txt).iter().cloned().collect()
    }

    /// The book as JSON, with the clock the answers were recorded at. Keys are sorted, so the
    /// same answers always give the same bytes.
    pub fn to_json(&self, clock: u64) -> Vec<u8> {
        let mut services: Map<String, Value> = Map::new();
        for ((stage, digest), answer) in lock(&self.services).iter() {
            let v = match answer {
                Answer::Reply { from, bytes } => json!({ "from": from, "reply": bytes_to_json(bytes) }),
                Answer::Failed { reason } => json!({ "failed": reason }),
            };
            let per_stage = services.entry(stage.clone()).or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = per_stage {
                m.insert(digest.to_string(), v);
            }
        }
        let mut txt = Map::new();
        for (name, answer) in lock(&self.txt).iter() {
            let v = match answer {
                Ok(records) => json!({ "records": records.iter().map(|r| bytes_to_json(r)).collect::<Vec<_>>() }),
                Err(e) => serde_json::to_value(e).unwrap_or(Value::Null),
            };
            txt.insert(name.clone(), v);
        }
        let doc = json!({ "format": FORMAT, "clock": clock, "services": services, "txt": txt });
        let mut out = serde_json::to_vec_pretty(&doc).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Read a book written by [`AnswerBook::to_json`]; returns it with its clock. The error names
    /// the entry that is wrong.
    pub fn from_json(bytes: &[u8]) -> Result<(AnswerBook, u64), String> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        if doc["format"].as_u64() != Some(FORMAT) {
            return Err(format!("unknown format {} (this spoolsift reads format {FORMAT})", doc["format"]));
        }
        let clock = doc["clock"].as_u64().ok_or("\"clock\" must be a number of seconds")?;
        let book = AnswerBook::new();
        let services = doc["services"].as_object().ok_or("\"services\" must be an object")?;
        for (stage, answers) in services {
            let answers = answers.as_object().ok_or_else(|| format!("services.{stage} must be an object"))?;
            for (key, v) in answers {
                let at = || format!("services.{stage}.{key}");
                let digest = parse_digest(key).ok_or_else(|| format!("{}: not a SHA-256 in hex", at()))?;
                let answer = match (v.get("reply"), v.get("failed")) {
                    (Some(reply), None) => Answer::Reply {
                        from: v["from"].as_str().ok_or_else(|| format!("{}: \"from\" must be a string", at()))?.into(),
                        bytes: bytes_from_json(reply).map_err(|e| format!("{}.reply: {e}", at()))?,
                    },
                    (None, Some(Value::String(reason))) => Answer::Failed { reason: reason.clone() },
                    _ => return Err(format!("{}: needs either \"reply\" or \"failed\" (a string)", at())),
                };
                lock(&book.services).insert((stage.clone(), digest), answer);
            }
        }
        let txt = doc["txt"].as_object().ok_or("\"txt\" must be an object")?;
        for (name, v) in txt {
            let answer = match v.get("records") {
                Some(Value::Array(records)) => Ok(records
                    .iter()
                    .map(bytes_from_json)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("txt.{name}: {e}"))?),
                Some(_) => return Err(format!("txt.{name}: \"records\" must be an array")),
                None => Err(serde_json::from_value::<DnsError>(v.clone()).map_err(|e| format!("txt.{name}: {e}"))?),
            };
            lock(&book.txt).insert(crate::dns::normalize_name(name), answer);
        }
        Ok((book, clock))
    }
}

/// Bytes in JSON: a string when they are UTF-8 (readable in the file), else `{"hex": "..."}`.
fn bytes_to_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "hex": hex(b) }),
    }
}

fn bytes_from_json(v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        _ => {
            let h = v["hex"].as_str().ok_or("expected a string or {\"hex\": \"...\"}")?;
            unhex(h).ok_or_else(|| "bad hex".to_string())
        }
    }
}

/// Lower-case hex. (Two short functions; not worth a dependency.)
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok())).collect()
}

fn parse_digest(s: &str) -> Option<RequestDigest> {
    let v = unhex(s)?;
    Some(RequestDigest(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    type R = Result<Answer, MissingAnswer>;

    fn digest(s: &str) -> RequestDigest {
        let mut h = RequestHasher::default();
        h.update(s.as_bytes());
        h.finish()
    }

    #[test]
    fn record_replay_and_the_exact_miss() {
        let book = Arc::new(AnswerBook::new());
        let rec = Answers::Record(Arc::clone(&book));
        let ok = Answer::Reply { from: "unix:/c.sock".into(), bytes: b"stream: OK\0".to_vec() };
        assert_eq!(rec.exchange("clamav", "id1", Some(digest("a")), || R::Ok(ok.clone())), Ok(ok.clone()));
        let down = Answer::Failed { reason: "connect: Connection refused (os error 111)".into() };
        assert_eq!(rec.exchange("dcc", "id1", Some(digest("b")), || R::Ok(down.clone())), Ok(down.clone()));
        let odd = Answer::Reply { from: "tcp:h:1".into(), bytes: vec![0xff, b'\n'] };
        rec.exchange("dcc", "id2", Some(digest("c")), || R::Ok(odd.clone())).unwrap();

        let json = book.to_json(1_800_000_000);
        assert_eq!(json, book.to_json(1_800_000_000), "the same book gives the same bytes");
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(text.contains("\"reply\": \"stream: OK\\u0000\""), "{text}");
        assert!(text.contains("\"hex\": \"ff0a\""), "{text}");
        let (back, clock) = AnswerBook::from_json(&json).unwrap();
        assert_eq!(clock, 1_800_000_000);
        assert_eq!(back.to_json(clock), json);

        let back = Arc::new(back);
        let replay = Answers::Replay(Arc::clone(&back));
        let never = || -> R { panic!("a replay must not ask the service") };
        assert_eq!(replay.exchange("clamav", "id1", Some(digest("a")), never), Ok(ok));
        assert_eq!(replay.exchange("dcc", "id1", Some(digest("b")), never), Ok(down));
        assert_eq!(replay.exchange("dcc", "id2", Some(digest("c")), never), Ok(odd));
        let miss = replay.exchange("clamav", "id3", Some(digest("b")), never).unwrap_err();
        assert_eq!(
            miss.to_string(),
            format!("no recorded clamav answer for message id3 (request sha256 {})", digest("b"))
        );
        assert_eq!(back.missing(), vec![miss]);
        assert_eq!(
            digest("a").to_string(),
            "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb",
            "SHA-256 of \"a\""
        );
    }

    #[test]
    fn txt_answers_travel_through_the_book() {
        let mut live = crate::dns::StaticTxt::new();
        live.insert("k._domainkey.example.org", "v=DKIM1; p=AB");
        let book = Arc::new(AnswerBook::new());
        let rec = Answers::Record(Arc::clone(&book)).txt_lookup(Arc::new(live));
        rec.txt("k._domainkey.example.org").unwrap();
        assert_eq!(rec.txt("nx.example"), Err(DnsError::NoSuchName));
        let (back, _) = AnswerBook::from_json(&book.to_json(7)).unwrap();
        let back = Arc::new(back);
        let replay = Answers::Replay(Arc::clone(&back)).txt_lookup(Arc::new(crate::dns::StaticTxt::new()));
        assert_eq!(replay.txt("K._domainkey.example.org.").unwrap(), vec![b"v=DKIM1; p=AB".to_vec()]);
        assert_eq!(replay.txt("nx.example"), Err(DnsError::NoSuchName));
        assert!(replay.txt("other.example").is_err());
        assert_eq!(back.missing_txt(), ["other.example"]);
    }

    #[test]
    fn bad_books_are_named() {
        assert_eq!(
            AnswerBook::from_json(br#"{"format": 2}"#).err().unwrap(),
            "unknown format 2 (this spoolsift reads format 1)"
        );
        let e = AnswerBook::from_json(br#"{"format": 1, "clock": 1, "services": {"dcc": {"zz": {}}}, "txt": {}}"#);
        assert_eq!(e.err().unwrap(), "services.dcc.zz: not a SHA-256 in hex");
        let key = "00".repeat(32);
        let doc = format!(r#"{{"format": 1, "clock": 1, "services": {{"dcc": {{"{key}": {{}}}}}}, "txt": {{}}}}"#);
        assert_eq!(
            AnswerBook::from_json(doc.as_bytes()).err().unwrap(),
            format!("services.dcc.{key}: needs either \"reply\" or \"failed\" (a string)")
        );
    }
}
