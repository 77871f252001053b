//! The hand-over directory between the daemon and whoever runs Exim for it.
//!
//! `kick/<id>.<n>` asks for a kick; `kick/ran/<id>.<n>` reports one (Exim's exit status and
//! standard error). Each request has a name of its own, so that a later copy re-queued under the
//! same id is a request of its own, never one a running kick removes with the earlier one's, and
//! its report is never taken for the earlier one's.

use std::collections::HashSet;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use super::{run_exim, ExitReport};
use crate::requeue::exim::EximCommand;
use crate::spool::MessageId;

/// The file a kicker touches every [`HEARTBEAT_EVERY`] (in `ran/`, which the kicker does not
/// watch, so that its own heartbeat does not wake it).
const HEARTBEAT: &str = ".kicker-alive";
/// How often a kicker says it runs, busy or idle.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A request older than this, with no kicker heard of for as long, is reported as not run.
pub const HELPER_SILENT: Duration = Duration::from_secs(60);
/// The largest report read (Exim's standard error is cut at 4 KiB when written).
const MAX_REPORT: u64 = 64 * 1024;

#[derive(Debug, Clone)]
pub struct KickQueue {
    pub dir: PathBuf,
    pub ran: PathBuf,
}

/// One request (or, in `ran/`, one report), with its age.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KickRequest {
    pub id: MessageId,
    /// The file's name: `<id>.<n>`.
    pub name: String,
    pub age: Duration,
}

/// Makes request names unique within this process; the time makes them unique across runs.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

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
        let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        for id in ids {
            loop {
                let name = format!("{id}.{nanos:x}{:x}", SEQUENCE.fetch_add(1, Ordering::Relaxed));
                let path = self.dir.join(&name);
                let created = std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .mode(crate::private_files::FILE_MODE)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(&path);
                match created {
                    Ok(_) => break,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
                }
            }
        }
        Ok(())
    }

    /// Regular files named `<id>.<n>` in `dir`, oldest first. Anything else is left alone.
    fn entries(dir: &Path) -> io::Result<Vec<KickRequest>> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let Ok(name) = e.file_name().into_string() else { continue };
            let Some((id, _)) = name.split_once('.') else { continue };
            let Ok(id) = MessageId::parse(id.as_bytes()) else { continue };
            let Ok(meta) = e.path().symlink_metadata() else { continue };
            if !meta.file_type().is_file() {
                continue;
            }
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            out.push(KickRequest { id, name, age });
        }
        out.sort_by(|a, b| b.age.cmp(&a.age).then(a.name.cmp(&b.name)));
        Ok(out)
    }

    /// Requests not yet run.
    pub fn requests(&self) -> io::Result<Vec<KickRequest>> {
        Self::entries(&self.dir)
    }

    /// Reports of runs, not yet read by the daemon.
    pub fn reports(&self) -> io::Result<Vec<(KickRequest, ExitReport)>> {
        let mut out = Vec::new();
        for r in Self::entries(&self.ran)? {
            let path = self.ran.join(&r.name);
            let Ok(bytes) = crate::spool::header_file::read_bytes(&path, Some(MAX_REPORT)) else { continue };
            out.push((r, parse_report(&bytes)));
        }
        Ok(out)
    }

    /// Record a run of these requests, then drop them: the report is written first, so a crash
    /// in between at worst runs Exim on them twice (harmless: `-Mc` skips what is done).
    pub fn record(&self, requests: &[KickRequest], report: &ExitReport) -> io::Result<()> {
        let text = format!("{}\nstarted {}\n{}", report.status, report.started, report.stderr);
        for r in requests {
            let tmp = self.ran.join(format!(".{}.tmp", r.name));
            crate::private_files::write_file(&tmp, text.as_bytes(), crate::private_files::FILE_MODE)?;
            std::fs::rename(&tmp, self.ran.join(&r.name))?;
            remove_if_there(&self.dir.join(&r.name))?;
        }
        Ok(())
    }

    /// Forget a report once it has been read and said.
    pub fn remove_report(&self, name: &str) -> io::Result<()> {
        remove_if_there(&self.ran.join(name))
    }

    /// Run Exim on the requests until none is left or `stop` is set: `batch` ids per run, up to
    /// `parallel` runs at once, each worker taking the next batch as soon as its run ends (one
    /// slow remote delivery holds up only its own batch). Returns how many were run. The helper's
    /// loop and the inline thread both call this.
    pub fn run_requests(
        &self,
        exim: &EximCommand,
        flag: &str,
        batch: usize,
        parallel: usize,
        stop: &AtomicBool,
    ) -> io::Result<usize> {
        // One listing feeds the workers; the directory is listed again only when they have taken
        // all of it (not once per batch: a backlog of thousands would be listed thousands of times).
        let taken: Mutex<HashSet<String>> = Mutex::default();
        let pending: Mutex<std::collections::VecDeque<KickRequest>> = Mutex::default();
        let done = AtomicU64::new(0);
        let failure: Mutex<Option<io::Error>> = Mutex::default();
        std::thread::scope(|s| {
            for _ in 0..parallel.max(1) {
                s.spawn(|| loop {
                    if stop.load(Ordering::Relaxed) || failure.lock().is_ok_and(|f| f.is_some()) {
                        return;
                    }
                    let mine: Vec<KickRequest> = {
                        let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
                        let mut taken = taken.lock().unwrap_or_else(|p| p.into_inner());
                        if pending.is_empty() {
                            match self.requests() {
                                Ok(listed) => pending.extend(listed.into_iter().filter(|r| !taken.contains(&r.name))),
                                Err(e) => {
                                    *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                                    return;
                                }
                            }
                        }
                        let n = pending.len().min(batch.max(1));
                        let mine: Vec<KickRequest> = pending.drain(..n).collect();
                        taken.extend(mine.iter().map(|r| r.name.clone()));
                        mine
                    };
                    if mine.is_empty() {
                        return;
                    }
                    let ids: Vec<MessageId> = mine.iter().map(|r| r.id.clone()).collect();
                    let report = run_exim(exim, flag, &ids);
                    if let Err(e) = self.record(&mine, &report) {
                        *failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        return;
                    }
                    done.fetch_add(mine.len() as u64, Ordering::Relaxed);
                });
            }
        });
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(done.into_inner() as usize),
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

fn remove_if_there(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `status\nstarted SECS\nstderr…`.
fn parse_report(bytes: &[u8]) -> ExitReport {
    let text = String::from_utf8_lossy(bytes);
    let (status, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let (started, stderr) = match rest.split_once('\n') {
        Some((first, tail)) if first.starts_with("started ") => (first["started ".len()..].parse().unwrap_or(0), tail),
        _ => (0, rest),
    };
    ExitReport { success: status == "exit 0", status: status.to_string(), started, stderr: stderr.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_its_file_and_two_requests_for_one_id_stay_apart() {
        let r = ExitReport {
            status: "exit 1".into(),
            success: false,
            started: 1_795_000_000,
            stderr: "exim: setgroups() failed\n".into(),
        };
        let t = tempfile::tempdir().unwrap();
        let q = KickQueue::new(t.path());
        q.create().unwrap();
        let id = MessageId::parse(b"1xYmS1-0001Cb-2Q").unwrap();
        q.request(std::slice::from_ref(&id)).unwrap();
        let first = q.requests().unwrap();
        assert_eq!(first.len(), 1);
        // A later copy re-queued under the same id while the first one's kick runs.
        q.request(std::slice::from_ref(&id)).unwrap();
        q.record(&first, &r).unwrap();
        let left = q.requests().unwrap();
        assert_eq!(left.len(), 1, "the second request is not removed with the first");
        assert_ne!(left[0].name, first[0].name);
        let reports = q.reports().unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!((&reports[0].0.name, &reports[0].1), (&first[0].name, &r));
        q.remove_report(&first[0].name).unwrap();
        assert!(q.reports().unwrap().is_empty());
        assert!(parse_report(b"exit 0\nstarted 5\n").success);
        assert_eq!(parse_report(b"exit 0\nstarted 5\n").started, 5);
    }
}
