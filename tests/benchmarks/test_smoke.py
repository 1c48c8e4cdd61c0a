"""The benchmark harness cannot rot: the Ergon side of every workload at tiny sizes, on SQLite,
rendered into RESULTS.md text and a chart. DBOS is not installed here (peer=None)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from benchmarks import chart, suite
from benchmarks.__main__ import render

pytestmark = pytest.mark.integration  # worker processes


async def test_every_workload_runs_and_renders(tmp_path: Path) -> None:
    settings = suite.Settings(
        steps=20, rounds=1, peer_rounds=1, queue_flows=12, workers=2, concurrency=4,
        resume_steps=20, fan_flows=4, fan_width=3, stores=("sqlite",),
    )  # fmt: skip
    sections = [
        await suite.sequential(settings, None),
        await suite.queue(settings, None),
        await suite.resumes(settings, None),
        await suite.fan_out(settings, None),
    ]
    text = render(sections, None, argparse.Namespace(quick=True))
    for title in ("Workload 1", "Workload 2", "Workload 3", "Workload 4", "## Targets"):
        assert title in text
    assert "| Ergon | SQLite |" in text
    ratios = [r for s in sections for r in s.ratios]
    assert any(r.lower_is_better for r in ratios)
    picture = tmp_path / "results.png"
    chart.render(ratios, picture, "smoke")
    assert picture.read_bytes().startswith(b"\x89PNG")
