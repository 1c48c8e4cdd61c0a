# Local end-to-end runs on a kind cluster: needs Docker, kind, kubectl and helm (none of which
# run on the project's own machines; see docs/kind.md). Included by the root Makefile, and usable
# alone: make -f kind.mk kind-all
#
#   make kind-up         create the kind cluster "ergon" (kubeconfig: .tools/kind/ergon.kubeconfig)
#   make kind-image      docker build the operator and worker images (ergon:dev, ergon:dev-worker)
#   make kind-load       kind load both images into the cluster
#   make kind-install    helm install the chart with postgres.deploy=true and the kind images
#   make kind-examples   apply examples/k8s/ and wait for each to do what it shows
#   make kind-e2e        pytest tests/e2e against the cluster (ERGON_E2E_KUBECONFIG set)
#   make kind-down       delete the cluster
#   make kind-all        all of the above but kind-down, in order
#
# Settings (make variables or environment): KIND_CLUSTER, KIND_NAMESPACE, KIND_RELEASE,
# KIND_IMAGE_REPO, KIND_IMAGE_TAG, KIND_NODE_IMAGE, KIND_KUBECONFIG, KIND_WAIT_SECONDS, and the
# tools KIND, KUBECTL, HELM, DOCKER, PYTHON. Defaults are in scripts/kind/common.sh.

KIND_SCRIPTS := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))/scripts/kind

export KIND KUBECTL HELM DOCKER PYTHON
export KIND_CLUSTER KIND_KUBECONFIG KIND_NODE_IMAGE KIND_IMAGE_REPO KIND_IMAGE_TAG
export KIND_RELEASE KIND_NAMESPACE KIND_WAIT_SECONDS

.PHONY: kind-up kind-image kind-load kind-install kind-examples kind-e2e kind-down kind-all

kind-up:
	bash $(KIND_SCRIPTS)/up.sh

kind-image:
	bash $(KIND_SCRIPTS)/image.sh

kind-load:
	bash $(KIND_SCRIPTS)/load.sh

kind-install:
	bash $(KIND_SCRIPTS)/install.sh

kind-examples:
	bash $(KIND_SCRIPTS)/examples.sh

kind-e2e:
	bash $(KIND_SCRIPTS)/e2e.sh

kind-down:
	bash $(KIND_SCRIPTS)/down.sh

# Sequential even under make -j: each step needs the one before.
kind-all:
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) kind-up
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) kind-image
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) kind-load
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) kind-install
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) kind-examples
	$(MAKE) -f $(firstword $(MAKEFILE_LIST)) kind-e2e
