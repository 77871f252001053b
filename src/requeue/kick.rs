//! Starting the delivery of re-queued messages, and checking that it happened.
//!
//! Exim does not watch `input/`: a re-queued message waits for the next queue run unless someone
//! runs `exim -Mc <id>…`. That run must not happen inside the scanner's sandbox. A setuid-root
//! Exim started under `NoNewPrivileges` (or anything that implies it) cannot switch to the
//! recipient: it freezes the message and still exits 0; with an empty capability bounding set it
//! fails in `setgroups()`; with its log directory read-only it delivers, dies writing the log line
//! and leaves the message queued with a `-J` journal (docs/exim.md, "The delivery kick").
//!
//! So the kick is a hand-over. The daemon writes one empty file per message into `kick/` of its
//! work directory once the message is committed; `spoolsift kick` (its own unit, without the
//! sandbox) runs Exim on them and writes what Exim said into `kick/ran/<id>`; the daemon reads
//! that report, looks at Exim's spool and says what became of each message
//! ([`KickOutcome`]). With `kick = "inline"` the daemon runs the same loop in a thread of its own
//! (for a daemon that is not sandboxed); with `kick = "off"` Exim's queue runner delivers.
//!
//! Nothing here can lose a message: a kick that never runs leaves it queued for the queue
//! runner. What a failed kick can do is leave a message frozen (Exim's queue runner then leaves
//! it alone until `timeout_frozen_after` bounces it) or delivered and still queued (it may be
//! delivered again); those are the outcomes reported as errors.

use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use super::exim::EximCommand;
use super::target::TargetSpool;
use crate::spool::{paths, MessageId, SpoolHeader};

/// `[requeue] kick`: who starts the delivery of a re-queued message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KickMode {
    /// `spoolsift kick`, a separate process outside the daemon's sandbox (the shipped units).
    Helper,
    /// The daemon runs Exim itself: only for a daemon that is not sandboxed.
    Inline,
    /// Nobody: Exim's queue runner finds the message.
    Off,
}

impl<'de> Deserialize<'de> for KickMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Text(String),
        }
        match Raw::deserialize(d)? {
            // The boolean of earlier versions: `true` was the daemon running Exim itself.
            Raw::Bool(true) => Ok(KickMode::Inline),
            Raw::Bool(false) => Ok(KickMode::Off),
            Raw::Text(t) => match t.as_str() {
                "helper" => Ok(KickMode::Helper),
                "inline" => Ok(KickMode::Inline),
                "off" => Ok(KickMode::Off),
                other => Err(serde::de::Error::custom(format!(
                    "kick must be \"helper\", \"inline\" or \"off\", not {other:?}"
                ))),
            },
        }
    }
}

/// What one `exim -Mc` run said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// `exit N`, `signal N`, or `not started: why`.
    pub status: String,
    pub success: bool,
    /// Exim's standard error: its log lines about these messages, or why it stopped.
    pub stderr: String,
}

/// The most of Exim's standard error kept per run (it is for the log line).
const MAX_STDERR: usize = 4096;

/// Run `exim <flag> id…` and wait for it. Exim delivers each message in turn before it exits.
pub fn run_exim(exim: &EximCommand, flag: &str, ids: &[MessageId]) -> ExitReport {
    let mut cmd = match exim.command() {
        Ok(c) => c,
        Err(e) => return ExitReport { status: format!("not started: {e}"), success: false, stderr: String::new() },
    };
    let out = cmd
        .arg(flag)
        .args(ids.iter().map(MessageId::as_str))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output();
    match out {
        Err(e) => ExitReport {
            status: format!("not started: {}", exim.error("cannot run", e)),
            success: false,
            stderr: String::new(),
        },
        Ok(out) => {
            use std::os::unix::process::ExitStatusExt;
            let status = match (out.status.code(), out.status.signal()) {
                (Some(c), _) => format!("exit {c}"),
                (None, Some(s)) => format!("signal {s}"),
                _ => "unknown status".into(),
            };
            let mut stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if stderr.len() > MAX_STDERR {
                let mut cut = MAX_STDERR;
                while !stderr.is_char_boundary(cut) {
                    cut -= 1;
                }
                stderr.truncate(cut);
            }
            ExitReport { status, success: out.status.success(), stderr }
        }
    }
}

/// What became of a kicked message, read from Exim's spool after the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KickOutcome {
    /// Gone from Exim's queue: every recipient delivered, or bounced by Exim.
    Delivered,
    /// Still queued, not frozen, Exim finished normally: a recipient deferred, or its retry
    /// time has not come, or another process holds the message. The queue runner goes on.
    StillQueued(String),
    /// Exim froze it: its queue runner leaves it alone (`exim -Mt` thaws it).
    Frozen(String),
    /// A `-J` journal is left: a delivery process died after delivering some recipients and
    /// before recording it in the `-H`.
    Interrupted(String),
    /// Exim failed and the message is as it was.
    Failed(String),
    /// No `spoolsift kick` took the request within the time allowed.
    NotRun(String),
}

impl KickOutcome {
    /// The metric label and log word.
    pub fn label(&self) -> &'static str {
        match self {
            KickOutcome::Delivered => "delivered",
            KickOutcome::StillQueued(_) => "queued",
            KickOutcome::Frozen(_) => "frozen",
            KickOutcome::Interrupted(_) => "interrupted",
            KickOutcome::Failed(_) => "failed",
            KickOutcome::NotRun(_) => "not-run",
        }
    }

    /// Whether an admin must act: mail is stuck, or may be delivered twice.
    pub fn is_error(&self) -> bool {
        !matches!(self, KickOutcome::Delivered | KickOutcome::StillQueued(_))
    }

    pub fn detail(&self) -> &str {
        match self {
            KickOutcome::Delivered => "",
            KickOutcome::StillQueued(d)
            | KickOutcome::Frozen(d)
            | KickOutcome::Interrupted(d)
            | KickOutcome::Failed(d)
            | KickOutcome::NotRun(d) => d,
        }
    }
}

/// Every outcome label, for metrics that show zeros from the start.
pub const OUTCOMES: [&str; 6] = ["delivered", "queued", "frozen", "interrupted", "failed", "not-run"];

/// Look at Exim's spool after a run and say what became of `id`.
pub fn classify(target: &TargetSpool, id: &MessageId, run: &ExitReport) -> KickOutcome {
    let input = &target.input;
    let find = |suffix| paths::candidate_paths(input, id, suffix).into_iter().find(|p| p.exists());
    let Some(header) = find('H') else { return KickOutcome::Delivered };
    let said = exim_said(&run.stderr, id);
    let last_log = msglog_last_line(input, id, target.split);
    if let Some(journal) = find('J') {
        // Exim writes each address to the -J as it is delivered, and folds the list into the
        // -H when the delivery ends; a -J left behind means the delivery process died.
        let delivered = crate::spool::header_file::read_bytes(&journal, Some(1 << 20)).unwrap_or_default();
        let delivered: Vec<String> =
            String::from_utf8_lossy(&delivered).lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        let what = if delivered.is_empty() {
            "Exim died during the delivery (a -J journal is left)".to_string()
        } else {
            format!(
                "Exim delivered to {} and died before recording it (a -J journal is left; is Exim's log \
                 directory writable?)",
                delivered.join(", ")
            )
        };
        return KickOutcome::Interrupted(format!("{}; {what}{}", run.status, join_detail(&said)));
    }
    if let Ok(h) = SpoolHeader::read(&header) {
        if h.frozen_at().is_some() {
            return KickOutcome::Frozen(format!(
                "{}; Exim froze it{} (thaw with exim -Mt {id} once the cause is fixed)",
                run.status,
                join_detail(if said.is_empty() { &last_log } else { &said })
            ));
        }
    }
    if !run.success {
        return KickOutcome::Failed(format!("{}{}", run.status, join_detail(&said)));
    }
    KickOutcome::StillQueued(if last_log.is_empty() { said } else { last_log })
}

fn join_detail(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Exim's standard-error lines about this message, or that name no message (why it stopped),
/// joined on one line.
fn exim_said(stderr: &str, id: &MessageId) -> String {
    let mut lines = Vec::new();
    for l in stderr.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let about_other =
            l.split_whitespace().nth(2).is_some_and(|w| MessageId::parse(w.as_bytes()).is_ok() && w != id.as_str());
        if !about_other {
            lines.push(l);
        }
    }
    lines.join(" | ")
}

/// The last line of Exim's per-message log (`msglog/<id>`), where it says why it deferred.
fn msglog_last_line(input: &Path, id: &MessageId, split: bool) -> String {
    let Some(spool) = input.parent() else { return String::new() };
    let msglog = spool.join("msglog");
    let path = paths::message_dir(&msglog, id, split).join(id.as_str());
    let Ok(text) = crate::spool::header_file::read_bytes(&path, Some(1 << 20)) else { return String::new() };
    String::from_utf8_lossy(&text).lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// The hand-over directory: `kick/<id>` asks for a kick, `kick/ran/<id>` reports one.
#[derive(Debug, Clone)]
pub struct KickQueue {
    pub dir: PathBuf,
    pub ran: PathBuf,
}

/// One request, with its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KickRequest {
    pub id: MessageId,
    pub age: Duration,
}

impl KickQueue {
    pub fn new(work_root: &Path) -> KickQueue {
        let dir = work_root.join("kick");
        KickQueue { ran: dir.join("ran"), dir }
    }

    pub fn create(&self) -> io::Result<()> {
        for d in [&self.dir, &self.ran] {
            crate::private_files::create_dir(d)?;
            crate::private_files::set_mode(d, crate::private_files::DIR_MODE)?;
        }
        Ok(())
    }

    /// Ask for these messages to be kicked. Not synced: a request lost in a crash leaves the
    /// message to the queue runner.
    pub fn request(&self, ids: &[MessageId]) -> io::Result<()> {
        for id in ids {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(crate::private_files::FILE_MODE)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(self.dir.join(id.as_str()));
            f.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.dir.join(id.as_str()).display())))?;
        }
        Ok(())
    }

    /// Regular files named as Exim ids in `dir`, oldest first. Anything else is left alone.
    fn ids_in(dir: &Path) -> io::Result<Vec<KickRequest>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let Ok(id) = MessageId::parse(e.file_name().as_encoded_bytes()) else { continue };
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if !meta.file_type().is_file() {
                continue;
            }
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            out.push(KickRequest { id, age });
        }
        out.sort_by(|a, b| b.age.cmp(&a.age).then(a.id.as_str().cmp(b.id.as_str())));
        Ok(out)
    }

    /// Requests not yet run.
    pub fn requests(&self) -> io::Result<Vec<KickRequest>> {
        Self::ids_in(&self.dir)
    }

    /// Reports of runs, not yet read by the daemon.
    pub fn reports(&self) -> io::Result<Vec<(MessageId, ExitReport)>> {
        let mut out = Vec::new();
        for r in Self::ids_in(&self.ran)? {
            let path = self.ran.join(r.id.as_str());
            let Ok(bytes) = crate::spool::header_file::read_bytes(&path, Some(64 * 1024)) else { continue };
            out.push((r.id, parse_report(&bytes)));
        }
        Ok(out)
    }

    /// Record a run for these ids, then drop their requests: the report is written first, so a
    /// crash in between at worst runs Exim on them twice (harmless: `-Mc` skips what is done).
    pub fn record(&self, ids: &[MessageId], report: &ExitReport) -> io::Result<()> {
        let text = format!("{}\n{}", report.status, report.stderr);
        for id in ids {
            let tmp = self.ran.join(format!(".{id}.tmp"));
            crate::private_files::write_file(&tmp, text.as_bytes(), crate::private_files::FILE_MODE)?;
            std::fs::rename(&tmp, self.ran.join(id.as_str()))?;
            match std::fs::remove_file(self.dir.join(id.as_str())) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Forget a report once it has been read and said.
    pub fn remove_report(&self, id: &MessageId) -> io::Result<()> {
        remove_if_there(&self.ran.join(id.as_str()))
    }

    /// Forget a request nobody ran.
    pub fn remove_request(&self, id: &MessageId) -> io::Result<()> {
        remove_if_there(&self.dir.join(id.as_str()))
    }

    /// Run Exim on the requests, `batch` ids per run and up to `parallel` runs at once, until
    /// none is left; returns how many were run. The helper's loop and the inline thread both
    /// call this. Runs at once, so that one slow remote delivery does not hold up the rest.
    pub fn run_requests(&self, exim: &EximCommand, flag: &str, batch: usize, parallel: usize) -> io::Result<usize> {
        let mut done = 0;
        loop {
            let ids: Vec<MessageId> = self.requests()?.into_iter().map(|r| r.id).collect();
            if ids.is_empty() {
                return Ok(done);
            }
            for group in ids.chunks(batch.max(1) * parallel.max(1)) {
                std::thread::scope(|s| {
                    let runs: Vec<_> = group
                        .chunks(batch.max(1))
                        .map(|chunk| s.spawn(move || (chunk, run_exim(exim, flag, chunk))))
                        .collect();
                    for run in runs {
                        if let Ok((chunk, report)) = run.join() {
                            self.record(chunk, &report)?;
                        }
                    }
                    Ok::<(), io::Error>(())
                })?;
                done += group.len();
            }
        }
    }

    /// Say that a kicker is running: the daemon reports requests as not run only while this is
    /// older than [`HELPER_SILENT`].
    pub fn heartbeat(&self) -> io::Result<()> {
        let path = self.ran.join(HEARTBEAT);
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(crate::private_files::FILE_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        f.set_modified(SystemTime::now())
    }

    /// How long ago a kicker last said it was running (`None`: never).
    pub fn helper_silent_for(&self) -> Option<Duration> {
        let m = self.ran.join(HEARTBEAT).symlink_metadata().ok()?.modified().ok()?;
        Some(SystemTime::now().duration_since(m).unwrap_or_default())
    }
}

/// The file a kicker touches every [`HEARTBEAT_EVERY`] (in `ran/`, which the kicker does not
/// watch, so that its own heartbeat does not wake it).
const HEARTBEAT: &str = "kicker-alive";
/// How often a kicker says it runs, busy or idle.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A request older than this, with no kicker heard of for as long, is reported as not run.
pub const HELPER_SILENT: Duration = Duration::from_secs(60);

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn parse_report(bytes: &[u8]) -> ExitReport {
    let text = String::from_utf8_lossy(bytes);
    let (status, stderr) = text.split_once('\n').unwrap_or((&text, ""));
    ExitReport { success: status == "exit 0", status: status.to_string(), stderr: stderr.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kick_mode_reads_words_and_the_old_booleans() {
        #[derive(Deserialize)]
        struct T {
            kick: KickMode,
        }
        let read = |s: &str| toml::from_str::<T>(s).map(|t| t.kick).map_err(|e| e.to_string());
        assert_eq!(read("kick = \"helper\""), Ok(KickMode::Helper));
        assert_eq!(read("kick = \"inline\""), Ok(KickMode::Inline));
        assert_eq!(read("kick = \"off\""), Ok(KickMode::Off));
        assert_eq!(read("kick = true"), Ok(KickMode::Inline));
        assert_eq!(read("kick = false"), Ok(KickMode::Off));
        assert!(read("kick = \"yes\"").unwrap_err().contains("kick must be \"helper\", \"inline\" or \"off\""));
        assert!(read("kick = 1").is_err());
    }

    #[test]
    fn a_report_survives_its_file() {
        let r = ExitReport { status: "exit 1".into(), success: false, stderr: "exim: setgroups() failed\n".into() };
        let t = tempfile::tempdir().unwrap();
        let q = KickQueue::new(t.path());
        q.create().unwrap();
        let id = MessageId::parse(b"1xYmS1-0001Cb-2Q").unwrap();
        q.request(std::slice::from_ref(&id)).unwrap();
        assert_eq!(q.requests().unwrap().len(), 1);
        q.record(std::slice::from_ref(&id), &r).unwrap();
        assert!(q.requests().unwrap().is_empty());
        assert_eq!(q.reports().unwrap(), vec![(id.clone(), r)]);
        let ok = parse_report(b"exit 0\n");
        assert!(ok.success);
        q.remove_report(&id).unwrap();
        assert!(q.reports().unwrap().is_empty());
    }

    #[test]
    fn exim_said_keeps_this_message_and_general_lines() {
        let id = MessageId::parse(b"1xYmS1-0001Cb-2Q").unwrap();
        let stderr = "2026-12-02 15:40:57 1xYmS1-0001Cb-2Q unable to set gid=8\n\
                      2026-12-02 15:40:57 1xYmS1-0001Cq-2j => other\n\
                      exim: setgroups() failed: Operation not permitted\n";
        assert_eq!(
            exim_said(stderr, &id),
            "2026-12-02 15:40:57 1xYmS1-0001Cb-2Q unable to set gid=8 | exim: setgroups() failed: Operation not permitted"
        );
    }
}
