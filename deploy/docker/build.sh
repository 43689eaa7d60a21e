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

# The commit for `corral --version`. .git is not in the build context, so build.rs cannot ask
# git inside the image; it reads CORRAL_BUILD_COMMIT instead. Same form as a build from the
# checkout: 12 hex digits, `-dirty` when tracked files differ from the commit. Taken from the
# environment when set (e.g. by CI), else from git when this tree is a checkout of its own.
commit=${CORRAL_BUILD_COMMIT:-}
if [ -z "$commit" ] && command -v git >/dev/null 2>&1 \
    && top=$(git rev-parse --show-toplevel 2>/dev/null) \
    && [ "$(cd "$top" && pwd -P)" = "$(pwd -P)" ] \
    && hash=$(git rev-parse --short=12 HEAD 2>/dev/null); then
    commit=$hash
    if [ -n "$(git --no-optional-locks status --porcelain --untracked-files=no)" ]; then
        commit="${hash}-dirty"
    fi
fi
if [ -z "$commit" ]; then
    echo "build.sh: no git commit found (not a git checkout, and CORRAL_BUILD_COMMIT is unset);" \
        "corral --version will say \"commit unknown\"" >&2
fi

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
    --build-arg CORRAL_BUILD_COMMIT="$commit" \
    -t "$tag" \
    .
echo "build.sh: built $tag (commit ${commit:-unknown})"
