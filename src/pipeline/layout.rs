//! The directories a daemon's pipeline names, checked against each other before any mail moves.
//!
//! Each of these lost mail without a word before it was refused: a queuefile directory that is
//! Exim's own `input/` (every message re-queued, taken again, found to owe nothing and deleted);
//! a spool at `/` or `/etc`; directories given relative to wherever the daemon was started; a
//! work directory on another file system than Exim's spool (every re-queue failed for ever with
//! "Invalid cross-device link"). The rules: every directory is absolute; the intake, spoolsift's
//! own directories (`work/`, `quarantine/`, `rejected/`, `state/` under the work directory) and
//! Exim's spool are distinct and none is inside another; the intake and the work directory share
//! a file system (a claim is a rename), and so do the work directory and Exim's spool (a re-queue
//! links or renames into `input/`).

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::config::{ConfigError, PipelineConfig};

/// System directories that are never an Exim spool (nor anything of ours).
const SYSTEM_DIRS: [&str; 16] = [
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/proc", "/root", "/run", "/sbin", "/sys", "/tmp",
    "/usr", "/var",
];

/// One directory of the layout: the key that sets it, and the path.
struct Dir<'a> {
    key: &'static [&'static str],
    what: &'static str,
    path: &'a Path,
}

/// `path` with `.` and `..` resolved by name, and links resolved in the part of it that exists
/// (its nearest existing ancestor), so that a directory not made yet under a linked ancestor is
/// compared where it will really be.
fn normal(path: &Path) -> PathBuf {
    let mut lexical = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                lexical.pop();
            }
            other => lexical.push(other),
        }
    }
    for base in lexical.ancestors() {
        if let Ok(real) = base.canonicalize() {
            let rest = lexical.strip_prefix(base).unwrap_or(Path::new(""));
            return if rest.as_os_str().is_empty() { real } else { real.join(rest) };
        }
    }
    lexical
}

/// The device of the nearest existing ancestor of `path` (a directory not made yet will be made
/// there).
fn device(path: &Path) -> Option<u64> {
    path.ancestors().find_map(|a| std::fs::metadata(a).ok()).map(|m| m.dev())
}

impl PipelineConfig {
    /// Refuse a daemon layout that would lose or strand mail; see the module comment. `on_disk`
    /// also compares file systems (for `watch` and `check-config`, where the directories are
    /// meant to exist), which a parse alone does not.
    pub fn check_layout(&self, on_disk: bool) -> Result<(), ConfigError> {
        let (Some(intake), Some(requeue)) = (&self.intake, &self.requeue) else { return Ok(()) };
        let work_root = &intake.work_directory;
        let (work, quarantine, rejected, state) =
            (work_root.join("work"), work_root.join("quarantine"), work_root.join("rejected"), work_root.join("state"));
        let mut dirs = vec![
            Dir { key: &["requeue", "spool_directory"], what: "Exim's spool", path: &requeue.spool_directory },
            Dir { key: &["intake", "work_directory"], what: "the work directory's work/", path: &work },
            Dir { key: &["intake", "work_directory"], what: "the quarantine", path: &quarantine },
            Dir { key: &["intake", "work_directory"], what: "rejected/", path: &rejected },
            Dir { key: &["intake", "work_directory"], what: "the state directory", path: &state },
        ];
        if let Some(q) = &intake.queuefile_directory {
            dirs.push(Dir { key: &["intake", "queuefile_directory"], what: "the queuefile directory", path: q });
        }
        if let Some(s) = &intake.incoming_spool_directory {
            dirs.push(Dir { key: &["intake", "incoming_spool_directory"], what: "the incoming Exim's spool", path: s });
        }
        for (key, path) in [
            (&["intake", "work_directory"][..], work_root.as_path()),
            (&["requeue", "spool_directory"], requeue.spool_directory.as_path()),
        ]
        .into_iter()
        .chain(dirs.iter().map(|d| (d.key, d.path)))
        {
            if !path.is_absolute() {
                return Err(self.error_at(key, format!("{} must be an absolute path: {}", key[1], path.display())));
            }
        }
        let spool = normal(&requeue.spool_directory);
        if SYSTEM_DIRS.iter().any(|s| Path::new(s) == spool) {
            return Err(self.error_at(
                &["requeue", "spool_directory"],
                format!("spool_directory {} is a system directory, not an Exim spool", spool.display()),
            ));
        }
        let normals: Vec<PathBuf> = dirs.iter().map(|d| normal(d.path)).collect();
        for (i, a) in dirs.iter().enumerate() {
            for (j, b) in dirs.iter().enumerate().skip(i + 1) {
                let (na, nb) = (&normals[i], &normals[j]);
                // Said of the inner directory, and pointing at the setting that put it there.
                let (inner, outer, how) = if na == nb {
                    ((b, nb), (a, na), "is the same directory as")
                } else if na.starts_with(nb) {
                    ((a, na), (b, nb), "is inside")
                } else if nb.starts_with(na) {
                    ((b, nb), (a, na), "is inside")
                } else {
                    continue;
                };
                return Err(self.error_at(
                    inner.0.key,
                    format!("{} ({}) {how} {} ({})", inner.0.what, inner.1.display(), outer.0.what, outer.1.display()),
                ));
            }
        }
        if on_disk {
            let from = intake.queuefile_directory.as_ref().or(intake.incoming_spool_directory.as_ref());
            let pairs = [
                (from.map(PathBuf::as_path), "the intake", "a claim renames each pair into it"),
                (Some(requeue.spool_directory.as_path()), "Exim's spool", "a re-queue links or renames into input/"),
            ];
            let work_dev = device(work_root);
            for (other, what, why) in pairs {
                let Some(other) = other else { continue };
                if work_dev.is_some() && device(other).is_some() && device(other) != work_dev {
                    return Err(self.error_at(
                        &["intake", "work_directory"],
                        format!(
                            "work_directory {} is on another file system than {what} {} ({why})",
                            work_root.display(),
                            other.display()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
