#!/usr/bin/env bash
# Installs the Debian packages the test suite uses (real registry, reference clients, base-image
# tools). Idempotent: packages already present are not reinstalled. Needs root (CI runs as root).
set -euo pipefail
pkgs=(docker-registry skopeo umoci podman buildah runc uidmap busybox-static debootstrap
      hyperfine slirp4netns apache2-utils openssl jq time yarnpkg python3 git openssh-client
      docker.io libc6-dev binutils ca-certificates qemu-user-static)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
