//! A private rspamd for a test (scripts/rspamd-test.sh: loopback, resolving through a dnsmasq of
//! its own that knows no name, network modules off), stopped when dropped.
//!
//! Its first start takes 12-20 s (rspamd compiles its rules and the public-suffix list), so a test
//! binary should start one and run its checks against it in turn.

use std::path::Path;
use std::process::Command;

use super::free_port;

/// A private rspamd and its dnsmasq; stopped on drop.
pub struct Rspamd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    running: bool,
}

fn script(args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rspamd-test.sh"))
        .args(args)
        .output()
        .expect("running scripts/rspamd-test.sh");
    assert!(out.status.success(), "rspamd-test.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

impl Rspamd {
    pub fn start() -> Rspamd {
        let mut r = Rspamd { dir: tempfile::tempdir().unwrap(), port: free_port(), running: false };
        let dir = r.dir.path().to_str().unwrap().to_string();
        let (port, dns_port) = (r.port.to_string(), free_port().to_string());
        let line = script(&["start", "--dir", &dir, "--port", &port, "--dns-port", &dns_port]);
        assert!(line.starts_with(&format!("RSPAMD_PORT={port} RSPAMD_PID=")), "{line}");
        r.running = true;
        r
    }

    pub fn stop(&mut self) {
        script(&["stop", "--dir", self.dir.path().to_str().unwrap()]);
        self.running = false;
    }

    /// Its URL as `[stages.rspamd] url` takes it.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// rspamd's log so far (one line per scanned message, with what it was told of the envelope).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log/rspamd.log")).unwrap_or_default()
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        // No assertion here: a drop during a failed test's unwinding must not panic again.
        if self.running {
            let _ = Command::new("bash")
                .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/rspamd-test.sh"))
                .args(["stop", "--dir", self.dir.path().to_str().unwrap()])
                .output();
        }
    }
}
