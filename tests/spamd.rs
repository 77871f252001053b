//! The `spamd` stage against a real SpamAssassin spamd (scripts/spamd-test.sh: loopback, local
//! tests only), and against fake servers for the request's bytes and the failure modes.
//!
//! Needs spamd and spamc (scripts/install-test-deps.sh). The GTUBE string is built at run time
//! (`made::gtube()`); no file in the repository contains it.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use spoolsift::outside::clock::rfc5322;
use spoolsift::outside::{AnswerBook, Answers, Outside};
use spoolsift::spool::{MessageView, SpoolHeader};
use spoolsift::stages::spamd::{SpamdConfig, SpamdStage};
use spoolsift::stages::{Stage, StageError, StageResult, Verdict};

mod support;

use support::free_port;
use support::made::gtube;
use support::spamd::Spamd;

fn stage(address: &str, tweak: impl FnOnce(&mut SpamdConfig)) -> SpamdStage {
    let mut c = SpamdConfig {
        address: Some(address.to_string()),
        connect_timeout_ms: 1_000,
        timeout_ms: 20_000,
        ..SpamdConfig::default()
    };
    tweak(&mut c);
    SpamdStage::new(c).unwrap()
}

/// A spool header from alice to bob with these header fields.
fn header(fields: &[String]) -> SpoolHeader {
    let mut h = String::from(
        "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\n-ident root\n\
         -received_protocol esmtp\nXX\n1\nbob@dest.example\n\n",
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
        "To: Bob <bob@dest.example>".into(),
        format!("Subject: {subject}"),
        format!("Date: {}", rfc5322(now)),
        "Message-ID: <lunch.20261203.4711@sender.example>".into(),
    ]
}

const HAM: &[u8] = b"Hi Bob,\n\nLunch tomorrow at noon, at the usual place?\n\nAlice\n";

fn check(stage: &SpamdStage, fields: &[String], body: &[u8]) -> Result<StageResult, StageError> {
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

fn header_names(r: &StageResult) -> Vec<&str> {
    r.headers.iter().map(|(n, _)| n.as_str()).collect()
}

#[test]
fn gtube_is_spam_plain_mail_is_ham_and_a_stopped_spamd_defers() {
    let mut spamd = Spamd::start();
    let s = stage(&spamd.address(), |_| {});
    assert_eq!(s.name(), "spamd");

    let r = check(&s, &ordinary_fields("test"), format!("Here it is:\n\n{}\n", gtube()).as_bytes()).unwrap();
    assert_eq!(r.verdict, Verdict::Spam, "{r:?}");
    let score = r.score.unwrap();
    assert!(score >= 1000.0, "GTUBE scores 1000 and more: {score}");
    assert_eq!(detail(&r, "required"), "5.0");
    assert_eq!(detail(&r, "server"), format!("tcp:{}", spamd.address()));
    let tests = detail(&r, "tests");
    assert!(tests.split(',').any(|t| t == "GTUBE"), "{tests}");
    assert_eq!(header_names(&r), ["X-Spam-Score", "X-Spam-Status"]);
    assert_eq!(r.headers[0].1, detail(&r, "score"));
    assert_eq!(detail(&r, "score").parse::<f64>().unwrap(), score);
    assert_eq!(r.headers[1].1, format!("Yes, score={} required=5.0 tests={tests}", detail(&r, "score")));

    let r = check(&s, &ordinary_fields("Lunch"), HAM).unwrap();
    assert_eq!(r.verdict, Verdict::Clean, "{r:?}");
    assert!(r.score.unwrap() < 5.0, "{r:?}");
    assert!(r.headers[1].1.starts_with(&format!("No, score={} required=5.0 tests=", detail(&r, "score"))), "{r:?}");

    // A message of many write buffers (64 KiB) arrives whole: spamd checks the Content-length.
    let long_ham: Vec<u8> = HAM.iter().copied().cycle().take(300_000).collect();
    assert_eq!(check(&s, &ordinary_fields("Minutes"), &long_ham).unwrap().verdict, Verdict::Clean);

    // Without headers: the same verdict, nothing to add.
    let quiet = stage(&spamd.address(), |c| c.headers = false);
    let r = check(&quiet, &ordinary_fields("test"), gtube().as_bytes()).unwrap();
    assert_eq!((r.verdict.clone(), r.headers.len()), (Verdict::Spam, 0));

    spamd.stop();
    let e = temporary(check(&s, &ordinary_fields("Lunch"), HAM));
    assert!(e.starts_with(&format!("spamd connect to tcp:{}: ", spamd.address())), "{e}");
    assert!(e.contains("Connection refused"), "{e}");
}

#[test]
fn nothing_listening_is_a_temporary_failure() {
    let address = format!("127.0.0.1:{}", free_port());
    let e = temporary(check(&stage(&address, |_| {}), &ordinary_fields("Lunch"), HAM));
    assert_eq!(e, format!("spamd connect to tcp:{address}: Connection refused (os error 111)"));
}

/// What a fake spamd does with a connection, after reading the request to EOF.
#[derive(Clone, Copy)]
enum Fake {
    Reply(&'static [u8]),
    /// Reply this many bytes of `A`s after a valid head.
    Endless(usize),
    /// Read the request, then say nothing and keep the connection open.
    Silent,
}

/// A fake spamd on loopback: each request it read is sent to the receiver.
fn fake(how: Fake) -> (String, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut request = Vec::new();
            // The client half-closes after the message, as spamc does: EOF ends the request.
            if conn.read_to_end(&mut request).is_err() {
                continue;
            }
            let _ = tx.send(request);
            match how {
                Fake::Reply(bytes) => {
                    let _ = conn.write_all(bytes);
                }
                Fake::Endless(n) => {
                    let _ = conn.write_all(b"SPAMD/1.1 0 EX_OK\r\nSpam: True ; 9.0 / 5.0\r\n\r\n");
                    let _ = conn.write_all(&vec![b'A'; n]);
                }
                Fake::Silent => held.push(conn),
            }
        }
    });
    (address, rx)
}

const GOOD: &[u8] = b"SPAMD/1.1 0 EX_OK\r\nContent-length: 12\r\nSpam: False ; 1.3 / 5.0\r\n\r\nMISSING_DATE";

#[test]
fn the_request_is_the_symbols_command_and_the_message_as_stored() {
    let (address, requests) = fake(Fake::Reply(GOOD));
    let s = stage(&address, |c| c.user = Some("filter".into()));
    let fields = vec!["From: alice@sender.example".to_string(), "Subject: hello".to_string()];
    let r = check(&s, &fields, b"Body line\r\nwith a CRLF and\na bare LF\n").unwrap();
    let message = b"From: alice@sender.example\nSubject: hello\n\nBody line\r\nwith a CRLF and\na bare LF\n";
    let expected =
        [format!("SYMBOLS SPAMC/1.5\r\nContent-length: {}\r\nUser: filter\r\n\r\n", message.len()).as_bytes(), message]
            .concat();
    assert_eq!(String::from_utf8_lossy(&requests.recv().unwrap()), String::from_utf8_lossy(&expected));
    assert_eq!((r.verdict.clone(), r.score), (Verdict::Clean, Some(1.3)));
    assert_eq!(r.headers[1].1, "No, score=1.3 required=5.0 tests=MISSING_DATE");
}

#[test]
fn fake_servers_give_temporary_failures() {
    for (how, want) in [
        (Fake::Reply(b""), "connection closed without a reply"),
        (
            Fake::Reply(b"SPAMD/1.0 76 Bad header line: (Content-Length mismatch)\r\n"),
            "spamd answered 76 Bad header line",
        ),
        (Fake::Reply(b"SPAMD/1.0 69 Service Unavailable: Error fetching user preferences\r\n"), "spamd answered 69"),
        (Fake::Reply(b"220 mail.example ESMTP\r\n"), "not a spamd status line: \"220 mail.example ESMTP\""),
        (Fake::Reply(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\n\r\nGTUBE"), "reply has no Spam header"),
        (Fake::Reply(b"SPAMD/1.1 0 EX_OK\r\nContent-length: 90\r\nSpam: True ; 1 / 5\r\n\r\nAB"), "reply cut short"),
        (Fake::Endless(1 << 20), "spamd read: reply longer than 65536 bytes"),
    ] {
        let (address, _requests) = fake(how);
        let e = temporary(check(&stage(&address, |_| {}), &ordinary_fields("Lunch"), HAM));
        assert!(e.contains(want), "{e:?} should say {want:?}");
    }
}

#[test]
fn a_silent_spamd_times_out_within_timeout_ms() {
    let (address, requests) = fake(Fake::Silent);
    let s = stage(&address, |c| c.timeout_ms = 500);
    let t = Instant::now();
    assert_eq!(temporary(check(&s, &ordinary_fields("Lunch"), HAM)), "spamd: timed out after 500 ms");
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(500) && took < Duration::from_secs(3), "{took:?}");
    requests.recv_timeout(Duration::from_secs(5)).expect("the request arrived before the timeout");
    assert!(s.timeout() > Duration::from_millis(500), "the executor's timeout leaves the stage's first");
}

#[test]
fn oversized_messages_are_skipped_without_a_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let fields = ordinary_fields("Big");
    let h = header(&fields);
    let limit = MessageView::new(&h, &Vec::new()).len() + 1_000;
    let s = stage(&address, |c| c.max_message_bytes = limit);

    let over = vec![b'x'; 1_001];
    let r = check(&s, &fields, &over).unwrap();
    assert_eq!((r.verdict.clone(), r.score, r.headers.len()), (Verdict::Neutral, None, 0));
    assert_eq!(
        detail(&r, "skipped"),
        format!("{} bytes, larger than max_message_bytes ({limit}); not sent to spamd", limit + 1)
    );
    assert!(listener.accept().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock), "no connection");

    // At the limit exactly, it is sent.
    listener.set_nonblocking(false).unwrap();
    let server = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut request = Vec::new();
        conn.read_to_end(&mut request).unwrap();
        conn.write_all(GOOD).unwrap();
        request.len()
    });
    assert_eq!(check(&s, &fields, &over[..1_000]).unwrap().verdict, Verdict::Clean);
    let head = format!("SYMBOLS SPAMC/1.5\r\nContent-length: {limit}\r\n\r\n");
    assert_eq!(server.join().unwrap() as u64, head.len() as u64 + limit);
}

#[test]
fn capture_then_replay_gives_the_same_result_without_spamd() {
    let (address, _requests) = fake(Fake::Reply(GOOD));
    let book = Arc::new(AnswerBook::new());
    let record = Outside { answers: Answers::Record(Arc::clone(&book)), ..Outside::default() };
    let fields = ordinary_fields("Lunch");
    let live = check(&stage(&address, |_| {}).with_outside(record), &fields, HAM).unwrap();

    let dead = format!("127.0.0.1:{}", free_port());
    let replay = Outside { answers: Answers::Replay(Arc::clone(&book)), ..Outside::default() };
    let replayed = stage(&dead, |_| {}).with_outside(replay);
    assert_eq!(check(&replayed, &fields, HAM).unwrap(), live);
    // Another message is another request: not in the book, so not decided.
    let e = temporary(check(&replayed, &fields, b"Other body\n"));
    assert!(e.starts_with("replay: no recorded spamd answer for message 1xXORz-0000000058C-2p8L"), "{e}");
}

#[test]
fn a_refusal_before_the_message_is_read_keeps_spamds_words() {
    // spamd refuses a bad request as soon as it has read the head, and closes: the rest of a
    // large message then cannot be written, and the reply is behind that failure.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut head = [0u8; 40];
            let _ = conn.read_exact(&mut head);
            let _ = conn.write_all(b"SPAMD/1.0 76 Bad header line: (too many headers)\r\n");
        }
    });
    let s = stage(&address, |c| c.max_message_bytes = 64 << 20);
    let e = temporary(check(&s, &ordinary_fields("Big"), &vec![b'x'; 16 << 20]));
    assert_eq!(e, format!("spamd tcp:{address}: spamd answered 76 Bad header line: (too many headers)"));
}
