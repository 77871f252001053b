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
}

impl EximCommand {
    pub fn new<I: IntoIterator<Item = S>, S: Into<OsString>>(argv: I) -> EximCommand {
        EximCommand { argv: argv.into_iter().map(Into::into).collect() }
    }

    fn command(&self) -> io::Result<Command> {
        let (prog, args) = self.argv.split_first().ok_or_else(|| io::Error::other("empty Exim command"))?;
        let mut c = Command::new(prog);
        c.args(args);
        Ok(c)
    }

    /// The value of one main option (`exim -bP <name>` prints `name = value`).
    pub fn option(&self, name: &str) -> io::Result<String> {
        let out = self.command()?.arg("-bP").arg(name).stdin(Stdio::null()).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "exim -bP {name} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )));
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
    }

    /// Run the deliveries and wait for them. Exim delivers each id in a child, one after another.
    /// A failed kick loses nothing: the message stays queued for the next queue run.
    pub fn kick(&self, ids: &[MessageId]) -> io::Result<()> {
        for chunk in ids.chunks(self.batch.max(1)) {
            let status = self.spawn(chunk)?.wait()?;
            if !status.success() {
                return Err(io::Error::other(format!("{:?} {} exited with {status}", self.exim.argv, self.flag)));
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
