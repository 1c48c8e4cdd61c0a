#!/usr/bin/env bash
# Runs the end-to-end suite (tests/e2e) against the kind cluster with real kubectl.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need "$KUBECTL"
need_cluster

cd "$REPO_ROOT"
log "pytest tests/e2e against kind cluster $KIND_CLUSTER"
ERGON_E2E_KUBECONFIG="$KIND_KUBECONFIG" \
ERGON_E2E_NAMESPACE="$KIND_NAMESPACE" \
ERGON_E2E_RELEASE="$KIND_RELEASE" \
  "$PYTHON" -m pytest tests/e2e "$@"
