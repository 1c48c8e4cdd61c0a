"""Workload 5: the operator on the test cluster.

FlowRun apply -> Succeeded latency, one at a time (p50/p95), and 100 FlowRuns applied at once
until all Succeeded, with the operator process's peak RSS (VmHWM). The cluster, chart and operator
are set up exactly as the end-to-end suite does (tests/e2e/environment.py): the chart is
installed with helm, and the operator runs with the environment the chart gives it.

`python -m benchmarks.operator [--sequential N] [--burst N]`

Issue 15's measurements (`--scale`, `--quick` for a smoke-test size): API requests per trivial
FlowRun, idle API requests/s and store queries/s with Suspended runs, apply -> pod-created
latency with many unfinished runs and right after an operator restart, operator RSS with many
FlowRuns and with unrelated pods, and the time for a batch of FlowRuns under
ERGON_MAX_RUNNING_PODS. `make bench ARGS="--only operator"` runs both parts. `--memory`: the
operator's RSS with 5,000 FlowRuns and 4,000 worker pods right after a restart, then with 2,000
unrelated pods (minutes instead of the hour of `--scale`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.stats import percentile
from tests.e2e.environment import TestClusterEnvironment


@dataclass
class OperatorResult:
    sequential: int
    p50_s: float
    p95_s: float
    burst: int
    burst_s: float
    peak_rss_mb: float


def flowrun(name: str, index: int, *, worker_pool: str | None = None) -> dict[str, object]:
    """A FlowRun of `examples.orders:OrderFlow`; on WorkerPool `worker_pool` if given."""
    spec: dict[str, object] = {
        "flow": "examples.orders:OrderFlow",
        "input": {"order_id": str(index), "amount": 1},
    }
    if worker_pool is not None:
        spec["workerPool"] = worker_pool
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": spec,
    }


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(sequential: int, burst: int) -> OperatorResult:
    with tempfile.TemporaryDirectory(prefix="ergon-bench-operator-") as home:
        env = TestClusterEnvironment(Path(home))
        try:
            latencies = []
            for i in range(sequential):
                name = f"seq-{i}"
                started = time.monotonic()
                env.apply(flowrun(name, i))
                env.wait_phase(name, "Succeeded", timeout=120)
                latencies.append(time.monotonic() - started)
            manifests = "\n---\n".join(json.dumps(flowrun(f"burst-{i}", i)) for i in range(burst))
            started = time.monotonic()
            env.kubectl("apply", "-f", "-", input=manifests, timeout=120)
            for i in range(burst):
                env.wait_phase(f"burst-{i}", "Succeeded", timeout=600)
            burst_s = time.monotonic() - started
            assert env.operator is not None
            rss = peak_rss_mb(env.operator.pid)
        finally:
            env.close()
    return OperatorResult(
        sequential, percentile(latencies, 50), percentile(latencies, 95), burst, burst_s, rss
    )


def main() -> None:
    if "--scale" in sys.argv[1:]:
        scale_main(sys.argv[1:])
        return
    if "--memory" in sys.argv[1:]:
        measure_memory()
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.operator")
    parser.add_argument("--sequential", type=int, default=20)
    parser.add_argument("--burst", type=int, default=100)
    args = parser.parse_args()
    result = measure(args.sequential, args.burst)
    print(
        f"apply -> Succeeded: p50 {result.p50_s:.2f} s, p95 {result.p95_s:.2f} s "
        f"({result.sequential} one at a time); {result.burst} at once: {result.burst_s:.1f} s; "
        f"operator peak RSS {result.peak_rss_mb:.0f} MB"
    )


# -- issue 15: cost, latency and memory at scale ----------------------------------------------
#
# `python -m benchmarks.operator --scale [--quick]`. Every figure comes from the test cluster's
# own request counter (tests/cluster/requestlog.py: requests by User-Agent, so kubectl, helm and
# this script's urllib calls are told apart from the operator's kopf and kubernetes-client ones)
# and from Postgres' statistics for the store's database.

OPERATOR_AGENTS_EXCLUDED = {"kubectl", "helm", "Python-urllib"}


def operator_requests(
    env: TestClusterEnvironment, *, reset: bool = False
) -> tuple[int, dict[str, int]]:
    """The operator's API requests since the last reset (the test cluster's counter, without
    kubectl's, helm's and this script's): the total and "METHOD resource" -> count."""
    rows = env.api_requests(reset=reset)["requests"]
    breakdown: dict[str, int] = {}
    for row in rows:
        if row["agent"] in OPERATOR_AGENTS_EXCLUDED:
            continue
        key = f"{row['method']} {row['resource']}{' (watch)' if row['watch'] else ''}"
        breakdown[key] = breakdown.get(key, 0) + int(row["count"])
    return sum(breakdown.values()), breakdown


@dataclass
class ScaleSizes:
    trivial: int = 200
    suspended: int = 1000
    unfinished: tuple[int, ...] = (1000, 4000)
    total: int = 5000
    unrelated_pods: int = 2000
    limited_runs: int = 1000
    limit: int = 50
    idle_seconds: float = 60.0
    latency_samples: int = 10
    restarts: int = 3

    @classmethod
    def quick(cls) -> ScaleSizes:
        return cls(
            trivial=20,
            suspended=30,
            unfinished=(30, 60),
            total=100,
            unrelated_pods=50,
            limited_runs=30,
            limit=5,
            idle_seconds=10.0,
            latency_samples=3,
            restarts=1,
        )


@dataclass
class ScaleResult:
    sizes: ScaleSizes
    requests_per_flowrun: float = float("nan")
    request_breakdown: dict[str, int] | None = None
    idle_requests_per_s: float = float("nan")
    idle_lease_requests_per_s: float = float("nan")  # leader election's share of the above
    idle_queries_per_s: float = float("nan")
    query_source: str = ""
    pod_latency: dict[str, tuple[float, float]] | None = None  # label -> (p50, p95) seconds
    rss_mb_at_total: float = float("nan")
    rss_mb_with_unrelated_pods: float = float("nan")
    limited_s: float = float("nan")
    limited_max_running: int = 0


class ScaleBench:
    """One environment, driven through raw API calls (fast, and not counted as the operator's)."""

    def __init__(self, env: TestClusterEnvironment) -> None:
        self.env = env
        self.ns = env.namespace
        self.base = f"/apis/ergon.dev/v1alpha1/namespaces/{self.ns}/flowruns"

    def create(self, manifests: list[dict[str, object]]) -> None:
        for manifest in manifests:
            self.env.cluster.request("POST", self.base, body=manifest)

    def phases(self) -> dict[str, str]:
        items = self.env.cluster.request("GET", self.base)["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in items}

    def wait_all(
        self, names: list[str], phases: set[str], timeout: float, *, strict: bool = True
    ) -> float:
        started = time.monotonic()
        wanted = set(names)
        while time.monotonic() - started < timeout:
            current = self.phases()
            if all(current.get(n) in phases for n in wanted):
                return time.monotonic() - started
            time.sleep(1)
        missing = [n for n in wanted if self.phases().get(n) not in phases][:5]
        if not strict:
            print(f"note: not all {len(wanted)} runs reached {phases} (e.g. {missing})")
            return time.monotonic() - started
        raise AssertionError(f"not all {len(wanted)} runs reached {phases}: e.g. {missing}")

    def pods(self, selector: str) -> list[dict[str, Any]]:
        path = f"/api/v1/namespaces/{self.ns}/pods"
        return list(
            self.env.cluster.request("GET", path, query={"labelSelector": selector})["items"]
        )

    def operator_requests(self, *, reset: bool = False) -> tuple[int, dict[str, int]]:
        return operator_requests(self.env, reset=reset)

    def pod_latency(self, label: str, samples: int) -> list[float]:
        """apply → pod created, for `samples` new trivial FlowRuns one at a time."""
        out = []
        for i in range(samples):
            name = f"lat-{label}-{i}"
            started = time.monotonic()
            self.create([flowrun(name, i)])
            while not self.pods(f"ergon.dev/flowrun={name}"):
                if time.monotonic() - started > 300:
                    raise AssertionError(f"no pod for {name} within 300 s")
                time.sleep(0.05)
            out.append(time.monotonic() - started)
        return out

    def rss_mb(self) -> float:
        assert self.env.operator is not None
        for line in Path(f"/proc/{self.env.operator.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def store_transactions(store_url: str) -> tuple[int, str]:
    """Statements (pg_stat_statements) or transactions (pg_stat_database) so far in the store's
    database, and which of the two it is. The measuring query itself adds one transaction."""
    import asyncio

    import asyncpg

    dsn = store_url.split("?", 1)[0]

    async def read() -> tuple[int, str]:
        conn = await asyncpg.connect(dsn)
        try:
            has_statements = await conn.fetchval(
                "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'"
            )
            if has_statements:
                calls = await conn.fetchval(
                    "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                    " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
                )
                return int(calls), "pg_stat_statements calls"
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            count = await conn.fetchval(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
            return int(count), "pg_stat_database xact_commit + xact_rollback (transactions)"
        finally:
            await conn.close()

    return asyncio.run(read())


def approval_run(name: str, index: int) -> dict[str, object]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"flow": "examples.approval:ApprovalFlow", "input": {"request_id": str(index)}},
    }


def measure_scale(sizes: ScaleSizes) -> ScaleResult:
    result = ScaleResult(sizes)
    latency: dict[str, tuple[float, float]] = {}
    result.pod_latency = latency
    with tempfile.TemporaryDirectory(prefix="ergon-bench-scale-") as home:
        env = TestClusterEnvironment(Path(home))
        bench = ScaleBench(env)
        try:
            # API requests per trivial FlowRun.
            time.sleep(3)
            bench.operator_requests(reset=True)
            names = [f"trivial-{i}" for i in range(sizes.trivial)]
            bench.create([flowrun(n, i) for i, n in enumerate(names)])
            bench.wait_all(names, {"Succeeded"}, timeout=60 + sizes.trivial * 3)
            time.sleep(5)  # trailing status patches, Events, pod deletions
            count, breakdown = bench.operator_requests(reset=True)
            result.requests_per_flowrun = count / sizes.trivial
            result.request_breakdown = breakdown
            print(f"requests per FlowRun: {result.requests_per_flowrun:.1f} {breakdown}")
            # Idle with Suspended runs.
            suspended = [f"suspended-{i}" for i in range(sizes.suspended)]
            bench.create([approval_run(n, i) for i, n in enumerate(suspended)])
            bench.wait_all(suspended, {"Suspended"}, timeout=120 + sizes.suspended * 3)
            time.sleep(10)
            assert env.store_url is not None
            bench.operator_requests(reset=True)
            before, source = store_transactions(env.store_url)
            time.sleep(sizes.idle_seconds)
            count, breakdown = bench.operator_requests(reset=True)
            after, _ = store_transactions(env.store_url)
            result.idle_requests_per_s = count / sizes.idle_seconds
            leases = sum(n for k, n in breakdown.items() if k.split()[1].startswith("leases"))
            result.idle_lease_requests_per_s = leases / sizes.idle_seconds
            result.idle_queries_per_s = max(0, after - before - 1) / sizes.idle_seconds
            result.query_source = source
            print(
                f"idle: {result.idle_requests_per_s:.2f} API requests/s {breakdown}, "
                f"{result.idle_queries_per_s:.2f} store {source}/s"
            )
            # apply -> pod created with N unfinished runs present.
            present = sizes.suspended
            for target in sizes.unfinished:
                if target > present:
                    more = [f"suspended-{i}" for i in range(present, target)]
                    bench.create([approval_run(n, i) for i, n in enumerate(more, present)])
                    bench.wait_all(more, {"Suspended"}, timeout=120 + len(more) * 3)
                    present = target
                samples = bench.pod_latency(f"u{target}", sizes.latency_samples)
                latency[f"{target} unfinished"] = (percentile(samples, 50), percentile(samples, 95))
                print(f"apply -> pod with {target} unfinished: {latency[f'{target} unfinished']}")
            # Right after an operator restart.
            samples = []
            for r in range(sizes.restarts):
                env.restart_operator()
                samples += bench.pod_latency(f"restart{r}", 1)
            latency["after restart"] = (percentile(samples, 50), percentile(samples, 95))
            print(f"apply -> pod right after a restart: {latency['after restart']}")
            # RSS at `total` FlowRuns: top up with runs cancelled at creation (no pod needed).
            existing = len(bench.phases())
            filler = [f"filler-{i}" for i in range(max(0, sizes.total - existing))]
            cancelled = []
            for i, n in enumerate(filler):
                manifest = flowrun(n, i)
                spec = manifest["spec"]
                assert isinstance(spec, dict)
                spec["cancel"] = True
                cancelled.append(manifest)
            bench.create(cancelled)
            bench.wait_all(
                filler, {"Cancelled", "Succeeded"}, timeout=120 + len(filler), strict=False
            )
            time.sleep(10)
            result.rss_mb_at_total = bench.rss_mb()
            print(f"RSS at {sizes.total} FlowRuns: {result.rss_mb_at_total:.0f} MiB")
            # Unrelated pods (no worker label) in the watched namespace.
            path = f"/api/v1/namespaces/{env.namespace}/pods"
            for i in range(sizes.unrelated_pods):
                pod = {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"unrelated-{i}", "labels": {"app": "unrelated"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox", "command": ["true"]}],
                    },
                }
                env.cluster.request("POST", path, body=pod)
            time.sleep(20)
            result.rss_mb_with_unrelated_pods = bench.rss_mb()
            print(
                f"RSS with {sizes.unrelated_pods} unrelated pods: "
                f"{result.rss_mb_with_unrelated_pods:.0f} MiB"
            )
        finally:
            env.close()
    # A fresh environment with the cluster-wide pod limit.
    with tempfile.TemporaryDirectory(prefix="ergon-bench-limit-") as home:
        env = TestClusterEnvironment(
            Path(home), operator_env={"ERGON_MAX_RUNNING_PODS": str(sizes.limit)}
        )
        bench = ScaleBench(env)
        try:
            names = [f"limited-{i}" for i in range(sizes.limited_runs)]
            started = time.monotonic()
            bench.create([flowrun(n, i) for i, n in enumerate(names)])
            most = 0
            while True:
                running = [
                    p
                    for p in bench.pods("ergon.dev/flowrun")
                    if (p.get("status") or {}).get("phase") in ("Pending", "Running")
                ]
                most = max(most, len(running))
                phases = bench.phases()
                if all(phases.get(n) == "Succeeded" for n in names):
                    break
                if time.monotonic() - started > 600 + sizes.limited_runs * 3:
                    raise AssertionError("the limited runs did not all succeed")
                time.sleep(0.5)
            result.limited_s = time.monotonic() - started
            result.limited_max_running = most
            print(
                f"{sizes.limited_runs} FlowRuns under ERGON_MAX_RUNNING_PODS={sizes.limit}: "
                f"{result.limited_s:.0f} s, at most {most} worker pods at once"
            )
        finally:
            env.close()
    return result


def measure_memory(
    *, flowruns: int = 5000, pods: int = 4000, unrelated: int = 2000
) -> dict[str, float]:
    """Operator RSS with `flowruns` FlowRuns and `pods` worker pods cached, right after a restart
    (the listing of all of them at once is the peak that stays), then with `unrelated` pods
    without the worker label added to the namespace. The FlowRuns are cancelled at creation
    and the pods run `true`, so this takes minutes, not the hour that as many Suspended runs
    (each a worker pod process) take; the full `--scale` run measured the same RSS within 1 %
    on the same code (291 vs 289 MiB)."""
    import concurrent.futures

    result: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ergon-bench-memory-") as home:
        env = TestClusterEnvironment(Path(home))
        bench = ScaleBench(env)
        ns = env.namespace
        pods_path = f"/api/v1/namespaces/{ns}/pods"

        def run(i: int) -> None:
            manifest = flowrun(f"mem-{i}", i)
            spec = manifest["spec"]
            assert isinstance(spec, dict)
            spec["cancel"] = True
            env.cluster.request("POST", bench.base, body=manifest)

        def pod(i: int, labels: dict[str, str]) -> None:
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"mem-pod-{i}", "labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "worker", "image": "x", "command": ["true"]}],
                },
            }
            env.cluster.request("POST", pods_path, body=body)

        try:
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as creating:
                list(creating.map(run, range(flowruns)))
                labels = {"ergon.dev/attempt": "1", "ergon.dev/pod-sequence": "1"}
                list(creating.map(
                    lambda i: pod(i, {**labels, "ergon.dev/flowrun": f"mem-{i}"}), range(pods)
                ))  # fmt: skip
            bench.wait_all([f"mem-{i}" for i in range(flowruns)], {"Cancelled"}, timeout=1200)
            time.sleep(15)
            result["rss_mb_before_restart"] = bench.rss_mb()
            env.restart_operator()
            time.sleep(40)
            result["rss_mb_after_restart"] = bench.rss_mb()
            with concurrent.futures.ThreadPoolExecutor(max_workers=8) as creating:
                list(creating.map(
                    lambda i: pod(pods + i, {"app": "unrelated"}), range(unrelated)
                ))  # fmt: skip
            time.sleep(30)
            result["rss_mb_with_unrelated_pods"] = bench.rss_mb()
        finally:
            env.close()
    print(json.dumps(result))
    return result


def scale_main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.operator --scale")
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    sizes = ScaleSizes.quick() if args.quick else ScaleSizes()
    result = measure_scale(sizes)
    print(json.dumps(result.__dict__, default=lambda o: o.__dict__, indent=1))


if __name__ == "__main__":
    main()
