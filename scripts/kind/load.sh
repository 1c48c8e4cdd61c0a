#!/usr/bin/env bash
# Loads the two images into the kind cluster's node(s), so pods never pull them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need "$KIND" "$DOCKER"
need_cluster

log "loading $KIND_IMAGE_REPO:$KIND_IMAGE_TAG and $KIND_IMAGE_REPO:$KIND_IMAGE_TAG-worker into $KIND_CLUSTER"
"$KIND" load docker-image --name "$KIND_CLUSTER" \
  "$KIND_IMAGE_REPO:$KIND_IMAGE_TAG" "$KIND_IMAGE_REPO:$KIND_IMAGE_TAG-worker"
