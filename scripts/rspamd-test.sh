#!/usr/bin/env bash
# Run a private rspamd for tests, offline, on loopback.
#
#   rspamd-test.sh start --dir DIR [--port N] [--dns-port N] [--workers N]
#                        [--clamd SOCKET|HOST:PORT] [--txt-record NAME=VALUE]... [--only-peer-checks]
#   rspamd-test.sh stop  --dir DIR
#
# start writes a configuration overlay in DIR/conf (local.d/ over Debian's /etc/rspamd), starts a
# dnsmasq on 127.0.0.1 (--dns-port, 5353 by default) that answers every name with NXDOMAIN, then
# rspamd's normal worker alone on 127.0.0.1:N (11333 by default), each in its own session, and
# waits until rspamd answers GET /ping. It prints one line:
#   RSPAMD_PORT=N RSPAMD_PID=PID
# stop kills rspamd (pid in DIR/rspamd.pid) and the dnsmasq (DIR/dnsmasq.pid) and waits until
# they and their children are gone. DIR/conf is rewritten by every start: an option left out is
# off again, even with a DIR an earlier start used.
#
# The options a benchmark needs to run rspamd as a peer of our scanner, doing the same checks:
#   --workers N      the normal worker's count (1 by default): processes scanning in parallel.
#   --clamd S        local.d/antivirus.conf: rspamd's antivirus module sends each message whole
#                    (scan_mime_parts = false: one INSTREAM per message, as our scanner does, not
#                    one per MIME part) to the clamd at S, a unix socket path (/tmp/x/clamd.sock)
#                    or HOST:PORT (127.0.0.1:3310); a hit is symbol CLAM_VIRUS with the signature's
#                    name as option, a failed scan CLAM_VIRUS_FAIL. No redis, so no result cache:
#                    every message is sent. The module's own timeouts apply (5 s a request, 2
#                    retries; rspamd's task_timeout is 8 s). Without --clamd, no antivirus.
#   --txt-record NAME=VALUE (repeatable)
#                    the dnsmasq answers TXT queries for NAME with VALUE (a DKIM or ARC key record,
#                    "v=DKIM1; k=rsa; p=MIIB..."), cut into strings of 255 bytes that a resolver
#                    joins back; every other name still gets NXDOMAIN.
#   --only-peer-checks
#                    only the checks our scanner has too: antivirus (with --clamd), ARC and DKIM
#                    verification, mime_types. Every other Lua plugin in /usr/share/rspamd/plugins
#                    gets enabled = false in local.d/NAME.conf (ARC also no signing), the C modules
#                    are cut to dkim (filters = "dkim": no chartable, regexp, fuzzy_check),
#                    explicit_modules is emptied (override.d/options.inc: settings, bayes_expiry),
#                    and --var RULESDIR=DIR/rules points rspamd at a rspamd.lua of our own that
#                    loads none of Debian's rules (regexp, html, headers_checks, subject_checks,
#                    misc, forwarding, mid, bitcoin, bounce, content). rspamd's log then reports
#                    antivirus, arc, mime_types and the internal dkim module, plus emails (an
#                    empty stub, see peer_checks_config); the symbols left are CLAM_VIRUS*,
#                    ARC_*, R_DKIM_* with DKIM_TRACE, and MIME_*. The statistics (Bayes) stay
#                    configured and disable themselves for want of redis, as without the option.
#
# Why a DNS server of our own: rspamd resolves through its own resolver (hfilter, SPF, DKIM,
# DMARC, the map URLs), which would otherwise ask the host's nameservers. Pointed at a dnsmasq that
# knows no name and forwards nowhere, nothing leaves the machine: the remote maps' host names do
# not resolve, so rspamd falls back to its packaged copies. The modules that only make sense with
# the network (RBLs, fuzzy hashes, ASN lookups, phishing feeds) are turned off, and without a
# redis server rspamd disables Bayes, greylisting, rate limits and the neural module itself.
#
# The first start compiles the public-suffix list (about 11 s on two cores, with or without
# --only-peer-checks) and the regular expressions into DIR/db and takes 11-20 s; a restart with the
# same DIR takes about 1 s.
#
# Runs as root (the test suite does): rspamd drops to _rspamd, which owns DIR/db, DIR/run and
# DIR/log. Needs rspamd and dnsmasq (scripts/install-test-deps.sh).
set -euo pipefail

usage() {
  echo "usage: $0 start|stop --dir DIR [--port N] [--dns-port N] [--workers N]" \
    "[--clamd SOCKET|HOST:PORT] [--txt-record NAME=VALUE]... [--only-peer-checks]" >&2
  exit 2
}

(($# >= 1)) || usage
cmd=$1
shift
dir=""
port=11333
dns_port=5353
workers=1
clamd=""
txt_records=()
only_peer_checks=0
while (($# > 0)); do
  case $1 in
    --dir) dir=${2:?}; shift 2 ;;
    --port) port=${2:?}; shift 2 ;;
    --dns-port) dns_port=${2:?}; shift 2 ;;
    --workers) workers=${2:?}; shift 2 ;;
    --clamd) clamd=${2:?}; shift 2 ;;
    --txt-record) txt_records+=("${2:?}"); shift 2 ;;
    --only-peer-checks) only_peer_checks=1; shift ;;
    *) usage ;;
  esac
done
[[ -n $dir ]] || usage
[[ $workers =~ ^[1-9][0-9]*$ ]] || {
  echo "rspamd-test.sh: --workers wants a positive number, not '$workers'" >&2
  exit 2
}
# rspamd takes a string starting with / for a unix socket, anything else as host[:port].
if [[ -n $clamd && $clamd != /* && ! $clamd =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]]; then
  echo "rspamd-test.sh: --clamd wants an absolute socket path or HOST:PORT, not '$clamd'" >&2
  exit 2
fi
for record in "${txt_records[@]}"; do
  # The name goes unquoted into dnsmasq.conf; the value may hold anything but a line break.
  if [[ $record != *=* || ! ${record%%=*} =~ ^[A-Za-z0-9_.-]+$ || $record == *$'\n'* ]]; then
    echo "rspamd-test.sh: --txt-record wants NAME=VALUE, not '$record'" >&2
    exit 2
  fi
done
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

# The dnsmasq line for one --txt-record NAME=VALUE: txt-record=NAME,"s1","s2",... with VALUE cut
# into character-strings of at most 255 bytes (a TXT record's limit per string; a resolver joins
# them back, as DKIM and ARC do for a 2048-bit key). Inside the quotes dnsmasq reads \\ and \" as
# escapes and takes , ; # and spaces literally, so only those two need escaping.
txt_record_line() (
  LC_ALL=C # ${v:i:n} counts bytes, not characters
  local name=${1%%=*} value=${1#*=} line chunk i
  line="txt-record=$name"
  for ((i = 0; i == 0 || i < ${#value}; i += 255)); do
    chunk=${value:i:255}
    chunk=${chunk//\\/\\\\}
    chunk=${chunk//\"/\\\"}
    line+=",\"$chunk\""
  done
  printf '%s\n' "$line"
)

# --only-peer-checks: the configuration under CONF (and DIR/rules) that leaves rspamd the checks our
# scanner has too, and no other.
peer_checks_config() {
  local conf=$1 plugin name
  # Every Lua plugin but antivirus, arc and mime_types. modules.d/NAME.conf (settings.conf for
  # settings) includes local.d/NAME.conf into the plugin's section, and a section with
  # enabled = false keeps rspamd from loading the plugin at all, whatever options the plugin itself
  # knows. Left over, and in rspamd's log all the same:
  # - bayes_expiry, clustering, dynamic_conf, fuzzy_collect, ip_score and maps_stats have no section
  #   that reads a local.d file, so their file here is unread: without a section rspamd does not
  #   load them ("disabling unconfigured lua module"), once explicit_modules below no longer names
  #   bayes_expiry;
  # - emails ("init lua module emails"): lua_cfg_transform turns its section into rbl rules and
  #   empties it, enabled = false included; in 3.4 emails.lua is a stub that registers nothing, and
  #   rbl is off.
  for plugin in /usr/share/rspamd/plugins/*.lua; do
    name=$(basename "$plugin" .lua)
    case $name in antivirus | arc | mime_types) continue ;; esac
    echo 'enabled = false;' >"$conf/local.d/$name.conf"
  done
  # ARC: verification only; no keys are configured, this also skips looking for them per message.
  cat >"$conf/local.d/arc.conf" <<EOF
sign_inbound = false;
sign_local = false;
sign_authenticated = false;
EOF
  # The C modules: dkim (verification) alone, not chartable, regexp or fuzzy_check.
  echo 'filters = "dkim";' >>"$conf/local.d/options.inc"
  # options.explicit_modules (settings, bayes_expiry) are loaded whatever their section says, and
  # without a section at all. local.d merges arrays, so an empty one there changes nothing;
  # override.d replaces the key (and only that key: the rest of options stays merged).
  mkdir -p "$conf/override.d"
  echo 'explicit_modules = [];' >"$conf/override.d/options.inc"
  # The rules: common.conf loads $RULESDIR/rspamd.lua, which in Debian's copy runs the regexp
  # rules, html, headers_checks, subject_checks, misc, forwarding, mid, bitcoin, bounce and content.
  # Ours only sets up what the plugins expect of it.
  mkdir -p "$dir/rules"
  cat >"$dir/rules/rspamd.lua" <<'EOF'
-- Written by rspamd-test.sh --only-peer-checks: none of the packaged rules.
require "global_functions" ()
config['regexp'] = {}
rspamd_maps = {}
EOF
}

start() {
  local conf=$dir/conf
  # A start over a running one would not notice: the old rspamd answers /ping while the new one
  # and its dnsmasq exit for the ports in use, and the old configuration goes on scanning.
  local name
  for name in rspamd dnsmasq; do
    if [[ -e $dir/$name.pid ]] && group_alive "$(cat "$dir/$name.pid")"; then
      echo "rspamd-test.sh: $name $(cat "$dir/$name.pid") of an earlier start is running; stop it first" >&2
      exit 1
    fi
  done
  if [[ -n $(http_get /ping 2>/dev/null) ]]; then
    echo "rspamd-test.sh: something already answers on 127.0.0.1:$port" >&2
    exit 1
  fi
  # conf is ours alone and rewritten whole, so nothing of an earlier start with other options
  # (an antivirus.conf, the disabled plugins) survives into this one.
  rm -rf "$conf/local.d" "$conf/override.d" "$dir/rules"
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
  # --txt-record: answered from the configuration, before local=/#/ turns the name down.
  local record
  for record in "${txt_records[@]}"; do
    txt_record_line "$record" >>"$dir/dnsmasq.conf"
  done

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
count = $workers;
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

  if [[ -n $clamd ]]; then
    # The whole message in one INSTREAM, as our scanner sends it; no redis, so no result cache
    # (lua_scanners asks the cache only when a redis server is configured, and otherwise scans).
    # log_clean = true logs "clamav: message or mime_part is clean" for every clean message.
    cat >"$conf/local.d/antivirus.conf" <<EOF
clamav {
  type = "clamav";
  symbol = "CLAM_VIRUS";
  servers = "$clamd";
  scan_mime_parts = false;
  log_clean = false;
}
EOF
  fi

  local rspamd_vars=()
  if ((only_peer_checks)); then
    peer_checks_config "$conf"
    rspamd_vars+=(--var "RULESDIR=$dir/rules")
  fi

  setsid dnsmasq --conf-file="$dir/dnsmasq.conf" </dev/null >"$dir/dnsmasq.out" 2>&1 &
  echo $! >"$dir/dnsmasq.pid"

  setsid rspamd -f -u _rspamd -g _rspamd -c /etc/rspamd/rspamd.conf \
    --var "LOCAL_CONFDIR=$conf" --var "DBDIR=$dir/db" --var "RUNDIR=$dir/run" --var "LOGDIR=$dir/log" \
    "${rspamd_vars[@]}" </dev/null >"$dir/rspamd.out" 2>&1 &
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
