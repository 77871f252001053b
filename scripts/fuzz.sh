#!/usr/bin/env bash
# Coverage-guided fuzzing of one target of fuzz/fuzz_targets/ for a bounded time.
#
#   scripts/fuzz.sh [SECONDS] [TARGET]   default 60 s of spool_header (the -H reader); exits
#                                        non-zero on any crash, leak or timeout
#
# TARGET content_structure checks the content scanner's MIME structure census against
# mail-parser's parse; it is seeded with whole messages (the spool fixtures' bodies with a header).
#
# Works on stable Rust: libFuzzer comes from the libfuzzer-sys crate (crates.io, built with the
# machine's C++ compiler), and the coverage instrumentation is the set of stable codegen flags that
# `cargo fuzz build --sanitizer none` passes. No nightly and no cargo-fuzz install is needed; with
# cargo-fuzz installed, `cargo fuzz run -s none spool_header` runs the same target by hand.
#
# The working corpus (fuzz/corpus/spool_header, not committed) is seeded from the spec example,
# spool-fixtures/ and the malformed corpus (tests/malformed/). A crash leaves its input in
# fuzz/artifacts/spool_header/; turn it into a case of tests/malformed/ once fixed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
name="${2:-spool_header}"
case "$name" in
spool_header | content_structure | content_decoding | content_archive) ;;
*)
    echo "usage: $0 [SECONDS] [spool_header|content_structure|content_decoding|content_archive]" >&2
    exit 2
    ;;
esac
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: $0 [SECONDS]" >&2
    exit 2
    ;;
esac

target="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Cllvm-args=-sanitizer-coverage-stack-depth \
 -Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
 --cfg fuzzing -Cdebug-assertions -Coverflow-checks -Ccodegen-units=1"
# Built for an explicit --target so that RUSTFLAGS do not reach build scripts and proc macros.
cargo build --manifest-path fuzz/Cargo.toml --release --target "$target" --bin "$name"
bin="fuzz/target/$target/release/$name"

corpus="fuzz/corpus/$name"
artifacts="fuzz/artifacts/$name"
mkdir -p "$corpus" "$artifacts"
seeds="$(mktemp -d)"
trap 'rm -rf "$seeds"' EXIT
n=0
if [ "$name" = spool_header ]; then
    while IFS= read -r -d '' f; do
        cp "$f" "$seeds/seed-$n"
        n=$((n + 1))
    done < <(find tests/data spool-fixtures tests/malformed -type f \
        ! -name expected.txt ! -name '*.md' ! -name '*-D' -print0 2>/dev/null)
    dict=(-dict=fuzz/spool_header.dict)
elif [ "$name" = content_archive ]; then
    # Small archives of each kind the walk opens, nested once, made by Python's own modules.
    python3 - "$seeds" <<'SEEDS'
import gzip, io, sys, tarfile, zipfile
out = sys.argv[1]
def zipped(files, method=zipfile.ZIP_DEFLATED):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", method) as z:
        for name, data in files:
            z.writestr(name, data)
    return b.getvalue()
def tarred(files):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w") as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return b.getvalue()
inner = zipped([("setup.exe", b"MZ" + bytes(200)), ("a.txt", b"hello\n")], zipfile.ZIP_STORED)
seeds = [inner, zipped([("inner.zip", inner), ("zeros.bin", bytes(100000))]), tarred([("run.sh", b"#!/bin/sh\n")]),
         gzip.compress(tarred([("x/y.txt", b"text\n")])), gzip.compress(b"plain\n")]
for i, s in enumerate(seeds):
    open(f"{out}/seed-{i}", "wb").write(s)
SEEDS
    n=5
    dict=()
else
    # Whole messages: each fixture's body (its -D without the id line) under a MIME header.
    while IFS= read -r -d '' f; do
        { printf 'Content-Type: multipart/mixed; boundary="b1"\n\n'; tail -n +2 "$f"; } >"$seeds/seed-$n"
        n=$((n + 1))
    done < <(find spool-fixtures -type f -name '*-D' -print0)
    dict=()
fi
echo "fuzz: $name, $n seed files, $(find "$corpus" -type f | wc -l) in the working corpus, ${seconds}s"

# New inputs go to the first directory (the working corpus); the seeds are only read.
status=0
"$bin" "$corpus" "$seeds" \
    "${dict[@]}" \
    -max_len=8192 \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -max_total_time="$seconds" \
    -print_final_stats=1 \
    -artifact_prefix="$artifacts/" || status=$?
if [ "$status" -ne 0 ]; then
    echo "fuzz: FAILED (exit $status). Inputs that failed:" >&2
    find "$artifacts" -type f -newer "$seeds" -printf '  %p\n' >&2
    echo "reproduce with: $bin <input>" >&2
    exit "$status"
fi
echo "fuzz: $name: no crash in ${seconds}s"
