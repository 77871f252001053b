#!/usr/bin/env bash
# Run a private rspamd for tests, offline, on loopback.
#
#   rspamd-test.sh start --dir DIR [--port N] [--dns-port N]
#   rspamd-test.sh stop  --dir DIR
#
# start writes a configuration overlay in DIR/conf (local.d/ over Debian's /etc/rspamd), starts a
# dnsmasq on 127.0.0.1 (--dns-port, 5353 by default) that answers every name with NXDOMAIN, then
# rspamd's normal worker alone on 127.0.0.1:N (11333 by default), each in its own session, and
# waits until rspamd answers GET /ping. It prints one line:
#   RSPAMD_PORT=N RSPAMD_PID=PID
# stop kills rspamd (pid in DIR/rspamd.pid) and the dnsmasq (DIR/dnsmasq.pid) and waits until
# they and their children are gone.
#
# Why a DNS server of our own: rspamd resolves through its own resolver (hfilter, SPF, DKIM,
# DMARC, the map URLs), which would otherwise ask the host's nameservers. Pointed at a dnsmasq that
# knows no name and forwards nowhere, nothing leaves the machine: the remote maps' host names do
# not resolve, so rspamd falls back to its packaged copies. The modules that only make sense with
# the network (RBLs, fuzzy hashes, ASN lookups, phishing feeds) are turned off, and without a
# redis server rspamd disables Bayes, greylisting, rate limits and the neural module itself.
#
# The first start compiles the public-suffix list and the regular expressions into DIR/db and takes
# 12-20 s on two cores; a restart with the same DIR takes about 1 s.
#
# Runs as root (the test suite does): rspamd drops to _rspamd, which owns DIR/db, DIR/run and
# DIR/log. Needs rspamd and dnsmasq (scripts/install-test-deps.sh).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop --dir DIR [--port N] [--dns-port N]" >&2
  exit 2
}

(($# >= 1)) || usage
cmd=$1
shift
dir=""
port=11333
dns_port=5353
while (($# > 0)); do
  case $1 in
    --dir) dir=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --dns-port) dns_port=${2:?}; shift 2 ;;
    *) usage ;;
  esac
done
[[ -n $dir ]] || usage
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)

# How long start waits for rspamd to answer (its cold start is ~20 s), and stop for an exit.
START_DEADLINE=120
STOP_DEADLINE=30

# Whether any process of the process group PGID (a session leader's pid) is alive; zombies do not
# count (see clamd-test.sh).
group_alive() {
  ps -eo pgid=,stat= | awk -v g="$1" '$1 == g && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

# Stop the session whose leader's pid is in FILE and wait until all of it is gone: rspamd's main
# process ends its workers on TERM, and dnsmasq's TCP children end with their connections. KILL
# for the whole group after the deadline.
stop_pidfile() {
  local file=$1 name=$2 pid
  pid=$(cat "$file" 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || true
  local end=$((SECONDS + STOP_DEADLINE)) killed=0
  while group_alive "$pid"; do
    if ((SECONDS >= end)); then
      if ((killed)); then
        echo "rspamd-test.sh: $name $pid does not exit" >&2
        exit 1
      fi
      kill -KILL -- "-$pid" 2>/dev/null || true
      killed=1
      end=$((SECONDS + 5))
    fi
    sleep 0.02
  done
  rm -f "$file"
}

# One HTTP request over bash's /dev/tcp; prints the response (status line first) or nothing.
http_get() {
  local path=$1 reply=""
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf 'GET %s HTTP/1.0\r\n\r\n' "$path" >&3
  reply=$(timeout 5 cat <&3) || true
  exec 3<&-
  printf '%s' "$reply"
}

start() {
  local conf=$dir/conf
  mkdir -p "$conf/local.d" "$dir/db" "$dir/run" "$dir/log"
  # rspamd's workers run as _rspamd and write their caches, pid file and log there; the path to
  # them must be searchable too (a test's temporary directory is 0700).
  chown _rspamd:_rspamd "$dir/db" "$dir/run" "$dir/log"
  chmod 755 "$dir"

  # local=/#/ answers NXDOMAIN for every name; no-resolv and no server lines: nothing is forwarded.
  # keep-in-foreground, not no-daemon: in no-daemon (debug) mode dnsmasq answers TCP in its only
  # process, and rspamd opens a TCP connection to its nameserver at start and sends nothing on it
  # for about 30 s, during which every UDP query went unanswered and timed out.
  cat >"$dir/dnsmasq.conf" <<EOF
port=$dns_port
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
keep-in-foreground
user=nobody
local=/#/
log-queries
log-facility=$dir/dnsmasq.log
pid-file=
EOF

  cat >"$conf/local.d/options.inc" <<EOF
dns {
  nameserver = ["127.0.0.1:$dns_port"];
  timeout = 1s;
  retransmits = 1;
}
EOF
  # The normal worker answers /checkv2; the controller and the proxy are not needed.
  cat >"$conf/local.d/worker-normal.inc" <<EOF
bind_socket = "127.0.0.1:$port";
count = 1;
EOF
  echo 'enabled = false;' >"$conf/local.d/worker-controller.inc"
  echo 'enabled = false;' >"$conf/local.d/worker-proxy.inc"
  cat >"$conf/local.d/logging.inc" <<EOF
type = "file";
filename = "$dir/log/rspamd.log";
level = "info";
EOF
  for module in rbl fuzzy_check asn phishing url_redirector rspamd_update; do
    echo 'enabled = false;' >"$conf/local.d/$module.conf"
  done

  setsid dnsmasq --conf-file="$dir/dnsmasq.conf" </dev/null >"$dir/dnsmasq.out" 2>&1 &
  echo $! >"$dir/dnsmasq.pid"

  setsid rspamd -f -u _rspamd -g _rspamd -c /etc/rspamd/rspamd.conf \
    --var "LOCAL_CONFDIR=$conf" --var "DBDIR=$dir/db" --var "RUNDIR=$dir/run" --var "LOGDIR=$dir/log" \
    </dev/null >"$dir/rspamd.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$dir/rspamd.pid"

  local end=$((SECONDS + START_DEADLINE))
  until [[ $(http_get /ping 2>/dev/null) == *$'\r\n\r\npong'* ]]; do
    local failed=""
    group_alive "$pid" || failed="rspamd exited during start"
    group_alive "$(cat "$dir/dnsmasq.pid")" || failed="dnsmasq exited during start"
    ((SECONDS < end)) || failed="rspamd did not answer /ping within ${START_DEADLINE}s"
    if [[ -n $failed ]]; then
      echo "rspamd-test.sh: $failed; see $dir/rspamd.out, $dir/log/rspamd.log, $dir/dnsmasq.log" >&2
      tail -n 20 "$dir/rspamd.out" "$dir/dnsmasq.out" "$dir/dnsmasq.log" >&2 || true
      stop_pidfile "$dir/rspamd.pid" rspamd
      stop_pidfile "$dir/dnsmasq.pid" dnsmasq
      exit 1
    fi
    sleep 0.1
  done
  echo "RSPAMD_PORT=$port RSPAMD_PID=$pid"
}

stop() {
  [[ -e $dir/rspamd.pid || -e $dir/dnsmasq.pid ]] || {
    echo "rspamd-test.sh: no $dir/rspamd.pid" >&2
    exit 1
  }
  stop_pidfile "$dir/rspamd.pid" rspamd
  stop_pidfile "$dir/dnsmasq.pid" dnsmasq
}

case $cmd in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
