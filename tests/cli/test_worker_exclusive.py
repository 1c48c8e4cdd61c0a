"""`ergon worker --version V --exclusive`: a worker pool of one version; `--exclusive` alone is
a usage error."""

from __future__ import annotations

from pathlib import Path

from tests.cli.support import assert_one_line_error, ergon


def test_exclusive_without_a_version_is_a_one_line_usage_error(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    result = ergon(
        "worker", "--import", "tests.cli.flows", "--exclusive", "--store", f"sqlite:///{db}"
    )
    assert_one_line_error(result, "--exclusive needs --version")
    assert not db.exists()  # refused before anything was opened


def test_exclusive_is_documented_in_the_help() -> None:
    result = ergon("worker", "--help")
    assert result.returncode == 0, result.stderr
    assert "--exclusive" in result.stdout
    assert "never unversioned" in " ".join(result.stdout.split())
