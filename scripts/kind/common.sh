# Settings shared by the kind scripts; every one can be overridden from the environment (or as a
# make variable: make kind-install KIND_NAMESPACE=flows).
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

KIND="${KIND:-kind}"
KUBECTL="${KUBECTL:-kubectl}"
HELM="${HELM:-helm}"
DOCKER="${DOCKER:-docker}"

# The cluster, and the kubeconfig written for it (kept apart from ~/.kube/config).
KIND_CLUSTER="${KIND_CLUSTER:-ergon}"
KIND_KUBECONFIG="${KIND_KUBECONFIG:-$REPO_ROOT/.tools/kind/$KIND_CLUSTER.kubeconfig}"
# Node image, e.g. kindest/node:v1.33.1; empty for the default of the installed kind.
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-}"

# Images built from the Dockerfile: $KIND_IMAGE_REPO:$KIND_IMAGE_TAG (operator) and
# $KIND_IMAGE_REPO:$KIND_IMAGE_TAG-worker (worker with the examples).
KIND_IMAGE_REPO="${KIND_IMAGE_REPO:-ergon}"
KIND_IMAGE_TAG="${KIND_IMAGE_TAG:-dev}"

# Helm release and the namespace of the release, the examples and the end-to-end suite. It is
# created with the `restricted` Pod Security level enforced.
KIND_RELEASE="${KIND_RELEASE:-ergon}"
KIND_NAMESPACE="${KIND_NAMESPACE:-ergon}"
# Seconds to wait for each example to reach its phase.
KIND_WAIT_SECONDS="${KIND_WAIT_SECONDS:-300}"

PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  if [[ -x "$REPO_ROOT/.venv/bin/python" ]]; then
    PYTHON="$REPO_ROOT/.venv/bin/python"
  else
    PYTHON=python3
  fi
fi

export KUBECONFIG="$KIND_KUBECONFIG"

log() {
  printf '\033[1m==> %s\033[0m\n' "$*" >&2
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

need() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (or set ${tool^^} to its path)"
  done
}

cluster_exists() {
  # Not grep -q: an early exit would SIGPIPE kind, and pipefail would turn a match into a miss.
  "$KIND" get clusters 2>/dev/null | grep -Fx "$KIND_CLUSTER" >/dev/null
}

need_cluster() {
  cluster_exists || die "no kind cluster \"$KIND_CLUSTER\"; run: make kind-up"
  [[ -s "$KIND_KUBECONFIG" ]] || "$KIND" get kubeconfig --name "$KIND_CLUSTER" >"$KIND_KUBECONFIG"
}
