"""`python -m benchmarks` (`make bench`): run every workload, Ergon beside DBOS, Temporal and the
floor, and write benchmarks/RESULTS.md and benchmarks/results.png.

`--quick` runs small sizes and `--only NAME[,NAME]` a subset; such partial runs write to
benchmarks/.partial/ so that the committed RESULTS.md always comes from one full run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import time
from pathlib import Path

from benchmarks import chart, machine, peer, suite
from benchmarks import temporal as temporal_runs
from benchmarks.report import Section

HERE = Path(__file__).resolve().parent
WORKLOADS = ("sequential", "queue", "resume", "fanout", "scaling", "operator")


async def run(
    args: argparse.Namespace, only: set[str]
) -> tuple[list[Section], str | None, str | None]:
    """The sections of the run, DBOS's version and Temporal's (None when not measured)."""
    settings = suite.Settings.quick() if args.quick else suite.Settings()
    settings.stores = tuple(args.stores.split(","))
    dbos: peer.Peer | None = None
    temporal: peer.Peer | None = None
    missing = None
    missing_temporal = None
    peered = only & {"sequential", "queue", "resume", "fanout"}
    if peered and not (args.no_peer or args.no_dbos):
        try:
            dbos = peer.ensure()
        except peer.PeerUnavailable as exc:
            missing = str(exc)
            print(f"DBOS is not available: {exc}", file=sys.stderr)
    if peered and not (args.no_peer or args.no_temporal):
        try:
            temporal = temporal_runs.ensure()
        except peer.PeerUnavailable as exc:
            missing_temporal = str(exc)
            print(f"Temporal is not available: {exc}", file=sys.stderr)
    sections = []
    steps = {
        "sequential": suite.sequential,
        "queue": suite.queue,
        "resume": suite.resumes,
        "fanout": suite.fan_out,
        "scaling": suite.scaling_curves,
    }
    for name, workload in steps.items():
        if name in only:
            started = time.monotonic()
            sections.append(await workload(settings, dbos, temporal))
            print(f"{name}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    if "operator" in only:
        started = time.monotonic()
        sequential, burst = (3, 10) if args.quick else (20, 100)
        sections.append(await asyncio.to_thread(suite.operator_section, sequential, burst))
        sections.append(await asyncio.to_thread(suite.operator_scale_section, args.quick))
        print(f"operator: {time.monotonic() - started:.0f} s", file=sys.stderr)
    version = dbos.version if dbos else None
    temporal_version = temporal_runs.describe(temporal) if temporal else None
    notes = await suite.settings_note()
    sections.append(Section("Server settings in this run", [f"- {note}" for note in notes]))
    if missing:
        why = [f"The peer could not be set up: {missing}"]
        sections.insert(0, Section("DBOS not measured", why))
    if missing_temporal:
        why = [f"The peer could not be set up: {missing_temporal}"]
        sections.insert(0, Section("Temporal not measured", why))
    return sections, version, temporal_version


def render(
    sections: list[Section],
    dbos_version: str | None,
    args: argparse.Namespace,
    temporal_version: str | None = None,
) -> str:
    info = machine.describe()
    kind = "quick run (small sizes)" if args.quick else "full run"
    lines = [
        "# Benchmark results",
        "",
        f"One {kind} of `python -m benchmarks` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: "
        f"{info['cpu']}, Python {info['python']}, SQLite {info['sqlite']}, {info['os']}. "
        f"Peers: DBOS Transact {dbos_version or '(not measured)'}, in its own virtual environment "
        "(`benchmarks/.peers/dbos`), as subprocesses; "
        f"{temporal_version or 'Temporal (not measured)'}, likewise "
        "(`benchmarks/.peers/temporal`), "
        "against the Temporal CLI's dev server on a SQLite file, started and stopped by the run. "
        "Every system ran on the same machine and "
        "database servers in this one run, each workload in a database of its own. "
        "How to rerun and read these: `benchmarks/README.md`. Chart: `results.png`.",
        "",
        "Ergon's stores at their defaults: SQLite in WAL mode with `synchronous=FULL` (a returned "
        "checkpoint survives power loss), Postgres and Redis as configured on the server (below). "
        "DBOS at its defaults except the queue polling interval (workload 2); Temporal at its "
        "defaults except the worker slots of workload 2 (as many as Ergon's and DBOS's).",
        "",
    ]
    ratios = [r for s in sections for r in s.ratios if r.target is not None]
    if ratios:
        lines += ["## Targets", ""]
        lines += [
            f"- {'met' if r.met else '**missed**'}: {r.label} = {r.value:.2f}x "
            f"(target {'≤' if r.lower_is_better else '≥'} {r.target or 0:g}x)"
            for r in ratios
        ]
        lines.append("")
    return "\n".join(lines) + "\n" + "\n".join(s.markdown() for s in sections)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {WORKLOADS}")
    parser.add_argument("--stores", default="sqlite,postgres,redis", help="Ergon's stores")
    parser.add_argument("--no-peer", action="store_true", help="skip both peers")
    parser.add_argument("--no-dbos", action="store_true", help="skip DBOS")
    parser.add_argument("--no-temporal", action="store_true", help="skip Temporal")
    parser.add_argument("--output", type=Path, default=None, help="where RESULTS.md goes")
    args = parser.parse_args()
    only = set(args.only.split(",")) if args.only else set(WORKLOADS)
    unknown = only - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workload(s) {sorted(unknown)}; choose from {WORKLOADS}")
    partial = (
        args.quick or only != set(WORKLOADS) or args.no_peer or args.no_dbos or args.no_temporal
    )
    output = args.output or (HERE / ".partial" / "RESULTS.md" if partial else HERE / "RESULTS.md")
    output.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    sections, version, temporal_version = asyncio.run(run(args, only))
    text = render(sections, version, args, temporal_version)
    output.write_text(text)
    ratios = [r for s in sections for r in s.ratios]
    picture = output.with_name("results.png")
    peers = ", ".join(
        p for p in (f"DBOS {version}" if version else "", temporal_version or "") if p
    )
    title = f"Ergon vs {peers} and the hardware floor" if peers else "Ergon and the hardware floor"
    curves = [c for s in sections for c in s.curves]
    chart.render(ratios, picture, title, curves)
    print(text)
    print(f"wrote {output} and {picture} in {time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
