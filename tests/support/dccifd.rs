//! A dccifd double for the `dcc` stage's tests, on a UNIX socket or on TCP (127.0.0.1:0).
//!
//! Like the real dccifd it answers only after EOF on its read side, so a client that does not
//! half-close gets nothing: the double waits [`HALF_CLOSE_WAIT`] for the EOF, then records the
//! request as not half-closed and hangs up without a reply.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// How long the double waits for the client's half-close.
pub const HALF_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the double does once it has read the request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Write these bytes, then close.
    Bytes(Vec<u8>),
    /// Never answer; the connection stays open for as long as the test process runs.
    Stall,
    /// Close without a reply.
    Drop,
}

impl Reply {
    pub fn text(s: &str) -> Reply {
        Reply::Bytes(s.as_bytes().to_vec())
    }
}

/// One request as the double received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub bytes: Vec<u8>,
    /// The client shut down its write side (the double saw EOF) before the wait ran out.
    pub half_closed: bool,
    /// When the double had read it.
    pub at: std::time::Instant,
}

pub struct Double {
    /// The stage's `address` setting for this double.
    pub address: String,
    requests: Arc<Mutex<Vec<Request>>>,
    _dir: Option<tempfile::TempDir>,
}

trait Conn: Read + Write + Send + 'static {
    fn set_wait(&self, d: Duration);
}

impl Conn for UnixStream {
    fn set_wait(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

impl Conn for TcpStream {
    fn set_wait(&self, d: Duration) {
        self.set_read_timeout(Some(d)).unwrap();
    }
}

fn serve<C: Conn>(mut conn: C, reply: &Reply, requests: &Mutex<Vec<Request>>, held: &mut Vec<C>) {
    conn.set_wait(HALF_CLOSE_WAIT);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 8192];
    let half_closed = loop {
        match conn.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    requests.lock().unwrap().push(Request { bytes, half_closed, at: std::time::Instant::now() });
    if !half_closed {
        return;
    }
    match reply {
        Reply::Bytes(b) => {
            let _ = conn.write_all(b);
        }
        Reply::Stall => held.push(conn),
        Reply::Drop => {}
    }
}

/// Serve connections one at a time, as `accept` yields them, on a thread of their own; returns
/// where the requests are recorded.
fn spawn_server<C: Conn>(
    mut accept: impl FnMut() -> std::io::Result<C> + Send + 'static,
    reply: Reply,
) -> Arc<Mutex<Vec<Request>>> {
    let requests = Arc::new(Mutex::new(Vec::new()));
    let r = Arc::clone(&requests);
    thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok(conn) = accept() {
            serve(conn, &reply, &r, &mut held);
        }
    });
    requests
}

impl Double {
    /// A double on a UNIX socket in a fresh temporary directory.
    pub fn unix(reply: Reply) -> Double {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dccifd");
        let listener = UnixListener::bind(&path).unwrap();
        let requests = spawn_server(move || listener.accept().map(|(c, _)| c), reply);
        Double { address: format!("unix:{}", path.display()), requests, _dir: Some(dir) }
    }

    /// A double on TCP, 127.0.0.1 and a port the system picks.
    pub fn tcp(reply: Reply) -> Double {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = spawn_server(move || listener.accept().map(|(c, _)| c), reply);
        Double { address: format!("tcp:127.0.0.1:{port}"), requests, _dir: None }
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The one request received, which must have been half-closed.
    pub fn only_request(&self) -> Vec<u8> {
        let reqs = self.requests();
        assert_eq!(reqs.len(), 1, "expected exactly one request");
        assert!(reqs[0].half_closed, "the client did not half-close its side");
        reqs[0].bytes.clone()
    }
}
