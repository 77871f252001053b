#!/usr/bin/env bash
# Build a private Exim with the (unpatched) queuefile transport for the test suite.
#
#   scripts/build-exim.sh bookworm   Exim 4.96 from Debian 12's exim4 source package (Debian
#                                    patches applied): old 16-character message ids
#   scripts/build-exim.sh trixie     Exim 4.98.2, the upstream orig tarball of Debian 13's exim4
#                                    source package (no Debian patches): new 23-character ids
#
# Debian's own Exim binaries lack queuefile, ARC, DCC and the lmdb lookup, so the tests need this
# build. The queuefile transport is deliberately left as upstream ships it (no batch_max): the
# project must face the real once-per-recipient behaviour.
#
# Installs into  ${SPOOLSIFT_EXIM_CACHE:-/var/cache/spoolsift/exim}/SERIES :
#   bin/exim (setuid root, 4755), bin/exim4 -> exim, a few utilities (exim_dumpdb, exipick, ...),
#   trusted_configs (root 0644; scripts/exim-test.sh appends the configs it writes, so that
#   `exim -C <that config>` keeps root), configure (a minimal compiled-in default, so that a
#   bare `exim -bV` works), build-stamp (recipe hash, source version, build time).
# Idempotent: if bin/exim exists and build-stamp records the same recipe hash, nothing is done.
# Prints the binary's path as the last line of output. Must run as root (setuid install).
# Needs the packages of scripts/install-test-deps.sh. The source comes through a temporary
# deb-src list in a temporary directory, so the system's apt configuration is left alone; the
# mirror is the one in the system's apt sources unless SPOOLSIFT_DEBIAN_MIRROR is set.
set -euo pipefail

usage() {
  echo "usage: $0 bookworm|trixie" >&2
  exit 2
}
[[ $# -eq 1 ]] || usage
SERIES=$1
case $SERIES in
  bookworm) SRC_DIR_GLOB='exim4-4.96' ;;
  trixie) SRC_DIR_GLOB='exim-4.98*' ;;
  *) usage ;;
esac

if [[ $(id -u) -ne 0 ]]; then
  echo "build-exim.sh: must run as root (installs a setuid-root binary)" >&2
  exit 1
fi

CACHE=${SPOOLSIFT_EXIM_CACHE:-/var/cache/spoolsift/exim}
PREFIX=$CACHE/$SERIES

# The Local/Makefile: build options from the project's probe of real components, plus
# SUPPORT_I18N (SMTPUTF8) so fixtures can show the -smtputf8 spool option.
local_makefile() {
  cat <<MK
BIN_DIRECTORY=$PREFIX/bin
CONFIGURE_FILE=$PREFIX/configure
TRUSTED_CONFIG_LIST=$PREFIX/trusted_configs
EXIM_USER=ref:Debian-exim
SPOOL_DIRECTORY=$PREFIX/spool
LOG_FILE_PATH=$PREFIX/log/%slog
ROUTER_ACCEPT=yes
ROUTER_DNSLOOKUP=yes
ROUTER_MANUALROUTE=yes
ROUTER_REDIRECT=yes
TRANSPORT_APPENDFILE=yes
SUPPORT_MAILDIR=yes
TRANSPORT_PIPE=yes
TRANSPORT_SMTP=yes
TRANSPORT_LMTP=yes
LOOKUP_DBM=yes
LOOKUP_LSEARCH=yes
LOOKUP_DNSDB=yes
LOOKUP_LMDB=yes
LOOKUP_LIBS=-llmdb
PCRE2_CONFIG=yes
USE_OPENSSL=yes
TLS_LIBS=-lssl -lcrypto
USE_DB=yes
DBMLIB=-ldb
WITH_CONTENT_SCAN=yes
DISABLE_MAL_AVE=yes
DISABLE_MAL_KAV=yes
DISABLE_MAL_MKS=yes
SUPPORT_SPF=yes
LDFLAGS += -lspf2
SUPPORT_I18N=yes
SUPPORT_I18N_2008=yes
LDFLAGS += -lidn -lidn2
EXPERIMENTAL_ARC=yes
EXPERIMENTAL_DCC=yes
EXPERIMENTAL_QUEUEFILE=yes
FIXED_NEVER_USERS=root
HEADERS_CHARSET="ISO-8859-1"
SYSTEM_ALIASES_FILE=/etc/aliases
EXIM_TMPDIR="/tmp"
MK
}

# Bump LAYOUT when what gets installed changes in a way the Makefile text does not show.
LAYOUT=2
RECIPE_HASH=$({
  echo "series=$SERIES layout=$LAYOUT"
  local_makefile
} | sha256sum | cut -d' ' -f1)
STAMP=$PREFIX/build-stamp

already_built() {
  [[ -x $PREFIX/bin/exim && -f $STAMP ]] && grep -qx "recipe $RECIPE_HASH" "$STAMP"
}

mkdir -p "$CACHE"
# One build per series at a time: parallel test runs may all call this script.
exec 9>"$CACHE/.lock-$SERIES"
flock 9

if already_built; then
  echo "build-exim.sh: $SERIES is up to date ($(sed -n 's/^source //p' "$STAMP"))" >&2
  echo "$PREFIX/bin/exim"
  exit 0
fi

for p in build-essential pkg-config dpkg-dev xz-utils libpcre2-dev libdb5.3-dev libssl-dev \
  libspf2-dev liblmdb-dev libidn-dev libidn2-dev; do
  if [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true) != "install ok installed" ]]; then
    echo "build-exim.sh: package $p is missing; run scripts/install-test-deps.sh first" >&2
    exit 1
  fi
done
if ! getent passwd Debian-exim >/dev/null; then
  echo "build-exim.sh: user Debian-exim is missing; run scripts/install-test-deps.sh first" >&2
  exit 1
fi

started=$SECONDS
W=$(mktemp -d "${TMPDIR:-/tmp}/spoolsift-exim-build.XXXXXX")
trap 'rm -rf "$W"' EXIT

# --- source ----------------------------------------------------------------------------------
mirror=${SPOOLSIFT_DEBIAN_MIRROR:-}
if [[ -z $mirror && -f /etc/apt/sources.list.d/debian.sources ]]; then
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
  mirror=$(awk '$1 == "deb" && $2 !~ /^\[/ {print $2; exit} $1 == "deb" {for (i = 3; i <= NF; i++) if ($i ~ /^(http|https|ftp|file):/) {print $i; exit}}' /etc/apt/sources.list)
fi
[[ -n $mirror ]] || {
  echo "build-exim.sh: no Debian mirror found; set SPOOLSIFT_DEBIAN_MIRROR" >&2
  exit 1
}

mkdir -p "$W/apt/lists/partial" "$W/apt/cache/archives/partial" "$W/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $SERIES main" >"$W/apt/sources.list"
APT=(-o Dir::Etc::sourcelist="$W/apt/sources.list" -o Dir::Etc::sourceparts=-
  -o Dir::State::Lists="$W/apt/lists" -o Dir::Cache="$W/apt/cache"
  # The work dir is root-only (mktemp), so apt's _apt sandbox user could not write into it.
  -o APT::Sandbox::User=root)
apt-get "${APT[@]}" update
src_version=$(apt-cache "${APT[@]}" showsrc exim4 | awk '/^Version:/{print $2; exit}')

cd "$W/src"
if [[ $SERIES == bookworm ]]; then
  # Full source package: dpkg-source unpacks it and applies Debian's patches (among them the
  # default exim_path BIN_DIRECTORY/exim4, hence the exim4 symlink below).
  apt-get "${APT[@]}" source exim4
else
  # Only the upstream tarball: trixie's index lists a Debian revision whose .dsc and
  # .debian.tar.xz the archive no longer serves (404), while the orig tarball is still there.
  # --tar-only asks for just that; a failure is still accepted when the tarball arrived.
  if ! apt-get "${APT[@]}" source --tar-only exim4; then
    echo "build-exim.sh: apt-get source failed; continuing only if the orig tarball is present" >&2
  fi
  shopt -s nullglob
  tarballs=(exim4_*.orig.tar.*)
  shopt -u nullglob
  if [[ ${#tarballs[@]} -ne 1 ]]; then
    echo "build-exim.sh: no exim4 orig tarball was downloaded for $SERIES" >&2
    exit 1
  fi
  tar -xf "${tarballs[0]}"
fi
shopt -s nullglob
# shellcheck disable=SC2206 # the glob is meant to expand here
srcdirs=($SRC_DIR_GLOB)
shopt -u nullglob
if [[ ${#srcdirs[@]} -ne 1 || ! -f ${srcdirs[0]}/src/transports/queuefile.c ]]; then
  echo "build-exim.sh: expected one source tree $SRC_DIR_GLOB in $W/src, found: ${srcdirs[*]:-none}" >&2
  exit 1
fi
cd "${srcdirs[0]}"
if grep -q batch_max src/transports/queuefile.c; then
  echo "build-exim.sh: this queuefile.c already has batch_max; the tests need the unpatched transport" >&2
  exit 1
fi

# --- build -----------------------------------------------------------------------------------
local_makefile >Local/Makefile
fetched=$SECONDS
make -j"$(nproc)" >"$W/make.log" 2>&1 || {
  tail -n 60 "$W/make.log" >&2
  echo "build-exim.sh: make failed" >&2
  exit 1
}
built=$SECONDS
shopt -s nullglob
builddirs=(build-*)
shopt -u nullglob
B=${builddirs[0]}

# --- install ---------------------------------------------------------------------------------
install -d -o root -g root -m 0755 "$PREFIX" "$PREFIX/bin"
# Write next to the target and rename, so a running test never sees a half-written binary.
install -o root -g root -m 4755 "$B/exim" "$PREFIX/bin/exim.new"
mv -f "$PREFIX/bin/exim.new" "$PREFIX/bin/exim"
ln -sfn exim "$PREFIX/bin/exim4"
for u in exim_dumpdb exim_fixdb exim_tidydb exim_lock exipick exim_msgdate; do
  if [[ -f $B/$u ]]; then
    install -o root -g root -m 0755 "$B/$u" "$PREFIX/bin/$u"
  fi
done
# Exim refuses a trusted list that is not root-owned or is writable by group/other.
if [[ ! -f $PREFIX/trusted_configs ]]; then
  install -o root -g root -m 0644 /dev/null "$PREFIX/trusted_configs"
fi
cat >"$PREFIX/configure" <<'CONF'
# Compiled-in default configuration of the spoolsift test Exim. Tests always pass their own
# configuration with -C (listed in trusted_configs); this file only lets `exim -bV` run.
keep_environment =
CONF
chown root:root "$PREFIX/configure"
chmod 0644 "$PREFIX/configure"

if ! "$PREFIX/bin/exim" -bV >"$W/bV.txt" 2>&1; then
  cat "$W/bV.txt" >&2
  echo "build-exim.sh: the new binary does not run" >&2
  exit 1
fi
for want in Experimental_QUEUEFILE Experimental_ARC Experimental_DCC ' lmdb' queuefile I18N; do
  if ! grep -q -- "$want" "$W/bV.txt"; then
    cat "$W/bV.txt" >&2
    echo "build-exim.sh: the new binary lacks $want" >&2
    exit 1
  fi
done

{
  echo "recipe $RECIPE_HASH"
  echo "source exim4 $src_version ($SERIES)"
  echo "version $(sed -n 's/^Exim version \([^ ]*\).*/\1/p' "$W/bV.txt")"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) fetch $((fetched - started))s make $((built - fetched))s on $(nproc) cores"
} >"$STAMP"
echo "build-exim.sh: $SERIES built in $((SECONDS - started))s (fetch $((fetched - started))s, make $((built - fetched))s)" >&2
sed -n '/^Exim version/,/^Configure owner/p' "$W/bV.txt" >&2
echo "$PREFIX/bin/exim"
