"""The end-to-end environment: one cluster, chart and operator for the whole session."""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.environment import Environment, open_environment

_names = itertools.count(1)


@pytest.fixture(scope="session")
def k8s() -> Iterator[Environment]:
    with tempfile.TemporaryDirectory(prefix="ergon-e2e-") as home:
        environment = open_environment(Path(home))
        try:
            yield environment
        finally:
            environment.close()


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A FlowRun name unique in the session, readable in kubectl output."""
    base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
    base = base.removeprefix("test-").strip("-")[:40].strip("-")
    return f"{base}-{next(_names)}"
