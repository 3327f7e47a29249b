#!/usr/bin/env bash
# Makes this machine run foreign-architecture programs through qemu-user, for the tests of RUN
# steps built with `--platform linux/arm64`: installs qemu-user-static (Debian), mounts
# binfmt_misc when it is not mounted, and registers the qemu handler of each MACHINE (default
# aarch64) unless an enabled one with the F flag is already there.
#
#   tests/scripts/binfmt.sh [MACHINE]...
#
# The handler is registered as Debian's package describes it (/usr/lib/binfmt.d/qemu-MACHINE.conf,
# the line systemd-binfmt writes; binfmt-support writes the same), which carries the F
# (fix-binary) flag: the kernel opens the interpreter once, at registration, so it also runs
# inside a chroot or a user namespace where /usr/libexec/qemu-binfmt does not exist. A handler
# registered without F (by hand, or by an older qemu package) cannot do that: it is replaced, and
# the script says so. Kiln itself never registers handlers; it only checks them
# (src/build/platform.rs). Needs root (CI runs as root). Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/scripts/lib.sh
. "$here/lib.sh"

binfmt=/proc/sys/fs/binfmt_misc
machines=("$@")
((${#machines[@]})) || machines=(aarch64)

[[ $(id -u) -eq 0 ]] || die "run as root (installs qemu-user-static, registers binfmt_misc handlers)"

if ! dpkg-query -W -f='${Status}' qemu-user-static 2>/dev/null | grep -q "install ok installed"; then
  log "installing qemu-user-static"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >/dev/null
fi

if [[ ! -e $binfmt/register ]]; then
  log "mounting binfmt_misc on $binfmt"
  mount -t binfmt_misc binfmt_misc "$binfmt" || die "cannot mount binfmt_misc on $binfmt"
fi
[[ $(head -1 "$binfmt/status") == enabled ]] || echo 1 >"$binfmt/status"

# register MACHINE: the package's binfmt.d line, with F added should it ever lack it.
register() {
  local m=$1 conf line
  conf=/usr/lib/binfmt.d/qemu-$m.conf
  [[ -f $conf ]] || die "$conf not found: does qemu-user-static $(pkg_version qemu-user-static) support $m?"
  line=$(grep -v '^[#;]' "$conf" | grep -m1 "^:qemu-$m:") || die "no qemu-$m entry in $conf"
  [[ ${line##*:} == *F* ]] || line="${line}F"
  printf '%s' "$line" >"$binfmt/register"
}

for m in "${machines[@]}"; do
  entry=$binfmt/qemu-$m
  if [[ -e $entry ]]; then
    if [[ $(head -1 "$entry") == enabled ]] && grep -q '^flags: .*F' "$entry"; then
      log "qemu-$m is registered with the F flag: $(grep '^interpreter' "$entry")"
      continue
    fi
    log "replacing qemu-$m ($(head -1 "$entry"), $(grep '^flags:' "$entry" || echo 'no flags')): it needs to be enabled and to have the F flag"
    echo -1 >"$entry"
  fi
  register "$m"
  grep -q '^flags: .*F' "$entry" || die "qemu-$m was registered without the F flag: $(cat "$entry")"
  log "registered qemu-$m: $(grep '^interpreter' "$entry"), $(grep '^flags:' "$entry")"
done
