"""`python -m benchmarks`: run the benchmarks and write benchmarks/RESULTS.md."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
from pathlib import Path

from benchmarks import machine, steps

HERE = Path(__file__).resolve().parent
# The same servers as the tests; each run uses a database / key prefix of its own.
POSTGRES_DSN = os.environ.get(
    "ERGON_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("ERGON_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def run(n: int, rounds: int) -> list[steps.StepResult]:
    return [
        await steps.sqlite(n, rounds, "full"),
        await steps.sqlite(n, rounds, "normal"),
        await steps.postgres(n, rounds, POSTGRES_DSN),
        await steps.redis(n, rounds, REDIS_URL),
        await steps.memory(n, rounds),
    ]


def render(results: list[steps.StepResult], n: int, rounds: int) -> str:
    info = machine.describe()
    lines = [
        "# Benchmark results",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {info['cpu']}, "
        f"Python {info['python']}, SQLite {info['sqlite']}, {info['os']}.",
        "",
        f"## Workload 1: one flow of {n} sequential trivial steps (median of {rounds} rounds)",
        "",
        "Per-step cost of Ergon beside the floor: the raw cost of one durable write per step at "
        "the same durability setting, measured in the same run, rounds interleaved.",
        "",
        "| store | Ergon µs/step | floor µs/write | floor | Ergon / floor |",
        "|---|---:|---:|---|---:|",
    ]
    for r in results:
        floor = f"{r.floor_us:.1f}" if r.floor_us else "-"
        ratio = f"{r.ratio:.2f}x" if r.ratio else "-"
        lines.append(f"| {r.store} | {r.ergon_us:.1f} | {floor} | {r.floor} | {ratio} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--steps", type=int, default=1000, help="steps in the sequential flow")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    results = asyncio.run(run(args.steps, args.rounds))
    text = render(results, args.steps, args.rounds)
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
