#!/usr/bin/env bash
# Run a private SpamAssassin spamd for tests, offline, on loopback.
#
#   spamd-test.sh start --dir DIR [--port N]
#   spamd-test.sh stop  --dir DIR
#
# start runs spamd in its own session on 127.0.0.1:N (7830 by default) with local tests only
# (-L: no DNS blocklists, Razor, Pyzor or DCC, nothing leaves the machine), no per-user
# configuration (-x), its helper programs' home in DIR/home, its log in DIR/spamd.log, and waits
# until it answers PING. It prints one line:
#   SPAMD_PORT=N SPAMD_PID=PID
# stop kills that spamd (the pid in DIR/spamd.pid; its children go with it) and waits until it
# and its children are gone.
#
# The rules are the ones Debian's spamassassin package ships, so no sa-update download. Runs as
# root (the test suite does): spamd refuses to scan as root, so its children run as nobody.
# Needs spamd and spamc (scripts/install-test-deps.sh).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop --dir DIR [--port N]" >&2
  exit 2
}

(($# >= 1)) || usage
cmd=$1
shift
dir=""
port=7830
while (($# > 0)); do
  case $1 in
    --dir) dir=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[[ -n $dir ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# How long start waits for spamd to answer (it compiles its rules in 1-3 s), and stop for an exit.
DEADLINE=60

# Whether any process of the process group PGID (a session leader's pid) is alive; zombies do not
# count (see clamd-test.sh).
group_alive() {
  ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

stop() {
  local pid
  pid=$(cat "$dir/spamd.pid" 2>/dev/null) || {
    echo "spamd-test.sh: no $dir/spamd.pid" >&2
    exit 1
  }
  # The master ends its children on TERM; the group is waited for, so none outlives stop.
  kill "$pid" 2>/dev/null || true
  local end=$((SECONDS + DEADLINE)) killed=0
  while group_alive "$pid"; do
    if ((SECONDS >= end)); then
      if ((killed)); then
        echo "spamd-test.sh: spamd $pid does not exit" >&2
        exit 1
      fi
      kill -KILL -- "-$pid" 2>/dev/null || true
      killed=1
      end=$((SECONDS + 5))
    fi
    sleep 0.02
  done
  rm -f "$dir/spamd.pid"
}

start() {
  mkdir -p "$dir/home"
  # The children run as nobody: their home must be theirs, and the path to it searchable (a
  # test's temporary directory is 0700).
  chown nobody:nogroup "$dir/home"
  chmod 755 "$dir"

  # Its own session (setsid), so a test harness's terminal signals do not reach it and stop can
  # wait for its whole process group; stdio detached, so a caller capturing our output does not
  # wait for spamd to close it.
  setsid spamd -L -x --max-children=2 --min-children=1 \
    -i 127.0.0.1 -p "$port" -A 127.0.0.1 -u nobody -g nogroup \
    --helper-home-dir="$dir/home" -s "$dir/spamd.log" \
    </dev/null >"$dir/spamd.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/spamd.pid"

  local end=$((SECONDS + DEADLINE))
  until spamc -d 127.0.0.1 -p "$port" -K >/dev/null 2>&1; do
    local failed=""
    group_alive "$pid" || failed="spamd exited during start"
    ((SECONDS < end)) || failed="spamd did not answer PING within ${DEADLINE}s"
    if [[ -n $failed ]]; then
      echo "spamd-test.sh: $failed; see $dir/spamd.out and $dir/spamd.log" >&2
      tail -n 20 "$dir/spamd.out" >&2 || true
      stop
      exit 1
    fi
    sleep 0.05
  done
  echo "SPAMD_PORT=$port SPAMD_PID=$pid"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
