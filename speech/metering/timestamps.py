"""The ledger's clock and its timestamp format.

Timestamps are ISO-8601 UTC text with millisecond precision and a ``Z`` in
both backends: fixed width, so they sort chronologically as text.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""What a ledger reads the time from: returns an aware datetime (tests pass a fake)."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(dt: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and ``Z``: ``2025-01-31T12:00:00.123Z``.

    A naive datetime is taken to be UTC.
    """
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt.isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(value: str | datetime) -> str:
    """Normalise an ISO-8601 time (or datetime) to the ledger's stored format.

    Offsets are converted to UTC; a time without an offset is taken as UTC.
    Raises :class:`ValueError` for text that is not an ISO-8601 time.
    """
    if isinstance(value, datetime):
        return format_timestamp(value)
    if not isinstance(value, str) or len(value) > 64:
        raise ValueError(f"not an ISO-8601 time: {str(value)[:64]!r}")
    try:
        dt = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"not an ISO-8601 time: {value!r}") from None
    return format_timestamp(dt)


__all__ = ["Clock", "format_timestamp", "parse_timestamp", "utc_now"]
