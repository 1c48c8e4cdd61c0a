"""Leader election against the test cluster's real Lease API: two candidates in one process.

Timings are scaled down (lease 4 s, renew deadline 3 s, retry 0.5 s) so the takeover bounds can
be checked quickly; the algorithm is the same as with the operator's 15/10/2 s.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("kopf")

from kubernetes import client, config

from ergon_operator import leadership
from ergon_operator.leadership import (
    ElectionSettings,
    ElectionSettingsError,
    LeaderElector,
)
from tests.cluster.fixtures import (  # noqa: F401 - fixtures used by name
    TestCluster,
    cluster_namespace,
    test_cluster,
)

LEASE = 4.0
DEADLINE = 3.0
RETRY = 0.5


@pytest.fixture
def api(test_cluster: TestCluster) -> Iterator[Any]:  # noqa: F811 - the fixture
    api_client = config.new_client_from_config(config_file=str(test_cluster.kubeconfig))  # type: ignore[no-untyped-call]
    try:
        yield client.CoordinationV1Api(api_client)
    finally:
        api_client.close()


def elector(api: Any, namespace: str, identity: str, **timing: float) -> LeaderElector:
    return LeaderElector(
        api=api,
        namespace=namespace,
        name="ergon-operator",
        identity=identity,
        lease_duration=timing.get("lease_duration", LEASE),
        renew_deadline=timing.get("renew_deadline", DEADLINE),
        retry_period=timing.get("retry_period", RETRY),
    )


def lease_spec(api: Any, namespace: str) -> dict[str, Any]:
    data = api.read_namespaced_lease("ergon-operator", namespace, _preload_content=False).data
    return dict(json.loads(data)["spec"])


async def test_only_one_of_two_candidates_leads(api: Any, cluster_namespace: str) -> None:  # noqa: F811
    a, b = elector(api, cluster_namespace, "a"), elector(api, cluster_namespace, "b")
    await asyncio.wait_for(a.acquire(), 5)
    lost: list[str] = []
    renewing = asyncio.create_task(a.keep_leading(on_lost=lambda: lost.append("a")))
    standby = asyncio.create_task(b.acquire())
    await asyncio.sleep(LEASE * 2)  # well past a lease duration: a keeps renewing
    assert a.is_leader and not b.is_leader and not standby.done() and not lost
    assert b.holder == "a"
    spec = lease_spec(api, cluster_namespace)
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == int(LEASE)
    standby.cancel()
    renewing.cancel()
    await a.release()


async def test_racing_candidates_create_one_lease(api: Any, cluster_namespace: str) -> None:  # noqa: F811
    """Both see no Lease and create it: the API's 409 makes exactly one the leader."""
    candidates = [elector(api, cluster_namespace, f"c{i}") for i in range(4)]
    won = await asyncio.gather(*(c._attempt(timeout=5) for c in candidates))
    assert sum(won) == 1
    leader = candidates[won.index(True)]
    assert lease_spec(api, cluster_namespace)["holderIdentity"] == leader.identity
    # And a stale write (an old resourceVersion) is refused with 409, not applied.
    stale = json.loads(
        api.read_namespaced_lease("ergon-operator", cluster_namespace, _preload_content=False).data
    )
    assert await leader._attempt(timeout=5)  # renews: a new resourceVersion
    stale["spec"]["holderIdentity"] = "intruder"
    with pytest.raises(client.ApiException) as raised:
        api.replace_namespaced_lease("ergon-operator", cluster_namespace, stale)
    assert raised.value.status == 409
    assert lease_spec(api, cluster_namespace)["holderIdentity"] == leader.identity


async def test_standby_takes_over_when_the_leader_stops_renewing(
    api: Any,
    cluster_namespace: str,  # noqa: F811
) -> None:
    a, b = elector(api, cluster_namespace, "a"), elector(api, cluster_namespace, "b")
    await a.acquire()
    died = time.monotonic()  # a "dies" after its first write: it never renews
    standby = asyncio.create_task(b.acquire())
    await asyncio.wait_for(standby, LEASE + 3 * RETRY + 2)
    took = time.monotonic() - died
    # Not before a lease duration (by b's own clock), and within one retry period after it.
    assert b.is_leader and LEASE <= took <= LEASE + 2 * RETRY + 1, took
    spec = lease_spec(api, cluster_namespace)
    assert spec["holderIdentity"] == "b" and spec["leaseTransitions"] == 1
    # The old leader, renewing again, finds b's valid lease and gives up at once.
    lost: list[str] = []
    await asyncio.wait_for(a.keep_leading(on_lost=lambda: lost.append("a")), RETRY * 4)
    assert lost == ["a"] and not a.is_leader
    await b.release()


async def test_a_clean_release_hands_over_at_once(api: Any, cluster_namespace: str) -> None:  # noqa: F811
    a, b = elector(api, cluster_namespace, "a"), elector(api, cluster_namespace, "b")
    await a.acquire()
    standby = asyncio.create_task(b.acquire())
    await asyncio.sleep(RETRY * 2)
    released = time.monotonic()
    await a.release()
    assert not a.is_leader
    await asyncio.wait_for(standby, RETRY * 3 + 1)
    assert time.monotonic() - released < RETRY * 3 + 1
    assert b.is_leader and lease_spec(api, cluster_namespace)["holderIdentity"] == "b"
    await b.release()


class Failing:
    """The Lease API, until `broken`: then every call fails like an unreachable API server."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.broken = False

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.api, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.broken:
                raise ConnectionError("API server unreachable")
            return method(*args, **kwargs)

        return call


async def test_a_leader_that_cannot_renew_stops_within_the_deadline(
    api: Any,
    cluster_namespace: str,  # noqa: F811
) -> None:
    flaky = Failing(api)
    a = elector(flaky, cluster_namespace, "a")
    await a.acquire()
    lost = asyncio.Event()
    renewing = asyncio.create_task(a.keep_leading(on_lost=lost.set))
    await asyncio.sleep(RETRY * 3)
    assert a.is_leader and not lost.is_set()
    flaky.broken = True
    broke = time.monotonic()
    await asyncio.wait_for(lost.wait(), DEADLINE + RETRY * 2 + 1)
    took = time.monotonic() - broke
    assert not a.is_leader and took <= DEADLINE + RETRY * 2 + 1, took
    await renewing
    # It stopped acting before its lease can have expired for anybody else.
    assert took < LEASE + RETRY


async def test_the_same_identity_resumes_its_own_lease_at_once(
    api: Any,
    cluster_namespace: str,  # noqa: F811
) -> None:
    """A restarted container of the same pod (same name) need not wait for its old lease."""
    await elector(api, cluster_namespace, "pod-1").acquire()
    again = elector(api, cluster_namespace, "pod-1")
    await asyncio.wait_for(again.acquire(), 2)
    assert lease_spec(api, cluster_namespace)["leaseTransitions"] == 0


def test_timings_must_be_ordered() -> None:
    with pytest.raises(ValueError, match="retry_period < renew_deadline < lease_duration"):
        LeaderElector(
            api=None, namespace="n", name="l", identity="i", lease_duration=10, renew_deadline=10
        )


def test_election_settings_from_env() -> None:
    off = ElectionSettings.from_env({"POD_NAMESPACE": "ns"})
    assert not off.enabled and off.lease_name == "ergon-operator" and off.identity
    on = ElectionSettings.from_env(
        {
            "ERGON_LEADER_ELECTION": "true",
            "ERGON_LEASE_NAME": "mine",
            "POD_NAMESPACE": "ergon",
            "POD_NAME": "ergon-operator-abc",
        }
    )
    assert on == ElectionSettings(
        enabled=True, lease_name="mine", namespace="ergon", identity="ergon-operator-abc"
    )
    with pytest.raises(ElectionSettingsError, match="ERGON_LEADER_ELECTION"):
        ElectionSettings.from_env({"ERGON_LEADER_ELECTION": "maybe"})


def test_is_leader_is_true_without_election() -> None:
    try:
        leadership.register(None)
        assert leadership.is_leader()
        candidate = LeaderElector(api=None, namespace="n", name="l", identity="i")
        leadership.register(candidate)
        assert not leadership.is_leader()
    finally:
        leadership.register(None)
