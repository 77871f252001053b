#!/usr/bin/env bash
# spoolsift beside rspamd on one corpus and one clamd, printed as one table (benches/peers.rs):
# clamd alone, rspamd over rspamc at several concurrencies, `spoolsift scan`, and the engine as
# `spoolsift watch` runs it; messages per second, the ratio to clamd alone, CPU per message of
# each process, and the infected and ARC counts of each side (which must agree).
#
# Usage: scripts/bench-peers.sh [MESSAGES] [ROUNDS]   (defaults 2000 and 3)
#
# It installs what it needs from Debian's packages if missing (clamav-daemon, rspamd, dnsmasq),
# then starts on loopback, in temporary directories, and stops by pid at the end:
#   * a private clamd with the test signature DB (scripts/clamd-test.sh);
#   * rspamd with only the checks spoolsift has: antivirus through that same clamd, ARC, DKIM,
#     MIME types; no network lookups, no redis (scripts/rspamd-test.sh --only-peer-checks), and
#     a dnsmasq that answers the corpus's ARC key record and nothing else.
# Runs as root (rspamd drops to _rspamd). The corpus lives in /dev/shm, as the engine's does.
set -euo pipefail
cd "$(dirname "$0")/.."
messages=${1:-2000}
rounds=${2:-3}

need=()
command -v clamd >/dev/null || need+=(clamav-daemon clamdscan)
command -v rspamd >/dev/null || need+=(rspamd)
command -v dnsmasq >/dev/null || need+=(dnsmasq)
if ((${#need[@]})); then
  # A fresh machine's package lists are stale.
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi

cargo bench --bench peers --no-run
work=$(mktemp -d /dev/shm/spoolsift-peers.XXXXXX)
clamd_dir=$work/clamd
rspamd_dir=$work/rspamd
mkdir -p "$clamd_dir" "$rspamd_dir"
chmod 755 "$work" "$rspamd_dir"
stop_all() {
  bash scripts/rspamd-test.sh stop --dir "$rspamd_dir" || true
  bash scripts/clamd-test.sh stop --dir "$clamd_dir" || true
  rm -rf "$work"
}
trap stop_all EXIT

cargo bench --bench peers -- corpus --dir "$work/corpus" --messages "$messages"
bash scripts/clamd-test.sh start --dir "$clamd_dir" >/dev/null
# Two workers, one per core of the machines this was measured on; rspamd's default is one per
# core as well.
workers=$(nproc)
bash scripts/rspamd-test.sh start --dir "$rspamd_dir" --port 11339 --dns-port 5389 --workers "$workers" \
  --clamd "$clamd_dir/clamd.sock" --txt-record "$(cat "$work/corpus/txt-record")" --only-peer-checks >/dev/null
cargo bench --bench peers -- run --dir "$work/corpus" --rounds "$rounds" \
  --clamd "unix:$clamd_dir/clamd.sock" --clamd-pid "$(cat "$clamd_dir/clamd.pid")" \
  --rspamd 127.0.0.1:11339 --rspamd-pid "$(cat "$rspamd_dir/rspamd.pid")"
