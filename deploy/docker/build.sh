#!/usr/bin/env bash
# Every image of the compose stack, built offline on the debootstrap'd base (base.sh); Docker's layer cache makes
# a rebuild after a code change take seconds (the dependency layers come first).
#   deploy/docker/build.sh [tag]                       (default: the project's version)
# TRITON_IMAGE picks Dockerfile.triton's base: the local one built here (default) or NGC's, for a GPU host that
# reaches nvcr.io: TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3 deploy/docker/build.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG="${1:-$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)}"
TRITON_IMAGE="${TRITON_IMAGE:-mmfeat/tritonserver:local}"
export DOCKER_BUILDKIT=0  # no buildx here: the classic builder, with host networking for pip and apt
build() {  # name, dockerfile, build args...
  local name="$1" file="$2"; shift 2
  local t0=$SECONDS
  docker build -q --network host -f "$file" "$@" -t "$name" . 2>&1 | grep -v -E "DEPRECATED|BuildKit is currently|environment-variable|^\s*$" || true
  docker image inspect "$name" >/dev/null  # the build's own error went above
  echo "image $name: $(docker image inspect -f '{{.Size}}' "$name" | awk '{printf "%.0f MB", $1/1e6}') in $((SECONDS - t0)) s"
}
deploy/docker/base.sh
build "mmfeat/mmfeat:$TAG" deploy/docker/Dockerfile
build "mmfeat/kafka:$TAG" deploy/docker/Dockerfile.kafka --build-arg "APP=mmfeat/mmfeat:$TAG"
if [[ "$TRITON_IMAGE" == mmfeat/tritonserver:local ]]; then
  build mmfeat/tritonserver:local deploy/docker/Dockerfile.tritonserver
fi
build "mmfeat/triton:$TAG" deploy/docker/Dockerfile.triton --build-arg "TRITON_IMAGE=$TRITON_IMAGE"
build "mmfeat/prometheus:$TAG" deploy/docker/Dockerfile.prometheus
