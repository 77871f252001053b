#!/usr/bin/env bash
# Start and stop a test Exim (built by scripts/build-exim.sh) on loopback, in a directory of the
# caller's choosing (normally a fresh mktemp -d).
#
#   scripts/exim-test.sh start --series bookworm|trixie --dir DIR --port N [--split]
#                              [--queuefile-dir QF]
#                              [--mode queuefile|queuefile-single|plain|queue-only]
#                              [--queue-interval TIME|none] [--wireformat] [--verdict-db FILE]
#   scripts/exim-test.sh stop --dir DIR
#
# start writes DIR/configure (root 0644, registered in the build's trusted_configs so that
# `exim -C DIR/configure` keeps root), DIR/users (the local users), and DIR/spool, DIR/log,
# DIR/mail and QF (default DIR/qf) owned by Debian-exim; runs `exim -C DIR/configure -bdf -oX N`
# in its own session, writes its pid to DIR/exim.pid, waits (with a deadline) for the SMTP
# banner on 127.0.0.1:N, and prints shell-evaluable lines:
#   EXIM_BIN EXIM_CONF EXIM_SPOOL EXIM_LOG EXIM_MAIL EXIM_QUEUEFILE_DIR EXIM_PID EXIM_PORT EXIM_SERIES
# (also saved in DIR/exim-test.env). Use them like this:
#   eval "$(scripts/exim-test.sh start --series bookworm --dir "$T/exim" --port 2525)"
#   "$EXIM_BIN" -C "$EXIM_CONF" -bpr          # the queue
#   "$EXIM_BIN" -C "$EXIM_CONF" -Mvh ID       # a message's -H
#   "$EXIM_BIN" -C "$EXIM_CONF" -M ID / -Mc ID / -Mf ID / -qff
#   scripts/exim-test.sh stop --dir "$T/exim"
#
# Modes:
#   queuefile   router `scan` first (unless $acl_m_scanned is set: the re-queue marker) hands every
#               recipient to the unpatched queuefile transport (directory QF); then `local_user`
#               delivers to DIR/mail/<user>/Maildir. Queue runner every --queue-interval (1m).
#   queuefile-single
#               router `scan` (a redirect) sends every recipient of a message not yet scanned to
#               one pseudo-address per message, scan-<id>@spoolsift.invalid, which router
#               `scan_queuefile` hands to queuefile: Exim drops the duplicates, so queuefile runs
#               once per message and the original completes in one delivery (docs/exim.md).
#   plain       no scan router: local delivery straight away. Queue runner as above.
#   queue-only  queue_only = true and no queue runner: messages stay in DIR/spool/input until a
#               -M/-q (the MailScanner-style incoming instance). Routers as in plain.
# Local users (DIR/users): alice bob carol dave eve user test. Other local parts of test.example
# or localhost are unrouteable (bounce); other domains are accepted and then unrouteable too.
#
# ACL hooks for fixture generation (all off unless a message asks for them):
#   HELO/EHLO name starting with "aclvars"  sets connection variable $acl_c_conn (tainted)
#   header X-Set-Policy: V                  sets $acl_m_policy = "V\nsecond line" (tainted),
#                                           $acl_m_fixed (untainted, with a line that looks like
#                                           a spool option) and adds X-ACL-Added: yes
#   header X-Remove-Me:                     removed by the ACL (stays on the spool flagged `*`)
# --wireformat sets spool_wireformat (CHUNKING receptions keep CRLF in -D).
# --verdict-db FILE makes the local_user router add X-Spoolsift-Verdict from spoolsift's verdict
# database, read with Exim's own lmdb lookup.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "$0")" && pwd)
CACHE=${SPOOLSIFT_EXIM_CACHE:-/var/cache/spoolsift/exim}
EXIM_USER=Debian-exim
# How long to wait for the daemon to answer / to go away.
START_DEADLINE=${SPOOLSIFT_EXIM_START_SECONDS:-30}
STOP_DEADLINE=${SPOOLSIFT_EXIM_STOP_SECONDS:-20}
LOCAL_USERS=(alice bob carol dave eve user test)

die() {
  echo "exim-test.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# Absolute path without requiring it to exist yet.
abspath() {
  realpath -m -- "$1"
}

# Is directory $1 searchable by the Exim user? (Exim's reception processes run as that user.)
exim_can_search() {
  setpriv --reuid="$EXIM_USER" --regid="$EXIM_USER" --clear-groups test -x "$1"
}

# Make sure the Exim user can reach $1. A caller's mktemp -d is root-only (0700), so the
# directory right above the instance gets o+x (search, not read) when it lacks it; anything
# further up that blocks the Exim user is reported, not changed.
ensure_reachable() {
  local target=$1 parent
  parent=$(dirname "$target")
  if ! exim_can_search "$parent"; then
    chmod o+x "$parent"
  fi
  local d=$parent
  while [[ $d != / ]]; do
    exim_can_search "$d" || die "$EXIM_USER cannot search $d (needed to reach $target)"
    d=$(dirname "$d")
  done
}

# Run "$@" with the trusted list locked: parallel test instances register configs concurrently.
with_trusted_lock() {
  local prefix=$1
  shift
  (
    flock 8
    "$@"
  ) 8>"$prefix/.trusted_configs.lock"
}

# Rewrite the trusted list through a temp file + rename (Exim may be reading it right now),
# keeping it root 0644 as Exim demands. Drops entries whose config file has gone (old test
# dirs) and, for "remove", the given path; for "add", appends it once.
edit_trusted() {
  local prefix=$1 action=$2 conf=$3 list tmp line
  list=$prefix/trusted_configs
  tmp=$(mktemp "$prefix/.trusted_configs.XXXXXX")
  if [[ -f $list ]]; then
    while IFS= read -r line; do
      [[ -n $line && -e $line && $line != "$conf" ]] || continue
      printf '%s\n' "$line"
    done <"$list" >"$tmp"
  fi
  if [[ $action == add ]]; then
    printf '%s\n' "$conf" >>"$tmp"
  fi
  chown root:root "$tmp"
  chmod 0644 "$tmp"
  mv -f "$tmp" "$list"
}

write_config() {
  local f=$1 split=false queue_only=false wireformat=false
  [[ $opt_split == 1 ]] && split=true
  [[ $opt_mode == queue-only ]] && queue_only=true
  [[ $opt_wireformat == 1 ]] && wireformat=true
  {
    cat <<EOF
# Test Exim instance written by scripts/exim-test.sh: series $opt_series, mode $opt_mode.
exim_path = $EXIM_BIN
primary_hostname = test.example
qualify_domain = test.example
domainlist local_domains = test.example : localhost

spool_directory = $D/spool
log_file_path = $D/log/%slog
# Not written with -oX (no -oP); set so that nothing ever falls back to the build's default.
pid_file_path = $D/exim-daemon.pid
log_selector = +all -arguments
local_interfaces = 127.0.0.1
daemon_smtp_ports = $opt_port
exim_user = $EXIM_USER
exim_group = $EXIM_USER
keep_environment =
# No ident or reverse DNS: keep loopback tests fast and deterministic.
rfc1413_hosts =
host_lookup =
# No certificate here; without this Exim would offer STARTTLS with a self-signed one.
tls_advertise_hosts =

split_spool_directory = $split
spool_wireformat = $wireformat
queue_only = $queue_only
message_size_limit = 100M
smtp_accept_max = 50
queue_run_max = 5
dsn_advertise_hosts = *
accept_8bitmime = true
smtputf8_advertise_hosts = *
chunking_advertise_hosts = *
pipelining_advertise_hosts = *

acl_smtp_rcpt = acl_check_rcpt
acl_smtp_data = acl_check_data
acl_not_smtp = acl_check_not_smtp

begin acl

acl_check_rcpt:
  warn    condition   = \${if match{\$sender_helo_name}{\N^aclvars\N}}
          set acl_c_conn = client-said-\$sender_helo_name
  # Loopback SMTP, local submissions (empty host), and TEST-NET-1 addresses that only a local
  # "exim -bs -oMa 192.0.2.x" run as root can claim (the daemon listens on loopback only).
  accept  hosts       = : 127.0.0.1 : 192.0.2.0/24
  deny    message     = relay not permitted

acl_check_data:
  accept  acl         = acl_fixture_hooks

acl_check_not_smtp:
  accept  acl         = acl_fixture_hooks

# Called as a condition from the DATA and non-SMTP ACLs; always true.
acl_fixture_hooks:
  warn    condition   = \${if def:h_X-Set-Policy:}
          set acl_m_policy = \$h_X-Set-Policy:\nsecond line
          set acl_m_fixed = inbound\n-frozen 1\nXX
          add_header  = X-ACL-Added: yes
  warn    condition   = \${if def:h_X-Remove-Me:}
          remove_header = X-Remove-Me
  accept

begin routers

EOF
    if [[ $opt_mode == queuefile ]]; then
      cat <<EOF
# Every recipient of a message not yet scanned goes to queuefile. A re-queued message carries
# the spool-only variable \$acl_m_scanned and falls through to local delivery.
scan:
  driver = accept
  condition = \${if !def:acl_m_scanned}
  transport = to_queuefile

EOF
    fi
    if [[ $opt_mode == queuefile-single ]]; then
      cat <<EOF
# Every recipient of a message not yet scanned becomes one pseudo-address per message; Exim
# discards the duplicates, so queuefile copies the message once (docs/exim.md, single copy).
scan:
  driver = redirect
  condition = \${if !def:acl_m_scanned}
  data = scan-\$message_exim_id@spoolsift.invalid
  redirect_router = scan_queuefile
  no_verify

scan_queuefile:
  driver = accept
  domains = spoolsift.invalid
  transport = to_queuefile
  no_verify

EOF
    fi
    cat <<EOF
# \$local_part is tainted (4.96+), so the maildir path uses the untainted lookup result.
local_user:
  driver = accept
  domains = +local_domains
  local_parts = lsearch;$D/users
  transport = local_maildir
EOF
    if [[ -n $opt_verdict_db ]]; then
      # A router that uses spoolsift's verdict database through Exim's own lmdb lookup.
      cat <<EOF
  headers_add = X-Spoolsift-Verdict: \${extract{verdict}{\${lookup{\$message_exim_id}lmdb{$opt_verdict_db}}}}
EOF
    fi
    cat <<EOF

begin transports

to_queuefile:
  driver = queuefile
  directory = $QF

local_maildir:
  driver = appendfile
  maildir_format
  directory = $D/mail/\${local_part_data}/Maildir
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  user = $EXIM_USER
  group = $EXIM_USER

begin retry

# The single-copy pseudo-addresses: retried for long, since when the queuefile transport keeps
# failing past the cutoff, the recipients behind it are dropped without a bounce.
*@spoolsift.invalid   *   F,7d,1m
# Short, so deferred recipients come round again within a test's lifetime.
*   *   F,1h,1m
EOF
  } >"$f"
}

# Wait for the SMTP banner, then QUIT politely (a bare connect/close would log a lost
# connection). Fails early if the daemon has died.
wait_for_banner() {
  local pid=$1 port=$2 deadline=$((SECONDS + START_DEADLINE)) banner
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 1
    # The subshell owns fd 3, so a failed connect leaves nothing open here.
    if banner=$( (
      exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
      IFS= read -r -t 5 line <&3 || exit 1
      printf 'QUIT\r\n' >&3
      IFS= read -r -t 5 _ <&3 || true
      printf '%s' "$line"
    ) 2>/dev/null) && [[ $banner == 220* ]]; then
      return 0
    fi
    sleep 0.05 # poll interval, not synchronisation: the loop checks the real condition
  done
  return 1
}

cmd_start() {
  [[ -n $opt_series && -n $opt_dir && -n $opt_port ]] || usage
  case $opt_series in bookworm | trixie) ;; *) die "unknown series $opt_series" ;; esac
  case $opt_mode in queuefile | queuefile-single | plain | queue-only) ;; *) die "unknown mode $opt_mode" ;; esac
  [[ $opt_port =~ ^[0-9]+$ ]] || die "bad port $opt_port"
  [[ $(id -u) -eq 0 ]] || die "must run as root (setuid Exim with a trusted -C config)"
  getent passwd "$EXIM_USER" >/dev/null || die "no $EXIM_USER user; run scripts/install-test-deps.sh"

  PREFIX=$CACHE/$opt_series
  EXIM_BIN=$PREFIX/bin/exim
  [[ -x $EXIM_BIN ]] || die "no $EXIM_BIN; run: bash $SCRIPT_DIR/build-exim.sh $opt_series"

  D=$(abspath "$opt_dir")
  QF=$(abspath "${opt_qf:-$D/qf}")
  if [[ -f $D/exim.pid ]] && kill -0 "$(cat "$D/exim.pid")" 2>/dev/null; then
    die "an instance is already running in $D (pid $(cat "$D/exim.pid"))"
  fi
  install -d -o root -g root -m 0755 "$D"
  ensure_reachable "$D"
  install -d -o "$EXIM_USER" -g "$EXIM_USER" -m 0750 "$D/spool" "$D/log" "$D/mail"
  # queuefile links (same filesystem) or copies into QF as the Exim user.
  install -d -m 0750 "$QF"
  chown "$EXIM_USER:$EXIM_USER" "$QF"
  ensure_reachable "$QF"

  : >"$D/users"
  local u
  for u in "${LOCAL_USERS[@]}"; do
    printf '%s: %s\n' "$u" "$u" >>"$D/users"
  done
  chmod 0644 "$D/users"

  CONF=$D/configure
  write_config "$CONF"
  chown root:root "$CONF"
  chmod 0644 "$CONF"
  with_trusted_lock "$PREFIX" edit_trusted "$PREFIX" add "$CONF"

  # Catch config errors before daemonising, with a readable message.
  "$EXIM_BIN" -C "$CONF" -bV >"$D/log/bV.txt" 2>&1 || {
    cat "$D/log/bV.txt" >&2
    die "Exim rejects $CONF"
  }

  local qopt=()
  if [[ $opt_mode != queue-only && $opt_qinterval != none ]]; then
    qopt=(-q"$opt_qinterval")
  fi
  # Own session and process group (setsid), so stop can signal the daemon and its children
  # together. A background job of a non-interactive shell is not a group leader, so setsid
  # execs in place and $! is Exim's own pid.
  setsid "$EXIM_BIN" -C "$CONF" -bdf -oX "$opt_port" "${qopt[@]}" \
    </dev/null >>"$D/log/daemon.out" 2>&1 &
  local pid=$!
  echo "$pid" >"$D/exim.pid"

  if ! wait_for_banner "$pid" "$opt_port"; then
    cat "$D/log/daemon.out" "$D/log/paniclog" >&2 2>/dev/null || true
    kill -- "-$pid" 2>/dev/null || true
    die "Exim did not answer on 127.0.0.1:$opt_port within ${START_DEADLINE}s"
  fi

  {
    printf 'EXIM_BIN=%q\n' "$EXIM_BIN"
    printf 'EXIM_CONF=%q\n' "$CONF"
    printf 'EXIM_SPOOL=%q\n' "$D/spool"
    printf 'EXIM_LOG=%q\n' "$D/log"
    printf 'EXIM_MAIL=%q\n' "$D/mail"
    printf 'EXIM_QUEUEFILE_DIR=%q\n' "$QF"
    printf 'EXIM_PID=%q\n' "$pid"
    printf 'EXIM_PORT=%q\n' "$opt_port"
    printf 'EXIM_SERIES=%q\n' "$opt_series"
  } | tee "$D/exim-test.env"
}

cmd_stop() {
  [[ -n $opt_dir ]] || usage
  local D pidfile pid series conf
  D=$(abspath "$opt_dir")
  pidfile=$D/exim.pid
  if [[ -f $pidfile ]]; then
    pid=$(cat "$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || die "bad pid file $pidfile"
    # Only signal the pid if it still is this instance's Exim (pids get reused).
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-C $D/configure"; then
      # The whole process group: the daemon plus deliveries/queue runners it forked.
      kill -TERM -- "-$pid" 2>/dev/null || true
      local deadline=$((SECONDS + STOP_DEADLINE))
      while pgrep -g "$pid" >/dev/null && ((SECONDS < deadline)); do
        sleep 0.05 # poll interval, not synchronisation
      done
      if pgrep -g "$pid" >/dev/null; then
        echo "exim-test.sh: group $pid ignored SIGTERM for ${STOP_DEADLINE}s; sending SIGKILL" >&2
        kill -KILL -- "-$pid" 2>/dev/null || true
        while pgrep -g "$pid" >/dev/null; do sleep 0.05; done
      fi
    fi
    rm -f "$pidfile"
  fi
  # Unregister the config from the trusted list of whichever build it was written for.
  conf=$D/configure
  if [[ -f $conf ]]; then
    series=$(sed -n 's/^# Test Exim instance written by scripts\/exim-test.sh: series \([a-z]*\),.*/\1/p' "$conf")
    if [[ -n $series && -f $CACHE/$series/trusted_configs ]]; then
      with_trusted_lock "$CACHE/$series" edit_trusted "$CACHE/$series" remove "$conf"
    fi
  fi
}

[[ $# -ge 1 ]] || usage
action=$1
shift
opt_series='' opt_dir='' opt_port='' opt_split=0 opt_qf='' opt_mode=queuefile opt_qinterval=1m opt_wireformat=0 opt_verdict_db=''
while [[ $# -gt 0 ]]; do
  case $1 in
    --series) opt_series=${2:?}; shift 2 ;;
    --dir) opt_dir=${2:?}; shift 2 ;;
    --port) opt_port=${2:?}; shift 2 ;;
    --split) opt_split=1; shift ;;
    --queuefile-dir) opt_qf=${2:?}; shift 2 ;;
    --mode) opt_mode=${2:?}; shift 2 ;;
    --queue-interval) opt_qinterval=${2:?}; shift 2 ;;
    --wireformat) opt_wireformat=1; shift ;;
    --verdict-db) opt_verdict_db=${2:?}; shift 2 ;;
    -h | --help) usage ;;
    *) die "unknown argument $1" ;;
  esac
done

case $action in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) usage ;;
esac
