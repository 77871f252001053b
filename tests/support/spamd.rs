//! A private SpamAssassin spamd for a test (scripts/spamd-test.sh: loopback, local tests only,
//! the rules Debian ships), stopped when dropped.

use std::path::Path;
use std::process::Command;

use super::free_port;

/// A private spamd; stopped on drop.
pub struct Spamd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    running: bool,
}

fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spamd-test.sh"))
        .args(args)
        .output()
        .expect("running scripts/spamd-test.sh");
    assert!(out.status.success(), "spamd-test.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

impl Spamd {
    pub fn start() -> Spamd {
        let mut s = Spamd { dir: tempfile::tempdir().unwrap(), port: free_port(), running: false };
        let dir = s.dir.path().to_str().unwrap().to_string();
        let port = s.port.to_string();
        let line = script(&["start", "--dir", &dir, "--port", &port]);
        assert!(line.starts_with(&format!("SPAMD_PORT={port} SPAMD_PID=")), "{line}");
        s.running = true;
        s
    }

    pub fn stop(&mut self) {
        script(&["stop", "--dir", self.dir.path().to_str().unwrap()]);
        self.running = false;
    }

    /// Its address as `[stages.spamd] address` takes it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        // No assertion here: a drop during a failed test's unwinding must not panic again.
        if self.running {
            let _ = Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/spamd-test.sh"))
                .args(["stop", "--dir", self.dir.path().to_str().unwrap()])
                .output();
        }
    }
}
