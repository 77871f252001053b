//! The benches' dccifd double: answers every request with one fixed reply, as the tests' double
//! does in its plain-reply mode, but keeps nothing of the requests and reads them in large pieces.
//!
//! It runs inside the bench's process, so its CPU would otherwise count as the engine's; it
//! measures its own thread's CPU time, and the bench reports that figure apart. (A real dccifd
//! would use the same cores, and much more CPU: it computes checksums.)

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub struct Dccifd {
    /// The dcc stage's `address` setting for this double.
    pub address: String,
    cpu_ns: Arc<AtomicU64>,
    _dir: tempfile::TempDir,
}

/// CPU time (user and system) the calling thread has used.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a pointer to a live timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl Dccifd {
    /// A double on a UNIX socket in a fresh temporary directory, serving one connection at a time
    /// (like the tests' double), each read to EOF before `reply` is written.
    pub fn unix(reply: &str) -> Dccifd {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dccifd");
        let listener = UnixListener::bind(&path).unwrap();
        let cpu_ns = Arc::new(AtomicU64::new(0));
        let (cpu, reply) = (Arc::clone(&cpu_ns), reply.as_bytes().to_vec());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok((mut conn, _)) = listener.accept() {
                // As the tests' double: no answer to a client that does not half-close in time.
                conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let half_closed = loop {
                    match conn.read(&mut buf) {
                        Ok(0) => break true,
                        Ok(_) => {}
                        Err(_) => break false,
                    }
                };
                if half_closed {
                    let _ = conn.write_all(&reply);
                }
                drop(conn);
                cpu.store(thread_cpu_ns(), Ordering::Relaxed);
            }
        });
        Dccifd { address: format!("unix:{}", path.display()), cpu_ns, _dir: dir }
    }

    /// CPU seconds the double has used so far (as of its last answer).
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_ns.load(Ordering::Relaxed) as f64 / 1e9
    }
}
