#!/usr/bin/env bash
# Install what the test suite needs for its real-Exim work (Debian 12), idempotently:
#   * the build dependencies of the private queuefile-capable Exim (scripts/build-exim.sh;
#     libidn-dev/libidn2-dev are for SUPPORT_I18N, i.e. SMTPUTF8),
#   * the Debian-exim user and group that Exim runs as,
#   * swaks (SMTP client for fixtures) and lmdb-utils (mdb_stat/mdb_dump to inspect state stores),
#   * clamav-daemon (clamd) for the ClamAV stage's tests; they run their own clamd with a
#     signature DB written at run time (scripts/clamd-test.sh), so no freshclam download;
#     clamdscan for its --ping, which clamd-test.sh uses to wait until clamd answers,
#   * python3-dkim (dkimpy; its ARC code needs python3-authres, Ed25519 python3-nacl) to sign and
#     verify ARC chains against our implementation, and
#     dnsmasq as a real DNS server on a loopback port for the ARC key lookups (the tests start
#     their own; the package's service is not needed),
#   * spamd, spamc and spamassassin (SpamAssassin 4 is split into these packages on Debian 12; the
#     rules ship with spamassassin, so no sa-update download) for the spamd stage's tests, and
#     rspamd for the rspamd stage's; both are run by the tests with a configuration of their own
#     on loopback (scripts/spamd-test.sh, scripts/rspamd-test.sh), rspamd resolving through a
#     loopback dnsmasq,
#   * exim4-daemon-light: Debian's own Exim (setuid root, no queuefile), for the delivery kick
#     under the shipped units' restrictions and the stock-host two-instance mode
#     (tests/kick_debian_exim.rs; each test runs it with a configuration of its own), and
#   * spoolsift-rcpt, a local user who is not the Exim user, for it to deliver to, and
#   * systemd, for `systemd-analyze verify` of the units as the package installs them
#     (tests/package.rs; nothing is started by it).
# Must run as root. Safe to run again: nothing is installed or created twice. The package lists
# are refreshed before anything is installed, never skipped (see below).
#
# clamav-daemon (and clamav-freshclam, which it depends on), spamd and rspamd ship daemons. Nothing
# is started by their postinsts when /usr/sbin/policy-rc.d exits 101 (as in our image) or there is
# no init system; on a machine where they do start, the tests are unaffected, since they use
# their own socket and port.
#
# exim4-daemon-light brings exim4-config, whose postinst creates the Debian-exim account; it is
# also created below, the same way, should an earlier install have been cut short before it. On a
# machine whose init starts services, the package's own Exim daemon starts on port 25; the tests
# use their own ports and spools, so it does not matter to them.
set -euo pipefail

PACKAGES=(
  build-essential pkg-config dpkg-dev xz-utils
  libpcre2-dev libdb5.3-dev libssl-dev libspf2-dev liblmdb-dev
  libidn-dev libidn2-dev
  swaks lmdb-utils adduser
  clamav-daemon clamdscan
  python3-dkim python3-authres python3-nacl dnsmasq
  spamd spamc spamassassin rspamd
  exim4-daemon-light
  systemd
)

if [[ $(id -u) -ne 0 ]]; then
  echo "install-test-deps.sh: must run as root (apt-get, adduser)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${PACKAGES[@]}"; do
  # dpkg-query prints "install ok installed" only for a fully installed package.
  if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} > 0)); then
  # Always refresh the package lists before installing. A fresh machine's lists are stale: a
  # package may still have a candidate there while the exact versions of its dependencies are
  # gone from the mirror, and the install then fails ("Depends: libpcre2-8-0 (= ...) but ... is to
  # be installed"). Checking for a missing candidate does not catch that.
  apt-get update
  echo "install-test-deps.sh: installing ${missing[*]}"
  if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    # A mirror can change between the update and the install (a new version published in
    # between): refresh once more and retry once before giving up.
    echo "install-test-deps.sh: install failed; refreshing the package lists and retrying once" >&2
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  fi
else
  echo "install-test-deps.sh: all packages already installed"
fi

# The account Exim runs as. Same options as Debian's exim4-config postinst, so a machine that
# later installs Debian's Exim finds the account it expects.
# --force-badname: the capital letter in "Debian-exim" fails adduser's default name check.
if ! getent passwd Debian-exim >/dev/null; then
  if getent group Debian-exim >/dev/null; then
    group_opt=(--ingroup Debian-exim)
  else
    group_opt=(--group)
  fi
  adduser --system "${group_opt[@]}" --quiet --home /var/spool/exim4 --no-create-home \
    --disabled-login --force-badname Debian-exim
elif ! getent group Debian-exim >/dev/null; then
  addgroup --system --quiet --force-badname Debian-exim
fi
echo "install-test-deps.sh: Debian-exim is $(id Debian-exim)"

# The recipient of tests/kick_debian_exim.rs: delivering to it makes Exim switch uid, which is
# what a sandbox can break. Its home exists (Exim's appendfile changes into it).
if ! getent passwd spoolsift-rcpt >/dev/null; then
  useradd --system --create-home --home-dir /home/spoolsift-rcpt --shell /usr/sbin/nologin spoolsift-rcpt
fi
echo "install-test-deps.sh: spoolsift-rcpt is $(id spoolsift-rcpt)"

# Debian's exim4-daemon-heavy conflicts with -light, so it is not installed: its binary is
# unpacked into /var/cache/spoolsift/exim-heavy (no setuid bit; the tests run it as root) and its
# libraries are installed. tests/verdicts_sqlite.rs uses its `sqlite` lookup, the one a stock
# heavy Exim has for spoolsift's verdicts.
HEAVY=/var/cache/spoolsift/exim-heavy
if [[ ! -x $HEAVY/usr/sbin/exim4 ]]; then
  libs=$(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces \
    --no-enhances exim4-daemon-heavy | awk '/Depends:/{print $2}' | grep '^lib' | sort -u)
  # shellcheck disable=SC2086
  apt-get install -y --no-install-recommends $libs
  tmp=$(mktemp -d)
  chmod 755 "$tmp" # apt's download user writes there
  (cd "$tmp" && apt-get download exim4-daemon-heavy)
  mkdir -p "$HEAVY"
  dpkg-deb -x "$tmp"/exim4-daemon-heavy_*.deb "$HEAVY"
  rm -rf "$tmp"
fi
echo "install-test-deps.sh: $("$HEAVY/usr/sbin/exim4" -bV 2>/dev/null | head -1) (heavy) in $HEAVY"
