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
//! sandbox) runs Exim on them and writes what Exim said into `kick/ran/`; the daemon reads
//! that report, looks at Exim's spool and says what became of each message
//! ([`KickOutcome`]). With `kick = "inline"` the daemon runs the same loop in a thread of its own
//! (for a daemon that is not sandboxed); with `kick = "off"` Exim's queue runner delivers.
//!
//! Nothing here can lose a message: a kick that never runs leaves it queued for the queue
//! runner. What a failed kick can do is leave a message frozen (Exim's queue runner then leaves
//! it alone until `timeout_frozen_after` bounces it) or delivered and still queued (it may be
//! delivered again); those are the outcomes reported as errors.

use std::path::Path;

use serde::Deserialize;

use super::exim::EximCommand;
use super::target::TargetSpool;
use crate::spool::{paths, DataLock, LockProbe, MessageId, SpoolHeader};

mod queue;
pub use queue::{KickQueue, KickRequest, HEARTBEAT_EVERY, HELPER_SILENT};

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
            // The boolean of earlier versions. `true` had the daemon run Exim itself, which its
            // sandbox breaks; what it asked for, a kick, is now the helper's.
            Raw::Bool(true) => Ok(KickMode::Helper),
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

impl std::fmt::Display for KickMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KickMode::Helper => "helper",
            KickMode::Inline => "inline",
            KickMode::Off => "off",
        })
    }
}

/// What one `exim -Mc` run said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// `exit N`, `signal N`, or `not started: why`.
    pub status: String,
    pub success: bool,
    /// Unix seconds when the run started: a message log written since then shows that Exim
    /// tried the message.
    pub started: u64,
    /// Exim's standard error: its log lines about these messages, or why it stopped.
    pub stderr: String,
}

/// The most of Exim's standard error kept per run (it is for the log line).
const MAX_STDERR: usize = 4096;

/// Run `exim <flag> id…` and wait for it. Exim delivers each message in turn before it exits.
pub fn run_exim(exim: &EximCommand, flag: &str, ids: &[MessageId]) -> ExitReport {
    let started = crate::state::journal::now_secs();
    let mut cmd = match exim.command() {
        Ok(c) => c,
        Err(e) => {
            return ExitReport { status: format!("not started: {e}"), success: false, started, stderr: String::new() }
        }
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
            started,
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
            ExitReport { status, success: out.status.success(), started, stderr }
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

/// Look at Exim's spool after a run and say what became of `id`. The exit status is the batch's
/// (`exim -M` forks for every id but the last and reports only that one), so a message is
/// `failed` only when Exim did not exit 0 and left no trace of trying it.
pub fn classify(target: &TargetSpool, id: &MessageId, run: &ExitReport) -> KickOutcome {
    let input = &target.input;
    let find = |suffix| paths::candidate_paths(input, id, suffix).into_iter().find(|p| p.exists());
    let Some(header) = find('H') else { return KickOutcome::Delivered };
    // Another Exim process (a queue runner) delivering it now holds the -D's lock; its -J is
    // live, not left behind.
    if let Some(data) = find('D') {
        if DataLock::peek(&data, id.as_str().len() as u64 + 3).ok() == Some(LockProbe::Locked) {
            return KickOutcome::StillQueued("another Exim process is delivering it".into());
        }
    }
    let said = exim_said(&run.stderr, id);
    // The message log sits in the same place under msglog/ as the -H under input/.
    let split = header.parent() != Some(input.as_path());
    let (last_log, tried) = msglog_tail(input, id, split, run.started);
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
    if !run.success && !tried {
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

/// The last line of Exim's per-message log (`msglog/<id>`), where it says why it deferred, and
/// whether the log was written since `since` (Exim tried the message).
fn msglog_tail(input: &Path, id: &MessageId, split: bool, since: u64) -> (String, bool) {
    let Some(spool) = input.parent() else { return (String::new(), false) };
    let path = paths::message_dir(&spool.join("msglog"), id, split).join(id.as_str());
    let Ok((file, meta)) = crate::spool::open::open_regular_with_metadata(&path, false) else {
        return (String::new(), false);
    };
    let meta = Some(meta);
    let tried = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|t| t.as_secs() >= since);
    // Only the tail: a message log grows by a few lines per attempt, and only the last is wanted.
    let len = meta.map_or(0, |m| m.len());
    let from = len.saturating_sub(4096);
    let mut buf = vec![0; (len - from) as usize];
    use std::os::unix::fs::FileExt;
    let n = file.read_at(&mut buf, from).unwrap_or(0);
    buf.truncate(n);
    let text = String::from_utf8_lossy(&buf);
    (text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string(), tried)
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
        assert_eq!(read("kick = true"), Ok(KickMode::Helper));
        assert_eq!(read("kick = false"), Ok(KickMode::Off));
        assert!(read("kick = \"yes\"").unwrap_err().contains("kick must be \"helper\", \"inline\" or \"off\""));
        assert!(read("kick = 1").is_err());
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
