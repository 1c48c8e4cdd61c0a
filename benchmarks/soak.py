"""The operator soak (`make soak`, issue 14): FlowRuns under random faults, then every run checked.

On the test cluster, with a throwaway Postgres this process starts (so it can take it away):
`--runs` FlowRuns (default 200) are applied in waves over the first 70 % of `--minutes` (default
20), a mix of long steps (`examples.batch`), durable timers (`examples.settlement`), signals
(`examples.approval`, by spec patch or Signal resource, some sent before the FlowRun exists) and
cancellations. Meanwhile, until 80 % of the time: random operator SIGKILLs (restarted
after 0-5 s), random force deletions of running worker pods, and one Postgres outage (the server
stopped for `--outage-seconds`, default 30, and restarted on the same port). Then it waits for
every run to settle and checks each one's final phase and result.

It prints the figures (runs, kills, pod deletions, outages, stuck runs, wrong outcomes, time) and
writes them to benchmarks/SOAK.md; exits 1 when any run is stuck or wrong.

`python -m benchmarks.soak [--minutes 20] [--runs 200] [--seed N] [--quick]`
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.e2e.environment import TestClusterEnvironment
from tests.support.databases import fresh_schema, postgres_database
from tests.support.services import Server, start_postgres

HERE = Path(__file__).resolve().parent
TERMINAL = {"Succeeded", "Failed", "Cancelled"}
RETRY = {"maxAttempts": 30, "backoffSeconds": 1, "maxBackoffSeconds": 10}


@dataclass
class Run:
    """One FlowRun of the soak and what it must end as."""

    name: str
    kind: str  # batch | timer | signal | early-signal | cancel
    manifest: dict[str, Any]
    expected_phase: str
    expected_result: Any
    apply_at: float
    signal_by: str = ""
    signal_sent: bool = False
    cancel_at: float | None = None
    cancelled: bool = False
    applied: bool = False


@dataclass
class Figures:
    runs: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    operator_kills: int = 0
    pod_deletions: int = 0
    outages: int = 0
    outage_seconds: float = 0.0
    signals: int = 0
    cancels: int = 0
    stuck: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def brief(self) -> str:
        return (
            f"kills {self.operator_kills}, pod deletions {self.pod_deletions}, "
            f"outages {self.outages}, signals {self.signals}, cancels {self.cancels}"
        )


def flowrun(name: str, flow: str, input: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "FlowRun",
        "metadata": {"name": name},
        "spec": {"flow": flow, "input": input, "retry": RETRY},
    }


def plan(runs: int, apply_window: float, rng: random.Random) -> list[Run]:
    """The soak's runs: a fixed mix, apply times spread over `apply_window` seconds."""
    out = []
    for i in range(runs):
        at = rng.uniform(0, apply_window)
        pick = i % 10
        name = f"soak-{i:03d}"
        input: dict[str, Any]
        if pick < 4:
            items = [f"i{j}" for j in range(rng.randint(3, 8))]
            input = {"items": items, "seconds_per_item": rng.uniform(1, 5)}
            manifest = flowrun(name, "examples.batch:BatchFlow", input)
            result = {"processed": len(items), "last": f"{items[-1]}:ok"}
            out.append(Run(name, "batch", manifest, "Succeeded", result, at))
        elif pick < 6:
            input = {"batch_id": str(i), "delay_seconds": rng.uniform(5, 60)}
            manifest = flowrun(name, "examples.settlement:SettlementFlow", input)
            out.append(
                Run(name, "timer", manifest, "Succeeded", f"batch {i}: settled 3 payments", at)
            )
        elif pick < 9:
            kind = "early-signal" if pick == 8 else "signal"
            manifest = flowrun(name, "examples.approval:ApprovalFlow", {"request_id": str(i)})
            approved = f"request {i} approved by soak-{i}"
            run = Run(name, kind, manifest, "Succeeded", approved, at, signal_by=f"soak-{i}")
            out.append(run)
        else:
            input = {"items": [f"c{j}" for j in range(10)], "seconds_per_item": 5}
            manifest = flowrun(name, "examples.batch:BatchFlow", input)
            run = Run(name, "cancel", manifest, "Cancelled", None, at)
            run.cancel_at = at + rng.uniform(5, 40)
            out.append(run)
    return sorted(out, key=lambda r: r.apply_at)


def signal_resource(run: Run) -> dict[str, Any]:
    return {
        "apiVersion": "ergon.dev/v1alpha1",
        "kind": "Signal",
        "metadata": {"name": f"{run.name}-approval"},
        "spec": {
            "flowRun": run.name,
            "name": "approval",
            "payload": {"approved": True, "by": run.signal_by},
        },
    }


class Soak:
    def __init__(self, env: TestClusterEnvironment, server: Server, args: argparse.Namespace):
        self.env = env
        self.server = server
        self.args = args
        self.rng = random.Random(args.seed)
        self.figures = Figures()

    def kubectl(self, *args: str, input: str | None = None) -> str:
        return self.env.kubectl(*args, input=input, check=False, timeout=120).stdout

    def flowruns(self) -> dict[str, dict[str, Any]]:
        out = self.env.kubectl("get", "flowruns", "-o", "json", check=False, timeout=120)
        if out.returncode != 0:
            return {}
        items = json.loads(out.stdout)["items"]
        return {i["metadata"]["name"]: dict(i.get("status") or {}) for i in items}

    def running_pods(self) -> list[str]:
        out = self.env.kubectl(
            "get",
            "pods",
            "-l",
            "ergon.dev/flowrun",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name",
            check=False,
        )
        return [line.split("/", 1)[1] for line in out.stdout.split() if "/" in line]

    def step_runs(
        self, runs: list[Run], elapsed: float, statuses: dict[str, dict[str, Any]]
    ) -> None:
        """Apply due runs, send due signals and cancels."""
        due = [r for r in runs if not r.applied and r.apply_at <= elapsed]
        for run in due:
            if run.kind == "early-signal":
                self.kubectl("apply", "-f", "-", input=json.dumps(signal_resource(run)))
                run.signal_sent = True
                self.figures.signals += 1
        if due:
            text = "\n---\n".join(json.dumps(r.manifest) for r in due)
            self.kubectl("apply", "-f", "-", input=text)
            for run in due:
                run.applied = True
        for run in runs:
            status = statuses.get(run.name) or {}
            if run.kind == "signal" and not run.signal_sent and status.get("phase") == "Suspended":
                if self.rng.random() < 0.5:
                    patch = {
                        "spec": {"signals": {"approval": {"approved": True, "by": run.signal_by}}}
                    }
                    self.kubectl(
                        "patch", "flowrun", run.name, "--type", "merge", "-p", json.dumps(patch)
                    )
                else:
                    self.kubectl("apply", "-f", "-", input=json.dumps(signal_resource(run)))
                run.signal_sent = True
                self.figures.signals += 1
            if (
                run.cancel_at is not None
                and not run.cancelled
                and run.applied
                and run.cancel_at <= elapsed
            ):
                self.kubectl(
                    "patch",
                    "flowrun",
                    run.name,
                    "--type",
                    "merge",
                    "-p",
                    '{"spec":{"cancel":true}}',
                )
                run.cancelled = True
                self.figures.cancels += 1

    def kill_operator(self) -> None:
        self.env.restart_operator(while_down=lambda: time.sleep(self.rng.uniform(0, 5)))
        self.figures.operator_kills += 1

    def delete_pod(self) -> None:
        pods = self.running_pods()
        if pods:
            pod = self.rng.choice(pods)
            self.kubectl("delete", "pod", pod, "--grace-period=0", "--force", "--wait=false")
            self.figures.pod_deletions += 1

    def outage(self) -> None:
        """Postgres down (fast shutdown: connections dropped), then back on the same port."""
        started = time.monotonic()
        stop_fast(self.server)
        time.sleep(self.args.outage_seconds)
        self.server.restart()
        self.figures.outages += 1
        self.figures.outage_seconds += time.monotonic() - started

    def run(self) -> Figures:
        total = self.args.minutes * 60
        apply_window = total * 0.7
        chaos_until = total * 0.8
        runs = plan(self.args.runs, apply_window, self.rng)
        self.figures.runs = len(runs)
        for r in runs:
            self.figures.kinds[r.kind] = self.figures.kinds.get(r.kind, 0) + 1
        outage_at = total * self.rng.uniform(0.3, 0.5)
        next_kill = self.rng.uniform(20, 60)
        next_delete = self.rng.uniform(5, 20)
        started = time.monotonic()
        statuses: dict[str, dict[str, Any]] = {}
        next_report = 0.0
        while True:
            elapsed = time.monotonic() - started
            self.step_runs(runs, elapsed, statuses)
            if elapsed < chaos_until:
                if self.figures.outages == 0 and elapsed >= outage_at:
                    log(f"{elapsed:.0f} s: Postgres outage ({self.args.outage_seconds:.0f} s)")
                    self.outage()
                elif elapsed >= next_kill:
                    log(f"{elapsed:.0f} s: operator SIGKILL")
                    self.kill_operator()
                    next_kill = elapsed + self.rng.uniform(30, 90)
                elif elapsed >= next_delete:
                    self.delete_pod()
                    next_delete = elapsed + self.rng.uniform(5, 20)
            statuses = self.flowruns()
            done = sum(1 for r in runs if (statuses.get(r.name) or {}).get("phase") in TERMINAL)
            if elapsed >= total and (done == len(runs) or elapsed >= total + self.args.grace):
                break
            if elapsed >= next_report:
                next_report = elapsed + 30
                log(f"{elapsed:.0f} s: {done}/{len(runs)} runs ended; {self.figures.brief()}")
            time.sleep(2)
        self.figures.seconds = time.monotonic() - started
        self.check(runs, statuses)
        return self.figures

    def check(self, runs: list[Run], statuses: dict[str, dict[str, Any]]) -> None:
        for run in runs:
            status = statuses.get(run.name) or {}
            phase = status.get("phase")
            if phase not in TERMINAL:
                self.figures.stuck.append(
                    f"{run.name} ({run.kind}): {phase}, {status.get('conditions')}"
                )
            elif phase != run.expected_phase:
                error = (status.get("error") or {}).get("message", "")[:200]
                self.figures.wrong.append(
                    f"{run.name} ({run.kind}): {phase}, expected {run.expected_phase}: {error}"
                )
            elif run.expected_result is not None and status.get("result") != run.expected_result:
                self.figures.wrong.append(
                    f"{run.name} ({run.kind}): result {status.get('result')!r}"
                )


def stop_fast(server: Server) -> None:
    """`pg_ctl stop -m fast`: open connections are dropped at once (a SIGTERM would wait for
    every client to leave, and `runuser` does not pass SIGINT on)."""
    command = server.start_command
    binary = next(c for c in command if c.endswith("/postgres"))
    prefix = command[: command.index(binary)]
    pg_ctl = str(Path(binary).with_name("pg_ctl"))
    data = command[command.index("-D") + 1]
    subprocess.run([*prefix, pg_ctl, "-D", data, "stop", "-m", "fast", "-w"], check=True)
    server.process.wait(timeout=60)


def ready_database(server: str, timeout: float = 60) -> str:
    """A database of our own on `server`, once it accepts connections (the port opens first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return postgres_database(server)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def log(message: str) -> None:
    print(f"[soak {dt.datetime.now(dt.UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def report(figures: Figures, args: argparse.Namespace) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(figures.kinds.items()))
    lines = [
        "# Operator soak",
        "",
        f"`python -m benchmarks.soak --minutes {args.minutes:g} --runs {args.runs} "
        f"--seed {args.seed}` on the test cluster, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC.",
        "",
        "| figure | value |",
        "| --- | ---: |",
        f"| FlowRuns | {figures.runs} ({kinds}) |",
        f"| operator SIGKILLs (restarted) | {figures.operator_kills} |",
        f"| worker pods force-deleted | {figures.pod_deletions} |",
        f"| Postgres outages | {figures.outages} ({figures.outage_seconds:.0f} s down in all) |",
        f"| signals sent / cancels | {figures.signals} / {figures.cancels} |",
        f"| stuck runs (not terminal at the end) | {len(figures.stuck)} |",
        f"| runs in a wrong final phase or result | {len(figures.wrong)} |",
        f"| time | {figures.seconds / 60:.1f} min |",
    ]
    for title, items in (("Stuck", figures.stuck), ("Wrong", figures.wrong)):
        if items:
            lines += ["", f"## {title}", "", *(f"- {item}" for item in items[:50])]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--minutes", type=float, default=20)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--outage-seconds", type=float, default=30)
    parser.add_argument("--grace", type=float, default=300, help="extra seconds to settle")
    parser.add_argument("--quick", action="store_true", help="3 minutes, 30 runs, 10 s outage")
    parser.add_argument("--out", type=Path, default=HERE / "SOAK.md")
    args = parser.parse_args()
    if args.quick:
        args.minutes, args.runs, args.outage_seconds, args.grace = 3, 30, 10, 120
    server = start_postgres()
    try:
        store_url = f"{ready_database(server.url)}?schema={fresh_schema()}"
        with tempfile.TemporaryDirectory(prefix="ergon-soak-") as home:
            env = TestClusterEnvironment(Path(home), store_url=store_url)
            try:
                figures = Soak(env, server, args).run()
            finally:
                env.close()
    finally:
        server.destroy()
    text = report(figures, args)
    print(text)
    if not args.quick:
        args.out.write_text(text)
    sys.exit(1 if figures.stuck or figures.wrong else 0)


if __name__ == "__main__":
    main()
