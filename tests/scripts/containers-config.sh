#!/usr/bin/env bash
# Makes podman, buildah and skopeo (the reference tools the tests compare kiln with) usable on
# this kind of machine, as root and as an unprivileged user. Each step fixes one fact in
# /work/shared/docs/machine-quirks.md (numbers in brackets). Idempotent; needs root.
#
#   tests/scripts/containers-config.sh [--user NAME] [--check IMAGE]
#
#   --user NAME   the unprivileged test user (default $KILN_TEST_USER, else "kilntest" as in
#                 tests/scripts/unprivileged-user.sh): created if missing, with /etc/subuid
#                 and /etc/subgid ranges and /run/user/<uid>.
#   --check IMAGE an image reference podman can run (e.g. oci:/tmp/base/busybox:latest): runs
#                 `echo` in it as root and fails unless it prints.
#
# Prints `export XDG_RUNTIME_DIR=...` for the user on stdout, so a caller may eval it.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/scripts/lib.sh
. "$here/lib.sh"

user=${KILN_TEST_USER:-kilntest}; check=""
while (($#)); do
  case $1 in
    --user) user=$2; shift 2 ;;
    --check) check=$2; shift 2 ;;
    *) echo "usage: $0 [--user NAME] [--check IMAGE]" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || die "run as root (it writes /etc/containers and creates the test user)"
need runc; need podman; need newuidmap uidmap
# Tests may run this at the same time: one at a time.
mkdir -p /run/lock
exec 9>/run/lock/kiln-containers-config.lock
flock 9

marker="# Written by kiln tests/scripts/containers-config.sh; rerun it rather than editing."

# write_conf FILE: writes stdin to FILE, keeping a one-time backup of a file we did not write.
write_conf() {
  local file=$1
  mkdir -p "$(dirname "$file")"
  if [[ -f $file ]] && ! grep -qF "$marker" "$file" && [[ ! -f $file.kiln-orig ]]; then
    cp -a "$file" "$file.kiln-orig"
  fi
  { echo "$marker"; cat; } >"$file.tmp"
  mv "$file.tmp" "$file"
}

# [1] crun rejects the hybrid cgroup layout: runc with cgroupfs (there is no systemd here).
# [2] podman's default ulimits exceed the hard limits and it lacks CAP_SYS_RESOURCE to raise them.
nofile=$(ulimit -Hn)
[[ $nofile == unlimited ]] && nofile=1048576
write_conf /etc/containers/containers.conf <<EOF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=32768:32768"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF

# [5] overlay storage (rootless would otherwise pick vfs); the kernel has native rootless overlay.
write_conf /etc/containers/storage.conf <<'EOF'
[storage]
driver = "overlay"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
EOF

# Loopback test registries speak plain HTTP. containers/image matches "127.0.0.1" against
# "127.0.0.1:<port>" too; the explicit :5000 entries keep working if that ever changes. Tests
# still pass --tls-verify=false so they do not depend on this file.
write_conf /etc/containers/registries.conf.d/50-kiln-test.conf <<'EOF'
[[registry]]
location = "127.0.0.1"
insecure = true

[[registry]]
location = "127.0.0.1:5000"
insecure = true

[[registry]]
location = "localhost"
insecure = true

[[registry]]
location = "localhost:5000"
insecure = true
EOF

# [3] slirp4netns needs /dev/net/tun, [4] fuse-overlayfs needs /dev/fuse: Debian's udev modes.
for dev in /dev/net/tun /dev/fuse; do
  [[ -e $dev ]] && chmod 0666 "$dev"
done

# The unprivileged user, with sub-id ranges for its user namespace.
if ! id "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash "$user"
fi
uid=$(id -u "$user")
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -q "^$user:" "$f"; then
    # The next free range after every existing one, 65536 ids long.
    start=$(awk -F: 'BEGIN { next_free = 100000 } $2 + $3 > next_free { next_free = $2 + $3 } END { print next_free }' "$f")
    echo "$user:$start:65536" >>"$f"
  fi
done
home=$(getent passwd "$user" | cut -d: -f6)
# [5] rootless storage: overlay, not vfs.
install -d -o "$user" -g "$(id -g "$user")" "$home/.config" "$home/.config/containers"
write_conf "$home/.config/containers/storage.conf" <<'EOF'
[storage]
driver = "overlay"
EOF
chown "$user:" "$home/.config/containers/storage.conf"
# [6] no systemd-logind: create the runtime directory it would have made.
install -d -m 0700 -o "$user" -g "$(id -g "$user")" "/run/user/$uid"
# Pick up the new sub-id ranges and configuration if the user already had podman state.
su -s /bin/sh "$user" -c "cd /tmp && XDG_RUNTIME_DIR=/run/user/$uid podman system migrate" >/dev/null 2>&1 || true

if [[ -n $check ]]; then
  out=$(podman run --rm "$check" echo kiln-containers-ok 2>&1) ||
    die "podman run $check failed as root: $out"
  [[ $out == *kiln-containers-ok* ]] || die "podman run $check printed '$out', expected kiln-containers-ok"
  log "podman run as root works ($check)"
fi
echo "export XDG_RUNTIME_DIR=/run/user/$uid"
