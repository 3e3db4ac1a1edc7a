"""The ledger's timestamp format."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from speech.metering.timestamps import format_timestamp, parse_timestamp


def test_timestamps() -> None:
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)) == "2025-01-02T03:04:05.678Z"
    assert format_timestamp(datetime(2025, 1, 2, 3, 4, 5)) == "2025-01-02T03:04:05.000Z"
    assert parse_timestamp("2025-01-02T04:04:05+01:00") == "2025-01-02T03:04:05.000Z"
    assert parse_timestamp("2025-01-02T03:04:05.5Z") == "2025-01-02T03:04:05.500Z"
    assert parse_timestamp("2025-01-02") == "2025-01-02T00:00:00.000Z"
    with pytest.raises(ValueError):
        parse_timestamp("not a time")
