#!/usr/bin/env bash
# The release binary: static (no dynamic glibc, no liblzma: xz and bzip2 are pure Rust, zstd and
# ring are compiled in), stripped, thin LTO (Cargo profile `dist`). It runs in busybox, alpine
# (musl) and distroless/scratch images.
#
#   .ci/release.sh [OUT]     builds, checks that the result is static, copies it to OUT
#                            (default target/static/kiln) and prints OUT and its size
#
# Only the x86_64-unknown-linux-gnu Rust target is needed: `+crt-static` links glibc's libc.a
# (libc6-dev). The explicit --target makes RUSTFLAGS apply to kiln and its dependencies only,
# so build scripts and proc-macros stay dynamic (rustc has to dlopen proc-macros).
#
# Its own target directory (target/static, or $KILN_RELEASE_TARGET_DIR): the flags differ from
# the debug build's, and a test may run this script while `cargo test` holds target/'s lock.
#
# Static glibc and NSS: getaddrinfo's `files` and `dns` sources are built into glibc (2.34+),
# so names resolve from /etc/hosts and /etc/resolv.conf with no libnss_*.so, in any image. Only
# a source other than those two in the image's /etc/nsswitch.conf (mdns, ldap, sss...) is looked
# up by loading that libnss module, which must come from the same glibc version; without it
# that source is skipped. kiln reads users and groups from the image's own /etc/passwd, never
# through NSS.
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-gnu
dir=${KILN_RELEASE_TARGET_DIR:-target/static}
out=${1:-$dir/kiln}

[[ -f /usr/lib/x86_64-linux-gnu/libc.a ]] ||
  { echo "release.sh: glibc's libc.a is missing: apt-get install libc6-dev" >&2; exit 1; }

start=$SECONDS
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --locked --profile dist --target "$target" --target-dir "$dir" --bin kiln
built=$dir/$target/dist/kiln
echo "release.sh: built in $((SECONDS - start)) s" >&2

# Static means: no program interpreter and no shared library needed.
if readelf --program-headers --wide "$built" | grep -q 'INTERP' ||
   readelf --dynamic --wide "$built" | grep -q '(NEEDED)'; then
  echo "release.sh: $built is not static:" >&2
  readelf --dynamic --wide "$built" | grep '(NEEDED)' >&2 || true
  exit 1
fi
if [[ $(realpath -m "$out") != $(realpath "$built") ]]; then
  mkdir -p "$(dirname "$out")"
  cp "$built" "$out.tmp"
  mv "$out.tmp" "$out"
fi
"$out" --version >/dev/null
echo "$out $(stat -c %s "$out") bytes"
