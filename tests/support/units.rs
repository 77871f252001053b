//! Running a program under the restrictions a shipped systemd unit gives it, without systemd:
//! `User=`/`Group=` and the no-new-privileges bit through `setpriv`, the capability bounding set,
//! and the file-system settings that matter to Exim (a read-only log or mail directory, hidden
//! home directories) through a private mount namespace (`unshare -m`).
//!
//! The test's directories stand for the system ones (`/var/log/exim4` → the test Exim's log
//! directory), so the unit's own words decide what is read-only.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Settings that make systemd set no-new-privileges for a service with `User=` (systemd.exec(5),
/// NoNewPrivileges=).
const IMPLY_NNP: [&str; 13] = [
    "SystemCallFilter",
    "SystemCallArchitectures",
    "RestrictAddressFamilies",
    "RestrictNamespaces",
    "PrivateDevices",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectClock",
    "MemoryDenyWriteExecute",
    "RestrictRealtime",
    "RestrictSUIDSGID",
    "LockPersonality",
];

/// What a unit does to the process it starts, as far as these tests emulate it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    pub user: Option<String>,
    pub group: Option<String>,
    pub no_new_privs: bool,
    /// `None`: the full set; `Some([])`: empty; else the capabilities kept (`setuid`, …).
    pub bounding_set: Option<Vec<String>>,
    /// Directories mounted read-only.
    pub read_only: Vec<PathBuf>,
    /// Directories replaced by an empty inaccessible one.
    pub hidden: Vec<PathBuf>,
}

fn yes(v: &str) -> bool {
    matches!(v.trim(), "yes" | "true" | "on" | "1")
}

impl Sandbox {
    /// Read the `[Service]` settings of `unit`. `stands_for` maps system directories to the
    /// test's: each is read-only unless the unit leaves it writable. `homes` is hidden when the
    /// unit says `ProtectHome=yes`.
    pub fn from_unit(unit: &Path, stands_for: &[(&str, &Path)], homes: &Path) -> Sandbox {
        let text = std::fs::read_to_string(unit).unwrap();
        let mut s = Sandbox::default();
        let (mut protect_system, mut writable) = (String::new(), Vec::<String>::new());
        let mut in_service = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            let Some((k, v)) = line.split_once('=') else { continue };
            if !in_service || line.starts_with('#') {
                continue;
            }
            let v = v.trim();
            match k.trim() {
                "User" => s.user = Some(v.to_string()),
                "Group" => s.group = Some(v.to_string()),
                "NoNewPrivileges" => s.no_new_privs |= yes(v),
                "CapabilityBoundingSet" => {
                    s.bounding_set =
                        Some(v.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_ascii_lowercase()).collect())
                }
                "ProtectSystem" => protect_system = v.to_string(),
                "ReadWritePaths" => {
                    writable.extend(v.split_whitespace().map(|p| p.trim_start_matches('-').to_string()))
                }
                "ProtectHome" if yes(v) || v == "tmpfs" => s.hidden.push(homes.to_path_buf()),
                k if IMPLY_NNP.contains(&k) && !v.is_empty() && v != "no" => s.no_new_privs = true,
                _ => {}
            }
        }
        if protect_system == "strict" {
            for (system, test) in stands_for {
                if !writable.iter().any(|w| Path::new(system).starts_with(w)) {
                    s.read_only.push(test.to_path_buf());
                }
            }
        }
        s
    }

    /// A command that runs `program args…` under this sandbox (the caller is root).
    pub fn command(&self, program: &Path, args: &[&std::ffi::OsStr]) -> Command {
        let mut setpriv: Vec<String> = vec!["setpriv".into()];
        if let Some(u) = &self.user {
            setpriv.extend(["--reuid".into(), u.clone(), "--regid".into(), self.group.clone().unwrap_or(u.clone())]);
            setpriv.push("--init-groups".into());
        }
        if self.no_new_privs {
            setpriv.push("--no-new-privs".into());
        }
        if let Some(caps) = &self.bounding_set {
            let mut set = String::from("-all");
            for c in caps {
                set.push_str(&format!(",+{c}"));
            }
            setpriv.extend(["--bounding-set".into(), set]);
        }
        if self.read_only.is_empty() && self.hidden.is_empty() {
            let mut c = Command::new(&setpriv[0]);
            c.args(&setpriv[1..]).arg(program).args(args);
            return c;
        }
        // sh -c 'mounts…; exec "$@"' sh setpriv… program args…
        let mut script = String::from("set -e; ");
        let mut c = Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"]);
        for p in &self.read_only {
            script.push_str(&format!("mount --bind -o ro '{0}' '{0}'; ", p.display()));
        }
        for p in &self.hidden {
            script.push_str(&format!("mount -t tmpfs -o mode=000 none '{}'; ", p.display()));
        }
        script.push_str("exec \"$@\"");
        c.arg(script).arg("sh").args(&setpriv).arg(program).args(args);
        c
    }

    /// The same sandbox with one more restriction, for the failure cases.
    pub fn with(mut self, f: impl FnOnce(&mut Sandbox)) -> Sandbox {
        f(&mut self);
        self
    }
}
