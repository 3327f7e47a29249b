#!/usr/bin/env bash
# Builds the base images the tests, examples and benchmarks use, from Debian packages only:
# no internet, no kiln. Each image is written by hand as an OCI image layout (tar + sha256sum +
# jq), so the script does not depend on the builder it is meant to test.
#
#   tests/scripts/base-images.sh OUTDIR [--push REGISTRY] [--debian] [--only NAME]...
#
#   busybox  /bin/busybox (busybox-static) + applet symlinks, /etc/passwd and /etc/group with root
#            and nobody, /tmp, /root. Cmd ["sh"].
#   busybox-arm64      the same for linux/arm64/v8, from Debian's arm64 busybox-static .deb
#            (fetched with apt into OUTDIR/.cache with a private package list, so the machine's
#            dpkg architectures stay as they are; the applet list comes from running it under
#            qemu-aarch64-static, so qemu-user-static is needed, not a binfmt handler).
#   busybox-multiarch  an image index of busybox (linux/amd64) and busybox-arm64, as Docker Hub
#            serves multi-platform images.
#   node     busybox + Debian's nodejs and yarnpkg (node's shared libraries copied per ldd; yarn with
#            the node modules it loads, traced by running it). `node` and `yarn`/`yarnpkg` on PATH.
#   debian   `debootstrap --variant=minbase bookworm` (slow, needs the Debian mirror: only with
#            --debian; the rootfs is cached under OUTDIR/.cache).
#
# Output: OUTDIR/<name>/ is an OCI layout whose index.json names the manifest (or, for
# busybox-multiarch, the image index) "latest". With
# --push, each image is copied with skopeo to REGISTRY/kiln-test/<name>:latest over plain HTTP
# (a loopback registry). Deterministic: sorted tar entries, uid/gid 0, mtimes and created time
# fixed to $SOURCE_DATE_EPOCH (default 2024-01-01). Idempotent: an image whose inputs (this
# script, package versions) are unchanged is not rebuilt. Needs root (files owned by root,
# chroot check of node).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/scripts/lib.sh
. "$here/lib.sh"

usage() { echo "usage: $0 OUTDIR [--push REGISTRY] [--debian] [--only busybox|busybox-arm64|busybox-multiarch|node|debian]..." >&2; exit 2; }

(($# >= 1)) || usage
outdir=$1; shift
push=""; want_debian=0; only=()
while (($#)); do
  case $1 in
    --push) (($# >= 2)) || usage; push=$2; shift 2 ;;
    --debian) want_debian=1; shift ;;
    --only) (($# >= 2)) || usage; only+=("$2"); shift 2 ;;
    *) usage ;;
  esac
done

[[ $(id -u) -eq 0 ]] || die "run as root (the image files must be owned by uid 0)"
need jq; need tar; need gzip; need sha256sum coreutils
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)
# Test binaries may run this at the same time for the same OUTDIR: one at a time.
exec 9>"$outdir/.lock"
flock 9
epoch=${SOURCE_DATE_EPOCH:-1704067200}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
script_sum=$(cat "$0" "$here/lib.sh" | sha256sum | cut -d' ' -f1)

# ---- OCI layout writing ---------------------------------------------------------------------

# layer_from_dir ROOTFS LAYOUT: writes ROOTFS as a gzip layer blob into LAYOUT and prints
# "<diffID> <digest> <size>". Entries sorted, no "./" prefix, owner 0:0, fixed mtimes, so the
# same tree always gives the same digests.
layer_from_dir() {
  local rootfs=$1 layout=$2 tmp diff digest
  tmp=$(mktemp -d "$layout/.layer.XXXXXX")
  (cd "$rootfs" && find . -mindepth 1 | sed 's#^\./##' | LC_ALL=C sort) >"$tmp/list"
  tar -C "$rootfs" --no-recursion -T "$tmp/list" -cf "$tmp/layer.tar" \
    --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --owner=0 --group=0 --numeric-owner --mtime="@$epoch"
  diff=$(sha256_of "$tmp/layer.tar")
  gzip -n -6 <"$tmp/layer.tar" >"$tmp/layer.tar.gz"
  digest=$(sha256_of "$tmp/layer.tar.gz")
  mv "$tmp/layer.tar.gz" "$layout/blobs/sha256/$digest"
  echo "sha256:$diff sha256:$digest $(stat -c %s "$layout/blobs/sha256/$digest")"
  rm -rf "$tmp"
}

# put_blob LAYOUT FILE: moves FILE into the layout's blobs, prints "<digest> <size>".
put_blob() {
  local layout=$1 file=$2 d
  d=$(sha256_of "$file")
  mv "$file" "$layout/blobs/sha256/$d"
  echo "sha256:$d $(stat -c %s "$layout/blobs/sha256/$d")"
}

# write_image LAYOUT CONFIG_JSON LAYERS_FILE [PLATFORM_JSON]: LAYERS_FILE has one "diffID digest
# size comment" line per layer, bottom first. CONFIG_JSON is the image's "config" object;
# PLATFORM_JSON its OCI platform (default linux/amd64), in the config and the index entry.
# Writes config, manifest and index.json (ref "latest").
write_image() {
  local layout=$1 cfg=$2 layers=$3 platform=${4:-'{"architecture":"amd64","os":"linux"}'} cd cs md ms
  jq -n --argjson cfg "$cfg" --arg created "$created" --rawfile layers "$layers" --argjson p "$platform" '
    ($layers | split("\n") | map(select(length > 0) | split(" "))) as $l |
    { created: $created } + $p + { config: $cfg,
      rootfs: { type: "layers", diff_ids: [ $l[] | .[0] ] },
      history: [ $l[] | { created: $created, created_by: ("tests/scripts/base-images.sh: " + (.[3:] | join(" "))) } ] }
  ' >"$layout/config.json"
  read -r cd cs < <(put_blob "$layout" "$layout/config.json")
  jq -n --arg cd "$cd" --argjson cs "$cs" --rawfile layers "$layers" '
    ($layers | split("\n") | map(select(length > 0) | split(" "))) as $l |
    { schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: $cd, size: $cs },
      layers: [ $l[] | { mediaType: "application/vnd.oci.image.layer.v1.tar+gzip",
                         digest: .[1], size: (.[2] | tonumber) } ] }
  ' >"$layout/manifest.json"
  read -r md ms < <(put_blob "$layout" "$layout/manifest.json")
  jq -n --arg md "$md" --argjson ms "$ms" --argjson p "$platform" '
    { schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [ { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $md, size: $ms,
                     platform: $p,
                     annotations: { "org.opencontainers.image.ref.name": "latest" } } ] }
  ' >"$layout/index.json"
}

new_layout() {
  local layout=$1
  rm -rf "$layout"
  mkdir -p "$layout/blobs/sha256"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"
}

# up_to_date NAME INPUTS: true when OUTDIR/NAME was built from the same inputs.
up_to_date() { [[ -f $outdir/$1/index.json && -f $outdir/.stamps/$1 && $(cat "$outdir/.stamps/$1") == "$2" ]]; }

# finish NAME TMP_LAYOUT INPUTS: swaps the finished layout into place, so an interrupted run never
# leaves a half-written image under its real name.
finish() {
  local name=$1 tmp=$2 inputs=$3
  mkdir -p "$outdir/.stamps"
  rm -f "$outdir/.stamps/$name"
  rm -rf "${outdir:?}/$name"
  mv "$tmp" "$outdir/$name"
  echo "$inputs" >"$outdir/.stamps/$name"
  log "built $name: $(jq -r '.manifests[0].digest' "$outdir/$name/index.json")"
}

default_path="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# ---- busybox --------------------------------------------------------------------------------

# busybox_rootfs ROOT [BUSYBOX [RUNNER]]: BUSYBOX (default the host's /bin/busybox) and its
# applets; RUNNER runs it to list them (qemu for a foreign one).
busybox_rootfs() {
  local root=$1 busybox=${2:-/bin/busybox} runner=${3:-} applet
  mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,var/tmp,home,proc,sys,dev}
  cp "$busybox" "$root/bin/busybox"
  chmod 0755 "$root/bin/busybox"
  for applet in $($runner "$busybox" --list-full); do
    [[ $applet == linuxrc || $applet == bin/busybox ]] && continue
    ln -sf /bin/busybox "$root/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
  chmod 1777 "$root/tmp" "$root/var/tmp"
  chmod 0700 "$root/root"
}

build_busybox() {
  need /bin/busybox busybox-static
  local inputs
  inputs="$script_sum busybox-static=$(pkg_version busybox-static)"
  if up_to_date busybox "$inputs"; then log "busybox is up to date"; return; fi
  local tmp="$outdir/.busybox.tmp" work
  new_layout "$tmp"
  work=$(mktemp -d)
  busybox_rootfs "$work/rootfs"
  echo "$(layer_from_dir "$work/rootfs" "$tmp") busybox-static $(pkg_version busybox-static)" >"$work/layers"
  write_image "$tmp" "{\"Env\":[\"$default_path\"],\"Cmd\":[\"sh\"]}" "$work/layers"
  rm -rf "$work"
  finish busybox "$tmp" "$inputs"
}

# ---- busybox for arm64, and both as one index -----------------------------------------------

arm64_platform='{"architecture":"arm64","os":"linux","variant":"v8"}'

# arm64_busybox_deb: the path of Debian's arm64 busybox-static .deb, fetched once into
# OUTDIR/.cache. apt reads the machine's sources but keeps its package lists and downloads in
# the cache, for arm64 only, so neither dpkg's architectures nor the machine's lists change.
arm64_busybox_deb() {
  local cache="$outdir/.cache/busybox-static-arm64" deb
  deb=$(find "$cache" -maxdepth 1 -name 'busybox-static_*_arm64.deb' 2>/dev/null | head -1)
  if [[ -z $deb ]]; then
    need apt-get apt
    rm -rf "$cache"
    mkdir -p "$cache/apt/lists/partial" "$cache/apt/cache/archives/partial" "$cache/dl"
    local apt=(apt-get -qq -o APT::Architecture=arm64 -o APT::Architectures::=arm64
               -o "Dir::State::Lists=$cache/apt/lists" -o "Dir::Cache=$cache/apt/cache"
               -o Dir::State::status=/dev/null -o APT::Sandbox::User=root)
    log "fetching Debian's arm64 busybox-static (apt-get download, lists in $cache/apt)"
    "${apt[@]}" update >"$cache/apt.log" 2>&1 || die "apt-get update for arm64 failed; see $cache/apt.log"
    (cd "$cache/dl" && "${apt[@]}" download busybox-static) >>"$cache/apt.log" 2>&1 ||
      die "apt-get download busybox-static:arm64 failed; see $cache/apt.log"
    mv "$cache/dl/"busybox-static_*_arm64.deb "$cache/"
    rm -rf "$cache/apt" "$cache/dl"
    deb=$(find "$cache" -maxdepth 1 -name 'busybox-static_*_arm64.deb' | head -1)
  fi
  [[ -n $deb ]] || die "no arm64 busybox-static .deb in $cache"
  echo "$deb"
}

build_busybox_arm64() {
  need dpkg-deb dpkg; need qemu-aarch64-static qemu-user-static
  local deb version inputs
  deb=$(arm64_busybox_deb)
  version=$(dpkg-deb -f "$deb" Version)
  inputs="$script_sum busybox-static:arm64=$version $(sha256_of "$deb")"
  if up_to_date busybox-arm64 "$inputs"; then log "busybox-arm64 is up to date"; return; fi
  local tmp="$outdir/.busybox-arm64.tmp" work
  new_layout "$tmp"
  work=$(mktemp -d)
  dpkg-deb -x "$deb" "$work/deb"
  # ELF e_machine 0xb7 is aarch64: a wrong .deb must not pass as an arm64 image.
  [[ $(od -An -tx1 -j18 -N2 "$work/deb/bin/busybox" | tr -d ' ') == b700 ]] ||
    die "$deb: bin/busybox is not an aarch64 program"
  busybox_rootfs "$work/rootfs" "$work/deb/bin/busybox" qemu-aarch64-static
  echo "$(layer_from_dir "$work/rootfs" "$tmp") busybox-static:arm64 $version" >"$work/layers"
  write_image "$tmp" "{\"Env\":[\"$default_path\"],\"Cmd\":[\"sh\"]}" "$work/layers" "$arm64_platform"
  rm -rf "$work"
  finish busybox-arm64 "$tmp" "$inputs"
}

# build_busybox_multiarch: one OCI image index with busybox (amd64) and busybox-arm64 in it.
build_busybox_multiarch() {
  build_busybox
  build_busybox_arm64
  local inputs
  inputs="$script_sum $(cat "$outdir/.stamps/busybox") $(cat "$outdir/.stamps/busybox-arm64")"
  if up_to_date busybox-multiarch "$inputs"; then log "busybox-multiarch is up to date"; return; fi
  local tmp="$outdir/.busybox-multiarch.tmp" member id is
  new_layout "$tmp"
  for member in busybox busybox-arm64; do
    cp "$outdir/$member/blobs/sha256/"* "$tmp/blobs/sha256/"
  done
  # The members' own index entries, platform included, without their "latest" names.
  jq -s '{ schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
           manifests: [ .[].manifests[0] | del(.annotations) ] }' \
    "$outdir/busybox/index.json" "$outdir/busybox-arm64/index.json" >"$tmp/image-index.json"
  read -r id is < <(put_blob "$tmp" "$tmp/image-index.json")
  jq -n --arg id "$id" --argjson is "$is" '
    { schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
      manifests: [ { mediaType: "application/vnd.oci.image.index.v1+json", digest: $id, size: $is,
                     annotations: { "org.opencontainers.image.ref.name": "latest" } } ] }
  ' >"$tmp/index.json"
  finish busybox-multiarch "$tmp" "$inputs"
}

# ---- node -----------------------------------------------------------------------------------

# copy_with_libs ROOT BINARY: copies BINARY and every shared library ldd lists for it (under the
# same paths) into ROOT.
copy_with_libs() {
  local root=$1 bin=$2 lib
  install -D -m 0755 "$bin" "$root$bin"
  for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

# yarn_modules: the top-level packages under /usr/share/nodejs that yarn needs, one per line: the
# closure of yarn's declared dependencies, plus whatever it actually loads (traced through
# require.cache) for --version and two offline installs (without, then with a lockfile), since
# Debian's packaging does not always declare every module.
yarn_modules() {
  local t
  t=$(mktemp -d)
  cat >"$t/closure.js" <<'EOF'
const fs = require('fs'), path = require('path');
const root = '/usr/share/nodejs', seen = new Set(), todo = ['yarn'];
while (todo.length) {
  const name = todo.pop();
  if (seen.has(name) || !fs.existsSync(path.join(root, name, 'package.json'))) continue;
  seen.add(name);
  const pj = JSON.parse(fs.readFileSync(path.join(root, name, 'package.json'), 'utf8'));
  for (const d of Object.keys(Object.assign({}, pj.dependencies, pj.optionalDependencies))) todo.push(d);
}
console.log([...seen].join('\n'));
EOF
  cat >"$t/trace.js" <<'EOF'
process.on('exit', () => require('fs').appendFileSync(process.env.KILN_TRACE_OUT, Object.keys(require.cache).join('\n') + '\n'));
EOF
  mkdir -p "$t/app/dep"
  echo '{"name":"trace","version":"1.0.0","license":"MIT","dependencies":{"dep":"file:./dep"}}' >"$t/app/package.json"
  echo '{"name":"dep","version":"1.0.0","license":"MIT"}' >"$t/app/dep/package.json"
  node "$t/closure.js" >"$t/modules" || die "reading yarn's dependencies failed"
  (cd "$t/app" && export KILN_TRACE_OUT="$t/out" NODE_OPTIONS="--require $t/trace.js" NODE_PATH=/usr/share/nodejs \
     HOME="$t" YARN_CACHE_FOLDER="$t/cache" &&
   node /usr/share/nodejs/yarn/bin/yarn.js --version >/dev/null &&
   node /usr/share/nodejs/yarn/bin/yarn.js install --production --offline --non-interactive >/dev/null &&
   node /usr/share/nodejs/yarn/bin/yarn.js install --production --frozen-lockfile --offline --non-interactive >/dev/null) ||
    die "tracing yarn's modules failed (is yarnpkg installed? apt-get install yarnpkg)"
  grep '^/usr/share/nodejs/' "$t/out" | sed -E 's#^/usr/share/nodejs/((@[^/]+/)?[^/]+).*#\1#' >>"$t/modules"
  LC_ALL=C sort -u "$t/modules"
  rm -rf "$t"
}

node_layer_rootfs() {
  local root=$1 m
  copy_with_libs "$root" "$(readlink -f /usr/bin/node)"
  [[ -e $root/usr/bin/node ]] || ln -s "$(readlink -f /usr/bin/node)" "$root/usr/bin/node"
  mkdir -p "$root/usr/share/nodejs"
  for m in $(yarn_modules); do
    mkdir -p "$root/usr/share/nodejs/$(dirname "$m")"
    # -L: some Debian modules link into /usr/share/javascript, which the image does not have.
    cp -RL "/usr/share/nodejs/$m" "$root/usr/share/nodejs/$m"
  done
  # Debian's yarn expects Debian's node, which searches /usr/share/nodejs; this node may not
  # (NodeSource's does not), so the wrapper sets NODE_PATH for yarn only.
  mkdir -p "$root/usr/bin" "$root/usr/local/share/.cache"
  printf '#!/bin/sh\nNODE_PATH=/usr/share/nodejs exec /usr/bin/node /usr/share/nodejs/yarn/bin/yarn.js "$@"\n' >"$root/usr/bin/yarn"
  chmod 0755 "$root/usr/bin/yarn"
  ln -s yarn "$root/usr/bin/yarnpkg"
}

# check_node LAYOUT_ROOTFS: node and yarn must run inside the image (chroot, as root).
check_node() {
  local root=$1 out
  out=$(env -u NODE_EXTRA_CA_CERTS chroot "$root" /usr/bin/node -e 'console.log("node " + process.version)') ||
    die "node does not run inside the node image (chroot $root)"
  log "node image check: $out, yarn $(env -u NODE_EXTRA_CA_CERTS chroot "$root" /usr/bin/yarn --version)"
}

build_node() {
  need node nodejs; need ldd libc-bin
  [[ -f /usr/share/nodejs/yarn/bin/yarn.js ]] || die "yarn not found; apt-get install yarnpkg"
  build_busybox
  local inputs
  inputs="$script_sum $(cat "$outdir/.stamps/busybox") nodejs=$(pkg_version nodejs) yarnpkg=$(pkg_version yarnpkg)"
  if up_to_date node "$inputs"; then log "node is up to date"; return; fi
  local tmp="$outdir/.node.tmp" work bb_layer
  new_layout "$tmp"
  work=$(mktemp -d)
  busybox_rootfs "$work/full"
  echo "$(layer_from_dir "$work/full" "$tmp") busybox-static $(pkg_version busybox-static)" >"$work/layers"
  node_layer_rootfs "$work/node"
  echo "$(layer_from_dir "$work/node" "$tmp") nodejs $(pkg_version nodejs) yarnpkg $(pkg_version yarnpkg)" >>"$work/layers"
  cp -a "$work/node/." "$work/full/"
  check_node "$work/full"
  bb_layer=$(head -1 "$work/layers" | cut -d' ' -f2)
  [[ $bb_layer == "$(jq -r '.layers[0].digest' "$outdir/busybox/blobs/sha256/$(jq -r '.manifests[0].digest' "$outdir/busybox/index.json" | cut -d: -f2)")" ]] ||
    log "warning: node's busybox layer differs from the busybox image's"
  write_image "$tmp" "{\"Env\":[\"$default_path\",\"NODE_VERSION=$(node -v | tr -d v)\",\"YARN_VERSION=$(NODE_PATH=/usr/share/nodejs node /usr/share/nodejs/yarn/bin/yarn.js --version)\"],\"Cmd\":[\"node\"]}" "$work/layers"
  rm -rf "$work"
  finish node "$tmp" "$inputs"
}

# ---- debian ---------------------------------------------------------------------------------

build_debian() {
  need debootstrap
  local cache="$outdir/.cache/debian-bookworm-minbase"
  local inputs
  inputs="$script_sum debootstrap=$(pkg_version debootstrap)"
  if up_to_date debian "$inputs"; then log "debian is up to date"; return; fi
  if [[ ! -f $cache/.complete ]]; then
    log "debootstrap --variant=minbase bookworm (a few minutes)"
    rm -rf "$cache"
    mkdir -p "$cache"
    debootstrap --variant=minbase bookworm "$cache/rootfs" "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $cache/debootstrap.log"
    touch "$cache/.complete"
  fi
  local tmp="$outdir/.debian.tmp" work
  new_layout "$tmp"
  work=$(mktemp -d)
  # Apt caches and device nodes stay out of the image (a container runtime provides /dev).
  rm -rf "$cache/rootfs/var/cache/apt/archives/"*.deb "$cache/rootfs/var/lib/apt/lists/"* "$cache/rootfs/dev/"*
  echo "$(layer_from_dir "$cache/rootfs" "$tmp") debootstrap minbase bookworm" >"$work/layers"
  write_image "$tmp" "{\"Env\":[\"$default_path\"],\"Cmd\":[\"bash\"]}" "$work/layers"
  rm -rf "$work"
  finish debian "$tmp" "$inputs"
}

# ---- main -----------------------------------------------------------------------------------

names=("${only[@]}")
if ((${#names[@]} == 0)); then
  names=(busybox node)
  ((want_debian)) && names+=(debian)
fi
for n in "${names[@]}"; do
  case $n in
    busybox|node|debian) "build_$n" ;;
    busybox-arm64) build_busybox_arm64 ;;
    busybox-multiarch) build_busybox_multiarch ;;
    *) die "unknown image '$n' (busybox, busybox-arm64, busybox-multiarch, node, debian)" ;;
  esac
done

if [[ -n $push ]]; then
  need skopeo
  for n in "${names[@]}"; do
    # --all: an index goes with every member (a single image is unaffected).
    skopeo copy --quiet --all --dest-tls-verify=false "oci:$outdir/$n:latest" "docker://$push/kiln-test/$n:latest" ||
      die "pushing $n to $push failed (is a registry listening there?)"
    log "pushed $push/kiln-test/$n:latest"
  done
fi
