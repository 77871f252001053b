//! Talking to the Exim binary: reading its configuration with `-bP`, and starting deliveries
//! (the delivery kick itself, and why it runs outside the daemon's sandbox, is in [`super::kick`]).

use std::ffi::OsString;
use std::io;
use std::process::{Command, Stdio};

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
    pub(crate) fn error(&self, what: &str, e: impl std::fmt::Display) -> io::Error {
        let prog = self.argv.first().map_or("(empty)".into(), |p| p.to_string_lossy());
        let origin = self.origin.as_ref().map_or(String::new(), |o| format!(" ({o})"));
        io::Error::other(format!("{what} Exim at {prog}{origin}: {e}"))
    }

    pub(crate) fn command(&self) -> io::Result<Command> {
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

/// Starts the delivery of given messages now and says what became of each: for the commands
/// an admin runs by hand (`quarantine release`), outside any sandbox. The daemon hands its kicks
/// to [`super::kick::KickQueue`] instead.
#[derive(Debug)]
pub struct Kicker {
    pub exim: EximCommand,
    /// The delivery flag: `-Mc` (honour retry times) or `-M` (force, and thaw).
    pub flag: String,
    pub batch: usize,
}

impl Kicker {
    pub fn new(exim: EximCommand) -> Kicker {
        Kicker { exim, flag: "-Mc".into(), batch: 30 }
    }

    /// Run the deliveries, wait for them, and read each message's outcome from `target`.
    pub fn kick(&self, target: &super::TargetSpool, ids: &[MessageId]) -> Vec<(MessageId, super::kick::KickOutcome)> {
        let mut out = Vec::new();
        for chunk in ids.chunks(self.batch.max(1)) {
            let report = super::kick::run_exim(&self.exim, &self.flag, chunk);
            out.extend(chunk.iter().map(|id| (id.clone(), super::kick::classify(target, id, &report))));
        }
        out
    }
}
