"""The test cluster's own tests use the same fixtures other suites import."""

from tests.cluster.fixtures import cluster_namespace, fresh_cluster, test_cluster

__all__ = ["cluster_namespace", "fresh_cluster", "test_cluster"]
