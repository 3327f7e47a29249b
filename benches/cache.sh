#!/usr/bin/env bash
# The registry build cache on a fresh runner (issue 16): for each workload, runner A builds with
# --cache-to into a loopback registry; runner B, with an empty store (no base image either),
# builds the unchanged context with --cache-from. Prints B's time against a cold build, and the
# bytes B downloaded, read from the registry's access log (every 200 answer to a GET: manifests,
# configs, base and cache layers), and the number of requests B made when pushing.
#
#   benches/cache.sh [--workloads "w1 w3 w4"] [--runs N] [--requests]
#
#   Figures per workload (medians of N runs, default 3):
#     cold    empty store with the base image pulled, no cache flags (as compare.sh's cold)
#     export  runner A: cold build + --cache-to (mode=max)
#     B push  empty store, --cache-from, --push to a fresh repository: cached layers no step
#             needs are mounted from the cache repository, never downloaded
#     B local empty store, --cache-from, stored under its tag: cached layers are downloaded
#   Target: B push <= 0.1 of cold.
#   --requests prints the requests of each workload's last B push (method, path, status).
#   Environment: KILN_BIN (else `cargo build --release`), KILN_BENCH_SCALE (default 1; 0.01
#   for a smoke run), KILN_BENCH_DIR (workloads and base images, default target/bench).
#   Runs as root (the base image script and RUN steps as in compare.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

workloads="w1 w3 w4"; runs=3; show_requests=
while (($#)); do
  case $1 in
    --workloads) workloads=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --requests) show_requests=1; shift ;;
    *) echo "usage: $0 [--workloads \"w1 w3 w4\"] [--runs N] [--requests]" >&2; exit 2 ;;
  esac
done
export KILN_BENCH_SCALE=${KILN_BENCH_SCALE:-1}
[[ $(id -u) -eq 0 ]] || { echo "cache.sh: run as root (as compare.sh)" >&2; exit 1; }
for t in docker-registry python3 curl; do
  command -v "$t" >/dev/null || { echo "cache.sh: $t is missing (tests/scripts/install-deps.sh installs it)" >&2; exit 1; }
done

benchdir=${KILN_BENCH_DIR:-$repo/target/bench}
WL="$benchdir/workloads-$KILN_BENCH_SCALE"
TMPD=$(mktemp -d /var/tmp/kiln-cache-bench.XXXXXX)
cleanup() {
  if [[ -f $TMPD/registry.pid ]]; then kill "$(cat "$TMPD/registry.pid")" 2>/dev/null || true; fi
  rm -rf "$TMPD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n ${KILN_BIN:-} ]]; then
  KILN=$KILN_BIN
else
  echo "== building kiln (release)" >&2
  (cd "$repo" && cargo build --release --quiet --bin kiln)
  KILN=$repo/target/release/kiln
fi
echo "== generating workloads in $WL (KILN_BENCH_SCALE=$KILN_BENCH_SCALE)" >&2
# shellcheck disable=SC2086 # a list of names, split on purpose
"$here/workloads/generate.sh" "$WL" $workloads

# A registry of our own, with its access log on (tests/scripts/registry.sh turns it off).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$port
mkdir -p "$TMPD/registry"
cat >"$TMPD/registry/config.yml" <<YAML
version: 0.1
log:
  level: error
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $TMPD/registry/data
http:
  addr: $REG
  secret: $(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
YAML
docker-registry serve "$TMPD/registry/config.yml" >"$TMPD/access.log" 2>"$TMPD/registry.err" &
echo $! >"$TMPD/registry.pid"
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null && break; sleep 0.1; done
echo "== pushing the busybox base to $REG" >&2
"$repo/tests/scripts/base-images.sh" "$benchdir/base" --push "$REG" --only busybox >/dev/null

kiln_() { local store=$1; shift; "$KILN" --root "$TMPD/$store" "$@"; }
now() { date +%s.%N; }
lines() { wc -l <"$TMPD/access.log"; }
# Bytes and requests of successful GETs in the access log after line $1 (combined log format:
# ... "GET /v2/... HTTP/1.1" 200 BYTES ...), then every request's count.
downloaded() {
  tail -n +"$(($1 + 1))" "$TMPD/access.log" |
    awk '$6 == "\"GET" && $9 == 200 { b += $10; n++; if ($7 ~ /\/blobs\//) blobs++ }
         $6 ~ /^"(GET|HEAD|POST|PUT|PATCH|DELETE)$/ { all++ }
         END { printf "%d %d %d %d\n", b, n, blobs, all }'
}
# The requests after line $1: method, path (without the upload state), status.
requests() {
  tail -n +"$(($1 + 1))" "$TMPD/access.log" |
    awk '$6 ~ /^"(GET|HEAD|POST|PUT|PATCH|DELETE)$/ { sub(/^"/, "", $6); sub(/\?_state=.*/, "", $7); print "   ", $6, $7, $9 }'
}
fresh() { rm -rf "${TMPD:?}/$1"; }
results=$TMPD/results.tsv
: >"$results"
counter=0

for w in $workloads; do
  cache_ref="$REG/bench-cache/$w:main"
  base=(--build-arg "BASE=$REG/kiln-test")
  for r in $(seq 1 "$runs"); do
    echo "== $w run $r/$runs" >&2
    # cold: empty store, base pulled first (not timed).
    fresh cold
    kiln_ cold pull "$REG/kiln-test/busybox:latest" >/dev/null 2>&1
    t0=$(now)
    kiln_ cold build --progress plain "${base[@]}" -t "bench-$w" "$WL/$w" >/dev/null 2>"$TMPD/err" ||
      { cat "$TMPD/err" >&2; exit 1; }
    printf '%s\tcold\t%s\n' "$w" "$(echo "$(now) - $t0" | bc)" >>"$results"
    # runner A: cold + export (each run exports to a fresh tag, so it is a first export).
    fresh a
    kiln_ a pull "$REG/kiln-test/busybox:latest" >/dev/null 2>&1
    cache_ref="$REG/bench-cache/$w:run$r"
    t0=$(now)
    kiln_ a build --progress plain "${base[@]}" -t "bench-$w" --cache-to "$cache_ref" "$WL/$w" \
      >/dev/null 2>"$TMPD/err" || { cat "$TMPD/err" >&2; exit 1; }
    printf '%s\texport\t%s\n' "$w" "$(echo "$(now) - $t0" | bc)" >>"$results"
    grep -q "exported the build cache" "$TMPD/err" || { echo "cache.sh: $w: no export:" >&2; cat "$TMPD/err" >&2; exit 1; }
    # runner B, pushing: empty store, nothing pulled.
    fresh b
    counter=$((counter + 1))
    mark=$(lines)
    t0=$(now)
    kiln_ b build --progress plain "${base[@]}" -t "$REG/bench-app/$w-$counter:latest" --push \
      --cache-from "$cache_ref" "$WL/$w" >/dev/null 2>"$TMPD/err" || { cat "$TMPD/err" >&2; exit 1; }
    t=$(echo "$(now) - $t0" | bc)
    sleep 0.2 # the registry writes its log line after the answer
    printf '%s\tb-push\t%s\t%s\n' "$w" "$t" "$(downloaded "$mark")" >>"$results"
    grep -E "layer\(s\) (written|mounted)|registry cache:" "$TMPD/err" | sed 's/^/   /' >&2
    if [[ -n $show_requests && $r == "$runs" ]]; then
      echo "   requests of B push ($w, run $r):" >&2
      requests "$mark" >&2
    fi
    # runner B, keeping the image locally.
    fresh b
    mark=$(lines)
    t0=$(now)
    kiln_ b build --progress plain "${base[@]}" -t "bench-$w" --cache-from "$cache_ref" "$WL/$w" \
      >/dev/null 2>"$TMPD/err" || { cat "$TMPD/err" >&2; exit 1; }
    t=$(echo "$(now) - $t0" | bc)
    sleep 0.2
    printf '%s\tb-local\t%s\t%s\n' "$w" "$t" "$(downloaded "$mark")" >>"$results"
  done
done
fresh cold; fresh a; fresh b

python3 - "$results" "$runs" "$KILN_BENCH_SCALE" <<'PY'
import sys, collections
path, runs, scale = sys.argv[1], sys.argv[2], sys.argv[3]
t = collections.defaultdict(lambda: collections.defaultdict(list))
dl = collections.defaultdict(dict)
order = []
for line in open(path):
    f = line.split()
    w, kind, secs = f[0], f[1], float(f[2])
    if w not in order:
        order.append(w)
    t[w][kind].append(secs)
    if len(f) >= 7:
        dl[w][kind] = (int(f[3]), int(f[4]), int(f[5]), int(f[6]))
def med(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
def mb(b):
    return f"{b / 1e6:.2f} MB" if b >= 1e6 else f"{b / 1e3:.1f} kB"
print(f"\nkiln registry cache, fresh runner: medians of {runs} runs, KILN_BENCH_SCALE={scale}\n")
print("| workload | cold | export (A) | B push | B push / cold | B push downloaded | B push requests | B local | B local / cold | B local downloaded | target B push <= 0.1 cold |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for w in order:
    c, e, bp, bl = (med(t[w][k]) for k in ("cold", "export", "b-push", "b-local"))
    dp, dlc = dl[w].get("b-push", (0, 0, 0, 0)), dl[w].get("b-local", (0, 0, 0, 0))
    verdict = "met" if bp <= 0.1 * c else "**missed**"
    if float(scale) != 1:
        verdict += " (not at full size)"
    print(f"| {w} | {c:.3f} s | {e:.3f} s | {bp:.3f} s | {bp / c:.3f} | {mb(dp[0])} ({dp[2]} blobs) "
          f"| {dp[3]} (last run) | {bl:.3f} s | {bl / c:.3f} | {mb(dlc[0])} ({dlc[2]} blobs) | {verdict} |")
PY
