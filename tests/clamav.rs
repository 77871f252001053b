//! The `clamav` stage against a real clamd (started per test by scripts/clamd-test.sh with a
//! signature DB written at run time), and against fake servers for the failure modes.
//!
//! Needs clamd and clamdscan (scripts/install-test-deps.sh). The EICAR string is built at run
//! time (`eicar::signature()`); no file in the repository contains it.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use spoolsift::spool::{DataFile, MessageView, SpoolHeader};
use spoolsift::stages::clamav::{ClamavConfig, ClamavStage};
use spoolsift::stages::content::eicar;
use spoolsift::stages::{Stage, StageError, StageResult, Verdict};

/// Connections kept between scans (`zIDSESSION`).
#[path = "clamav/sessions.rs"]
mod sessions;
mod support;

use support::clamd::Clamd;
use support::free_port;
use support::made::stored_zip;

/// What clamd reports for our `.ndb` signature over the test string.
const SIG: &str = "Spoolsift.Test.Eicar.UNOFFICIAL";

fn stage(servers: &[String], tweak: impl FnOnce(&mut ClamavConfig)) -> ClamavStage {
    let mut c = ClamavConfig {
        servers: servers.to_vec(),
        connect_timeout_ms: 1_000,
        write_timeout_ms: 2_000,
        read_timeout_ms: 5_000,
        queue_timeout_ms: 2_000,
        retry_down_after_ms: 50,
        ..ClamavConfig::default()
    };
    tweak(&mut c);
    ClamavStage::new(c).unwrap()
}

fn header() -> SpoolHeader {
    let mut h = String::from(
        "1xXORz-0000000058C-2p8L-H\nroot 0 0\n<alice@sender.example>\n1795895471 0\n-ident root\n\
         -received_protocol esmtp\nXX\n1\nbob@dest.example\n\n",
    );
    for field in ["From: alice@sender.example", "To: bob@dest.example", "Subject: test", "MIME-Version: 1.0"] {
        let text = format!("{field}\n");
        h.push_str(&format!("{:03}  {text}", text.len()));
    }
    SpoolHeader::parse(h.as_bytes(), None).unwrap()
}

fn check(stage: &ClamavStage, body: &[u8]) -> Result<StageResult, StageError> {
    let h = header();
    let body = body.to_vec();
    stage.check(&MessageView::new(&h, &body))
}

fn verdict(stage: &ClamavStage, body: &[u8]) -> Verdict {
    check(stage, body).unwrap().verdict
}

fn infected() -> Verdict {
    Verdict::Infected { name: SIG.into() }
}

fn detail<'a>(r: &'a StageResult, key: &str) -> &'a str {
    r.details.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or_else(|| panic!("no {key}"))
}

fn temporary(r: Result<StageResult, StageError>) -> String {
    match r {
        Err(StageError::Temporary(e)) => e,
        other => panic!("expected a temporary failure, got {other:?}"),
    }
}

const CLEAN: &[u8] = b"Hello Bob.\nNothing to see here.\n";

fn eicar_body() -> Vec<u8> {
    [b"Test file follows:\n\n".as_slice(), &eicar::signature(), b"\n\nBye.\n"].concat()
}

fn zip_mail() -> Vec<u8> {
    let zip = stored_zip("readme.com", &eicar::signature());
    let zip64 = support::base64(&zip, Some(76));
    // The raw test string must not be in the mail itself, only inside the encoded archive.
    assert!(!zip64.as_bytes().windows(68).any(|w| w == eicar::signature()));
    format!(
        "Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain\n\nSee attached.\n\
         --b1\nContent-Type: application/zip; name=\"files.zip\"\nContent-Transfer-Encoding: base64\n\
         Content-Disposition: attachment; filename=\"files.zip\"\n\n{zip64}\n--b1--\n"
    )
    .into_bytes()
}

#[test]
fn clean_and_infected_over_unix_and_tcp() {
    let clamd = Clamd::start("25M");
    for server in [clamd.unix(), clamd.tcp()] {
        let s = stage(std::slice::from_ref(&server), |_| {});
        assert_eq!(s.name(), "clamav");
        let r = check(&s, CLEAN).unwrap();
        assert_eq!(r.verdict, Verdict::Clean);
        assert_eq!((detail(&r, "server"), detail(&r, "reply")), (server.as_str(), "stream: OK"));
        detail(&r, "elapsed_ms").parse::<u64>().unwrap();

        let r = check(&s, &eicar_body()).unwrap();
        assert_eq!(r.verdict, infected(), "{server}");
        assert_eq!(detail(&r, "reply"), format!("stream: {SIG} FOUND"));

        assert_eq!(verdict(&s, &zip_mail()), infected(), "zip attachment over {server}");
        // Empty body, and a body spanning many chunks with the string in the last one.
        assert_eq!(verdict(&s, b""), Verdict::Clean);
        let mut big = b"line of text\n".repeat(30_000);
        assert_eq!(verdict(&s, &big), Verdict::Clean);
        big.extend(eicar_body());
        assert_eq!(verdict(&s, &big), infected());
    }
}

#[test]
fn failover_skips_a_dead_server_and_round_robins_over_live_ones() {
    let clamd = Clamd::start("25M");
    let dead_unix = "unix:/nonexistent/spoolsift/clamd.sock".to_string();
    let dead_tcp = format!("tcp:127.0.0.1:{}", free_port());
    let s = stage(&[dead_unix.clone(), clamd.unix(), dead_tcp, clamd.tcp()], |c| c.retry_down_after_ms = 60_000);
    let mut used = Vec::new();
    for _ in 0..8 {
        let r = check(&s, &eicar_body()).unwrap();
        assert_eq!(r.verdict, infected());
        used.push(detail(&r, "server").to_string());
    }
    assert!(used.iter().all(|u| *u == clamd.unix() || *u == clamd.tcp()), "{used:?}");
    assert!(used.contains(&clamd.unix()) && used.contains(&clamd.tcp()), "{used:?}");

    // All dead: a temporary failure naming each server's reason, quickly.
    let s = stage(std::slice::from_ref(&dead_unix), |_| {});
    let e = temporary(check(&s, CLEAN));
    assert_eq!(e, format!("clamd unavailable: {dead_unix}: connect: No such file or directory (os error 2)"));
}

#[test]
fn clamd_stopped_then_restarted_recovers() {
    let mut clamd = Clamd::start("25M");
    let s = stage(&[clamd.unix()], |c| c.retry_down_after_ms = 100);
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
    clamd.stop();
    let e = temporary(check(&s, CLEAN));
    assert!(e.starts_with(&format!("clamd unavailable: {}: connect: ", clamd.unix())), "{e}");
    // Marked down: further checks fail at once, or with the failed health check once due.
    let e = temporary(check(&s, &eicar_body()));
    assert!(e.contains("marked down") || e.contains("health check"), "{e}");

    clamd.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match check(&s, &eicar_body()) {
            Ok(r) => {
                assert_eq!(r.verdict, infected());
                break;
            }
            Err(StageError::Temporary(e)) => assert!(Instant::now() < deadline, "no recovery: {e}"),
            Err(e) => panic!("{e:?}"),
        }
        thread::yield_now();
    }
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
}

#[test]
fn oversize_streams_are_permanent_failures() {
    let clamd = Clamd::start("1M");
    let s = stage(&[clamd.unix()], |_| {});
    let h = header();
    // Exactly clamd's limit, counted as stored (the headers, the blank line, the body), is
    // accepted; one byte more is not.
    let head_len = MessageView::new(&h, &Vec::new()).head().len();
    let body = vec![b'a'; (1 << 20) - head_len];
    assert_eq!(verdict(&s, &body), Verdict::Clean);
    let mut more = body.clone();
    more.push(b'a');
    let e = check(&s, &more).unwrap_err();
    assert_eq!(
        e,
        StageError::Permanent(
            "message larger than StreamMaxLength (clamd: INSTREAM size limit exceeded. ERROR)".into()
        )
    );
    let e = check(&s, &vec![b'x'; 3 << 20]).unwrap_err();
    assert_eq!(
        e,
        StageError::Permanent(
            "message larger than StreamMaxLength (clamd: INSTREAM size limit exceeded. ERROR)".into()
        )
    );
    // clamd still serves afterwards.
    assert_eq!(verdict(&s, &eicar_body()), infected());

    // Our own limit: a stored length above it is refused without contacting any server (this one
    // does not exist). A body of bare LFs is counted as stored: newlines are sent as they are, so
    // a message of exactly the limit goes whole.
    let s = stage(&["unix:/nonexistent/clamd.sock".into()], |c| c.stream_max_length = 1000);
    let h_len = MessageView::new(&h, &Vec::new()).len();
    assert_eq!(
        check(&s, &vec![b'a'; 1001]).unwrap_err(),
        StageError::Permanent(format!("message larger than StreamMaxLength ({} > 1000 bytes)", h_len + 1001))
    );
    let s = stage(&[clamd.unix()], |c| c.stream_max_length = 1000);
    let lf_body = b"\n".repeat(1000 - h_len as usize);
    assert_eq!(verdict(&s, &lf_body), Verdict::Clean);
    let mut over = lf_body.clone();
    over.push(b'\n');
    assert_eq!(
        check(&s, &over).unwrap_err(),
        StageError::Permanent("message larger than StreamMaxLength (1001 > 1000 bytes)".into())
    );
}

/// A `-D` file in `dir` holding `body`, opened as the engine opens it.
fn data_file(dir: &Path, h: &SpoolHeader, body: &[u8]) -> DataFile {
    let path = dir.join(format!("{}-D", h.id));
    std::fs::write(&path, [format!("{}-D\n", h.id).as_bytes(), body].concat()).unwrap();
    DataFile::open(&path, &h.id).unwrap()
}

#[test]
fn a_body_in_its_data_file_goes_to_clamd_as_stored_in_two_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("recording.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // The fake answers clean after reading the whole stream, and hands back every chunk.
    let recorder = thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut cmd = [0u8; 10];
        conn.read_exact(&mut cmd).unwrap();
        assert_eq!(&cmd, b"zINSTREAM\0");
        let mut chunks = Vec::new();
        loop {
            let mut len = [0u8; 4];
            conn.read_exact(&mut len).unwrap();
            let mut chunk = vec![0u8; u32::from_be_bytes(len) as usize];
            conn.read_exact(&mut chunk).unwrap();
            if chunk.is_empty() {
                break;
            }
            chunks.push(chunk);
        }
        conn.write_all(b"stream: OK\0").unwrap();
        chunks
    });
    let s = stage(&[format!("unix:{}", path.display())], |c| c.session_idle_ms = 0);
    let h = header();
    // Bare LFs, a CRLF and 3 MiB: far more than one write or one 64 KiB chunk.
    let mut body = b"first line\nsecond line\r\n".to_vec();
    body.extend((0..3 << 20).map(|i| if i % 77 == 76 { b'\n' } else { b'a' + (i % 26) as u8 }));
    let data = data_file(dir.path(), &h, &body);
    let r = s.check(&MessageView::new(&h, &data)).unwrap();
    assert_eq!(r.verdict, Verdict::Clean);
    let chunks = recorder.join().unwrap();
    let head = b"From: alice@sender.example\nTo: bob@dest.example\nSubject: test\nMIME-Version: 1.0\n\n";
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[0], head);
    assert!(
        chunks[1] == body,
        "the body chunk differs from the -D body ({} bytes, want {})",
        chunks[1].len(),
        body.len()
    );
}

#[test]
fn a_data_file_is_scanned_from_the_file_and_one_cut_short_fails_without_blaming_clamd() {
    let clamd = Clamd::start("25M");
    let dir = tempfile::tempdir().unwrap();
    // A long retry: a server marked down would fail the next check at once.
    let s = stage(&[clamd.unix()], |c| c.retry_down_after_ms = 600_000);
    let h = header();
    let data = data_file(dir.path(), &h, &eicar_body());
    assert_eq!(s.check(&MessageView::new(&h, &data)).unwrap().verdict, infected());
    let data = data_file(dir.path(), &h, &[CLEAN.repeat(5_000).as_slice(), &eicar_body()].concat());
    assert_eq!(s.check(&MessageView::new(&h, &data)).unwrap().verdict, infected());
    let data = data_file(dir.path(), &h, CLEAN);
    assert_eq!(s.check(&MessageView::new(&h, &data)).unwrap().verdict, Verdict::Clean);

    // The file shrinks after it was opened: fewer bytes than promised to clamd.
    let data = data_file(dir.path(), &h, &CLEAN.repeat(1_000));
    std::fs::OpenOptions::new().write(true).open(dir.path().join(format!("{}-D", h.id))).unwrap().set_len(100).unwrap();
    assert_eq!(temporary(s.check(&MessageView::new(&h, &data))), "reading the message: the file ended early");
    // clamd was not marked down for it.
    let data = data_file(dir.path(), &h, &eicar_body());
    assert_eq!(s.check(&MessageView::new(&h, &data)).unwrap().verdict, infected());
}

/// How a fake clamd behaves once it has accepted a connection.
#[derive(Clone, Copy)]
enum Fake {
    /// Reads the whole INSTREAM request, then sends these bytes and closes.
    Reply(&'static [u8]),
    /// Closes at once.
    Close,
    /// Reads the request and then never answers (keeps the connection until the test ends).
    Silent,
}

/// A fake clamd on a UNIX socket; reports each accepted connection on the channel.
fn fake(dir: &Path, how: Fake) -> (String, mpsc::Receiver<()>) {
    let path: PathBuf = dir.join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let _ = tx.send(());
            match how {
                Fake::Close => drop(conn),
                Fake::Reply(bytes) => {
                    if read_request(&mut conn).is_ok() {
                        let _ = conn.write_all(bytes);
                    }
                }
                Fake::Silent => {
                    let _ = read_request(&mut conn);
                    held.push(conn);
                }
            }
        }
    });
    (format!("unix:{}", path.display()), rx)
}

fn read_request(conn: &mut impl Read) -> std::io::Result<()> {
    let mut cmd = [0u8; 10];
    conn.read_exact(&mut cmd)?;
    assert_eq!(&cmd, b"zINSTREAM\0");
    loop {
        let mut len = [0u8; 4];
        conn.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as u64;
        if len == 0 {
            return Ok(());
        }
        std::io::copy(&mut conn.take(len), &mut std::io::sink())?;
    }
}

#[test]
fn fake_servers_give_temporary_failures() {
    let cases: [(Fake, &str); 6] = [
        (Fake::Reply(b"Hello there\0"), "unexpected reply from clamd: \"Hello there\""),
        (Fake::Reply(b"stream: OK"), "clamd unavailable: {S}: reply not NUL-terminated: \"stream: OK\""),
        (Fake::Reply(b""), "clamd unavailable: {S}: connection closed without a reply"),
        (Fake::Reply(b"stream: Can't allocate memory ERROR\0"), "clamd error: stream: Can't allocate memory ERROR"),
        (Fake::Reply(b"stream: \xff FOUND\0"), "clamd unavailable: {S}: reply not UTF-8: [115, 116, 114, 101, 97, 109, 58, 32, 255, 32, 70, 79, 85, 78, 68]"),
        (Fake::Close, "connection closed without a reply"),
    ];
    for (how, want) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (server, _accepts) = fake(dir.path(), how);
        let s = stage(std::slice::from_ref(&server), |c| c.session_idle_ms = 0);
        let e = temporary(check(&s, CLEAN));
        let want = want.replace("{S}", &server);
        if matches!(how, Fake::Close) {
            // Depending on timing the write sees EPIPE first, and the read EOF or ECONNRESET.
            let ok = e.ends_with(&want) || e.ends_with("reading the reply: Connection reset by peer (os error 104)");
            assert!(e.starts_with(&format!("clamd unavailable: {server}: ")) && ok, "{e}");
        } else {
            assert_eq!(e, want);
        }
    }
}

#[test]
fn a_silent_server_times_out_and_connections_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (server, accepts) = fake(dir.path(), Fake::Silent);
    let s = stage(std::slice::from_ref(&server), |c| {
        c.read_timeout_ms = 400;
        c.max_connections_per_server = 1;
        c.queue_timeout_ms = 100;
        c.session_idle_ms = 0;
    });
    let t = Instant::now();
    assert_eq!(temporary(check(&s, CLEAN)), format!("clamd unavailable: {server}: timed out waiting for the reply"));
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400) && took < Duration::from_secs(3), "{took:?}");
    accepts.recv().unwrap();

    // One connection per server: while one check waits on the silent server, another gets none.
    let s = stage(std::slice::from_ref(&server), |c| {
        c.read_timeout_ms = 1_000;
        c.max_connections_per_server = 1;
        c.queue_timeout_ms = 100;
        c.retry_down_after_ms = 0;
        c.session_idle_ms = 0;
    });
    thread::scope(|scope| {
        let first = scope.spawn(|| check(&s, CLEAN));
        accepts.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(temporary(check(&s, CLEAN)), format!("clamd unavailable: {server}: all connections busy"));
        assert_eq!(
            temporary(first.join().unwrap()),
            format!("clamd unavailable: {server}: timed out waiting for the reply")
        );
    });
}

#[test]
fn concurrent_checks_share_a_bounded_pool() {
    let clamd = Clamd::start("25M");
    let s = stage(&[clamd.unix(), clamd.tcp()], |c| c.max_connections_per_server = 2);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    if i % 3 == 0 {
                        verdict(s, &eicar_body()) == infected()
                    } else {
                        verdict(s, CLEAN) == Verdict::Clean
                    }
                })
            })
            .collect();
        assert!(handles.into_iter().all(|h| h.join().unwrap()));
    });
}
