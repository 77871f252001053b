//! Debian's packaged Exim (`exim4-daemon-light`, setuid root, built without queuefile), run with a
//! configuration of the test's own in a temporary directory. The configuration is registered in
//! Debian's `/etc/exim4/trusted_configs` while the instance lives, so that `exim4 -C FILE` keeps
//! its root privilege as the packaged daemon's own configuration does.
//!
//! Two roles, as in docs/exim-incoming.md: `Incoming` (`queue_only`: messages wait in its spool
//! for spoolsift) and `Outgoing` (delivers to a mail spool file per local user, as Debian's
//! default `mail_spool` transport does to `/var/mail`, switching to the recipient's uid).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Debian's Exim binary (exim4-daemon-light, installed).
pub const BIN: &str = "/usr/sbin/exim4";
/// Debian's exim4-daemon-heavy binary, unpacked beside it (the two packages conflict), without
/// its setuid bit: run as root only. It has the `sqlite` lookup.
pub const HEAVY: &str = "/var/cache/spoolsift/exim-heavy/usr/sbin/exim4";
/// The list Debian's Exim reads to decide whether a `-C` file keeps root.
const TRUSTED_CONFIGS: &str = "/etc/exim4/trusted_configs";
/// A local user who is not the Exim user (made by scripts/install-test-deps.sh).
pub const RCPT: &str = "spoolsift-rcpt";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Incoming,
    Outgoing,
}

pub struct DebianExim {
    pub bin: &'static str,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub spool: PathBuf,
    pub log: PathBuf,
    pub mail: PathBuf,
}

/// Whether this machine has Debian's packaged Exim and the test user; the tests say so and fail
/// otherwise (scripts/install-test-deps.sh installs both).
pub fn require() {
    let meta = std::fs::metadata(BIN).unwrap_or_else(|e| panic!("{BIN}: {e} (run scripts/install-test-deps.sh)"));
    assert!(meta.permissions().mode() & 0o4000 != 0, "{BIN} is not setuid");
    let id = Command::new("id").arg("-u").arg(RCPT).output().unwrap();
    assert!(id.status.success(), "no user {RCPT} (run scripts/install-test-deps.sh)");
}

fn chown(path: &Path, spec: &str) {
    let st = Command::new("chown").arg(spec).arg(path).status().unwrap();
    assert!(st.success(), "chown {spec} {}", path.display());
}

/// Add or remove a line of `trusted_configs`, under a lock (tests run in parallel); the new list
/// replaces the old one by a rename, so Exim never reads half a file.
fn edit_trusted(conf: &Path, add: bool) {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/spoolsift-tests-trusted-configs")
        .unwrap();
    lock.lock().unwrap();
    let old = std::fs::read_to_string(TRUSTED_CONFIGS).unwrap_or_default();
    let line = conf.display().to_string();
    let mut lines: Vec<&str> = old.lines().filter(|l| *l != line).collect();
    if add {
        lines.push(&line);
    }
    let tmp = format!("{TRUSTED_CONFIGS}.{}.tmp", std::process::id());
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(&tmp, text).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&tmp, TRUSTED_CONFIGS).unwrap();
}

impl DebianExim {
    pub fn new(role: Role) -> DebianExim {
        DebianExim::with(role, BIN, "")
    }

    /// An instance of `bin` whose delivering router has the extra option lines `router_extra`.
    pub fn with(role: Role, bin: &'static str, router_extra: &str) -> DebianExim {
        DebianExim::listening(role, bin, router_extra, None)
    }

    /// As [`DebianExim::with`], and with `port` set as its SMTP port on 127.0.0.1 (for a daemon
    /// started with `-bd`; nothing listens until then).
    pub fn listening(role: Role, bin: &'static str, router_extra: &str, port: Option<u16>) -> DebianExim {
        require();
        assert!(Path::new(bin).exists(), "{bin} (run scripts/install-test-deps.sh)");
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        // The Exim user and the recipient walk through it.
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (spool, log, mail) = (root.join("spool"), root.join("log"), root.join("mail"));
        for d in [&spool, &log, &mail] {
            std::fs::create_dir(d).unwrap();
        }
        chown(&spool, "Debian-exim:Debian-exim");
        chown(&log, "Debian-exim:Debian-exim");
        // Like /var/mail: the mail group writes, the recipient's delivery process is in it.
        chown(&mail, "root:mail");
        std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o2775)).unwrap();
        let queue_only = if role == Role::Incoming { "queue_only = true\n" } else { "" };
        let listen = port.map_or(String::new(), |p| format!("local_interfaces = 127.0.0.1\ndaemon_smtp_ports = {p}\n"));
        let conf = root.join("configure");
        let text = format!(
            "keep_environment =\n\
             spool_directory = {spool}\n\
             log_file_path = {log}/%slog\n\
             primary_hostname = test.example\n\
             qualify_domain = test.example\n\
             domainlist local_domains = test.example\n\
             never_users = root\n\
             pid_file_path = {root}/exim.pid\n\
             acl_smtp_rcpt = acl_rcpt\n\
             {queue_only}{listen}\
             \nbegin acl\n\nacl_rcpt:\n  accept hosts = : 127.0.0.1\n  deny\n\
             \nbegin routers\n\n\
             local_user:\n  driver = accept\n  domains = +local_domains\n  check_local_user\n  transport = mail_spool\n{router_extra}\
             \nbegin transports\n\n\
             mail_spool:\n  driver = appendfile\n  file = {mail}/$local_part_data\n  delivery_date_add\n  \
             envelope_to_add\n  return_path_add\n  group = mail\n  mode = 0660\n\
             \nbegin retry\n\n* * F,1h,1m\n",
            spool = spool.display(),
            log = log.display(),
            mail = mail.display(),
            root = root.display(),
        );
        std::fs::write(&conf, text).unwrap();
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
        edit_trusted(&conf, true);
        DebianExim { bin, dir, conf, spool, log, mail }
    }

    /// `exim4 -C CONF`, for a pipeline's `exim_command`.
    pub fn argv(&self) -> Vec<String> {
        vec![self.bin.into(), "-C".into(), self.conf.display().to_string()]
    }

    /// Run Exim as root with these arguments.
    pub fn exim(&self, args: &[&str]) -> Output {
        Command::new(self.bin).arg("-C").arg(&self.conf).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Submit a message from the command line, queued only (`-odq`); returns its id.
    pub fn submit(&self, from: &str, rcpts: &[&str], data: &[u8]) -> String {
        let mut child = Command::new(self.bin)
            .arg("-C")
            .arg(&self.conf)
            .args(["-odq", "-oi", "-f", from])
            .args(rcpts)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "submission: {}", String::from_utf8_lossy(&out.stderr));
        let tag =
            String::from_utf8_lossy(data).lines().find_map(|l| l.strip_prefix("Subject: ")).unwrap_or("").to_string();
        // The id is the last `<=` line's; submissions of one test run one after another.
        let log = self.mainlog();
        let line = log.lines().rev().find(|l| l.contains(" <= ")).unwrap_or_else(|| panic!("no <= line for {tag}"));
        line.split_whitespace().nth(2).unwrap().to_string()
    }

    pub fn mainlog(&self) -> String {
        std::fs::read_to_string(self.log.join("mainlog")).unwrap_or_default()
    }

    pub fn paniclog(&self) -> String {
        std::fs::read_to_string(self.log.join("paniclog")).unwrap_or_default()
    }

    /// The ids in the queue (`input/*-H`).
    pub fn queued(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(self.spool.join("input"))
            .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.strip_suffix("-H").map(str::to_string)).collect())
            .unwrap_or_default();
        ids.sort();
        ids
    }

    /// The recipient's mailbox file, as delivered (mbox: one `From ` line per message).
    pub fn mailbox(&self, user: &str) -> String {
        std::fs::read_to_string(self.mail.join(user)).unwrap_or_default()
    }
}

impl Drop for DebianExim {
    fn drop(&mut self) {
        edit_trusted(&self.conf, false);
    }
}
