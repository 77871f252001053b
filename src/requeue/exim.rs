//! Talking to the Exim binary: reading its configuration with `-bP`, and starting deliveries.
//!
//! Exim does not watch `input/`: a re-queued message waits for the next queue run unless someone
//! asks for it. `exim -Mc <id>…` delivers the given messages now, honouring retry times.

use std::ffi::OsString;
use std::io;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::spool::MessageId;

/// How to run Exim: the program and leading arguments, e.g. `["exim", "-C", "/etc/exim/out.conf"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EximCommand {
    pub argv: Vec<OsString>,
    /// Where the command was configured (`exim_command in FILE:LINE`), for error messages.
    pub origin: Option<String>,
}

impl EximCommand {
    pub fn new<I: IntoIterator<Item = S>, S: Into<OsString>>(argv: I) -> EximCommand {
        EximCommand { argv: argv.into_iter().map(Into::into).collect(), origin: None }
    }

    /// The same command, saying where it was configured in its errors.
    pub fn configured_at(mut self, origin: String) -> EximCommand {
        self.origin = Some(origin);
        self
    }

    /// An error about running this command, naming the program and where it was configured.
    fn error(&self, what: &str, e: impl std::fmt::Display) -> io::Error {
        let prog = self.argv.first().map_or("(empty)".into(), |p| p.to_string_lossy());
        let origin = self.origin.as_ref().map_or(String::new(), |o| format!(" ({o})"));
        io::Error::other(format!("{what} Exim at {prog}{origin}: {e}"))
    }

    fn command(&self) -> io::Result<Command> {
        let (prog, args) = self.argv.split_first().ok_or_else(|| self.error("cannot run", "empty command"))?;
        let mut c = Command::new(prog);
        c.args(args);
        Ok(c)
    }

    /// Whether the program can be started: a path names an executable file, a bare name is found
    /// on `PATH`. Checked at start, so that a wrong path is said at once, not at the first kick.
    pub fn check_runnable(&self) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let prog = std::path::Path::new(self.argv.first().ok_or_else(|| self.error("cannot run", "empty command"))?);
        let candidates: Vec<std::path::PathBuf> = if prog.components().count() > 1 {
            vec![prog.to_path_buf()]
        } else {
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).map(|d| d.join(prog)).collect()
        };
        let mut last = io::Error::from(io::ErrorKind::NotFound);
        for c in candidates {
            match std::fs::metadata(&c) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return Ok(()),
                Ok(_) => last = io::Error::from(io::ErrorKind::PermissionDenied),
                Err(e) => last = e,
            }
        }
        Err(self.error("cannot run", last))
    }

    /// The value of one main option (`exim -bP <name>` prints `name = value`).
    pub fn option(&self, name: &str) -> io::Result<String> {
        let out = self
            .command()?
            .arg("-bP")
            .arg(name)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| self.error("cannot run", e))?;
        if !out.status.success() {
            return Err(self.error(
                &format!("`-bP {name}` failed with {}:", out.status),
                String::from_utf8_lossy(&out.stderr).trim(),
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().next().unwrap_or_default();
        // Booleans print as `name` or `no_name`; others as `name = value`.
        Ok(match line.split_once(" = ") {
            Some((_, v)) => v.to_string(),
            None if line.trim() == name => "true".into(),
            None => "false".into(),
        })
    }

    /// Does the Exim have `split_spool_directory` set?
    pub fn split_spool_directory(&self) -> io::Result<bool> {
        Ok(self.option("split_spool_directory")? == "true")
    }
}

/// Starts deliveries of re-queued messages in batches (`exim -Mc id…`, MailScanner's 30 at a time).
#[derive(Debug)]
pub struct Kicker {
    pub exim: EximCommand,
    /// The delivery flag: `-Mc` (honour retry times) or `-M` (force, and thaw).
    pub flag: String,
    pub batch: usize,
    /// At most this many `exim -Mc` runs at once in the background.
    pub max_running: usize,
    running: Mutex<Vec<Child>>,
}

impl Kicker {
    pub fn new(exim: EximCommand) -> Kicker {
        Kicker { exim, flag: "-Mc".into(), batch: 30, max_running: 4, running: Mutex::new(Vec::new()) }
    }

    fn spawn(&self, chunk: &[MessageId]) -> io::Result<Child> {
        self.exim
            .command()?
            .arg(&self.flag)
            .args(chunk.iter().map(MessageId::as_str))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| self.exim.error("cannot run", e))
    }

    /// Run the deliveries and wait for them. Exim delivers each id in a child, one after another.
    /// A failed kick loses nothing: the message stays queued for the next queue run.
    pub fn kick(&self, ids: &[MessageId]) -> io::Result<()> {
        for chunk in ids.chunks(self.batch.max(1)) {
            let status = self.spawn(chunk)?.wait()?;
            if !status.success() {
                return Err(self.exim.error(&format!("`{}` of {} messages:", self.flag, chunk.len()), status));
            }
        }
        Ok(())
    }

    /// Start the deliveries without waiting for them, so the engine goes on with the next batch
    /// while Exim delivers; at most `max_running` at once (then this waits for the oldest).
    /// Finished runs are reaped here; a failure is reported, and loses nothing.
    pub fn kick_in_background(&self, ids: &[MessageId]) -> io::Result<()> {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for chunk in ids.chunks(self.batch.max(1)) {
            running.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
            while running.len() >= self.max_running.max(1) {
                let mut oldest = running.remove(0);
                oldest.wait()?;
            }
            running.push(self.spawn(chunk)?);
        }
        running.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_))));
        Ok(())
    }

    /// Wait for every background run (at shutdown).
    pub fn wait_all(&self) {
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        for mut c in running.drain(..) {
            let _ = c.wait();
        }
    }
}
