//! Sockets to scanning services, shared by the clamd, dccifd and spamd stages: an endpoint written
//! `unix:/path` or `tcp:host:port`, and a connection of either kind with the timeouts the stages
//! set on every read and write.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    /// `host:port`, resolved at connect time.
    Tcp(String),
}

impl Endpoint {
    /// Parse `unix:/absolute/path` or `tcp:host:port`; the error says what is wrong, for the
    /// caller to put in its own words.
    pub fn parse(s: &str) -> Result<Endpoint, &'static str> {
        if let Some(path) = s.strip_prefix("unix:") {
            if !path.starts_with('/') {
                return Err("the socket path must be absolute");
            }
            Ok(Endpoint::Unix(PathBuf::from(path)))
        } else if let Some(hp) = s.strip_prefix("tcp:") {
            match hp.rsplit_once(':') {
                Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
                    Ok(Endpoint::Tcp(hp.to_string()))
                }
                _ => Err("expected tcp:host:port"),
            }
        } else {
            Err("expected unix:/path or tcp:host:port")
        }
    }

    /// Connect; a TCP name is tried address by address, each within `timeout`. (std has no
    /// connect timeout for unix sockets; that connect only blocks when the listen backlog is
    /// full, and the read and write timeouts bound everything after it.)
    pub fn connect(&self, timeout: Duration) -> io::Result<Conn> {
        match self {
            Endpoint::Unix(path) => UnixStream::connect(path).map(Conn::Unix),
            Endpoint::Tcp(hp) => {
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for sa in hp.to_socket_addrs()? {
                    match TcpStream::connect_timeout(&sa, timeout) {
                        Ok(s) => return Ok(Conn::Tcp(s)),
                        Err(e) => last = e,
                    }
                }
                Err(last)
            }
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Tcp(hp) => write!(f, "tcp:{hp}"),
        }
    }
}

/// A connected socket of either kind.
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    pub fn set_read_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(Some(d)),
            Conn::Tcp(s) => s.set_read_timeout(Some(d)),
        }
    }

    pub fn set_write_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_write_timeout(Some(d)),
            Conn::Tcp(s) => s.set_write_timeout(Some(d)),
        }
    }

    /// Send `len` bytes of `file` from `offset` on, copied by the kernel (`sendfile(2)`) rather
    /// than read into a buffer here and written out again. By hand: std has no `sendfile`, and
    /// `libc` is already a dependency. The socket's write timeout bounds each call; a file that
    /// ends early is an error, since the peer was promised `len` bytes.
    pub fn send_file(&mut self, file: &std::fs::File, offset: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let out = match self {
            Conn::Unix(s) => s.as_raw_fd(),
            Conn::Tcp(s) => s.as_raw_fd(),
        };
        let mut at = libc::off_t::try_from(offset).map_err(|_| io::Error::other("offset out of range"))?;
        let mut left = len;
        while left > 0 {
            // At most 1 GiB a call: sendfile moves at most 0x7ffff000 bytes anyway.
            let want = left.min(1 << 30) as usize;
            // SAFETY: both descriptors are open for the duration of the call (borrowed from
            // `self` and `file`), and `at` is a valid off_t the kernel updates.
            let n = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut at, want) };
            match n {
                0 => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the file ended early")),
                n if n > 0 => left -= n as u64,
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => {}
                        // SO_SNDTIMEO expired, as a plain write reports it.
                        io::ErrorKind::WouldBlock => return Err(io::Error::new(io::ErrorKind::TimedOut, e)),
                        _ => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Half-close: the peer sees EOF and answers (dccifd waits for it).
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The time left before `deadline`, or a `TimedOut` error when there is none.
fn time_left(deadline: Instant) -> io::Result<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
}

/// Write all of `data` before `deadline` (each write gets the time that is left).
pub fn write_all_by(conn: &mut Conn, mut data: &[u8], deadline: Instant) -> io::Result<()> {
    while !data.is_empty() {
        conn.set_write_timeout(time_left(deadline)?)?;
        match conn.write(data) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why sending a message stopped: reading it (ours), or writing it (the service's end).
#[derive(Debug)]
pub enum SendError {
    Reading(io::Error),
    Writing(io::Error),
}

/// Send `head` and then all of `message` before `deadline`: the head in one write with the
/// start of the message, the rest in pieces of 64 KiB, since each write is a wakeup of the
/// service (dccifd, spamd) on the other end.
pub fn send_with_head(
    conn: &mut Conn,
    head: Vec<u8>,
    message: &mut dyn Read,
    deadline: Instant,
) -> Result<(), SendError> {
    let mut buf = head;
    let mut filled = buf.len();
    buf.resize(filled + 64 * 1024, 0);
    loop {
        let n = match message.read(&mut buf[filled..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(SendError::Reading(e)),
        };
        filled += n;
        if n > 0 && filled < buf.len() {
            continue;
        }
        write_all_by(conn, &buf[..filled], deadline).map_err(SendError::Writing)?;
        if n == 0 {
            return Ok(());
        }
        filled = 0;
    }
}

/// Read until the peer closes, before `deadline`. More than `max` bytes is an `InvalidData`
/// error: a service's reply is bounded, and a peer that sends more is not that service.
pub fn read_to_end_by(conn: &mut Conn, deadline: Instant, max: usize) -> io::Result<Vec<u8>> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        conn.set_read_timeout(time_left(deadline)?)?;
        match conn.read(&mut buf) {
            Ok(0) => return Ok(reply),
            Ok(n) => {
                if reply.len() + n > max {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, format!("reply longer than {max} bytes")));
                }
                reply.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A counting semaphore: at most `max` permits out at a time.
#[derive(Debug)]
pub struct Semaphore {
    free: Mutex<usize>,
    cv: Condvar,
}

pub struct Permit<'a>(&'a Semaphore);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.cv.notify_one();
    }
}

impl Semaphore {
    pub fn new(max: usize) -> Semaphore {
        Semaphore { free: Mutex::new(max), cv: Condvar::new() }
    }

    /// A permit, waiting at most `wait` for one.
    pub fn acquire(&self, wait: Duration) -> Option<Permit<'_>> {
        let guard = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let (mut free, _) =
            self.cv.wait_timeout_while(guard, wait, |free| *free == 0).unwrap_or_else(|e| e.into_inner());
        if *free == 0 {
            return None;
        }
        *free -= 1;
        Some(Permit(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(Endpoint::parse("unix:/run/c.sock"), Ok(Endpoint::Unix("/run/c.sock".into())));
        assert_eq!(Endpoint::parse("tcp:127.0.0.1:3310"), Ok(Endpoint::Tcp("127.0.0.1:3310".into())));
        assert_eq!(Endpoint::parse("tcp:[::1]:3310"), Ok(Endpoint::Tcp("[::1]:3310".into())));
        assert_eq!(Endpoint::parse("unix:rel"), Err("the socket path must be absolute"));
        for bad in ["tcp:host", "tcp::3310", "tcp:h:0", "tcp:h:x", "/path", ""] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Endpoint::parse("tcp:h:1").unwrap().to_string(), "tcp:h:1");
    }

    #[test]
    fn replies_are_read_to_the_end_within_a_deadline_and_a_bound() {
        let pair = || {
            let (a, b) = UnixStream::pair().unwrap();
            (Conn::Unix(a), b)
        };
        let soon = || Instant::now() + Duration::from_secs(5);
        let (mut ours, mut theirs) = pair();
        write_all_by(&mut ours, b"request", soon()).unwrap();
        let mut request = [0u8; 7];
        // Read before closing: a UNIX socket closed with unread data resets its peer.
        theirs.read_exact(&mut request).unwrap();
        assert_eq!(&request, b"request");
        theirs.write_all(b"0123456789").unwrap();
        drop(theirs);
        assert_eq!(read_to_end_by(&mut ours, soon(), 10).unwrap(), b"0123456789");

        let (mut ours, mut theirs) = pair();
        theirs.write_all(b"0123456789!").unwrap();
        let e = read_to_end_by(&mut ours, soon(), 10).unwrap_err();
        assert_eq!((e.kind(), e.to_string()), (io::ErrorKind::InvalidData, "reply longer than 10 bytes".into()));

        // A peer that sends nothing and does not close: the deadline ends the wait.
        let (mut ours, _theirs) = pair();
        let started = Instant::now();
        let e = read_to_end_by(&mut ours, Instant::now() + Duration::from_millis(100), 10).unwrap_err();
        assert!(matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut), "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(read_to_end_by(&mut ours, Instant::now(), 10).unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(write_all_by(&mut ours, b"x", Instant::now()).unwrap_err().kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn permits_are_bounded_and_come_back_when_dropped() {
        let s = Semaphore::new(2);
        let a = s.acquire(Duration::ZERO).expect("first");
        let _b = s.acquire(Duration::ZERO).expect("second");
        assert!(s.acquire(Duration::from_millis(20)).is_none(), "a third while two are out");
        drop(a);
        assert!(s.acquire(Duration::ZERO).is_some(), "one came back");
        // A waiter is woken by a permit coming back, well before its own deadline.
        let s = std::sync::Arc::new(Semaphore::new(1));
        let held = s.acquire(Duration::ZERO).unwrap();
        let waiter = {
            let s = std::sync::Arc::clone(&s);
            std::thread::spawn(move || s.acquire(Duration::from_secs(30)).is_some())
        };
        drop(held);
        assert!(waiter.join().unwrap());
    }
}
