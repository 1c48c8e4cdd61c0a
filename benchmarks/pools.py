"""Worker pools against pod-per-run on the test cluster (issue 16).

`python -m benchmarks.pools [--runs N] [--quick]`: in one environment (the chart installed with
helm, the operator as the end-to-end suite runs it), N FlowRuns of 3 trivial steps
(`examples.orders:OrderFlow`) applied at once through a WorkerPool (max 4 pods x 16 flows) and
then N more as pod-per-run FlowRuns. For each: seconds until all Succeeded, worker pods created,
and the operator's own API requests (the test cluster's request counter, by User-Agent). Before
that, the pool's scale-from-zero latency: a FlowRun applied to an idle pool at zero replicas ->
its first step recorded in the store (p50 over a few samples, the pool back at zero each time).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ergon
from benchmarks.operator import flowrun, operator_requests
from benchmarks.stats import percentile
from tests.e2e.environment import TestClusterEnvironment

POOL = "bench"


@dataclass
class ModeResult:
    runs: int
    seconds: float
    pods_created: int
    api_requests: int
    breakdown: dict[str, int] = field(default_factory=dict)


@dataclass
class PoolsResult:
    runs: int
    scale_from_zero_s: list[float]
    pool: ModeResult | None = None
    pod_per_run: ModeResult | None = None


def order(name: str, index: int, *, pool: str | None) -> dict[str, Any]:
    return flowrun(name, index, worker_pool=pool)


def worker_pool(delay: int) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "WorkerPool",
        "metadata": {"name": POOL},
        "spec": {
            "image": "ghcr.io/ergon-dev/ergon:bench",
            "imports": ["examples.orders"],
            "concurrency": 16,
            "replicas": {"min": 0, "max": 4},
            "scaleDownDelaySeconds": delay,
            "leaseSeconds": 10,
            "podTemplate": {"terminationGracePeriodSeconds": 5},
        },
    }


class Bench:
    def __init__(self, env: TestClusterEnvironment) -> None:
        self.env = env
        self.ns = env.namespace
        self.runs_path = f"/apis/ergon.dev/v1alpha1/namespaces/{self.ns}/flowruns"

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.env.cluster.request("POST", path, body=body))

    def phases(self) -> dict[str, str]:
        items = self.env.cluster.request("GET", self.runs_path)["items"]
        return {i["metadata"]["name"]: (i.get("status") or {}).get("phase", "") for i in items}

    def uid(self, name: str) -> str:
        return str(self.env.cluster.request("GET", f"{self.runs_path}/{name}")["metadata"]["uid"])

    def pod_names(self, selector: str) -> set[str]:
        path = f"/api/v1/namespaces/{self.ns}/pods"
        found = self.env.cluster.request("GET", path, query={"labelSelector": selector})
        return {p["metadata"]["name"] for p in found["items"]}

    def replicas(self) -> int | None:
        path = f"/apis/apps/v1/namespaces/{self.ns}/deployments"
        found = self.env.cluster.request(
            "GET", path, query={"labelSelector": f"ergon.dev/workerpool={POOL}"}
        )["items"]
        return sum(int(d["spec"].get("replicas", 1)) for d in found) if found else None

    def operator_requests(self, *, reset: bool = False) -> tuple[int, dict[str, int]]:
        return operator_requests(self.env, reset=reset)

    def wait_until(self, check: Any, timeout: float, what: str) -> float:
        started = time.monotonic()
        while not check():
            if time.monotonic() - started > timeout:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.02)
        return time.monotonic() - started


def first_step_seconds(store_url: str, flow_id: str, started: float, timeout: float) -> float:
    async def watch() -> float:
        async with ergon.open_store(store_url) as store:
            while time.monotonic() - started < timeout:
                if await store.load_steps(flow_id):
                    return time.monotonic() - started
                await asyncio.sleep(0.01)
        raise AssertionError(f"no step of {flow_id} within {timeout} s")

    return asyncio.run(watch())


def run_batch(bench: Bench, runs: int, *, pool: str | None, selector: str) -> ModeResult:
    prefix = "pool" if pool else "pod"
    names = [f"{prefix}-{i}" for i in range(runs)]
    seen: set[str] = set()
    stop = threading.Event()

    def watch_pods() -> None:  # pods created, including those deleted meanwhile
        while not stop.is_set():
            seen.update(bench.pod_names(selector))
            time.sleep(0.3)

    watcher = threading.Thread(target=watch_pods, daemon=True)
    bench.operator_requests(reset=True)
    started = time.monotonic()
    watcher.start()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as creating:  # "applied at once"
        list(
            creating.map(
                lambda i: bench.post(bench.runs_path, order(names[i], i, pool=pool)), range(runs)
            )
        )
    wanted = set(names)

    def done() -> bool:
        phases = bench.phases()
        return all(phases.get(n) == "Succeeded" for n in wanted)

    while not done():
        if time.monotonic() - started > 3600:
            raise AssertionError(f"the {prefix} runs did not all succeed")
        time.sleep(0.5)
    seconds = time.monotonic() - started
    stop.set()
    watcher.join()
    seen.update(bench.pod_names(selector))
    time.sleep(3)  # trailing status patches and Events
    count, breakdown = bench.operator_requests(reset=True)
    created = breakdown.get("POST pods", 0) if pool is None else len(seen)
    print(
        f"{runs} FlowRuns {'on a pool' if pool else 'pod-per-run'}: {seconds:.1f} s, "
        f"{created} pods created, {count} operator API requests {breakdown}",
        flush=True,
    )
    return ModeResult(runs, seconds, created, count, breakdown)


def measure(runs: int, samples: int) -> PoolsResult:
    result = PoolsResult(runs=runs, scale_from_zero_s=[])
    with tempfile.TemporaryDirectory(prefix="ergon-bench-pools-") as home:
        env = TestClusterEnvironment(Path(home))
        bench = Bench(env)
        try:
            assert env.store_url is not None
            env.apply(worker_pool(delay=1))
            bench.wait_until(lambda: bench.replicas() == 0, 60, "the idle pool at zero")
            for i in range(samples):
                bench.wait_until(
                    lambda: not bench.pod_names(f"ergon.dev/workerpool={POOL}"),
                    120,
                    "no worker pod left",
                )
                name = f"cold-{i}"
                started = time.monotonic()
                bench.post(bench.runs_path, order(name, i, pool=POOL))
                uid = bench.uid(name)
                seconds = first_step_seconds(env.store_url, uid, started, 120)
                result.scale_from_zero_s.append(seconds)
                print(f"scale from zero: applied -> first step in {seconds:.2f} s", flush=True)
                bench.wait_until(lambda: bench.replicas() == 0, 120, "back to zero")
            env.apply(worker_pool(delay=30))
            result.pool = run_batch(bench, runs, pool=POOL, selector=f"ergon.dev/workerpool={POOL}")
            result.pod_per_run = run_batch(bench, runs, pool=None, selector="ergon.dev/flowrun")
        finally:
            env.close()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pools")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="50 runs, 2 samples")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    runs, samples = (50, 2) if args.quick else (args.runs, args.samples)
    result = measure(runs, samples)
    assert result.pool is not None and result.pod_per_run is not None
    speedup = result.pod_per_run.seconds / result.pool.seconds
    cold = result.scale_from_zero_s
    print(
        f"pool {result.pool.seconds:.1f} s vs pod-per-run {result.pod_per_run.seconds:.1f} s: "
        f"{speedup:.1f}x faster; pods {result.pool.pods_created} vs "
        f"{result.pod_per_run.pods_created}; API requests {result.pool.api_requests} vs "
        f"{result.pod_per_run.api_requests}; scale from zero p50 {percentile(cold, 50):.2f} s, "
        f"max {max(cold):.2f} s"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(result), indent=1))


if __name__ == "__main__":
    main()
