#!/usr/bin/env bash
# Prints what is needed to see why a kind run failed: Ergon resources, pods, events and the
# operator's log. Used by examples.sh on failure and by the CI workflow.
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

k() { "$KUBECTL" -n "$KIND_NAMESPACE" "$@"; }
section() { printf '\n----- %s -----\n' "$*"; }

section "FlowRuns and Signals"
k get ergon -o wide
k get flowruns,signals -o yaml
section "Pods"
k get pods -o wide
k describe pods -l app.kubernetes.io/component=postgres
section "Events"
k get events --sort-by=.lastTimestamp
section "Operator log"
k logs "deployment/$KIND_RELEASE-operator" --tail=400
section "Operator log (previous container)"
k logs "deployment/$KIND_RELEASE-operator" --previous --tail=200 2>/dev/null || echo "(none)"
section "Worker pod logs"
for pod in $(k get pods -l ergon.dev/flowrun -o name 2>/dev/null); do
  echo "## $pod"
  k logs "$pod" --all-containers --tail=100
done
exit 0
