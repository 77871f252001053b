#!/usr/bin/env bash
# The whole test suite, on a fresh machine as on a developer's: install what the tests need, build
# the two test Exims (cached after the first run), check formatting and lints, run a bounded fuzz
# of the spool reader, then every test. README.md gives this as the test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
bash scripts/build-exim.sh bookworm
bash scripts/build-exim.sh trixie

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
bash scripts/fuzz.sh "${SPOOLSIFT_FUZZ_SECONDS:-60}" spool_header
bash scripts/fuzz.sh "${SPOOLSIFT_FUZZ_SECONDS:-60}" content_structure
bash scripts/fuzz.sh "${SPOOLSIFT_FUZZ_SECONDS:-60}" content_archive
# Last, so that its summary closes the output. Benches print tables and are run by
# scripts/bench.sh, not here.
cargo test
