#!/usr/bin/env bash
# Build the Debian package of spoolsift with dpkg-deb (no cargo-deb: it would be one more tool to
# install for what is a directory tree and a control file).
#
#   scripts/build-deb.sh [--binary PATH] [--out DIR]
#
# Without --binary, builds the release binary (`cargo build --release --locked`). Prints the path
# of the .deb. Install it with `dpkg -i`; it puts
#   /usr/bin/spoolsift
#   /lib/systemd/system/spoolsift.service, spoolsift-kick.service
#   /usr/lib/tmpfiles.d/spoolsift.conf    (/var/spool/spoolsift and its queuefile/, Debian-exim, 0750)
#   /etc/spoolsift/default.toml           (a conffile: dpkg keeps the admin's edits on upgrade)
#   /usr/share/doc/spoolsift/             (README and the Exim configuration guides)
# and creates the directories at once. It enables and starts nothing: Exim must be configured
# first (docs/exim.md or docs/exim-incoming.md), then `systemctl enable --now spoolsift
# spoolsift-kick`.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=
out=target/deb
while (($#)); do
  case $1 in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ -z $binary ]]; then
  cargo build --release --locked
  binary=target/release/spoolsift
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT

install -D -m 0755 "$binary" "$root/usr/bin/spoolsift"
strip --strip-debug "$root/usr/bin/spoolsift" 2>/dev/null || true
install -D -m 0644 systemd/spoolsift.service "$root/lib/systemd/system/spoolsift.service"
install -D -m 0644 systemd/spoolsift-kick.service "$root/lib/systemd/system/spoolsift-kick.service"
install -D -m 0644 systemd/spoolsift-exim-in.service "$root/lib/systemd/system/spoolsift-exim-in.service"
install -D -m 0644 systemd/spoolsift.tmpfiles "$root/usr/lib/tmpfiles.d/spoolsift.conf"
install -D -m 0644 pipelines/default.toml "$root/etc/spoolsift/default.toml"
for doc in README.md docs/exim.md docs/exim-incoming.md docs/quarantine.md; do
  install -D -m 0644 "$doc" "$root/usr/share/doc/spoolsift/$(basename "$doc")"
done
install -D -m 0644 docs/exim-in.conf "$root/usr/share/doc/spoolsift/exim-in.conf.example"

mkdir -p "$root/DEBIAN"
installed_kib=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<EOF
Package: spoolsift
Version: $version
Architecture: $arch
Maintainer: spoolsift developers <spoolsift@localhost>
Installed-Size: $installed_kib
Depends: libc6 (>= 2.34), libgcc-s1, adduser
Recommends: exim4-daemon-light | exim4-daemon-heavy, clamav-daemon, liblmdb0
Section: mail
Priority: optional
Description: mail-scanning pipeline for Exim spool files
 spoolsift takes the messages Exim hands it (the queuefile transport, or an
 incoming Exim's queue_only spool), scans them (ClamAV, DCC, ARC, a built-in
 content scanner), and writes them back into Exim's spool by the safe re-queue
 procedure, or quarantines, holds or defers them by policy.
EOF
echo /etc/spoolsift/default.toml >"$root/DEBIAN/conffiles"

# The directories belong to Exim's user, which Debian's exim4-config creates; make it the way
# that package does if Exim is not installed yet.
cat >"$root/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd Debian-exim >/dev/null; then
    adduser --system --group --quiet --home /var/spool/exim4 --no-create-home \
      --disabled-login --force-badname Debian-exim
  fi
  if command -v systemd-tmpfiles >/dev/null 2>&1; then
    systemd-tmpfiles --create /usr/lib/tmpfiles.d/spoolsift.conf
  else
    install -d -m 0750 -o Debian-exim -g Debian-exim /var/spool/spoolsift /var/spool/spoolsift/queuefile
  fi
  # The incoming instance's configuration keeps root with -C only when listed here (Debian's
  # Exim reads this list; it must be root's and not writable by others).
  list=/etc/exim4/trusted_configs
  if [ -d /etc/exim4 ] && ! grep -qxF /etc/exim4/exim-in.conf "$list" 2>/dev/null; then
    echo /etc/exim4/exim-in.conf >>"$list"
    chown root:root "$list"
    chmod 0644 "$list"
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
  fi
fi
exit 0
EOF
cat >"$root/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Stop both before the binary goes; the kicker waits for the Exim runs it has started.
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop spoolsift.service spoolsift-kick.service spoolsift-exim-in.service >/dev/null 2>&1 || true
fi
exit 0
EOF
cat >"$root/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
# The spool may hold mail: it is never removed by the package, not even on purge.
if [ "$1" = purge ] && [ -f /etc/exim4/trusted_configs ]; then
  sed -i '\#^/etc/exim4/exim-in.conf$#d' /etc/exim4/trusted_configs
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
exit 0
EOF
chmod 0755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/spoolsift_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$deb" >/dev/null
echo "$deb"
