#!/usr/bin/env bash
# Builds the Corral image from the repository root: deploy/docker/build.sh [TAG]
# TAG defaults to corral:<workspace version>. Needs a reachable Docker engine (BuildKit).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\([^"]*\)"$/\1/p' Cargo.toml | head -n 1)
if [ -z "$version" ]; then
    echo "build.sh: cannot read the version from Cargo.toml" >&2
    exit 1
fi
tag=${1:-corral:${version}}

if ! command -v docker >/dev/null 2>&1; then
    echo "build.sh: the docker command is not installed; build the image where Docker is available" >&2
    exit 1
fi
if ! docker info >/dev/null 2>&1; then
    echo "build.sh: no Docker engine is reachable (docker info failed${DOCKER_HOST:+ for DOCKER_HOST=$DOCKER_HOST});" \
        "run this where a Docker daemon is available" >&2
    exit 1
fi

DOCKER_BUILDKIT=1 docker build \
    -f deploy/docker/Dockerfile \
    --build-arg VERSION="$version" \
    -t "$tag" \
    .
echo "build.sh: built $tag"
