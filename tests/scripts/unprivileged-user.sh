#!/usr/bin/env bash
# Creates (idempotently) the unprivileged user the rootless sandbox tests run as: `kilntest`,
# with a /etc/subuid and /etc/subgid range and a /run/user/<uid> runtime dir (no logind here).
# Needs root. Prints the user's uid.
set -euo pipefail
user=${KILN_TEST_USER:-kilntest}
if [[ $(id -u) -ne 0 ]]; then
  echo "unprivileged-user.sh: needs root to create user $user" >&2
  exit 1
fi
# Serialize concurrent callers (tests run in parallel).
exec 9>/run/kiln-unprivileged-user.lock
flock 9
if ! id -u "$user" >/dev/null 2>&1; then
  useradd --create-home --shell /bin/sh "$user"
fi
uid=$(id -u "$user")
for f in /etc/subuid /etc/subgid; do
  touch "$f"
  if ! grep -q "^$user:" "$f"; then
    # The first free 65536-id block above every existing range.
    start=$(awk -F: 'BEGIN{m=100000} {e=$2+$3; if (e>m) m=e} END{print m}' "$f")
    echo "$user:$start:65536" >>"$f"
  fi
done
install -d -m 0700 -o "$user" -g "$(id -g "$user")" "/run/user/$uid"
echo "$uid"
