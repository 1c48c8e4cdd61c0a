"""The end-to-end environment: one cluster, chart and operator for the whole session.

The session's environment is audited (see environment.py): tests/e2e/test_zz_security.py reads,
after every other e2e test of the session, the API requests the operator made and every output
the session kept. Those tests are moved after the other e2e tests whatever the order pytest
collected them in, and they learn from `e2e_session` whether the whole e2e suite ran (no file
left out, nothing deselected), since only then may they say a granted verb is never used.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.environment import Environment, open_environment

_names = itertools.count(1)
E2E_DIR = Path(__file__).resolve().parent
LAST_PREFIX = "test_zz_"  # modules whose tests run after every other e2e test


@dataclass
class E2ESession:
    """What the session ran of the e2e suite."""

    collected: set[str] = field(default_factory=set)  # e2e module file names
    deselected: int = 0
    failed: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every e2e module collected and no e2e test deselected (`-k`, `-m`, `--lf`, ...)."""
        modules = {p.name for p in E2E_DIR.glob("test_*.py")}
        return self.deselected == 0 and modules <= self.collected


SESSION = E2ESession()  # per process (each pytest-xdist worker has its own, and its cluster)


def _in_e2e(item: pytest.Item) -> bool:
    return Path(str(item.path)).resolve().parent == E2E_DIR


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The test_zz_ modules' tests after every other e2e test (in their own order)."""
    last = [i for i in items if _in_e2e(i) and Path(str(i.path)).name.startswith(LAST_PREFIX)]
    if last:
        rest = [i for i in items if i not in last]
        after = max((n for n, i in enumerate(rest) if _in_e2e(i)), default=len(rest) - 1) + 1
        items[:] = rest[:after] + last + rest[after:]


def pytest_deselected(items: list[pytest.Item]) -> None:
    SESSION.deselected += sum(1 for item in items if _in_e2e(item))


def pytest_collection_finish(session: pytest.Session) -> None:
    SESSION.collected = {Path(str(item.path)).name for item in session.items if _in_e2e(item)}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    module = report.nodeid.split("::")[0]
    if report.failed and module.startswith("tests/e2e/") and LAST_PREFIX not in module:
        SESSION.failed.append(report.nodeid)


@pytest.fixture(scope="session")
def e2e_session() -> E2ESession:
    return SESSION


@pytest.fixture(scope="session")
def k8s() -> Iterator[Environment]:
    with tempfile.TemporaryDirectory(prefix="ergon-e2e-") as home:
        environment = open_environment(Path(home), audited=True)
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
