"""Workload 5: the operator on the test cluster.

FlowRun apply -> Succeeded latency, one at a time (p50/p95), and 100 FlowRuns applied at once
until all Succeeded, with the operator process's peak RSS (VmHWM). The cluster, chart and operator
are set up exactly as the end-to-end suite does (tests/e2e/environment.py): the chart is
installed with helm, and the operator runs with the environment the chart gives it.

`python -m benchmarks.operator [--sequential N] [--burst N]`
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

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


def flowrun(name: str, index: int) -> dict[str, object]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {
            "flow": "examples.orders:OrderFlow",
            "input": {"order_id": str(index), "amount": 1},
        },
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


if __name__ == "__main__":
    main()
