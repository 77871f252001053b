#!/usr/bin/env bash
# Regenerate spool-fixtures/ from real traffic through the two test Exims (4.96 "bookworm",
# 16-character ids, and 4.98.2 "trixie", 23-character ids). Run as root:
#
#   scripts/make-fixtures.sh [OUTPUT_DIR]        default: spool-fixtures/ next to this script
#
# Each case directory <b496|t498>-<case>/ gets exactly one pair <id>-H <id>-D, copied byte for
# byte from where Exim wrote it (the queuefile directory, or the spool's input/ for messages
# that stay queued), plus:
#   exim-bpr.txt   `exim -bpr <id>` and
#   exim-Mvh.txt   `exim -Mvh <id>`, both run while the pair sat in a spool: the live spool for
#                  queued messages; for queuefile copies, the spool of a queue-only "reader"
#                  instance the pair was dropped into (files 0640 Debian-exim, -D first).
#   mainlog.txt    (tree case only) the mainlog lines of that message; the run's temporary
#                  directory is written as $T there, nothing else is changed.
# At the end every fixture is dropped into a fresh queue-only instance of its series and
# `exim -bpr` must list each one without a spool read error.
# Only directories named like b496-*/t498-* are replaced; spool-fixtures/README.md (which says
# how each case is made) is left alone. Every daemon started here is stopped by pid on exit.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(realpath -m -- "${1:-$HERE/../spool-fixtures}")
WAIT_SECONDS=${SPOOLSIFT_FIXTURE_WAIT:-60}

[[ $(id -u) -eq 0 ]] || {
  echo "make-fixtures.sh: must run as root (test Exims, -t/-bs submissions as root)" >&2
  exit 1
}
command -v swaks >/dev/null || {
  echo "make-fixtures.sh: swaks missing; run scripts/install-test-deps.sh" >&2
  exit 1
}
bash "$HERE/build-exim.sh" bookworm >/dev/null
bash "$HERE/build-exim.sh" trixie >/dev/null

T=$(mktemp -d "${TMPDIR:-/tmp}/spoolsift-fixtures.XXXXXX")
# The Exim user must reach the instances below (exim-test.sh opens up only their parent).
chmod 0711 "$T"
STAGE=$T/out
mkdir -p "$STAGE" "$T/msg"
STARTED=()

cleanup() {
  local d
  for d in "${STARTED[@]}"; do
    bash "$HERE/exim-test.sh" stop --dir "$d" || true
  done
  if [[ -n ${SPOOLSIFT_FIXTURE_KEEP:-} ]]; then
    log "kept $T (logs and spools of the stopped instances)"
  else
    rm -rf "$T"
  fi
}
trap cleanup EXIT

log() { echo "make-fixtures.sh: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# --- instances -------------------------------------------------------------------------------

# A loopback port nobody answers on. The instance binds it right after; a clash makes the
# start fail loudly rather than silently.
free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
}

# start_instance NAME SERIES MODE [extra exim-test.sh options]
start_instance() {
  local name=$1 series=$2 mode=$3
  shift 3
  local d=$T/$name
  mkdir -p "$d"
  STARTED+=("$d/exim")
  # No queue runner anywhere: every delivery attempt here is one this script asked for.
  bash "$HERE/exim-test.sh" start --series "$series" --mode "$mode" --dir "$d/exim" \
    --queuefile-dir "$d/qf" --port "$(free_port)" --queue-interval none "$@" >/dev/null
}

# use NAME: load that instance's EXIM_* variables.
use() {
  # shellcheck disable=SC1090 # written by exim-test.sh
  source "$T/$1/exim/exim-test.env"
}

exim_() { "$EXIM_BIN" -C "$EXIM_CONF" "$@"; }

# --- waiting ---------------------------------------------------------------------------------

# wait_until DESCRIPTION COMMAND...: poll COMMAND until it succeeds, fail after the deadline.
wait_until() {
  local what=$1 deadline=$((SECONDS + WAIT_SECONDS))
  shift
  until "$@"; do
    ((SECONDS < deadline)) || die "timed out after ${WAIT_SECONDS}s waiting for $what"
    sleep 0.05 # poll interval; the loop checks the real condition
  done
}

mainlog_has() { grep -qF -- "$1" "$EXIM_LOG/mainlog" 2>/dev/null; }

# Path of a message's -H in the current instance's spool (flat or split), or nothing.
spool_h() {
  local id=$1 f
  for f in "$EXIM_SPOOL/input/$id-H" "$EXIM_SPOOL/input/${id:5:1}/$id-H"; do
    [[ -f $f ]] && echo "$f" && return 0
  done
  return 1
}

# The delivery attempt for ID has ended: Exim either logged Completed, or rewrote the -H
# (which drops -deliver_firsttime) and merged and removed its -J journal.
attempt_over() {
  local id=$1 h
  mainlog_has "$id Completed" && return 0
  h=$(spool_h "$id") || return 1
  ! grep -qx -- '-deliver_firsttime' "$h" && [[ ! -e ${h%-H}-J ]]
}

qf_pair_present() { [[ -f $EXIM_QUEUEFILE_DIR/$1-H && -f $EXIM_QUEUEFILE_DIR/$1-D ]]; }

# The id of the message whose <= line has T="SUBJECT" (for submissions that print no id).
id_by_subject() {
  awk -v s="T=\"$1\"" '$5 == "<=" && index($0, s) {print $4}' "$EXIM_LOG/mainlog" | tail -n 1
}
# The id of the message Exim generated about ORIGINAL (a bounce or DSN: "<= <> R=ORIGINAL").
id_by_origin() {
  awk -v r="R=$1" '$5 == "<=" && $6 == "<>" && index($0, r) {print $4}' "$EXIM_LOG/mainlog" | tail -n 1
}
have_id_by_origin() { [[ -n $(id_by_origin "$1") ]]; }
have_id_by_subject() { [[ -n $(id_by_subject "$1") ]]; }

# --- SMTP, lockstep (PIPELINING is not relied on) --------------------------------------------

# smtp_tcp PORT / smtp_bs ARGS...: open a session on SMTP_IN/SMTP_OUT and read the banner.
smtp_tcp() {
  exec {SMTP_FD}<>"/dev/tcp/127.0.0.1/$1"
  SMTP_IN=$SMTP_FD SMTP_OUT=$SMTP_FD
  smtp_reply 220
}
smtp_bs() {
  # A local SMTP session as root, like a submission program would run it.
  coproc EXIM_BS { "$EXIM_BIN" -C "$EXIM_CONF" -bs "$@" 2>&1; }
  SMTP_IN=${EXIM_BS[0]} SMTP_OUT=${EXIM_BS[1]}
  smtp_reply 220
}
smtp_reply() {
  local want=$1 line
  SMTP_TEXT=''
  while :; do
    IFS= read -r -t 30 -u "$SMTP_IN" line || die "no SMTP reply (wanted $want) after: $SMTP_TEXT"
    line=${line%$'\r'}
    SMTP_TEXT+="$line"$'\n'
    [[ ${line:3:1} == '-' ]] || break
  done
  [[ ${line:0:3} == "$want" ]] || die "SMTP: wanted $want, got: $SMTP_TEXT"
  SMTP_LAST=$line
}
smtp_cmd() {
  printf '%s\r\n' "$1" >&"$SMTP_OUT"
  smtp_reply "$2"
}
# DATA with FILE (LF line ends): CRLF and dot-stuffing on the wire. Sets SMTP_ID.
smtp_data() {
  smtp_cmd DATA 354
  sed -e 's/^\./../' -e 's/$/\r/' "$1" >&"$SMTP_OUT"
  printf '.\r\n' >&"$SMTP_OUT"
  smtp_reply 250
  SMTP_ID=${SMTP_LAST##*id=}
}
# BDAT LAST with FILE sent as is (CHUNKING: no dot-stuffing, no terminator). Sets SMTP_ID.
smtp_bdat_last() {
  printf 'BDAT %d LAST\r\n' "$(stat -c %s "$1")" >&"$SMTP_OUT"
  cat "$1" >&"$SMTP_OUT"
  smtp_reply 250
  SMTP_ID=${SMTP_LAST##*id=}
}
smtp_quit() {
  smtp_cmd QUIT 221
  if [[ $SMTP_IN == "$SMTP_OUT" ]]; then
    exec {SMTP_FD}>&-
  else
    wait "$EXIM_BS_PID" 2>/dev/null || true
  fi
}

# --- capture ---------------------------------------------------------------------------------

# capture CASE DIR ID: copy the pair from DIR into the case directory, bytes unchanged.
capture() {
  local case=$1 dir=$2 id=$3
  mkdir -p "$STAGE/$case"
  cp "$dir/$id-H" "$dir/$id-D" "$STAGE/$case/"
  chmod 0644 "$STAGE/$case/$id-H" "$STAGE/$case/$id-D"
  echo "$id" >"$T/id.$case"
  log "$case: $id"
}

# meta_live CASE ID: -bpr and -Mvh from the current instance, where the message is queued.
meta_live() {
  exim_ -bpr "$2" >"$STAGE/$1/exim-bpr.txt"
  exim_ -Mvh "$2" >"$STAGE/$1/exim-Mvh.txt"
}

# drop_in INSTANCE FILES_DIR ID: put a pair into INSTANCE's spool the way a re-queuer must
# (-D first, Debian-exim 0640, flat input/).
drop_in() {
  local inst=$1 src=$2 id=$3 input=$T/$1/exim/spool/input
  install -d -o Debian-exim -g Debian-exim -m 0750 "$input"
  install -o Debian-exim -g Debian-exim -m 0640 "$src/$id-D" "$input/$id-D"
  install -o Debian-exim -g Debian-exim -m 0640 "$src/$id-H" "$input/$id-H"
}

# meta_reader CASE SERIES ID: -bpr/-Mvh of a queuefile copy, dropped into the reader spool.
meta_reader() {
  local case=$1 series=$2 id=$3
  drop_in "reader-$series" "$STAGE/$case" "$id"
  (
    use "reader-$series"
    meta_live "$case" "$id"
  )
}

# qf_case CASE SERIES ID: wait for the queuefile copy of ID and the end of the attempt, then
# capture the copy.
qf_case() {
  local case=$1 series=$2 id=$3
  wait_until "queuefile copy of $id" qf_pair_present "$id"
  wait_until "end of the delivery attempt of $id" attempt_over "$id"
  capture "$case" "$EXIM_QUEUEFILE_DIR" "$id"
  meta_reader "$case" "$series" "$id"
}

# spool_case CASE ID: capture a message from the current instance's spool, where it is queued.
spool_case() {
  local case=$1 id=$2 h
  h=$(spool_h "$id") || die "$id is not in $EXIM_SPOOL"
  capture "$case" "$(dirname "$h")" "$id"
  meta_live "$case" "$id"
}

# --- messages --------------------------------------------------------------------------------

write_messages() {
  local m=$T/msg
  # Several recipients, DSN parameters, Cc, a folded Subject.
  cat >"$m/multi.eml" <<'EOF'
From: Alice <alice@client.test>
To: Bob <bob@test.example>, carol@test.example
Cc: dave@test.example, eve@test.example
Subject: fixture multi-dsn
  with a folded subject line
Message-ID: <multi-dsn@client.test>
Date: Fri, 28 Nov 2025 10:00:00 +0000

Hello Bob, Carol, Dave and Eve.
.A line that starts with a dot (dot-stuffed on the wire).
EOF
  # 8-bit headers: UTF-8 in From/Subject, one raw Latin-1 byte (0xE9); SMTPUTF8 addresses.
  {
    printf 'From: =?utf-8?q?J=C3=B6rg?= M\xc3\xbcller <j\xc3\xb6rg@client.test>\n'
    printf 'To: bob@test.example, zo\xc3\xab@test.example\n'
    printf 'Subject: Gr\xc3\xbc\xc3\x9fe aus K\xc3\xb6ln \xe2\x9c\x93\n'
    printf 'X-Latin1: caf\xe9 au lait\n'
    printf 'Message-ID: <utf8@client.test>\n'
    printf 'MIME-Version: 1.0\n'
    printf 'Content-Type: text/plain; charset=utf-8\n'
    printf 'Content-Transfer-Encoding: 8bit\n'
    printf '\n'
    printf 'Gr\xc3\xbc\xc3\x9fe, na\xc3\xafve caf\xc3\xa9 \xe2\x80\x94 \xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\n'
  } >"$m/utf8.eml"
  # A folded References: well over 999 bytes (4-digit spool length), and one unfolded
  # 1200-character header line.
  {
    printf 'From: alice@client.test\nTo: bob@test.example\nSubject: fixture long header\n'
    printf 'Message-ID: <long@client.test>\n'
    printf 'References:'
    local i
    for i in $(seq 1 40); do
      printf ' <thread-%03d.0123456789abcdef@lists.client.test>\n' "$i"
    done
    printf 'X-Long-Line: %s\n' "$(awk 'BEGIN { while (n++ < 1200) printf "x" }')"
    printf '\nBody of the long-header fixture.\n'
  } >"$m/long.eml"
  # A body of about 200 KB (numbered 100-byte lines).
  {
    printf 'From: alice@client.test\nTo: bob@test.example\nSubject: fixture large\n'
    printf 'Message-ID: <large@client.test>\n\n'
    awk 'BEGIN { for (i = 1; i <= 2048; i++) printf "line %05d %s\n", i, "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstu" }'
  } >"$m/large.eml"
  # CRLF message without a final line end, for BDAT.
  printf 'From: alice@client.test\r\nTo: bob@test.example\r\nSubject: fixture no final newline\r\nMessage-ID: <nolf@client.test>\r\n\r\nfirst line\r\nlast line without a line end' >"$m/nolf.crlf"
  printf 'From: alice@client.test\r\nTo: bob@test.example\r\nSubject: fixture wireformat\r\nMessage-ID: <wire@client.test>\r\n\r\nline one\r\n.line two starts with a dot\r\nline three\r\n' >"$m/wire.crlf"
  # Local -t submission: no Date or Message-ID (Exim adds them), a Bcc (Exim removes it).
  cat >"$m/local-t.eml" <<'EOF'
From: root
To: bob@test.example
Bcc: carol@test.example
Subject: fixture local-t

Submitted with exim -t as root.
EOF
  printf 'To: bob@test.example\nSubject: fixture local no final newline\n\nno line end here' >"$m/local-nolf.eml"
  printf 'From: alice@client.test\nTo: bob@test.example\nSubject: fixture frozen forced\n\nFrozen, then forced through queuefile with -M.\n' >"$m/forced.eml"
  # Like the worked example of the spool notes (section 4), over a local -bs session.
  cat >"$m/bs.eml" <<'EOF'
From: Alice <alice@sender.example>
To: Bob <bob@test.example>, carol@test.example
Cc: dave@test.example
Subject: Test message
  with a folded subject
Message-ID: <abc123@sender.example>
Date: Fri, 28 Nov 2025 10:00:00 +0000
X-Set-Policy: inbound

Hello Bob.
This is line two.
EOF
}

# swaks_send INSTANCE-PORT ARGS...: one message with swaks; prints the id.
swaks_send() {
  local out
  out=$(swaks --server "127.0.0.1:$EXIM_PORT" --ehlo client.test "$@" 2>&1) || {
    echo "$out" >&2
    die "swaks failed"
  }
  sed -n 's/^<- *250 OK id=\([0-9A-Za-z-]*\).*/\1/p' <<<"$out" | tail -n 1
}

# --- cases -----------------------------------------------------------------------------------

run_series() {
  local s=$1 p id
  case $s in bookworm) p=b496 ;; trixie) p=t498 ;; esac
  start_instance "qf-$s" "$s" queuefile
  start_instance "qo-$s" "$s" queue-only
  start_instance "split-$s" "$s" queue-only --split
  start_instance "wire-$s" "$s" queue-only --wireformat
  start_instance "reader-$s" "$s" queue-only

  # Queuefile copies ---------------------------------------------------------------------------
  use "qf-$s"

  id=$(swaks_send --from alice@client.test --to bob@test.example \
    --header "Subject: fixture single" --header "Message-Id: <single@client.test>" \
    --body "Hello Bob, a single recipient.")
  qf_case "$p-single" "$s" "$id"

  smtp_tcp "$EXIM_PORT"
  smtp_cmd "EHLO client.test" 250
  smtp_cmd "MAIL FROM:<alice@client.test> RET=HDRS ENVID=env-123" 250
  smtp_cmd "RCPT TO:<bob@test.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Test.Example" 250
  smtp_cmd "RCPT TO:<carol@test.example> NOTIFY=NEVER" 250
  smtp_cmd "RCPT TO:<dave@test.example> NOTIFY=DELAY ORCPT=rfc822;dave@test.example" 250
  smtp_cmd "RCPT TO:<eve@test.example>" 250
  smtp_data "$T/msg/multi.eml"
  smtp_quit
  id=$SMTP_ID
  qf_case "$p-multi-dsn" "$s" "$id"
  # queuefile "delivering" bob (NOTIFY=SUCCESS) makes Exim send a success DSN, which the scan
  # router hands to queuefile as well: an Exim-generated message with sender <>.
  wait_until "the success DSN for $id" have_id_by_origin "$id"
  qf_case "$p-dsn-success" "$s" "$(id_by_origin "$id")"

  # Three recipients: queuefile takes the first, defers the others with EEXIST; the origin
  # stays queued with the first recipient in its non-recipients tree.
  id=$(swaks_send --from alice@client.test --to bob@test.example,carol@test.example,dave@test.example \
    --header "Subject: fixture tree" --header "Message-Id: <tree@client.test>" \
    --body "Three recipients through the unpatched queuefile transport.")
  wait_until "the attempt on $id to end" attempt_over "$id"
  spool_case "$p-tree" "$id"
  grep -F -- "$id" "$EXIM_LOG/mainlog" | sed "s|$T|\$T|g" >"$STAGE/$p-tree/mainlog.txt"

  smtp_tcp "$EXIM_PORT"
  smtp_cmd "EHLO client.test" 250
  smtp_cmd $'MAIL FROM:<j\xc3\xb6rg@client.test> SMTPUTF8 BODY=8BITMIME' 250
  smtp_cmd "RCPT TO:<bob@test.example>" 250
  smtp_cmd $'RCPT TO:<zo\xc3\xab@test.example>' 250
  smtp_data "$T/msg/utf8.eml"
  smtp_quit
  qf_case "$p-utf8" "$s" "$SMTP_ID"

  smtp_tcp "$EXIM_PORT"
  smtp_cmd "EHLO client.test" 250
  smtp_cmd "MAIL FROM:<alice@client.test>" 250
  smtp_cmd "RCPT TO:<bob@test.example>" 250
  smtp_data "$T/msg/long.eml"
  smtp_quit
  qf_case "$p-long-header" "$s" "$SMTP_ID"

  id=$(swaks_send --ehlo aclvars.client.test --from alice@client.test --to bob@test.example \
    --header "Subject: fixture acl-vars" --header "Message-Id: <acl-vars@client.test>" \
    --header "X-Set-Policy: inbound" --body "ACL variables with newlines.")
  qf_case "$p-acl-vars" "$s" "$id"

  id=$(swaks_send --from alice@client.test --to bob@test.example \
    --header "Subject: fixture deleted header" --header "Message-Id: <deleted@client.test>" \
    --header "X-Remove-Me: the DATA ACL removes this" --body "One header removed by the ACL.")
  qf_case "$p-deleted-header" "$s" "$id"

  smtp_tcp "$EXIM_PORT"
  smtp_cmd "EHLO client.test" 250
  smtp_cmd "MAIL FROM:<alice@client.test>" 250
  smtp_cmd "RCPT TO:<bob@test.example>" 250
  smtp_bdat_last "$T/msg/nolf.crlf"
  smtp_quit
  qf_case "$p-bdat-no-final-lf" "$s" "$SMTP_ID"

  if [[ $s == bookworm ]]; then
    smtp_tcp "$EXIM_PORT"
    smtp_cmd "EHLO client.test" 250
    smtp_cmd "MAIL FROM:<alice@client.test> SIZE=$(stat -c %s "$T/msg/large.eml")" 250
    smtp_cmd "RCPT TO:<bob@test.example>" 250
    smtp_data "$T/msg/large.eml"
    smtp_quit
    qf_case "$p-large" "$s" "$SMTP_ID"
  fi

  exim_ -t <"$T/msg/local-t.eml"
  wait_until "the <= line of the -t submission" have_id_by_subject "fixture local-t"
  qf_case "$p-local-t" "$s" "$(id_by_subject "fixture local-t")"

  exim_ -t <"$T/msg/local-nolf.eml"
  wait_until "the <= line of the -t submission" have_id_by_subject "fixture local no final newline"
  qf_case "$p-local-no-final-lf" "$s" "$(id_by_subject "fixture local no final newline")"

  smtp_bs -oMa 192.0.2.10.40000 -oMi 198.51.100.1.25 -oMs client.example.net
  smtp_cmd "EHLO aclvars.client.example.net" 250
  smtp_cmd "MAIL FROM:<alice@sender.example> ENVID=env-123 RET=HDRS" 250
  smtp_cmd "RCPT TO:<bob@test.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;Bob@Test.Example" 250
  smtp_cmd "RCPT TO:<carol@test.example>" 250
  smtp_data "$T/msg/bs.eml"
  smtp_quit
  qf_case "$p-local-bs" "$s" "$SMTP_ID"

  # Queued only (-odq), frozen (-Mf), then forced (-M): the queuefile copy is taken during that
  # forced attempt, before Exim rewrites the -H.
  exim_ -odq -f alice@client.test bob@test.example <"$T/msg/forced.eml"
  wait_until "the <= line of the -odq submission" have_id_by_subject "fixture frozen forced"
  id=$(id_by_subject "fixture frozen forced")
  exim_ -Mf "$id" >&2
  exim_ -M "$id"
  qf_case "$p-frozen-forced" "$s" "$id"

  # Messages that stay in a spool ----------------------------------------------------------------
  use "qo-$s"
  id=$(swaks_send --from alice@client.test --to bob@test.example \
    --header "Subject: fixture frozen" --header "Message-Id: <frozen@client.test>" \
    --body "Frozen by exim -Mf.")
  exim_ -Mf "$id" >&2
  spool_case "$p-frozen" "$id"

  # A real bounce: the forced delivery fails (no such local user), and the bounce Exim generates
  # is itself only queued (queue_only), from <> to alice.
  id=$(swaks_send --from alice@test.example --to nosuchuser@test.example \
    --header "Subject: fixture bounce origin" --header "Message-Id: <bounce-origin@client.test>" \
    --body "This one cannot be delivered.")
  exim_ -M "$id"
  wait_until "the bounce of $id" have_id_by_origin "$id"
  spool_case "$p-bounce" "$(id_by_origin "$id")"

  use "split-$s"
  id=$(swaks_send --from alice@client.test --to bob@test.example \
    --header "Subject: fixture split" --header "Message-Id: <split@client.test>" \
    --body "Queued in a split spool: input/<6th character of the id>/.")
  spool_case "$p-split" "$id"

  use "wire-$s"
  smtp_tcp "$EXIM_PORT"
  smtp_cmd "EHLO client.test" 250
  smtp_cmd "MAIL FROM:<alice@client.test>" 250
  smtp_cmd "RCPT TO:<bob@test.example>" 250
  smtp_bdat_last "$T/msg/wire.crlf"
  smtp_quit
  spool_case "$p-wireformat" "$SMTP_ID"

  # Nothing may have gone to the paniclog in any instance.
  local inst
  for inst in qf qo split wire reader; do
    if [[ -s $T/$inst-$s/exim/log/paniclog ]]; then
      cat "$T/$inst-$s/exim/log/paniclog" >&2
      die "paniclog of $inst-$s is not empty"
    fi
  done
}

# Drop every fixture of a series into a fresh queue-only spool and have exim -bpr read them.
verify_series() {
  local s=$1 p n=0 d id out
  case $s in bookworm) p=b496 ;; trixie) p=t498 ;; esac
  start_instance "verify-$s" "$s" queue-only
  use "verify-$s"
  for d in "$OUT/$p"-*/; do
    id=$(basename "$(ls "$d"*-H)")
    id=${id%-H}
    drop_in "verify-$s" "$d" "$id"
    n=$((n + 1))
  done
  out=$(exim_ -bpr 2>&1)
  if grep -q "spool read error\|Format error" <<<"$out"; then
    echo "$out" >&2
    die "exim -bpr could not read some $s fixtures"
  fi
  [[ $(exim_ -bpc) -eq $n ]] || die "exim -bpc counts $(exim_ -bpc), expected $n"
  for d in "$OUT/$p"-*/; do
    id=$(basename "$(ls "$d"*-H)")
    grep -qF " ${id%-H} " <<<"$out" || die "exim -bpr does not list ${id%-H}"
  done
  log "verified: exim -bpr ($s) reads all $n fixtures"
}

write_messages
run_series bookworm
run_series trixie

# Replace only the generated case directories.
mkdir -p "$OUT"
rm -rf "${OUT:?}"/b496-* "${OUT:?}"/t498-*
cp -r "$STAGE"/. "$OUT"/
verify_series bookworm
verify_series trixie
log "wrote $(find "$OUT" -mindepth 1 -maxdepth 1 -type d | wc -l) cases to $OUT"
