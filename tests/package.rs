//! The Debian package: built by scripts/build-deb.sh (from the binary under test), installed on
//! this machine with `dpkg -i`, and checked as an admin would: the files where they belong, the
//! spool directories with their owner and mode, the installed config accepted by the installed
//! binary, the units accepted by `systemd-analyze verify`. Purged at the end.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Purges the package however the test ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "spoolsift"]).output();
    }
}

fn installed_before() -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "spoolsift"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout) == "install ok installed")
}

#[test]
fn the_package_installs_and_its_config_and_units_check() {
    let out = tempfile::tempdir().unwrap();
    let deb = run(Command::new("bash")
        .arg(support::repo_root().join("scripts/build-deb.sh"))
        .args(["--binary", env!("CARGO_BIN_EXE_spoolsift"), "--out"])
        .arg(out.path()));
    let deb = deb.trim();
    let version = env!("CARGO_PKG_VERSION");
    let arch = run(Command::new("dpkg").arg("--print-architecture"));
    assert!(deb.ends_with(&format!("/spoolsift_{version}_{}.deb", arch.trim())), "{deb}");

    let mut files: Vec<String> = run(Command::new("dpkg-deb").args(["--contents", deb]))
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.split_whitespace().last().unwrap().trim_start_matches('.').to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "/etc/spoolsift/default.toml",
            "/lib/systemd/system/spoolsift-exim-in.service",
            "/lib/systemd/system/spoolsift-kick.service",
            "/lib/systemd/system/spoolsift.service",
            "/usr/bin/spoolsift",
            "/usr/lib/tmpfiles.d/spoolsift.conf",
            "/usr/share/doc/spoolsift/README.md",
            "/usr/share/doc/spoolsift/exim-in.conf.example",
            "/usr/share/doc/spoolsift/exim-incoming.md",
            "/usr/share/doc/spoolsift/exim.md",
            "/usr/share/doc/spoolsift/quarantine.md",
        ]
    );
    assert_eq!(
        run(Command::new("dpkg-deb").args(["--field", deb, "Package", "Version"])),
        format!("Package: spoolsift\nVersion: {version}\n")
    );

    // A package an admin installed on this machine is not the test's to replace and purge.
    assert!(!installed_before(), "spoolsift is installed on this machine; this test installs and purges its own");
    let _installed = Installed;
    run(Command::new("dpkg").args(["--install", deb]));
    assert_eq!(run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "spoolsift"])), "install ok installed");
    let conffiles = run(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", "spoolsift"]));
    assert!(conffiles.trim_start().starts_with("/etc/spoolsift/default.toml "), "{conffiles}");

    assert_eq!(run(Command::new("/usr/bin/spoolsift").arg("--version")), format!("spoolsift {version}\n"));
    assert_eq!(
        run(Command::new("/usr/bin/spoolsift").args(["check-config", "/etc/spoolsift/default.toml"])),
        "ok: /etc/spoolsift/default.toml (default): stages [arc, clamav, content, dkim], watch\n"
    );
    let exim = nix_ids("Debian-exim");
    for dir in ["/var/spool/spoolsift", "/var/spool/spoolsift/queuefile", "/var/spool/exim4-in"] {
        let m = std::fs::metadata(dir).unwrap();
        assert!(m.is_dir(), "{dir}");
        assert_eq!((m.uid(), m.gid(), m.permissions().mode() & 0o7777), (exim.0, exim.1, 0o750), "{dir}");
    }

    // The incoming Exim's configuration is registered, so that `-C` keeps root.
    let trusted = std::fs::read_to_string("/etc/exim4/trusted_configs").unwrap();
    assert_eq!(trusted.lines().filter(|l| *l == "/etc/exim4/exim-in.conf").count(), 1, "{trusted}");

    // The units as installed, with the binary they name in place.
    {
        let v = Command::new("systemd-analyze")
            .args([
                "verify",
                "/lib/systemd/system/spoolsift.service",
                "/lib/systemd/system/spoolsift-kick.service",
                "/lib/systemd/system/spoolsift-exim-in.service",
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&v.stderr);
        assert!(v.status.success(), "systemd-analyze verify: {said}");
        assert!(!said.contains("spoolsift"), "systemd-analyze verify: {said}");
    }

    // A purge takes the incoming configuration off Exim's list again, and leaves the spools.
    run(Command::new("dpkg").args(["--purge", "spoolsift"]));
    let trusted = std::fs::read_to_string("/etc/exim4/trusted_configs").unwrap_or_default();
    assert!(!trusted.lines().any(|l| l == "/etc/exim4/exim-in.conf"), "{trusted}");
    assert!(std::path::Path::new("/var/spool/spoolsift").is_dir());
}

/// The uid and gid of a system account.
fn nix_ids(name: &str) -> (u32, u32) {
    let line = run(Command::new("getent").args(["passwd", name]));
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap())
}
