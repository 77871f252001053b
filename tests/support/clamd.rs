//! A private clamd for a test (scripts/clamd-test.sh: loopback, a signature database written at
//! run time), stopped when dropped.

use std::path::Path;
use std::process::Command;

use super::free_port;

/// A private clamd; stopped on drop.
pub struct Clamd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    stream_max: String,
    /// clamd's ReadTimeout in seconds, which also ends an idle session.
    read_timeout: String,
    running: bool,
}

fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/clamd-test.sh"))
        .args(args)
        .output()
        .expect("running scripts/clamd-test.sh");
    assert!(out.status.success(), "clamd-test.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

impl Clamd {
    pub fn start(stream_max: &str) -> Clamd {
        Clamd::start_with(stream_max, "120")
    }

    pub fn start_with(stream_max: &str, read_timeout: &str) -> Clamd {
        let mut c = Clamd {
            dir: tempfile::tempdir().unwrap(),
            port: free_port(),
            stream_max: stream_max.into(),
            read_timeout: read_timeout.into(),
            running: false,
        };
        c.restart();
        c
    }

    pub fn restart(&mut self) {
        let dir = self.dir.path().to_str().unwrap().to_string();
        let port = self.port.to_string();
        let line = script(&[
            "start",
            "--dir",
            &dir,
            "--port",
            &port,
            "--stream-max",
            &self.stream_max,
            "--read-timeout",
            &self.read_timeout,
        ]);
        assert!(line.starts_with(&format!("CLAMD_SOCKET={dir}/clamd.sock CLAMD_PORT={port} CLAMD_PID=")), "{line}");
        self.running = true;
    }

    pub fn stop(&mut self) {
        script(&["stop", "--dir", self.dir.path().to_str().unwrap()]);
        self.running = false;
    }

    pub fn unix(&self) -> String {
        format!("unix:{}", self.dir.path().join("clamd.sock").display())
    }

    /// The Unix socket, as the pipelines name it.
    pub fn address(&self) -> String {
        self.unix()
    }

    pub fn tcp(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.port)
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        // No assertion here: a drop during a failed test's unwinding must not panic again.
        if self.running {
            let _ = Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/clamd-test.sh"))
                .args(["stop", "--dir", self.dir.path().to_str().unwrap()])
                .output();
        }
    }
}
