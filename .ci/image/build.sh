#!/usr/bin/env bash
# Builds kiln's own image (.ci/image/Containerfile) with kiln itself: the static release binary
# (.ci/release.sh) goes into the image and runs the build.
#
#   .ci/image/build.sh [KILN BUILD ARGS...]
#     e.g. .ci/image/build.sh -t registry.example.com/tools/kiln:0.1.0 --push
#          .ci/image/build.sh -t kiln:dev -o type=oci,dest=kiln.tar
#
# $KILN_BINARY: use this binary instead of building one (it must be static: it is the image's
# only program). The context is a temporary directory: the binary, and rootfs/ with /etc/passwd
# and /etc/group (root, kiln 1000, nobody), the host's CA bundle (Debian's ca-certificates),
# /tmp and /kiln (1777), /workspace. SOURCE_DATE_EPOCH defaults to the last commit's time, so
# the same commit gives the same image.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

ca=/etc/ssl/certs/ca-certificates.crt
[[ -s $ca ]] || { echo "build.sh: $ca is missing: apt-get install ca-certificates" >&2; exit 1; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
if [[ -n ${KILN_BINARY:-} ]]; then
  cp "$KILN_BINARY" "$ctx/kiln"
else
  "$repo/.ci/release.sh" "$ctx/kiln" >&2
fi
chmod 0755 "$ctx/kiln"

root=$ctx/rootfs
mkdir -p "$root/etc/ssl/certs" "$root/tmp" "$root/kiln" "$root/workspace"
printf 'root:x:0:0:root:/root:/sbin/nologin\nkiln:x:1000:1000:kiln:/kiln:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nkiln:x:1000:\nnobody:x:65534:\n' >"$root/etc/group"
cp "$ca" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/ssl/certs/ca-certificates.crt"
chmod 0755 "$root" "$root/etc" "$root/etc/ssl" "$root/etc/ssl/certs" "$root/workspace"
chmod 1777 "$root/tmp" "$root/kiln"

if [[ -z ${SOURCE_DATE_EPOCH:-} ]] && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
  SOURCE_DATE_EPOCH=$(git -C "$repo" log -1 --format=%ct)
  export SOURCE_DATE_EPOCH
fi
version=$("$ctx/kiln" --version | awk '{print $2}')
"$ctx/kiln" build --progress plain --build-arg "VERSION=$version" \
  -f "$here/Containerfile" "$@" "$ctx"
