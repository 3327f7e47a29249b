#!/usr/bin/env bash
# kiln against buildah on the five workloads of issue 7 (benches/workloads/), same run, same machine.
#
#   benches/compare.sh [--quick] [--rootless] [--runs N] [--tmpfs SIZE] [--workloads "w1 w3"]
#                      [--scenarios "cold edit"]
#
#   --quick       KILN_BENCH_SCALE=0.01 (tiny contexts) and 2 timed runs: a smoke run in minutes.
#   --runs N      timed runs per figure (default 3; the table shows medians).
#   --rootless    run every kiln, buildah and skopeo step as the unprivileged user kilntest
#                 (tests/scripts/unprivileged-user.sh: sub-id ranges, /run/user/<uid>); the
#                 script itself still starts as root (base image, registry, the user).
#   --tmpfs SIZE  keep both tools' stores (and the registry) on a tmpfs of SIZE (e.g. 12g).
#   Environment:  KILN_BIN (use this kiln instead of `cargo build --release`), KILN_BENCH_SCALE,
#                 KILN_BENCH_DIR (where workloads and base images are kept between runs, default
#                 target/bench), BUILDAH_ISOLATION (default chroot).
#
# For each workload and each scenario, every tool gets one trial run under `/usr/bin/time -v`
# (peak RSS; a failure is reported as FAILED with its first error line and the table goes on),
# then hyperfine times the tools that passed, one after the other (kiln, buildah, skopeo).
# Scenarios: cold (empty store, base image already pulled), coldpush (cold build + push to a
# fresh repository), nochange (rebuild, nothing changed), edit (rebuild after one file of the
# context changed), push (push alone to a fresh repository; skopeo copy from buildah's storage
# as well). Starts as root; the tools run as root, or with --rootless as kilntest (setpriv, its
# HOME and XDG_RUNTIME_DIR; buildah then runs in its own user namespace). buildah uses its own
# storage under the temp dir (overlay driver, native rootless overlay when rootless), and the
# temp dir belongs to the user the tools run as. Everything temporary (stores, registry) is
# removed on exit, rootless storage from inside the user's namespace (`buildah unshare`).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
SCENARIOS_ALL="cold coldpush nochange edit push"

# ---- one step, run by hyperfine and by the trial run (environment set up by main) ----------

as_tool_user() { # program args...: as the bench user when --rootless, else as root
  if [[ -n ${BENCH_USER:-} ]]; then
    setpriv --reuid="$BENCH_UID" --regid="$BENCH_GID" --clear-groups \
      env HOME="$BENCH_HOME" USER="$BENCH_USER" LOGNAME="$BENCH_USER" \
      XDG_RUNTIME_DIR="/run/user/$BENCH_UID" "$@"
  else
    "$@"
  fi
}
kiln_() { as_tool_user "$KILN" --root "$TMPD/kiln" "$@"; }
buildah_() {
  as_tool_user buildah --root "$TMPD/buildah/root" --runroot "$TMPD/buildah/run" --storage-driver overlay "$@"
}
next_repo() { # tool workload: a fresh repository name, so a push uploads every blob again
  local n=$(($(cat "$TMPD/counter" 2>/dev/null || echo 0) + 1))
  echo "$n" >"$TMPD/counter"
}
repo_name() { echo "$REG/bench/$1-$2-$(cat "$TMPD/counter"):latest"; }
image() { echo "localhost/bench-$1:latest"; }

prep() { # tool scenario workload
  local tool=$1 sc=$2 w=$3
  case $sc in
    cold | coldpush)
      if [[ $tool == kiln ]]; then
        rm -rf "$TMPD/kiln"
        kiln_ pull "$REG/kiln-test/busybox:latest" >/dev/null 2>&1 ||
          kiln_ pull "$REG/kiln-test/busybox:latest"
      else
        buildah_ rm -a >/dev/null 2>&1 || true
        buildah_ rmi -a -f >/dev/null 2>&1 || true
        buildah_ pull -q --tls-verify=false "$REG/kiln-test/busybox:latest" >/dev/null
      fi
      [[ $sc == coldpush ]] && next_repo
      ;;
    edit) date +"edit %s%N" >"$WL/$w/$(edit_file "$w")" ;;
    push) next_repo ;;
    nochange) ;;
  esac
  sync
}

build() { # tool workload
  local tool=$1 w=$2
  if [[ $tool == kiln ]]; then
    kiln_ build --progress plain -t "$(image "$w")" --build-arg "BASE=$REG/kiln-test" "$WL/$w"
  else
    buildah_ build -q --layers --isolation "$BUILDAH_ISOLATION" --tls-verify=false \
      --build-arg "BASE=$REG/kiln-test" -t "$(image "$w")" "$WL/$w"
  fi
}

push() { # tool workload
  local tool=$1 w=$2 dest
  dest=$(repo_name "$tool" "$w")
  case $tool in
    kiln) kiln_ push "$(image "$w")" "$dest" ;;
    buildah) buildah_ push -q --tls-verify=false "$(image "$w")" "docker://$dest" ;;
    skopeo)
      as_tool_user skopeo copy -q --dest-tls-verify=false \
        "containers-storage:[overlay@$TMPD/buildah/root+$TMPD/buildah/run]$(image "$w")" \
        "docker://$dest"
      ;;
  esac
}

step() { # tool scenario workload
  local tool=$1 sc=$2 w=$3
  case $sc in
    cold | nochange | edit) build "$tool" "$w" ;;
    coldpush)
      if [[ $tool == kiln ]]; then
        kiln_ build --push --progress plain -t "$(repo_name kiln "$w")" \
          --build-arg "BASE=$REG/kiln-test" "$WL/$w"
      else
        build "$tool" "$w" && push "$tool" "$w"
      fi
      ;;
    push) push "$tool" "$w" ;;
  esac
}

edit_file() {
  case $1 in
    w1) echo src/edit.txt ;; w2) echo data/edit.txt ;; w3) echo tree/d00/e0/edit.txt ;;
    w4) echo edit.txt ;; w5) echo app/edit.txt ;;
  esac
}

case ${1:-} in
  __prep) shift; prep "$@"; exit ;;
  __step) shift; step "$@" >/dev/null; exit ;;
esac

# ---- the driver ------------------------------------------------------------------------------

runs=3; quick=0; rootless=0; tmpfs=""; workloads="w1 w2 w3 w4 w5"; scenarios=$SCENARIOS_ALL
while (($#)); do
  case $1 in
    --quick) quick=1; runs=2; shift ;;
    --rootless) rootless=1; shift ;;
    --runs) runs=$2; shift 2 ;;
    --tmpfs) tmpfs=$2; shift 2 ;;
    --workloads) workloads=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    *) echo "usage: $0 [--quick] [--rootless] [--runs N] [--tmpfs SIZE] [--workloads \"w1 ..\"] [--scenarios \"cold ..\"]" >&2; exit 2 ;;
  esac
done
((quick)) && export KILN_BENCH_SCALE=${KILN_BENCH_SCALE:-0.01}
export KILN_BENCH_SCALE=${KILN_BENCH_SCALE:-1}
[[ $(id -u) -eq 0 ]] || { echo "compare.sh: run as root (the base image script and the registry need it; --rootless runs the tools as an unprivileged user)" >&2; exit 1; }
for t in hyperfine jq python3 /usr/bin/time setpriv; do
  command -v "$t" >/dev/null || { echo "compare.sh: $t is missing (tests/scripts/install-deps.sh installs it)" >&2; exit 1; }
done

benchdir=${KILN_BENCH_DIR:-$repo/target/bench}
mkdir -p "$benchdir"
export WL="$benchdir/workloads-$KILN_BENCH_SCALE"
export BUILDAH_ISOLATION=${BUILDAH_ISOLATION:-chroot}
export BENCH_USER="" BENCH_UID=0 BENCH_GID=0 BENCH_HOME=""
if ((rootless)); then
  BENCH_USER=${KILN_TEST_USER:-kilntest}
  BENCH_UID=$("$repo/tests/scripts/unprivileged-user.sh")
  BENCH_GID=$(id -g "$BENCH_USER")
  BENCH_HOME=$(getent passwd "$BENCH_USER" | cut -d: -f6)
fi
export TMPD
TMPD=$(mktemp -d /var/tmp/kiln-compare.XXXXXX)
# Both tools' stores on a tmpfs: on a journal-less ext4 (this VM's root), every file created
# after a mass delete pays a scan of recently freed inodes, so back-to-back cold builds slow
# down run after run whichever tool runs; a tmpfs makes the runs comparable.
if [[ -n $tmpfs ]]; then
  mount -t tmpfs -o "size=$tmpfs,mode=0700,uid=$BENCH_UID,gid=$BENCH_GID" kiln-compare "$TMPD"
fi
# The tools' stores live here: it belongs to the user they run as.
chown "$BENCH_UID:$BENCH_GID" "$TMPD"

cleanup() {
  "$repo/tests/scripts/registry.sh" stop "$TMPD/registry" 2>/dev/null || true
  if [[ -d $TMPD/buildah ]] && command -v buildah >/dev/null; then
    buildah_ rm -a >/dev/null 2>&1 || true
    buildah_ rmi -a -f >/dev/null 2>&1 || true
    umount -R "$TMPD/buildah/root/overlay" 2>/dev/null || true
  fi
  # Rootless stores hold files of the user's sub-ids: remove them inside its namespace, where
  # they are the user's own (root's rm -rf below would manage too, this keeps it honest).
  if [[ -n $BENCH_USER ]] && command -v buildah >/dev/null; then
    as_tool_user buildah unshare rm -rf "$TMPD/buildah" "$TMPD/kiln" 2>/dev/null || true
  fi
  if [[ -n $tmpfs ]]; then umount -l "$TMPD" 2>/dev/null || true; fi
  rm -rf "$TMPD"
  # Put the edited files back, so the workloads stay as generated.
  for w in w1 w2 w3 w4 w5; do
    local_f="$WL/$w/$(edit_file "$w")"
    [[ -f $local_f ]] && printf 'edit 0\n' >"$local_f" && touch -d @"${SOURCE_DATE_EPOCH:-1704067200}" "$local_f"
  done
  return 0
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [[ -n ${KILN_BIN:-} ]]; then
  export KILN=$KILN_BIN
else
  echo "== building kiln (release)" >&2
  (cd "$repo" && cargo build --release --quiet --bin kiln)
  export KILN=$repo/target/release/kiln
fi
echo "== generating workloads in $WL (KILN_BENCH_SCALE=$KILN_BENCH_SCALE)" >&2
# shellcheck disable=SC2086 # a list of names, split on purpose
"$here/workloads/generate.sh" "$WL" $workloads
echo "== starting a loopback registry and pushing the busybox base" >&2
export REG
REG=$("$repo/tests/scripts/registry.sh" start "$TMPD/registry" plain)
"$repo/tests/scripts/base-images.sh" "$benchdir/base" --push "$REG" --only busybox >/dev/null

tools=(kiln)
if command -v buildah >/dev/null; then tools+=(buildah); else echo "SKIPPED buildah: not installed (apt-get install buildah)" >&2; fi
results=$TMPD/results.tsv
: >"$results"

# trial TOOL SC W: one run under /usr/bin/time -v; appends "w sc tool status rss_mb note".
trial() {
  local tool=$1 sc=$2 w=$3 err=$TMPD/trial.err
  if ! bash "$0" __prep "$tool" "$sc" "$w" >"$err" 2>&1; then
    printf '%s\t%s\t%s\tFAILED\t-\t%s\n' "$w" "$sc" "$tool" "prepare: $(first_error "$err")" >>"$results"
    return 1
  fi
  if /usr/bin/time -v -o "$TMPD/time.txt" bash "$0" __step "$tool" "$sc" "$w" 2>"$err"; then
    local rss
    rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.0f", $2/1024}' "$TMPD/time.txt")
    printf '%s\t%s\t%s\tok\t%s\t\n' "$w" "$sc" "$tool" "$rss" >>"$results"
  else
    printf '%s\t%s\t%s\tFAILED\t-\t%s\n' "$w" "$sc" "$tool" "$(first_error "$err")" >>"$results"
    return 1
  fi
}
first_error() { # the first line that says error, else the first line
  local line
  line=$(grep -m1 -i 'error' "$1" || head -n1 "$1")
  [[ -n $line ]] || line="no message on stderr (a full disk or tmpfs? see --tmpfs)"
  echo "${line:0:160}" | tr '\t' ' '
}

for w in $workloads; do
  for sc in $scenarios; do
    cmds=(); names=()
    sc_tools=("${tools[@]}")
    [[ $sc == push ]] && command -v buildah >/dev/null && command -v skopeo >/dev/null && sc_tools+=(skopeo)
    for tool in "${sc_tools[@]}"; do
      echo "== $w $sc: $tool (trial run)" >&2
      if trial "$tool" "$sc" "$w"; then
        cmds+=(--prepare "bash $0 __prep $tool $sc $w" "bash $0 __step $tool $sc $w")
        names+=("$tool")
      else
        echo "   FAILED: $(tail -n1 "$results" | cut -f6)" >&2
      fi
    done
    ((${#names[@]})) || continue
    # Interleaved: run r of every tool before run r+1 of any, so load from other work on the
    # machine spreads over the tools instead of landing on one of them.
    for r in $(seq 1 "$runs"); do
      for i in "${!names[@]}"; do
        json=$TMPD/run.json
        if hyperfine -N --runs 1 --style none --export-json "$json" \
          "${cmds[@]:$((i * 3)):3}" >/dev/null 2>"$TMPD/hyperfine.err"; then
          printf '%s\t%s\t%s\ttime\t%s\t\n' "$w" "$sc" "${names[$i]}" \
            "$(jq -r '.results[0].mean' "$json")" >>"$results"
        else
          printf '%s\t%s\t%s\tFAILED\t-\t%s\n' "$w" "$sc" "${names[$i]}" \
            "run $r failed after the trial passed: $(first_error "$TMPD/hyperfine.err")" >>"$results"
        fi
      done
    done
    grep -P "^$w\t$sc\t.*\ttime\t" "$results" | awk -F'\t' '{printf "   %s %.3f s\n", $3, $5}' >&2 || true
  done
done

# ---- the table -------------------------------------------------------------------------------
if ((rootless)); then who="rootless (as $BENCH_USER)"; else who="as root"; fi
python3 - "$results" "$runs" "$KILN_BENCH_SCALE" "$who" <<'PY'
import sys, collections
path, runs, scale, who = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
t = collections.defaultdict(dict)
order = []
for line in open(path):
    w, sc, tool, kind, val, note = line.rstrip("\n").split("\t")
    key = (w, sc)
    if key not in order:
        order.append(key)
    d = t[key].setdefault(tool, {})
    if kind == "time":
        d.setdefault("times", []).append(float(val))
    elif kind == "ok":
        d["rss"] = val
    else:
        d["failed"] = note
def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
for tools in t.values():
    for d in tools.values():
        if "times" in d and "failed" not in d:
            d["time"] = median(d["times"])
def cell(d):
    if d is None:
        return "SKIPPED"
    if "failed" in d:
        return "FAILED"
    return f"{d['time']:.3f} s" if "time" in d else "?"
print(f"\nkiln vs buildah, {who}: medians of {runs} runs, KILN_BENCH_SCALE={scale}, peak RSS of the trial run\n")
# Issue 7's targets, judged only at full size (they are stated for it).
RATIO = {("w1", "coldpush"): 0.5, ("w2", "coldpush"): 0.4, ("w3", "coldpush"): 0.4,
         ("w4", "coldpush"): 0.5, ("w5", "coldpush"): 0.5, ("w5", "edit"): 0.3}
SECONDS = {("w1", "nochange"): 0.050, ("w3", "nochange"): 0.200}
def target(key, k, b):
    if float(scale) != 1 or not k or "time" not in k:
        return ""
    if key in SECONDS:
        limit = SECONDS[key]
        ok = k["time"] < limit
        verdict = f"< {limit * 1000:.0f} ms: " + ("met" if ok else f"**missed by {(k['time'] - limit) * 1000:.0f} ms**")
    elif key in RATIO and b and "time" in b and b["time"] > 0:
        limit, r = RATIO[key], k["time"] / b["time"]
        verdict = f"≤ {limit}: " + ("met" if r <= limit else f"**missed by {r - limit:.2f}**")
    else:
        verdict = ""
    rss = k.get("rss", "")
    if rss.isdigit() and int(rss) >= 100:
        verdict += (", " if verdict else "") + f"RSS {rss} MB ≥ 100: **missed**"
    return verdict
print("| workload | scenario | kiln | buildah | kiln/buildah | skopeo | kiln RSS MB | buildah RSS MB | target (issue 7) |")
print("|---|---|---|---|---|---|---|---|---|")
notes = []
for key in order:
    k, b, s = (t[key].get(x) for x in ("kiln", "buildah", "skopeo"))
    ratio = "-"
    if k and b and "time" in k and "time" in b and b["time"] > 0:
        ratio = f"{k['time'] / b['time']:.2f}"
    sk = cell(s) if key[1] == "push" else ""
    print(f"| {key[0]} | {key[1]} | {cell(k)} | {cell(b)} | {ratio} | {sk} | "
          f"{(k or {}).get('rss', '-')} | {(b or {}).get('rss', '-')} | {target(key, k, b)} |")
    for name, d in (("kiln", k), ("buildah", b), ("skopeo", s)):
        if d and "failed" in d:
            notes.append(f"FAILED {key[0]} {key[1]} {name}: {d['failed']}")
if notes:
    print()
    print("\n".join(notes))
PY
