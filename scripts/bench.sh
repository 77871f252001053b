#!/usr/bin/env bash
# Benchmarks, printed as tables (never timed assertions in tests):
#   the engine with the built-in scanner on tmpfs and on the real disk, next to the disk's raw rate
#   for the same write pattern. Usage: scripts/bench.sh [MESSAGES]   (default 10000);
#   ARC verification time per message (1 and 3 RSA-2048 sets, 2 KB and 100 KB bodies).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench engine -- --messages "${1:-10000}" --dir tmpfs=/dev/shm --dir disk=target
cargo bench --bench arc
