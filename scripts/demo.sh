#!/usr/bin/env bash
# The main job on the bundled fixtures, with the embedded pipeline (built-in content scanner, no
# service): copies every pair of spool-fixtures/ into a fresh queuefile-style directory, as if
# Exim's queuefile transport had just handed them over, adds one message carrying the EICAR test
# string (built here, never stored), runs the engine once (`spoolsift watch --once`) into a
# temporary Exim-style spool, and shows what it did. Nothing outside a temporary directory is
# touched, and no Exim is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet
bin=target/release/spoolsift
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
mkdir -p "$t/queuefile" "$t/spool/input"

n=0
for h in spool-fixtures/*/*-H tests/data/spec-example/*-H; do
  [[ -e $h ]] || continue
  name=$(basename "$h")
  if [[ -e $t/queuefile/$name ]]; then
    continue # the same message captured at two moments: hand over one copy
  fi
  cp "$h" "${h%-H}-D" "$t/queuefile/"
  n=$((n + 1))
done

# One more message, with the EICAR test string assembled from two halves (so that no file here
# holds it). Header lengths are byte counts, as in every -H file.
id=1zzzzz-0000000DEMO-0001
eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$'"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!\$H+H*"
subject='Subject: demo message with the EICAR test string'
{
  printf '%s-H\nDebian-exim 102 105\n<demo@example.org>\n1795895471 0\n' "$id"
  printf -- '-received_protocol local\n-body_linecount 1\nXX\n1\nuser@example.org\n\n'
  printf '%03d  %s\n' $((${#subject} + 1)) "$subject"
} >"$t/queuefile/$id-H"
printf '%s-D\n%s\n' "$id" "$eicar" >"$t/queuefile/$id-D"
n=$((n + 1))

echo "== $n messages handed over in $t/queuefile; running the engine once"
"$bin" watch --once --no-exim --queuefile-dir "$t/queuefile" --work-dir "$t/spoolsift" --spool-dir "$t/spool"
echo
requeued=$(find "$t/spool/input" -name '*-H' | wc -l)
"$bin" inspect --check "$t/spool/input"
echo "== $requeued messages re-queued into the spool (all valid by spoolsift inspect --check); one of them:"
first=$(find "$t/spool/input" -name '*-H' | sort | head -1)
grep -E '^-aclm _scanned|^[0-9]{3}. (Authentication-Results|X-Spoolsift-Status)' -A1 "$first"
echo
echo "== quarantined:"
for v in "$t"/spoolsift/quarantine/*/verdict.json; do
  [[ -e $v ]] && grep -m1 -A1 '"reasons"' "$v" | tr -s ' \n' ' ' && echo
done
echo
echo "== left in the queuefile directory: $(find "$t/queuefile" -type f | wc -l) files"
