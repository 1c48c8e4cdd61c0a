"""`redact_url` and `redact`: passwords never reach a message."""

from __future__ import annotations

import logging

import pytest

from ergon.core.redaction import RedactingFormatter, redact, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://user:S3cret@db:5432/app", "postgresql://user:***@db:5432/app"),
        ("redis://:S3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("postgresql://user:p@ss/w:rd@db/app", "postgresql://user:***@db/app"),
        ("postgresql://u:S3cret@h1:5432,h2:5433/db", "postgresql://u:***@h1:5432,h2:5433/db"),
        (
            "postgresql://user@db/app?sslmode=require&sslpassword=S3cret&password=S3cret",
            "postgresql://user@db/app?sslmode=require&sslpassword=***&password=***",
        ),
        ("https://api/x?token=S3cret&page=2", "https://api/x?token=***&page=2"),
        ("postgresql://user@db/app", "postgresql://user@db/app"),
        ("sqlite:////data/team@x/ergon.db", "sqlite:////data/team@x/ergon.db"),
        ("memory://", "memory://"),
        ("not a url", "not a url"),
        ("", ""),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_finds_urls_and_password_pairs_in_text() -> None:
    text = (
        "no flow with id 'x' in postgresql://postgres:S3cret@10.0.0.1:5432/postgres. "
        "Also 'redis://:S3cret@cache/0' and (host=db password=S3cret dbname=app)"
    )
    redacted = redact(text)
    assert "S3cret" not in redacted
    assert "postgresql://postgres:***@10.0.0.1:5432/postgres." in redacted
    assert "'redis://:***@cache/0'" in redacted
    assert "password=*** dbname=app" in redacted
    assert redact("[type=value_error] plain text") == "[type=value_error] plain text"


def test_log_records_and_their_tracebacks_are_redacted() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ConnectionError("could not connect to postgresql://app:S3cret@db/app")
    except ConnectionError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "store %s down", ("redis://:S3cret@r/0",), None
        )
        record.exc_info = sys.exc_info()
    text = formatter.format(record)
    assert "S3cret" not in text
    assert "redis://:***@r/0" in text and "postgresql://app:***@db/app" in text
