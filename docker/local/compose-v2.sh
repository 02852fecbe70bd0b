#!/usr/bin/env bash
# Compose v2 (`docker compose`, the form the README tells users to run) for the offline check of
# docker-compose.yaml (tests/deploy/test_compose.py), on a host whose Debian (bookworm) ships only
# Compose v1. It comes from the next Debian release's archive (trixie's docker-compose package,
# a static Go binary), verified all the way: InRelease signed by Debian's archive keys (gpgv with
# debian-archive-keyring), Packages.xz by InRelease's SHA256, the .deb by the Packages entry's
# SHA256. Only the binary is extracted: installing the package would replace bookworm's
# docker-compose v1, which the stack test runs.
#
#   docker/local/compose-v2.sh [TARGET]    # default .tools/docker-compose-v2; nothing to do if it runs
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
TARGET=${1:-$ROOT/.tools/docker-compose-v2}
MIRROR=${REFIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${REFIT_COMPOSE_V2_SUITE:-trixie}
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

if [[ -x $TARGET ]] && "$TARGET" version --short >/dev/null 2>&1; then
    exit 0
fi
for tool in curl gpgv xz dpkg-deb sha256sum; do
    command -v "$tool" >/dev/null || { echo "compose-v2.sh: $tool is not installed" >&2; exit 1; }
done
[[ -r $KEYRING ]] || { echo "compose-v2.sh: no $KEYRING (apt-get install debian-archive-keyring)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fetch() { curl --fail --silent --show-error --location --retry 3 "$MIRROR/$1" --output "$2"; }
checksum() {  # checksum SHA256 FILE: fail naming the file unless it matches
    echo "$1  $2" | sha256sum --check --status || { echo "compose-v2.sh: $3 does not match its SHA256" >&2; exit 1; }
}

fetch "dists/$SUITE/InRelease" "$work/InRelease"
gpgv --quiet --keyring "$KEYRING" --output "$work/Release" "$work/InRelease" 2>"$work/gpgv.log" \
    || { cat "$work/gpgv.log" >&2; echo "compose-v2.sh: $SUITE's InRelease is not signed by Debian" >&2; exit 1; }
arch=$(dpkg --print-architecture)
index="main/binary-$arch/Packages.xz"
index_sha=$(awk -v file="$index" '/^SHA256:/ {in_sha = 1; next} /^[^ ]/ {in_sha = 0} in_sha && $3 == file {print $1}' \
    "$work/Release")
[[ -n $index_sha ]] || { echo "compose-v2.sh: $SUITE's Release lists no $index" >&2; exit 1; }
fetch "dists/$SUITE/$index" "$work/Packages.xz"
checksum "$index_sha" "$work/Packages.xz" "$index"

entry=$(xz -dc "$work/Packages.xz" | awk -v RS= '/^Package: docker-compose\n/')
filename=$(sed -n 's/^Filename: //p' <<<"$entry")
deb_sha=$(sed -n 's/^SHA256: //p' <<<"$entry")
[[ -n $filename && -n $deb_sha ]] || { echo "compose-v2.sh: no docker-compose package in $SUITE" >&2; exit 1; }
fetch "$filename" "$work/compose.deb"
checksum "$deb_sha" "$work/compose.deb" "$filename"

mkdir -p "$(dirname "$TARGET")"
dpkg-deb --fsys-tarfile "$work/compose.deb" | tar -x -O ./usr/libexec/docker/cli-plugins/docker-compose >"$TARGET.tmp"
chmod 755 "$TARGET.tmp"
mv "$TARGET.tmp" "$TARGET"
echo "compose-v2.sh: $("$TARGET" version) from $filename"
