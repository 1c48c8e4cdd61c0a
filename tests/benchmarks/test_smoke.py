"""The benchmark harness cannot rot: the Ergon side of every workload at tiny sizes, on SQLite,
rendered into RESULTS.md text and a chart. DBOS is not installed here (peer=None); Temporal is
stood in for by canned figures (its environment and dev server are the benchmark run's own), so
its rows and ratios go through the same wiring as a real run's."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import chart, peer, suite
from benchmarks import temporal as temporal_runs
from benchmarks.__main__ import render
from benchmarks.resume import Resume
from benchmarks.stats import Rate

pytestmark = pytest.mark.integration  # worker processes


def _canned_temporal(monkeypatch: pytest.MonkeyPatch) -> peer.Peer:
    """A Temporal peer whose measurements are fixed figures instead of subprocesses."""
    fake = peer.Peer(Path("/nonexistent/python"), "1.0", spec=peer.TEMPORAL)
    fake.details["server"] = "1.0"
    name = temporal_runs.describe(fake)
    monkeypatch.setattr(temporal_runs, "sequential", lambda _p, **_: (40_000.0, 3_000.0))
    monkeypatch.setattr(
        temporal_runs, "queue", lambda _p, *, flows, **_: Rate(name, temporal_runs.STORE, flows, 9)
    )
    monkeypatch.setattr(
        temporal_runs, "resume", lambda _p, **_: Resume(name, temporal_runs.STORE, 200.0, 250.0)
    )
    monkeypatch.setattr(
        temporal_runs, "fanout", lambda _p, *, flows, **_: Rate(name, temporal_runs.STORE, flows, 9)
    )
    return fake


async def test_every_workload_runs_and_renders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temporal = _canned_temporal(monkeypatch)
    settings = suite.Settings(
        steps=20, rounds=1, peer_rounds=1, queue_flows=12, workers=2, concurrency=4,
        resume_steps=20, fan_flows=4, fan_width=3, stores=("sqlite",),
    )  # fmt: skip
    sections = [
        await suite.sequential(settings, None, temporal),
        await suite.queue(settings, None, temporal),
        await suite.resumes(settings, None, temporal),
        await suite.fan_out(settings, None, temporal),
    ]
    text = render(sections, None, argparse.Namespace(quick=True), temporal_runs.describe(temporal))
    for title in ("Workload 1", "Workload 2", "Workload 3", "Workload 4", "## Targets"):
        assert title in text
    assert "| Ergon | SQLite |" in text
    assert "Temporal 1.0 (server 1.0)" in text
    ratios = [r for s in sections for r in s.ratios]
    temporal_ratios = {r.label for r in ratios if "Temporal" in r.label}
    assert temporal_ratios == {
        "W1 SQLite: Temporal activity ÷ Ergon per step",
        "W1 SQLite: Temporal local activity ÷ Ergon per step",
        "W2 SQLite: Ergon ÷ Temporal flows/s",
        "W3 SQLite: Temporal ÷ Ergon replay",
        "W4 SQLite: Ergon ÷ Temporal flows/s",
    }
    assert any(r.lower_is_better for r in ratios)
    picture = tmp_path / "results.png"
    chart.render(ratios, picture, "smoke")
    assert picture.read_bytes().startswith(b"\x89PNG")
