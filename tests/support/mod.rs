//! Test support, shared by every integration test (`mod support;`): real Exim instances on loopback
//! (started by `scripts/exim-test.sh`), clamd, spamd, rspamd, the dccifd double, the ARC world of keys and
//! dkimpy, inputs made at test time, a small SMTP client, and polling with a deadline (never a sleep standing in for synchronisation).

#![allow(dead_code)]

pub mod arc;
pub mod clamd;
pub mod dccifd;
pub mod debian_exim;
pub mod fixtures;
pub mod made;
pub mod rspamd;
pub mod smtp;
pub mod spamd;
pub mod units;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Which Exim build: `bookworm` (4.96, 16-character ids) or `trixie` (4.98, 23-character ids).
pub const SERIES: [&str; 2] = ["bookworm", "trixie"];

/// Run the spoolsift binary under test with `args`.
pub fn spoolsift(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_spoolsift")).args(args).output().unwrap()
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Start `spoolsift watch --pipeline PIPELINE`, its output appended to `log` (a restarted daemon
/// goes on in the same file).
pub fn start_daemon(pipeline: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .args(["watch", "--pipeline"])
        .arg(pipeline)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Write `root/pipeline.toml` for a `spoolsift watch` with no Exim: the built-in scanner, the
/// queuefile directory `root/queuefile`, the work directory `root/work`, re-queues into
/// `root/spool` with no delivery kick, then `sections` (TOML sections of the test's own).
pub fn standalone_pipeline(root: &Path, name: &str, sections: &str) -> PathBuf {
    let text = format!(
        r#"name = "{name}"

[stages.content]

[intake]
queuefile_directory = "{q}"
work_directory = "{w}"

[requeue]
spool_directory = "{sp}"
exim_command = ["true"]
split_spool_directory = false
kick = false

{sections}
"#,
        q = root.join("queuefile").display(),
        w = root.join("work").display(),
        sp = root.join("spool").display(),
    );
    let p = root.join("pipeline.toml");
    std::fs::write(&p, text).unwrap();
    p
}

/// The directories [`standalone_pipeline`] names, made in a temporary directory: the queuefile
/// directory `root/queuefile`, Exim's `root/spool/input`, and the daemon's log `root/daemon.log`.
pub struct Standalone {
    _dir: tempfile::TempDir,
    pub root: PathBuf,
    pub qf: PathBuf,
    pub input: PathBuf,
    pub log: PathBuf,
}

impl Standalone {
    pub fn new() -> Standalone {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let (qf, input) = (root.join("queuefile"), root.join("spool/input"));
        std::fs::create_dir_all(&qf).unwrap();
        std::fs::create_dir_all(&input).unwrap();
        Standalone { _dir: dir, log: root.join("daemon.log"), root, qf, input }
    }
}

/// A daemon that is killed (and reaped) when the test ends, however it ends.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Poll `f` until it returns `Some`, or panic with `what` when `limit` passes.
pub fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Poll `f` until it returns true (then true) or `limit` passes (then false), for a caller that
/// says more than [`poll`] can when it fails.
pub fn poll_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    let mut pause = Duration::from_millis(5);
    while !f() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    true
}

/// Base64 (RFC 4648, padded) of `data`, in lines of `width` characters joined by `\n` (76 for a
/// MIME body, RFC 2045 §6.8), or on one line.
pub fn base64(data: &[u8], width: Option<usize>) -> String {
    use base64::Engine;
    let text = base64::engine::general_purpose::STANDARD.encode(data);
    match width {
        None => text,
        Some(w) => {
            text.as_bytes().chunks(w).map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>().join("\n")
        }
    }
}

/// A free loopback port (bound and released; the instance binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Options for a test Exim instance.
#[derive(Debug, Clone)]
pub struct EximOptions {
    pub series: &'static str,
    /// `queuefile` (scan router first), `plain` (local delivery only) or `queue-only`.
    pub mode: &'static str,
    pub split: bool,
}

/// A running Exim on loopback, in its own temporary directory; stopped when dropped.
pub struct Exim {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub vars: HashMap<String, String>,
    pub opts: EximOptions,
}

impl Exim {
    pub fn start(opts: EximOptions) -> Exim {
        Exim::start_with(opts, &[])
    }

    /// Start with extra `exim-test.sh start` arguments (e.g. `--verdict-db FILE`).
    pub fn start_with(opts: EximOptions, extra: &[&str]) -> Exim {
        let dir = tempfile::Builder::new().prefix("spoolsift-exim.").tempdir().unwrap();
        // Exim's delivery processes run as the Exim user and must reach the spool and maildirs.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let port = free_port();
        let qf = dir.path().join("qf");
        let script = repo_root().join("scripts/exim-test.sh");
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg("start")
            .args(["--series", opts.series, "--mode", opts.mode, "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir.path().join("exim"))
            .arg("--queuefile-dir")
            .arg(&qf);
        if opts.split {
            cmd.arg("--split");
        }
        cmd.args(extra);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "starting the test Exim failed (run the README's test command, which builds it):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().trim_matches('\'').trim_matches('"').to_string()))
            .collect();
        Exim { dir, port, vars, opts }
    }

    pub fn var(&self, name: &str) -> PathBuf {
        PathBuf::from(
            self.vars.get(name).unwrap_or_else(|| panic!("exim-test.sh did not print {name}: {:?}", self.vars)),
        )
    }

    pub fn spool(&self) -> PathBuf {
        self.var("EXIM_SPOOL")
    }

    pub fn queuefile_dir(&self) -> PathBuf {
        self.var("EXIM_QUEUEFILE_DIR")
    }

    pub fn mail_dir(&self, user: &str) -> PathBuf {
        self.var("EXIM_MAIL").join(user).join("Maildir")
    }

    /// Run the instance's Exim binary with its configuration and the given arguments.
    pub fn exim(&self, args: &[&str]) -> Output {
        Command::new(self.var("EXIM_BIN")).arg("-C").arg(self.var("EXIM_CONF")).args(args).output().unwrap()
    }

    /// The argv prefix that runs this Exim (for `requeue::EximCommand`).
    pub fn argv(&self) -> Vec<String> {
        vec![self.vars["EXIM_BIN"].clone(), "-C".into(), self.vars["EXIM_CONF"].clone()]
    }

    pub fn mainlog(&self) -> String {
        std::fs::read_to_string(self.var("EXIM_LOG").join("mainlog")).unwrap_or_default()
    }

    pub fn paniclog(&self) -> String {
        std::fs::read_to_string(self.var("EXIM_LOG").join("paniclog")).unwrap_or_default()
    }

    /// Messages delivered into a user's maildir (`new/`), sorted by name.
    pub fn delivered(&self, user: &str) -> Vec<Vec<u8>> {
        let new = self.mail_dir(user).join("new");
        let mut names: Vec<_> = match std::fs::read_dir(&new) {
            Ok(rd) => rd.map(|e| e.unwrap().path()).collect(),
            Err(_) => return Vec::new(),
        };
        names.sort();
        names.iter().map(|p| std::fs::read(p).unwrap()).collect()
    }

    /// Assert Exim complained about nothing: no paniclog, no format errors.
    pub fn assert_clean_logs(&self) {
        assert_eq!(self.paniclog(), "", "Exim's paniclog must stay empty");
        let main = self.mainlog();
        assert!(!main.contains("Format error"), "mainlog shows a spool format error:\n{main}");
        // Two delivery processes can race for one message (a kick and a queue run): the loser finds
        // the -D gone because the winner completed it. A -D missing for a message that never
        // completed is a stranded message.
        for line in main.lines().filter(|l| l.contains("-D not found")) {
            let id = line.split_whitespace().nth(3).unwrap_or_default();
            assert!(main.contains(&format!("{id} Completed")), "mainlog shows a stranded message:\n{line}\n{main}");
        }
    }
}

impl Drop for Exim {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/exim-test.sh"))
            .arg("stop")
            .arg("--dir")
            .arg(self.dir.path().join("exim"))
            .output();
    }
}

/// The names of the files in a directory, sorted.
pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}
