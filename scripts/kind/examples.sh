#!/usr/bin/env bash
# Applies examples/k8s/ and waits for each example to do what it shows: order-42 succeeds,
# approval-7 suspends on its signal and succeeds once signalled, settlement-1 sleeps on a
# durable timer and succeeds.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
need "$KUBECTL"
need_cluster

examples="$REPO_ROOT/examples/k8s"
k() { "$KUBECTL" -n "$KIND_NAMESPACE" "$@"; }

# wait_phase KIND NAME PHASE: waits until .status.phase is PHASE; fails at once on a terminal
# phase that is not PHASE, and after $KIND_WAIT_SECONDS.
wait_phase() {
  local kind="$1" name="$2" want="$3" phase="" deadline=$((SECONDS + KIND_WAIT_SECONDS))
  log "waiting for $kind/$name to be $want"
  while ((SECONDS < deadline)); do
    phase="$(k get "$kind" "$name" -o jsonpath='{.status.phase}' 2>/dev/null || true)"
    if [[ "$phase" == "$want" ]]; then
      return 0
    fi
    case "$phase" in
      Succeeded | Failed | Cancelled | Rejected)
        k get "$kind" "$name" -o yaml >&2
        die "$kind/$name ended $phase, expected $want"
        ;;
    esac
    sleep 2
  done
  k get "$kind" "$name" -o yaml >&2 || true
  die "$kind/$name is still ${phase:-without a phase} after ${KIND_WAIT_SECONDS}s, expected $want"
}

on_exit() {
  local status=$?
  if ((status != 0)); then
    bash "$REPO_ROOT/scripts/kind/diagnose.sh" >&2 || true
  fi
}
trap on_exit EXIT

log "applying the example FlowRuns"
k apply -f "$examples/flowrun-order.yaml" \
        -f "$examples/flowrun-approval.yaml" \
        -f "$examples/flowrun-settlement.yaml"

wait_phase flowrun order-42 Succeeded
k get flowrun order-42 -o jsonpath='{.status.result}{"\n"}'

wait_phase flowrun approval-7 Suspended
log "signalling approval-7"
k apply -f "$examples/signal-approval.yaml"
wait_phase signal approval-7-approval Delivered
wait_phase flowrun approval-7 Succeeded

wait_phase flowrun settlement-1 Succeeded

k get ergon -o wide
log "examples passed"
