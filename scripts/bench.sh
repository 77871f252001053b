#!/usr/bin/env bash
# Benchmarks, printed as tables (never timed assertions in tests):
#   1. the engine with the built-in scanner on tmpfs and on the real disk, next to the disk's raw
#      rate for the same write pattern;
#   2. the network stages: per-stage latency with a real clamd (started here, with the test
#      signature DB, and stopped at the end) and the dccifd double, and the engine's rate with
#      every stage on next to clamd's own rate on the same corpus;
#   3. `spoolsift scan` over the same-sized corpus, cold and warm page cache, with its peak RSS;
#      `spoolsift watch --once` over a backlog of 3,000 and 30,000 pairs (benches/backlog.rs);
#   4. ARC verification time per message (1 and 3 RSA-2048 sets, 2 KB and 100 KB bodies);
#   5. what each check costs alone (content before and after the file-type and archive checks,
#      dkim, and spamd and rspamd, started here on loopback and stopped at the end).
# Usage: scripts/bench.sh [MESSAGES] [STAGE_MESSAGES]   (defaults 10000 and 2000; clamd is slow)
# Needs clamd and clamdscan (scripts/install-test-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench engine -- --messages "${1:-10000}" --dir tmpfs=/dev/shm --dir disk=target
cargo bench --bench scan -- --messages "${1:-10000}" --dir disk=target
cargo bench --bench backlog
cargo bench --bench arc

clamd_dir=$(mktemp -d "${TMPDIR:-/tmp}/spoolsift-bench-clamd.XXXXXX")
stop_clamd() {
  bash scripts/clamd-test.sh stop --dir "$clamd_dir" || true
  rm -rf "$clamd_dir"
}
spamd_dir=$(mktemp -d "${TMPDIR:-/tmp}/spoolsift-bench-spamd.XXXXXX")
rspamd_dir=$(mktemp -d "${TMPDIR:-/tmp}/spoolsift-bench-rspamd.XXXXXX")
chmod 755 "$spamd_dir" "$rspamd_dir"
stop_all() {
  stop_clamd
  bash scripts/spamd-test.sh stop --dir "$spamd_dir" || true
  bash scripts/rspamd-test.sh stop --dir "$rspamd_dir" || true
  rm -rf "$spamd_dir" "$rspamd_dir"
}
trap stop_all EXIT
# The Rust build first, so clamd does not sit idle (and no compile competes with the bench).
cargo bench --bench stages --no-run
bash scripts/clamd-test.sh start --dir "$clamd_dir" >/dev/null
cargo bench --bench stages -- --messages "${2:-2000}" --clamd "unix:$clamd_dir/clamd.sock" \
  --clamd-pid "$(cat "$clamd_dir/clamd.pid")"

cargo bench --bench checks --no-run
bash scripts/spamd-test.sh start --dir "$spamd_dir" --port 7839 >/dev/null
bash scripts/rspamd-test.sh start --dir "$rspamd_dir" --port 11339 --dns-port 5389 >/dev/null
cargo bench --bench checks -- --messages "${2:-2000}" --spamd 127.0.0.1:7839 --rspamd http://127.0.0.1:11339
