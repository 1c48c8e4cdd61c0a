#!/usr/bin/env bash
# Installs (or upgrades) the chart with the bundled Postgres and the kind images, into a namespace
# that enforces the `restricted` Pod Security level, and waits for Postgres and the operator.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need "$KUBECTL" "$HELM"
need_cluster

log "namespace $KIND_NAMESPACE (pod-security: restricted)"
"$KUBECTL" create namespace "$KIND_NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" label --overwrite namespace "$KIND_NAMESPACE" \
  pod-security.kubernetes.io/enforce=restricted \
  pod-security.kubernetes.io/warn=restricted

# Helm installs crds/ only on first install; apply them so upgrades pick up changes too.
log "CRDs"
"$KUBECTL" apply --server-side --force-conflicts -f "$REPO_ROOT/crds/"
"$KUBECTL" wait --for=condition=Established --timeout=60s \
  crd/flowruns.ergon.dev crd/signals.ergon.dev

log "helm upgrade --install $KIND_RELEASE"
"$HELM" upgrade --install "$KIND_RELEASE" "$REPO_ROOT/helm/ergon" \
  --namespace "$KIND_NAMESPACE" \
  --set postgres.deploy=true \
  --set image.repository="$KIND_IMAGE_REPO" \
  --set image.tag="$KIND_IMAGE_TAG" \
  --set image.pullPolicy=IfNotPresent \
  "$@"

log "waiting for Postgres and the operator"
"$KUBECTL" -n "$KIND_NAMESPACE" rollout status "statefulset/$KIND_RELEASE-postgres" --timeout=180s
"$KUBECTL" -n "$KIND_NAMESPACE" rollout status "deployment/$KIND_RELEASE-operator" --timeout=180s
