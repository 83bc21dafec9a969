#!/usr/bin/env bash
# build.sh [TAG]: builds the image switchboard:TAG (default dev) of the
# repository this script lives in, from any working directory, with Docker
# and Go only (no registry: the image is FROM scratch). The binaries are
# compiled here, static (CGO off), trimmed, and stamped with the version
# from `git describe` (or the commit, or "dev" outside git).
set -euo pipefail

tag="${1:-dev}"
case "$tag" in
-h | --help)
	echo "usage: $0 [TAG]   builds the image switchboard:TAG (default dev)"
	exit 0
	;;
esac

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

for tool in go docker; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "build.sh: $tool is required" >&2
		exit 1
	fi
done

version=""
if command -v git >/dev/null 2>&1 && git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
	version="$(git -C "$repo" describe --tags --always --dirty 2>/dev/null || true)"
fi
version="${version:-dev}"

ctx="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-image.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT

echo "build.sh: compiling switchboard, sbctl, sbload ($version)" >&2
(
	cd "$repo"
	export CGO_ENABLED=0 GOOS=linux
	GOARCH="$(go env GOARCH)"
	export GOARCH
	for cmd in switchboard sbctl sbload; do
		go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$ctx/$cmd" "./cmd/$cmd"
	done
)

certs=""
for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
	if [ -r "$f" ]; then
		certs="$f"
		break
	fi
done
if [ -z "$certs" ]; then
	echo "build.sh: no CA certificate bundle found (install ca-certificates)" >&2
	exit 1
fi
cp "$certs" "$ctx/ca-certificates.crt"
cp "$here/Dockerfile" "$ctx/Dockerfile"
mkdir "$ctx/data"

echo "build.sh: building switchboard:$tag" >&2
docker build --label "org.opencontainers.image.version=$version" -t "switchboard:$tag" "$ctx"
echo "switchboard:$tag ($version)"
