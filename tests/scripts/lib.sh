# shellcheck shell=bash
# Shared helpers for the test scripts. Source it: `. "$(dirname "$0")/lib.sh"`.
# Only small, side-effect-free functions live here; each script keeps its own logic.

# Prints a message prefixed with the calling script's name on stderr.
log() { echo "$(basename "$0"): $*" >&2; }

# Prints an error and exits 1.
die() { log "error: $*"; exit 1; }

# Fails with a clear message (and the package to install) when a command is missing.
need() {
  local cmd=$1 pkg=${2:-$1}
  command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found; install it: apt-get install $pkg (or run tests/scripts/install-deps.sh)"
}

# sha256 of a file, hex only.
sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# The installed version of a Debian package, or "none".
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo none; }
