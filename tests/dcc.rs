//! The `dcc` stage against a dccifd double (tests/support/dccifd.rs) on a UNIX socket and on TCP:
//! the exact request bytes for spool copies with and without connection data, every reply letter,
//! folded headers, short per-recipient vectors, stalls, drops and refused connections.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use spoolsift::spool::options::host_address_ip as parse_host_address;
use spoolsift::spool::{MessageView, SpoolHeader};
use spoolsift::stages::dcc::{DccConfig, DccConfigError, DccStage};
use spoolsift::stages::{Stage, StageError, StageResult, Verdict};
use support::dccifd::{Double, Reply, HALF_CLOSE_WAIT};

const REMOTE: &str = "--helo_name client.example.net\n--host_address [192.0.2.10]:40000\n\
                      --host_name client.example.net\n-received_protocol esmtp\n";
const LOCAL: &str = "-ident alice\n-received_protocol local\n";
const OVERRIDE: &str = "--helo_name client.example.net\n--host_address [192.0.2.10]:40000\n\
                        --host_name client.example.net\n-aclm _dcc_override_client_ip 12\n198.51.100.7\n";

const FIELDS: &[(char, &str)] = &[
    (' ', "Received: from client.example.net ([192.0.2.10])\n\tby mx.example.org; Sat, 28 Nov 2026 10:00:00 +0000\n"),
    ('F', "From: Alice <alice@sender.example>\n"),
    ('*', "X-Deleted: not sent\n"),
    (' ', "Subject: hello\n"),
];
const LIVE_HEADERS: &str = "Received: from client.example.net ([192.0.2.10])\n\tby mx.example.org; Sat, 28 Nov 2026 \
                            10:00:00 +0000\nFrom: Alice <alice@sender.example>\nSubject: hello\n";
const BODY: &[u8] = b"Hello Bob,\n\nsecond paragraph.\n";

/// A `-H` with this sender (without brackets), option lines, tree line and recipients.
fn spool(sender: &str, options: &str, tree: &str, recipients: &[&str]) -> SpoolHeader {
    let mut h = format!("1xXORz-0000000058C-2p8L-H\nEximuser 93 93\n<{sender}>\n1795895471 0\n{options}{tree}\n");
    h.push_str(&format!("{}\n", recipients.len()));
    for r in recipients {
        h.push_str(&format!("{r}\n"));
    }
    h.push('\n');
    for (flag, text) in FIELDS {
        h.push_str(&format!("{:03}{flag} {text}", text.len()));
    }
    SpoolHeader::parse(h.as_bytes(), None).unwrap()
}

fn remote() -> SpoolHeader {
    spool("alice@sender.example", REMOTE, "XX", &["bob@dest.example", "carol@dest.example"])
}

fn config(address: &str) -> DccConfig {
    DccConfig { address: address.into(), timeout_ms: 3_000, ..DccConfig::default() }
}

fn stage(double: &Double) -> DccStage {
    DccStage::new(config(&double.address)).unwrap()
}

fn run(stage: &DccStage, h: &SpoolHeader, body: &[u8]) -> Result<StageResult, StageError> {
    let body = body.to_vec();
    stage.check(&MessageView::new(h, &body))
}

fn expected_request(envelope: &str) -> Vec<u8> {
    let mut v = envelope.as_bytes().to_vec();
    v.extend_from_slice(LIVE_HEADERS.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(BODY);
    v
}

const FULL_ENVELOPE: &str = "header grey-off\n192.0.2.10\rclient.example.net\nclient.example.net\n\
                             alice@sender.example\nbob@dest.example\ncarol@dest.example\n\n";

const OK_REPLY: &str = "A\nAA\nX-DCC-Test-Metrics: host 1; Body=1 Fuz1=2 Fuz2=many\n\n";

fn details(r: &StageResult) -> Vec<(&str, &str)> {
    r.details.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn temporary(r: Result<StageResult, StageError>) -> String {
    match r {
        Err(StageError::Temporary(why)) => why,
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

fn assert_accepted(r: &StageResult) {
    assert_eq!(r.verdict, Verdict::Clean);
    assert_eq!(r.headers, vec![("X-DCC-Test-Metrics".to_string(), "host 1; Body=1 Fuz1=2 Fuz2=many".to_string())]);
    assert_eq!(details(r), vec![("result", "A"), ("recipients", "AA"), ("body", "1"), ("fuz1", "2"), ("fuz2", "many")]);
}

#[test]
fn remote_message_exact_request_over_unix_socket() {
    let d = Double::unix(Reply::text(OK_REPLY));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert_eq!(d.only_request().escape_ascii().to_string(), expected_request(FULL_ENVELOPE).escape_ascii().to_string());
    assert_accepted(&r);
}

#[test]
fn remote_message_exact_request_over_tcp() {
    let d = Double::tcp(Reply::text(OK_REPLY));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert_eq!(d.only_request(), expected_request(FULL_ENVELOPE));
    assert_accepted(&r);
}

#[test]
fn local_message_sends_an_empty_client_line_and_an_empty_helo() {
    let d = Double::unix(Reply::text("A\nA\n\n"));
    let h = spool("alice@mx.example.org", LOCAL, "XX", &["bob@dest.example"]);
    let r = run(&stage(&d), &h, BODY).unwrap();
    let env = "header grey-off\n\n\nalice@mx.example.org\nbob@dest.example\n\n";
    assert_eq!(d.only_request(), expected_request(env));
    assert_eq!(r.verdict, Verdict::Clean);
    assert!(r.headers.is_empty());
}

#[test]
fn override_acl_variable_replaces_the_client_ip_and_drops_the_name() {
    let d = Double::tcp(Reply::text(OK_REPLY));
    let h = spool("alice@sender.example", OVERRIDE, "XX", &["bob@dest.example"]);
    run(&stage(&d), &h, BODY).unwrap();
    let env = "header grey-off\n198.51.100.7\nclient.example.net\nalice@sender.example\nbob@dest.example\n\n";
    assert_eq!(d.only_request(), expected_request(env));
}

#[test]
fn bounce_sends_the_null_sender_as_angle_brackets() {
    let d = Double::unix(Reply::text("A\nA\n\n"));
    let h = spool("", REMOTE, "XX", &["bob@dest.example"]);
    run(&stage(&d), &h, BODY).unwrap();
    let env = "header grey-off\n192.0.2.10\rclient.example.net\nclient.example.net\n<>\nbob@dest.example\n\n";
    assert_eq!(d.only_request(), expected_request(env));
}

#[test]
fn only_pending_recipients_are_sent() {
    let d = Double::unix(Reply::text("A\nA\n\n"));
    let h = spool("alice@sender.example", REMOTE, "NN bob@dest.example", &["bob@dest.example", "carol@dest.example"]);
    let r = run(&stage(&d), &h, BODY).unwrap();
    let env = "header grey-off\n192.0.2.10\rclient.example.net\nclient.example.net\nalice@sender.example\n\
               carol@dest.example\n\n";
    assert_eq!(d.only_request(), expected_request(env));
    assert_eq!(details(&r), vec![("result", "A"), ("recipients", "A")]);
}

#[test]
fn configured_options_are_sent_normalised() {
    let d = Double::unix(Reply::text("A\nAA\n\n"));
    let s = DccStage::new(DccConfig { options: "  header\tgrey-off  log ".into(), ..config(&d.address) }).unwrap();
    run(&s, &remote(), BODY).unwrap();
    assert!(d.only_request().starts_with(b"header grey-off log\n192.0.2.10\r"));
}

#[test]
fn a_large_body_is_streamed_whole() {
    let d = Double::unix(Reply::text("A\nAA\n\n"));
    let body: Vec<u8> = (0..200_000).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
    run(&stage(&d), &remote(), &body).unwrap();
    let req = d.only_request();
    let mut expected = FULL_ENVELOPE.as_bytes().to_vec();
    expected.extend_from_slice(LIVE_HEADERS.as_bytes());
    expected.push(b'\n');
    expected.extend_from_slice(&body);
    assert_eq!(req.len(), expected.len());
    assert!(req == expected);
}

#[test]
fn reject_is_spam_with_the_header() {
    let d = Double::tcp(Reply::text("R\nRR\nX-DCC-brand-Metrics: clientname 0; bulk Body=many\n\n"));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert_eq!(r.verdict, Verdict::Spam);
    assert_eq!(r.headers, vec![("X-DCC-brand-Metrics".into(), "clientname 0; bulk Body=many".into())]);
    assert_eq!(details(&r), vec![("result", "R"), ("recipients", "RR"), ("body", "many")]);
}

#[test]
fn obsolete_some_recipients_letter_is_clean() {
    let d = Double::unix(Reply::text("S\nAR\nX-DCC-UofM-Metrics: electra 1032; Body=1\n\n"));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert_eq!(r.verdict, Verdict::Clean);
    assert_eq!(r.headers, vec![("X-DCC-UofM-Metrics".into(), "electra 1032; Body=1".into())]);
    assert_eq!(details(&r), vec![("result", "S"), ("recipients", "AR"), ("body", "1")]);
}

#[test]
fn greylist_answer_is_a_temporary_failure() {
    let d = Double::unix(Reply::text("G\nGG\nX-DCC-Test-Metrics: host 1; Body=1\n\n"));
    let why = temporary(run(&stage(&d), &remote(), BODY));
    assert_eq!(why, "dccifd answered G (greylist) although grey-off should prevent it");
    assert!(d.only_request().starts_with(b"header grey-off\n"));
}

#[test]
fn dcc_temporary_failure_letter() {
    let d = Double::tcp(Reply::text("T\nTT\n\n"));
    let why = temporary(run(&stage(&d), &remote(), BODY));
    assert_eq!(why, "dccifd answered T (temporary failure of the DCC system)");
}

#[test]
fn unknown_letter_is_a_temporary_failure() {
    let d = Double::unix(Reply::text("Q\nQQ\n\n"));
    assert_eq!(temporary(run(&stage(&d), &remote(), BODY)), "dccifd answered an unknown result \"Q\"");
    let d = Double::unix(Reply::Bytes(b"\x1b[2J\nAA\n\n".to_vec()));
    assert_eq!(temporary(run(&stage(&d), &remote(), BODY)), "dccifd answered an unknown result \"\\x1b[2J\"");
}

#[test]
fn folded_header_is_unfolded_with_one_space() {
    let reply = "A\nAA\nX-DCC-Folded-Metrics: mx.example.org 1066;\n\tBody=1 Fuz1=1\n\tFuz2=3 rep=40%\n\n";
    let d = Double::tcp(Reply::text(reply));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert_eq!(
        r.headers,
        vec![("X-DCC-Folded-Metrics".into(), "mx.example.org 1066; Body=1 Fuz1=1 Fuz2=3 rep=40%".into())]
    );
    assert_eq!(
        details(&r),
        vec![("result", "A"), ("recipients", "AA"), ("body", "1"), ("fuz1", "1"), ("fuz2", "3"), ("rep", "40%")]
    );
}

#[test]
fn checksum_lines_after_the_header_are_not_part_of_it() {
    let reply = "A\nAA\nX-DCC-Test-Metrics: host 1; Body=1\nreported: 1  checksum  server\nBody: 1234\n\n";
    let d = Double::unix(Reply::text(reply));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert_eq!(r.headers, vec![("X-DCC-Test-Metrics".into(), "host 1; Body=1".into())]);
}

#[test]
fn header_is_sanitised_and_bounded() {
    let reply = b"A\nAA\nX-DCC-Test-Metrics: host\x001;\x07 Body=1\r\n\t  Fuz1=22222222222222222222\n\n";
    let d = Double::unix(Reply::Bytes(reply.to_vec()));
    let s = DccStage::new(DccConfig { max_header_bytes: 25, ..config(&d.address) }).unwrap();
    let r = run(&s, &remote(), BODY).unwrap();
    assert_eq!(r.headers, vec![("X-DCC-Test-Metrics".into(), "host 1; Body=1 Fuz1=22222".into())]);
    let (_, value) = &r.headers[0];
    assert!(value.len() <= 25 && !value.bytes().any(|b| b.is_ascii_control()));
}

#[test]
fn header_with_a_bad_name_is_dropped() {
    let d = Double::unix(Reply::text("A\nAA\nX-DCC Bad Name: x\n\n"));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert!(r.headers.is_empty());
    assert_eq!(r.verdict, Verdict::Clean);
}

#[test]
fn short_recipient_vector_is_reported_not_fatal() {
    let d = Double::unix(Reply::text("R\nR\nX-DCC-Test-Metrics: host 1; bulk Body=many\n\n"));
    let r = run(&stage(&d), &remote(), BODY).unwrap();
    assert_eq!(r.verdict, Verdict::Spam);
    assert_eq!(details(&r), vec![("result", "R"), ("recipients", "R"), ("recipients_expected", "2"), ("body", "many")]);
}

#[test]
fn incomplete_replies_are_temporary_failures() {
    for (reply, why) in [
        ("A", "dccifd reply has no complete result line"),
        ("A\n", "dccifd reply has no per-recipient line"),
        ("A\nAA", "dccifd reply has no per-recipient line"),
    ] {
        let d = Double::unix(Reply::text(reply));
        assert_eq!(temporary(run(&stage(&d), &remote(), BODY)), why, "reply {reply:?}");
    }
}

#[test]
fn drop_without_reply_is_a_temporary_failure() {
    for d in [Double::unix(Reply::Drop), Double::tcp(Reply::Drop)] {
        let why = temporary(run(&stage(&d), &remote(), BODY));
        assert_eq!(why, "dccifd closed the connection without a reply");
        assert_eq!(d.only_request(), expected_request(FULL_ENVELOPE));
    }
}

#[test]
fn stall_times_out_within_the_configured_bound() {
    for d in [Double::unix(Reply::Stall), Double::tcp(Reply::Stall)] {
        let s = DccStage::new(DccConfig { timeout_ms: 300, ..config(&d.address) }).unwrap();
        let start = Instant::now();
        let why = temporary(run(&s, &remote(), BODY));
        let elapsed = start.elapsed();
        assert!(why.contains("timed out after 300 ms"), "{why}");
        assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(300 + 700), "{elapsed:?}");
        // It got the whole request, half-closed, before it stalled.
        assert_eq!(d.only_request(), expected_request(FULL_ENVELOPE));
    }
}

/// With one connection allowed, a second check does not reach dccifd while the first one is
/// stalled there: it waits for the first to time out (or gives up waiting), so a slow dccifd
/// slows this stage, not the host.
#[test]
fn connections_to_dccifd_are_bounded() {
    let d = Double::unix(Reply::Stall);
    let s = std::sync::Arc::new(
        DccStage::new(DccConfig { timeout_ms: 1500, max_connections: 1, ..config(&d.address) }).unwrap(),
    );
    let checks: Vec<_> = (0..2)
        .map(|_| {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || temporary(run(&s, &remote(), BODY)))
        })
        .collect();
    let whys: Vec<String> = checks.into_iter().map(|t| t.join().unwrap()).collect();
    let requests = d.requests();
    assert!(!requests.is_empty() && requests.len() <= 2, "{}", requests.len());
    if let [first, second] = &requests[..] {
        // The second connected only once the first had given up (after its 1.5 s), never at once.
        assert!(second.at.duration_since(first.at) >= Duration::from_millis(1000), "{:?}", second.at - first.at);
    }
    assert!(whys.iter().any(|w| w.contains("timed out after 1500 ms")), "{whys:?}");
    assert!(
        whys.iter().all(|w| w.contains("timed out after 1500 ms") || w == "dccifd: all 1 connections busy for 1500 ms"),
        "{whys:?}"
    );
}

#[test]
fn refused_connections_are_temporary_failures() {
    let dir = tempfile::tempdir().unwrap();
    let missing = format!("unix:{}", dir.path().join("no-dccifd").display());
    let why = temporary(run(&DccStage::new(config(&missing)).unwrap(), &remote(), BODY));
    assert!(why.starts_with(&format!("dccifd connect to {missing}: ")), "{why}");

    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("tcp:127.0.0.1:{port}");
    let why = temporary(run(&DccStage::new(config(&addr)).unwrap(), &remote(), BODY));
    assert!(why.starts_with(&format!("dccifd connect to {addr}: ")) && why.contains("refused"), "{why}");
}

#[test]
fn the_double_answers_only_after_a_half_close() {
    // The stage's tests rely on this: a client that keeps its write side open gets no answer.
    let d = Double::unix(Reply::text(OK_REPLY));
    let path = d.address.strip_prefix("unix:").unwrap();
    let mut c = UnixStream::connect(path).unwrap();
    c.write_all(b"header\n\n\n<>\n\nSubject: x\n\nbody\n").unwrap();
    c.set_read_timeout(Some(HALF_CLOSE_WAIT + Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).unwrap();
    assert!(got.is_empty());
    let reqs = d.requests();
    assert_eq!(reqs.len(), 1);
    assert!(!reqs[0].half_closed);
}

#[test]
fn host_address_forms() {
    let ip = |s: &str| parse_host_address(s.as_bytes());
    assert_eq!(ip("[192.0.2.10]:40000"), Some("192.0.2.10".parse::<IpAddr>().unwrap()));
    assert_eq!(ip("[2001:db8::1]:25"), Some("2001:db8::1".parse::<IpAddr>().unwrap()));
    assert_eq!(ip("192.0.2.10.40000"), Some("192.0.2.10".parse::<IpAddr>().unwrap()));
    assert_eq!(ip("2001:db8::1.25"), Some("2001:db8::1".parse::<IpAddr>().unwrap()));
    assert_eq!(ip("192.0.2.10"), Some("192.0.2.10".parse::<IpAddr>().unwrap()));
    assert_eq!(ip("not an address"), None);
    assert_eq!(ip("[192.0.2.10"), None);
}

#[test]
fn unparsable_host_address_falls_back_to_an_empty_client_line() {
    let d = Double::unix(Reply::text("A\nA\n\n"));
    let h = spool("a@b.example", "--host_address garbage\n--host_name x.example\n", "XX", &["bob@dest.example"]);
    run(&stage(&d), &h, BODY).unwrap();
    assert_eq!(d.only_request(), expected_request("header grey-off\n\n\na@b.example\nbob@dest.example\n\n"));
}

#[test]
fn config_from_toml_and_its_errors() {
    let c: DccConfig = toml::from_str("address = \"tcp:dcc.example:10045\"\ntimeout_ms = 7000\n").unwrap();
    assert_eq!(c.options, "header grey-off");
    assert_eq!(c.max_header_bytes, 1024);
    let s = DccStage::new(c).unwrap();
    assert_eq!(s.name(), "dcc");
    assert_eq!(s.timeout(), Duration::from_millis(5_000 + 7_000 + 1_000));
    assert!(toml::from_str::<DccConfig>("adress = \"unix:/x\"\n").is_err());

    let bad = |c: DccConfig| DccStage::new(c).unwrap_err();
    for a in ["/var/dcc/dccifd", "unix:", "tcp:host", "tcp::10045", "tcp:host:0", "tcp:host:99999"] {
        assert_eq!(bad(config(a)), DccConfigError::Address(a.into()));
    }
    assert_eq!(
        bad(DccConfig { options: "header greyoff".into(), ..config("unix:/x") }),
        DccConfigError::Option("greyoff".into())
    );
    assert_eq!(bad(DccConfig { options: "body".into(), ..config("unix:/x") }), DccConfigError::Option("body".into()));
    assert_eq!(bad(DccConfig { timeout_ms: 0, ..config("unix:/x") }), DccConfigError::Zero("timeout_ms"));
    assert_eq!(bad(DccConfig { max_header_bytes: 0, ..config("unix:/x") }), DccConfigError::Zero("max_header_bytes"));
    assert_eq!(bad(DccConfig { max_connections: 0, ..config("unix:/x") }), DccConfigError::Zero("max_connections"));
}
