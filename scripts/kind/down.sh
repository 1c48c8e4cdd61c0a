#!/usr/bin/env bash
# Deletes the kind cluster and its kubeconfig.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need "$KIND"

if cluster_exists; then
  log "deleting kind cluster $KIND_CLUSTER"
  "$KIND" delete cluster --name "$KIND_CLUSTER"
else
  log "no kind cluster $KIND_CLUSTER"
fi
rm -f "$KIND_KUBECONFIG"
