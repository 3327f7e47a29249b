#!/usr/bin/env bash
# Generates the benchmark build contexts w1..w5 (issue 7) and multi (issue 17) into OUTDIR; see generate.py.
#   benches/workloads/generate.sh OUTDIR [w1 w2 ... multi]     KILN_BENCH_SCALE=0.01 for a smoke run
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
(($# >= 1)) || { echo "usage: $0 OUTDIR [w1 w2 w3 w4 w5]" >&2; exit 2; }
mkdir -p "$1"
exec python3 "$here/generate.py" "$@"
