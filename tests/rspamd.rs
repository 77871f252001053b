//! The `rspamd` stage against a real rspamd (scripts/rspamd-test.sh: loopback, its own dnsmasq
//! that knows no name, network modules off), and against fake HTTP servers for the request's
//! bytes and the failure modes.
//!
//! rspamd's first start takes 12-20 s, so one test starts it and runs every check against it in
//! turn. Needs rspamd and dnsmasq (scripts/install-test-deps.sh). The GTUBE string is built at
//! run time (`made::gtube()`); no file in the repository contains it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use spoolsift::outside::clock::rfc5322;
use spoolsift::outside::{AnswerBook, Answers, Outside};
use spoolsift::spool::{MessageView, SpoolHeader};
use spoolsift::stages::rspamd::{RspamdConfig, RspamdStage};
use spoolsift::stages::{Stage, StageError, StageResult, Verdict};

mod support;

use support::made::gtube;
use support::rspamd::Rspamd;
use support::{free_port, poll};

const ID: &str = "1xXORz-0000000058C-2p8L";

fn stage(url: &str, tweak: impl FnOnce(&mut RspamdConfig)) -> RspamdStage {
    let mut c =
        RspamdConfig { url: url.to_string(), connect_timeout_ms: 1_000, timeout_ms: 20_000, ..RspamdConfig::default() };
    tweak(&mut c);
    RspamdStage::new(c).unwrap()
}

/// A spool header for a message from alice, sent from 192.0.2.10 (HELO and verified name
/// mx.sender.example, authenticated as alice) to bob and carol, with these header fields.
fn header(fields: &[String]) -> SpoolHeader {
    let mut h = format!(
        "{ID}-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\n-helo_name mx.sender.example\n\
         -host_address 192.0.2.10.42424\n-host_name mx.sender.example\n-auth_id alice\n\
         -received_protocol esmtpa\nXX\n2\nbob@dest.example\ncarol@dest.example\n\n"
    );
    for field in fields {
        let text = format!("{field}\n");
        h.push_str(&format!("{:03}  {text}", text.len()));
    }
    SpoolHeader::parse(h.as_bytes(), None).unwrap()
}

/// A short, ordinary message's header fields, dated now.
fn ordinary_fields(subject: &str) -> Vec<String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    vec![
        "From: Alice <alice@sender.example>".into(),
        "To: Bob <bob@dest.example>, Carol <carol@dest.example>".into(),
        format!("Subject: {subject}"),
        format!("Date: {}", rfc5322(now)),
        "Message-ID: <lunch.20261203.4711@sender.example>".into(),
        "MIME-Version: 1.0".into(),
        "Content-Type: text/plain; charset=us-ascii".into(),
    ]
}

const HAM: &[u8] = b"Hi Bob, hi Carol,\n\nLunch tomorrow at noon, at the usual place?\n\nAlice\n";

fn check(stage: &RspamdStage, fields: &[String], body: &[u8]) -> Result<StageResult, StageError> {
    let h = header(fields);
    let body = body.to_vec();
    stage.check(&MessageView::new(&h, &body))
}

fn detail<'a>(r: &'a StageResult, key: &str) -> &'a str {
    r.details.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key} in {r:?}"))
}

fn temporary(r: Result<StageResult, StageError>) -> String {
    match r {
        Err(StageError::Temporary(e)) => e,
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

#[test]
fn a_real_rspamd_gtube_ham_envelope_and_stopped() {
    let mut rspamd = Rspamd::start();
    let s = stage(&rspamd.url(), |_| {});
    assert_eq!(s.name(), "rspamd");

    let r = check(&s, &ordinary_fields("test"), format!("Here it is:\n\n{}\n", gtube()).as_bytes()).unwrap();
    assert_eq!(r.verdict, Verdict::Spam, "{r:?}");
    assert_eq!((detail(&r, "action"), detail(&r, "required")), ("reject", "15.00"));
    assert!(r.score.unwrap() >= 15.0, "{r:?}");
    let names: Vec<&str> = r.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["X-Spam-Score", "X-Spam-Status", "X-Rspamd-Action"]);
    let score = detail(&r, "score");
    assert_eq!((r.headers[0].1.as_str(), r.headers[2].1.as_str()), (score, "reject"));
    assert!(r.headers[1].1.starts_with(&format!("Yes, score={score} required=15.00 tests=")), "{r:?}");
    assert!(r.headers[1].1.split('=').next_back().unwrap().split(',').any(|t| t == "GTUBE"), "{r:?}");

    let r = check(&s, &ordinary_fields("Lunch"), HAM).unwrap();
    assert_eq!((r.verdict.clone(), detail(&r, "action")), (Verdict::Clean, "no action"), "{r:?}");
    assert!(r.score.unwrap() < 15.0, "{r:?}");
    let score = detail(&r, "score");
    assert!(r.headers[1].1.starts_with(&format!("No, score={score} required=15.00 tests=")), "{r:?}");

    // rspamd was told the envelope: its log line for the message names what we sent.
    let line = poll("rspamd's log line for the message", Duration::from_secs(10), || {
        rspamd
            .log()
            .lines()
            .find(|l| l.contains(&format!("qid: <{ID}>")) && l.contains("(no action)"))
            .map(String::from)
    });
    for part in [
        "ip: 192.0.2.10,",
        "user: alice,",
        "from: <alice@sender.example>,",
        "rcpts: <bob@dest.example,carol@dest.example>",
    ] {
        assert!(line.contains(part), "{part:?} in {line}");
    }

    rspamd.stop();
    let e = temporary(check(&s, &ordinary_fields("Lunch"), HAM));
    assert!(e.starts_with(&format!("rspamd {}/checkv2: ", rspamd.url())) && e.contains("Connection refused"), "{e}");
}

#[test]
fn nothing_listening_is_a_temporary_failure() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let e = temporary(check(&stage(&url, |_| {}), &ordinary_fields("Lunch"), HAM));
    assert!(e.starts_with(&format!("rspamd {url}/checkv2: ")) && e.contains("Connection refused"), "{e}");
}

/// A request as a fake rspamd read it: the head's lines and the body.
struct Request {
    head: Vec<String>,
    body: Vec<u8>,
}

/// What a fake rspamd answers, after reading the request.
#[derive(Clone, Copy)]
enum Fake {
    /// A status and a body, with a Content-Length.
    Reply(u16, &'static str),
    /// A 200 with this many bytes of body.
    Huge(usize),
    /// Say nothing, keep the connection open.
    Silent,
}

/// A fake rspamd on loopback: its URL, and each request it read.
fn fake(how: Fake) -> (String, mpsc::Receiver<Request>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let mut reader = BufReader::new(conn);
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_string());
            }
            let length = head
                .iter()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.parse().unwrap()))
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let _ = tx.send(Request { head, body });
            let mut conn = reader.into_inner();
            let respond = |conn: &mut std::net::TcpStream, status: u16, body: &[u8]| {
                let head =
                    format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            };
            match how {
                Fake::Reply(status, body) => respond(&mut conn, status, body.as_bytes()),
                Fake::Huge(n) => respond(&mut conn, 200, &vec![b' '; n]),
                Fake::Silent => held.push(conn),
            }
        }
    });
    (url, rx)
}

const GOOD: &str = r#"{"score":2.5,"required_score":15.0,"action":"no action","symbols":{"DATE_IN_PAST":{"score":1.0},"B":{"score":1.5}}}"#;

#[test]
fn the_request_carries_the_envelope_and_the_message_as_stored() {
    let (url, requests) = fake(Fake::Reply(200, GOOD));
    let s = stage(&url, |c| c.password = Some("s3cret".into()));
    let fields = vec!["From: alice@sender.example".to_string(), "Subject: hello".to_string()];
    let r = check(&s, &fields, b"Body line\r\nwith a CRLF and\na bare LF\n").unwrap();
    let req = requests.recv().unwrap();
    assert_eq!(req.head[0], "POST /checkv2 HTTP/1.1");
    let mut sent: Vec<&str> = req.head[1..]
        .iter()
        .map(String::as_str)
        .filter(|l| {
            !["host:", "user-agent:", "accept:", "accept-encoding:"]
                .iter()
                .any(|p| l.to_ascii_lowercase().starts_with(p))
        })
        .collect();
    sent.sort_unstable();
    let message = "From: alice@sender.example\nSubject: hello\n\nBody line\r\nwith a CRLF and\na bare LF\n";
    let length = format!("content-length: {}", message.len());
    let mut expected = vec![
        "From: alice@sender.example",
        "Helo: mx.sender.example",
        "Hostname: mx.sender.example",
        "IP: 192.0.2.10",
        "Queue-Id: 1xXORz-0000000058C-2p8L",
        "Rcpt: bob@dest.example",
        "Rcpt: carol@dest.example",
        "User: alice",
        "Password: s3cret",
        &length,
    ];
    expected.sort_unstable();
    assert_eq!(sent, expected);
    assert_eq!(String::from_utf8_lossy(&req.body), message);
    assert_eq!((r.verdict.clone(), r.score), (Verdict::Clean, Some(2.5)));
    assert_eq!(detail(&r, "symbols"), "B(1.50),DATE_IN_PAST(1.00)");
    assert_eq!(r.headers[1].1, "No, score=2.50 required=15.00 tests=B,DATE_IN_PAST");
}

#[test]
fn fake_servers_give_temporary_failures() {
    for (how, want) in [
        (Fake::Reply(500, "Internal error"), "rspamd answered HTTP 500 Internal Server Error: \"Internal error\""),
        (Fake::Reply(404, ""), "rspamd answered HTTP 404"),
        (Fake::Reply(200, "<html>hello</html>"), "reply is not rspamd's JSON"),
        (Fake::Reply(200, r#"{"score":1,"action":"reject"}"#), "missing field `required_score`"),
        (Fake::Reply(200, r#"{"score":1,"required_score":15,"action":"custom"}"#), "does not know: \"custom\""),
        (Fake::Huge(2 << 20), "rspamd: reply longer than 1048576 bytes"),
    ] {
        let (url, _requests) = fake(how);
        let e = temporary(check(&stage(&url, |_| {}), &ordinary_fields("Lunch"), HAM));
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }
}

#[test]
fn a_silent_rspamd_times_out_within_timeout_ms() {
    let (url, requests) = fake(Fake::Silent);
    let s = stage(&url, |c| c.timeout_ms = 500);
    let t = Instant::now();
    assert_eq!(temporary(check(&s, &ordinary_fields("Lunch"), HAM)), "rspamd: timed out after 500 ms");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "{took:?}");
    requests.recv_timeout(Duration::from_secs(5)).expect("the request arrived before the timeout");
}

#[test]
fn oversized_messages_are_skipped_without_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let s = stage(&url, |c| c.max_message_bytes = 100);
    let r = check(&s, &ordinary_fields("Big"), &[b'x'; 200]).unwrap();
    assert_eq!((r.verdict.clone(), r.score, r.headers.len()), (Verdict::Neutral, None, 0));
    assert!(
        detail(&r, "skipped").ends_with(" bytes, larger than max_message_bytes (100); not sent to rspamd"),
        "{r:?}"
    );
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "no connection");
}

#[test]
fn capture_then_replay_gives_the_same_result_without_rspamd() {
    let (url, _requests) = fake(Fake::Reply(200, GOOD));
    let book = Arc::new(AnswerBook::new());
    let record = Outside { answers: Answers::Record(Arc::clone(&book)), ..Outside::default() };
    let fields = ordinary_fields("Lunch");
    let live = check(&stage(&url, |_| {}).with_outside(record), &fields, HAM).unwrap();

    let dead = format!("http://127.0.0.1:{}", free_port());
    let replay = Outside { answers: Answers::Replay(Arc::clone(&book)), ..Outside::default() };
    let replayed = stage(&dead, |_| {}).with_outside(replay);
    assert_eq!(check(&replayed, &fields, HAM).unwrap(), live);
    let e = temporary(check(&replayed, &fields, b"Other body\n"));
    assert!(e.starts_with(&format!("replay: no recorded rspamd answer for message {ID}")), "{e}");
}
