#!/usr/bin/env bash
# Records what buildah copies for each .dockerignore case, as the expected result of
# tests/unprivileged/dockerignore.rs. For every testdata/dockerignore/<case>/ it builds
# `FROM scratch` + `COPY . /` (or the case's own build.Dockerfile, next to which a
# build.Dockerfile.dockerignore may sit) from <case>/context and writes the image's paths,
# sorted, to <case>/expected.txt. Needs root and buildah; run it after adding or changing a case.
set -euo pipefail
cd "$(dirname "$0")/../../testdata/dockerignore"
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(*/)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
printf 'FROM scratch\nCOPY . /\n' > "$scratch/Dockerfile"
for case in "${cases[@]}"; do
    case=${case%/}
    dockerfile="$scratch/Dockerfile"
    [ -f "$case/build.Dockerfile" ] && dockerfile="$case/build.Dockerfile"
    tag="localhost/kiln-dockerignore-$case"
    buildah build --isolation chroot -q -f "$dockerfile" -t "$tag" "$case/context" >/dev/null
    ctr=$(buildah from "$tag")
    mnt=$(buildah mount "$ctr")
    (cd "$mnt" && find . -mindepth 1 | sed 's|^\./||' | LC_ALL=C sort) > "$case/expected.txt"
    buildah umount "$ctr" >/dev/null
    buildah rm "$ctr" >/dev/null
    buildah rmi "$tag" >/dev/null
    echo "$case: $(wc -l < "$case/expected.txt") paths"
done
