//! What a hostile local account can put in the queuefile directory, against the running daemon:
//! links, FIFOs and directories under spool file names are moved aside with what they are (never
//! followed, never read, never quoted), the daemon goes on with the other messages, and SIGTERM
//! stops it within seconds even while a scan is stuck on a service that does not answer.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::made::eicar_text;
use support::{list, poll, standalone_pipeline, start_daemon, Daemon};

const LIMIT: Duration = Duration::from_secs(60);
const SECRET: &str = "root:SECRET-HASH-THAT-MUST-NOT-LEAK:19000:0:99999:7:::";

/// The standalone daemon's directories, with this file's helpers.
struct World(support::Standalone);

impl std::ops::Deref for World {
    type Target = support::Standalone;
    fn deref(&self) -> &support::Standalone {
        &self.0
    }
}

impl World {
    fn new() -> World {
        World(support::Standalone::new())
    }

    fn header_text(id: &str) -> String {
        let subject = "Subject: hostile drops";
        format!(
            "{id}-H\nDebian-exim 102 105\n<drop@example.org>\n1795895471 0\n-received_protocol local\n-body_linecount 1\nXX\n1\nuser@example.org\n\n{:03}  {subject}\n",
            subject.len() + 1
        )
    }

    fn path(&self, id: &str, suffix: char) -> PathBuf {
        self.qf.join(format!("{id}-{suffix}"))
    }

    fn regular(&self, id: &str, suffix: char) {
        let text = match suffix {
            'H' => World::header_text(id),
            _ => format!("{id}-D\nbody\n"),
        };
        std::fs::write(self.path(id, suffix), text).unwrap();
    }
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o666) }, 0, "{}", p.display());
}

#[test]
fn links_fifos_and_directories_are_moved_aside_and_the_daemon_goes_on() {
    let w = World::new();
    let secret = w.root.join("shadow");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    // (id, what the -H is, what the -D is, the kind named in the reason)
    let cases = [
        ("1zzzzz-00000000001-0001", "link", "regular", "a symbolic link"),
        ("1zzzzz-00000000002-0001", "fifo", "regular", "a FIFO"),
        ("1zzzzz-00000000003-0001", "regular", "fifo", "a FIFO"),
        ("1zzzzz-00000000004-0001", "regular", "link", "a symbolic link"),
        ("1zzzzz-00000000005-0001", "regular", "dir", "a directory"),
        ("1zzzzz-00000000006-0001", "dir", "regular", "a directory"),
    ];
    for (id, h, d, _) in cases {
        for (suffix, what) in [('D', d), ('H', h)] {
            let p = w.path(id, suffix);
            match what {
                "regular" => w.regular(id, suffix),
                "link" => std::os::unix::fs::symlink(&secret, &p).unwrap(),
                "fifo" => mkfifo(&p),
                "dir" => std::fs::create_dir(&p).unwrap(),
                _ => unreachable!(),
            }
        }
    }
    let good = "1zzzzz-00000000009-0001";
    w.regular(good, 'D');
    w.regular(good, 'H');

    let pipeline = standalone_pipeline(&w.root, "hostile", "");
    let mut daemon = Daemon(start_daemon(&pipeline, &w.log));
    poll("the good message re-queued", LIMIT, || w.input.join(format!("{good}-H")).exists().then_some(()));
    let rejected = w.root.join("work/rejected");
    poll("every odd pair moved aside", LIMIT, || (list(&rejected).len() == cases.len()).then_some(()));
    assert_eq!(list(&w.qf), Vec::<String>::new(), "nothing left in the queuefile directory");
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon is still running");

    for entry in list(&rejected) {
        let (_, id) = entry.split_once('.').unwrap();
        let (_, h, d, kind) = cases.iter().find(|c| c.0 == id).unwrap();
        let reason = std::fs::read_to_string(rejected.join(&entry).join("reason")).unwrap();
        let odd = if *h != "regular" { 'H' } else { 'D' };
        assert!(
            reason.trim_end().ends_with(&format!("{entry}-{odd} (byte 0): not a regular file ({kind})")),
            "{id} ({h}, {d}): {reason}"
        );
        // Both names are there, as they were: the link still a link, the FIFO a FIFO.
        let mut names = list(&rejected.join(&entry));
        names.sort();
        assert_eq!(names, [format!("{id}-D"), format!("{id}-H"), "reason".into()]);
    }
    // The linked file was never read: its bytes are nowhere.
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(!log.contains("SECRET"), "{log}");
    for entry in list(&rejected) {
        let reason = std::fs::read_to_string(rejected.join(&entry).join("reason")).unwrap();
        assert!(!reason.contains("SECRET"), "{reason}");
    }

    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(daemon.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    let status = poll("the daemon to exit", LIMIT, || daemon.0.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_stops_the_daemon_while_a_scan_is_stuck() {
    let w = World::new();
    // A "clamd" that accepts and never answers: the scan waits for its read timeout (10 min).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let _ = held_tx.send(conn);
        }
    });
    let sections = format!(
        "[stages.clamav]\nservers = [\"tcp:127.0.0.1:{port}\"]\nread_timeout_ms = 600000\nsession_idle_ms = 0\n"
    );
    let pipeline = standalone_pipeline(&w.root, "stuck", &sections);
    let id = "1zzzzz-00000000001-0002";
    w.regular(id, 'D');
    w.regular(id, 'H');
    let mut daemon = Daemon(start_daemon(&pipeline, &w.log));
    // The scan is under way once the fake clamd has its connection.
    let _conn = held_rx.recv_timeout(LIMIT).expect("the clamav stage connected");
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(daemon.0.id() as libc::pid_t, libc::SIGTERM) }, 0);
    // Within a few seconds, not after the 10-minute timeout.
    let status = poll("the daemon to exit after SIGTERM", Duration::from_secs(30), || daemon.0.try_wait().unwrap());
    assert!(status.success(), "{status:?}");
    let log = std::fs::read_to_string(&w.log).unwrap();
    assert!(log.contains("exiting now, their claims stay in the journal for the next start"), "{log}");
    // Nothing was lost: the claim is in the work directory, not delivered, not deleted.
    assert!(!w.input.join(format!("{id}-H")).exists());
    let work: Vec<String> = list(&w.root.join("work/work"));
    assert_eq!(work.len(), 2, "{work:?}");
}

/// The inode of a file.
fn inode(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).unwrap().ino()
}

#[test]
fn a_data_file_others_can_write_is_copied_before_the_scan() {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let w = World::new();
    let pipeline = standalone_pipeline(&w.root, "owners", "");
    // Exim's own: owned by the spool's owner (here, as the test runs, root), mode 0640.
    let own = "1zzzzz-00000000001-0003";
    w.regular(own, 'D');
    std::fs::set_permissions(w.path(own, 'D'), std::fs::Permissions::from_mode(0o640)).unwrap();
    let own_inode = inode(&w.path(own, 'D'));
    w.regular(own, 'H');
    // A local account's: someone else's, writable by all; the dropper keeps it open.
    let foreign = "1zzzzz-00000000002-0003";
    w.regular(foreign, 'D');
    std::os::unix::fs::chown(w.path(foreign, 'D'), Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(w.path(foreign, 'D'), std::fs::Permissions::from_mode(0o666)).unwrap();
    let foreign_inode = inode(&w.path(foreign, 'D'));
    let mut dropper = std::fs::OpenOptions::new().write(true).open(w.path(foreign, 'D')).unwrap();
    w.regular(foreign, 'H');
    // One with a third link the dropper keeps elsewhere.
    let linked = "1zzzzz-00000000003-0003";
    w.regular(linked, 'D');
    std::fs::set_permissions(w.path(linked, 'D'), std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::hard_link(w.path(linked, 'D'), w.root.join("kept-1")).unwrap();
    std::fs::hard_link(w.path(linked, 'D'), w.root.join("kept-2")).unwrap();
    let linked_inode = inode(&w.path(linked, 'D'));
    w.regular(linked, 'H');

    let _daemon = Daemon(start_daemon(&pipeline, &w.log));
    let queued = |id: &str| w.input.join(format!("{id}-D"));
    for id in [own, foreign, linked] {
        poll(&format!("{id} re-queued"), LIMIT, || w.input.join(format!("{id}-H")).exists().then_some(()));
    }
    // The -H is in place at the commit point; the work directory's link to the -D goes after it.
    poll("the work directory emptied", LIMIT, || list(&w.root.join("work/work")).is_empty().then_some(()));
    let spool_owner = std::fs::metadata(&w.input).unwrap().uid();
    assert_eq!(inode(&queued(own)), own_inode, "Exim's own -D is queued as it is (linked)");
    for (id, dropped) in [(foreign, foreign_inode), (linked, linked_inode)] {
        let m = std::fs::metadata(queued(id)).unwrap();
        assert_ne!(m.ino(), dropped, "{id}: a copy is queued, not the dropped inode");
        assert_eq!((m.uid(), m.mode() & 0o7777, m.nlink()), (spool_owner, 0o640, 1), "{id}");
    }
    // Rewriting the dropped file after the verdict changes nothing that is queued.
    let before = std::fs::read(queued(foreign)).unwrap();
    dropper.write_all(b"rewritten after the scan\n").unwrap();
    assert_eq!(std::fs::read(queued(foreign)).unwrap(), before);
    assert_eq!(before, format!("{foreign}-D\nbody\n").into_bytes());
}

#[test]
fn spoolsifts_own_directories_and_files_have_their_modes_whatever_the_umask() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    let pipeline = standalone_pipeline(&w.root, "modes", "");
    let infected = "1zzzzz-00000000001-0004";
    std::fs::write(w.path(infected, 'D'), format!("{infected}-D\n{}\n", eicar_text())).unwrap();
    w.regular(infected, 'H');
    let bad = "1zzzzz-00000000002-0004";
    std::fs::write(w.path(bad, 'D'), format!("{bad}-D\nbody\n")).unwrap();
    std::fs::write(w.path(bad, 'H'), format!("{bad}-H\nnot a spool file\n")).unwrap();
    let _daemon = Daemon(start_daemon(&pipeline, &w.log));
    let (quarantine, rejected) = (w.root.join("work/quarantine"), w.root.join("work/rejected"));
    poll("both handled", LIMIT, || (list(&quarantine).len() == 1 && list(&rejected).len() == 1).then_some(()));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    for d in ["work", "quarantine", "rejected", "state"] {
        assert_eq!(mode(&w.root.join("work").join(d)), 0o750, "{d}/");
    }
    let q = quarantine.join(&list(&quarantine)[0]);
    assert_eq!(mode(&q), 0o750);
    assert_eq!(mode(&q.join("verdict.json")), 0o640);
    for suffix in ['H', 'D'] {
        assert_eq!(mode(&q.join(format!("{infected}-{suffix}"))), 0o600, "quarantined -{suffix}");
    }
    let r = rejected.join(&list(&rejected)[0]);
    assert_eq!(mode(&r), 0o750);
    assert_eq!(mode(&r.join("reason")), 0o640);
}

/// A small tmpfs mounted for the test, unmounted when it ends.
struct SmallFs(PathBuf);

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_is_an_error_not_a_crash() {
    let w = World::new();
    let mnt = w.root.join("full");
    std::fs::create_dir_all(&mnt).unwrap();
    let ok = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&mnt).status();
    assert!(ok.is_ok_and(|s| s.success()), "mount a tmpfs (the tests run as root)");
    let _mounted = SmallFs(mnt.clone());
    for d in ["q", "s/input", "w"] {
        std::fs::create_dir_all(mnt.join(d)).unwrap();
    }
    // Fill it.
    let _ = std::fs::write(mnt.join("fill"), vec![0u8; 128 * 1024]);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_spoolsift"))
        .args(["watch", "--no-exim", "--once", "--queuefile-dir"])
        .arg(mnt.join("q"))
        .arg("--work-dir")
        .arg(mnt.join("w"))
        .arg("--spool-dir")
        .arg(mnt.join("s"))
        .output()
        .unwrap();
    // Before: killed by SIGBUS inside LMDB at every start.
    assert_eq!(o.status.code(), Some(2), "{:?}", o.status);
    let state = mnt.join("w/state");
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "spoolsift watch: {}: only 0 bytes free on the file system of {}; the database needs at least 1048576\n",
            state.display(),
            state.display()
        )
    );
}

#[test]
fn a_lease_on_a_dropped_file_does_not_stop_the_daemon() {
    use std::os::fd::AsRawFd;
    let w = World::new();
    let id = "1zzzzz-00000000001-0005";
    w.regular(id, 'D');
    w.regular(id, 'H');
    // The dropper holds a read lease: an open for writing now fails with EWOULDBLOCK (under
    // O_NONBLOCK), and the lease holder is sent SIGIO, which this test process ignores.
    // SAFETY: signal(2) with SIG_IGN; fcntl(2) on a descriptor we own.
    unsafe { libc::signal(libc::SIGIO, libc::SIG_IGN) };
    let held = std::fs::File::open(w.path(id, 'D')).unwrap();
    assert_eq!(
        unsafe { libc::fcntl(held.as_raw_fd(), libc::F_SETLEASE, libc::F_RDLCK) },
        0,
        "{}",
        std::io::Error::last_os_error()
    );
    let pipeline = standalone_pipeline(&w.root, "lease", "");
    let mut daemon = Daemon(start_daemon(&pipeline, &w.log));
    poll("re-queued despite the lease", LIMIT, || w.input.join(format!("{id}-H")).exists().then_some(()));
    assert!(daemon.0.try_wait().unwrap().is_none(), "the daemon is still running");
    drop(held);
}

#[test]
fn an_envelope_exim_did_not_write_is_not_queued() {
    let w = World::new();
    let forged = "1zzzzz-00000000001-0006";
    w.regular(forged, 'D');
    w.regular(forged, 'H');
    // A local account's -H: any sender, any recipients, past Exim's ACLs.
    std::os::unix::fs::chown(w.path(forged, 'H'), Some(65534), Some(65534)).unwrap();
    let good = "1zzzzz-00000000002-0006";
    w.regular(good, 'D');
    w.regular(good, 'H');
    let pipeline = standalone_pipeline(&w.root, "envelope", "");
    let _daemon = Daemon(start_daemon(&pipeline, &w.log));
    poll("the good message re-queued", LIMIT, || w.input.join(format!("{good}-H")).exists().then_some(()));
    let rejected = w.root.join("work/rejected");
    poll("the forged one moved aside", LIMIT, || (list(&rejected).len() == 1).then_some(()));
    assert!(!w.input.join(format!("{forged}-H")).exists());
    let entry = list(&rejected).pop().unwrap();
    let reason = std::fs::read_to_string(rejected.join(&entry).join("reason")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let exim = std::fs::metadata(&w.input).unwrap().uid();
    assert!(
        reason.ends_with(&format!(
            "{entry}-H: owned by uid 65534, not by Exim's user (uid {exim}): an envelope Exim did not write is not queued\n"
        )),
        "{reason}"
    );
}
