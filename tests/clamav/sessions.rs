//! The clamav stage's kept connections (`zIDSESSION`), against the real clamd through a relay
//! that counts connections, and against fakes for what a real clamd does only at its limits.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use spoolsift::stages::{StageError, Verdict};

use super::{check, detail, eicar_body, infected, read_request, stage, temporary, verdict, Clamd, CLEAN};

/// A UNIX-socket relay in front of a clamd that counts the connections made through it, and how
/// many of them clamd has closed.
struct Relay {
    address: String,
    accepted: Arc<AtomicUsize>,
    closed_by_clamd: Arc<AtomicUsize>,
    /// Each connection's kind, in the order they began: "session" or "plain".
    kinds: Arc<Mutex<Vec<&'static str>>>,
}

fn relay(dir: &Path, clamd_socket: PathBuf) -> Relay {
    let path = dir.join("relay.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let closed_by_clamd = Arc::new(AtomicUsize::new(0));
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let (count, closed, seen) = (Arc::clone(&accepted), Arc::clone(&closed_by_clamd), Arc::clone(&kinds));
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(client) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = UnixStream::connect(&clamd_socket) else { continue };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let seen = Arc::clone(&seen);
            thread::spawn(move || {
                // "zIDSESSION" and "zINSTREAM\0" are both ten bytes long.
                let mut command = [0u8; 10];
                if c_in.read_exact(&mut command).is_ok() {
                    seen.lock().unwrap().push(if &command == b"zIDSESSION" { "session" } else { "plain" });
                    let _ = s_out.write_all(&command);
                }
                let _ = std::io::copy(&mut c_in, &mut s_out);
                let _ = s_out.shutdown(Shutdown::Write);
            });
            let (mut s_in, mut c_out) = (server, client);
            let closed = Arc::clone(&closed);
            thread::spawn(move || {
                // Until clamd closes (or the client does, and clamd with it).
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(Shutdown::Both);
                closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Relay { address: format!("unix:{}", path.display()), accepted, closed_by_clamd, kinds }
}

#[test]
fn sessions_are_kept_between_scans_and_bounded() {
    let clamd = Clamd::start("100K");
    let relay_dir = tempfile::tempdir().unwrap();
    let Relay { address: relayed, accepted, .. } = relay(relay_dir.path(), clamd.dir.path().join("clamd.sock"));

    // One after another: every scan on the one session, each reply numbered in turn.
    let s = stage(std::slice::from_ref(&relayed), |_| {});
    for i in 0..10 {
        let want = if i % 3 == 1 { infected() } else { Verdict::Clean };
        let body = if i % 3 == 1 { eicar_body() } else { CLEAN.to_vec() };
        let r = check(&s, &body).unwrap();
        assert_eq!(r.verdict, want, "scan {i}");
        assert!(!detail(&r, "reply").contains(": stream"), "the session's number is taken off");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    // A size-limit error ends the session (clamd closes it); the next scan opens another.
    assert!(matches!(check(&s, &vec![b'x'; 200 << 10]), Err(StageError::Permanent(_))));
    assert_eq!(verdict(&s, &eicar_body()), infected());
    assert_eq!(accepted.load(Ordering::SeqCst), 2);

    // At once from many threads: never more sessions than connections allowed.
    let s = stage(std::slice::from_ref(&relayed), |c| c.max_connections_per_server = 2);
    let before = accepted.load(Ordering::SeqCst);
    thread::scope(|scope| {
        for i in 0..16 {
            let s = &s;
            scope.spawn(move || match i % 4 {
                0 => assert_eq!(verdict(s, &eicar_body()), infected()),
                _ => assert_eq!(verdict(s, CLEAN), Verdict::Clean),
            });
        }
    });
    let opened = accepted.load(Ordering::SeqCst) - before;
    assert!((1..=2).contains(&opened), "{opened} connections for 16 scans");

    // With sessions off, one connection per scan.
    let s = stage(std::slice::from_ref(&relayed), |c| c.session_idle_ms = 0);
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
    }
    assert_eq!(accepted.load(Ordering::SeqCst) - before, 5);

    // A session idle longer than allowed is closed, not reused.
    let s = stage(std::slice::from_ref(&relayed), |c| c.session_idle_ms = 1);
    let before = accepted.load(Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
        let t = Instant::now();
        while t.elapsed() <= Duration::from_millis(2) {
            thread::yield_now();
        }
    }
    assert_eq!(accepted.load(Ordering::SeqCst) - before, 3);
}

#[test]
fn a_session_ended_by_a_clamd_restart_is_not_a_failure() {
    let mut clamd = Clamd::start("25M");
    let s = stage(&[clamd.unix()], |c| c.retry_down_after_ms = 60_000);
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
    clamd.stop();
    clamd.restart();
    // The kept session died with the old clamd: the scan goes again on a new connection, and the
    // server is not marked down (with a minute's retry time, that would fail every scan below).
    assert_eq!(verdict(&s, &eicar_body()), infected());
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
}

#[test]
fn a_session_reply_with_the_wrong_number_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut open = [0u8; 11];
            if conn.read_exact(&mut open).is_ok() && &open == b"zIDSESSION\0" && read_request(&mut conn).is_ok() {
                let _ = conn.write_all(b"2: stream: OK\0");
            }
        }
    });
    let server = format!("unix:{}", path.display());
    let s = stage(std::slice::from_ref(&server), |_| {});
    assert_eq!(
        temporary(check(&s, CLEAN)),
        format!("clamd unavailable: {server}: reply not numbered 1: \"2: stream: OK\\0\"")
    );
}

#[test]
fn a_session_clamd_timed_out_is_replaced_without_marking_it_down() {
    // clamd ends a session idle for its ReadTimeout, after sending "COMMAND READ TIMED OUT\n".
    let clamd = Clamd::start_with("25M", "1");
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = relay(relay_dir.path(), clamd.dir.path().join("clamd.sock"));
    let s = stage(std::slice::from_ref(&relay.address), |c| {
        c.session_idle_ms = 60_000;
        c.retry_down_after_ms = 60_000;
    });
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
    let deadline = Instant::now() + Duration::from_secs(20);
    while relay.closed_by_clamd.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "clamd never timed the session out");
        // Polling, not yielding: on two cores a spinning test takes one from clamd.
        thread::sleep(Duration::from_millis(20));
    }
    // The kept session is gone: the scan goes on a plain new connection, and the server stays up
    // (marked down, it would fail every scan for a minute); the scan after it opens a new session.
    assert_eq!(verdict(&s, &eicar_body()), infected());
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
    assert_eq!(relay.accepted.load(Ordering::SeqCst), 3);
}

/// A message of about `mb` MB with an attachment of random bytes, base64-encoded: clamd decodes
/// and scans it, about 50 ms a MB here.
fn heavy_message(mb: usize) -> Vec<u8> {
    use base64::Engine;
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let raw: Vec<u8> = (0..mb * (3 << 20) / 4 / 8)
        .flat_map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()
        })
        .collect();
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    let mut body = b"Content-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: application/octet-stream\n\
                     Content-Transfer-Encoding: base64\n\n"
        .to_vec();
    for line in encoded.as_bytes().chunks(76) {
        body.extend_from_slice(line);
        body.push(b'\n');
    }
    body.extend_from_slice(b"--b1--\n");
    body
}

#[test]
fn a_large_message_gets_a_connection_of_its_own() {
    // In a session clamd's ReadTimeout also bounds the scan: it watches the socket for the next
    // command and ends the session (observed: a 42 MB message, 2 s of scanning, ReadTimeout 1 s).
    // A plain INSTREAM has no such limit, so messages over 1 MiB are not sent in a session.
    let clamd = Clamd::start_with("100M", "1");
    let relay_dir = tempfile::tempdir().unwrap();
    let relay = relay(relay_dir.path(), clamd.dir.path().join("clamd.sock"));
    let s = stage(std::slice::from_ref(&relay.address), |c| {
        c.read_timeout_ms = 60_000;
        c.retry_down_after_ms = 60_000;
        c.stream_max_length = 100 << 20;
    });
    assert_eq!(verdict(&s, &heavy_message(44)), Verdict::Clean);
    // A small one goes in a session. (In a session, the large one would have been cut off and
    // sent again on a plain connection: three connections.)
    assert_eq!(verdict(&s, &eicar_body()), infected());
    assert_eq!(*relay.kinds.lock().unwrap(), ["plain", "session"]);
}

#[test]
fn a_new_session_that_ends_without_a_reply_is_followed_by_a_plain_scan() {
    // What clamd does to a session whose scan outlasts its ReadTimeout, for a message under the
    // session limit: the timeout text, then the connection closed. A plain scan is answered.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fake.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let kinds = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&kinds);
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            // "zIDSESSION" and "zINSTREAM\0" are both ten bytes long.
            let mut command = [0u8; 10];
            if conn.read_exact(&mut command).is_err() {
                continue;
            }
            let session = &command == b"zIDSESSION";
            if session && conn.read_exact(&mut [0u8; 1]).is_err() {
                continue;
            }
            seen.lock().unwrap().push(if session { "session" } else { "plain" });
            let already: &[u8] = if session { b"" } else { &command };
            let mut chained = already.chain(&mut conn);
            if read_request(&mut chained).is_ok() {
                let reply: &[u8] = if session { b"COMMAND READ TIMED OUT\n" } else { b"stream: OK\0" };
                let _ = conn.write_all(reply);
            }
        }
    });
    let server = format!("unix:{}", path.display());
    let s = stage(std::slice::from_ref(&server), |c| c.retry_down_after_ms = 60_000);
    assert_eq!(verdict(&s, CLEAN), Verdict::Clean);
    assert_eq!(*kinds.lock().unwrap(), ["session", "plain"]);
}
