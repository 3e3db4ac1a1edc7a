"""``open_ledger``: which backend a target opens, and a target that is not set."""

from __future__ import annotations

from pathlib import Path

import pytest

from speech.errors import ConfigError
from speech.metering.factory import open_ledger


async def test_postgres_open_ledger_accepts_both_schemes(pg_fresh: str) -> None:
    from speech.metering.postgres import PostgresLedger

    for url in (pg_fresh, pg_fresh.replace("postgresql://", "postgres://", 1)):
        led = await open_ledger(url)
        assert isinstance(led, PostgresLedger)
        await led.close()


async def test_open_ledger_refuses_an_empty_target() -> None:
    for bad in ("", "   "):
        with pytest.raises(ConfigError, match="not set"):
            await open_ledger(bad)


async def test_a_path_opens_sqlite(tmp_path: Path) -> None:
    from speech.metering.sqlite import SqliteLedger

    async with await open_ledger(str(tmp_path / "sub" / "ledger.db")) as led:
        assert isinstance(led, SqliteLedger)
        assert led.path == str(tmp_path / "sub" / "ledger.db")
