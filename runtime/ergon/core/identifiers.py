"""Flow ids, signal names and signal ids: what every store can hold, checked at the door.

An identifier is a non-empty string of at most `MAX_LENGTH` characters, without NUL (Postgres
`text` refuses it) and without surrogate code points (they have no UTF-8 encoding, so no store
can write them). Checking at the door gives the same answer on every backend; a value a store
refused deep inside an execution would look like a store outage and be retried forever.

Lookups (`Client.status`, `wait`, `cancel`, `steps`) check only what a store cannot hold, not the
length, so a flow recorded before the limit existed stays reachable.
"""

from __future__ import annotations

from uuid import UUID

from ergon.core.errors import IdentifierError

MAX_LENGTH = 255
SHOWN = 64  # characters of a refused value an error message shows


def check_flow_id(value: str | UUID, *, what: str = "flow id") -> str:
    """`value` as a str if it may name a new flow, else `ergon.IdentifierError` (a ValueError)."""
    return _checked(str(value) if isinstance(value, UUID) else value, what, MAX_LENGTH)


def check_lookup_id(value: str | UUID, *, what: str = "flow id") -> str:
    """`value` as a str if a store can look it up (any length)."""
    return _checked(str(value) if isinstance(value, UUID) else value, what, None)


def check_signal_name(value: str) -> str:
    return _checked(value, "signal name", MAX_LENGTH)


def check_signal_id(value: str | None) -> str | None:
    return None if value is None else _checked(value, "signal id", MAX_LENGTH)


def _checked(value: object, what: str, max_length: int | None) -> str:
    if not isinstance(value, str):
        raise TypeError(f"a {what} must be a str, got {type(value).__qualname__}")
    if not value:
        raise IdentifierError(f"a {what} cannot be empty")
    if max_length is not None and len(value) > max_length:
        raise IdentifierError(
            f"a {what} has at most {max_length} characters; this one has {len(value)}: "
            f"{shown(value)}"
        )
    if "\x00" in value:
        raise IdentifierError(
            f"a {what} cannot contain NUL (\\x00, at position {value.index(chr(0))}): "
            f"{shown(value)}"
        )
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise IdentifierError(
                f"a {what} cannot contain an unpaired surrogate (U+{ord(value[exc.start]):04X} "
                f"at position {exc.start}): {shown(value)}"
            ) from None
    return value


def shown(value: str) -> str:
    """`value` for an error message: repr-escaped, cut to its first `SHOWN` characters."""
    if len(value) <= SHOWN:
        return repr(value)
    return f"{value[:SHOWN]!r}... ({len(value)} characters)"
