"""Keeping secrets out of what Ergon prints: store URLs carry passwords, and driver errors may
quote a whole DSN.

`redact_url` hides the password of one URL; `redact` does it for every URL (and every
`password=…` pair) inside arbitrary text, such as an exception message or a log line. Anything
that prints a URL, an exception or a log record goes through one of them.
"""

from __future__ import annotations

import logging
import re

MASK = "***"

# Query parameters (and key=value pairs in free text) whose value is a secret.
_SECRET_NAME = r"[A-Za-z_]*(?:password|passwd|pwd|secret|token|api_?key)"
_SECRET_PARAM = re.compile(rf"(?i)(?<![A-Za-z0-9_])({_SECRET_NAME})=([^&#\s'\"]*)")
# scheme://authority[/path][?query][#fragment], up to whitespace or a quote.
_URL = re.compile(r"(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def redact_url(url: str) -> str:
    """`url` with its password (`user:password@` → `user:***@`) and password-like query
    parameters (`password=`, `sslpassword=`, `token=`, …) replaced by `***`; everything else is
    kept as written. Never raises: text that is not a URL comes back unchanged."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return _SECRET_PARAM.sub(_mask_param, url)
    # The userinfo ends at the last "@" before the query: a password is not always
    # percent-encoded, so one holding "/" or "@" is still found (and a path with "@" in it is
    # at worst over-redacted).
    end = min((i for i in (rest.find("?"), rest.find("#")) if i != -1), default=len(rest))
    at = rest.rfind("@", 0, end)
    head, tail = rest[:end], rest[end:]
    if at != -1:
        user, colon, password = rest[:at].partition(":")
        if colon and password:
            head = f"{user}:{MASK}{rest[at:end]}"
    return f"{scheme}://{head}{_SECRET_PARAM.sub(_mask_param, tail)}"


def redact(text: str) -> str:
    """`text` with every URL in it passed through `redact_url`, and every `password=…`-like pair
    outside URLs masked too (libpq-style DSNs, driver messages)."""
    pieces: list[str] = []
    last = 0
    for match in _URL.finditer(text):
        pieces.append(_SECRET_PARAM.sub(_mask_param, text[last : match.start()]))
        pieces.append(redact_url(match.group(0)))
        last = match.end()
    pieces.append(_SECRET_PARAM.sub(_mask_param, text[last:]))
    return "".join(pieces)


def _mask_param(match: re.Match[str]) -> str:
    return f"{match.group(1)}={MASK}" if match.group(2) else match.group(0)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose output (message, arguments and traceback) has secrets redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
