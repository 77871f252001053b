#!/usr/bin/env bash
# Run a private clamd for tests, offline, with a signature DB written at run time.
#
#   clamd-test.sh start --dir DIR [--port N] [--stream-max SIZE] [--read-timeout SECS]
#   clamd-test.sh stop  --dir DIR
#
# start writes DIR/db/spoolsift.ndb (a body signature over the EICAR test string) and
# DIR/db/spoolsift.hdb (its md5), DIR/clamd.conf, starts clamd in the background in its own
# session, and waits until it answers PING. It prints one line:
#   CLAMD_SOCKET=DIR/clamd.sock CLAMD_PORT=N CLAMD_PID=PID
# --port 0 (the default) means no TCP socket; --stream-max is clamd's StreamMaxLength (25M);
# --read-timeout its ReadTimeout (120), which also ends an idle IDSESSION.
# stop kills the clamd whose pid is in DIR/clamd.pid and waits until it is gone.
#
# Why a DB of our own: the official one needs freshclam and the network; an empty DB directory
# makes clamd refuse to start. clamd reports our signatures with a ".UNOFFICIAL" suffix.
# Needs clamd and clamdscan (scripts/install-test-deps.sh).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop --dir DIR [--port N] [--stream-max SIZE] [--read-timeout SECS]" >&2
  exit 2
}

(($# >= 1)) || usage
cmd=$1
shift
dir=""
port=0
stream_max=25M
read_timeout=120
while (($# > 0)); do
  case $1 in
    --dir) dir=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --stream-max) stream_max=${2:?}; shift 2 ;;
    --read-timeout) read_timeout=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[[ -n $dir ]] || usage
# clamd wants absolute paths in its configuration.
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# How long start waits for clamd to answer, and stop for it to exit (seconds).
DEADLINE=30

start() {
  mkdir -p "$dir/db"
  # The EICAR test string, assembled from pieces so that no file in the repository holds it
  # (a scanner on a developer's machine would otherwise quarantine this script).
  local eicar
  # shellcheck disable=SC2016 # the $ signs are part of the string, not expansions
  eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$''EICAR-STANDARD-''ANTIVIRUS-TEST-''FILE!$H+H*'
  local hex md5
  hex=$(printf '%s' "$eicar" | od -An -v -tx1 | tr -d ' \n')
  md5=$(printf '%s' "$eicar" | md5sum | cut -d' ' -f1)
  # .ndb: Name:TargetType(0 = any file):Offset(* = anywhere):HexSignature
  printf 'Spoolsift.Test.Eicar:0:*:%s\n' "$hex" >"$dir/db/spoolsift.ndb"
  # .hdb: md5:size:Name, so a file that is exactly the string (e.g. in a zip) hits by hash too.
  printf '%s:%d:Spoolsift.Test.EicarHash\n' "$md5" "${#eicar}" >"$dir/db/spoolsift.hdb"

  local tcp=""
  if [[ $port != 0 ]]; then
    tcp="TCPSocket $port
TCPAddr 127.0.0.1"
  fi
  # SelfCheck 0: no periodic DB reload checks during a test. No User line: clamd keeps the
  # invoking user, so it can read the DB we just wrote.
  cat >"$dir/clamd.conf" <<EOF
Foreground yes
DatabaseDirectory $dir/db
LocalSocket $dir/clamd.sock
LocalSocketMode 666
FixStaleSocket yes
$tcp
LogFile $dir/clamd.log
LogTime yes
PidFile $dir/clamd.pid
StreamMaxLength $stream_max
ReadTimeout $read_timeout
MaxThreads 4
SelfCheck 0
EOF

  # Its own session, so a test harness's terminal signals do not reach it; stdio detached, so a
  # caller capturing our output does not wait for clamd to close it.
  setsid clamd -c "$dir/clamd.conf" </dev/null >"$dir/clamd.out" 2>&1 &
  local pid=$!
  # clamd writes its PidFile itself once up; write it now so stop works even before that.
  echo "$pid" >"$dir/clamd.pid"

  local end=$((SECONDS + DEADLINE))
  until clamdscan --config-file="$dir/clamd.conf" --ping 1 >/dev/null 2>&1; do
    if ! alive "$pid"; then
      echo "clamd-test.sh: clamd exited during start; see $dir/clamd.out and $dir/clamd.log" >&2
      cat "$dir/clamd.out" >&2 || true
      exit 1
    fi
    if ((SECONDS >= end)); then
      echo "clamd-test.sh: clamd did not answer PING within ${DEADLINE}s" >&2
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.05
  done
  if [[ $port != 0 ]]; then
    # clamdscan pinged the UNIX socket; check the TCP one answers too (bash's /dev/tcp).
    local reply=""
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'nPING\n' >&3
    read -r -t 5 reply <&3 || true
    exec 3<&-
    if [[ $reply != PONG ]]; then
      echo "clamd-test.sh: TCP port $port did not answer PING (got '$reply')" >&2
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
  fi
  echo "CLAMD_SOCKET=$dir/clamd.sock CLAMD_PORT=$port CLAMD_PID=$pid"
}

# Whether a process is alive. A zombie counts as gone: clamd was started by an earlier run of this
# script, so its parent is whoever adopted it, and in a container that may never reap it.
alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

stop() {
  local pid
  pid=$(cat "$dir/clamd.pid" 2>/dev/null) || {
    echo "clamd-test.sh: no $dir/clamd.pid" >&2
    exit 1
  }
  kill "$pid" 2>/dev/null || true
  local end=$((SECONDS + DEADLINE)) killed=0
  while alive "$pid"; do
    if ((SECONDS >= end)); then
      if ((killed)); then
        echo "clamd-test.sh: clamd $pid does not exit" >&2
        exit 1
      fi
      kill -KILL "$pid" 2>/dev/null || true
      killed=1
      end=$((SECONDS + 5))
    fi
    sleep 0.02
  done
  # The socket file stays behind after a kill; remove it so a client sees "no such file".
  rm -f "$dir/clamd.sock" "$dir/clamd.pid"
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
