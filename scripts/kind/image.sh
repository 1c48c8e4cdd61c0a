#!/usr/bin/env bash
# Builds the operator image and the worker image (with examples/) from the Dockerfile.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need "$DOCKER"

cd "$REPO_ROOT"
log "building $KIND_IMAGE_REPO:$KIND_IMAGE_TAG (target operator)"
"$DOCKER" build --target operator -t "$KIND_IMAGE_REPO:$KIND_IMAGE_TAG" .
log "building $KIND_IMAGE_REPO:$KIND_IMAGE_TAG-worker (target worker-dev)"
"$DOCKER" build --target worker-dev -t "$KIND_IMAGE_REPO:$KIND_IMAGE_TAG-worker" .
