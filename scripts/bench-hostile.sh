#!/usr/bin/env bash
# Peak memory of `spoolsift watch` over one batch of hostile messages, printed as a table: a MIME
# part bomb (47.5 MB of `--B` and a blank line), a nesting bomb (47 MB of multiparts one inside
# the other), a -H of a million header lines, a 100 MB -H, and an ordinary message claimed in the
# same batch. Target: a peak under 256 MiB for the whole batch.
#
#   scripts/bench-hostile.sh            (release build, the embedded pipeline, no Exim needed)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/spoolsift

dir=$(mktemp -d "${TMPDIR:-/tmp}/spoolsift-bench-hostile.XXXXXX")
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/qf" "$dir/spool/input"

# Pairs in queuefile form, from the spec example's envelope (tests/data/spec-example).
python3 - "$dir/qf" <<'EOF'
import sys

qf = sys.argv[1]
base = open("tests/data/spec-example/1xXORz-0000000058C-2p8L-H", "rb").read()
envelope, _, _ = base.partition(b"\n\n")
envelope = envelope.split(b"\n", 1)[1]  # without the id line

def header(name, value):
    text = b"%s: %s\n" % (name, value)
    return b"%03d  %s" % (len(text), text)

def pair(id_, headers, body_writer):
    with open(f"{qf}/{id_}-H", "wb") as h:
        h.write(b"%s-H\n%s\n\n" % (id_.encode(), envelope))
        for hd in headers:
            h.write(hd)
    with open(f"{qf}/{id_}-D", "wb") as d:
        d.write(b"%s-D\n" % id_.encode())
        body_writer(d)

subject = header(b"Subject", b"bench")
mixed = lambda b: header(b"Content-Type", b'multipart/mixed; boundary="%s"' % b)

# 1. Part bomb: 9.5 million empty parts.
pair("1xXORz-0000000001A-0000", [subject, mixed(b"B")], lambda d: d.write(b"--B\n\n" * 9_500_000))

# 2. Nesting bomb: each part a multipart with a boundary of its own, to 47 MB.
def nest(d):
    size, i = 0, 0
    while size < 47_000_000:
        chunk = b'--b%d\nContent-Type: multipart/mixed; boundary="b%d"\n\n' % (i, i + 1)
        d.write(chunk)
        size += len(chunk)
        i += 1
pair("1xXORz-0000000002A-0000", [subject, mixed(b"b0")], nest)

# 3. A -H of a million header lines.
many = [header(b"X-Line", b"%d" % i) for i in range(1_000_000)]
pair("1xXORz-0000000003A-0000", many, lambda d: d.write(b"hello\n"))

# 4. A 100 MB -H (long header lines).
line = header(b"X-Long", b"y" * 900)
pair("1xXORz-0000000004A-0000", [line] * (100_000_000 // len(line)), lambda d: d.write(b"hello\n"))

# 5. An ordinary message in the same batch.
pair("1xXORz-0000000005A-0000", [subject], lambda d: d.write(b"Hello, this is an ordinary message.\n"))
EOF

log="$dir/watch.log"
/usr/bin/time -f '%M %e' -o "$dir/time" "$bin" watch --queuefile-dir "$dir/qf" --work-dir "$dir/work" \
  --spool-dir "$dir/spool" --no-exim --once >"$log" 2>"$dir/stderr" || {
  cat "$dir/stderr" >&2
  exit 1
}
read -r rss_kb secs <"$dir/time"

printf '%-34s %12s  %s\n' "message" "bytes (-H+-D)" "action"
for id in 1xXORz-0000000001A-0000 1xXORz-0000000002A-0000 1xXORz-0000000003A-0000 1xXORz-0000000004A-0000 \
  1xXORz-0000000005A-0000; do
  case "$id" in
  *1A-*) what="part bomb (9.5M parts)" ;;
  *2A-*) what="nesting bomb (47 MB)" ;;
  *3A-*) what="-H of 10^6 header lines" ;;
  *4A-*) what="-H of 100 MB" ;;
  *) what="ordinary message" ;;
  esac
  # The pairs have left the queuefile directory: their sizes come from where they went.
  size=$(find "$dir/work" "$dir/spool" -name "*${id#1xXORz-}*" -o -path "*${id}*" -type f 2>/dev/null |
    xargs -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
  action=$(grep -o " $id .*action=[a-z-]*" "$log" | sed 's/.*action=//' | head -1)
  printf '%-34s %12s  %s\n' "$what" "$size" "${action:-?}"
done
target_kb=$((256 * 1024))
verdict=$([ "$rss_kb" -lt "$target_kb" ] && echo "within" || echo "OVER")
printf '\npeak RSS of watch over the batch: %d MiB (%s the 256 MiB target), %s s\n' $((rss_kb / 1024)) "$verdict" "$secs"
