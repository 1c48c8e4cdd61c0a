#!/usr/bin/env bash
# Creates the kind cluster (or reuses it) and writes its kubeconfig to $KIND_KUBECONFIG.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need "$KIND" "$KUBECTL"

mkdir -p "$(dirname "$KIND_KUBECONFIG")"
if cluster_exists; then
  log "kind cluster $KIND_CLUSTER exists; reusing it"
  "$KIND" get kubeconfig --name "$KIND_CLUSTER" >"$KIND_KUBECONFIG"
else
  log "creating kind cluster $KIND_CLUSTER"
  args=(create cluster --name "$KIND_CLUSTER" --config "$REPO_ROOT/scripts/kind/cluster.yaml"
        --kubeconfig "$KIND_KUBECONFIG" --wait 180s)
  [[ -n "$KIND_NODE_IMAGE" ]] && args+=(--image "$KIND_NODE_IMAGE")
  "$KIND" "${args[@]}"
fi
"$KUBECTL" cluster-info
log "KUBECONFIG=$KIND_KUBECONFIG"
